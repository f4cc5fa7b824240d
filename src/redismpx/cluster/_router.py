"""The cluster's router: one link per primary in use, the slot map, parking and redirects.

Which link carries a name: a shard channel goes to the primary owning its hash slot, a
pattern or classic channel to the *home* primary (any node serves them, since a classic
``PUBLISH`` is broadcast). Names with no known owner wait on the *limbo* link, which never
connects, until a topology read places them. A link holding names is kept while its node
serves; the others are retired. The router is the owner its links report to: a lost node
tells only the subscriptions holding names there, a slot move only those of the moved
names, each once per event-loop turn.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final

from .._link import Link
from .._names import Listener
from .._options import ConnectOptions
from .._protocol import CHANNEL, PATTERN, SHARD
from .._registry import Command
from .._router import RouterHost
from ..errors import ConnectionLost
from ..state import State
from ._publish import Publisher
from ._slots import MAX_REDIRECTS, Address, SlotMap, SlotRegistry, key_slot, parse_redirect
from ._topology import Topology

logger = logging.getLogger("redismpx.cluster")

# Error replies to a shard-channel subscribe that mean "not here / not now", not "never".
_CLUSTER_ERRORS: Final = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING"})
_CLASSIC: Final = (CHANNEL, PATTERN)


class ClusterLink(Link):
    """The link to one cluster node: a :class:`SlotRegistry`, and cluster errors intercepted.

    A redirect or a transient cluster error on a shard-channel command is not a refusal to
    report to the user (as an ACL denial is): the router moves or retries the names.
    """

    registry: SlotRegistry

    def __init__(self, router: ClusterRouter, options: ConnectOptions, address: Address | None):
        host = router.host
        super().__init__(
            router,
            options,
            host.tasks,
            host.tuning,
            SlotRegistry(chunk_size=host.tuning.chunk_size),
        )
        self.router = router
        self.address = address  # None for the limbo link of names without an owner

    def on_error(self, message: str) -> None:
        code = message.split(" ", 1)[0]
        if code in _CLUSTER_ERRORS:
            redirect = parse_redirect(message)
            if self.registry.late_error(None if redirect is None else redirect[0]):
                # The reply to an unsubscribe that a slot move's pushes completed: the node
                # dropped those names already, and no one holds them.
                logger.debug("%r: reply to an unsubscribe completed by a move: %s", self, message)
                return
        pending = self.registry.pending
        if not pending or pending[0].kind != SHARD or code not in _CLUSTER_ERRORS:
            super().on_error(message)
            return
        failed = self.registry.on_error()
        assert failed is not None
        cmd, refused = failed
        self.router.shard_refused(self, cmd, [name for name, _ in refused], message)

    def __repr__(self) -> str:
        where = "unrouted" if self.address is None else f"{self.address[0]}:{self.address[1]}"
        return f"<ClusterLink {where} {self.state.value}>"


def _node_stats(link: ClusterLink) -> dict[str, Any]:
    channels, patterns, shards = link.registry.counts()
    return {
        "state": link.state.value,
        "channels": channels,
        "patterns": patterns,
        "shard_channels": shards,
        "messages_received": link.messages_received(),
        "connects": link.connects,
        "reconnects": link.reconnects,
    }


class ClusterRouter:
    """Routes names to per-primary links (see the module docstring)."""

    shard_by_default = True

    def __init__(
        self, host: RouterHost, seeds: list[ConnectOptions], refresh_interval: float
    ) -> None:
        self.host = host
        self.seeds = {(o.host, o.port): o for o in seeds}
        self.map: SlotMap | None = None
        self.links: dict[Address, ClusterLink] = {}
        self.limbo = ClusterLink(self, seeds[0], None)  # never started
        self._running = False  # between start() and close() (or the loop's end)
        self.home: Address | None = None  # the node carrying patterns and classic channels
        self.parked: set[tuple[int, bytes]] = set()  # retried after the next topology read
        self.slot_redirects: dict[int, int] = {}
        self._lost_batch: dict[Listener, list[bytes]] = {}
        self._changed = asyncio.Event()
        self.error: BaseException | None = None
        # connects, reconnects, messages received and dispatched of links retired since
        self._retired_counts = dict.fromkeys(
            ("connects", "reconnects", "messages_received", "messages_dispatched"), 0
        )
        self.counters = {"topology_refreshes": 0, "slot_moves": 0, "redirects": 0}
        self.topology = Topology(self, refresh_interval)
        self.publisher = Publisher(self)

    # -- links -------------------------------------------------------------------------------

    def node_options(self, address: Address) -> ConnectOptions:
        seed = self.seeds.get(address)
        return seed if seed is not None else self.limbo.options.with_address(*address)

    def node_link(self, address: Address) -> ClusterLink:
        """The link to ``address``, created and started at the first need."""
        link = self.links.get(address)
        if link is None:
            link = self.links[address] = ClusterLink(self, self.node_options(address), address)
            if self._running:  # the multiplexer runs: so do its node links
                link.start()
        return link

    def all_links(self) -> list[ClusterLink]:
        return [self.limbo, *self.links.values()]

    def retire(self, address: Address) -> None:
        link = self.links.pop(address)
        self._keep_counts(link)
        link.close()

    def _keep_counts(self, link: Link) -> None:
        # A link that goes away leaves its counters to the multiplexer's totals.
        kept = self._retired_counts
        kept["connects"] += link.connects
        kept["reconnects"] += link.reconnects
        kept["messages_received"] += link.messages_received()
        kept["messages_dispatched"] += link.messages_dispatched()

    # -- the Router protocol ------------------------------------------------------------------

    def route(self, kind: int, names: Sequence[bytes]) -> Iterable[tuple[Link, Sequence[bytes]]]:
        if len(names) == 1:
            return ((self.link_for(kind, names[0]), names),)
        parts: dict[Link, list[bytes]] = {}
        for name in names:
            parts.setdefault(self.link_for(kind, name), []).append(name)
        return parts.items()

    def link_for(self, kind: int, name: bytes) -> Link:
        # Where the name's listeners are (all of them share one link), else where it belongs.
        for link in self.all_links():
            st = link.registry.tables[kind].get(name)
            if st is not None and st.held:
                return link
        want = self._desired(kind, name)
        return self.limbo if want is None else self.node_link(want)

    def start(self) -> None:
        # Node links start when a name first needs them (the limbo link never does); the
        # topology reader starts now.
        self._running = True
        for link in self.links.values():
            link.start()
        self.topology.start()

    def close(self) -> None:
        self._running = False  # no node link starts any more
        for link in self.all_links():
            link.close()
        self.publisher.close()
        self.pulse()

    def abandon(self) -> None:
        # The previous event loop is closed: its links and asyncio primitives go with it; the
        # slot map is kept (still the best guess) and read again in the new loop.
        for link in self.links.values():
            link.abandon()
            self._keep_counts(link)
        self.links.clear()
        self.limbo.abandon()
        self._running = False
        self.parked.clear()
        self._lost_batch = {}
        self._changed = asyncio.Event()
        self.topology.abandon()
        self.publisher.abandon()

    @property
    def state(self) -> State:
        if self.map is None:
            return State.CONNECTING
        worst = State.CONNECTED
        for link in self.all_links():
            if link.state is not State.CONNECTED and link.registry.holds_wanted():
                if link.state is State.DISCONNECTED or link is self.limbo:
                    return State.DISCONNECTED
                worst = State.CONNECTING
        return worst

    @property
    def last_error(self) -> BaseException | None:
        return self.error

    async def wait_connected(self) -> None:
        while True:
            changed = self._changed
            if self.host_closed():
                raise ConnectionLost("the multiplexer closed")
            if self.state is State.CONNECTED:
                return
            await changed.wait()

    async def publish_probe(self, channel: bytes) -> float:
        # The probe's subscription listens on a shard channel: SPUBLISH on the slot's owner,
        # with the connection to it opened before the clock starts.
        await self.publisher.open_for(channel)
        sent = asyncio.get_running_loop().time()
        await self.publisher.publish(channel, b"ping", sharded=True, timeout=None)
        return sent

    async def publish(
        self, channel: bytes, data: bytes, *, sharded: bool, timeout: float | None
    ) -> int:
        return await self.publisher.publish(channel, data, sharded=sharded, timeout=timeout)

    async def call_for(self, key: bytes, command: bytes, name: str, timeout: float | None) -> Any:
        return await self.publisher.call_for(key, command, name, timeout)

    def describe(self) -> str:
        return "seeds=" + ",".join(f"{h}:{p}" for h, p in self.seeds)

    def add_stats(self, stats: dict[str, Any]) -> None:
        for key, n in self._retired_counts.items():
            stats[key] += n
        stats["nodes"] = sum(1 for link in self.links.values() if link.state is State.CONNECTED)
        # Per primary in use (bounded by the cluster's size); a retired link's counts went to
        # the totals above, so these restart from 0 when a node's link is made again.
        stats["node_stats"] = {
            (f"[{host}]:{port}" if ":" in host else f"{host}:{port}"): _node_stats(link)
            for (host, port), link in self.links.items()
        }
        stats.update(self.counters)
        stats["publish_connects"] = self.publisher.connects
        stats["published"] = self.publisher.published

    def host_closed(self) -> bool:
        return self.host.closed

    # -- routing -----------------------------------------------------------------------------

    def _desired(self, kind: int, name: bytes) -> Address | None:
        """The node that should carry ``name`` now, or None while nobody can."""
        if self.map is None:
            return None
        if kind == SHARD:
            return self.map.owners[key_slot(name)]
        if self.home is None:
            self.home = self.pick_home(None)
        return self.home

    def pick_home(self, exclude: Address | None) -> Address | None:
        """A primary for classic names: one already connected if possible (no new socket)."""
        if self.map is None:
            return None
        candidates = [a for a in self.map.primaries if a != exclude]
        if not candidates:
            return exclude if exclude in self.map.primaries else None
        for addr in candidates:
            link = self.links.get(addr)
            if link is not None and link.state is State.CONNECTED:
                return addr
        for addr in candidates:
            if addr in self.links:
                return addr
        return candidates[0]

    def move(self, kind: int, name: bytes, src: Link, dst: Link, *, notify: bool) -> None:
        """Move every listener of ``name`` from ``src`` to ``dst``.

        With ``notify``, listeners of a name still active on ``src`` hear ``on_disconnect``
        (messages may be missed in between); a name already lost was reported when lost.
        """
        st = src.registry.tables[kind].get(name)
        if st is None or not st.held or src is dst:
            return
        listeners = st.listeners
        if notify and st.active:
            self._note_lost(name, listeners)
        for listener in listeners:
            src.registry.remove(kind, name, listener)
        for listener in listeners:
            dst.add(kind, (name,), listener)
        if src.registry.has_dirty():
            src.schedule_flush()
        self.counters["slot_moves"] += 1

    # -- link events (the LinkOwner protocol) -------------------------------------------------

    def link_up(self, link: Link) -> None:
        self.pulse()

    def link_lost(self, link: Link, error: BaseException) -> None:
        # Only the subscriptions with names on this node hear of it, each once.
        assert isinstance(link, ClusterLink)
        self.error = error
        affected: dict[Listener, None] = {}
        for table in link.registry.tables:
            for st in table.values():
                affected.update(dict.fromkeys(st.listeners))
        for listener in affected:
            listener.notify_disconnected(error)
        # Classic names do not need this node (PUBLISH reaches every node): move them now.
        if self.map is not None and link.address is not None:
            if self.home == link.address:
                self.home = self.pick_home(link.address)
            if self.home is not None and self.home != link.address:
                dst = self.node_link(self.home)
                for kind in _CLASSIC:
                    table = link.registry.tables[kind]
                    for name in [n for n, st in table.items() if st.held]:
                        self.move(kind, name, link, dst, notify=False)
        self.topology.request_refresh()
        self.pulse()

    def names_lost(self, link: Link, kind: int, name: bytes, listeners: list[Listener]) -> None:
        # The node dropped a shard channel (its slot moved). Subscribe again on the same
        # link at once: the answer is MOVED to the new owner, the quickest way to learn it.
        if link.registry.retry(kind, name):
            link.schedule_flush()
        self._note_lost(name, listeners)
        self.topology.request_refresh()

    def _note_lost(self, name: bytes, listeners: list[Listener]) -> None:
        """``name`` stopped being served for ``listeners``: tell each once this turn."""
        if not listeners:
            return
        if not self._lost_batch:
            self.host.tasks.call_soon(self._report_lost)
        for listener in listeners:
            self._lost_batch.setdefault(listener, []).append(name)

    def _report_lost(self) -> None:
        # One slot move sends one push per channel: each subscription hears once per turn.
        batch, self._lost_batch = self._lost_batch, {}
        for listener, names in batch.items():
            shown = ", ".join(repr(n) for n in names[:3])
            if len(names) > 3:
                shown += f" and {len(names) - 3} more"
            listener.notify_disconnected(
                ConnectionLost(f"the cluster moved {shown}; resubscribing")
            )

    def shard_refused(
        self, link: ClusterLink, cmd: Command, names: list[bytes], message: str
    ) -> None:
        """A shard-channel command got a cluster error (from :meth:`ClusterLink.on_error`)."""
        if not cmd.subscribe or not names:
            # An unsubscribe that failed: the node does not hold the names anyway.
            logger.debug("%r on %r failed: %s", cmd, link, message)
            return
        self.topology.request_refresh()
        redirect = parse_redirect(message) if message.startswith("MOVED") else None
        if redirect is not None and link.address is not None:
            slot, host, port = redirect
            target = (host or link.address[0], port)
            self.counters["redirects"] += 1
            if self.map is not None:
                self.map.assign(slot, target)
            count = self.slot_redirects[slot] = self.slot_redirects.get(slot, 0) + 1
            if target != link.address and count <= MAX_REDIRECTS:
                logger.debug("%d name(s) of slot %d moved to %s:%d", len(names), slot, *target)
                dst = self.node_link(target)
                for name in names:
                    self.move(SHARD, name, link, dst, notify=False)
                return
            logger.warning(
                "redirect loop for slot %d (%s); waiting for the topology", slot, message
            )
        else:
            logger.info("%r on %r: %s; retrying after the next topology read", cmd, link, message)
        self.parked.update((SHARD, name) for name in names)

    # -- state changes -----------------------------------------------------------------------

    def pulse(self) -> None:
        """Wake ``wait_connected`` callers to look at the state again."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()
