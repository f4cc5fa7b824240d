"""Topology as a part: which link carries a name (design rule R7).

A multiplexer's hub delegates everything that depends on the topology to one router: which
:class:`~redismpx._link.Link` carries a name, who hears of an outage, what ``state`` means,
how ``ping`` publishes its probe. The standalone router here has one link; the cluster's
lives in :mod:`redismpx.cluster`. A router is also the owner its links report to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from ._commands import CommandLink
from ._connection import Connection, Dial, connect
from ._link import Link, LinkOwner
from ._names import Listener
from ._options import ConnectOptions, Tuning
from ._protocol import encode_command, encode_pair
from ._tasks import TaskOwner
from .errors import ConnectionLost
from .state import State

_PING = encode_command(b"PING")


class RouterHost(Protocol):
    """What a router needs of the hub that owns it."""

    tasks: TaskOwner
    tuning: Tuning

    @property
    def closed(self) -> bool:
        """True once the multiplexer was closed."""

    def notify_all_disconnected(self, error: BaseException) -> None:
        """Tell every live subscription of an outage (once)."""


class Router(LinkOwner, Protocol):
    """The topology of a multiplexer (see the module docstring)."""

    #: Whether channel subscriptions default to shard channels (``SSUBSCRIBE``).
    shard_by_default: bool

    def link_for(self, kind: int, name: bytes) -> Link:
        """The link that carries (or is to carry) ``name``."""

    def route(self, kind: int, names: Sequence[bytes]) -> Iterable[tuple[Link, Sequence[bytes]]]:
        """``names`` grouped by the link that carries (or is to carry) them."""

    def all_links(self) -> Sequence[Link]:
        """Every link, for counters."""

    def start(self) -> None:
        """Start in the running loop (the hub's tasks are bound to it)."""

    def close(self) -> None:
        """Stop every link now (no reconnect)."""

    def abandon(self) -> None:
        """The loop the links ran in is closed: forget them; ``start`` begins afresh."""

    @property
    def state(self) -> State:
        """The topology's connection state (never ``closed``: the hub says that)."""

    @property
    def last_error(self) -> BaseException | None:
        """The most recent connection error."""

    async def wait_connected(self) -> None:
        """Return once ``state`` is ``connected``."""

    async def publish(
        self, channel: bytes, data: bytes, *, sharded: bool, timeout: float | None
    ) -> int:
        """``PUBLISH`` (or ``SPUBLISH``) over the command side; the receivers Redis counted."""

    async def call_for(self, key: bytes, command: bytes, name: str, timeout: float | None) -> Any:
        """Send an encoded command to the node that owns ``key`` (over the command side)."""

    async def publish_probe(self, channel: bytes) -> float:
        """Publish ``ping``'s probe the way a default channel subscription listens; returns
        the loop time at which it was sent."""

    def describe(self) -> str:
        """Where it connects, for reprs (never a password)."""

    def add_stats(self, stats: dict[str, Any]) -> None:
        """Add topology-specific counters to (or adjust) the hub's ``stats()``."""


class SingleRouter:
    """One Redis server: one link carries every name; every subscription hears an outage.

    ``dial`` and ``commands_dial`` open the Pub/Sub and the command connection (by default
    to ``options``' address; a Sentinel's find the primary first).
    """

    shard_by_default = False

    def __init__(
        self,
        host: RouterHost,
        options: ConnectOptions,
        dial: Dial | None = None,
        commands_dial: Dial | None = None,
    ) -> None:
        self._host = host
        self.link = Link(self, options, host.tasks, host.tuning, dial=dial)
        self.commands = CommandLink(
            commands_dial or self._connect, host.tasks, host.tuning, self.describe
        )
        self.published = 0  # publishes Redis answered

    async def _connect(self) -> Connection:
        return await connect(self.link.options)

    def link_for(self, kind: int, name: bytes) -> Link:
        return self.link

    def route(self, kind: int, names: Sequence[bytes]) -> Iterable[tuple[Link, Sequence[bytes]]]:
        return ((self.link, names),)

    def all_links(self) -> Sequence[Link]:
        return [self.link]

    def start(self) -> None:
        self.link.start()

    def close(self) -> None:
        self.link.close()
        self.commands.close()

    def abandon(self) -> None:
        self.link.abandon()
        self.commands.abandon()

    @property
    def state(self) -> State:
        return self.link.state

    @property
    def last_error(self) -> BaseException | None:
        return self.link.last_error

    async def wait_connected(self) -> None:
        up = self.link.up
        assert up is not None  # the hub started the link
        await up.wait()

    async def publish(
        self, channel: bytes, data: bytes, *, sharded: bool, timeout: float | None
    ) -> int:
        if sharded:
            frame, name = encode_pair(b"SPUBLISH", channel, data), "SPUBLISH"
        else:
            frame, name = encode_pair(b"PUBLISH", channel, data), "PUBLISH"
        receivers = int(await self.commands.call(frame, name, timeout))
        self.published += 1
        return receivers

    async def call_for(self, key: bytes, command: bytes, name: str, timeout: float | None) -> Any:
        return await self.commands.call(command, name, timeout)

    async def publish_probe(self, channel: bytes) -> float:
        # A classic PUBLISH on the command connection; a first PING opens it before the
        # clock starts (the round trip does not count connecting).
        await self.commands.call(_PING, "PING", None)
        sent = asyncio.get_running_loop().time()
        await self.publish(channel, b"ping", sharded=False, timeout=None)
        return sent

    def describe(self) -> str:
        return self.link.options.describe()

    def add_stats(self, stats: dict[str, Any]) -> None:
        stats["publish_connects"] = self.commands.connects
        stats["published"] = self.published

    # -- LinkOwner ---------------------------------------------------------------------------

    def link_up(self, link: Link) -> None:
        pass

    def link_lost(self, link: Link, error: BaseException) -> None:
        # B6/B7: every live subscription hears of the outage once, before any reconnect.
        self._host.notify_all_disconnected(error)

    def names_lost(self, link: Link, kind: int, name: bytes, listeners: list[Listener]) -> None:
        # The server dropped a name by itself (a shard channel moved): subscribe again.
        error = ConnectionLost(f"Redis dropped {name!r} (its slot moved); resubscribing")
        for listener in listeners:
            listener.notify_disconnected(error)
        if link.registry.retry(kind, name):
            link.schedule_flush()


MakeRouter = Callable[[RouterHost], Router]
