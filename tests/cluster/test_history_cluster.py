"""History and recovery on a cluster (the session's 3-primary ``cluster``): the history
script on the channel's owner (``SPUBLISH`` inside it by default), and recovering
subscriptions across a node's Pub/Sub connection being killed and across slot moves that
carry the history's keys along (``MIGRATE``), exactly once and in order.

A test that moves a slot moves it back before it ends (the cluster is shared).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator

import pytest

from redismpx import Gap
from redismpx._envelope import envelope_channel, history_keys
from redismpx.cluster import ClusterMultiplexer
from redismpx.errors import ServerError
from redismpx.server import ClusterNode, RedisCluster, key_slot
from support.clusters import names_on, rejected_calls, slot_owners
from support.waiting import poll_until as until

pytestmark = pytest.mark.timeout(90)


class Received:
    """Per channel: payloads, activations; and the gaps."""

    def __init__(self) -> None:
        self.data: dict[bytes, list[bytes]] = {}
        self.activations: dict[bytes, int] = {}
        self.gaps: list[Gap[bytes]] = []
        self.disconnects = 0

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.data.setdefault(channel, []).append(data)

    def on_activation(self, name: bytes) -> None:
        self.activations[name] = self.activations.get(name, 0) + 1

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects += 1

    def on_gap(self, gap: Gap[bytes]) -> None:
        self.gaps.append(gap)

    def of(self, channel: str) -> list[bytes]:
        return self.data.get(channel.encode(), [])


class Publisher:
    """Publishes 1, 2, 3 ... with history on each channel, round robin, until stopped;
    ``sent[channel]`` lists what Redis acknowledged. A refused publish (an error reply:
    nothing ran) is retried and counted in ``refused``."""

    def __init__(self, mpx: ClusterMultiplexer, channels: list[str]) -> None:
        self.mpx = mpx
        self.channels = channels
        self.sent: dict[str, list[bytes]] = {c: [] for c in channels}
        self.refused: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        assert self._task is not None
        await self._task

    async def _run(self) -> None:
        for i in itertools.count(1):
            if self._stop.is_set():
                return
            for channel in self.channels:
                data = str(i).encode()
                while True:
                    try:
                        await self.mpx.publish(channel, data, history_size=100_000)
                        break
                    except ServerError as exc:
                        self.refused.append(exc.code or str(exc))
                        await asyncio.sleep(0.005)
                self.sent[channel].append(data)
            await asyncio.sleep(0.001)

    def total(self) -> int:
        return sum(len(v) for v in self.sent.values())


@pytest.fixture
async def mpxs(
    cluster: RedisCluster,
) -> AsyncIterator[tuple[ClusterMultiplexer, ClusterMultiplexer]]:
    """A publisher and a subscriber on the shared cluster."""
    await cluster.await_ready()
    publisher = ClusterMultiplexer(cluster.url, client_name="rmpx-hpub")
    subscriber = ClusterMultiplexer(cluster.url, client_name="rmpx-hsub")
    yield publisher, subscriber
    await subscriber.aclose()
    await publisher.aclose()


async def move_slot(cluster: RedisCluster, slot: int, target: ClusterNode) -> None:
    """Move ``slot`` to ``target`` with its keys, as ``--cluster reshard`` does: IMPORTING,
    MIGRATING, MIGRATE the keys, then SETSLOT NODE (target, source, the others)."""
    source = slot_owners(cluster)[slot]
    if source is target:
        return
    await target.acommand("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
    await source.acommand("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
    while keys := await source.acommand("CLUSTER", "GETKEYSINSLOT", slot, 100):
        await source.acommand("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    others = [n for n in cluster.primaries() if n not in (target, source)]
    for node in (target, source, *others):
        await node.acommand("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)


def check_exactly_once(r: Received, pub: Publisher) -> None:
    for channel, sent in pub.sent.items():
        assert r.of(channel) == sent, channel  # every acknowledged one, once, in order
    assert r.gaps == []


# -- publishing ------------------------------------------------------------------------------------


async def test_publish_with_history_lands_on_each_channels_owner(
    cluster: RedisCluster, mpxs: tuple[ClusterMultiplexer, ClusterMultiplexer]
) -> None:
    publisher, subscriber = mpxs
    owners = slot_owners(cluster)
    a, b, c = cluster.primaries()
    channels = [*names_on(owners, a, "ha", 2), *names_on(owners, b, "hb", 2)]
    channels += [*names_on(owners, c, "hc", 1), "user:{42}:inbox"]
    r, plain = Received(), Received()
    sub = subscriber.new_channel_subscription(
        r.on_message, r.on_disconnect, r.on_activation, recover=True, on_gap=r.on_gap
    )
    other = subscriber.new_channel_subscription(plain.on_message)  # sharded, no recovery
    await sub.add(*channels)
    await other.add(*channels)
    for channel in channels:
        for i in range(1, 6):
            # SPUBLISH inside the script: one shard subscriber (the subscriber's node link).
            assert await publisher.publish(channel, str(i), history_size=10) == 1
    await until(lambda: all(len(r.of(ch)) == 5 for ch in channels), "5 each")
    await until(lambda: all(len(plain.of(ch)) == 5 for ch in channels), "5 each, plain")
    for channel in channels:
        name = channel.encode()
        owner = slot_owners(cluster)[key_slot(name)]
        meta, log = history_keys(name)
        assert await owner.acommand("EXISTS", meta, log) == 2, channel
        # The envelope channel is a shard channel in the same slot, on the same node.
        assert (await owner.acommand("PUBSUB", "SHARDNUMSUB", envelope_channel(name)))[1] == 1
        assert r.of(channel) == plain.of(channel) == [str(i).encode() for i in range(1, 6)]
        h = await subscriber.history(channel, limit=3)
        assert [e.data for e in h.entries] == [b"3", b"4", b"5"]
        assert sub.position(channel) == h.position


async def test_classic_publish_with_history_on_a_cluster(
    cluster: RedisCluster, mpxs: tuple[ClusterMultiplexer, ClusterMultiplexer]
) -> None:
    publisher, subscriber = mpxs
    r = Received()
    sub = subscriber.new_channel_subscription(
        r.on_message, None, r.on_activation, recover=True, on_gap=r.on_gap, sharded=False
    )
    await sub.add("classic-h")
    for i in range(1, 4):
        await publisher.publish("classic-h", str(i), sharded=False, history_size=10)
    await until(lambda: r.of("classic-h") == [b"1", b"2", b"3"], "3 classic messages")


# -- faults --------------------------------------------------------------------------------------


async def test_a_node_pubsub_kill_recovers_its_channels_only(
    cluster: RedisCluster, mpxs: tuple[ClusterMultiplexer, ClusterMultiplexer]
) -> None:
    publisher, subscriber = mpxs
    owners = slot_owners(cluster)
    a, b, c = cluster.primaries()
    on_a = names_on(owners, a, "ka", 3)
    elsewhere = [*names_on(owners, b, "kb", 2), *names_on(owners, c, "kc", 2)]
    r = Received()
    sub = subscriber.new_channel_subscription(
        r.on_message, r.on_disconnect, r.on_activation, recover=True, on_gap=r.on_gap
    )
    await sub.add(*on_a, *elsewhere)
    pub = Publisher(publisher, on_a + elsewhere)
    pub.start()
    try:
        for kill in range(1, 4):
            before = pub.total()
            await until(lambda: pub.total() > before + 50, "traffic")  # noqa: B023
            killed = await a.acommand("CLIENT", "KILL", "TYPE", "pubsub")
            assert killed >= 1
            await until(
                lambda: all(r.activations[ch.encode()] == kill + 1 for ch in on_a),  # noqa: B023
                "the channels of A caught up",
            )
    finally:
        await pub.stop()
    await until(lambda: all(r.of(ch)[-1:] == pub.sent[ch][-1:] for ch in pub.sent), "the end")
    check_exactly_once(r, pub)
    assert all(r.activations[ch.encode()] == 1 for ch in elsewhere)
    assert r.disconnects == 3


async def test_a_slot_move_with_its_history_is_seamless(
    cluster: RedisCluster, mpxs: tuple[ClusterMultiplexer, ClusterMultiplexer]
) -> None:
    publisher, subscriber = mpxs
    owners = slot_owners(cluster)
    a, b, c = cluster.primaries()
    tag = next(f"mv{i}" for i in itertools.count() if owners[key_slot(f"mv{i}")] is a)
    slot = key_slot(tag)
    moving = [f"m1{{{tag}}}", f"m2{{{tag}}}"]
    staying = names_on(owners, c, "st", 2)
    r = Received()
    sub = subscriber.new_channel_subscription(
        r.on_message, r.on_disconnect, r.on_activation, recover=True, on_gap=r.on_gap
    )
    await sub.add(*moving, *staying)
    pub = Publisher(publisher, moving + staying)
    pub.start()
    try:
        for n, target in enumerate((b, a), start=2):  # there and back (the cluster is shared)
            before = pub.total()
            await until(lambda: pub.total() > before + 100, "traffic")  # noqa: B023
            await move_slot(cluster, slot, target)
            await until(
                lambda: all(r.activations[ch.encode()] == n for ch in moving),  # noqa: B023
                "the moved channels caught up",
            )
            before = pub.total()
            await until(lambda: pub.total() > before + 100, "traffic after the move")  # noqa: B023
    finally:
        await pub.stop()
        if slot_owners(cluster)[slot] is not a:
            await move_slot(cluster, slot, a)
    await until(lambda: all(r.of(ch)[-1:] == pub.sent[ch][-1:] for ch in pub.sent), "the end")
    check_exactly_once(r, pub)
    assert all(r.activations[ch.encode()] == 1 for ch in staying)
    # The history moved with the slot: it is whole on its owner.
    h = await subscriber.history(moving[0], limit=100_000)
    assert [e.data for e in h.entries] == pub.sent[moving[0]]
    print(f"\nslot move with history: {len(pub.refused)} publish(es) refused ({set(pub.refused)})")


def rejected_scripts(node: ClusterNode) -> int:
    """How many scripts ``node`` refused before running them (TRYAGAIN, say)."""
    return rejected_calls(node, "evalsha") + rejected_calls(node, "eval")


async def test_publishing_with_history_while_its_slot_migrates_is_never_refused(
    cluster: RedisCluster, mpxs: tuple[ClusterMultiplexer, ClusterMultiplexer]
) -> None:
    """A reshard step by step, as ``--cluster reshard`` runs it, with a publish with history
    at each step: the slot marked migrating, its log key moved, then its meta key, then the
    slot handed over. None may fail, and the recovering subscriber gets each once."""
    publisher, subscriber = mpxs
    owners = slot_owners(cluster)
    a, b, _ = cluster.primaries()
    tag = next(f"ask{i}" for i in itertools.count() if owners[key_slot(f"ask{i}")] is a)
    slot = key_slot(tag)
    channel = f"asked{{{tag}}}"
    meta, log = history_keys(channel.encode())
    r = Received()
    sub = subscriber.new_channel_subscription(
        r.on_message, r.on_disconnect, r.on_activation, recover=True, on_gap=r.on_gap
    )
    await sub.add(channel)
    refused: list[str] = []
    sent: list[bytes] = []

    async def publish() -> None:
        data = str(len(sent) + len(refused) + 1).encode()
        try:
            await publisher.publish(channel, data, history_size=100)
        except ServerError as exc:
            refused.append(f"{exc.code} after {len(sent)} sent")
        else:
            sent.append(data)

    await publish()
    try:
        await b.acommand("CLUSTER", "SETSLOT", slot, "IMPORTING", a.node_id)
        await a.acommand("CLUSTER", "SETSLOT", slot, "MIGRATING", b.node_id)
        await publish()  # both keys still on A: runs there
        await a.acommand("MIGRATE", b.host, b.port, "", 0, 5000, "KEYS", log)
        # The keys split between A and B: TRYAGAIN, until the migration moves the other one
        # (as a reshard goes on by itself): the publish waits it out.
        rejected = rejected_scripts(a)
        split = asyncio.create_task(publish())
        # Once A has answered TRYAGAIN, the migration goes on at once (the publish retries
        # for about a second: a fixed sleep here would race it on a loaded machine).
        async with asyncio.timeout(10):
            while rejected_scripts(a) == rejected:
                await asyncio.sleep(0.005)
        assert not split.done()
        await a.acommand("MIGRATE", b.host, b.port, "", 0, 5000, "KEYS", meta)
        await split
        await publish()  # both on B, the slot still A's: ASK
        for node in (b, a, *(n for n in cluster.primaries() if n not in (a, b))):
            await node.acommand("CLUSTER", "SETSLOT", slot, "NODE", b.node_id)
        await publish()  # MOVED, followed
        await until(lambda: r.activations.get(channel.encode()) == 2, "caught up after the move")
        await until(lambda: r.of(channel)[-1:] == sent[-1:], "the last one")
    finally:
        await move_slot(cluster, slot, a)
    assert r.of(channel) == sent and r.gaps == []
    assert refused == []
