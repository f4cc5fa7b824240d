"""A multiplexer outlives the event loop it was first used in (a module-level client under
per-test loops, ``asyncio.run`` called twice), and refuses to serve two open loops at once.

These tests are synchronous on purpose: each one runs several event loops of its own.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Any

import pytest

from redismpx import (
    ClusterMultiplexer,
    EventLoopMismatch,
    Multiplexer,
    SubscriptionClosed,
)
from redismpx.server import RedisCluster, RedisServer
from support.admin import Admin
from support.recorder import AsyncRecorder, Recorder, settle


def _our_tasks() -> list[asyncio.Task[Any]]:
    current = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not current and not t.done()]


async def _round_trip(mpx: Multiplexer, url: str, channel: str) -> None:
    """Subscribe, see the activation, publish, see the message: the multiplexer works here."""
    rec = Recorder()
    sub = mpx.new_channel_subscription(*rec.callbacks)
    sub.add(channel)
    await rec.activated(channel)
    assert mpx.state == "connected"
    admin = Admin(url)
    try:
        await admin.publish(channel, "hello")
        await rec.received(1)
    finally:
        await admin.close()
    assert rec.messages == [(channel.encode(), b"hello")]
    sub.close()


def test_a_multiplexer_follows_its_user_into_a_new_event_loop(redis_server: RedisServer) -> None:
    mpx = Multiplexer(redis_server.url, health_check_interval=1.0)
    asyncio.run(_round_trip(mpx, redis_server.url, "first"))
    # Its loop is gone, so is its connection: it must not claim otherwise.
    assert mpx.state != "connected"

    async def second() -> None:
        await mpx.wait_connected(5)
        await _round_trip(mpx, redis_server.url, "second")
        assert mpx.stats()["subscriptions"] == 0
        await mpx.aclose()
        assert _our_tasks() == []

    asyncio.run(second())


def test_subscriptions_of_an_ended_loop_are_closed_with_a_reason(
    redis_server: RedisServer,
) -> None:
    mpx = Multiplexer(redis_server.url)
    left_open: dict[str, Any] = {}

    async def first() -> None:
        rec = AsyncRecorder("old")  # queued: a worker task of this loop
        sub = mpx.new_channel_subscription(*rec.callbacks)
        sub.add("x")
        await rec.activated("x")
        prom = mpx.new_promise_subscription("p:")
        await prom.wait_for_activation()
        prom.new_promise("never", 30)  # left pending, its timer in this loop
        left_open.update(sub=sub, rec=rec, prom=prom)

    asyncio.run(first())

    async def second() -> None:
        sub, rec, prom = left_open["sub"], left_open["rec"], left_open["prom"]
        probe = Recorder("probe")
        mpx.new_channel_subscription(*probe.callbacks).add("x")
        await probe.activated("x")
        assert sub.closed and prom.closed
        assert sub.close_reason is not None and "event loop" in sub.close_reason
        with pytest.raises(SubscriptionClosed, match="event loop"):
            sub.add("y")
        with pytest.raises(SubscriptionClosed):
            prom.new_promise("again", 1)
        admin = Admin(redis_server.url)
        try:
            assert await admin.numsub("x") == 1  # the probe's connection only
            await admin.publish("x", "after")
        finally:
            await admin.close()
        await probe.received(1)
        await settle(mpx)
        assert rec.messages == []  # nothing of the old loop's subscription ran here
        await mpx.aclose()

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "coroutine was never awaited"
        asyncio.run(second())


def test_two_open_event_loops_are_refused_with_a_typed_error(redis_server: RedisServer) -> None:
    mpx = Multiplexer(redis_server.url)
    first = asyncio.new_event_loop()
    second = asyncio.new_event_loop()
    try:
        first.run_until_complete(mpx.wait_connected(5))
        with pytest.raises(EventLoopMismatch, match="another event loop"):
            second.run_until_complete(mpx.wait_connected(5))

        async def subscribe() -> None:
            mpx.new_channel_subscription(lambda c, d: None).add("x")

        with pytest.raises(EventLoopMismatch):
            second.run_until_complete(subscribe())
        first.run_until_complete(mpx.aclose())
    finally:
        first.close()
        second.close()


def test_a_cluster_multiplexer_follows_its_user_into_a_new_event_loop(
    cluster: RedisCluster,
) -> None:
    mpx = ClusterMultiplexer(cluster.urls[0])

    async def use(channel: str) -> None:
        rec = Recorder()
        sub = mpx.new_channel_subscription(*rec.callbacks)
        sub.add(channel)
        await rec.activated(channel)
        await mpx.wait_connected(10)
        assert await mpx.publish(channel, b"hello") == 1
        await rec.received(1)
        sub.close()

    asyncio.run(use("{a}first"))
    assert mpx.state != "connected"

    async def second() -> None:
        await use("{b}second")
        await mpx.aclose()
        assert _our_tasks() == []

    asyncio.run(second())


def test_a_loop_ending_with_the_multiplexer_open_logs_no_error(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    # asyncio.run cancels the multiplexer's tasks, and with them the future a connection
    # keeps for its close reason: connection_lost then read the cancelled future and asyncio
    # logged "Exception in callback ... CancelledError" per connection (Django's
    # async_to_sync hits this on every call from sync code).
    mpx = Multiplexer(redis_server.url)

    async def use() -> None:
        sub = mpx.new_channel_subscription(lambda c, d: None)
        await sub.add("x")
        assert await mpx.publish("x", "y") == 1

    with caplog.at_level(logging.ERROR):
        asyncio.run(use())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    mpx.close()
