"""History and recovery under faults, against a real standalone server: many recovering
subscriptions and channels at once, the queued and iterator paths, removal and closing in
the middle of a recovery read, raising callbacks, SCRIPT FLUSH, plain publications mixed in,
expiring histories, output-buffer kills and a slow network.

Two test-only tools reach inside the multiplexer (tests may): :class:`ReadGate` holds the
recovery reads of one multiplexer until told (so a test can act while a read is in flight),
and :class:`LatencyProxy` delays every chunk between the client and the server (so round
trips cost time and batching shows).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest

from redismpx import (
    Gap,
    InvalidArgument,
    InvalidArgumentType,
    Message,
    Multiplexer,
    Position,
    RedisMPXError,
)
from redismpx._envelope import envelope_channel, history_keys
from redismpx.server import RedisServer
from support.admin import Admin
from support.waiting import poll_until as until

pytestmark = pytest.mark.timeout(90)

#: The subscriber's reconnect pause: long enough to publish into the outage first.
OUTAGE = {"backoff_base": 0.3, "backoff_cap": 0.3}


class Received:
    """What one recovering callback subscription got, per channel."""

    def __init__(self) -> None:
        self.data: dict[Any, list[bytes]] = {}
        self.gaps: list[Gap[Any]] = []
        self.activations: dict[Any, int] = {}
        self.disconnects = 0

    def on_message(self, channel: Any, data: bytes) -> None:
        self.data.setdefault(channel, []).append(data)

    def on_gap(self, gap: Gap[Any]) -> None:
        self.gaps.append(gap)

    def on_activation(self, name: Any) -> None:
        self.activations[name] = self.activations.get(name, 0) + 1

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects += 1

    @property
    def callbacks(self) -> tuple[Callable[..., Any], ...]:
        return self.on_message, self.on_disconnect, self.on_activation

    def of(self, channel: Any) -> list[bytes]:
        return self.data.get(channel, [])

    def total(self) -> int:
        return sum(len(v) for v in self.data.values())


def numbers(n: int, start: int = 1) -> list[bytes]:
    return [str(i).encode() for i in range(start, start + n)]


async def publish_numbers(
    mpx: Multiplexer, channel: str | bytes, first: int, n: int, size: int = 10_000, **kw: Any
) -> None:
    for i in range(first, first + n):
        await mpx.publish(channel, str(i), history_size=size, **kw)


async def evals(admin: Admin) -> int:
    return await admin.calls("evalsha") + await admin.calls("eval")


async def until_unsubscribed(admin: Admin, names: Sequence[bytes]) -> None:
    async with asyncio.timeout(10):
        while (await admin.channels()) & set(names):
            await asyncio.sleep(0.01)


class ReadGate:
    """Holds the recovery reads of one multiplexer: ``before=True`` before they reach Redis,
    else after Redis answered (a slow reply). ``entered`` is set once one is held."""

    def __init__(self, mpx: Multiplexer, *, before: bool = True) -> None:
        self.reader = mpx._hub.history
        self.original = self.reader._read_all
        self.release = asyncio.Event()
        self.entered = asyncio.Event()
        self.held = 0

        async def gated(*args: Any) -> Any:
            self.held += 1
            self.entered.set()
            if before:
                await self.release.wait()
                return await self.original(*args)
            result = await self.original(*args)
            await self.release.wait()
            return result

        self.reader._read_all = gated  # type: ignore[method-assign]

    def remove(self) -> None:
        self.reader._read_all = self.original  # type: ignore[method-assign]
        self.release.set()


class LatencyProxy:
    """A TCP proxy to a server that delays every chunk by ``delay`` seconds each way (a long
    line, not a narrow one: chunks overlap in flight). Closing one side closes the other."""

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer)),
        ]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            writer.close()
            up_writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                at, data = await line.get()
                if at > loop.time():
                    await asyncio.sleep(at - loop.time())
                if not data:
                    return
                writer.write(data)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        try:
            with contextlib.suppress(OSError):
                while data := await reader.read(65536):
                    line.put_nowait((loop.time() + self.delay, data))
            line.put_nowait((loop.time() + self.delay, b""))
            with contextlib.suppress(OSError):
                await sender
        finally:
            sender.cancel()


class Rig:
    """A publisher on the server and a subscriber behind a fault proxy, for outages that
    last until the test ends them: :meth:`outage` kills the subscriber's Pub/Sub connection
    with ``CLIENT KILL`` and refuses its reconnection while the block runs."""

    def __init__(self, server: RedisServer, proxy: Any, admin: Admin) -> None:
        self.proxy = proxy
        self.admin = admin
        self.publisher = Multiplexer(server.url)
        self.subscriber = Multiplexer(proxy.url, backoff_base=0.01, backoff_cap=0.05)

    @contextlib.asynccontextmanager
    async def outage(self) -> AsyncIterator[None]:
        self.proxy.refuse(True)
        try:
            assert await self.admin.kill_pubsub() == 1
            await until(lambda: self.subscriber.state != "connected", "the outage")
            yield
        finally:
            self.proxy.refuse(False)

    async def close(self) -> None:
        await self.subscriber.aclose()
        await self.publisher.aclose()


@pytest.fixture
async def rig(
    redis_server: RedisServer, admin: Admin, fault_proxy: Callable[..., Awaitable[Any]]
) -> AsyncIterator[Rig]:
    r = Rig(redis_server, await fault_proxy(redis_server.port), admin)
    yield r
    await r.close()


# -- many subscriptions, many channels ----------------------------------------------------------


async def test_many_subscriptions_of_one_channel_share_one_read_per_outage(
    rig: Rig, admin: Admin
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    recs = [Received() for _ in range(25)]
    subs = [
        subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        for r in recs
    ]
    for sub in subs:
        sub.add("shared")
    for sub in subs:
        await sub.add("shared")
    await publish_numbers(publisher, "shared", 1, 10)
    await until(lambda: all(len(r.of(b"shared")) == 10 for r in recs), "10 each")
    for outage in range(1, 4):
        await admin.reset_stats()
        async with rig.outage():
            await publish_numbers(publisher, "shared", 10 * outage + 1, 10)
        assert all(r.disconnects == outage for r in recs)
        await until(
            lambda: all(r.activations[b"shared"] == outage + 1 for r in recs),  # noqa: B023
            "every subscription caught up",
        )
        # The 10 publishes, and one read for all 25 subscriptions.
        assert await evals(admin) == 11, f"outage {outage}"
    await until(lambda: all(len(r.of(b"shared")) == 40 for r in recs), "40 each")
    for r in recs:
        assert r.of(b"shared") == numbers(40) and r.gaps == []


async def test_subscriptions_at_different_positions_each_get_their_own_suffix(
    rig: Rig,
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    await publish_numbers(publisher, "mixed", 1, 30)
    recs = {since: Received() for since in (0, 5, 29, 30)}
    epoch = (await publisher.history("mixed", limit=1)).entries[0].position.epoch
    fresh = Received()
    for since, r in recs.items():
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        sub.add("mixed", since=Position(epoch, since))
    subscriber.new_channel_subscription(*fresh.callbacks, recover=True).add("mixed")
    await until(lambda: all(r.activations for r in [*recs.values(), fresh]), "caught up")
    await publish_numbers(publisher, "mixed", 31, 5)
    await until(lambda: len(recs[0].of(b"mixed")) == 35, "all 35")
    await until(lambda: len(fresh.of(b"mixed")) == 5, "the fresh one's 5")
    for since, r in recs.items():
        assert r.of(b"mixed") == numbers(35 - since, since + 1), since
        assert r.gaps == []
    assert fresh.of(b"mixed") == numbers(5, 31)  # from where it started, nothing older


async def test_a_thousand_channels_recover_in_batches_over_a_slow_line(
    redis_server: RedisServer, admin: Admin
) -> None:
    """1,500 recovering channels behind a 10 ms (each way) line: one read per channel and
    outage, pipelined, so recovering takes a few round trips, not 1,500 of them (30 s)."""
    n = 1500
    proxy = LatencyProxy(redis_server.port, 0.01)
    url = await proxy.start()
    publisher = Multiplexer(redis_server.url)
    subscriber = Multiplexer(url, backoff_base=0.5, backoff_cap=0.5)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        channels = [f"many:{i}".encode() for i in range(n)]
        async with asyncio.timeout(30):
            await sub.add(*channels)
        await asyncio.gather(*(publisher.publish(c, b"1", history_size=100) for c in channels))
        await until(lambda: r.total() == n, "the first message of each")
        reads = subscriber._hub.history.reads
        loop = asyncio.get_running_loop()
        assert await admin.kill_pubsub() == 1
        killed = loop.time()
        for i in (2, 3, 4):  # into the outage, pipelined
            await asyncio.gather(
                *(publisher.publish(c, str(i), history_size=100) for c in channels)
            )
        await until(lambda: all(r.activations[c] == 2 for c in channels), "all caught up", 20)
        took = loop.time() - killed
        await until(lambda: r.total() == 4 * n, "every message")
        assert all(r.of(c) == numbers(4) for c in channels)
        assert r.gaps == []
        assert subscriber._hub.history.reads - reads == n  # one read per channel
        # 0.5 s of backoff, then the resubscription and the reads, pipelined (each a round
        # trip of at least 20 ms: one by one they would take 30 s).
        print(f"\n{n} channels recovered {took:.2f} s after the kill (0.5 s of it backoff)")
        assert took < 15.0  # half the serial time: the reads were pipelined
    finally:
        await subscriber.aclose()
        await publisher.aclose()
        await proxy.close()


# -- delivery paths --------------------------------------------------------------------------------


async def test_async_callbacks_recover_exactly_once_in_order(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    got: list[bytes] = []
    activations: list[bytes] = []
    gaps: list[Gap[bytes]] = []

    async def on_message(channel: bytes, data: bytes) -> None:
        await asyncio.sleep(0)  # a real await: the queued path
        got.append(data)

    async def on_activation(name: bytes) -> None:
        activations.append(name)

    async def on_gap(gap: Gap[bytes]) -> None:
        gaps.append(gap)

    sub = subscriber.new_channel_subscription(
        on_message, None, on_activation, recover=True, on_gap=on_gap
    )
    await sub.add("queued")
    sent = 0
    for outage in range(1, 4):
        await publish_numbers(publisher, "queued", sent + 1, 20)
        sent += 20
        async with rig.outage():
            await publish_numbers(publisher, "queued", sent + 1, 20)
            sent += 20
        await until(lambda: len(activations) == outage + 1, "caught up")  # noqa: B023
        await until(lambda: len(got) >= sent, f"{sent} messages")  # noqa: B023
    assert got == numbers(sent) and gaps == []


async def test_decode_names_gives_str_channels_in_messages_and_gaps(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    channel = "café:{room}"
    sub = subscriber.new_channel_subscription(
        *r.callbacks, recover=True, on_gap=r.on_gap, decode_names=True
    )
    await sub.add(channel)
    await publisher.publish(channel, b"1", history_size=5)
    await until(lambda: r.of(channel) == [b"1"], "the first")
    async with rig.outage():
        await publish_numbers(publisher, channel, 2, 500, size=5)  # far more than it keeps
    await until(lambda: bool(r.gaps) and r.of(channel)[-1] == b"501", "the gap and the end")
    assert list(r.data) == [channel] and list(r.activations) == [channel]
    (gap,) = r.gaps
    assert isinstance(gap.channel, str) and gap.channel == channel
    assert gap.reason == "trimmed" and gap.since is not None and gap.since.offset == 1
    assert sub.position(channel) == sub.position(channel.encode())


async def test_a_recovering_iterator_across_kills(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    got: list[bytes] = []
    kinds: list[str] = []
    async with subscriber.subscribe("iter", recover=True) as sub:

        async def consume() -> None:
            async for event in sub.events():
                kinds.append(type(event).__name__)
                if isinstance(event, Message):
                    got.append(event.data)

        consumer = asyncio.create_task(consume())
        try:
            for outage in range(1, 4):
                await publish_numbers(publisher, "iter", 10 * outage + 1, 5)
                async with rig.outage():
                    await publish_numbers(publisher, "iter", 10 * outage + 6, 5)
                await until(lambda: kinds.count("Activated") == outage + 1, "caught up")  # noqa: B023
            await until(lambda: len(got) == 30, "30 messages")
        finally:
            consumer.cancel()
    expected = [str(10 * r + i).encode() for r in range(1, 4) for i in range(1, 11)]
    assert got == expected
    assert kinds.count("Disconnected") == 3 and "Gap" not in kinds


async def test_an_iterator_without_events_still_yields_only_messages(
    rig: Rig, admin: Admin
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    await publisher.publish("iter2", b"old", history_size=2)
    got: list[bytes] = []
    async with subscriber.subscribe("iter2", recover=True, since=Position("gone", 3)) as sub:
        await publisher.publish("iter2", b"new", history_size=2)
        async with asyncio.timeout(10):
            async for message in sub:
                got.append(message.data)
                if len(got) == 2:
                    break
    assert got == [b"old", b"new"]  # the gap is an event of events() only


# -- removing and closing during a read ------------------------------------------------------------


async def test_remove_during_the_recovery_read(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r, other = Received(), Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    keep = subscriber.new_channel_subscription(*other.callbacks, recover=True)
    await sub.add("leaving", "staying")
    await keep.add("staying")
    await publish_numbers(publisher, "leaving", 1, 3)
    await until(lambda: len(r.of(b"leaving")) == 3, "3 messages")
    gate = ReadGate(subscriber)
    async with rig.outage():
        await publish_numbers(publisher, "leaving", 4, 3)
    await asyncio.wait_for(gate.entered.wait(), 5)
    sub.remove("leaving")
    before = list(r.of(b"leaving"))
    gate.remove()
    await publish_numbers(publisher, "leaving", 7, 3)
    await publisher.publish("staying", b"s", history_size=10)
    await until(lambda: r.of(b"staying") == [b"s"] and other.of(b"staying") == [b"s"], "staying")
    assert r.of(b"leaving") == before == numbers(3)  # nothing after remove()
    assert sub.position("leaving") is None
    # Redis holds neither name of the removed channel; the other channel keeps both.
    await until_unsubscribed(admin, [b"leaving", envelope_channel(b"leaving")])
    assert {b"staying", envelope_channel(b"staying")} <= await admin.channels()


async def test_remove_and_add_again_during_the_read(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("again")
    await publish_numbers(publisher, "again", 1, 3)
    await until(lambda: len(r.of(b"again")) == 3, "3 messages")
    at = sub.position("again")
    assert at is not None and at.offset == 3
    gate = ReadGate(subscriber, before=False)  # the read is answered, the reply held
    async with rig.outage():
        await publish_numbers(publisher, "again", 4, 3)
    await asyncio.wait_for(gate.entered.wait(), 5)
    sub.remove("again")
    sub.add("again", since=at)  # the same channel, a new track: the old read is void
    gate.remove()
    await publish_numbers(publisher, "again", 7, 3)
    await until(lambda: len(r.of(b"again")) >= 9, "9 messages")
    await until(lambda: r.activations.get(b"again", 0) >= 2, "caught up again")
    assert r.activations == {b"again": 2}, r.activations  # the first, and the new track's
    assert r.of(b"again") == numbers(9) and r.gaps == []


async def test_close_during_the_read_delivers_nothing_more(
    rig: Rig, admin: Admin, caplog: pytest.LogCaptureFixture
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r, other = Received(), Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    keep = subscriber.new_channel_subscription(*other.callbacks, recover=True)
    await sub.add("closing")
    await keep.add("closing")
    await publish_numbers(publisher, "closing", 1, 2)
    await until(lambda: len(r.of(b"closing")) == 2 == len(other.of(b"closing")), "2 each")
    gate = ReadGate(subscriber, before=False)
    async with rig.outage():
        await publish_numbers(publisher, "closing", 3, 2)
    await asyncio.wait_for(gate.entered.wait(), 5)
    sub.close()
    gate.remove()
    await publish_numbers(publisher, "closing", 5, 2)
    await until(lambda: len(other.of(b"closing")) == 6, "the other subscription's 6")
    assert other.of(b"closing") == numbers(6)
    assert r.of(b"closing") == numbers(2) and r.activations == {b"closing": 1}
    assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]


async def test_aclose_during_the_read(redis_server: RedisServer, admin: Admin) -> None:
    subscriber = Multiplexer(redis_server.url)
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True)
    await sub.add("shutdown")
    gate = ReadGate(subscriber)
    assert await admin.kill_pubsub() == 1
    await asyncio.wait_for(gate.entered.wait(), 5)
    async with asyncio.timeout(5):
        await subscriber.aclose()  # the read task is waiting: closing must not hang
    gate.release.set()
    assert r.disconnects == 1
    await until_unsubscribed(admin, [b"shutdown", envelope_channel(b"shutdown")])


# -- errors ------------------------------------------------------------------------------------


async def test_a_raising_callback_does_not_disturb_the_others(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    good = Received()
    bad_got: list[bytes] = []

    def bad(channel: bytes, data: bytes) -> None:
        bad_got.append(data)
        if int(data) % 3 == 0:
            raise RuntimeError(f"boom on {data!r}")

    def bad_gap(gap: Gap[bytes]) -> None:
        raise RuntimeError("gap boom")

    sub = subscriber.new_channel_subscription(bad, recover=True, on_gap=bad_gap)
    ok = subscriber.new_channel_subscription(*good.callbacks, recover=True, on_gap=good.on_gap)
    await sub.add("raising", since=Position("gone", 5))  # a "lost" gap: on_gap raises
    await ok.add("raising")
    await publish_numbers(publisher, "raising", 1, 10)
    async with rig.outage():
        await publish_numbers(publisher, "raising", 11, 10)  # recovered: raises there too
    await until(lambda: len(good.of(b"raising")) == 20 and len(bad_got) == 20, "20 each")
    assert good.of(b"raising") == bad_got == numbers(20)
    assert subscriber.stats()["callback_errors"] == 7  # 3, 6, 9, 12, 15, 18 and the gap
    assert good.gaps == []
    await publish_numbers(publisher, "raising", 21, 3)  # still live after all that
    await until(lambda: len(bad_got) == 23, "live again")
    assert not sub.closed


async def test_script_flush_between_publishes_and_before_a_recovery(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("flushed")
    await publish_numbers(publisher, "flushed", 1, 3)
    await admin.reset_stats()
    await admin.client.script_flush()
    await publish_numbers(publisher, "flushed", 4, 3)
    assert await admin.calls("eval") == 1  # NOSCRIPT once, then EVALSHA again
    async with rig.outage():
        await admin.client.script_flush()
        await publish_numbers(publisher, "flushed", 7, 3)  # loads the publish script again
        await admin.client.script_flush()  # so the recovery read must load its own
        await admin.reset_stats()
    await until(lambda: r.activations.get(b"flushed") == 2, "caught up")
    assert await admin.calls("eval") == 1
    await until(lambda: len(r.of(b"flushed")) == 9, "9 messages")
    assert r.of(b"flushed") == numbers(9) and r.gaps == []
    h = await publisher.history("flushed", limit=100)
    assert [e.data for e in h.entries] == numbers(9)


# -- mixed traffic, repeated outages ----------------------------------------------------------


async def test_plain_and_history_publications_interleaved_across_repeated_kills(
    redis_server: RedisServer, admin: Admin
) -> None:
    publisher = Multiplexer(redis_server.url)
    subscriber = Multiplexer(redis_server.url)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        await sub.add("mix")
        stop = asyncio.Event()
        sent: list[bytes] = []
        plain: list[bytes] = []
        rng = random.Random(14)

        async def publish() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                if rng.random() < 0.4:
                    await admin.publish("mix", b"p%d" % i)
                    plain.append(b"p%d" % i)
                else:
                    await publisher.publish("mix", str(i), history_size=100_000)
                    sent.append(str(i).encode())
                await asyncio.sleep(0.0005)

        task = asyncio.create_task(publish())
        for kill in range(8):
            before = r.total()
            await until(lambda: r.total() > before + 30, "traffic between kills")  # noqa: B023
            assert await admin.kill_pubsub() == 1, kill
        stop.set()
        await task
        await until(lambda: r.activations.get(b"mix") == 9, "caught up after the last kill")
        await until(lambda: sent[-1] in r.of(b"mix"), "the last one with history")
        got = r.of(b"mix")
        assert [d for d in got if not d.startswith(b"p")] == sent  # each once, in order
        got_plain = [d for d in got if d.startswith(b"p")]
        assert len(got_plain) == len(set(got_plain))  # at most once
        assert set(got_plain) <= set(plain)
        assert r.gaps == []
        print(f"\nplain: {len(got_plain)} of {len(plain)} delivered (the rest during outages)")
    finally:
        await publisher.aclose()
        await subscriber.aclose()


async def test_an_expired_history_is_one_lost_gap(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("brief")
    await publish_numbers(publisher, "brief", 1, 3, history_ttl=60)
    await until(lambda: len(r.of(b"brief")) == 3, "3 messages")
    # Then the history expires (made to, now: a short TTL could also lapse between publishes).
    meta, log = history_keys(b"brief")
    await admin.client.pexpire(meta, 1)
    await admin.client.pexpire(log, 1)
    async with asyncio.timeout(5):
        while await admin.client.exists(meta, log):
            await asyncio.sleep(0.02)
    async with rig.outage():
        pass
    await until(lambda: r.activations.get(b"brief") == 2, "caught up")
    assert [g.reason for g in r.gaps] == ["lost"]
    assert r.gaps[0].channel == b"brief" and r.gaps[0].since is not None
    assert r.gaps[0].since.offset == 3
    # A new history starts: delivered from its first publication, with no second gap.
    await publish_numbers(publisher, "brief", 1, 2, history_ttl=60)
    await until(lambda: len(r.of(b"brief")) == 5, "the new history's 2")
    assert r.of(b"brief") == [b"1", b"2", b"3", b"1", b"2"]
    assert len(r.gaps) == 1
    async with rig.outage():  # and it recovers on the new history
        await publish_numbers(publisher, "brief", 3, 2, history_ttl=60)
    await until(lambda: len(r.of(b"brief")) == 7, "recovered on the new history")
    assert r.of(b"brief")[5:] == [b"3", b"4"] and len(r.gaps) == 1


async def test_an_output_buffer_kill_is_recovered(
    redis_server: RedisServer, admin: Admin, fault_proxy: Callable[..., Awaitable[Any]]
) -> None:
    """The server drops a subscriber that stops reading (client-output-buffer-limit): what
    its buffer held and what followed come back from the history."""
    await admin.client.config_set("client-output-buffer-limit", "pubsub 256kb 128kb 1")
    proxy = await fault_proxy(redis_server.port)
    publisher = Multiplexer(redis_server.url)
    subscriber = Multiplexer(proxy.url, **OUTAGE)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        await sub.add("obuf")
        await publish_numbers(publisher, "obuf", 1, 5)
        await until(lambda: len(r.of(b"obuf")) == 5, "5 messages")
        proxy.stall()
        pad = b"x" * 4096
        i = 5
        async with asyncio.timeout(20):
            while await admin.numsub("obuf") == 1:  # until the server drops it
                i += 1
                await publisher.publish("obuf", b"%d:%s" % (i, pad), history_size=100_000)
        proxy.resume()
        await publish_numbers(publisher, "obuf", i + 1, 5)
        last = i + 5
        await until(lambda: r.activations.get(b"obuf") == 2, "caught up", 20)
        await until(lambda: len(r.of(b"obuf")) == last, f"{last} messages", 20)
        got = [int(d.split(b":", 1)[0]) for d in r.of(b"obuf")]
        assert got == list(range(1, last + 1)) and r.gaps == []
    finally:
        await subscriber.aclose()
        await publisher.aclose()


# -- names and payloads ------------------------------------------------------------------------


async def test_binary_payloads_and_odd_names_recover_intact(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    names = [b"a:{b}:c", b"{}", b"\xff\x00\r\n", b"__redismpx:{x}:env:room", b"1:e:5:x"]
    payloads = [b"", b"1:e:5:p", b"\r\n", bytes(range(256)), b"x" * 1_000_000]
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add(*names)
    for name in names:
        await publisher.publish(name, payloads[0], history_size=10)
    await until(lambda: r.total() == len(names), "one each")
    async with rig.outage():
        for name in names:
            for p in payloads[1:]:
                await publisher.publish(name, p, history_size=10)
    await until(lambda: r.total() == len(names) * len(payloads), "all of them", 20)
    for name in names:
        assert r.of(name) == payloads, name
    assert r.gaps == []


async def test_since_from_history_then_outage_is_seamless(rig: Rig, admin: Admin) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    await publish_numbers(publisher, "page", 1, 10)
    backlog = await subscriber.history("page", limit=4)
    assert backlog.position is not None
    shown = [e.data for e in backlog.entries]
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await publish_numbers(publisher, "page", 11, 2)  # between the read and the subscribe
    await sub.add("page", since=backlog.position)
    async with rig.outage():
        await publish_numbers(publisher, "page", 13, 3)
    await until(lambda: r.activations.get(b"page") == 2, "caught up")
    await until(lambda: len(r.of(b"page")) == 5, "5 messages")
    assert shown == numbers(4, 7) and r.of(b"page") == numbers(5, 11) and r.gaps == []
    assert sub.position("page") == Position(backlog.position.epoch, 15)


async def test_a_subscription_added_while_the_channel_is_busy_joins_without_a_hole(
    rig: Rig, admin: Admin
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    first, late = Received(), Received()
    subscriber.new_channel_subscription(*first.callbacks, recover=True).add("busy")
    await until(lambda: bool(first.activations), "the first one active")
    stop = asyncio.Event()
    sent = 0

    async def publish() -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            await publisher.publish("busy", str(sent), history_size=100_000)

    task = asyncio.create_task(publish())
    await until(lambda: len(first.of(b"busy")) > 50, "traffic")
    sub = subscriber.new_channel_subscription(*late.callbacks, recover=True)
    await sub.add("busy")  # the names are already held in Redis for the first one
    await until(lambda: len(late.of(b"busy")) > 50, "the late one's traffic")
    assert await admin.kill_pubsub() == 1
    await until(lambda: late.activations.get(b"busy") == 2, "caught up")
    await until(lambda: len(late.of(b"busy")) > 100, "more")
    stop.set()
    await task
    await until(lambda: first.of(b"busy")[-1:] == [str(sent).encode()], "the last, first")
    await until(lambda: late.of(b"busy")[-1:] == [str(sent).encode()], "the last, late")
    assert first.of(b"busy") == numbers(sent)
    got = [int(d) for d in late.of(b"busy")]
    assert got == list(range(got[0], sent + 1))  # a contiguous suffix: no hole, no duplicate


async def test_a_restart_without_persistence_is_one_lost_gap(
    server_factory: Callable[..., RedisServer],
) -> None:
    """The server restarts without persistence and nothing is published until the
    subscriber is back: one "lost" gap, and the new history follows without loss."""
    server = server_factory()
    publisher = Multiplexer(server.url)
    subscriber = Multiplexer(server.url, **OUTAGE)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        await sub.add("reborn")
        await publish_numbers(publisher, "reborn", 1, 3)
        await until(lambda: len(r.of(b"reborn")) == 3, "3 messages")
        await server.arestart()
        await until(lambda: r.disconnects == 1, "the outage")
        await until(lambda: r.activations.get(b"reborn") == 2, "caught up", 20)
        assert [g.reason for g in r.gaps] == ["lost"]
        await publish_numbers(publisher, "reborn", 1, 3)
        await until(lambda: len(r.of(b"reborn")) == 6, "the new history's 3")
        assert r.of(b"reborn") == numbers(3) * 2 and len(r.gaps) == 1
    finally:
        await subscriber.aclose()
        await publisher.aclose()


# -- what a demanding user runs into ----------------------------------------------------------


async def test_a_restart_from_an_older_snapshot_is_never_silent(
    server_factory: Callable[..., RedisServer],
) -> None:
    """RDB persistence: the last snapshot holds offsets 1-5, 6-10 were published after it and
    are lost by the restart. The subscriber had 10: it must hear a gap and then get what is
    published on the restored history (its offsets 6, 7 ... again), not skip it."""
    server = server_factory()
    publisher = Multiplexer(server.url)
    subscriber = Multiplexer(server.url)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        await sub.add("snap")
        await publish_numbers(publisher, "snap", 1, 5)
        admin = Admin(server.url)
        try:
            await admin.client.save()  # the snapshot a crash would restore
        finally:
            await admin.close()
        await publish_numbers(publisher, "snap", 6, 5)
        await until(lambda: len(r.of(b"snap")) == 10, "10 messages")
        await server.arestart()  # SHUTDOWN NOSAVE: the snapshot at 5 is what comes back
        await until(lambda: r.activations.get(b"snap") == 2, "caught up", 20)
        assert (await publisher.history("snap", limit=1)).position.offset == 5  # type: ignore[union-attr]
        await publish_numbers(publisher, "snap", 11, 3)  # offsets 6, 7, 8 of the same epoch
        await until(lambda: len(r.of(b"snap")) == 13, "the 3 published after the restart")
        assert r.of(b"snap") == numbers(13)
        assert len(r.gaps) == 1
    finally:
        await subscriber.aclose()
        await publisher.aclose()


async def test_a_backlog_longer_than_a_read_chunk_recovers_in_order(rig: Rig) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("long")
    await publisher.publish("long", b"1", history_size=10_000)
    await until(lambda: r.of(b"long") == [b"1"], "the first")
    reads = subscriber._hub.history.reads
    async with rig.outage():
        await asyncio.gather(
            *(publisher.publish("long", str(i), history_size=10_000) for i in range(2, 2502))
        )
    await until(lambda: len(r.of(b"long")) == 2501, "the backlog", 20)
    assert r.of(b"long") == numbers(2501) and r.gaps == []
    assert subscriber._hub.history.reads - reads == 3  # chunks of 1,000


async def test_a_history_trimmed_between_read_chunks_is_a_gap_not_a_hole(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redismpx import _history

    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("trim")
    await publisher.publish("trim", b"1", history_size=1500)
    await until(lambda: r.of(b"trim") == [b"1"], "the first")
    original = _history.read
    chunks = 0
    first_chunk_read = asyncio.Event()
    go_on = asyncio.Event()

    async def slow_read(*args: Any, **kwargs: Any) -> Any:
        nonlocal chunks
        result = await original(*args, **kwargs)
        chunks += 1
        if chunks == 1:
            first_chunk_read.set()
            await go_on.wait()
        return result

    monkeypatch.setattr(_history, "read", slow_read)
    async with rig.outage():  # 1,400 missed: within the 1,500 kept
        await asyncio.gather(
            *(publisher.publish("trim", str(i), history_size=1500) for i in range(2, 1402))
        )
    await asyncio.wait_for(first_chunk_read.wait(), 5)
    # While the read is between its chunks, 3,000 more: the history trims past the chunk.
    await asyncio.gather(
        *(publisher.publish("trim", str(i), history_size=1500) for i in range(1402, 4402))
    )
    go_on.set()
    await until(lambda: r.of(b"trim")[-1:] == [b"4401"], "the last", 20)
    got = [int(d) for d in r.of(b"trim")]
    assert got == sorted(set(got))
    holes = [(a, b) for a, b in itertools.pairwise(got) if b != a + 1]
    # A hole is allowed only where a gap was reported (once, "trimmed").
    assert not holes or [g.reason for g in r.gaps] == ["trimmed"], holes


async def test_plain_and_pattern_subscribers_in_the_same_process_see_payloads_only(
    rig: Rig,
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    rec, plain = Received(), Received()
    pattern_got: list[tuple[bytes, bytes]] = []
    sub = subscriber.new_channel_subscription(*rec.callbacks, recover=True)
    other = subscriber.new_channel_subscription(*plain.callbacks)
    pattern = subscriber.new_pattern_subscription("*", lambda c, d: pattern_got.append((c, d)))
    await sub.add("together")
    await other.add("together")
    await pattern.wait_active([b"*"])
    await publish_numbers(publisher, "together", 1, 3)
    async with rig.outage():
        await publish_numbers(publisher, "together", 4, 3)
    await until(lambda: len(rec.of(b"together")) == 6, "6 recovered")
    await publish_numbers(publisher, "together", 7, 2)
    await until(lambda: len(rec.of(b"together")) == 8, "8")
    await until(lambda: len(plain.of(b"together")) == 5, "the plain one's 5")
    assert rec.of(b"together") == numbers(8)
    assert plain.of(b"together") == numbers(3) + numbers(2, 7)  # at most once, as ever
    await until(lambda: len(pattern_got) == 5, "the pattern's 5")
    assert {c for c, _ in pattern_got} == {b"together"}  # never an envelope channel
    # The plain subscriber leaving and coming back does not disturb the recovering one.
    for _ in range(5):
        other.remove("together")
        other.add("together")
    await publish_numbers(publisher, "together", 9, 2)
    await until(lambda: len(rec.of(b"together")) == 10, "10")
    assert rec.of(b"together") == numbers(10) and rec.activations == {b"together": 2}


async def test_sharded_recovering_subscription_on_a_standalone_server(rig: Rig) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(
        *r.callbacks, recover=True, on_gap=r.on_gap, sharded=True
    )
    await sub.add("shard")
    await publish_numbers(publisher, "shard", 1, 3, sharded=True)
    await until(lambda: len(r.of(b"shard")) == 3, "3")
    async with rig.outage():
        await publish_numbers(publisher, "shard", 4, 3, sharded=True)
    await until(lambda: len(r.of(b"shard")) == 6, "6")
    assert r.of(b"shard") == numbers(6) and r.gaps == []


# -- what users pass and what servers refuse ---------------------------------------------------


@pytest.mark.parametrize("kind", ["negative", "huge", "str-offset", "int-epoch"])
async def test_an_impossible_since_is_refused_by_add(rig: Rig, kind: str) -> None:
    mpx = rig.subscriber
    await mpx.publish("checked", b"1", history_size=10)
    at = (await mpx.history("checked")).position
    assert at is not None
    since = {
        "negative": Position(at.epoch, -1),
        "huge": Position(at.epoch, 10**20),  # beyond what a stream id (and Lua) holds
        "str-offset": Position(at.epoch, "1"),  # type: ignore[arg-type]
        "int-epoch": Position(5, 1),  # type: ignore[arg-type]
    }[kind]
    sub = mpx.new_channel_subscription(lambda c, d: None, recover=True)
    try:
        with pytest.raises((InvalidArgument, InvalidArgumentType)):
            sub.add("checked", since=since)
        assert "checked" not in sub
    finally:
        sub.close()


async def test_a_history_read_refused_by_an_acl_fails_the_channel(
    redis_server: RedisServer, admin: Admin
) -> None:
    await admin.client.execute_command(
        "ACL", "SETUSER", "noscript", "on", ">pw", "~*", "&*", "+@all", "-@scripting"
    )
    url = redis_server.url.replace("redis://", "redis://noscript:pw@")
    mpx = Multiplexer(url)
    try:
        sub = mpx.new_channel_subscription(lambda c, d: None, recover=True)
        sub.add("acl")

        async def traffic() -> None:  # messages without history, held while it recovers
            while True:
                await admin.publish("acl", b"x")
                await asyncio.sleep(0.01)

        task = asyncio.create_task(traffic())
        try:
            async with asyncio.timeout(3):
                await sub.add("acl")
        except TimeoutError:
            held = len(sub._tap._tracks[b"acl"].held) if sub._tap else 0
            pytest.fail(f"add() hangs (the read is retried forever; {held} message(s) held)")
        except RedisMPXError:
            pass  # refused: what a refused SUBSCRIBE does too
        else:
            pytest.fail("caught up without reading the history")
        finally:
            task.cancel()
    finally:
        await mpx.aclose()


async def test_the_command_connection_killed_during_the_read_reads_again(
    rig: Rig, admin: Admin
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("reread")
    await publish_numbers(publisher, "reread", 1, 3)
    await until(lambda: len(r.of(b"reread")) == 3, "3 messages")
    gate = ReadGate(subscriber)  # the read waits before it is sent
    async with rig.outage():
        await publish_numbers(publisher, "reread", 4, 3)
    await asyncio.wait_for(gate.entered.wait(), 5)
    # Every normal connection but ours: the subscriber's command connection among them.
    killed = await admin.client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    gate.remove()
    await until(lambda: r.activations.get(b"reread") == 2, "caught up")
    await publish_numbers(publisher, "reread", 7, 3)
    await until(lambda: len(r.of(b"reread")) == 9, "9 messages")
    assert r.of(b"reread") == numbers(9) and r.gaps == []


async def test_both_connections_killed_over_and_over_while_publishing(
    redis_server: RedisServer, admin: Admin
) -> None:
    publisher = Multiplexer(redis_server.url)
    subscriber = Multiplexer(redis_server.url, client_name="victim")
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        channels = [f"both:{i}" for i in range(20)]
        await sub.add(*channels)
        stop = asyncio.Event()
        sent: dict[str, list[bytes]] = {c: [] for c in channels}

        async def publish() -> None:
            for i in itertools.count(1):
                if stop.is_set():
                    return
                for c in channels:
                    await publisher.publish(c, str(i), history_size=100_000)
                    sent[c].append(str(i).encode())

        task = asyncio.create_task(publish())
        for _ in range(10):
            before = sum(len(v) for v in sent.values())
            await until(
                lambda: sum(len(v) for v in sent.values()) > before + 100,  # noqa: B023
                "traffic",
            )
            victims = [c["id"] for c in await admin.client.client_list() if c["name"] == "victim"]
            assert 1 <= len(victims) <= 2  # its Pub/Sub connection and its command one (reads)
            for victim in victims:
                await admin.client.execute_command("CLIENT", "KILL", "ID", victim)
            await until(lambda: subscriber.state == "connected", "back")
        stop.set()
        await task
        await until(
            lambda: all(r.of(c.encode())[-1:] == sent[c][-1:] for c in channels), "the end", 20
        )
        for c in channels:
            assert r.of(c.encode()) == sent[c], c
        assert r.gaps == []
    finally:
        await subscriber.aclose()
        await publisher.aclose()


async def test_the_first_publications_made_during_the_first_outage_are_recovered(
    rig: Rig,
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("newborn")  # no history yet: nothing was ever published with one
    assert sub.position("newborn") is None
    async with rig.outage():
        await publish_numbers(publisher, "newborn", 1, 5)  # the history begins here
    await until(lambda: r.activations.get(b"newborn") == 2, "caught up")
    await publish_numbers(publisher, "newborn", 6, 2)
    await until(lambda: len(r.of(b"newborn")) >= 7, "the live ones")
    assert r.of(b"newborn") == numbers(7) or r.gaps, r.of(b"newborn")


async def test_each_publish_refreshes_the_ttl_of_the_whole_history(rig: Rig, admin: Admin) -> None:
    publisher = rig.publisher
    meta, log = history_keys(b"kept-alive")
    # A TTL of 3 s: each round lets both keys age by 0.6 s, then one publish must renew both.
    # (A short TTL would make this timing: a stall of a loaded machine would expire it.)
    rounds = 4
    for i in range(1, rounds + 1):
        await publisher.publish("kept-alive", str(i), history_size=1000, history_ttl=3.0)
        assert 2500 < await admin.client.pttl(meta) <= 3000
        assert 2500 < await admin.client.pttl(log) <= 3000
        async with asyncio.timeout(10):
            while i < rounds and await admin.client.pttl(meta) > 2400:
                await asyncio.sleep(0.05)
    h = await publisher.history("kept-alive", limit=1000)
    assert [e.data for e in h.entries] == numbers(rounds)  # one epoch all along


@pytest.mark.parametrize("protocol", [2, 3])
async def test_recovery_over_either_protocol(rig: Rig, protocol: int) -> None:
    subscriber = Multiplexer(rig.proxy.url, protocol=protocol, backoff_base=0.01)
    rig.subscriber, spare = subscriber, rig.subscriber  # the outage is the new one's
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
        await sub.add("proto", "proto:empty")
        await publish_numbers(rig.publisher, "proto", 1, 3)
        await until(lambda: len(r.of(b"proto")) == 3, "3")
        async with rig.outage():
            await publish_numbers(rig.publisher, "proto", 4, 3)
        await until(lambda: r.activations.get(b"proto:empty") == 2, "the empty one caught up")
        await until(lambda: len(r.of(b"proto")) == 6, "6")
        assert r.of(b"proto") == numbers(6) and r.gaps == []
        assert sub.position("proto:empty") is None
    finally:
        await spare.aclose()


async def test_an_idle_channel_whose_history_expired_while_connected_has_no_gap(
    rig: Rig, admin: Admin
) -> None:
    publisher, subscriber = rig.publisher, rig.subscriber
    r = Received()
    sub = subscriber.new_channel_subscription(*r.callbacks, recover=True, on_gap=r.on_gap)
    await sub.add("idle")
    await publish_numbers(publisher, "idle", 1, 3, history_ttl=0.2)
    await until(lambda: len(r.of(b"idle")) == 3, "3 messages")
    meta, log = history_keys(b"idle")
    async with asyncio.timeout(5):
        while await admin.client.exists(meta, log):  # the room fell idle: history gone
            await asyncio.sleep(0.02)
    await publish_numbers(publisher, "idle", 4, 2, history_ttl=0.2)  # busy again
    await until(lambda: len(r.of(b"idle")) == 5, "5 messages")
    assert r.of(b"idle") == numbers(5)
    assert r.gaps == []  # connected all along: nothing was missed
    assert r.disconnects == 0
