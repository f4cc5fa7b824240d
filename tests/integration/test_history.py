"""History and recovery (docs/history.md) against a real server: publishing with history,
reading it, and recovering subscriptions across CLIENT KILL and restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from redismpx import (
    Gap,
    InvalidArgument,
    InvalidArgumentType,
    Message,
    Multiplexer,
    Position,
)
from redismpx._envelope import envelope_channel, history_keys
from support.admin import Admin
from support.waiting import poll_until as _until


class Received:
    """What a recovering callback subscription got: payloads, gaps, activations."""

    def __init__(self) -> None:
        self.data: list[bytes] = []
        self.gaps: list[Gap[bytes]] = []
        self.activations = 0
        self.disconnects = 0

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.data.append(data)

    def on_gap(self, gap: Gap[bytes]) -> None:
        self.gaps.append(gap)

    def on_activation(self, name: bytes) -> None:
        self.activations += 1

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects += 1

    def numbers(self) -> list[int]:
        return [int(d) for d in self.data]


async def test_publish_with_history_reaches_plain_subscribers_as_the_payload_alone(
    mpx: Multiplexer, admin: Admin
) -> None:
    got: list[tuple[bytes, bytes]] = []
    plain = mpx.new_channel_subscription(lambda c, d: got.append((c, d)))
    pattern_got: list[bytes] = []
    pattern = mpx.new_pattern_subscription("*", lambda c, d: pattern_got.append(c))
    await plain.add("room")
    await pattern.wait_active([b"*"])
    # Counted as for a plain PUBLISH: the channel subscriber and the pattern match.
    assert await mpx.publish("room", b"hello", history_size=10) == 2
    await _until(lambda: len(got) == 1 and len(pattern_got) == 1, "the publication")
    assert got == [(b"room", b"hello")]
    # The pattern does not see the envelope channel (only the channel itself).
    assert pattern_got == [b"room"]
    meta, log = history_keys(b"room")
    assert await admin.client.exists(meta, log) == 2
    ttl = await admin.client.pttl(meta)
    assert 3_500_000 < ttl <= 3_600_000  # the default history_ttl, an hour


async def test_history_reads_the_tail_and_what_follows_a_position(mpx: Multiplexer) -> None:
    for i in range(1, 21):
        await mpx.publish("h", str(i), history_size=100)
    tail = await mpx.history("h", limit=5)
    assert [e.data for e in tail.entries] == [b"16", b"17", b"18", b"19", b"20"]
    assert tail.position is not None and tail.position.offset == 20 and tail.gap is None
    assert [e.position.offset for e in tail.entries] == [16, 17, 18, 19, 20]
    since = tail.entries[0].position
    after = await mpx.history("h", since=since, limit=3)
    assert [e.data for e in after.entries] == [b"17", b"18", b"19"]
    assert after.position == after.entries[-1].position  # cut short by limit: go on from there
    rest = await mpx.history("h", since=after.position)
    assert [e.data for e in rest.entries] == [b"20"] and rest.position == tail.position
    # A position of another epoch: everything there is, flagged.
    other = await mpx.history("h", since=Position("feedbeef", 3))
    assert other.gap == "epoch" and len(other.entries) == 20
    assert Position.parse(str(tail.position)) == tail.position
    empty = await mpx.history("nothing-here")
    assert empty.entries == [] and empty.position is None and empty.gap is None


async def test_history_size_bounds_the_history_to_at_least_n(mpx: Multiplexer) -> None:
    for i in range(1000):
        await mpx.publish("bounded", str(i), history_size=50)
    kept = await mpx.history("bounded", limit=1000)
    assert 50 <= len(kept.entries) < 1000
    assert kept.entries[-1].data == b"999"
    trimmed = await mpx.history("bounded", since=kept.entries[0].position._replace(offset=1))
    assert trimmed.gap == "trimmed"


async def test_bad_history_arguments_are_typed_errors(mpx: Multiplexer) -> None:
    with pytest.raises(InvalidArgument, match="history_size"):
        await mpx.publish("x", b"1", history_size=0)
    with pytest.raises(InvalidArgumentType, match="history_size"):
        await mpx.publish("x", b"1", history_size="10")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="history_ttl"):
        await mpx.publish("x", b"1", history_size=10, history_ttl=float("nan"))
    with pytest.raises(InvalidArgument, match="limit"):
        await mpx.history("x", limit=0)
    with pytest.raises(InvalidArgument, match="on_gap needs recover=True"):
        mpx.new_channel_subscription(lambda c, d: None, on_gap=lambda g: None)
    sub = mpx.new_channel_subscription(lambda c, d: None)
    with pytest.raises(InvalidArgument, match="recover=True"):
        sub.add("x", since=Position("e", 1))
    with pytest.raises(InvalidArgument, match="not a position"):
        Position.parse("nope")


async def test_recovering_subscription_gets_each_message_once_live(
    mpx: Multiplexer, admin: Admin
) -> None:
    r = Received()
    sub = mpx.new_channel_subscription(
        r.on_message, None, r.on_activation, recover=True, on_gap=r.on_gap
    )
    await sub.add("live")
    for i in range(1, 51):
        await mpx.publish("live", str(i), history_size=100)
    await mpx.publish("live", b"plain")  # without history: delivered live too
    await _until(lambda: len(r.data) == 51, "51 messages")
    assert r.data == [str(i).encode() for i in range(1, 51)] + [b"plain"]
    assert r.gaps == [] and r.activations == 1
    position = sub.position("live")
    assert position is not None and position.offset == 50
    sub.close()
    # Nothing stays subscribed: neither the channel nor its envelope channel.
    await _until_unsubscribed(admin, [b"live", envelope_channel(b"live")])


async def test_a_recovering_sync_callback_returning_an_awaitable_keeps_the_order(
    mpx: Multiplexer,
) -> None:
    # The subscription turns queued at the first awaitable its callback returns: what
    # follows waits behind it, recovering or not (the tracks must call the queue then).
    gate = asyncio.Event()
    order: list[tuple[str, bytes]] = []

    def on_message(channel: bytes, data: bytes) -> Any:
        order.append(("called", data))
        if data != b"1":
            return None

        async def later() -> None:
            await gate.wait()
            order.append(("done", data))

        return later()

    witness: list[bytes] = []
    sub = mpx.new_channel_subscription(on_message, recover=True)
    plain = mpx.new_channel_subscription(lambda channel, data: witness.append(data))
    await sub.add("aw")
    await plain.add("aw")
    for i in (1, 2, 3):
        await mpx.publish("aw", str(i), history_size=10)
    # The plain copies come after their envelopes: once the witness has all three, the
    # recovering subscription has heard them too.
    await _until(lambda: len(witness) == 3, "the witness's three messages")
    assert order == [("called", b"1")]
    gate.set()
    await _until(lambda: len(order) == 4, "the rest, in order")
    assert order == [("called", b"1"), ("done", b"1"), ("called", b"2"), ("called", b"3")]


async def _until_unsubscribed(admin: Admin, names: list[bytes]) -> None:
    for _ in range(200):
        if not (await admin.channels()) & set(names):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"still subscribed: {await admin.channels()}")


async def _numbered_publisher(
    mpx: Multiplexer, channel: str, stop: asyncio.Event, sent: list[int], size: int
) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        try:
            await mpx.publish(channel, str(i), history_size=size, timeout=5.0)
        except Exception:  # a publish cut by a restart: it may or may not have happened
            i -= 1
            await asyncio.sleep(0.01)
            continue
        sent.append(i)
        await asyncio.sleep(0.001)


async def test_recovery_across_repeated_client_kills_is_exactly_once_in_order(
    redis_server: Any, admin: Admin
) -> None:
    publisher = Multiplexer(redis_server.url)
    subscriber = Multiplexer(redis_server.url)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(
            r.on_message, r.on_disconnect, r.on_activation, recover=True, on_gap=r.on_gap
        )
        await sub.add("numbers")
        stop, sent = asyncio.Event(), []
        task = asyncio.create_task(_numbered_publisher(publisher, "numbers", stop, sent, 10_000))
        for _ in range(5):
            before = len(r.data)
            await _until(lambda: len(r.data) > before + 20, "messages before a kill")  # noqa: B023
            assert await admin.kill_pubsub() >= 1
        stop.set()
        await task
        await _until(
            lambda: len(r.data) >= len(sent) and r.activations == 6,
            "every message and the last catch-up",
        )
        assert r.numbers() == sent  # every one, once, in order
        assert r.gaps == []
        assert r.disconnects == 5 and r.activations == 6
    finally:
        await publisher.aclose()
        await subscriber.aclose()


async def test_a_history_smaller_than_the_outage_gives_one_gap_then_order_resumes(
    redis_server: Any, admin: Admin, fault_proxy: Any
) -> None:
    # The subscriber behind a proxy that refuses it while the outage lasts (a backoff alone,
    # full jitter, may reconnect at once).
    proxy = await fault_proxy(redis_server.port)
    mpx = Multiplexer(redis_server.url)
    subscriber = Multiplexer(proxy.url, backoff_base=0.01, backoff_cap=0.05)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(r.on_message, recover=True, on_gap=r.on_gap)
        await sub.add("small")
        await mpx.publish("small", b"1", history_size=5)
        await _until(lambda: r.data == [b"1"], "the first message")
        proxy.refuse(True)
        assert await admin.kill_pubsub() == 1
        await _until(lambda: subscriber.state != "connected", "the outage")
        # Far more than the history keeps is published meanwhile.
        for i in range(2, 1002):
            await mpx.publish("small", str(i), history_size=5)
        proxy.refuse(False)
        await _until(lambda: len(r.gaps) == 1 and r.data[-1] == b"1001", "the gap and the end")
        gap = r.gaps[0]
        assert gap.channel == b"small" and gap.reason == "trimmed"
        assert gap.since is not None and gap.since.offset == 1
        numbers = r.numbers()
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert numbers[0] == 1 and numbers[1] > 2  # what the history no longer held is skipped
        await mpx.publish("small", b"1002", history_size=5)
        await _until(lambda: r.data[-1] == b"1002", "live again")
        assert len(r.gaps) == 1
    finally:
        await mpx.aclose()
        await subscriber.aclose()


@pytest.mark.parametrize("persistent", [True, False], ids=["aof", "no-persistence"])
async def test_restart_with_persistence_recovers_without_persistence_gaps(
    server_factory: Any, persistent: bool
) -> None:
    args = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else []
    server = server_factory(args=args)
    mpx = Multiplexer(server.url)
    publisher = Multiplexer(server.url)
    try:
        r = Received()
        sub = mpx.new_channel_subscription(
            r.on_message, r.on_disconnect, recover=True, on_gap=r.on_gap
        )
        await sub.add("durable")
        for i in range(1, 11):
            await publisher.publish("durable", str(i), history_size=1000)
        await _until(lambda: len(r.data) == 10, "10 messages")
        await server.arestart()
        await _until(lambda: r.disconnects == 1, "the outage")
        for i in range(11, 21):
            await publisher.publish("durable", str(i), history_size=1000)
        await _until(lambda: len(r.data) >= 20 or bool(r.gaps), "recovery")
        await _until(lambda: len(r.data) >= 20, "the messages after the restart")
        if persistent:
            assert r.numbers() == list(range(1, 21)) and r.gaps == []
        else:
            # A new history (a new epoch) after the restart: one gap notice, never silence.
            assert len(r.gaps) == 1 and r.gaps[0].reason in ("epoch", "lost")
            assert r.numbers()[:10] == list(range(1, 11))
            assert r.numbers()[10:] == list(range(11, 21))
    finally:
        await mpx.aclose()
        await publisher.aclose()


async def test_history_then_since_continues_without_duplicate_or_gap(mpx: Multiplexer) -> None:
    for i in range(1, 11):
        await mpx.publish("page", str(i), history_size=100)
    backlog = await mpx.history("page", limit=5)
    assert [e.data for e in backlog.entries] == [b"6", b"7", b"8", b"9", b"10"]
    await mpx.publish("page", b"11", history_size=100)  # between the read and the subscribe
    r = Received()
    sub = mpx.new_channel_subscription(r.on_message, recover=True)
    assert backlog.position is not None
    await sub.add("page", since=backlog.position)
    await mpx.publish("page", b"12", history_size=100)
    await _until(lambda: len(r.data) == 2, "11 and 12")
    assert r.data == [b"11", b"12"]


async def test_recovering_iterator_yields_gaps_as_events(mpx: Multiplexer) -> None:
    await mpx.publish("it", b"1", history_size=2)
    async with mpx.subscribe("it", recover=True, since=Position("old-epoch", 7)) as sub:
        events = sub.events()
        first = await anext(events)
        assert isinstance(first, Gap) and first.reason == "epoch" and first.channel == b"it"
        second = await anext(events)
        assert isinstance(second, Message) and second.data == b"1"
        await mpx.publish("it", b"2", history_size=2)
        third = await anext(events)
        while not isinstance(third, Message):
            third = await anext(events)
        assert third.data == b"2"


async def test_a_history_rolled_back_gives_a_gap_and_new_publications_arrive(
    mpx: Multiplexer, admin: Admin
) -> None:
    # A restart that lost the last writes (a snapshot, appendfsync everysec) or a failover to
    # a lagging replica: the same epoch, behind the position delivered. Regression: the new
    # publications reusing offsets 4 and 5 were skipped as duplicates, silently.
    r = Received()
    sub = mpx.new_channel_subscription(r.on_message, recover=True, on_gap=r.on_gap)
    await sub.add("rb")
    for i in range(1, 6):
        await mpx.publish("rb", str(i), history_size=100)
    await _until(lambda: len(r.data) == 5, "5 messages")
    meta, log = history_keys(b"rb")
    await admin.client.hset(meta, "o", 3)
    await admin.client.delete(log)
    for offset in (1, 2, 3):
        await admin.client.xadd(log, {"d": str(offset)}, id=f"{offset}-0")
    assert await admin.kill_pubsub() == 1
    await _until(lambda: len(r.gaps) == 1, "the gap")
    assert r.gaps[0].reason == "lost" and r.gaps[0].since == Position(
        r.gaps[0].since.epoch if r.gaps[0].since else "", 5
    )
    for i in range(6, 10):
        await mpx.publish("rb", str(i), history_size=100)
    await _until(lambda: len(r.data) == 9, "the new publications")
    assert r.numbers() == list(range(1, 10))


async def test_a_history_that_expires_while_connected_is_no_gap(mpx: Multiplexer) -> None:
    # Regression: a new epoch arriving live at offset 1 was taken for a lost history.
    r = Received()
    sub = mpx.new_channel_subscription(r.on_message, recover=True, on_gap=r.on_gap)
    await sub.add("short")
    await mpx.publish("short", b"1", history_size=10, history_ttl=0.05)
    await _until(lambda: len(r.data) == 1, "the first")
    await _until_expired(mpx, "short")
    # The default TTL now: a second expiry before "3" would start yet another epoch.
    await mpx.publish("short", b"2", history_size=10)
    await mpx.publish("short", b"3", history_size=10)
    await _until(lambda: len(r.data) == 3, "the next ones")
    assert r.data == [b"1", b"2", b"3"] and r.gaps == []
    position = sub.position("short")
    assert position is not None and position.offset == 2


async def _until_expired(mpx: Multiplexer, channel: str) -> None:
    for _ in range(500):
        if (await mpx.history(channel)).position is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the history did not expire")


async def test_a_log_ahead_of_its_counter_starts_a_new_epoch(
    mpx: Multiplexer, admin: Admin
) -> None:
    # The counter went back but the log did not (rewritten by hand, partly evicted): XADD
    # refuses an offset at or below the log's top. Publishing must not fail for good.
    for i in range(1, 4):
        await mpx.publish("ahead", str(i), history_size=10)
    meta, _ = history_keys(b"ahead")
    before = await mpx.history("ahead")
    await admin.client.hset(meta, "o", 1)
    await mpx.publish("ahead", b"4", history_size=10)
    after = await mpx.history("ahead")
    assert before.position is not None and after.position is not None
    assert after.position.epoch != before.position.epoch
    assert [e.data for e in after.entries] == [b"4"]


async def test_offsets_reused_after_a_rollback_are_told_apart_by_their_tag(
    redis_server: Any, admin: Admin, fault_proxy: Any
) -> None:
    # A failover to a replica that lacked the last publications, and publishing resumed
    # there before the subscriber came back: the same epoch, the same offsets, other
    # publications. Regression: they were skipped as duplicates of what it had delivered.
    proxy = await fault_proxy(redis_server.port)
    mpx = Multiplexer(redis_server.url)
    subscriber = Multiplexer(proxy.url, backoff_base=0.01, backoff_cap=0.05)
    try:
        r = Received()
        sub = subscriber.new_channel_subscription(r.on_message, recover=True, on_gap=r.on_gap)
        await sub.add("fo")
        for i in range(1, 6):
            await mpx.publish("fo", f"old{i}", history_size=100)
        await _until(lambda: len(r.data) == 5, "5 messages")
        meta, log = history_keys(b"fo")
        kept = await admin.client.xrange(log, count=3)  # what the "replica" had
        proxy.refuse(True)
        assert await admin.kill_pubsub() == 1
        await _until(lambda: subscriber.state != "connected", "the outage")
        await admin.client.hset(meta, "o", 3)
        await admin.client.delete(log)
        for ident, fields in kept:
            await admin.client.xadd(log, fields, id=ident)
        for i in range(4, 8):  # offsets 4 to 7, while the subscriber is away
            await mpx.publish("fo", f"new{i}", history_size=100)
        proxy.refuse(False)
        await _until(lambda: r.data[-1:] == [b"new7"], "the new publications")
        assert len(r.gaps) == 1 and r.gaps[0].reason == "lost"
        assert r.data[:5] == [b"old1", b"old2", b"old3", b"old4", b"old5"]
        assert r.data[5:] == [b"new5", b"new6", b"new7"]  # from the diverging offset on
    finally:
        await mpx.aclose()
        await subscriber.aclose()
