"""Every task and callback the library schedules has one owner, and ``aclose()`` leaves none.

For each topology: a multiplexer with every kind of subscription (inline and queued
callbacks, an iterator, promises with one left pending, a buffer that overflowed), an outage
in the middle, then ``aclose()``: no task, no pending loop callback and no live timer of
redismpx may remain.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from redismpx import ClusterMultiplexer, Multiplexer
from redismpx.server import RedisCluster, RedisServer
from support.admin import Admin
from support.recorder import AsyncRecorder, Recorder

Publish = Callable[[str, str], Awaitable[Any]]
Outage = Callable[[], Awaitable[Any]]


def _ours(handle: asyncio.Handle) -> bool:
    module = getattr(getattr(handle, "_callback", None), "__module__", None) or ""
    return module.startswith("redismpx") and not handle.cancelled()


def leftovers(loop: asyncio.AbstractEventLoop) -> dict[str, list[Any]]:
    """What of redismpx is still scheduled in ``loop`` (tasks, callbacks, timers)."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    ready = [h for h in getattr(loop, "_ready", ()) if _ours(h)]
    timers = [h for h in getattr(loop, "_scheduled", ()) if _ours(h)]
    return {"tasks": tasks, "callbacks": ready, "timers": timers}


async def exercise(mpx: Multiplexer, publish: Publish, outage: Outage) -> None:
    """Every kind of subscription, an outage, traffic, and a slow consumer that overflows."""
    inline, queued = Recorder("inline"), AsyncRecorder("queued")
    mpx.new_channel_subscription(*inline.callbacks).add("{o}a")
    mpx.new_channel_subscription(*queued.callbacks).add("{o}a")
    stuck = asyncio.Event()

    async def never(channel: bytes, data: bytes) -> None:
        await stuck.wait()

    mpx.new_channel_subscription(never, max_buffer=1).add("{o}a")  # overflows below
    iterator = mpx.subscribe("{o}a")
    prom = mpx.new_promise_subscription("{o}p:")
    await inline.activated("{o}a")
    await queued.activated("{o}a")
    await prom.wait_for_activation()
    prom.new_promise("left-pending", 30)
    await outage()
    await inline.activated("{o}a", count=2, timeout=15)
    await prom.wait_for_activation()
    for i in range(5):
        await publish("{o}a", str(i))
    await inline.received(5)
    await queued.received(5)
    assert iterator is not None


async def test_standalone_aclose_leaves_nothing_scheduled(redis_server: RedisServer) -> None:
    admin = Admin(redis_server.url)
    mpx = Multiplexer(redis_server.url, client_name="owned")
    try:

        async def outage() -> None:
            await admin.client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")

        await exercise(mpx, admin.publish, outage)
    finally:
        await mpx.aclose()
        await admin.close()
    assert leftovers(asyncio.get_running_loop()) == {"tasks": [], "callbacks": [], "timers": []}


@pytest.mark.timeout(60)
async def test_cluster_aclose_leaves_nothing_scheduled(cluster: RedisCluster) -> None:
    mpx = ClusterMultiplexer(cluster.url, client_name="owned")
    try:

        async def publish(channel: str, data: str) -> int:
            return await mpx.publish(channel, data)

        async def outage() -> None:
            for node in cluster.primaries():
                client = await asyncio.to_thread(node.command, "CLIENT", "KILL", "TYPE", "pubsub")
                assert client is not None

        await exercise(mpx, publish, outage)
    finally:
        await mpx.aclose()
    assert leftovers(asyncio.get_running_loop()) == {"tasks": [], "callbacks": [], "timers": []}
