"""History and recovery across Sentinel failovers: the replica holds the history (replication
carries the script's effects), so a recovering subscription that follows the failover
delivers what it missed from the new primary's copy, exactly once and in order.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable

import pytest

from redismpx import Gap, Multiplexer
from redismpx._envelope import history_keys
from redismpx.errors import ConnectionLost, PublishTimeout, ServerError
from redismpx.server import RedisSentinel
from support.sentinels import role
from support.waiting import poll_until

pytestmark = pytest.mark.timeout(90)

MpxFactory = Callable[..., Multiplexer]
SentinelFactory = Callable[..., RedisSentinel]


async def until(predicate: Callable[[], bool], what: str) -> None:
    await poll_until(predicate, what, timeout=15.0)  # failovers take seconds


class Numbered:
    """Publishes 1, 2, 3 ... with history on each channel until stopped. ``sent``: what the
    primary acknowledged; ``unsure``: publishes cut by the failover (they may or may not
    have happened; their numbers are never reused)."""

    def __init__(self, mpx: Multiplexer, channels: list[str]) -> None:
        self.mpx = mpx
        self.sent: dict[str, list[int]] = {c: [] for c in channels}
        self.unsure: dict[str, set[int]] = {c: set() for c in channels}
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        await self._task

    async def _run(self) -> None:
        for i in itertools.count(1):
            if self._stop.is_set():
                return
            for channel in self.sent:
                try:
                    await self.mpx.publish(channel, str(i), history_size=100_000, timeout=10)
                except (ConnectionLost, PublishTimeout, ServerError):
                    self.unsure[channel].add(i)  # READONLY, a cut: maybe, maybe not
                    await asyncio.sleep(0.01)
                else:
                    self.sent[channel].append(i)
            await asyncio.sleep(0.002)

    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())


class Received:
    def __init__(self) -> None:
        self.data: dict[bytes, list[int]] = {}
        self.activations: dict[bytes, int] = {}
        self.gaps: list[Gap[bytes]] = []
        self.disconnects = 0

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.data.setdefault(channel, []).append(int(data))

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects += 1

    def on_activation(self, name: bytes) -> None:
        self.activations[name] = self.activations.get(name, 0) + 1

    def on_gap(self, gap: Gap[bytes]) -> None:
        self.gaps.append(gap)


def check_exactly_once(r: Received, pub: Numbered) -> None:
    for channel, sent in pub.sent.items():
        got = r.data.get(channel.encode(), [])
        assert got == sorted(set(got)), f"{channel}: a duplicate or out of order"
        assert set(sent) <= set(got), f"{channel}: lost {sorted(set(sent) - set(got))[:10]}"
        assert set(got) <= set(sent) | pub.unsure[channel], channel
    assert r.gaps == []


async def test_recovery_across_a_failover_from_the_replicas_history(
    shared: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    """Quiet during the failover itself; published on the new primary the moment it is
    promoted (before the subscriber can have followed): recovered from its history."""
    publisher = mpx_factory(shared.url)
    subscriber = mpx_factory(shared.url)
    channels = ["fo:a", "fo:b", "fo:{c}"]
    r = Received()
    sub = subscriber.new_channel_subscription(
        r.on_message, r.on_disconnect, r.on_activation, recover=True, on_gap=r.on_gap
    )
    await sub.add(*channels)
    for i in range(1, 21):
        for channel in channels:
            await publisher.publish(channel, str(i), history_size=1000)
    await until(lambda: all(len(r.data.get(c.encode(), [])) == 20 for c in channels), "20 each")
    old = shared.primary
    new = await shared.afailover()
    direct = mpx_factory(new.url)  # straight to the new primary, not through the sentinels
    for i in range(21, 41):
        for channel in channels:
            await direct.publish(channel, str(i), history_size=1000)
    await until(lambda: all(r.activations[c.encode()] == 2 for c in channels), "caught up")
    for i in range(41, 51):
        for channel in channels:
            await publisher.publish(channel, str(i), history_size=1000)
    await until(lambda: all(len(r.data[c.encode()]) >= 50 for c in channels), "50 each")
    for channel in channels:
        assert r.data[channel.encode()] == list(range(1, 51)), channel
        meta, log = history_keys(channel.encode())
        assert await new.acommand("EXISTS", meta, log) == 2
    assert r.gaps == [] and r.disconnects == 1
    await shared.await_ready(timeout=30)
    assert role(old) == "slave"


async def test_recovery_across_a_failover_under_continuous_publishing(
    shared: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    publisher = mpx_factory(shared.url)
    subscriber = mpx_factory(shared.url)
    channels = ["fc:a", "fc:b", "fc:{c}"]
    r = Received()
    sub = subscriber.new_channel_subscription(
        r.on_message, r.on_disconnect, r.on_activation, recover=True, on_gap=r.on_gap
    )
    await sub.add(*channels)
    pub = Numbered(publisher, channels)
    try:
        await until(lambda: pub.total() > 100, "traffic before the failover")
        await shared.afailover()
        await until(lambda: r.disconnects == 1, "the failover's disconnect")
        await until(
            lambda: all(r.activations[c.encode()] == 2 for c in channels), "caught up on the new"
        )
        before = pub.total()
        await until(lambda: pub.total() > before + 150, "traffic after the failover")
    finally:
        await pub.stop()
    await shared.await_ready(timeout=30)
    for channel in channels:
        got = r.data.get(channel.encode(), [])
        assert got == sorted(set(got)), f"{channel}: a duplicate or out of order"
        # Whatever the new primary's history holds was delivered, or a gap said otherwise.
        h = await subscriber.history(channel, limit=100_000)
        missed = sorted({int(e.data) for e in h.entries} - set(got))
        assert not missed or r.gaps, f"{channel}: {len(missed)} skipped silently: {missed[:5]}"
    assert all(len(r.data[c.encode()]) > 0 for c in channels)


async def test_the_replica_holds_the_history_before_any_failover(
    shared: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    publisher = mpx_factory(shared.url)
    for i in range(1, 21):
        await publisher.publish("replicated", str(i), history_size=10)
    replica = shared.replicas[0]
    meta, log = history_keys(b"replicated")
    primary_meta = await shared.primary.acommand("HGETALL", meta)
    async with asyncio.timeout(10):
        while await replica.acommand("HGETALL", meta) != primary_meta:
            await asyncio.sleep(0.02)
    # The same entries, under the same ids, and the same expiry (replicated as PEXPIREAT).
    assert await replica.acommand("XRANGE", log, "-", "+") == await shared.primary.acommand(
        "XRANGE", log, "-", "+"
    )
    assert 0 < await replica.acommand("PTTL", log) <= 3_600_000
