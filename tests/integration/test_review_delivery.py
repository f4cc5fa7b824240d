"""Regressions for review findings on delivery: iterators, promises, overflow, names, events.

Every "did not run after close" assertion is made after a barrier (``settle``: a probe
subscription activates, so the loop went round many times and Redis answered everything
sent before), never after a sleep.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from redismpx import (
    Activated,
    Disconnected,
    Dropped,
    InvalidArgument,
    Message,
    Multiplexer,
    RedisMPXError,
    SubscriptionClosed,
    SubscriptionInterrupted,
)
from support.recorder import Recorder, settle

BAD_NAME = "a\udc80"  # a lone surrogate: UTF-8 cannot encode it


class _NeverAwaited:
    """Collects "coroutine ... was never awaited" warnings raised inside the block."""

    def __init__(self) -> None:
        self.caught: list[warnings.WarningMessage] = []

    def messages(self) -> list[str]:
        gc.collect()  # a coroutine dropped in a reference cycle warns when collected
        return [str(w.message) for w in self.caught if "never awaited" in str(w.message)]


@pytest.fixture
def never_awaited() -> Iterator[_NeverAwaited]:
    probe = _NeverAwaited()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe.caught = caught
        yield probe


async def _publish_all(admin: Any, channel: str, n: int) -> None:
    pipe = admin.client.pipeline(transaction=False)
    for i in range(n):
        pipe.publish(channel, str(i))
    await pipe.execute()


# -- finding 1: a cancelled wait leaves the iterator usable -----------------------------------


async def test_timed_out_anext_leaves_the_iterator_usable(mpx: Multiplexer, admin) -> None:
    async with mpx.subscribe("c") as it:
        assert await anext(it.events()) == Activated(b"c")
        for _ in range(2):  # the second wait used to raise "another task is iterating"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(it.__anext__(), 0.05)
        await admin.publish("c", "1")
        assert await asyncio.wait_for(it.__anext__(), 5) == Message(b"c", b"1")


async def test_timeout_around_async_for_and_events_leaves_the_iterator_usable(
    mpx: Multiplexer, admin
) -> None:
    async with mpx.subscribe("c") as it:
        assert await anext(it.events()) == Activated(b"c")
        for _ in range(2):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async for _msg in it:
                        raise AssertionError("nothing was published")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async for _event in it.events():
                        raise AssertionError("nothing happened")
        await admin.publish("c", "1")
        async with asyncio.timeout(5):
            async for event in it.events():
                assert event == Message(b"c", b"1")
                break


async def test_a_second_concurrent_consumer_still_gets_the_clear_error(
    mpx: Multiplexer, admin
) -> None:
    async with mpx.subscribe("c") as it:
        assert await anext(it.events()) == Activated(b"c")
        first = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)  # one loop turn: ``first`` runs up to its wait
        assert not first.done()
        with pytest.raises(RuntimeError, match="another task"):
            await it.__anext__()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await admin.publish("c", "1")  # the cancelled consumer left it usable
        assert await asyncio.wait_for(it.__anext__(), 5) == Message(b"c", b"1")


# -- finding 8: nothing of a closed subscription runs after close() ---------------------------


async def test_async_promise_on_activation_does_not_run_after_close(
    mpx: Multiplexer, never_awaited: _NeverAwaited
) -> None:
    ran: list[bytes] = []

    async def on_activation(name: bytes) -> None:
        ran.append(name)

    prom = mpx.new_promise_subscription("p:", None, on_activation)
    async with asyncio.timeout(5):  # no task in between: we resume before the notice runs
        await prom.wait_for_activation()
    prom.close()
    await settle(mpx)
    assert ran == []
    assert never_awaited.messages() == []


async def test_async_promise_on_disconnect_does_not_run_after_close(
    mpx: Multiplexer, admin, never_awaited: _NeverAwaited
) -> None:
    ran: list[BaseException] = []

    async def on_disconnect(error: BaseException) -> None:
        ran.append(error)

    prom = mpx.new_promise_subscription("p:", on_disconnect)
    async with asyncio.timeout(5):
        await prom.wait_for_activation()
    promise = prom.new_promise("x", None)
    kill = asyncio.ensure_future(admin.kill_pubsub())
    with pytest.raises(SubscriptionInterrupted):
        async with asyncio.timeout(5):
            await promise
    prom.close()  # in the turn the promise failed, before the notice task's first step
    await kill
    await settle(mpx)  # reconnected and answered: the loop went round many times
    assert ran == []
    assert never_awaited.messages() == []


async def test_running_async_promise_callback_is_cancelled_by_close(
    mpx: Multiplexer, admin
) -> None:
    started = asyncio.Event()
    after: list[str] = []

    async def on_disconnect(error: BaseException) -> None:
        started.set()
        await asyncio.Event().wait()  # until cancelled
        after.append("resumed")

    prom = mpx.new_promise_subscription("p:", on_disconnect)
    async with asyncio.timeout(5):
        await prom.wait_for_activation()
    await admin.kill_pubsub()
    await asyncio.wait_for(started.wait(), 5)
    prom.close()
    await settle(mpx)
    assert after == []
    assert not [t for t in asyncio.all_tasks() if "on_disconnect" in t.get_name()]


async def test_closing_discards_the_pending_awaitable_of_a_sync_callback(
    mpx: Multiplexer, never_awaited: _NeverAwaited, admin
) -> None:
    # A plain function returning a coroutine (B34): the coroutine waits in the buffer. A
    # later listener of the same message closes the subscription in the same dispatch.
    called: list[bytes] = []
    ran: list[bytes] = []

    async def later(data: bytes) -> None:
        ran.append(data)

    def returns_coroutine(channel: bytes, data: bytes) -> Any:
        called.append(data)
        return later(data)

    victim = mpx.new_channel_subscription(returns_coroutine)
    victim.add("v")
    rec = Recorder()
    closer = mpx.new_channel_subscription(lambda c, d: victim.close(), None, rec.on_activation)
    closer.add("v")
    await rec.activated("v")
    await admin.publish("v", "1")
    await settle(mpx)
    assert victim.closed and called == [b"1"] and ran == []
    assert never_awaited.messages() == []


@pytest.mark.parametrize("kind", ["channel", "pattern"])
async def test_queued_callbacks_of_a_closed_subscription_never_run(
    mpx: Multiplexer, admin, kind: str, never_awaited: _NeverAwaited
) -> None:
    # Guard for the other subscription kinds: a message, an outage and re-activations wait
    # behind a stuck on_message; close(), then release: none of them is delivered.
    heard: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()

    async def on_message(channel: bytes, data: bytes) -> None:
        heard.append(f"message {data.decode()}")
        entered.set()
        await release.wait()

    async def on_disconnect(error: BaseException) -> None:
        heard.append("disconnect")

    async def on_activation(name: bytes) -> None:
        heard.append("activation")

    async def on_drop(n: int) -> None:
        heard.append("drop")

    probe = Recorder()
    mpx.new_channel_subscription(*probe.callbacks).add("k")
    if kind == "channel":
        sub: Any = mpx.new_channel_subscription(
            on_message, on_disconnect, on_activation, max_buffer=1, on_drop=on_drop
        )
        sub.add("k")
    else:
        sub = mpx.new_pattern_subscription(
            "k*", on_message, on_disconnect, on_activation, max_buffer=1, on_drop=on_drop
        )
    await probe.activated("k")
    await settle(mpx)
    assert heard == ["activation"]
    await admin.publish("k", "1")
    await asyncio.wait_for(entered.wait(), 5)
    await _publish_all(admin, "k", 3)  # one waits, two are dropped
    await probe.received(4)
    await admin.kill_pubsub()
    await probe.activated("k", count=2)
    sub.close()
    release.set()
    await settle(mpx)
    assert heard == ["activation", "message 1"]
    assert never_awaited.messages() == []


# -- finding 10: overflow="close" reports drops before the close notice -----------------------


@pytest.mark.parametrize("style", ["sync", "async"])
async def test_close_policy_reports_drops_before_the_close_notice(
    mpx: Multiplexer, admin, style: str, never_awaited: _NeverAwaited
) -> None:
    heard: list[tuple[str, Any]] = []
    noticed = asyncio.Event()
    release = asyncio.Event()

    async def stuck(channel: bytes, data: bytes) -> None:
        await release.wait()

    def drop(n: int) -> None:
        heard.append(("drop", n))

    def disconnect(error: BaseException) -> None:
        heard.append(("closed", error))
        noticed.set()

    async def async_drop(n: int) -> None:
        drop(n)

    async def async_disconnect(error: BaseException) -> None:
        disconnect(error)

    act = Recorder()
    sub = mpx.new_channel_subscription(
        stuck,
        disconnect if style == "sync" else async_disconnect,
        act.on_activation,
        max_buffer=2,
        overflow="close",
        on_drop=drop if style == "sync" else async_drop,
    )
    sub.add("x")
    await act.activated("x")
    await _publish_all(admin, "x", 5)
    await asyncio.wait_for(noticed.wait(), 5)
    await settle(mpx)
    release.set()
    await settle(mpx)
    assert [kind for kind, _ in heard] == ["drop", "closed"]
    assert heard[0][1] == sub.dropped >= 1
    assert isinstance(heard[1][1], SubscriptionClosed) and heard[1][1].reason == sub.close_reason
    assert never_awaited.messages() == []


async def test_close_policy_iterator_yields_dropped_then_raises(mpx: Multiplexer, admin) -> None:
    sub = mpx.subscribe("x", max_buffer=2, overflow="close")
    probe = Recorder()
    mpx.new_channel_subscription(*probe.callbacks).add("x")
    await probe.activated("x")
    await _publish_all(admin, "x", 5)
    await probe.received(5)  # the reader dispatched all of them
    seen: list[object] = []
    with pytest.raises(SubscriptionClosed, match="overflow"):
        async with asyncio.timeout(5):
            async for event in sub.events():
                seen.append(event)
    assert [e for e in seen if not isinstance(e, Activated)] == [Dropped(sub.dropped)]
    await settle(mpx)
    assert [e async for e in sub.events()] == []  # nothing after the close


# -- finding 11: names UTF-8 cannot encode are InvalidArgument, and nothing is registered ------


async def test_unencodable_names_are_invalid_arguments(mpx: Multiplexer, admin) -> None:
    sub = mpx.new_channel_subscription(lambda c, d: None)
    prom = mpx.new_promise_subscription("s:")
    async with asyncio.timeout(5):
        await prom.wait_for_activation()
    live = mpx.stats()["subscriptions"]
    attempts = [
        lambda: sub.add("ok", BAD_NAME),
        # remove() takes surrogate escapes (decode_names hands them out, B56), not others
        lambda: sub.remove("a\ud800"),
        lambda: mpx.subscribe("ok2", BAD_NAME),
        lambda: mpx.psubscribe(BAD_NAME),
        lambda: mpx.new_pattern_subscription(BAD_NAME, lambda c, d: None),
        lambda: mpx.new_promise_subscription(BAD_NAME),
        lambda: prom.new_promise(BAD_NAME, 5),
    ]
    for attempt in attempts:
        with pytest.raises(InvalidArgument, match="UTF-8") as info:
            attempt()
        assert isinstance(info.value, RedisMPXError)
    assert sub.channels == frozenset()
    assert mpx.stats()["subscriptions"] == live
    probe = await settle(mpx)
    assert await admin.channels() == {probe}
    assert await admin.numpat() == 1  # the promise subscription's only


# -- suspected: events waiting for a reader are coalesced ------------------------------------


async def test_unread_events_stay_bounded_across_outages(mpx: Multiplexer, admin) -> None:
    outages = 6
    sub = mpx.subscribe("a", "b")  # nobody reads it until the end
    probe = Recorder()
    mpx.new_channel_subscription(*probe.callbacks).add("a")
    await probe.activated("a")
    for i in range(outages):
        await admin.publish("a", f"m{i}")
        await probe.received(i + 1)
        await admin.kill_pubsub()
        await probe.activated("a", count=i + 2)
    await admin.publish("a", "end")
    await probe.received(outages + 1)  # every event of ``sub`` is in its buffer by now
    seen: list[object] = []
    async with asyncio.timeout(5):
        async for event in sub.events():
            seen.append(event)
            if event == Message(b"a", b"end"):
                break
    both = {Activated(b"a"), Activated(b"b")}
    kinds = ["A" if isinstance(e, Activated) else type(e).__name__[0] for e in seen]
    # One Disconnected, the latest outage's, after the messages read between outages; each
    # name's first Activated and its latest; every message, in order.
    assert kinds == ["A", "A"] + ["M"] * outages + ["D", "A", "A", "M"], seen
    assert set(seen[:2]) == both and set(seen[-3:-1]) == both
    assert isinstance(seen[-4], Disconnected)
    messages = [e.data for e in seen if isinstance(e, Message)]
    assert messages == [f"m{i}".encode() for i in range(outages)] + [b"end"]


async def test_unread_callback_events_stay_bounded_across_outages(mpx: Multiplexer, admin) -> None:
    # The same for async callbacks behind a stuck worker: once it is released, it hears
    # the latest state, not one call per outage.
    outages = 4
    heard: list[str] = []
    entered = asyncio.Event()
    release = asyncio.Event()
    done = asyncio.Event()

    async def on_message(channel: bytes, data: bytes) -> None:
        heard.append(data.decode())
        if data == b"first":
            entered.set()
            await release.wait()
        elif data == b"end":
            done.set()

    async def on_disconnect(error: BaseException) -> None:
        heard.append("D")

    async def on_activation(name: bytes) -> None:
        heard.append("A")

    probe = Recorder()
    mpx.new_channel_subscription(*probe.callbacks).add("a")
    mpx.new_channel_subscription(on_message, on_disconnect, on_activation).add("a")
    await probe.activated("a")
    await admin.publish("a", "first")
    await asyncio.wait_for(entered.wait(), 5)
    for i in range(outages):
        await admin.kill_pubsub()
        await probe.activated("a", count=i + 2)
    await admin.publish("a", "end")
    await probe.received(2)
    release.set()
    await asyncio.wait_for(done.wait(), 5)
    assert heard == ["A", "first", "D", "A", "end"]
