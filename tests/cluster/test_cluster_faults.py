"""Cluster faults at the edges of the reply stream, against real loopback clusters.

``ping()`` over shard channels, and a slot move that races a heartbeat PING or an
unsubscribe. The slot-move tests share a 2-primary cluster of this module: each moves a slot
of the first primary to the second (never back) and picks its names from the slots the first
primary still serves. To put a command of ours behind a move, the first primary is made to
sleep (``DEBUG SLEEP``) with ``CLUSTER SETSLOT`` pipelined behind: it runs the move the
moment it wakes, before it reads anything we sent meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import hiredis
import pytest

from redismpx._protocol import encode_command
from redismpx.cluster import ClusterLink, ClusterMultiplexer
from redismpx.cluster._topology import Topology
from redismpx.server import ClusterNode, RedisCluster, key_slot
from support.clusters import names_on, rejected_calls, slot_owners
from support.internals import router_of
from support.logwatch import watch_log
from support.recorder import Recorder
from support.stalls import wait_asleep

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def two_primaries(server_binary: str) -> Iterator[RedisCluster]:
    """A cluster of two primaries for this module's destructive tests."""
    with RedisCluster(server_binary, primaries=2) as started:
        yield started


@pytest.fixture
async def mpx_factory() -> AsyncIterator[Any]:
    made: list[ClusterMultiplexer] = []

    def factory(url: str, **kwargs: Any) -> ClusterMultiplexer:
        m = ClusterMultiplexer(url, client_name="rmpx-faults", **kwargs)
        made.append(m)
        return m

    yield factory
    for m in made:
        await m.aclose()


# -- helpers ----------------------------------------------------------------------------------


def link_to(mpx: ClusterMultiplexer, node: ClusterNode) -> ClusterLink:
    return next(link for addr, link in router_of(mpx).links.items() if addr[1] == node.port)


def shard_subscribers(node: ClusterNode, channel: str) -> int:
    reply = node.command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def stall_then(
    node: ClusterNode, seconds: float, *commands: tuple[Any, ...]
) -> asyncio.Task[list[Any]]:
    """Make ``node`` sleep with ``commands`` pipelined behind; return once it sleeps.

    The task resolves with the replies (the sleep's first) once the node woke and ran them.
    """
    reader, writer = await asyncio.open_connection(node.host, node.port)
    todo = [("DEBUG", "SLEEP", seconds), *commands]
    writer.write(b"".join(encode_command(*(str(a).encode() for a in cmd)) for cmd in todo))
    await writer.drain()

    async def replies() -> list[Any]:
        parser = hiredis.Reader()
        out: list[Any] = []
        try:
            while len(out) < len(todo):
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError(f"{node!r} closed the connection")
                parser.feed(data)
                while (reply := parser.gets()) is not False:
                    out.append(reply)
        finally:
            writer.close()
        return out

    task = asyncio.create_task(replies())
    await wait_asleep(node.host, node.port)
    return task


async def received_once(mpx: ClusterMultiplexer, rec: Recorder, channel: str, data: str) -> None:
    """Publish ``data`` then a marker on ``channel``: ``data`` must arrive exactly once.

    Messages on one channel arrive in order, so once the marker is in, so is every copy.
    """
    assert await mpx.publish(channel, data) == 1
    assert await mpx.publish(channel, f"{data}:marker") == 1
    marker = (channel.encode(), f"{data}:marker".encode())
    await rec.wait_until(lambda: marker in rec.messages, what=f"{marker}")
    assert rec.messages.count((channel.encode(), data.encode())) == 1


# -- ping -------------------------------------------------------------------------------------


async def test_ping_round_trip_over_shard_channels(cluster: RedisCluster, mpx_factory) -> None:
    mpx = mpx_factory(cluster.url)
    rtt = await mpx.ping(timeout=3)
    assert 0 <= rtt < 3
    rtt = await mpx.ping(timeout=3)  # again: the first probe left nothing behind
    assert 0 <= rtt < 3
    stats = mpx.stats()
    assert stats["subscriptions"] == 0 and stats["shard_channels"] == 0  # cleaned up
    assert stats["reconnects"] == 0


# -- a slot move while a heartbeat PING is in flight ------------------------------------------


async def test_slot_move_with_a_heartbeat_ping_in_flight(two_primaries, mpx_factory) -> None:
    cluster = two_primaries
    a, b = cluster.nodes  # A has the lower config epoch: B keeps the slots it gets
    x, y = names_on(slot_owners(cluster, ask=a), a, "hb", 2)
    slot = key_slot(x)
    interval, timeout = 0.3, 5.0
    mpx = mpx_factory(cluster.url, health_check_interval=interval, health_check_timeout=timeout)
    m_rec, y_rec = Recorder("M"), Recorder("Y")
    mpx.new_channel_subscription(*m_rec.callbacks).add(x)
    mpx.new_channel_subscription(*y_rec.callbacks).add(y)
    await m_rec.activated(x)
    await y_rec.activated(y)
    link = link_to(mpx, a)
    loop = asyncio.get_running_loop()
    pings: list[float] = []
    send_ping = link.send_ping

    def recording_ping() -> None:  # the heartbeat's PING, timed
        pings.append(loop.time())
        send_ping()

    link.send_ping = recording_ping  # type: ignore[method-assign]

    # Messages on y keep the heartbeat quiet (it pings after an interval of silence).
    sent: list[str] = []
    quiet = asyncio.Event()

    async def chatter() -> None:
        while not quiet.is_set():
            sent.append(str(len(sent)))
            assert await mpx.publish(y, sent[-1]) == 1
            await asyncio.sleep(interval / 6)

    task = asyncio.create_task(chatter())
    await y_rec.received(3)
    if pings:  # a stalled set-up let it ping: wait until it is back to ticking
        await asyncio.sleep(pings[-1] + timeout + 2 * interval - loop.time())
    quiet.set()
    await task
    await y_rec.received(len(sent))
    before = len(pings)
    # A falls silent now: its next PING goes out while A sleeps, queued behind the move.
    moved = await stall_then(a, 1.5, ("CLUSTER", "SETSLOT", slot, "NODE", b.node_id))
    await b.acommand("CLUSTER", "SETSLOT", slot, "NODE", b.node_id)
    assert await moved == [b"OK", b"OK"]
    assert len(pings) > before, "no heartbeat PING went out while A slept"

    # Only M is told, once; x comes back on B and delivers each message once.
    await m_rec.activated(x, count=2, timeout=10)
    await received_once(mpx, m_rec, x, "after the move")
    assert shard_subscribers(b, x) == 1 and shard_subscribers(a, x) == 0
    assert len(m_rec.disconnects) == 1
    # Y, whose slot never moved, hears nothing and misses nothing.
    await received_once(mpx, y_rec, y, "after")
    assert y_rec.disconnects == []
    assert y_rec.activations == [y.encode()]
    assert [d.decode() for c, d in y_rec.messages][: len(sent)] == sent
    stats = mpx.stats()
    assert stats["reconnects"] == 0
    assert stats["connects"] == 2  # A, and B since x moved there


# -- a channel removed while its slot moves ---------------------------------------------------


async def remove_during_move(
    cluster: RedisCluster,
    mpx: ClusterMultiplexer,
    caplog: pytest.LogCaptureFixture,
    prefix: str,
    *,
    queued: bool,
) -> tuple[Recorder, Recorder, Recorder, list[str], int]:
    """M holds x and Y holds y, both on A; M removes x while x's slot moves to B.

    A then sends the push ``sunsubscribe x`` and ``-MOVED`` for our SUNSUBSCRIBE x. Z adds z
    (a third slot of A): with ``queued`` in the same turn as the removal (its SSUBSCRIBE is
    pending behind the SUNSUBSCRIBE), else once the MOVED was read. Returns the recorders,
    the names and the ``slot_moves`` count before the move.
    """
    caplog.set_level(logging.DEBUG, logger="redismpx")
    a, b = cluster.nodes  # A has the lower config epoch: B keeps the slots it gets
    names = names_on(slot_owners(cluster, ask=a), a, prefix, 3)
    x, y, z = names
    slot = key_slot(x)
    m_rec, y_rec, z_rec = Recorder("M"), Recorder("Y"), Recorder("Z")
    m = mpx.new_channel_subscription(*m_rec.callbacks)
    m.add(x)
    mpx.new_channel_subscription(*y_rec.callbacks).add(y)
    await m_rec.activated(x)
    await y_rec.activated(y)
    await received_once(mpx, y_rec, y, "before")

    def moved_read() -> bool:  # logged by the multiplexer (no event exists for it)
        return any(f"MOVED {slot} " in r.getMessage() for r in caplog.records)

    refused = rejected_calls(a, "sunsubscribe")
    slot_moves = mpx.stats()["slot_moves"]
    moving = await stall_then(a, 1.5, ("CLUSTER", "SETSLOT", slot, "NODE", b.node_id))
    m.remove(x)
    if queued:
        mpx.new_channel_subscription(*z_rec.callbacks).add(z)
    await b.acommand("CLUSTER", "SETSLOT", slot, "NODE", b.node_id)
    assert await moving == [b"OK", b"OK"]
    if not queued:
        async with asyncio.timeout(5):
            while not moved_read():
                await asyncio.sleep(0.01)
        mpx.new_channel_subscription(*z_rec.callbacks).add(z)
    # z's acknowledgement comes after the MOVED (Redis answers in order): a barrier.
    await z_rec.activated(z, timeout=10)
    assert rejected_calls(a, "sunsubscribe") == refused + 1, "no MOVED for the SUNSUBSCRIBE"
    return m_rec, y_rec, z_rec, names, slot_moves


async def test_remove_while_its_slot_moves_tells_nobody(
    two_primaries, mpx_factory, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = two_primaries
    a, b = cluster.nodes
    mpx = mpx_factory(cluster.url)
    m_rec, y_rec, z_rec, (x, y, _), _ = await remove_during_move(
        cluster, mpx, caplog, "rm", queued=False
    )

    # x was being removed: nobody hears anything, and the node link stays up.
    assert y_rec.disconnects == []
    assert m_rec.disconnects == [] and z_rec.disconnects == []
    assert mpx.stats()["reconnects"] == 0
    await received_once(mpx, y_rec, y, "after")
    assert y_rec.activations == [y.encode()]
    assert shard_subscribers(a, x) == 0 and shard_subscribers(b, x) == 0
    assert mpx.stats()["shard_channels"] == 2  # y and z


async def test_remove_while_its_slot_moves_with_a_subscribe_queued_behind(
    two_primaries, mpx_factory, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = two_primaries
    a = cluster.nodes[0]
    mpx = mpx_factory(cluster.url)
    _, _, z_rec, (_, _, z), slot_moves = await remove_during_move(
        cluster, mpx, caplog, "rq", queued=True
    )

    # The MOVED answered the SUNSUBSCRIBE, not the SSUBSCRIBE z queued behind it: z was
    # confirmed by A at once, never sent to B and back.
    stats = mpx.stats()
    assert stats["redirects"] == 0
    assert stats["slot_moves"] == slot_moves
    assert z_rec.activations == [z.encode()] and z_rec.disconnects == []
    await received_once(mpx, z_rec, z, "z")
    assert shard_subscribers(a, z) == 1


async def test_a_failing_topology_read_is_logged_once_not_per_retry(
    cluster: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Stands in for a bug of ours inside the topology read: the refresh loop must survive it
    # and log its traceback once, not once per backoff retry.
    calls = 0
    again = asyncio.Event()

    async def broken(self: Topology) -> None:
        nonlocal calls
        calls += 1
        again.set()
        raise RuntimeError("topology bug")

    monkeypatch.setattr(Topology, "_fetch", broken)
    with watch_log("redismpx") as log:
        mpx = ClusterMultiplexer(cluster.url, backoff_base=0.001, backoff_cap=0.005)
        try:
            await mpx.__aenter__()
            async with asyncio.timeout(10):
                while calls < 6:
                    again.clear()
                    await again.wait()
        finally:
            await mpx.aclose()
    assert log.count("cluster topology refresh failed", logging.ERROR) == 1
    assert log.count("cluster topology refresh failed again", logging.DEBUG) >= 4
