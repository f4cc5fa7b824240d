"""Delivery: async iterators, bounded buffers, overflow policies, slow and stuck consumers."""

from __future__ import annotations

import asyncio

import pytest

from redismpx import (
    Activated,
    Disconnected,
    Dropped,
    Message,
    Multiplexer,
    SubscriptionClosed,
)
from support.recorder import Recorder


async def _publish_all(admin, channel: str, n: int) -> None:  # type: ignore[no-untyped-def]
    pipe = admin.client.pipeline(transaction=False)
    for i in range(n):
        pipe.publish(channel, str(i))
    await pipe.execute()


async def _first_event(sub) -> object:  # type: ignore[no-untyped-def]
    async for event in sub.events():
        return event
    raise AssertionError("no event")


async def test_async_for_with_events_in_order(mpx: Multiplexer, admin) -> None:
    async with mpx.subscribe("a", "b") as sub:
        events = sub.events()
        seen = {await anext(events), await anext(events)}
        assert seen == {Activated(b"a"), Activated(b"b")}
        await admin.publish("a", "1")
        await admin.publish("b", "2")
        assert await anext(events) == Message(b"a", b"1")
        assert await anext(events) == Message(b"b", b"2")
        await admin.kill_pubsub()
        assert isinstance(await anext(events), Disconnected)
        assert {await anext(events), await anext(events)} == seen
    assert sub.closed
    assert await admin.channels() in (set(), {b"a", b"b"})  # unsubscribe is under way


async def test_pattern_iterator_carries_the_pattern(mpx: Multiplexer, admin) -> None:
    async with mpx.psubscribe("room:*") as sub:
        assert await _first_event(sub) == Activated(b"room:*")
        await admin.publish("room:7", "hi")
        msg = await anext(aiter(sub))
        assert msg == Message(b"room:7", b"hi", b"room:*")


async def test_iteration_ends_when_the_multiplexer_closes(redis_server) -> None:
    m = Multiplexer(redis_server.url)
    sub = m.subscribe("x")

    async def consume() -> list[Message]:
        return [msg async for msg in sub]

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0)
    await m.aclose()
    assert await asyncio.wait_for(task, 5) == []


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        ("drop_oldest", [b"7", b"8", b"9"]),
        ("drop_newest", [b"0", b"1", b"2"]),
    ],
)
async def test_drop_policies_keep_the_right_messages(
    mpx: Multiplexer, admin, policy, expected
) -> None:
    drops: list[int] = []
    sub = mpx.subscribe("x", max_buffer=3, overflow=policy)
    assert await _first_event(sub) == Activated(b"x")
    mpx_probe = Recorder()
    mpx.new_channel_subscription(*mpx_probe.callbacks).add("x")
    await mpx_probe.activated("x")
    await _publish_all(admin, "x", 10)
    await mpx_probe.received(10)  # the reader has dispatched everything
    events = [e async for e in _take(sub.events(), 4)]
    assert [e.data for e in events if isinstance(e, Message)] == expected
    assert Dropped(7) in events
    assert sub.dropped == 7 and mpx.stats()["dropped"] >= 7
    del drops


async def test_latest_per_channel_keeps_newest_per_channel(mpx: Multiplexer, admin) -> None:
    sub = mpx.subscribe("p1", "p2", max_buffer=10, overflow="latest_per_channel")
    assert isinstance(await _first_event(sub), Activated)
    assert isinstance(await _first_event(sub), Activated)
    probe = Recorder()
    mpx.new_channel_subscription(*probe.callbacks).add("p2")
    await probe.activated("p2")
    for i in range(5):
        await admin.publish("p1", f"a{i}")
        await admin.publish("p2", f"b{i}")
    await probe.received(5)
    got = [await anext(aiter(sub)), await anext(aiter(sub))]
    assert got == [Message(b"p1", b"a4"), Message(b"p2", b"b4")]
    assert sub.dropped == 8


async def test_close_policy_closes_with_a_reason(mpx: Multiplexer, admin) -> None:
    release = asyncio.Event()

    async def stuck(channel: bytes, data: bytes) -> None:
        await release.wait()

    # The close notice is recorded too: ``wait_until`` re-checks after each recorded event.
    act = Recorder()
    sub = mpx.new_channel_subscription(
        stuck, act.on_disconnect, act.on_activation, max_buffer=5, overflow="close"
    )
    notices = act.disconnects
    sub.add("x")
    await act.activated("x")
    await _publish_all(admin, "x", 20)
    await act.wait_until(lambda: sub.closed and bool(notices), 5, "the subscription to close")
    assert sub.close_reason is not None and "overflow" in sub.close_reason
    assert len(notices) == 1 and isinstance(notices[0], SubscriptionClosed)
    assert notices[0].reason == sub.close_reason
    with pytest.raises(SubscriptionClosed, match="overflow"):
        sub.add("y")
    release.set()


async def test_stuck_and_raising_callbacks_do_not_delay_others(mpx: Multiplexer, admin) -> None:
    async def stuck(channel: bytes, data: bytes) -> None:
        await asyncio.Event().wait()  # never returns

    async def raises(channel: bytes, data: bytes) -> None:
        raise RuntimeError("always")

    loop = asyncio.get_running_loop()
    arrivals: list[float] = []
    arrived = asyncio.Event()

    def fast(channel: bytes, data: bytes) -> None:
        arrivals.append(loop.time())
        arrived.set()

    act = Recorder()
    mpx.new_channel_subscription(stuck).add("x")
    mpx.new_channel_subscription(raises).add("x")
    mpx.new_channel_subscription(fast, None, act.on_activation).add("x")
    await act.activated("x")
    for _ in range(50):
        arrived.clear()
        sent = loop.time()
        await admin.publish("x", "m")
        await asyncio.wait_for(arrived.wait(), 10)
        # The stuck callback never returns: any finite bound proves it held nothing up; this
        # one leaves room for a loaded machine.
        assert arrivals[-1] - sent < 2.0
    # and closing is not held up by the stuck callback
    async with asyncio.timeout(5):
        await mpx.aclose()


async def _take(agen, n):  # type: ignore[no-untyped-def]
    for _ in range(n):
        yield await anext(agen)
