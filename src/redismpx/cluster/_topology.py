"""Reading the cluster's topology, and keeping it fresh.

The slot map is read (``CLUSTER SHARDS``, else ``CLUSTER SLOTS``) over a short-lived plain
connection to a known node or a seed: at start, every ``topology_refresh_interval`` seconds,
and soon after anything suspicious (a lost link, a shard channel dropped by its node, a
``MOVED`` reply). While something is wrong (a link holding names is down, names wait for an
owner) it is read again with the reconnect backoff. Each read goes to the router
(:meth:`ClusterRouter.apply`), which moves the names whose owner changed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from .._backoff import Backoff
from .._connection import connect
from .._options import ConnectOptions
from ..errors import ConnectError, RedisMPXError, ServerError
from ._slots import Address, SlotMap

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
                        router.apply(smap)
            if router.map is None:
                raise ConnectError(f"cannot read the cluster topology: {router.error}")
        return router.map

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
            if not ok or self._router.degraded():
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
            self._router.apply(smap)
            return True

    async def _fetch(self) -> SlotMap | None:
        router = self._router
        errors: list[str] = []
        for addr in router.candidates():
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
