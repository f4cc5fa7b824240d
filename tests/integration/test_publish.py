"""``Multiplexer.publish`` against real servers: what a publisher can rely on.

The receivers Redis counts, payloads byte for byte, argument checks; a command connection of
its own, opened at the first publish, pipelined per loop turn; and through outages: waiting
for the connection (then ``PublishTimeout(sent=False)``: nothing published), a stalled
server (``PublishTimeout(sent=True)``), a server killed with replies outstanding
(``ConnectionLost``), cancellation before the write, closing, errors, TLS and ACLs.

Where a test must know that a publish did or did not go out, a subscriber on another
multiplexer counts what arrives and the server's own ``commandstats`` count what ran. To hold
a publisher's connection down while the subscriber is up, the publisher goes through a
:class:`~support.faultproxy.FaultProxy` that refuses new connections.
"""

from __future__ import annotations

import asyncio
import math
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from redismpx import (
    ConnectionLost,
    HeartbeatTimeout,
    InvalidArgument,
    InvalidArgumentType,
    Multiplexer,
    PublishTimeout,
    ServerError,
    SubscriptionClosed,
)
from redismpx.server import RedisServer
from support.internals import replies_awaited, router_of
from support.recorder import Recorder
from support.stalls import debug_sleep

pytestmark = pytest.mark.timeout(60)


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture
async def made() -> AsyncIterator[Callable[..., Multiplexer]]:
    """``made(url, **options)``: a Multiplexer closed after the test."""
    mpxs: list[Multiplexer] = []

    def factory(url: str | None = None, **options: Any) -> Multiplexer:
        m = Multiplexer(url, **options)
        mpxs.append(m)
        return m

    yield factory
    for m in mpxs:
        await m.aclose()


async def subscriber(
    made: Callable[..., Multiplexer], url: str, *channels: str, name: str = "sub"
) -> Recorder:
    """A Recorder subscribed to ``channels`` on a multiplexer of its own, once active."""
    rec = Recorder(name)
    made(url).new_channel_subscription(*rec.callbacks).add(*channels)
    await rec.activated(*channels)
    return rec


async def eventually(predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll a cheap predicate about state no event reports (server counters, a proxy's
    connection attempts), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


async def clients_named(server: RedisServer, name: str) -> list[dict[str, str]]:
    """``CLIENT LIST`` entries of the connections named ``name``, as field dicts."""
    text = await server.acommand("CLIENT", "LIST", decode=True)
    entries = [
        dict(f.split("=", 1) for f in line.split() if "=" in f) for line in text.splitlines()
    ]
    return [e for e in entries if e.get("name") == name]


def is_pubsub(client: dict[str, str]) -> bool:
    return "P" in client["flags"] or any(int(client.get(k, "0")) for k in ("sub", "psub", "ssub"))


async def command_calls(server: RedisServer, command: str) -> int:
    """How often the server ran ``command`` since it started (or ``CONFIG RESETSTAT``)."""
    text = await server.acommand("INFO", "commandstats", decode=True)
    for line in text.splitlines():
        if line.startswith(f"cmdstat_{command}:"):
            fields = dict(f.split("=", 1) for f in line.split(":", 1)[1].split(","))
            return int(fields["calls"])
    return 0


async def publisher_noticed_the_outage(m: Multiplexer) -> None:
    """Wait until the command side has let go of its broken connection, so that the
    publishes a test makes next wait for a new one (a publish made while the old one is
    being torn down is the subject of its own test)."""
    await eventually(lambda: router_of(m).commands.conn is None, "the publisher noticing")


def messages_on(rec: Recorder, channel: str) -> list[bytes]:
    return [data for ch, data in rec.messages if ch == channel.encode()]


async def until_received(rec: Recorder, channel: str, data: str | bytes) -> None:
    want = (channel.encode(), data.encode() if isinstance(data, str) else data)
    await rec.wait_until(lambda: want in rec.messages, what=repr(want))


# -- the contract: receivers, payloads, arguments ---------------------------------------------


@pytest.mark.parametrize("protocol", [3, 2], ids=["resp3", "resp2"])
async def test_publish_returns_the_receivers_redis_counts(redis_server, made, protocol) -> None:
    m = made(redis_server.url, protocol=protocol)
    assert await m.publish("room", "nobody") == 0
    first, second = Recorder("first"), Recorder("second")
    m.new_channel_subscription(*first.callbacks).add("room")
    m.new_channel_subscription(*second.callbacks).add("room")
    await first.activated("room")
    await second.activated("room")
    # Redis counts connections: two subscriptions of one multiplexer are one receiver.
    assert await m.publish("room", "one") == 1
    other = await subscriber(made, redis_server.url, "room", name="other")
    assert await m.publish("room", "two") == 2
    pattern = Recorder("pattern")
    m.new_pattern_subscription("ro*", *pattern.callbacks)
    await pattern.activated("ro*")
    assert await m.publish("room", "three") == 3  # a matching pattern counts too
    await until_received(pattern, "room", "three")
    await until_received(other, "room", "three")
    await until_received(first, "room", "three")
    assert messages_on(first, "room") == [b"one", b"two", b"three"]
    assert messages_on(second, "room") == [b"one", b"two", b"three"]
    assert messages_on(other, "room") == [b"two", b"three"]


async def test_payloads_arrive_byte_for_byte(redis_server, made) -> None:
    rec = await subscriber(made, redis_server.url, "chan\u2603")
    payloads: list[str | bytes] = [
        "h\u00e9llo \u2603 \U0001f600",  # str: UTF-8
        bytes(range(256)) * 4,  # every byte value, CRLF and NUL included
        b"",
        "",
        b"*1\r\n$4\r\nPING\r\n",  # looks like a command: must stay data
        b"x" * (1 << 20),  # 1 MiB
    ]
    pub = made(redis_server.url)
    for i, data in enumerate(payloads):
        # the channel as str or as its UTF-8 bytes: the same channel
        channel: str | bytes = "chan\u2603" if i % 2 else "chan\u2603".encode()
        assert await pub.publish(channel, data) == 1
    await rec.received(len(payloads))
    want = [p.encode() if isinstance(p, str) else p for p in payloads]
    assert messages_on(rec, "chan\u2603") == want


BAD_ARGUMENTS = [
    pytest.param((42, "d"), {}, InvalidArgumentType, id="channel-int"),
    pytest.param((None, "d"), {}, InvalidArgumentType, id="channel-none"),
    pytest.param((["c"], "d"), {}, InvalidArgumentType, id="channel-list"),
    pytest.param(("c", 42), {}, InvalidArgumentType, id="data-int"),
    pytest.param(("c", None), {}, InvalidArgumentType, id="data-none"),
    pytest.param(("c", 1.5), {}, InvalidArgumentType, id="data-float"),
    pytest.param(("c", {"a": 1}), {}, InvalidArgumentType, id="data-dict"),
    pytest.param(("\ud800", "d"), {}, InvalidArgument, id="channel-lone-surrogate"),
    pytest.param(("c", "\udfff"), {}, InvalidArgument, id="data-lone-surrogate"),
    pytest.param(("c", "d"), {"timeout": 0}, InvalidArgument, id="timeout-zero"),
    pytest.param(("c", "d"), {"timeout": -1}, InvalidArgument, id="timeout-negative"),
    pytest.param(("c", "d"), {"timeout": math.nan}, InvalidArgument, id="timeout-nan"),
    pytest.param(("c", "d"), {"timeout": "1"}, InvalidArgumentType, id="timeout-str"),
    pytest.param(("c", "d"), {"timeout": True}, InvalidArgumentType, id="timeout-bool"),
    pytest.param(("c", "d"), {"sharded": "yes"}, InvalidArgumentType, id="sharded-str"),
    pytest.param(("c", "d"), {"sharded": 1}, InvalidArgumentType, id="sharded-int"),
]


@pytest.mark.parametrize(("args", "kwargs", "error"), BAD_ARGUMENTS)
async def test_bad_arguments_are_refused_before_anything_is_sent(
    redis_server, made, args, kwargs, error
) -> None:
    m = made(redis_server.url, client_name="badargs")
    with pytest.raises(error):
        await m.publish(*args, **kwargs)
    assert issubclass(InvalidArgumentType, TypeError) and issubclass(InvalidArgument, ValueError)
    stats = m.stats()
    assert (stats["publish_connects"], stats["published"]) == (0, 0)
    assert not any(not is_pubsub(c) for c in await clients_named(redis_server, "badargs"))
    assert await command_calls(redis_server, "publish") == 0


async def test_sharded_publishes_reach_shard_channel_subscribers(redis_server, made) -> None:
    m = made(redis_server.url)
    classic, shard = Recorder("classic"), Recorder("shard")
    m.new_channel_subscription(*classic.callbacks).add("s")
    m.new_channel_subscription(*shard.callbacks, sharded=True).add("s")
    await classic.activated("s")
    await shard.activated("s")
    assert await m.publish("s", "to-shard", sharded=True) == 1
    assert await m.publish("s", "to-classic") == 1
    # One connection, answered in order: once the second arrived, a misrouted first would have.
    await until_received(classic, "s", "to-classic")
    await until_received(shard, "s", "to-shard")
    assert classic.messages == [(b"s", b"to-classic")]
    assert shard.messages == [(b"s", b"to-shard")]
    assert await command_calls(redis_server, "spublish") == 1
    assert await command_calls(redis_server, "publish") == 1


# -- the command connection -------------------------------------------------------------------


async def test_publishing_uses_its_own_connection_opened_at_the_first_publish(
    redis_server, made
) -> None:
    m = made(redis_server.url, client_name="own-conn")
    rec = Recorder()
    m.new_channel_subscription(*rec.callbacks).add("c")
    await rec.activated("c")
    [only] = await clients_named(redis_server, "own-conn")
    assert is_pubsub(only)
    assert m.stats()["publish_connects"] == 0  # nothing opened before the first publish
    for i in range(3):
        assert await m.publish("c", str(i)) == 1
    await rec.received(3)
    clients = await clients_named(redis_server, "own-conn")
    assert len(clients) == 2, clients
    [sub] = [c for c in clients if is_pubsub(c)]
    [pub] = [c for c in clients if not is_pubsub(c)]
    assert sub["id"] == only["id"]  # the subscriber connection is the same one, untouched
    assert sub["cmd"] != "publish"
    assert pub["cmd"] == "publish"
    assert m.stats()["publish_connects"] == 1  # kept: one connection for all three
    assert m.stats()["published"] == 3
    assert m.stats()["reconnects"] == 0


async def test_the_publishes_of_one_loop_turn_go_out_in_one_write(redis_server, made) -> None:
    rec = await subscriber(made, redis_server.url, "c")
    pub = made(redis_server.url)
    assert await pub.publish("c", "open") == 1
    # A spy on the real socket transport (the bytes still go to the real server): the one
    # observation of "how many writes" there is.
    conn = router_of(pub).commands.conn
    assert conn is not None
    transport = conn._transport
    writes: list[int] = []
    real_write = transport.write

    def counting_write(data: bytes) -> None:
        writes.append(len(data))
        real_write(data)

    transport.write = counting_write
    try:
        replies = await asyncio.gather(*(pub.publish("c", f"m{i}") for i in range(1000)))
    finally:
        del transport.write
    assert replies == [1] * 1000
    assert len(writes) == 1, f"1000 publishes of one loop turn took {len(writes)} writes"
    await rec.received(1001)
    assert messages_on(rec, "c") == [b"open"] + [f"m{i}".encode() for i in range(1000)]


@pytest.mark.parametrize("protocol", [3, 2], ids=["resp3", "resp2"])
async def test_a_thousand_concurrent_publishes_arrive_once_in_order_per_publisher(
    redis_server, made, protocol
) -> None:
    rec = await subscriber(made, redis_server.url, "c")
    pub = made(redis_server.url, protocol=protocol)
    publishers, each = 10, 100

    async def publisher(p: int) -> list[int]:
        if p % 2:  # one after the other
            return [await pub.publish("c", f"{p}:{i}") for i in range(each)]
        # all at once, in order, without waiting for one before the next
        return list(await asyncio.gather(*(pub.publish("c", f"{p}:{i}") for i in range(each))))

    results = await asyncio.gather(*(publisher(p) for p in range(publishers)))
    assert results == [[1] * each] * publishers
    assert await pub.publish("c", "end") == 1
    await until_received(rec, "c", "end")
    got = messages_on(rec, "c")
    assert len(got) == publishers * each + 1
    assert got[-1] == b"end"
    counts = Counter(got[:-1])
    assert set(counts.values()) == {1}  # each exactly once
    for p in range(publishers):
        seqs = [int(d.split(b":")[1]) for d in got[:-1] if d.split(b":")[0] == str(p).encode()]
        assert seqs == list(range(each)), f"publisher {p} out of order or incomplete"
    assert await command_calls(redis_server, "publish") == publishers * each + 1
    assert pub.stats()["publish_connects"] == 1


async def test_ping_publishes_over_the_command_connection(redis_server, made) -> None:
    m = made(redis_server.url, client_name="pinger")
    rtt = await m.ping(timeout=5)
    assert 0 <= rtt < 5
    # two connections: the subscriber one (the probe's subscription is gone) and the one
    # that published the probe
    clients = await clients_named(redis_server, "pinger")
    assert len(clients) == 2, clients
    [pub] = [c for c in clients if c["cmd"] == "publish"]
    assert await command_calls(redis_server, "publish") == 1
    assert m.stats()["publish_connects"] == 1
    assert await m.publish("nobody", "x") == 0
    assert await m.ping(timeout=5) >= 0
    # the same connection for pings and publishes
    [again] = [c for c in await clients_named(redis_server, "pinger") if c["cmd"] == "publish"]
    assert again["id"] == pub["id"]
    stats = m.stats()
    assert stats["publish_connects"] == 1
    # ``published`` counts what was published: two probes and one message
    assert stats["published"] == await command_calls(redis_server, "publish") == 3


async def test_a_silent_command_connection_is_dropped_by_its_heartbeat(
    redis_server, made, fault_proxy
) -> None:
    proxy = await fault_proxy(redis_server.port)
    pub = made(proxy.url, health_check_interval=0.2, health_check_timeout=0.3)
    assert await pub.publish("c", "open") == 0
    proxy.stall()
    loop = asyncio.get_running_loop()
    stalled = loop.time()
    # No timeout of its own: the heartbeat is what ends the wait.
    with pytest.raises(ConnectionLost) as caught:
        await asyncio.wait_for(pub.publish("c", "held", timeout=None), 10)
    assert loop.time() - stalled < 2 * 0.2 + 0.3 + 2.5  # slack for a loaded machine
    assert isinstance(caught.value, HeartbeatTimeout), repr(caught.value)
    proxy.resume()
    assert await pub.publish("c", "after") == 0
    assert pub.stats()["publish_connects"] == 2


# -- outages ----------------------------------------------------------------------------------


async def test_publishes_waiting_through_a_server_restart_go_out_once_it_is_back(
    redis_server, made, fault_proxy
) -> None:
    # The publisher reaches the server through a proxy, the subscriber directly: after the
    # restart the proxy refuses until the subscriber is back, so every publish that waited
    # must reach it.
    proxy = await fault_proxy(redis_server.port)
    sub = made(redis_server.url)
    rec = Recorder()
    sub.new_channel_subscription(*rec.callbacks).add("c")
    await rec.activated("c")
    pub = made(proxy.url, backoff_cap=0.1)
    assert await pub.publish("c", "before") == 1
    # Redis may reply to the publisher before it has written the message to the subscriber:
    # a kill right after the reply could lose it (flaky under load).
    await until_received(rec, "c", "before")
    await redis_server.akill(signal.SIGKILL)
    await rec.disconnected(1)
    proxy.refuse(True)
    await publisher_noticed_the_outage(pub)
    attempts = proxy.accepted
    tasks = [asyncio.create_task(pub.publish("c", f"w{i}", timeout=30)) for i in range(20)]
    await eventually(lambda: proxy.accepted >= attempts + 2, "the publisher dialling again")
    await redis_server.arestart()
    await rec.activated("c", count=2)
    assert not any(t.done() for t in tasks)  # they wait for the connection
    proxy.refuse(False)
    async with asyncio.timeout(10):
        assert await asyncio.gather(*tasks) == [1] * 20
    assert await pub.publish("c", "after") == 1
    await until_received(rec, "c", "after")
    assert messages_on(rec, "c") == [b"before"] + [f"w{i}".encode() for i in range(20)] + [b"after"]
    assert await command_calls(redis_server, "publish") == 21  # since the restart: once each
    assert pub.stats()["publish_connects"] == 2


async def test_publishes_through_a_restart_run_exactly_once(redis_server, made) -> None:
    # Publisher and subscriber on one multiplexer: whichever reconnects first, every
    # publish runs once on the server and a subscriber counted by it got it once.
    m = made(redis_server.url, backoff_cap=0.1)
    rec = Recorder()
    m.new_channel_subscription(*rec.callbacks).add("c")
    await rec.activated("c")
    assert await m.publish("c", "open") == 1
    # Received before the kill: the server writes the subscriber's copy a moment after the
    # publisher's reply, and a SIGKILL in between loses it (seen once on a busy CI).
    await until_received(rec, "c", "open")
    await redis_server.akill(signal.SIGKILL)
    await rec.disconnected(1)
    await publisher_noticed_the_outage(m)
    tasks = [asyncio.create_task(m.publish("c", f"w{i}", timeout=30)) for i in range(50)]
    await redis_server.arestart()
    async with asyncio.timeout(10):
        counted = await asyncio.gather(*tasks)
    await rec.activated("c", count=2)
    assert await m.publish("c", "end") == 1
    await until_received(rec, "c", "end")
    assert set(counted) <= {0, 1}
    got = messages_on(rec, "c")
    want = [b"open"] + [f"w{i}".encode() for i, n in enumerate(counted) if n == 1] + [b"end"]
    assert got == want
    assert await command_calls(redis_server, "publish") == 50 + 1


async def test_a_publish_while_down_times_out_unsent_and_never_goes_out(
    redis_server, made, fault_proxy
) -> None:
    rec = await subscriber(made, redis_server.url, "c")
    proxy = await fault_proxy(redis_server.port)
    proxy.refuse(True)
    pub = made(proxy.url, backoff_cap=0.1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(PublishTimeout) as caught:
        await pub.publish("c", "lost", timeout=0.5)
    elapsed = loop.time() - started
    assert 0.5 <= elapsed < 2.0
    assert caught.value.sent is False
    assert isinstance(caught.value, TimeoutError)
    assert "not sent" in str(caught.value) and "last error" in str(caught.value)
    assert pub.stats()["published"] == 0
    proxy.refuse(False)
    assert await pub.publish("c", "marker") == 1
    await until_received(rec, "c", "marker")
    assert messages_on(rec, "c") == [b"marker"]  # the timed-out one was dropped, not queued
    assert await command_calls(redis_server, "publish") == 1


async def test_the_publisher_redials_with_the_backoff(redis_server, made, fault_proxy) -> None:
    proxy = await fault_proxy(redis_server.port)
    pub = made(proxy.url, backoff_base=0.01, backoff_cap=0.2)
    await pub.wait_connected(5)  # the subscriber connection, which stays up
    proxy.refuse(True)  # new connections only: from now on every attempt is the publisher's
    before = proxy.accepted
    with pytest.raises(PublishTimeout) as caught:
        await pub.publish("c", "x", timeout=1.0)
    assert caught.value.sent is False
    attempts = proxy.accepted - before
    # It retried, and not in a hot loop (full jitter under a 0.2 s cap: about 10 a second).
    assert 2 <= attempts < 30, attempts
    proxy.refuse(False)
    assert await pub.publish("c", "y") == 0
    assert pub.stats()["publish_connects"] == 1


@pytest.mark.parametrize("stall", ["debug-sleep", "sigstop"])
async def test_a_stalled_server_times_out_with_sent_true(redis_server, made, stall) -> None:
    rec = await subscriber(made, redis_server.url, "c")
    pub = made(redis_server.url, health_check_interval=30, health_check_timeout=30)
    assert await pub.publish("c", "open") == 1
    sleeper = None
    if stall == "sigstop":
        redis_server.pause()
    else:
        sleeper = await debug_sleep(redis_server, 2.0)
    try:
        outcomes = await asyncio.gather(
            *(pub.publish("c", f"s{i}", timeout=0.3) for i in range(50)), return_exceptions=True
        )
        # They timed out while the server was stalled, not when it came back.
        assert sleeper is None or not sleeper.done()
    finally:
        if stall == "sigstop":
            redis_server.resume()
    if sleeper is not None:
        await sleeper
    for outcome in outcomes:
        assert isinstance(outcome, PublishTimeout), repr(outcome)
        assert outcome.sent is True
        assert "may or may not" in str(outcome)
    # They were written: the server runs them when it wakes, each once.
    await rec.received(51)
    # The late replies are not mistaken for the next publishes' replies.
    assert await pub.publish("nobody", "x") == 0
    assert await pub.publish("c", "after") == 1
    await until_received(rec, "c", "after")
    assert messages_on(rec, "c") == [b"open"] + [f"s{i}".encode() for i in range(50)] + [b"after"]
    assert pub.stats()["publish_connects"] == 1


async def test_a_server_killed_with_replies_outstanding_raises_connection_lost(
    redis_server, made
) -> None:
    pub = made(redis_server.url, health_check_interval=30, health_check_timeout=30)
    assert await pub.publish("c", "open") == 0
    redis_server.pause()
    tasks = [asyncio.create_task(pub.publish("c", f"k{i}", timeout=30)) for i in range(10)]
    await eventually(lambda: replies_awaited(pub) == 10, "the publishes being written")
    await redis_server.akill(signal.SIGKILL)
    async with asyncio.timeout(5):
        outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        assert isinstance(outcome, ConnectionLost), repr(outcome)
        assert not isinstance(outcome, HeartbeatTimeout)
    # The caller decides to retry: the next publish dials again.
    await redis_server.arestart()
    assert await pub.publish("c", "retried") == 0
    assert pub.stats()["publish_connects"] == 2


async def test_a_publish_made_as_the_connection_breaks_is_never_left_hanging(
    redis_server, made
) -> None:
    # A busy application publishes on every loop turn; the server drops the command
    # connection (CLIENT KILL) three times. Every publish must end: sent (and received once),
    # or failed with ConnectionLost, or sent on the next connection; none may wait forever.
    rec = await subscriber(made, redis_server.url, "c")
    pub = made(redis_server.url, client_name="breaking")
    assert await pub.publish("c", "open") == 1
    tasks: list[asyncio.Task[int]] = []
    stop = asyncio.Event()

    async def busy() -> None:
        while not stop.is_set():
            tasks.append(asyncio.create_task(pub.publish("c", str(len(tasks)), timeout=None)))
            await asyncio.sleep(0)  # one publish per loop turn

    spinner = asyncio.create_task(busy())
    try:
        for n in range(2, 5):
            await rec.received(len(rec.messages) + 20)
            clients = await clients_named(redis_server, "breaking")
            [conn] = [c for c in clients if c["cmd"] == "publish"]
            await redis_server.acommand("CLIENT", "KILL", "ID", conn["id"])
            await eventually(lambda n=n: pub.stats()["publish_connects"] == n, f"connection {n}")
        await rec.received(len(rec.messages) + 20)
    finally:
        stop.set()
        await spinner
    done, pending = await asyncio.wait(tasks, timeout=5)
    errors = [e for t in done if (e := t.exception()) is not None]
    hanging = [i for i, t in enumerate(tasks) if t in pending]  # task i published str(i)
    for task in pending:
        task.cancel()
    assert not hanging, f"{len(hanging)} of {len(tasks)} publishes never ended: {hanging}"
    for error in errors:
        assert isinstance(error, ConnectionLost), repr(error)
    assert await pub.publish("c", "end") == 1
    await until_received(rec, "c", "end")
    counts = Counter(messages_on(rec, "c"))
    assert set(counts.values()) == {1}
    returned_one = {str(i).encode() for i, t in enumerate(tasks) if t.exception() is None}
    assert returned_one <= set(counts)


# -- cancellation -----------------------------------------------------------------------------


async def test_a_publish_cancelled_before_its_write_is_not_sent(redis_server, made) -> None:
    rec = await subscriber(made, redis_server.url, "c")
    pub = made(redis_server.url)
    assert await pub.publish("c", "open") == 1
    task = asyncio.create_task(pub.publish("c", "cancelled"))
    await asyncio.sleep(0)  # one loop turn: the publish is queued; its write is due next turn
    assert not task.done()
    assert pub.stats()["published"] == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await pub.publish("c", "marker") == 1
    await until_received(rec, "c", "marker")
    assert messages_on(rec, "c") == [b"open", b"marker"]
    assert await command_calls(redis_server, "publish") == 2
    assert pub.stats()["published"] == 2


async def test_a_publish_cancelled_while_waiting_for_the_connection_is_not_sent(
    redis_server, made, fault_proxy
) -> None:
    rec = await subscriber(made, redis_server.url, "c")
    proxy = await fault_proxy(redis_server.port)
    proxy.refuse(True)
    pub = made(proxy.url, backoff_cap=0.05)
    task = asyncio.create_task(pub.publish("c", "cancelled", timeout=None))
    await eventually(lambda: proxy.accepted >= 3, "the publisher dialling")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    proxy.refuse(False)
    assert await pub.publish("c", "marker") == 1
    await until_received(rec, "c", "marker")
    assert messages_on(rec, "c") == [b"marker"]
    assert await command_calls(redis_server, "publish") == 1


# -- errors, credentials, TLS -----------------------------------------------------------------


async def test_a_channel_the_acl_denies_is_a_server_error_and_the_rest_goes_on(
    server_factory, made
) -> None:
    srv = server_factory()
    await srv.acommand("ACL", "SETUSER", "chat", "on", ">pw", "resetchannels", "&chat:*", "+@all")
    m = made(f"redis://chat:pw@127.0.0.1:{srv.port}")
    rec = Recorder()
    m.new_channel_subscription(*rec.callbacks).add("chat:1")
    await rec.activated("chat:1")
    # In one loop turn, so in one write: the refusal in the middle is matched to its caller.
    outcomes = await asyncio.gather(
        m.publish("chat:1", "a"),
        m.publish("admin:1", "denied"),
        m.publish("chat:1", "c"),
        return_exceptions=True,
    )
    assert outcomes[0] == 1 and outcomes[2] == 1, outcomes
    error = outcomes[1]
    assert isinstance(error, ServerError), repr(error)
    assert not isinstance(error, ConnectionLost)
    assert error.code == "NOPERM" and error.command == "PUBLISH"
    await rec.received(2)
    assert rec.messages == [(b"chat:1", b"a"), (b"chat:1", b"c")]
    assert m.stats()["publish_connects"] == 1  # an error reply does not cost the connection


async def test_a_user_without_publish_permission_gets_noperm(server_factory, made) -> None:
    srv = server_factory()
    await srv.acommand("ACL", "SETUSER", "reader", "on", ">pw", "allchannels", "+@all", "-publish")
    m = made(f"redis://reader:pw@127.0.0.1:{srv.port}")
    shard = Recorder()
    m.new_channel_subscription(*shard.callbacks, sharded=True).add("s")
    await shard.activated("s")
    with pytest.raises(ServerError) as caught:
        await m.publish("s", "x")
    assert caught.value.code == "NOPERM"
    assert "publish" in caught.value.reply.lower()
    # SPUBLISH is another command, which this user may run.
    assert await m.publish("s", "sharded", sharded=True) == 1
    await shard.received(1)
    assert shard.messages == [(b"s", b"sharded")]


async def test_the_publisher_authenticates_as_the_subscriber_does(server_factory, made) -> None:
    srv = server_factory()
    await srv.acommand("ACL", "SETUSER", "app", "on", ">app-secret-pw", "allchannels", "+@all")
    m = made(f"redis://app:app-secret-pw@127.0.0.1:{srv.port}/2", client_name="authed")
    rec = Recorder()
    m.new_channel_subscription(*rec.callbacks).add("c")
    await rec.activated("c")
    assert await m.publish("c", "x") == 1
    clients = await clients_named(srv, "authed")
    assert len(clients) == 2
    assert {c["user"] for c in clients} == {"app"}
    assert {c["db"] for c in clients} == {"2"}
    # Wrong credentials: nothing is sent, and the error tells why without the password.
    bad = made(f"redis://app:wrong-pw-1234@127.0.0.1:{srv.port}", backoff_cap=0.05)
    with pytest.raises(PublishTimeout) as caught:
        await bad.publish("c", "y", timeout=0.5)
    assert caught.value.sent is False
    assert "WRONGPASS" in str(caught.value)
    assert "wrong-pw-1234" not in str(caught.value)
    assert await command_calls(srv, "publish") == 1


async def test_publish_over_tls_presents_the_client_certificate(
    tls_binary, tls_certs, server_factory, made
) -> None:
    srv = server_factory(binary=tls_binary, tls=tls_certs.tls_config("yes"))
    url = f"rediss://localhost:{srv.port}"
    m = made(
        url,
        ssl_ca_certs=tls_certs.ca_file,
        ssl_certfile=tls_certs.client_cert_file,
        ssl_keyfile=tls_certs.client_key_file,
        client_name="tls-pub",
    )
    rec = Recorder()
    m.new_channel_subscription(*rec.callbacks).add("c")
    await rec.activated("c")
    assert await m.publish("c", "secure") == 1
    await rec.received(1)
    assert len(await clients_named(srv, "tls-pub")) == 2
    # Without the client certificate the server refuses: nothing is published.
    no_cert = made(url, ssl_ca_certs=tls_certs.ca_file, backoff_cap=0.05)
    with pytest.raises(PublishTimeout) as caught:
        await no_cert.publish("c", "x", timeout=1.0)
    assert caught.value.sent is False
    # Without the CA the server's certificate is not trusted.
    untrusting = made(url, backoff_cap=0.05)
    with pytest.raises(PublishTimeout) as caught:
        await untrusting.publish("c", "x", timeout=1.0)
    assert caught.value.sent is False
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)
    assert await command_calls(srv, "publish") == 1


async def test_publish_over_a_unix_socket(server_factory, made) -> None:
    srv = server_factory(unix_socket=True)
    m = made(srv.url)
    rec = Recorder()
    m.new_channel_subscription(*rec.callbacks).add("c")
    await rec.activated("c")
    assert await m.publish("c", "local") == 1
    await rec.received(1)
    assert m.stats()["publish_connects"] == 1


# -- closing ----------------------------------------------------------------------------------


def redismpx_leftovers(loop: asyncio.AbstractEventLoop) -> dict[str, list[Any]]:
    """Tasks, ready callbacks and timers of redismpx still alive in ``loop``."""

    def ours(handle: asyncio.Handle) -> bool:
        module = getattr(getattr(handle, "_callback", None), "__module__", None) or ""
        return module.startswith("redismpx") and not handle.cancelled()

    tasks = [
        t
        for t in asyncio.all_tasks(loop)
        if not t.done() and "/redismpx/" in t.get_coro().cr_code.co_filename
    ]
    ready = [h for h in getattr(loop, "_ready", ()) if ours(h)]
    timers = [h for h in getattr(loop, "_scheduled", ()) if ours(h)]
    return {"tasks": tasks, "callbacks": ready, "timers": timers}


@pytest.mark.parametrize("how", ["close", "aclose"])
@pytest.mark.parametrize("waiting", ["for-the-connection", "for-the-reply"])
async def test_closing_fails_the_waiting_publishes(redis_server, fault_proxy, waiting, how) -> None:
    proxy = await fault_proxy(redis_server.port)
    pub = Multiplexer(proxy.url, health_check_interval=30, health_check_timeout=30)
    try:
        if waiting == "for-the-reply":
            assert await pub.publish("c", "open") == 0
            proxy.stall()
        else:
            proxy.refuse(True)
        tasks = [asyncio.create_task(pub.publish("c", f"w{i}", timeout=None)) for i in range(5)]
        if waiting == "for-the-reply":
            await eventually(lambda: replies_awaited(pub) == 5, "the publishes written")
        else:
            await eventually(lambda: proxy.accepted >= 3, "the publisher dialling")
        assert not any(t.done() for t in tasks)
        if how == "close":
            pub.close()
        else:
            await pub.aclose()
        async with asyncio.timeout(5):
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for outcome in outcomes:
            assert isinstance(outcome, ConnectionLost), repr(outcome)
            # it was the multiplexer that closed, not the server
            assert "closed by the server" not in str(outcome), repr(outcome)
        with pytest.raises(SubscriptionClosed):
            await pub.publish("c", "late")
    finally:
        await pub.aclose()
        proxy.resume()
        proxy.refuse(False)
    assert redismpx_leftovers(asyncio.get_running_loop()) == {
        "tasks": [],
        "callbacks": [],
        "timers": [],
    }
    if waiting == "for-the-connection":
        assert await command_calls(redis_server, "publish") == 0


async def test_aclose_after_publishing_through_an_outage_leaves_nothing_behind(
    redis_server,
) -> None:
    pub = Multiplexer(redis_server.url, backoff_cap=0.1)
    try:
        rec = Recorder()
        pub.new_channel_subscription(*rec.callbacks).add("c")
        await rec.activated("c")
        assert await pub.publish("c", "before") == 1
        assert await pub.ping(timeout=5) >= 0
        await redis_server.akill(signal.SIGKILL)
        await rec.disconnected(1)
        with pytest.raises(PublishTimeout):
            await pub.publish("c", "down", timeout=0.2)
        waiting = asyncio.create_task(pub.publish("c", "waiting", timeout=None))
        await redis_server.arestart()
        assert await asyncio.wait_for(waiting, 10) in (0, 1)
        await rec.activated("c", count=2)
        assert await pub.publish("c", "after") == 1
    finally:
        await pub.aclose()
    assert redismpx_leftovers(asyncio.get_running_loop()) == {
        "tasks": [],
        "callbacks": [],
        "timers": [],
    }
    with pytest.raises(SubscriptionClosed):
        await pub.publish("c", "closed")
