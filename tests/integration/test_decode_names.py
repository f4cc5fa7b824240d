"""``decode_names=True``: channel names reach the app as ``str``, against real servers.

Every framework wants ``str`` names; without the option each adapter decoded every message's
channel itself. With it, every path that hands a name to the app gives ``str``: inline and
queued callbacks, a sync callback that returns an awaitable, ``on_activation``, iterators'
``Message`` and ``Activated``, pattern subscriptions (the actual channel and the pattern), and
a ``ClusterMultiplexer``. Payloads stay ``bytes``; the default stays ``bytes``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from redismpx import (
    Activated,
    ClusterMultiplexer,
    InvalidArgumentType,
    Message,
    Multiplexer,
)
from redismpx.server import RedisCluster, RedisServer
from support.admin import Admin
from support.recorder import Recorder


class TextRecorder(Recorder):
    """A recorder that keeps names exactly as delivered (str or bytes)."""

    def on_message(self, channel: Any, data: bytes) -> None:
        self.messages.append((channel, data))
        self._note("message", (channel, data))

    def on_activation(self, name: Any) -> None:
        self.activations.append(name)
        self._note("activation", name)


class AsyncTextRecorder(TextRecorder):
    async def on_message(self, channel: Any, data: bytes) -> None:  # type: ignore[override]
        TextRecorder.on_message(self, channel, data)

    async def on_activation(self, name: Any) -> None:  # type: ignore[override]
        TextRecorder.on_activation(self, name)


@pytest.fixture
async def env(redis_server: RedisServer) -> Any:
    mpx = Multiplexer(redis_server.url)
    admin = Admin(redis_server.url)
    try:
        yield mpx, admin
    finally:
        await mpx.aclose()
        await admin.close()


@pytest.mark.parametrize("recorder", [TextRecorder, AsyncTextRecorder], ids=["inline", "queued"])
async def test_channel_callbacks_receive_str_names(env: Any, recorder: type[TextRecorder]) -> None:
    mpx, admin = env
    rec = recorder()
    sub = mpx.new_channel_subscription(rec.on_message, None, rec.on_activation, decode_names=True)
    async with asyncio.timeout(5):
        await sub.add("news", b"caf\xc3\xa9")
    await admin.publish("news", b"\xff payload stays bytes")
    await admin.publish("café", "x")
    await rec.wait_until(lambda: len(rec.messages) == 2 and len(rec.activations) == 2)
    assert rec.messages == [("news", b"\xff payload stays bytes"), ("café", b"x")]
    assert sorted(rec.activations) == ["café", "news"]
    assert all(type(name) is str for name, _ in rec.messages)


async def test_default_stays_bytes(env: Any) -> None:
    mpx, admin = env
    rec = TextRecorder()
    sub = mpx.new_channel_subscription(rec.on_message, None, rec.on_activation)
    async with asyncio.timeout(5):
        await sub.add("news")
    await admin.publish("news", "x")
    await rec.wait_until(lambda: len(rec.messages) == 1 and len(rec.activations) == 1)
    assert rec.messages == [(b"news", b"x")]
    assert rec.activations == [b"news"]
    async with mpx.subscribe("it") as it:
        await admin.publish("it", "y")
        async with asyncio.timeout(5):
            msg = await anext(aiter(it))
    assert msg == Message(b"it", b"y")


async def test_sync_callback_returning_an_awaitable_gets_str(env: Any) -> None:
    # The subscription turns queued at its first awaitable: the worker must still decode.
    mpx, admin = env
    got: list[tuple[Any, bytes]] = []
    done = asyncio.Event()

    async def later(channel: Any, data: bytes) -> None:
        got.append((channel, data))
        if len(got) == 2:
            done.set()

    def on_message(channel: Any, data: bytes) -> Any:
        return later(channel, data)

    sub = mpx.new_channel_subscription(on_message, decode_names=True)
    async with asyncio.timeout(5):
        await sub.add("c")
        await admin.publish("c", "1")
        await admin.publish("c", "2")
        await done.wait()
    assert got == [("c", b"1"), ("c", b"2")]


async def test_pattern_callbacks_receive_str_channel_and_pattern(env: Any) -> None:
    mpx, admin = env
    rec = TextRecorder()
    mpx.new_pattern_subscription(
        "room:*", rec.on_message, None, rec.on_activation, decode_names=True
    )
    await rec.wait_until(lambda: rec.activations == ["room:*"])
    await admin.publish("room:1", "hi")
    await rec.wait_until(lambda: len(rec.messages) == 1)
    assert rec.messages == [("room:1", b"hi")]


async def test_iterators_yield_str_names(env: Any) -> None:
    mpx, admin = env
    async with mpx.subscribe("a", decode_names=True) as sub:
        events = sub.events()
        async with asyncio.timeout(5):
            assert await anext(events) == Activated("a")
            await admin.publish("a", "1")
            assert await anext(events) == Message("a", b"1")
        await sub.add("b")
        async with asyncio.timeout(5):
            assert await anext(events) == Activated("b")
            await admin.publish("b", "2")
            msg = await anext(events)
        assert msg == Message("b", b"2") and type(msg.channel) is str  # type: ignore[union-attr]
    async with mpx.psubscribe("p:*", decode_names=True) as psub:
        await admin.publish("p:1", "3")
        async with asyncio.timeout(5):
            pmsg = await anext(aiter(psub))
    assert pmsg == Message("p:1", b"3", "p:*")


async def test_names_that_are_not_utf8_round_trip(env: Any) -> None:
    # A bytes name that is not UTF-8 arrives with surrogate escapes: ``in`` finds it, and
    # remove() takes that very str (a callback may remove the channel it was handed).
    mpx, admin = env
    rec = TextRecorder()
    raw = b"bin:\xff\xfe"
    sub = mpx.new_channel_subscription(rec.on_message, None, rec.on_activation, decode_names=True)
    async with asyncio.timeout(5):
        await sub.add(raw)
    await admin.publish(raw, "x")
    await rec.wait_until(lambda: len(rec.messages) == 1)
    name = rec.messages[0][0]
    assert name == "bin:\udcff\udcfe" and rec.activations == [name]
    assert name in sub
    assert name.encode("utf-8", "surrogateescape") == raw
    sub.remove(name)
    assert sub.channels == frozenset()
    async with asyncio.timeout(5):
        while await admin.numsub(raw):  # Redis hears of the removal at the end of the turn
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("value", ["yes", 1, None])
async def test_decode_names_must_be_a_bool(env: Any, value: Any) -> None:
    mpx, admin = env
    with pytest.raises(InvalidArgumentType, match="decode_names must be True or False"):
        mpx.new_channel_subscription(lambda c, d: None, decode_names=value)
    with pytest.raises(InvalidArgumentType, match="decode_names must be True or False"):
        mpx.subscribe("z", decode_names=value)
    with pytest.raises(InvalidArgumentType, match="decode_names must be True or False"):
        mpx.psubscribe("z*", decode_names=value)
    # Nothing was registered: no subscription, nothing asked of Redis.
    assert mpx.stats()["subscriptions"] == 0
    sub = mpx.new_channel_subscription(lambda c, d: None)
    async with asyncio.timeout(5):
        await sub.add("ok")
    assert await admin.numsub("z") == 0
    assert await admin.numpat() == 0


async def test_cluster_shard_channels_as_str(cluster: RedisCluster) -> None:
    mpx = ClusterMultiplexer(cluster.url)
    try:
        rec = TextRecorder()
        sub = mpx.new_channel_subscription(
            rec.on_message, None, rec.on_activation, decode_names=True
        )
        names = [f"dn:{i}" for i in range(8)]  # spread over the nodes
        async with asyncio.timeout(10):
            await sub.add(*names)
            for name in names:
                assert await mpx.publish(name, name) == 1
        await rec.wait_until(lambda: len(rec.messages) == len(names))
        assert sorted(rec.messages) == sorted((n, n.encode()) for n in names)
        assert sorted(rec.activations) == sorted(names)
    finally:
        await mpx.aclose()
