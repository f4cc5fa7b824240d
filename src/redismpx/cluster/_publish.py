"""Publishing on a cluster: ``SPUBLISH`` on the slot's owner (following ``MOVED``), or a
classic ``PUBLISH`` (broadcast by the cluster to every node).

One :class:`~redismpx._commands.CommandLink` per node (a plain connection, opened at the
first publish to it and kept, pipelined per loop turn, re-dialled with the backoff).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from .._commands import CommandLink
from .._connection import Connection, connect
from .._protocol import encode_command, encode_pair
from ..errors import ConnectError, ServerError
from ._slots import MAX_REDIRECTS, Address, key_slot, parse_redirect

if TYPE_CHECKING:
    from ._router import ClusterRouter

_PING = encode_command(b"PING")

#: ``TRYAGAIN`` (a multi-key command while its slot migrates, its keys on both nodes): how
#: often, and how long apart, it is sent again before the error is raised.
TRYAGAIN_WAITS = 40
TRYAGAIN_PAUSE = 0.025


class Publisher:
    """The publishing side of a cluster router."""

    def __init__(self, router: ClusterRouter) -> None:
        self._router = router
        self._links: dict[Address, CommandLink] = {}
        self.published = 0  # publishes Redis answered

    def close(self) -> None:
        """Close every node's command connection (waiting publishes fail)."""
        for link in self._links.values():
            link.close()
        self._links.clear()

    def abandon(self) -> None:
        self._links.clear()  # their tasks belonged to a loop that is closed

    @property
    def connects(self) -> int:
        return sum(link.connects for link in self._links.values())

    async def open_for(self, channel: bytes) -> None:
        """Open the connection to the primary owning ``channel``'s slot (a PING's round trip)."""
        smap = await self._router.topology.ensure_map()
        owner = smap.owners[key_slot(channel)]
        if owner is None:
            raise ServerError(f"CLUSTERDOWN no node serves slot {key_slot(channel)}", "SPUBLISH")
        await self._link(owner).call(_PING, "PING", None)

    async def publish(
        self, channel: bytes, data: bytes, *, sharded: bool, timeout: float | None
    ) -> int:
        """See :meth:`ClusterMultiplexer.publish`."""
        router = self._router
        if not sharded:
            smap = await router.topology.ensure_map()
            addr = router.home or (smap.primaries[0] if smap.primaries else None)
            if addr is None:
                raise ConnectError("no cluster node to publish to")
            frame = encode_pair(b"PUBLISH", channel, data)
            receivers = int(await self._link(addr).call(frame, "PUBLISH", timeout))
            self.published += 1
            return receivers
        frame = encode_pair(b"SPUBLISH", channel, data)
        receivers = int(await self.call_for(channel, frame, "SPUBLISH", timeout))
        self.published += 1
        return receivers

    async def call_for(self, key: bytes, command: bytes, name: str, timeout: float | None) -> Any:
        """Send ``command`` to the primary owning ``key``'s slot, following ``MOVED`` and
        ``ASK`` (a slot being migrated) and waiting out ``TRYAGAIN`` (its keys split between
        the two nodes for a moment)."""
        router = self._router
        slot = key_slot(key)
        redirects = waits = 0
        asked: Address | None = None
        while redirects <= MAX_REDIRECTS:
            smap = await router.topology.ensure_map()
            owner = asked or smap.owners[slot]
            if owner is None:
                raise ServerError(f"CLUSTERDOWN no node serves slot {slot}", name)
            try:
                return await self._link(owner).call(
                    command, name, timeout, asking=asked is not None
                )
            except ServerError as exc:
                asked = None
                if exc.code == "TRYAGAIN":
                    waits += 1
                    if waits > TRYAGAIN_WAITS:
                        raise
                    await asyncio.sleep(TRYAGAIN_PAUSE)
                    continue
                redirect = parse_redirect(exc.reply) if exc.code in ("MOVED", "ASK") else None
                if redirect is None:
                    raise
                redirects += 1
                moved_slot, host, port = redirect
                target = (host or owner[0], port)
                if exc.code == "ASK":
                    asked = target  # this command only: the slot is still the owner's
                    continue
                smap.assign(moved_slot, target)
                router.counters["redirects"] += 1
                router.topology.request_refresh()
        raise ServerError(f"too many redirects for slot {slot}", name)

    def _link(self, addr: Address) -> CommandLink:
        link = self._links.get(addr)
        if link is None:
            opts = self._router.node_options(addr)

            async def dial() -> Connection:
                return await connect(opts)

            host = self._router.host
            link = self._links[addr] = CommandLink(dial, host.tasks, host.tuning, opts.describe)
        return link
