"""Subscriber-level checks of delivery without a server: name encoding, the Listener hooks
feeding the buffer (its own rules are in test_buffer.py), name sets, the worker."""

from __future__ import annotations

import asyncio

import pytest

from redismpx import (
    Activated,
    ChannelIterator,
    ClusterMultiplexer,
    ConnectionLost,
    Dropped,
    InvalidArgument,
    Message,
    Multiplexer,
    RedisMPXError,
    SubscribeRefused,
)
from redismpx._buffer import DROPPED, VOID, Event
from redismpx._protocol import to_bytes
from redismpx.iterators import SubscriptionEvent
from redismpx.typedefs import OverflowPolicy

BAD_NAME = "a\udc80"  # a lone surrogate: UTF-8 cannot encode it
NOWHERE = "redis://127.0.0.1:1"  # never connected to: nothing here starts a connection


def test_to_bytes_refuses_text_utf8_cannot_encode() -> None:
    with pytest.raises(InvalidArgument, match="channel name cannot be encoded as UTF-8") as info:
        to_bytes(BAD_NAME, "channel name")
    assert isinstance(info.value, RedisMPXError)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert to_bytes("é", "x") == "é".encode()


def test_cluster_publish_refuses_unencodable_channel_and_data() -> None:
    cm = ClusterMultiplexer(NOWHERE)  # outside a loop: not started
    try:
        for channel, data in ((BAD_NAME, "x"), ("c", BAD_NAME)):
            with pytest.raises(InvalidArgument, match="UTF-8"):
                asyncio.run(cm.publish(channel, data))
    finally:
        cm.close()


# -- events waiting unread are coalesced: the buffer stays bounded ------------------------------

NAMES = (b"a", b"b", b"c")


def _iterator(max_buffer: int, overflow: OverflowPolicy) -> tuple[Multiplexer, ChannelIterator]:
    mpx = Multiplexer(NOWHERE)  # outside a loop: never started, never connected
    it = mpx.subscribe(max_buffer=max_buffer, overflow=overflow, sharded=False)
    it._channels = NAMES  # as if added (the registry is not under test here)
    return mpx, it


def _drain(it: ChannelIterator) -> list[SubscriptionEvent]:
    async def drain() -> list[SubscriptionEvent]:
        assert it._queue is not None
        q = it._queue
        return [await it._next(True) for _ in iter(lambda: bool(q.buf), False)]

    return asyncio.run(drain())


def _live(it: ChannelIterator) -> int:
    assert it._queue is not None
    return sum(1 for e in it._queue.buf if not (isinstance(e, Event) and e.tag == VOID))


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest", "latest_per_channel"])
def test_unread_outages_messages_and_drops_keep_the_buffer_bounded(
    overflow: OverflowPolicy,
) -> None:
    mpx, it = _iterator(4, overflow)
    lost = ConnectionLost("gone")
    high = 0

    async def outages() -> None:
        nonlocal high
        for name in NAMES:
            it.notify_activated(name)
        for k in range(500):
            it.deliver(b"a", b"%d" % k)
            it.deliver(b"b", b"%d" % k)
            it.notify_disconnected(lost)
            for name in NAMES:
                if k % 7 == 0:
                    it.notify_refused(SubscribeRefused("NOPERM", "SUBSCRIBE", name))
                it.notify_activated(name)
            await asyncio.sleep(0)  # a loop turn: the drops are reported
            assert it._queue is not None
            high = max(high, len(it._queue.buf))
            assert _live(it) <= 4 + 4 * len(NAMES) + 2  # messages + per-name + gap + drops

    asyncio.run(outages())
    assert high <= 2 * (4 + 4 * len(NAMES) + 2) + 32  # voided events are compacted
    events = _drain(it)
    kinds = [type(e).__name__ for e in events]
    assert kinds.count("Disconnected") == 1
    assert [e for e in events if isinstance(e, Dropped)] == [Dropped(it.dropped)]
    last_outage = kinds.index("Disconnected")
    # the latest state of every name comes after the one outage left
    assert {e.name for e in events[last_outage:] if isinstance(e, Activated)} == set(NAMES)
    messages = [e for e in events if isinstance(e, Message)]
    assert 0 < len(messages) <= 4
    mpx.close()


def test_a_removed_name_loses_its_unread_activation() -> None:
    mpx, it = _iterator(10, "drop_oldest")
    it.notify_activated(b"a")
    it.notify_activated(b"b")
    it._channels = (b"b", b"c")
    it._forget_name(b"a")
    assert _drain(it) == [Activated(b"b")]
    mpx.close()


def test_a_stuck_worker_keeps_one_pending_async_on_drop() -> None:
    drops: list[int] = []

    async def stuck(channel: bytes, data: bytes) -> None:
        await asyncio.Event().wait()

    async def on_drop(n: int) -> None:
        drops.append(n)

    mpx = Multiplexer(NOWHERE)  # outside a loop: never started
    sub = mpx.new_channel_subscription(stuck, max_buffer=2, on_drop=on_drop)
    sub._channels = b"a"  # as if added

    async def flood() -> None:
        sub.start_consumer()
        assert sub._queue is not None
        for k in range(200):
            sub.deliver(b"a", b"%d" % k)
            await asyncio.sleep(0)  # a loop turn: one drop report each
        pending = [e for e in sub._queue.buf if isinstance(e, Event)]
        assert [e.tag for e in pending] == [DROPPED]  # not one coroutine per report
        await mpx.aclose()

    asyncio.run(flood())
    assert drops == []  # the worker never got to it: nothing ran after close


# -- a subscription's set of names is sized to its count ----------------------------------------


@pytest.mark.parametrize("n", [0, 1, 2, 3, 16, 17, 40])
def test_channel_sets_of_every_size(n: int) -> None:
    names = [b"ch%d" % i for i in range(n)]

    async def run() -> None:
        mpx = Multiplexer(NOWHERE)
        sub = mpx.new_channel_subscription(lambda channel, data: None)
        sub.add(*names, *names)  # again: adding a held name does nothing (B14)
        assert sub.channels == frozenset(names)
        assert sub._holds(b"ch") is False  # never a substring test on a single name
        assert all(sub._holds(name) for name in names)
        sub.remove(*names[::2], b"never-added")
        assert sub.channels == frozenset(names[1::2])
        assert not any(sub._holds(name) for name in names[::2])
        sub.add(*names)
        assert sub.channels == frozenset(names)
        sub.clear()
        assert sub.channels == frozenset() and sub._channels is None
        await mpx.aclose()

    asyncio.run(run())


def test_the_hooks_of_the_listener_protocol_exist_on_every_subscription() -> None:
    mpx = Multiplexer(NOWHERE)  # outside a loop: never started
    subs = [
        mpx.new_channel_subscription(lambda channel, data: None),
        mpx.subscribe(max_buffer=1, overflow="drop_oldest", sharded=False),
        mpx.new_promise_subscription("p:"),
    ]
    hooks = ("notify_activated", "notify_disconnected", "notify_refused")
    for sub in subs:
        assert callable(sub.deliver) and isinstance(sub.hears_activations, bool)
        assert all(callable(getattr(sub, hook)) for hook in hooks)
    # hears_activations: only what has something to do with an activation
    assert [sub.hears_activations for sub in subs] == [False, True, True]
    mpx.close()
