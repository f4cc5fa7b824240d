"""Channel subscriptions and reference counting (B12-B23), against a real server."""

from __future__ import annotations

import asyncio
import os

import pytest

from redismpx import InvalidArgument, InvalidArgumentType, Multiplexer, SubscriptionClosed
from support.recorder import AsyncRecorder, Recorder, settle


async def test_first_add_subscribes_and_second_holder_sends_nothing(
    mpx: Multiplexer, admin
) -> None:
    # B12, B13
    a, b = Recorder("a"), Recorder("b")
    sa = mpx.new_channel_subscription(*a.callbacks)
    sa.add("x")
    await a.activated("x")
    assert await admin.numsub("x") == 1
    await admin.reset_stats()
    sb = mpx.new_channel_subscription(*b.callbacks)
    sb.add("x")
    await b.activated("x")
    assert await admin.calls("subscribe") == 0
    assert await admin.publish("x", "m1") == 1  # still one connection subscribed
    await a.received(1)
    await b.received(1)
    await asyncio.sleep(0)  # nothing else is in flight: both got it exactly once
    assert a.messages == [(b"x", b"m1")] and b.messages == [(b"x", b"m1")]


async def test_adding_twice_to_one_subscription_is_a_no_op(mpx: Multiplexer, admin) -> None:
    # B14
    a = Recorder()
    s = mpx.new_channel_subscription(*a.callbacks)
    s.add("x")
    await a.activated("x")
    await admin.reset_stats()
    s.add("x", "x")
    await admin.publish("x", "m")
    await a.received(1)
    assert await admin.calls("subscribe") == 0
    assert a.activations == [b"x"] and a.messages == [(b"x", b"m")]


async def test_remove_of_unheld_channel_does_nothing(mpx: Multiplexer, admin) -> None:
    # B15
    s = mpx.new_channel_subscription(Recorder().on_message)
    s.remove("never-added")
    await admin.reset_stats()
    await settle(mpx)
    assert await admin.calls("unsubscribe") == 0


async def test_remove_by_non_last_holder_keeps_others(mpx: Multiplexer, admin) -> None:
    # B16
    a, b = Recorder("a"), Recorder("b")
    sa = mpx.new_channel_subscription(*a.callbacks)
    sb = mpx.new_channel_subscription(*b.callbacks)
    sa.add("x")
    sb.add("x")
    await a.activated("x")
    await b.activated("x")
    await admin.reset_stats()
    sb.remove("x")  # the newest holder leaves (the original sent UNSUBSCRIBE here)
    await admin.publish("x", "after")
    await a.received(1)
    assert await admin.calls("unsubscribe") == 0
    assert await admin.numsub("x") == 1
    assert b.messages == []


async def test_last_remove_unsubscribes_and_stops_delivery_at_once(mpx: Multiplexer, admin) -> None:
    # B17
    a = Recorder()
    s = mpx.new_channel_subscription(*a.callbacks)
    s.add("x")
    await a.activated("x")
    for i in range(50):
        await admin.publish("x", str(i))
    await a.received(1)
    s.remove("x")
    n = len(a.messages)
    await _until(lambda: admin.numsub("x"), 0)
    assert len(a.messages) == n  # nothing after remove() returned


async def test_remove_during_dispatch_stops_other_listener(mpx: Multiplexer, admin) -> None:
    # B17 in the hardest place: a callback removes another subscription's channel while the
    # same message is being dispatched to both.
    got: list[str] = []
    holder: dict[str, object] = {}

    def first(channel: bytes, data: bytes) -> None:
        got.append("first")
        holder["second"].remove("x")  # type: ignore[attr-defined]

    def second(channel: bytes, data: bytes) -> None:
        got.append("second")

    rec = Recorder()
    s1 = mpx.new_channel_subscription(first, None, rec.on_activation)
    s2 = mpx.new_channel_subscription(second, None, rec.on_activation)
    holder["second"] = s2
    s1.add("x")
    s2.add("x")
    await rec.activated("x", count=2)
    await admin.publish("x", "m")
    probe = Recorder()
    s3 = mpx.new_channel_subscription(*probe.callbacks)
    s3.add("y")
    await probe.activated("y")
    await admin.publish("y", "sync")
    await probe.received(1)
    assert got == ["first"]


async def test_remove_before_confirmation_and_while_disconnected(redis_server, admin) -> None:
    # B18
    m = Multiplexer(redis_server.url)
    try:
        s = m.new_channel_subscription(Recorder().on_message)
        s.add("x")
        s.remove("x")  # before any confirmation, even before the connection is up
        await m.wait_connected(5)
        s.add("y")
        await asyncio.sleep(0)
        s.remove("y")  # SUBSCRIBE sent, not yet confirmed
        probe = Recorder()
        p = m.new_channel_subscription(*probe.callbacks)
        p.add("probe")
        await probe.activated("probe")
        assert await admin.channels() == {b"probe"}
        redis_server.kill()
        s.add("z")
        s.remove("z")  # while disconnected
        await redis_server.arestart()
        await probe.activated("probe", count=2, timeout=10)
        assert await admin.channels() == {b"probe"}
    finally:
        await m.aclose()


@pytest.mark.parametrize("same_subscription", [False, True])
async def test_remove_then_add_leaves_redis_subscribed(
    mpx: Multiplexer, admin, same_subscription: bool
) -> None:
    # B19 (the Go version lost the subscription here) and B31 (no stale activation)
    a, b = Recorder("a"), Recorder("b")
    sa = mpx.new_channel_subscription(*a.callbacks)
    sb = sa if same_subscription else mpx.new_channel_subscription(*b.callbacks)
    rec_b = a if same_subscription else b
    sa.add("x")
    await a.activated("x")
    for _ in range(10):
        sa.remove("x")
        sb.add("x")
        if not same_subscription:
            sb.remove("x")
            sa.add("x")
    await settle(mpx)
    assert await admin.numsub("x") == 1
    await admin.publish("x", "after")
    await a.received(1)
    if not same_subscription:
        assert rec_b.messages == []


async def test_remove_and_add_across_turns_activates_only_after_last_ack(
    mpx: Multiplexer, admin
) -> None:
    # B31: SUBSCRIBE, UNSUBSCRIBE, SUBSCRIBE in three turns; the first ack is stale.
    a = Recorder()
    s = mpx.new_channel_subscription(*a.callbacks)
    s.add("x")
    await asyncio.sleep(0)
    s.remove("x")
    await asyncio.sleep(0)
    s.add("x")
    await a.activated("x")
    # When activation is reported, Redis must already hold the final subscribe.
    assert await admin.numsub("x") == 1
    await settle(mpx)
    assert a.activations == [b"x"]


async def test_clear_and_close_with_reference_counting(mpx: Multiplexer, admin) -> None:
    # B20, B21
    a, b = Recorder("a"), Recorder("b")
    sa = mpx.new_channel_subscription(*a.callbacks)
    sb = mpx.new_channel_subscription(*b.callbacks)
    sa.add("x", "y", "z")
    sb.add("y")
    await a.activated("x", "y", "z")
    await b.activated("y")
    sa.clear()
    assert sa.channels == frozenset()
    await _until(lambda: admin.channels(), {b"y"})
    sa.add("x")
    await a.activated("x", count=2)
    sa.close()
    sa.close()  # idempotent
    await _until(lambda: admin.channels(), {b"y"})
    with pytest.raises(SubscriptionClosed):
        sa.add("q")
    with pytest.raises(SubscriptionClosed):
        sa.remove("x")
    await admin.publish("y", "m")
    await b.received(1)


async def test_binary_and_str_names(mpx: Multiplexer, admin) -> None:
    # B22
    a = Recorder()
    s = mpx.new_channel_subscription(*a.callbacks)
    binary = bytes(range(256))
    s.add(binary, "héllo")
    await a.activated(binary, "héllo".encode())
    payload = bytes(range(255, -1, -1)) * 10
    await admin.publish(binary, payload)
    await admin.publish("héllo", b"\x00\xff")
    await a.received(2)
    assert a.messages == [(binary, payload), ("héllo".encode(), b"\x00\xff")]
    assert all(isinstance(c, bytes) and isinstance(d, bytes) for c, d in a.messages)


async def test_calls_of_one_turn_are_coalesced(mpx: Multiplexer, admin) -> None:
    # B23: one SUBSCRIBE for a whole loop turn of adds.
    await mpx.wait_connected(5)
    await admin.reset_stats()
    a = Recorder()
    subs = [mpx.new_channel_subscription(*a.callbacks) for _ in range(50)]
    for i, s in enumerate(subs):
        s.add(f"c{i}", f"c{i + 1}")
    await a.activated(*[f"c{i}" for i in range(51)])
    assert await admin.calls("subscribe") == 1


async def test_large_sets_are_chunked(redis_server, admin) -> None:
    async with Multiplexer(redis_server.url, chunk_size=100) as m:
        a = Recorder()
        s = m.new_channel_subscription(*a.callbacks)
        await m.wait_connected(5)
        await admin.reset_stats()
        s.add(*[f"n{i}" for i in range(1050)])
        await a.wait_until(lambda: len(a.activations) == 1050, 10)
        assert await admin.calls("subscribe") == 11
        assert len(await admin.channels()) == 1050


async def test_async_callbacks_keep_order(mpx: Multiplexer, admin) -> None:
    a = AsyncRecorder()
    s = mpx.new_channel_subscription(*a.callbacks)
    s.add("x")
    await a.activated("x")
    for i in range(200):
        await admin.publish("x", str(i))
    await a.received(200)
    assert [d for _, d in a.messages] == [str(i).encode() for i in range(200)]
    assert a.events[0] == ("activation", b"x")


async def test_bad_input_leaves_no_trace(mpx: Multiplexer, admin) -> None:
    s = mpx.new_channel_subscription(Recorder().on_message)
    with pytest.raises(InvalidArgumentType, match="channel name must be str or bytes"):
        s.add("ok", 42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="must not be empty"):
        s.add("")
    with pytest.raises(InvalidArgumentType, match="on_message"):
        mpx.new_channel_subscription(None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType, match="on_disconnect must be callable"):
        mpx.new_channel_subscription(print, 3)  # type: ignore[arg-type]
    probe = await settle(mpx)
    assert s.channels == frozenset()  # the valid "ok" was not added either
    assert await admin.channels() == {probe}
    assert mpx.stats()["subscriptions"] == 2  # s and the probe


async def _until(fn, expected, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while (value := await fn()) != expected:
            await asyncio.sleep(0.01)
    assert value == expected


async def test_large_binary_payloads_arrive_intact(mpx: Multiplexer, admin) -> None:
    rec = Recorder()
    s = mpx.new_channel_subscription(*rec.callbacks)
    s.add(b"big\x00bin")
    await rec.activated(b"big\x00bin")
    payloads = [b"", bytes(range(256)) * 4096, os.urandom(20 * 1024 * 1024)]  # up to 20 MiB
    for p in payloads:
        await admin.publish(b"big\x00bin", p)
    await rec.received(len(payloads), timeout=20)
    assert [d for _, d in rec.messages] == payloads
