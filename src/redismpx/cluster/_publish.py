"""Publishing on a cluster: ``SPUBLISH`` on the slot's owner (following ``MOVED``), or a
classic ``PUBLISH`` (broadcast by the cluster to every node).

One plain (non-Pub/Sub) connection per node, opened at the first publish to it and kept; its
connecting task belongs to the multiplexer's task owner.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .._connection import Connection, connect
from .._protocol import to_bytes
from ..errors import ConnectError, ConnectionLost, ServerError
from ._slots import MAX_REDIRECTS, Address, key_slot, parse_redirect

if TYPE_CHECKING:
    from ._router import ClusterRouter


class Publisher:
    """The publishing side of a cluster router."""

    def __init__(self, router: ClusterRouter) -> None:
        self._router = router
        self._conns: dict[Address, asyncio.Task[Connection]] = {}

    def close(self) -> None:
        """Close the connections (a connect still under way is cancelled by the task owner)."""
        for task in self._conns.values():
            if task.done() and not _unusable(task):
                task.result().close()
        self._conns.clear()

    def abandon(self) -> None:
        self._conns.clear()  # their tasks belonged to a loop that is closed

    async def connection_for(self, channel: bytes) -> Connection:
        """The connection to the primary owning ``channel``'s slot."""
        smap = await self._router.topology.ensure_map()
        owner = smap.owners[key_slot(channel)]
        if owner is None:
            raise ServerError(f"CLUSTERDOWN no node serves slot {key_slot(channel)}", "SPUBLISH")
        return await self._connection(owner)

    async def publish(self, channel: str | bytes, data: str | bytes, *, sharded: bool) -> int:
        """See :meth:`ClusterMultiplexer.publish`."""
        router = self._router
        name = to_bytes(channel, "channel")
        payload = to_bytes(data, "data")
        if not sharded:
            smap = await router.topology.ensure_map()
            addr = router.home or (smap.primaries[0] if smap.primaries else None)
            if addr is None:
                raise ConnectError("no cluster node to publish to")
            conn = await self._connection(addr)
            return int(await conn.request(b"PUBLISH", name, payload))
        slot = key_slot(name)
        for _ in range(MAX_REDIRECTS + 1):
            smap = await router.topology.ensure_map()
            owner = smap.owners[slot]
            if owner is None:
                raise ServerError(f"CLUSTERDOWN no node serves slot {slot}", "SPUBLISH")
            conn = await self._connection(owner)
            try:
                return int(await conn.request(b"SPUBLISH", name, payload))
            except ServerError as exc:
                redirect = parse_redirect(exc.reply) if exc.code == "MOVED" else None
                if redirect is None:
                    raise
                moved_slot, host, port = redirect
                smap.assign(moved_slot, (host or owner[0], port))
                router.counters["redirects"] += 1
                router.topology.request_refresh()
        raise ServerError(f"too many redirects for slot {slot}", "SPUBLISH")

    async def _connection(self, addr: Address) -> Connection:
        task = self._conns.get(addr)
        if task is not None and task.done() and _unusable(task):
            task = None
        if task is None:
            opts = self._router.node_options(addr)
            task = self._conns[addr] = self._router.host.tasks.spawn(
                connect(opts), f"redismpx publisher {opts.describe()}"
            )
            task.add_done_callback(_retrieve)
        # Shielded: one caller cancelled must not cancel a connection others wait for.
        conn = await asyncio.shield(task)
        if self._router.host_closed():
            raise ConnectionLost("the multiplexer closed")
        if conn.closed.done():  # a request on it would never be answered
            raise ConnectionLost(f"connection to {addr[0]}:{addr[1]} lost: {conn.closed.result()}")
        return conn


def _unusable(task: asyncio.Task[Connection]) -> bool:
    return task.cancelled() or task.exception() is not None or task.result().closed.done()


def _retrieve(task: asyncio.Task[Connection]) -> None:
    # Mark a failed connect as seen: a caller that was cancelled never will.
    if not task.cancelled():
        task.exception()
