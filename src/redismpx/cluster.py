"""``ClusterMultiplexer``: the :class:`~redismpx.Multiplexer` API over a Redis Cluster.

Routing. Channel subscriptions are *shard channels* (``SSUBSCRIBE``): each name belongs to a
hash slot (CRC16 of the name or of its ``{hash tag}``, mod 16384), each slot to one primary,
and every primary that holds wanted names gets one Pub/Sub :class:`ClusterLink` (its own
supervisor, registry and connection), created at the first name routed to it. A link is
kept while its node is a serving primary (so add/remove churn never reconnects) and closed
once its node is not (a failover, a removal) and it holds no wanted name: at most one
Pub/Sub connection per primary. Commands never mix slots (:class:`SlotRegistry`).

Patterns, promises and ``sharded=False`` channels use classic ``PSUBSCRIBE``/``SUBSCRIBE``
on one *home* node (a primary, sharing its link with that node's shard channels). This
works because a classic ``PUBLISH`` is broadcast to every node of the cluster; that is also
its cost: every classic message crosses the cluster bus to every node, whatever the number
of subscribers, so it does not scale with the cluster the way ``SPUBLISH`` does.

Topology. The slot map is read (``CLUSTER SHARDS``, else ``CLUSTER SLOTS``) over a
short-lived plain connection to a seed or a known node: at start, every
``topology_refresh_interval`` seconds, and soon after anything suspicious (a lost link, a
shard channel dropped by its node, a ``MOVED`` reply); while something is wrong (a link
holding names is down, names wait for an owner) it is re-read with the reconnect backoff
(``backoff_base`` .. ``backoff_cap``, full jitter). After each read, names whose owner
changed move to the new owner's link.

Slot moves. When a slot leaves a node, the node sends ``sunsubscribe`` for each of its shard
channels there; their subscriptions hear ``on_disconnect`` (once per subscription and
event-loop turn) and the names are subscribed again at once: the old node answers ``MOVED
<slot> <host:port>``, and the names move to that node's link, which confirms them with
``on_activation``. Other names and subscriptions see nothing.

Failures. A lost link tells only the subscriptions holding names on that node, once; its
classic names move to another primary at once (any node serves them); its shard channels
come back when the node does (the link reconnects by itself) or, after a failover, when a
topology read shows the promoted replica (they then move to its link).
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl as _ssl
from collections.abc import Callable, Sequence
from typing import Any, Final, cast

from ._backoff import Backoff
from ._connection import Connection, connect
from ._delivery import (
    DEFAULT_MAX_BUFFER,
    OverflowPolicy,
    Subscriber,
)
from ._link import Link, State
from ._options import ConnectOptions, check_seconds, parse_options
from ._protocol import CHANNEL, KINDS, PATTERN, SHARD, to_bytes
from ._registry import Command, Listener
from ._slots import Address, SlotMap, SlotRegistry, key_slot, parse_redirect
from .errors import (
    ConnectError,
    ConnectionLost,
    InvalidArgument,
    InvalidArgumentType,
    RedisMPXError,
    ServerError,
)
from .multiplexer import Multiplexer

__all__ = ["ClusterLink", "ClusterMultiplexer", "SlotRegistry", "key_slot"]

logger = logging.getLogger("redismpx.cluster")

#: Redirects followed for one slot between two topology reads (and per publish) before the
#: names wait for the next read instead: nodes that disagree must not make us ping-pong.
MAX_REDIRECTS: Final = 5

# Error replies to a shard-channel subscribe that mean "not here / not now", not "never".
_CLUSTER_ERRORS: Final = frozenset({"MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN", "LOADING"})
_CLASSIC: Final = (CHANNEL, PATTERN)


def _tell(listener: Listener, error: BaseException) -> None:
    cast(Subscriber, listener)._disconnected(error)


class ClusterLink(Link):
    """The link to one cluster node: a :class:`SlotRegistry`, and cluster errors intercepted.

    A redirect or a transient cluster error on a shard-channel subscribe is not a refusal to
    report to the user (as an ACL denial is): the multiplexer moves or retries the names.
    """

    registry: SlotRegistry

    def __init__(
        self,
        owner: ClusterMultiplexer,
        options: ConnectOptions,
        address: Address | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(owner, options, **kwargs)
        # Replaced before the link starts: the connection reads ``registry.tables``.
        self.registry = SlotRegistry(chunk_size=self.registry.chunk_size)
        self.cluster = owner
        self.address = address  # None for the parking link of names without an owner

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
        self.cluster._shard_refused(self, cmd, [name for name, _ in refused], message)

    def __repr__(self) -> str:
        where = "unrouted" if self.address is None else f"{self.address[0]}:{self.address[1]}"
        return f"<ClusterLink {where} {self.state.value}>"


class ClusterMultiplexer(Multiplexer):
    """Many subscriptions over a Redis Cluster: one Pub/Sub connection per primary in use.

    The API is the :class:`~redismpx.Multiplexer` one, with these differences:

    * ``urls``: one seed URL or several (``redis://host:port``, ``rediss://``); any reachable
      seed is enough to discover the cluster. Keyword connection settings apply to every
      node. ``db`` must be 0 (a cluster has only database 0).
    * :meth:`new_channel_subscription` makes shard-channel subscriptions (``sharded=True``
      is the default): publish to them with ``SPUBLISH`` (see :meth:`publish`).
      ``sharded=False`` gives classic channels on the home node, like patterns.
    * Patterns and promises use classic ``PSUBSCRIBE`` on one node, fed by classic
      ``PUBLISH``, which the cluster broadcasts to every node (a cost paid per message).
    * ``topology_refresh_interval`` (seconds, default 30): how often the slot map is re-read
      when nothing prompts it sooner. Every read opens and closes one plain connection.
    * :meth:`publish` sends ``SPUBLISH`` to the slot's owner (following ``MOVED``) or a
      classic ``PUBLISH``.

    ``on_disconnect`` reaches only the subscriptions with names on the node concerned, once
    per outage; ``on_activation`` then follows for each of their names once it is served
    again (by the same node, or by the new owner after a slot move or failover).
    ``state`` is ``connected`` when the topology is known and every node holding wanted names
    is connected. ``stats()`` adds ``nodes`` (Pub/Sub connections), ``topology_refreshes``,
    ``slot_moves`` (names moved between nodes) and ``redirects`` (``MOVED`` replies seen).
    """

    _shard_by_default = True

    def __init__(
        self,
        urls: str | Sequence[str] | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int | None = None,
        client_name: str | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_check_hostname: bool = True,
        connect_timeout: float = 5.0,
        protocol: int | None = None,
        health_check_interval: float = 5.0,
        health_check_timeout: float = 5.0,
        backoff_base: float = 0.008,
        backoff_cap: float = 0.512,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: OverflowPolicy = "drop_oldest",
        chunk_size: int = 1000,
        random_source: Callable[[], float] = random.random,
        topology_refresh_interval: float = 30.0,
    ) -> None:
        if urls is None:
            url_list: list[str | None] = [None]
        elif isinstance(urls, str):
            url_list = [urls]
        elif isinstance(urls, Sequence) and all(isinstance(u, str) for u in urls):
            url_list = list(urls)
            if not url_list:
                raise InvalidArgument("urls must name at least one seed node")
        else:
            raise InvalidArgumentType("urls must be a str or a sequence of str")
        seeds = [
            parse_options(
                u,
                host=host,
                port=port,
                username=username,
                password=password,
                db=db,
                client_name=client_name,
                ssl=ssl,
                ssl_ca_certs=ssl_ca_certs,
                ssl_certfile=ssl_certfile,
                ssl_keyfile=ssl_keyfile,
                ssl_check_hostname=ssl_check_hostname,
                connect_timeout=connect_timeout,
                protocol=protocol,
            )
            for u in url_list
        ]
        for opts in seeds:
            if opts.unix_path is not None:
                raise InvalidArgument("cluster seeds must be TCP addresses, not unix sockets")
            if opts.db:
                raise InvalidArgument("a Redis Cluster has only database 0 (db must be 0)")
        interval = check_seconds("topology_refresh_interval", topology_refresh_interval)
        assert interval is not None
        self._refresh_interval = interval
        self._seed_options = {(o.host, o.port): o for o in seeds}
        self._map: SlotMap | None = None
        self._links: dict[Address, ClusterLink] = {}
        self._retired: dict[ClusterLink, None] = {}
        self._home: Address | None = None  # the node carrying patterns and classic channels
        self._parked: set[tuple[int, bytes]] = set()  # retried after the next topology read
        self._slot_redirects: dict[int, int] = {}
        self._lost_batch: dict[Listener, list[bytes]] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._commanders: dict[Address, asyncio.Task[Connection]] = {}
        self._connecting: set[asyncio.Task[Connection]] = set()
        self._cluster_error: BaseException | None = None
        self._logged_refresh_error: str | None = None
        self._logged_refresh_bug: str | None = None
        # connects, reconnects, messages received and dispatched of links closed since
        self._retired_counts = [0, 0, 0, 0]
        self._cluster_counters = {"topology_refreshes": 0, "slot_moves": 0, "redirects": 0}
        self._init(
            seeds[0],
            health_check_interval=health_check_interval,
            health_check_timeout=health_check_timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_buffer=max_buffer,
            overflow=overflow,
            chunk_size=chunk_size,
            random_source=random_source,
        )
        # The base's single link is never started here: it parks names without an owner
        # (before the first topology read, or in slots no node serves).
        assert isinstance(self._link, ClusterLink)
        self._limbo: ClusterLink = self._link

    # -- links -------------------------------------------------------------------------------

    def _new_link(self, options: ConnectOptions, address: Address | None = None) -> ClusterLink:
        base, cap, rand = self._backoff
        interval, timeout = self._hc
        assert interval is not None and timeout is not None
        return ClusterLink(
            self,
            options,
            address,
            backoff=Backoff(base, cap, rand),
            health_check_interval=interval,
            health_check_timeout=timeout,
            chunk_size=self._chunk_size,
        )

    def _node_options(self, address: Address) -> ConnectOptions:
        seed = self._seed_options.get(address)
        return seed if seed is not None else self._options.with_address(*address)

    def _node_link(self, address: Address) -> ClusterLink:
        """The link to ``address``, created and started at the first need."""
        link = self._links.get(address)
        if link is None:
            link = self._links[address] = self._new_link(self._node_options(address), address)
            if not self._closed:
                link.start()
        return link

    def _all_links(self) -> list[ClusterLink]:
        return [self._limbo, *self._links.values()]

    def _retire(self, address: Address) -> None:
        link = self._links.pop(address)
        self._retired_counts[0] += link.connects
        self._retired_counts[1] += link.reconnects
        self._retired_counts[2] += link.messages_received()
        self._retired_counts[3] += link.messages_dispatched()
        link.close()
        self._retired[link] = None
        self._spawn(self._reap(link), f"redismpx reap {link!r}")

    async def _reap(self, link: ClusterLink) -> None:
        await link.wait_closed()
        self._retired.pop(link, None)

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        # Node links start when a name first needs them; the topology reader starts now.
        self._refresher = self._spawn(self._refresh_loop(), "redismpx cluster topology")

    def _abandon_links(self) -> None:
        # The previous event loop is closed: its links, tasks and asyncio primitives go with
        # it; the slot map is kept (still the best guess) and re-read in the new loop.
        for link in self._links.values():
            self._retired_counts[0] += link.connects
            self._retired_counts[1] += link.reconnects
            link.abandon()
            self._retired_counts[2] += link.messages_received()
            self._retired_counts[3] += link.messages_dispatched()
        self._links.clear()
        self._retired.clear()
        self._limbo.abandon()
        self._parked.clear()
        self._lost_batch = {}
        self._refresher = None
        self._wake = asyncio.Event()
        self._refresh_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._commanders.clear()
        self._connecting.clear()

    @property
    def state(self) -> State:
        """``connecting``, ``connected``, ``disconnected`` or ``closed`` (see the class)."""
        if self._closed:
            return State.CLOSED
        if self._map is None:
            return State.CONNECTING
        if self._loop is not None and self._loop.is_closed():
            return State.DISCONNECTED  # its links ended with their event loop
        worst = State.CONNECTED
        for link in self._all_links():
            if link.state is not State.CONNECTED and link.registry.holds_wanted():
                if link.state is State.DISCONNECTED or link is self._limbo:
                    return State.DISCONNECTED
                worst = State.CONNECTING
        return worst

    @property
    def last_error(self) -> BaseException | None:
        """The most recent error: a lost node, or a failed topology read."""
        return self._cluster_error

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until ``state`` is ``connected`` (raises ``TimeoutError`` after ``timeout``).

        Cancelling the caller is safe.
        """
        self._check_open()
        self._maybe_start()
        async with asyncio.timeout(timeout):
            while True:
                changed = self._changed
                self._check_open()
                if self.state is State.CONNECTED:
                    return
                await changed.wait()

    def _pulse(self) -> None:
        """Wake ``wait_connected`` callers to look at the state again."""
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    def _close_links(self) -> None:
        for link in self._all_links():
            link.close()
        for task in [*self._commanders.values(), *self._connecting]:
            # Not cancelled (see _connect): closed once connected; aclose() waits for them.
            task.add_done_callback(_close_connected)
        self._pulse()

    async def _wait_links(self) -> None:
        for link in [*self._all_links(), *self._retired]:
            await link.wait_closed()
        pending = [*self._commanders.values(), *self._connecting]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        self._commanders.clear()

    def __repr__(self) -> str:
        seeds = ",".join(f"{h}:{p}" for h, p in self._seed_options)
        return f"<ClusterMultiplexer seeds={seeds} nodes={len(self._links)} {self.state.value}>"

    # -- subscription factories --------------------------------------------------------------

    # -- routing -----------------------------------------------------------------------------

    def _desired(self, kind: int, name: bytes) -> Address | None:
        """The node that should carry ``name`` now, or None while nobody can."""
        if self._map is None:
            return None
        if kind == SHARD:
            return self._map.owners[key_slot(name)]
        if self._home is None:
            self._home = self._pick_home(None)
        return self._home

    def _link_for(self, kind: int, name: bytes) -> Link:
        # Where the name's listeners are (all of them share one link), else where it belongs.
        for link in self._all_links():
            st = link.registry.tables[kind].get(name)
            if st is not None and st.held:
                return link
        want = self._desired(kind, name)
        return self._limbo if want is None else self._node_link(want)

    def _pick_home(self, exclude: Address | None) -> Address | None:
        """A primary for classic names: one already connected if possible (no new socket)."""
        if self._map is None:
            return None
        candidates = [a for a in self._map.primaries if a != exclude]
        if not candidates:
            return exclude if exclude in self._map.primaries else None
        for addr in candidates:
            link = self._links.get(addr)
            if link is not None and link.state is State.CONNECTED:
                return addr
        for addr in candidates:
            if addr in self._links:
                return addr
        return candidates[0]

    def _register_on(self, link: ClusterLink, kind: int, name: bytes, listener: Listener) -> None:
        if link.registry.add(kind, name, listener):
            # Already active there (B29): told in a later turn, as Multiplexer._add does.
            assert link.loop is not None  # active implies connected, hence started
            link.loop.call_soon(self._late_activation, link, kind, name, listener, link.epoch)
        elif link._flush_handle is None:
            link.schedule_flush()

    def _move(
        self, kind: int, name: bytes, src: ClusterLink, dst: ClusterLink, *, notify: bool
    ) -> None:
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
            self._register_on(dst, kind, name, listener)
        if src.registry.has_dirty():
            src.schedule_flush()
        self._cluster_counters["slot_moves"] += 1

    # -- link events -------------------------------------------------------------------------

    def _link_up(self, link: Link) -> None:
        self._pulse()

    def _link_lost(self, link: Link, error: BaseException) -> None:
        # Only the subscriptions with names on this node hear of it, each once.
        assert isinstance(link, ClusterLink)
        self._cluster_error = error
        affected: dict[Listener, None] = {}
        for table in link.registry.tables:
            for st in table.values():
                affected.update(dict.fromkeys(st.listeners))
        for listener in affected:
            _tell(listener, error)
        # Classic names do not need this node (PUBLISH reaches every node): move them now.
        if self._map is not None and link.address is not None:
            if self._home == link.address:
                self._home = self._pick_home(link.address)
            if self._home is not None and self._home != link.address:
                dst = self._node_link(self._home)
                for kind in _CLASSIC:
                    table = link.registry.tables[kind]
                    for name in [n for n, st in table.items() if st.held]:
                        self._move(kind, name, link, dst, notify=False)
        self._request_refresh()
        self._pulse()

    def _names_lost(self, link: Link, kind: int, name: bytes, listeners: list[Listener]) -> None:
        # The node dropped a shard channel (its slot moved). Subscribe again on the same
        # link at once: the answer is MOVED to the new owner, the quickest way to learn it.
        assert isinstance(link, ClusterLink)
        if link.registry.retry(kind, name):
            link.schedule_flush()
        self._note_lost(name, listeners)
        self._request_refresh()

    def _note_lost(self, name: bytes, listeners: list[Listener]) -> None:
        """``name`` stopped being served for ``listeners``: tell each once this turn."""
        if not listeners:
            return
        if not self._lost_batch:
            asyncio.get_running_loop().call_soon(self._report_lost)
        for listener in listeners:
            self._lost_batch.setdefault(listener, []).append(name)

    def _report_lost(self) -> None:
        # One slot move sends one push per channel: each subscription hears once per turn.
        batch, self._lost_batch = self._lost_batch, {}
        for listener, names in batch.items():
            shown = ", ".join(repr(n) for n in names[:3])
            if len(names) > 3:
                shown += f" and {len(names) - 3} more"
            _tell(listener, ConnectionLost(f"the cluster moved {shown}; resubscribing"))

    def _shard_refused(
        self, link: ClusterLink, cmd: Command, names: list[bytes], message: str
    ) -> None:
        """A shard-channel command got a cluster error (from :meth:`ClusterLink.on_error`)."""
        if not cmd.subscribe or not names:
            # An unsubscribe that failed: the node does not hold the names anyway.
            logger.debug("%r on %r failed: %s", cmd, link, message)
            return
        self._request_refresh()
        redirect = parse_redirect(message) if message.startswith("MOVED") else None
        if redirect is not None and link.address is not None:
            slot, host, port = redirect
            target = (host or link.address[0], port)
            self._cluster_counters["redirects"] += 1
            if self._map is not None:
                self._map.assign(slot, target)
            count = self._slot_redirects[slot] = self._slot_redirects.get(slot, 0) + 1
            if target != link.address and count <= MAX_REDIRECTS:
                logger.debug("%d name(s) of slot %d moved to %s:%d", len(names), slot, *target)
                dst = self._node_link(target)
                for name in names:
                    self._move(SHARD, name, link, dst, notify=False)
                return
            logger.warning(
                "redirect loop for slot %d (%s); waiting for the topology", slot, message
            )
        else:
            logger.info("%r on %r: %s; retrying after the next topology read", cmd, link, message)
        self._parked.update((SHARD, name) for name in names)

    # -- topology ----------------------------------------------------------------------------

    def _request_refresh(self) -> None:
        self._wake.set()

    def _degraded(self) -> bool:
        """Something waits for the topology: a down link with names, or names without a node."""
        if self._map is None or self._parked:
            return True
        return any(
            (link.state is not State.CONNECTED or link is self._limbo)
            and link.registry.holds_wanted()
            for link in self._all_links()
        )

    async def _refresh_loop(self) -> None:
        base, cap, rand = self._backoff
        backoff = Backoff(base, cap, rand)
        while True:
            self._wake.clear()
            try:
                ok = await self._refresh_topology()
            except Exception as exc:  # a bug of ours must not stop the topology from being read
                # Logged with its traceback once per distinct error: it repeats with backoff.
                text = f"{type(exc).__name__}: {exc}"
                if text != self._logged_refresh_bug:
                    self._logged_refresh_bug = text
                    logger.exception("cluster topology refresh failed; retrying with backoff")
                else:
                    logger.debug("cluster topology refresh failed again: %s", text)
                ok = False
            if not ok or self._degraded():
                await asyncio.sleep(backoff.next_delay())
                continue
            if await self._wait_wake(self._refresh_interval):
                # A burst of prompts (one push per channel of a moved slot) makes one read;
                # repeated prompts are spaced out by the backoff.
                await asyncio.sleep(backoff.next_delay())
            else:
                backoff.reset()

    async def _wait_wake(self, delay: float) -> bool:
        if delay == float("inf"):
            await self._wake.wait()
            return True
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    async def _refresh_topology(self) -> bool:
        async with self._refresh_lock:
            smap = await self._fetch_topology()
            if smap is None:
                return False
            self._apply(smap)
            return True

    async def _ensure_map(self) -> SlotMap:
        if self._map is None:
            self._maybe_start()
            async with self._refresh_lock:
                if self._map is None:
                    smap = await self._fetch_topology()
                    if smap is not None:
                        self._apply(smap)
            if self._map is None:
                raise ConnectError(f"cannot read the cluster topology: {self._cluster_error}")
        return self._map

    def _candidates(self) -> list[Address]:
        """Nodes to ask, most likely to answer first: connected ones, primaries, seeds."""
        out = [a for a, link in self._links.items() if link.state is State.CONNECTED]
        if self._map is not None:
            out += self._map.primaries
        out += self._seed_options
        if self._map is not None:
            out += self._map.nodes
        return list(dict.fromkeys(out))

    async def _fetch_topology(self) -> SlotMap | None:
        errors: list[str] = []
        for addr in self._candidates():
            opts = self._node_options(addr)
            try:
                smap = await self._ask_topology(opts, addr)
            except (RedisMPXError, OSError, TimeoutError, ValueError, TypeError, IndexError) as e:
                errors.append(f"{addr[0]}:{addr[1]}: {e}")
                continue
            if smap.covered() == 0:
                errors.append(f"{addr[0]}:{addr[1]}: serves no slot (not in a cluster yet?)")
                continue
            if self._logged_refresh_error is not None:
                logger.info("cluster topology read again from %s:%d", *addr)
                self._logged_refresh_error = None
            return smap
        text = "; ".join(errors) or "no node to ask"
        self._cluster_error = ConnectError(f"cannot read the cluster topology: {text}")
        if text != self._logged_refresh_error:  # once per distinct failure, not per attempt
            self._logged_refresh_error = text
            logger.warning("%s; retrying with backoff", self._cluster_error)
        return None

    async def _ask_topology(self, opts: ConnectOptions, addr: Address) -> SlotMap:
        async with asyncio.timeout(opts.connect_timeout):
            conn = await self._connect(opts)
            try:
                try:
                    reply = await conn.request(b"CLUSTER", b"SHARDS")
                except ServerError as exc:
                    if "unknown" not in exc.reply.lower():
                        raise
                    # CLUSTER SHARDS is Redis >= 7.0; CLUSTER SLOTS is older and still works.
                    reply = await conn.request(b"CLUSTER", b"SLOTS")
                    return SlotMap.from_slots(reply, addr[0])
                return SlotMap.from_shards(reply, addr[0], tls=opts.ssl is not None)
            finally:
                conn.close()

    def _apply(self, smap: SlotMap) -> None:
        old = self._map
        self._map = smap
        self._cluster_counters["topology_refreshes"] += 1
        self._slot_redirects.clear()
        changed = old is None or not old.same_owners(smap)
        if changed:
            logger.info(
                "cluster topology: %d primaries (%s)",
                len(smap.primaries),
                ", ".join(f"{h}:{p}" for h, p in smap.primaries),
            )
        if changed or self._degraded() or self._home not in smap.primaries:
            self._reconcile()
        self._retire_idle_links()
        self._pulse()

    def _reconcile(self) -> None:
        """Move every name whose link is not where the slot map says it belongs."""
        smap = self._map
        assert smap is not None
        parked, self._parked = self._parked, set()
        if self._home not in smap.primaries:
            self._home = self._pick_home(None)
        serving = set(smap.primaries)
        for link in self._all_links():
            here = link.address
            up = link.state is State.CONNECTED
            for kind in KINDS:
                moves: list[tuple[bytes, Address | None]] = []
                for name, st in link.registry.tables[kind].items():
                    if not st.held:
                        continue
                    if kind == SHARD:
                        want = smap.owners[key_slot(name)]
                        # An active name on a node that serves no slot (a replica, maybe a
                        # demoted primary in transition) or on a replica of the owner stays:
                        # the node still delivers it, and tells us (sunsubscribe) when it
                        # stops. Moving it would interrupt it for nothing.
                        stay = here is not None and (
                            want == here
                            or (
                                up
                                and st.active
                                and want is not None
                                and (here not in serving or smap.same_shard(here, want))
                            )
                        )
                    else:
                        # Any node serves classic names: they stay while their link is up.
                        want = self._home
                        stay = here is not None and (want == here or up)
                    if not stay:
                        moves.append((name, want))
                    elif (kind, name) in parked and link.registry.retry(kind, name):
                        link.schedule_flush()
                for name, want in moves:
                    dst = self._limbo if want is None else self._node_link(want)
                    self._move(kind, name, link, dst, notify=True)

    def _retire_idle_links(self) -> None:
        # Links to serving primaries are kept (no reconnect on add/remove churn); others go
        # once they hold no wanted name.
        smap = self._map
        assert smap is not None
        serving = set(smap.primaries)
        for addr, link in list(self._links.items()):
            if addr not in serving and addr != self._home and not link.registry.holds_wanted():
                self._retire(addr)

    # -- publishing --------------------------------------------------------------------------

    async def _publish_probe(self, channel: bytes) -> float:
        # ``ping``'s subscription is a shard channel here, which a classic PUBLISH never
        # reaches: SPUBLISH it like any message. The publish connection to the owner is made
        # first, so that the round trip does not count it.
        owner = (await self._ensure_map()).owners[key_slot(channel)]
        if owner is not None:
            await self._commander(owner)
        sent = asyncio.get_running_loop().time()
        await self.publish(channel, b"ping", sharded=self._shard_by_default)
        return sent

    async def publish(
        self, channel: str | bytes, data: str | bytes, *, sharded: bool = True
    ) -> int:
        """Publish ``data`` on ``channel``; returns the number of receivers Redis reports.

        ``sharded=True``: ``SPUBLISH`` on the primary owning the channel's slot (``MOVED``
        followed, up to :data:`MAX_REDIRECTS` times), for shard-channel subscriptions.
        ``sharded=False``: classic ``PUBLISH`` (for patterns, promises and ``sharded=False``
        channels); the cluster broadcasts it, and the count covers the receiving node only.

        Uses one plain connection per node, opened at the first publish to it and kept.
        Raises :class:`ConnectError`/:class:`ConnectionLost` when the node cannot be reached
        (nothing is retried then: the message may or may not have been published) and
        :class:`ServerError` for error replies. Cancelling the caller is safe (the reply is
        discarded when it comes), but the message may have been published.
        """
        self._check_open()
        name = to_bytes(channel, "channel")
        payload = to_bytes(data, "data")
        if not sharded:
            smap = await self._ensure_map()
            addr = self._home or (smap.primaries[0] if smap.primaries else None)
            if addr is None:
                raise ConnectError("no cluster node to publish to")
            conn = await self._commander(addr)
            return int(await conn.request(b"PUBLISH", name, payload))
        slot = key_slot(name)
        for _ in range(MAX_REDIRECTS + 1):
            smap = await self._ensure_map()
            owner = smap.owners[slot]
            if owner is None:
                raise ServerError(f"CLUSTERDOWN no node serves slot {slot}", "SPUBLISH")
            conn = await self._commander(owner)
            try:
                return int(await conn.request(b"SPUBLISH", name, payload))
            except ServerError as exc:
                redirect = parse_redirect(exc.reply) if exc.code == "MOVED" else None
                if redirect is None:
                    raise
                moved_slot, host, port = redirect
                smap.assign(moved_slot, (host or owner[0], port))
                self._cluster_counters["redirects"] += 1
                self._request_refresh()
        raise ServerError(f"too many redirects for slot {slot}", "SPUBLISH")

    async def _commander(self, addr: Address) -> Connection:
        """The plain (non-Pub/Sub) connection to ``addr`` used by :meth:`publish`."""
        task = self._commanders.get(addr)
        if (
            task is not None
            and task.done()
            and (task.cancelled() or task.exception() is not None or task.result().closed.done())
        ):
            task = None
        if task is None:
            task = self._commanders[addr] = self._connect_task(self._node_options(addr))
        # Shielded: one caller cancelled must not cancel a connection others wait for.
        conn = await asyncio.shield(task)
        self._check_open()
        if conn.closed.done():  # a request on it would never be answered
            raise ConnectionLost(f"connection to {addr[0]}:{addr[1]} lost: {conn.closed.result()}")
        return conn

    def _connect_task(self, opts: ConnectOptions) -> asyncio.Task[Connection]:
        task = asyncio.get_running_loop().create_task(
            connect(opts), name=f"redismpx connect {opts.describe()}"
        )
        task.add_done_callback(_retrieve)
        return task

    async def _connect(self, opts: ConnectOptions) -> Connection:
        """``connect(opts)`` in a task that a cancelled caller does not cancel.

        Cancelling ``connect`` mid-handshake leaves its socket open (it only cleans up on
        its own errors), so the attempt runs to its end (at most ``connect_timeout``) and a
        connection nobody takes is closed; ``aclose()`` waits for it.
        """
        task = self._connect_task(opts)
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(_close_connected)
            raise

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and state (the :class:`Multiplexer` keys, summed over nodes, and more)."""
        links = list(self._links.values())
        counts = [0, 0, 0]
        for link in self._all_links():
            for i, n in enumerate(link.registry.counts()):
                counts[i] += n
        error = self._cluster_error
        return {
            "state": self.state.value,
            "subscriptions": len(self._subs),
            "channels": counts[CHANNEL],
            "patterns": counts[PATTERN],
            "shard_channels": counts[SHARD],
            "messages_received": self._retired_counts[2]
            + sum(link.messages_received() for link in self._all_links()),
            "messages_dispatched": self._retired_counts[3]
            + sum(link.messages_dispatched() for link in self._all_links()),
            "connects": self._retired_counts[0] + sum(link.connects for link in links),
            "reconnects": self._retired_counts[1] + sum(link.reconnects for link in links),
            "dropped": self._counters["dropped"],
            "callback_errors": self._counters["callback_errors"],
            "last_error": None if error is None else str(error),
            "nodes": sum(1 for link in links if link.state is State.CONNECTED),
            **self._cluster_counters,
        }


def _retrieve(task: asyncio.Task[Connection]) -> None:
    # Mark a failed connect as seen: a caller that was cancelled never will.
    if not task.cancelled():
        task.exception()


def _close_connected(task: asyncio.Task[Connection]) -> None:
    if not task.cancelled() and task.exception() is None:
        task.result().close()
