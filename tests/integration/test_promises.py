"""PromiseSubscription (B38-B50)."""

from __future__ import annotations

import asyncio

import pytest

from redismpx import (
    InactiveSubscription,
    InvalidArgument,
    InvalidArgumentType,
    Multiplexer,
    PromiseTimeout,
    SubscriptionClosed,
    SubscriptionInterrupted,
)
from support.recorder import settle


async def test_prefix_glob_characters_are_escaped(mpx: Multiplexer, admin) -> None:
    # B38
    prom = mpx.new_promise_subscription("a*[b]?\\")
    await asyncio.wait_for(prom.wait_for_activation(), 5)
    p = prom.new_promise("x", 5)
    assert await admin.publish("aZZ[b]?\\x", "wrong") == 0
    assert await admin.publish("a*[b]?\\x", "right") == 1
    assert await p == b"right"


async def test_inactive_then_active_and_payload(mpx: Multiplexer, admin) -> None:
    # B39, B40, B41, B44
    prom = mpx.new_promise_subscription("req:")
    with pytest.raises(InactiveSubscription):
        prom.new_promise("1", 5)
    await asyncio.wait_for(prom.wait_for_activation(), 5)
    await asyncio.wait_for(prom.wait_for_activation(), 1)  # at once when already active
    p = prom.new_promise("1", 5)
    await admin.publish("req:1", "first")  # published before the first await: kept
    await admin.publish("req:1", "second")
    assert await p == b"first"
    assert prom._pending == {}


async def test_timeout_counts_from_creation(mpx: Multiplexer) -> None:
    # B42
    prom = mpx.new_promise_subscription("t:")
    await asyncio.wait_for(prom.wait_for_activation(), 5)
    p = prom.new_promise("x", 0.2)
    # The promise expires while nobody awaits it: its 0.2 s timer runs before the sleep's.
    await asyncio.sleep(0.3)
    assert p.done()
    with pytest.raises(asyncio.TimeoutError) as info:
        await p
    assert isinstance(info.value, PromiseTimeout)
    assert prom._pending == {}


async def test_many_promises_on_one_suffix_all_resolve(mpx: Multiplexer, admin) -> None:
    # B43, B49 (second subscription with the same prefix)
    p1 = mpx.new_promise_subscription("s:")
    p2 = mpx.new_promise_subscription("s:")
    await asyncio.wait_for(p1.wait_for_activation(), 5)
    await asyncio.wait_for(p2.wait_for_activation(), 5)
    promises = [p1.new_promise("k", 5) for _ in range(3)] + [p2.new_promise("k", 5)]
    await admin.publish("s:k", "v")
    assert await asyncio.gather(*promises) == [b"v"] * 4


async def test_cancelling_one_waiter_leaves_others(mpx: Multiplexer, admin) -> None:
    # B45
    prom = mpx.new_promise_subscription("c:")
    await asyncio.wait_for(prom.wait_for_activation(), 5)
    p1, p2 = prom.new_promise("k", 5), prom.new_promise("k", 5)
    task = asyncio.ensure_future(_await(p1))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(prom._pending[b"c:k"]) == 1
    await admin.publish("c:k", "v")
    assert await p2 == b"v"
    p3 = prom.new_promise("z", None)
    p3.cancel()
    assert prom._pending == {}


async def test_disconnect_fails_all_pending_then_works_again(redis_server, admin) -> None:
    # B46
    async with Multiplexer(redis_server.url) as m:
        prom = m.new_promise_subscription("d:")
        await asyncio.wait_for(prom.wait_for_activation(), 5)
        ps = [prom.new_promise("a", 10), prom.new_promise("a", 10), prom.new_promise("b", 10)]
        await admin.kill_pubsub()
        for p in ps:
            with pytest.raises(asyncio.CancelledError) as info:
                await p
            assert isinstance(info.value, SubscriptionInterrupted)
        assert prom._pending == {}
        p = await asyncio.wait_for(prom.wait_for_new_promise("a", 5), 5)
        await admin.publish("d:a", "back")
        assert await p == b"back"


async def test_wait_for_new_promise_and_close(mpx: Multiplexer) -> None:
    # B47, B48
    prom = mpx.new_promise_subscription("w:")
    waiter = asyncio.ensure_future(prom.wait_for_new_promise("x", 5))
    activation = asyncio.ensure_future(prom.wait_for_activation())
    p = await asyncio.wait_for(waiter, 5)
    await activation
    prom.close()
    with pytest.raises(SubscriptionClosed):
        await p
    with pytest.raises(SubscriptionClosed):
        prom.new_promise("y", 1)
    prom2 = mpx.new_promise_subscription("w2:")
    blocked = asyncio.ensure_future(prom2.wait_for_new_promise("x", 5))
    prom2.close()  # before activation: the waiter wakes with SubscriptionClosed
    with pytest.raises(SubscriptionClosed):
        await asyncio.wait_for(blocked, 5)


async def test_close_unsubscribes_only_the_last_holder(mpx: Multiplexer, admin) -> None:
    # B48, B49
    a = mpx.new_promise_subscription("u:")
    b = mpx.new_promise_subscription("u:")
    await asyncio.wait_for(a.wait_for_activation(), 5)
    await asyncio.wait_for(b.wait_for_activation(), 5)
    a.close()
    await settle(mpx)
    assert await admin.numpat() == 1
    p = b.new_promise("x", 5)
    await admin.publish("u:x", "v")
    assert await p == b"v"
    b.close()
    async with asyncio.timeout(5):
        while await admin.numpat():
            await asyncio.sleep(0.01)


async def test_promises_send_no_commands(mpx: Multiplexer, admin) -> None:
    # B50
    prom = mpx.new_promise_subscription("n:")
    await asyncio.wait_for(prom.wait_for_activation(), 5)
    await admin.reset_stats()
    ps = [prom.new_promise(str(i), 0.05) for i in range(100)]
    fulfilled = prom.new_promise("ok", 5)
    await admin.publish("n:ok", "v")
    assert await fulfilled == b"v"
    await asyncio.gather(*ps, return_exceptions=True)
    stats = await admin.client.info("commandstats")
    # PING: the heartbeat, after a second of silence on a loaded machine; nothing else.
    allowed = {"cmdstat_publish", "cmdstat_info", "cmdstat_config|resetstat", "cmdstat_ping"}
    assert set(stats) <= allowed


async def test_bad_promise_arguments(mpx: Multiplexer) -> None:
    prom = mpx.new_promise_subscription("b:")
    await asyncio.wait_for(prom.wait_for_activation(), 5)
    for bad in (-1, 0, float("nan")):
        with pytest.raises(InvalidArgument):
            prom.new_promise("x", bad)
    with pytest.raises(InvalidArgumentType):
        prom.new_promise("x", "5")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        prom.new_promise(5, 1)  # type: ignore[arg-type]
    assert prom._pending == {}


async def _await(p):  # type: ignore[no-untyped-def]
    return await p


async def test_promise_subscription_state_callbacks(redis_server, admin) -> None:
    events: list[str] = []

    async def on_disconnect(error: BaseException) -> None:
        events.append("disconnect")

    async with Multiplexer(redis_server.url) as m:
        prom = m.new_promise_subscription(
            "cb:", on_disconnect, lambda name: events.append(f"active {name.decode()}")
        )
        await asyncio.wait_for(prom.wait_for_activation(), 5)
        await admin.kill_pubsub()
        async with asyncio.timeout(5):
            while events.count("active cb:*") < 2 or "disconnect" not in events:
                await asyncio.sleep(0.01)
        assert events[0] == "active cb:*" and "disconnect" in events
