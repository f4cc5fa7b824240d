"""Pattern subscriptions (B24-B27), activation (B28-B32) and callbacks (B33-B37)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from redismpx import ConnectionLost, Multiplexer
from support.recorder import AsyncRecorder, Recorder, settle


async def test_pattern_delivers_actual_channel_and_unsubscribes_last(
    mpx: Multiplexer, admin
) -> None:
    # B24, B25
    a, b = Recorder("a"), Recorder("b")
    pa = mpx.new_pattern_subscription("news:*", *a.callbacks)
    await a.activated("news:*")
    await admin.reset_stats()
    pb = mpx.new_pattern_subscription(b"news:*", *b.callbacks)
    await b.activated("news:*")  # B27: the second holder activates too
    assert await admin.calls("psubscribe") == 0
    await admin.publish("news:1", "hello")
    await a.received(1)
    await b.received(1)
    assert a.messages == [(b"news:1", b"hello")] == b.messages
    pa.close()
    await settle(mpx)
    assert await admin.numpat() == 1
    pb.close()
    async with asyncio.timeout(5):
        while await admin.numpat() != 0:
            await asyncio.sleep(0.01)
    assert pb.pattern == b"news:*"


async def test_channel_and_pattern_both_matching_deliver_once_each(mpx: Multiplexer, admin) -> None:
    # B26
    c, p = Recorder("c"), Recorder("p")
    sc = mpx.new_channel_subscription(*c.callbacks)
    sc.add("q:1")
    mpx.new_pattern_subscription("q:*", *p.callbacks)
    await c.activated("q:1")
    await p.activated("q:*")
    await admin.publish("q:1", "m")
    await admin.publish("q:2", "n")
    await p.received(2)
    await c.received(1)
    assert c.messages == [(b"q:1", b"m")]
    assert p.messages == [(b"q:1", b"m"), (b"q:2", b"n")]
    assert mpx.stats()["messages_received"] == 3  # one message and two pmessages
    assert mpx.stats()["messages_dispatched"] == 3


async def test_activation_once_per_subscription_and_name(mpx: Multiplexer, admin) -> None:
    # B28, B29, B30
    a, b, c = Recorder("a"), Recorder("b"), Recorder("c")
    sa = mpx.new_channel_subscription(*a.callbacks)
    sa.add("x", "y")
    sb = mpx.new_channel_subscription(*b.callbacks)
    sb.add("x")  # joins while the confirmation is pending (B30)
    await a.activated("x", "y")
    await b.activated("x")
    sc = mpx.new_channel_subscription(*c.callbacks)
    sc.add("x")  # joins an active name (B29): later turn, after add returned
    assert c.activations == []
    await c.activated("x")
    await settle(mpx)
    assert sorted(a.activations) == [b"x", b"y"]
    assert b.activations == [b"x"] and c.activations == [b"x"]


async def test_late_joiner_that_leaves_at_once_is_not_activated(mpx: Multiplexer) -> None:
    a, c = Recorder("a"), Recorder("c")
    sa = mpx.new_channel_subscription(*a.callbacks)
    sa.add("x")
    await a.activated("x")
    sc = mpx.new_channel_subscription(*c.callbacks)
    sc.add("x")
    sc.remove("x")
    probe = Recorder()
    mpx.new_channel_subscription(*probe.callbacks).add("probe")
    await probe.activated("probe")
    assert c.activations == []


@pytest.mark.parametrize("recorder", [Recorder, AsyncRecorder])
async def test_reconnect_disconnects_once_and_reactivates_every_pair(
    redis_server, admin, recorder
) -> None:
    # B6, B7, B32, B37
    async with Multiplexer(redis_server.url) as m:
        recs = [recorder(f"r{i}") for i in range(5)]
        for i, r in enumerate(recs):
            s = m.new_channel_subscription(*r.callbacks)
            s.add("shared", f"own{i}")
        idle = recorder("idle")
        m.new_channel_subscription(*idle.callbacks)  # no names: still told of the outage
        pat = recorder("pat")
        m.new_pattern_subscription("p*", *pat.callbacks)
        for i, r in enumerate(recs):
            await r.activated("shared", f"own{i}")
        await pat.activated("p*")
        assert await admin.kill_pubsub() == 1
        for i, r in enumerate(recs):
            await r.activated("shared", f"own{i}", count=2)
            await r.disconnected(1)
        await pat.activated("p*", count=2)
        await idle.disconnected(1)
        for r in [*recs, pat, idle]:
            assert len(r.disconnects) == 1
            assert isinstance(r.disconnects[0], ConnectionLost)
        for r in recs:
            kinds = [k for k, _ in r.events]
            # the disconnect comes before the re-activations
            assert kinds.index("disconnect") == 2
        await admin.publish("shared", "again")
        for r in recs:
            await r.received(1)


async def test_callbacks_sync_async_and_returning_awaitables(mpx: Multiplexer, admin) -> None:
    # B33, B34
    got: list[bytes] = []

    async def record(data: bytes) -> None:
        got.append(data)

    s = mpx.new_channel_subscription(lambda c, d: record(d))  # returns a coroutine
    act = Recorder()
    s2 = mpx.new_channel_subscription(act.on_message, None, act.on_activation)
    s.add("x")
    s2.add("x")
    await act.activated("x")
    for i in range(5):
        await admin.publish("x", str(i))
    await act.received(5)
    async with asyncio.timeout(5):
        while len(got) < 5:
            await asyncio.sleep(0.01)
    assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_raising_callbacks_are_logged_and_do_not_stop_others(
    mpx: Multiplexer, admin, caplog
) -> None:
    # B35
    def boom(channel: bytes, data: bytes) -> None:
        raise RuntimeError("boom in on_message")

    def bad_activation(name: bytes) -> None:
        raise ValueError("boom in on_activation")

    ok = Recorder()
    bad = mpx.new_channel_subscription(boom, None, bad_activation)
    good = mpx.new_channel_subscription(*ok.callbacks)
    with caplog.at_level(logging.ERROR, logger="redismpx"):
        bad.add("x")
        good.add("x")
        await ok.activated("x")
        for i in range(3):
            await admin.publish("x", str(i))
        await ok.received(3)
    text = caplog.text
    assert "on_message raised" in text and "ChannelSubscription" in text
    assert "on_activation raised" in text
    assert mpx.stats()["callback_errors"] >= 2


async def test_slow_async_callback_does_not_delay_others(mpx: Multiplexer, admin) -> None:
    # B36: per-subscription queues.
    release = asyncio.Event()

    async def stuck(channel: bytes, data: bytes) -> None:
        await release.wait()

    fast = Recorder()
    slow = mpx.new_channel_subscription(stuck)
    s = mpx.new_channel_subscription(*fast.callbacks)
    slow.add("x")
    s.add("x")
    await fast.activated("x")
    for i in range(20):
        await admin.publish("x", str(i))
    await fast.received(20)
    release.set()
