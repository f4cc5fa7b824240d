"""What the demo shares across sockets in one process: the multiplexer, the board, the open
sessions, the link watch and the log of who published what."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from redismpx import Multiplexer

from .backend import RedisBackend
from .board import QuestionBoard
from .limits import Limits
from .recovery import RecoveryDemo

logger = logging.getLogger("redismpx.demo")

WATCH_EVERY = 0.1  # seconds between looks at the link state (see LinkWatch)
SENDERS_KEPT = 500  # (channel, message) pairs whose sender is remembered
SENDER_MEMORY = 60.0  # seconds a sender is remembered


class Client(Protocol):
    """One open WebSocket session, as the context sees it."""

    name: str

    def hears(self, channel: str) -> bool:
        """True if a message published on ``channel`` now would reach this socket."""
        ...

    def poke(self) -> None:
        """Something process-wide changed: push a status update soon."""
        ...


class LinkWatch:
    """The state of the link to Redis as the page and ``/healthz`` show it.

    ``mpx.state`` is ``connecting`` for most of an outage (from the first retry on, between
    attempts too) and ``disconnected`` only until that retry starts; here the state is
    ``disconnected`` from the first error of an outage until the link is connected again,
    and ``connecting`` only while a connection is being made with no failure yet (at startup).

    ``mpx.last_error`` is the most recent connection error *ever*: it stays set after the
    link is back. Here the current error is the latest of an outage still going on, and once
    the link is connected again the outage moves to ``last_outage``, with its first error (what
    broke the link; the retries' refusals that followed are not kept) and the times it
    started and ended.
    :meth:`observe` is called every :data:`WATCH_EVERY` seconds and before every report, so
    the times are accurate to a tenth of a second.
    """

    def __init__(self, mpx: Multiplexer) -> None:
        self._mpx = mpx
        self._seen_error: BaseException | None = None
        self.state = str(mpx.state)
        self.since = time.time()  # when ``state`` began
        self.down_since: float | None = None  # the outage going on began
        self.error: str | None = None  # the latest error of the outage going on
        self.error_at: float | None = None
        self._cause: str | None = None  # the first error of the outage going on
        self.last_outage: dict[str, Any] | None = None  # the latest outage that ended
        self.on_change: Callable[[], None] | None = None  # called when ``state`` changes

    def observe(self) -> dict[str, Any]:
        """Look at the multiplexer now; returns :meth:`report`."""
        now = time.time()
        raw = str(self._mpx.state)
        error = self._mpx.last_error
        if error is not None and error is not self._seen_error:
            self._seen_error = error
            self.error, self.error_at = str(error), now
            if self._cause is None:
                self._cause = self.error
            if self.down_since is None:
                self.down_since = now
        if raw != "connected" and self.state == "connected" and self.down_since is None:
            self.down_since = now
        if raw == "connected" and self.down_since is not None:
            # Back (or an outage came and went between two looks): it is history now.
            self.last_outage = {
                "error": self._cause,
                "since": self.down_since,
                "recovered_at": now,
            }
            self.down_since = self.error = self.error_at = self._cause = None
        state = "disconnected" if raw == "connecting" and self.down_since is not None else raw
        if state != self.state:
            self.state, self.since = state, now
            if self.on_change is not None:
                self.on_change()
        return self.report()

    def report(self) -> dict[str, Any]:
        """``state`` (connecting, connected, disconnected, or closed at shutdown), ``since``,
        ``error`` and ``error_at`` (only while not connected), ``down_since`` and
        ``last_outage`` (``error``, ``since``, ``recovered_at``) or None."""
        return {
            "state": self.state,
            "since": self.since,
            "error": self.error,
            "error_at": self.error_at,
            "down_since": self.down_since,
            "last_outage": self.last_outage,
        }


class Senders:
    """Who in this process published a message, so that every receiving tab can say so.

    Redis carries the payload as it was published (no envelope: ``redis-cli SUBSCRIBE`` sees
    what the page sent), so the sender is looked up by ``(channel, message)``: the last
    session of this process that published that message there within
    :data:`SENDER_MEMORY` seconds. Two tabs publishing the same text on the same channel
    within that time are told apart only by order; a message from outside the process has
    no sender here.
    """

    def __init__(self) -> None:
        self._by_message: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()

    def record(self, channel: str, message: str, sender: str) -> None:
        key = (channel, message)
        self._by_message[key] = (sender, time.monotonic())
        self._by_message.move_to_end(key)
        while len(self._by_message) > SENDERS_KEPT:
            self._by_message.popitem(last=False)

    def sender_of(self, channel: str, message: str) -> str | None:
        found = self._by_message.get((channel, message))
        if found is None or time.monotonic() - found[1] > SENDER_MEMORY:
            return None
        return found[0]


@dataclass
class DemoContext:
    """The process-wide parts of the demo (``app.state.demo``)."""

    mpx: Multiplexer
    backend: RedisBackend
    board: QuestionBoard
    limits: Limits
    sessions: set[Client] = field(default_factory=set)
    senders: Senders = field(default_factory=Senders)
    link: LinkWatch = field(init=False)
    numbers: RecoveryDemo = field(init=False)
    _names: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.link = LinkWatch(self.mpx)
        self.link.on_change = self._poke_all  # every tab shows a link change at once
        self.numbers = RecoveryDemo(self.mpx, self.backend.url, self._poke_all)

    # -- sessions ----------------------------------------------------------------------------

    @property
    def sockets(self) -> int:
        """Open WebSocket sessions of this process (a browser tab has one)."""
        return len(self.sessions)

    def new_name(self, prefix: str = "tab") -> str:
        """A short name, unique in this process: ``tab-1``, ``tab-2``..."""
        return f"{prefix}-{next(self._names)}"

    def opened(self, session: Client) -> None:
        self.sessions.add(session)
        self._poke_all()

    def closed(self, session: Client) -> None:
        self.sessions.discard(session)
        self._poke_all()

    def _poke_all(self) -> None:
        for session in self.sessions:
            session.poke()

    def tabs_reached(self, channel: str) -> int:
        """How many sessions of this process a message on ``channel`` reaches now (each
        counted once, whether through a channel, a pattern or a promise)."""
        return sum(1 for session in self.sessions if session.hears(channel))

    @staticmethod
    def pubsub_connections(stats: dict[str, Any]) -> int:
        """The multiplexer's Pub/Sub connections to Redis that are up, from its ``stats``:
        1 for one server (0 while down), one per connected node for a cluster."""
        nodes = stats.get("nodes")
        if isinstance(nodes, int):
            return nodes
        return 1 if stats["state"] == "connected" else 0

    # -- publishing --------------------------------------------------------------------------

    async def publish(self, channel: str, message: str, sender: str | None = None) -> int:
        """PUBLISH through the multiplexer's own command connection; returns the number of
        subscribers (connections) that received it. While Redis is down it waits for the
        connection at most ``limits.publish_timeout`` seconds, then raises
        :class:`~redismpx.PublishTimeout`: the page is told, it does not hang."""
        if sender is not None:
            self.senders.record(channel, message, sender)
        return await self.mpx.publish(channel, message, timeout=self.limits.publish_timeout)

    # -- status ------------------------------------------------------------------------------

    async def watch(self) -> None:
        """Keep :attr:`link` up to date (runs for the life of the app); a change of its state
        wakes every session."""
        while True:
            self.link.observe()
            await asyncio.sleep(WATCH_EVERY)

    def status(self) -> dict[str, Any]:
        """What the page and ``/healthz`` both report, from one look at the multiplexer.

        ``mpx`` is ``mpx.stats()`` without ``last_error``: see ``link`` instead, which
        clears the error once the link is back (and keeps it, with its times, as
        ``last_outage``)."""
        link = self.link.observe()
        stats = self.mpx.stats()
        stats.pop("last_error", None)
        return {
            "status": "ok" if link["state"] == "connected" else "unavailable",
            "link": link,
            "mpx": stats,
            "tabs": self.sockets,
            "pubsub_connections": self.pubsub_connections(stats),
            "redis": self.backend.describe(),
        }

    def snapshot(self) -> dict[str, Any]:
        """The periodic status message of the page (and ``/api/stats``)."""
        status = self.status()
        return {
            "type": "stats",
            "stats": status["mpx"],
            "link": status["link"],
            "tabs": status["tabs"],
            "sockets": status["tabs"],
            "pubsub_connections": status["pubsub_connections"],
            "questions": self.board.open_questions(),
            "redis": status["redis"],
            "numbers": self.numbers.report(),
        }
