"""``ClusterMultiplexer.publish`` at the level of nodes: one command connection per node,
opened at the first publish to it; a stalled or killed node fails only its own publishes.

(Routing by slot, ``MOVED`` and publishing through failovers and slot moves are covered by
``test_cluster.py``; this module is about the command connections themselves.) The cluster is
the session's: a test that kills a node restarts it and waits for the cluster to be ready.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from redismpx import ConnectionLost, HeartbeatTimeout, PublishTimeout
from redismpx.cluster import ClusterMultiplexer
from redismpx.server import ClusterNode, RedisCluster
from support.clusters import names_on, slot_owners
from support.internals import router_of
from support.recorder import Recorder
from support.stalls import debug_sleep

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def made() -> AsyncIterator[Callable[..., ClusterMultiplexer]]:
    mpxs: list[ClusterMultiplexer] = []

    def factory(url: str, **options: Any) -> ClusterMultiplexer:
        m = ClusterMultiplexer(url, **options)
        mpxs.append(m)
        return m

    yield factory
    for m in mpxs:
        await m.aclose()


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll a cheap predicate about state no event reports, failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def command_clients(node: ClusterNode, name: str) -> list[dict[str, str]]:
    """The connections named ``name`` on ``node`` that are not subscribed to anything."""
    text = await node.acommand("CLIENT", "LIST", decode=True)
    out = []
    for line in text.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        subscribed = any(int(fields.get(k, "0")) for k in ("sub", "psub", "ssub"))
        if fields.get("name") == name and not subscribed and "P" not in fields["flags"]:
            out.append(fields)
    return out


async def spublish_calls(node: ClusterNode) -> int:
    text = await node.acommand("INFO", "commandstats", decode=True)
    for line in text.splitlines():
        if line.startswith("cmdstat_spublish:"):
            fields = dict(f.split("=", 1) for f in line.split(":", 1)[1].split(","))
            return int(fields["calls"])
    return 0


async def subscribed(m: ClusterMultiplexer, *names: str) -> Recorder:
    rec = Recorder()
    m.new_channel_subscription(*rec.callbacks).add(*names)
    await rec.activated(*names)
    return rec


def on(rec: Recorder, name: str) -> list[bytes]:
    return [data for ch, data in rec.messages if ch == name.encode()]


async def test_each_node_gets_a_command_connection_at_its_first_publish(
    cluster: RedisCluster, made
) -> None:
    owners = slot_owners(cluster)
    a, b, c = cluster.primaries()
    names = {node: names_on(owners, node, f"cp{node.port}-", 3) for node in (a, b, c)}
    rec = await subscribed(made(cluster.url), *(n for ns in names.values() for n in ns))
    pub = made(cluster.url, client_name="rmpx-pub")
    await pub.wait_connected(10)
    before = {node: await spublish_calls(node) for node in (a, b, c)}
    assert pub.stats()["publish_connects"] == 0
    for name in names[a]:
        assert await pub.publish(name, "first") == 1
    # Only the owner of those slots was dialled, and only once.
    assert pub.stats()["publish_connects"] == 1
    [on_a] = await command_clients(a, "rmpx-pub")
    assert on_a["cmd"] == "spublish"
    for node in (b, c):
        assert [x for x in await command_clients(node, "rmpx-pub") if x["cmd"] == "spublish"] == []
    # Every node's names at once: one connection per node, each publish on its owner.
    per_name = 100
    all_names = [n for ns in names.values() for n in ns]
    replies = await asyncio.gather(
        *(pub.publish(name, str(i)) for i in range(per_name) for name in all_names)
    )
    assert replies == [1] * (per_name * len(all_names))
    assert pub.stats()["publish_connects"] == 3
    for node in (a, b, c):
        assert await spublish_calls(node) - before[node] == per_name * 3 + (3 if node is a else 0)
    await rec.received(3 + per_name * len(all_names), timeout=10)
    for name in all_names:
        want = [str(i).encode() for i in range(per_name)]
        if name in names[a]:
            want = [b"first", *want]
        assert on(rec, name) == want  # each once, in order


async def test_a_stalled_node_times_out_only_its_own_publishes(cluster: RedisCluster, made) -> None:
    owners = slot_owners(cluster)
    a, b, c = cluster.primaries()
    [slow] = names_on(owners, a, "stall", 1)
    others = [*names_on(owners, b, "fine-b", 1), *names_on(owners, c, "fine-c", 1)]
    rec = await subscribed(made(cluster.url), slow, *others)
    pub = made(cluster.url, health_check_interval=30, health_check_timeout=30)
    for name in (slow, *others):
        assert await pub.publish(name, "open") == 1
    sleeper = await debug_sleep(a, 1.5)  # under the cluster's 2 s node timeout
    stalled, *fine = await asyncio.gather(
        pub.publish(slow, "stalled", timeout=0.3),
        *(pub.publish(name, "meanwhile", timeout=5) for name in others),
        return_exceptions=True,
    )
    assert not sleeper.done()  # the stalled one timed out while a slept
    assert fine == [1, 1]  # the other nodes answered while a slept
    assert isinstance(stalled, PublishTimeout), repr(stalled)
    assert stalled.sent is True
    await sleeper
    # It was written: a runs it when it wakes; its late reply is not taken for the next one.
    await rec.wait_until(lambda: (slow.encode(), b"stalled") in rec.messages)
    assert await pub.publish(slow, "after") == 1
    await rec.wait_until(lambda: (slow.encode(), b"after") in rec.messages)
    assert on(rec, slow) == [b"open", b"stalled", b"after"]
    assert pub.stats()["publish_connects"] == 3


async def test_a_killed_node_fails_its_outstanding_publishes_and_takes_new_ones_back(
    cluster: RedisCluster, made
) -> None:
    owners = slot_owners(cluster)
    a, b, _ = cluster.primaries()
    [victim] = names_on(owners, a, "victim", 1)
    [other] = names_on(owners, b, "bystander", 1)
    pub = made(cluster.url, health_check_interval=30, health_check_timeout=30, backoff_cap=0.1)
    assert await pub.publish(victim, "open") == 0
    assert await pub.publish(other, "open") == 0
    link = router_of(pub).publisher._links[(a.host, a.port)]
    try:
        a.pause()
        tasks = [asyncio.create_task(pub.publish(victim, f"k{i}", timeout=30)) for i in range(5)]
        await eventually(
            lambda: link.conn is not None and link.conn.awaiting == 5, "the publishes written"
        )
        await a.akill()
        async with asyncio.timeout(5):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, ConnectionLost), repr(outcome)
            assert not isinstance(outcome, HeartbeatTimeout)
        await eventually(lambda: link.conn is None, "the publisher letting go of the connection")
        # While a is down its publishes wait, then give up unsent; b's go on.
        with pytest.raises(PublishTimeout) as caught:
            await pub.publish(victim, "unsent", timeout=0.3)
        assert caught.value.sent is False
        assert await pub.publish(other, "during") == 0
        waiting = asyncio.create_task(pub.publish(victim, "waited", timeout=30))
        await a.arestart()
        assert await asyncio.wait_for(waiting, 10) == 0
        assert await spublish_calls(a) == 1  # since the restart: "waited", once
    finally:
        if a.paused:
            a.resume()
        if not a.running:
            await a.arestart()
        await cluster.await_ready()
