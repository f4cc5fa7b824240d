"""Reading the cluster's topology, and keeping it fresh.

The slot map is read (``CLUSTER SHARDS``, else ``CLUSTER SLOTS``) over a short-lived plain
connection to a known node or a seed: at start, every ``topology_refresh_interval`` seconds,
and soon after anything suspicious (a lost link, a shard channel dropped by its node, a
``MOVED`` reply). While something is wrong (a link holding names is down, names wait for an
owner) it is read again with the reconnect backoff. Each read moves the names whose owner
changed to their new link, and retires the links nobody needs (:meth:`Topology.apply`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .._backoff import Backoff
from .._connection import connect
from .._options import ConnectOptions
from .._protocol import KINDS, SHARD
from ..errors import ConnectError, RedisMPXError, ServerError
from ..state import State
from ._slots import Address, SlotMap, key_slot

if TYPE_CHECKING:
    from ._router import ClusterRouter

logger = logging.getLogger("redismpx.cluster")


class Topology:
    """The topology reader of one cluster router (see the module docstring)."""

    def __init__(self, router: ClusterRouter, refresh_interval: float) -> None:
        self._router = router
        self._interval = refresh_interval
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._logged_error: str | None = None
        self._logged_bug: str | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = self._router.host.tasks.spawn(self._loop(), "redismpx cluster topology")

    def abandon(self) -> None:
        # Its task and asyncio primitives belonged to a loop that is closed.
        self._task = None
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()

    def request_refresh(self) -> None:
        """Read the topology soon (prompts in a burst make one read)."""
        self._wake.set()

    async def ensure_map(self) -> SlotMap:
        """The slot map, read now if none is known yet (``ConnectError`` if it cannot be)."""
        router = self._router
        if router.map is None:
            async with self._lock:
                if router.map is None:
                    smap = await self._fetch()
                    if smap is not None:
                        self.apply(smap)
            if router.map is None:
                raise ConnectError(f"cannot read the cluster topology: {router.error}")
        return router.map

    def degraded(self) -> bool:
        """Something waits for the topology: a down link with names, or names without a node."""
        router = self._router
        if router.map is None or router.parked:
            return True
        return any(
            (link.state is not State.CONNECTED or link is router.limbo)
            and link.registry.holds_wanted()
            for link in router.all_links()
        )

    def candidates(self) -> list[Address]:
        """Nodes to ask for the topology, most likely to answer first."""
        router = self._router
        out = [a for a, link in router.links.items() if link.state is State.CONNECTED]
        if router.map is not None:
            out += router.map.primaries
        out += router.seeds
        if router.map is not None:
            out += router.map.nodes
        return list(dict.fromkeys(out))

    def apply(self, smap: SlotMap) -> None:
        """A topology read: move what must move, retire what is idle."""
        router = self._router
        old = router.map
        router.map = smap
        router.counters["topology_refreshes"] += 1
        router.slot_redirects.clear()
        changed = old is None or not old.same_owners(smap)
        if changed:
            logger.info(
                "cluster topology: %d primaries (%s)",
                len(smap.primaries),
                ", ".join(f"{h}:{p}" for h, p in smap.primaries),
            )
        if changed or self.degraded() or router.home not in smap.primaries:
            self._reconcile(smap)
        self._retire_idle_links(smap)
        router.pulse()

    def _reconcile(self, smap: SlotMap) -> None:
        """Move every name whose link is not where the slot map says it belongs."""
        router = self._router
        parked, router.parked = router.parked, set()
        if router.home not in smap.primaries:
            router.home = router.pick_home(None)
        serving = set(smap.primaries)
        for link in router.all_links():
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
                        want = router.home
                        stay = here is not None and (want == here or up)
                    if not stay:
                        moves.append((name, want))
                    elif (kind, name) in parked and link.registry.retry(kind, name):
                        link.schedule_flush()
                for name, want in moves:
                    dst = router.limbo if want is None else router.node_link(want)
                    router.move(kind, name, link, dst, notify=True)

    def _retire_idle_links(self, smap: SlotMap) -> None:
        # Links to serving primaries are kept (no reconnect on add/remove churn); others go
        # once they hold no wanted name.
        router = self._router
        serving = set(smap.primaries)
        for addr, link in list(router.links.items()):
            if addr not in serving and addr != router.home and not link.registry.holds_wanted():
                router.retire(addr)

    async def _loop(self) -> None:
        tuning = self._router.host.tuning
        backoff = Backoff(tuning.backoff_base, tuning.backoff_cap, tuning.random_source)
        while True:
            self._wake.clear()
            try:
                ok = await self._refresh()
            except Exception as exc:  # a bug of ours must not stop the topology from being read
                # Logged with its traceback once per distinct error: it repeats with backoff.
                text = f"{type(exc).__name__}: {exc}"
                if text != self._logged_bug:
                    self._logged_bug = text
                    logger.exception("cluster topology refresh failed; retrying with backoff")
                else:
                    logger.debug("cluster topology refresh failed again: %s", text)
                ok = False
            if not ok or self.degraded():
                await asyncio.sleep(backoff.next_delay())
                continue
            if await self._wait_wake(self._interval):
                # A burst of prompts (one push per channel of a moved slot) makes one read;
                # repeated prompts are spaced out by the backoff.
                await asyncio.sleep(backoff.next_delay())
            else:
                backoff.reset()

    async def _wait_wake(self, delay: float) -> bool:
        if delay == float("inf"):  # refresh only when prompted
            await self._wake.wait()
            return True
        try:
            async with asyncio.timeout(delay):
                await self._wake.wait()
        except TimeoutError:
            return False
        return True

    async def _refresh(self) -> bool:
        async with self._lock:
            smap = await self._fetch()
            if smap is None:
                return False
            self.apply(smap)
            return True

    async def _fetch(self) -> SlotMap | None:
        router = self._router
        errors: list[str] = []
        for addr in self.candidates():
            opts = router.node_options(addr)
            try:
                smap = await _ask(opts, addr)
            except (RedisMPXError, OSError, TimeoutError, ValueError, TypeError, IndexError) as e:
                errors.append(f"{addr[0]}:{addr[1]}: {e}")
                continue
            if smap.covered() == 0:
                errors.append(f"{addr[0]}:{addr[1]}: serves no slot (not in a cluster yet?)")
                continue
            if self._logged_error is not None:
                logger.info("cluster topology read again from %s:%d", *addr)
                self._logged_error = None
            return smap
        text = "; ".join(errors) or "no node to ask"
        router.error = ConnectError(f"cannot read the cluster topology: {text}")
        if text != self._logged_error:  # once per distinct failure, not per attempt
            self._logged_error = text
            logger.warning("%s; retrying with backoff", router.error)
        return None


async def _ask(opts: ConnectOptions, addr: Address) -> SlotMap:
    """One topology read from ``addr`` over a plain connection closed afterwards."""
    async with asyncio.timeout(opts.connect_timeout):
        conn = await connect(opts)
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
