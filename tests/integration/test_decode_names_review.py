"""Review of ``decode_names=True`` (B56) against real servers: the paths its own tests do not
walk, and the regressions found.

Paths that hold (overflow policies, ``close``, ``on_drop``, reconnects, callbacks that raise,
removal mid-delivery with the ``str`` handed over, long and non-UTF-8 names, iterators on a
cluster) are pinned here so that they keep holding. The findings, each failing on e781df3:

* ``test_decode_names_adds_no_memory_per_subscription``: each decoding subscription wraps its
  callbacks in closures of its own (about 240 bytes per callback), more than doubling what a
  subscription costs.
* ``test_a_bool_variable_type_checks``: the overloads accept only a literal ``True`` or
  ``False``; ``decode_names=flag`` (a ``bool``) is rejected by mypy though it runs.
* ``test_subscription_event_still_works_with_isinstance``: ``SubscriptionEvent`` became a
  union of subscripted generics, which ``isinstance`` refuses (a change for code that does
  not use the option).
* ``test_contains_is_false_for_any_str_not_held``: ``name in sub`` raises
  ``UnicodeEncodeError`` for a ``str`` with a surrogate that is not an escaped byte.
"""

from __future__ import annotations

import asyncio
import gc
import textwrap
import tracemalloc
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from mypy import api

import redismpx
from redismpx import (
    Activated,
    ClusterMultiplexer,
    Disconnected,
    Dropped,
    Message,
    Multiplexer,
    SubscriptionClosed,
)
from redismpx.iterators import SubscriptionEvent
from redismpx.server import RedisCluster, RedisServer
from support.admin import Admin
from support.logwatch import watch_log
from support.waiting import wait_for


class Heard:
    """Everything a subscription's callbacks heard, as delivered (``str`` or ``bytes``)."""

    def __init__(self) -> None:
        self.messages: list[tuple[Any, bytes]] = []
        self.activations: list[Any] = []
        self.disconnects: list[BaseException] = []
        self.drops: list[int] = []
        self.changed = asyncio.Event()

    def note(self) -> None:
        self.changed.set()

    async def until(self, predicate: Callable[[], bool], what: str, timeout: float = 10) -> None:
        await wait_for(
            self.changed,
            predicate,
            timeout,
            lambda: f"timed out waiting for {what}: {self.messages[-5:]} {self.activations}",
        )

    def on_message(self, channel: Any, data: bytes) -> None:
        self.messages.append((channel, data))
        self.note()

    def on_activation(self, name: Any) -> None:
        self.activations.append(name)
        self.note()

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects.append(error)
        self.note()

    def on_drop(self, count: int) -> None:
        self.drops.append(count)
        self.note()


@pytest.fixture
async def env(redis_server: RedisServer) -> AsyncIterator[tuple[Multiplexer, Admin]]:
    mpx = Multiplexer(redis_server.url, health_check_interval=1.0, health_check_timeout=1.0)
    admin = Admin(redis_server.url)
    try:
        yield mpx, admin
    finally:
        await mpx.aclose()
        await admin.close()


async def _publish_all(admin: Admin, channels: list[str], n: int) -> None:
    """``n`` messages ``"0"``..``"n-1"`` to each of ``channels`` in turn, in one pipeline."""
    pipe = admin.client.pipeline(transaction=False)
    for i in range(n):
        for channel in channels:
            pipe.publish(channel, str(i))
    await pipe.execute()


# -- paths that hold ---------------------------------------------------------------------------


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest", "latest_per_channel"])
async def test_overflowing_callbacks_get_str_names(
    env: tuple[Multiplexer, Admin], overflow: Any
) -> None:
    """A stuck async callback: the buffer overflows, on_drop hears counts, the messages kept
    still reach on_message with ``str`` names once the callback moves again."""
    mpx, admin = env
    heard = Heard()
    gate = asyncio.Event()

    async def slow(channel: Any, data: bytes) -> None:
        await gate.wait()
        heard.on_message(channel, data)

    sub = mpx.new_channel_subscription(
        slow,
        None,
        heard.on_activation,
        decode_names=True,
        max_buffer=4,
        overflow=overflow,
        on_drop=heard.on_drop,
    )
    async with asyncio.timeout(10):
        await sub.add("o:é", "o:b")
    await _publish_all(admin, ["o:é", "o:b"], 20)
    await heard.until(lambda: sum(heard.drops) >= 20 * 2 - 4 - 1, "the drops")
    gate.set()
    await heard.until(lambda: len(heard.messages) == 40 - sum(heard.drops), "what was kept")
    assert {type(c) for c, _ in heard.messages} == {str}
    assert {c for c, _ in heard.messages} <= {"o:é", "o:b"}
    assert sorted(heard.activations) == ["o:b", "o:é"]
    if overflow == "latest_per_channel":  # the latest of each channel is what is left
        assert ("o:é", b"19") in heard.messages and ("o:b", b"19") in heard.messages


async def test_close_policy_with_str_names(env: tuple[Multiplexer, Admin]) -> None:
    """``overflow="close"``: the callback subscription hears SubscriptionClosed; an iterator
    yields ``str`` names until the overflow, then raises (pending messages are discarded)."""
    mpx, admin = env
    heard = Heard()
    gate = asyncio.Event()

    async def slow(channel: Any, data: bytes) -> None:
        await gate.wait()
        heard.on_message(channel, data)

    sub = mpx.new_channel_subscription(
        slow, heard.on_disconnect, decode_names=True, max_buffer=2, overflow="close"
    )
    async with mpx.subscribe("cl:x", decode_names=True, max_buffer=2, overflow="close") as it:
        events = it.events()
        async with asyncio.timeout(10):
            await sub.add("cl:x")
            assert await anext(events) == Activated("cl:x")
            await admin.publish("cl:x", "first")
            first = await anext(events)
        assert first == Message("cl:x", b"first") and type(first.channel) is str
        await _publish_all(admin, ["cl:x"], 5)
        await heard.until(lambda: bool(heard.disconnects), "the close notice")
        assert isinstance(heard.disconnects[0], SubscriptionClosed) and sub.closed
        rest: list[SubscriptionEvent[str]] = []
        with pytest.raises(SubscriptionClosed):
            async with asyncio.timeout(10):
                async for event in events:
                    rest.append(event)
        assert all(isinstance(e, Dropped) for e in rest), rest
    assert heard.messages == []  # the stuck callback never returned; nothing after close


async def test_reconnect_activates_again_as_str(env: tuple[Multiplexer, Admin]) -> None:
    """After CLIENT KILL: on_activation hears each name again as ``str``, and iterators
    yield Disconnected then ``Activated[str]`` (channel and pattern)."""
    mpx, admin = env
    heard, pheard = Heard(), Heard()
    sub = mpx.new_channel_subscription(
        heard.on_message, heard.on_disconnect, heard.on_activation, decode_names=True
    )
    mpx.new_pattern_subscription(
        "rk:*", pheard.on_message, pheard.on_disconnect, pheard.on_activation, decode_names=True
    )
    async with asyncio.timeout(10):
        await sub.add("rk:1", b"rk:\xff")
    async with (
        mpx.subscribe("rk:it", decode_names=True) as it,
        mpx.psubscribe("rk:*", decode_names=True) as pit,
    ):
        events, pevents = it.events(), pit.events()
        async with asyncio.timeout(10):
            assert await anext(events) == Activated("rk:it")
            assert await anext(pevents) == Activated("rk:*")
        await pheard.until(lambda: pheard.activations == ["rk:*"], "the pattern's activation")
        assert await admin.kill_pubsub() >= 1
        await heard.until(lambda: len(heard.activations) == 4, "activations after the kill")
        await pheard.until(lambda: len(pheard.activations) == 2, "the pattern again")
        assert sorted(heard.activations) == sorted(["rk:1", "rk:\udcff"] * 2)
        assert pheard.activations == ["rk:*", "rk:*"]
        async with asyncio.timeout(10):
            assert isinstance(await anext(events), Disconnected)
            assert await anext(events) == Activated("rk:it")
            assert isinstance(await anext(pevents), Disconnected)
            assert await anext(pevents) == Activated("rk:*")
            await admin.publish("rk:it", "after")
            assert await anext(events) == Message("rk:it", b"after")
            assert await anext(pevents) == Message("rk:it", b"after", "rk:*")
    await pheard.until(lambda: ("rk:it", b"after") in pheard.messages, "the pattern's copy")
    assert all(type(c) is str for c, _ in pheard.messages)


@pytest.mark.parametrize("kind", ["inline", "queued"])
async def test_raising_callback_and_removal_with_the_str_handed_over(
    env: tuple[Multiplexer, Admin], kind: str
) -> None:
    """A callback that raises is logged and counted, the next message still arrives as
    ``str``; a callback that removes the channel with the ``str`` it got hears nothing more of
    it, even of a message already read in the same batch (B17)."""
    mpx, admin = env
    heard = Heard()

    def on_message(channel: str, data: bytes) -> None:
        heard.on_message(channel, data)
        if data == b"boom":
            raise RuntimeError("callback failed on purpose")
        if data == b"leave":
            sub.remove(channel)

    async def queued(channel: str, data: bytes) -> None:
        on_message(channel, data)

    sub = mpx.new_channel_subscription(
        on_message if kind == "inline" else queued, decode_names=True
    )
    with watch_log() as log:
        async with asyncio.timeout(10):
            await sub.add("rm:ü")
        await admin.publish("rm:ü", "boom")
        await log.wait_until(lambda: log.count("on_message raised") == 1)
        pipe = admin.client.pipeline(transaction=False)
        for data in ("ok", "leave", "never"):
            pipe.publish("rm:ü", data)
        await pipe.execute()
        await heard.until(lambda: len(heard.messages) >= 3, "the messages before the removal")
        async with asyncio.timeout(10):
            while await admin.numsub("rm:ü"):  # Redis heard of the removal: all was read
                await asyncio.sleep(0.01)
    assert heard.messages == [("rm:ü", b"boom"), ("rm:ü", b"ok"), ("rm:ü", b"leave")]
    assert mpx.stats()["callback_errors"] == 1
    assert "rm:ü" not in sub and sub.channels == frozenset()


async def test_long_and_binary_names(env: tuple[Multiplexer, Admin]) -> None:
    """A 256 KiB name (multi-byte UTF-8) and a name that is every byte value arrive as the
    ``str`` that encodes back to them; ``in`` finds both, ``remove`` takes the bytes back."""
    mpx, admin = env
    heard = Heard()
    long = "ü" * (128 * 1024)
    raw = bytes(range(1, 256))
    sub = mpx.new_channel_subscription(
        heard.on_message, None, heard.on_activation, decode_names=True
    )
    async with asyncio.timeout(10):
        await sub.add(long, raw)
    await admin.publish(long, "l")
    await admin.publish(raw, "r")
    await heard.until(lambda: len(heard.messages) == 2, "both messages")
    names = {c: d for c, d in heard.messages}
    text = raw.decode("utf-8", "surrogateescape")
    assert names == {long: b"l", text: b"r"}
    assert sorted(heard.activations) == sorted([long, text])
    assert long in sub and text in sub
    sub.remove(long, text.encode("utf-8", "surrogateescape"))
    assert sub.channels == frozenset()


async def test_cluster_iterators_shard_and_classic(cluster: RedisCluster) -> None:
    """On a ClusterMultiplexer: a sharded iterator (the default) and a classic one, both with
    ``str`` names; a pattern iterator too (classic Pub/Sub, broadcast)."""
    mpx = ClusterMultiplexer(cluster.url)
    try:
        names = [f"dnr:{i}" for i in range(6)]
        async with (
            mpx.subscribe(*names, decode_names=True) as shard,
            mpx.subscribe("dnr:classic", sharded=False, decode_names=True) as classic,
            mpx.psubscribe("dnrp:*", decode_names=True) as pat,
        ):
            async with asyncio.timeout(20):
                for name in names:
                    assert await mpx.publish(name, name) == 1
                got = [await anext(aiter(shard)) for _ in names]
                await mpx.publish("dnr:classic", "c", sharded=False)
                c = await anext(aiter(classic))
                await mpx.publish("dnrp:1", "p", sharded=False)
                p = await anext(aiter(pat))
        assert sorted(m.channel for m in got) == names
        assert all(type(m.channel) is str and m.data == m.channel.encode() for m in got)
        assert c == Message("dnr:classic", b"c")
        assert p == Message("dnrp:1", b"p", "dnrp:*")
    finally:
        await mpx.aclose()


# -- findings ----------------------------------------------------------------------------------


def _on_message(channel: Any, data: bytes) -> None:
    pass


def _on_activation(name: Any) -> None:
    pass


def _bytes_per_subscription(mpx: Multiplexer, n: int, **kwargs: Any) -> float:
    subs = [mpx.new_channel_subscription(_on_message, None, _on_activation, **kwargs)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        subs += [
            mpx.new_channel_subscription(_on_message, None, _on_activation, **kwargs)
            for _ in range(n)
        ]
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    for sub in subs:
        sub.close()
    return (after - before) / n


async def test_decode_names_adds_no_memory_per_subscription(
    env: tuple[Multiplexer, Admin],
) -> None:
    """10,000 subscriptions that share their callbacks cost the same with ``decode_names``.

    On e781df3 each one wraps ``on_message`` and ``on_activation`` in a closure of its own
    (a function and a cell, about 240 bytes each): about 600 bytes per subscription instead of
    about 170 (tracemalloc, Python 3.11). Subscriptions are the library's unit of scale (a
    process may hold hundreds of thousands): the option must not multiply their cost.
    """
    mpx, _ = env
    n = 10_000
    plain = _bytes_per_subscription(mpx, n)
    text = _bytes_per_subscription(mpx, n, decode_names=True)
    assert text <= plain + 16, (
        f"{text:.0f} bytes per subscription with decode_names, {plain:.0f} without"
    )


USER_CODE = """
from redismpx import Multiplexer

async def main(mpx: Multiplexer, flag: bool) -> None:
    def either(channel: str | bytes, data: bytes) -> None: ...

    mpx.new_channel_subscription(either, decode_names=flag)
    mpx.new_pattern_subscription("p*", either, decode_names=flag)
    async with mpx.subscribe("a", decode_names=flag) as it:
        async for m in it:
            name: str | bytes = m.channel
    async with mpx.psubscribe("p*", decode_names=flag) as pit:
        async for pm in pit:
            pname: str | bytes = pm.channel
"""


def test_a_bool_variable_type_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``decode_names=flag`` with ``flag: bool`` (a setting passed through, as a framework
    adapter does) runs, so it must type-check; on e781df3 mypy finds no overload for it."""
    # The tree under test (PYTHONPATH), not the editable install mypy would otherwise find.
    monkeypatch.setenv("MYPYPATH", str(Path(redismpx.__file__).parents[1]))
    path = tmp_path / "user_code.py"
    path.write_text(textwrap.dedent(USER_CODE))
    out, err, status = api.run(["--strict", "--no-incremental", "--no-error-summary", str(path)])
    assert status == 0, f"mypy --strict rejects a bool decode_names:\n{out}{err}"


def test_subscription_event_still_works_with_isinstance() -> None:
    """``redismpx.iterators.SubscriptionEvent`` was ``Message | Activated | ...``, usable with
    ``isinstance``; on e781df3 it is a union of subscripted generics and ``isinstance`` raises
    TypeError, for code that never asked for ``decode_names``."""
    event = Message(b"a", b"b")
    assert isinstance(event, SubscriptionEvent)
    assert not isinstance(b"a", SubscriptionEvent)


async def test_contains_is_false_for_any_str_not_held(env: tuple[Multiplexer, Admin]) -> None:
    """``name in sub`` answers for every ``str``: ``"\\ud800"`` (a surrogate that is not an
    escaped byte, so neither UTF-8 nor surrogateescape encodes it) is simply not held. On
    e781df3 ``in`` raises UnicodeEncodeError."""
    mpx, _ = env
    sub = mpx.new_channel_subscription(_on_message, decode_names=True)
    sub.add(b"x:\xff")
    assert "x:\udcff" in sub
    assert "x:\ud800" not in sub
    assert "\udfff" not in sub
