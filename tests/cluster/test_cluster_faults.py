"""Cluster faults at the edges of the reply stream, against real loopback clusters.

``ping()`` over shard channels, and a slot move that races a heartbeat PING or an
unsubscribe. The slot-move tests share a 2-primary cluster of this module: each moves a slot
of the first primary to the second (never back) and picks its names from the slots the first
primary still serves. To put a command of ours behind a move, the first primary is made to
sleep (``DEBUG SLEEP``) with ``CLUSTER SETSLOT`` pipelined behind: it runs the move the
moment it wakes, before it reads anything we sent meanwhile.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from redismpx.cluster import ClusterMultiplexer
from redismpx.server import RedisCluster

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def mpx_factory() -> AsyncIterator[Any]:
    made: list[ClusterMultiplexer] = []

    def factory(url: str, **kwargs: Any) -> ClusterMultiplexer:
        m = ClusterMultiplexer(url, client_name="rmpx-faults", **kwargs)
        made.append(m)
        return m

    yield factory
    for m in made:
        await m.aclose()


# -- ping -------------------------------------------------------------------------------------


async def test_ping_round_trip_over_shard_channels(cluster: RedisCluster, mpx_factory) -> None:
    mpx = mpx_factory(cluster.url)
    rtt = await mpx.ping(timeout=3)
    assert 0 <= rtt < 3
    rtt = await mpx.ping(timeout=3)  # the publish connection is kept: again, cheaper
    assert 0 <= rtt < 3
    stats = mpx.stats()
    assert stats["subscriptions"] == 0 and stats["shard_channels"] == 0  # cleaned up
    assert stats["reconnects"] == 0
