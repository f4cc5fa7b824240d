"""``redismpx.broadcaster`` against real servers, through broadcaster's own ``Broadcast``.

* The backend contract as broadcaster's interface and README define it (``connect``,
  ``disconnect``, ``subscribe``, ``unsubscribe``, ``publish``, ``next_published`` returning
  ``Event(channel: str, message: str)``), end to end through ``Broadcast(backend=...)``: with
  broadcaster's ``Broadcast`` and with ``redismpx.broadcaster.Broadcast``.
* What the backend promises on top: ``subscribe`` returns once Redis confirmed the channel,
  the bounded buffer and its overflow policies, decoding, ``conn`` (a shared multiplexer, a
  redis-py client), and delivery that comes back by itself after the server dropped the
  Pub/Sub connection, a restart and a Sentinel failover.
* The same outages with broadcaster's stock ``RedisBackend``, measured for comparison: every
  wait is bounded and "never within N s" is recorded. Nothing is asserted about the stock
  backend; the numbers are printed at the end of the module.

Measured times are printed in a table after the module ran (``-p no:randomly -q`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

try:
    import broadcaster
    from broadcaster._backends.redis import RedisBackend
except ImportError:  # pragma: no cover - depends on the environment
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        raise
    pytest.skip(
        "broadcaster is not installed: pip install 'redismpx[broadcaster]'",
        allow_module_level=True,
    )


import redis.asyncio as aioredis
import redis.asyncio.sentinel as aiosentinel
from starlette.exceptions import StarletteDeprecationWarning

from redismpx import ClusterMultiplexer, Multiplexer, PublishTimeout, SubscribeRefused
from redismpx.broadcaster import Broadcast, RedisMPXBackend
from redismpx.server import RedisCluster, RedisSentinel, RedisServer, server_version

with warnings.catch_warnings():  # Starlette >= 1.x prefers httpx2 for its TestClient
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

DOC = Path(__file__).resolve().parents[2] / "docs" / "integrations" / "broadcaster.md"
STOCK_LIMIT = 10.0  # seconds a stock-backend measurement waits before "never"
OURS_LIMIT = 10.0  # the same bound for RedisMPXBackend (which must come back well within it)

# (scenario, backend, result) rows, printed after the module's tests.
MEASURED: list[tuple[str, str, str]] = []


@pytest.fixture(scope="module", autouse=True)
def _print_measurements(request: pytest.FixtureRequest, server_binary: str) -> Iterator[None]:
    yield
    if not MEASURED:
        return
    name, version = server_version(server_binary)
    lines = [f"broadcaster measurements ({name} {'.'.join(map(str, version))}):"]
    lines += [f"  {s:<46} {b:<19} {r}" for s, b, r in MEASURED]
    MEASURED.clear()
    capture = request.config.pluginmanager.getplugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print("\n" + "\n".join(lines))


def record(scenario: str, backend: str, result: str) -> None:
    MEASURED.append((scenario, backend, result))


BROADCASTS = {
    "broadcaster.Broadcast": broadcaster.Broadcast,
    "redismpx.broadcaster.Broadcast": Broadcast,
}


@pytest.fixture(params=list(BROADCASTS))
def broadcast_class(request: pytest.FixtureRequest) -> type[broadcaster.Broadcast]:
    """broadcaster's own ``Broadcast``, and ours (whose ``subscribe`` is race-free)."""
    return BROADCASTS[request.param]


@pytest.fixture
async def broadcast(
    redis_server: RedisServer, broadcast_class: type[broadcaster.Broadcast]
) -> AsyncIterator[broadcaster.Broadcast]:
    async with broadcast_class(backend=RedisMPXBackend(redis_server.url)) as b:
        yield b


# -- helpers ------------------------------------------------------------------------------------


async def receive(subscriber: Any, timeout: float = 5.0) -> broadcaster.Event:
    event: broadcaster.Event = await asyncio.wait_for(subscriber.get(), timeout)
    return event


async def numsub(server: RedisServer, channel: str) -> int:
    return int((await server.acommand("PUBSUB", "NUMSUB", channel))[1])


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll a condition on the server (no event exists for it) for at most ``timeout``."""
    try:
        async with asyncio.timeout(timeout):
            while not await check():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}") from None


async def pubsub_clients(server: RedisServer) -> int:
    text = await server.acommand("CLIENT", "LIST", "TYPE", "pubsub", decode=True)
    return len([line for line in text.splitlines() if line.strip()])


async def drain(subscriber: Any) -> None:
    """Take what is queued for ``subscriber`` without waiting."""
    queue = subscriber._queue
    while not queue.empty():
        queue.get_nowait()


_probe_calls = itertools.count()  # each call of delivery_back names its probes apart


async def delivery_back(
    subscriber: Any,
    publish: Callable[[str], Awaitable[Any]],
    since: float,
    limit: float,
) -> float | None:
    """Seconds from ``since`` until a probe published from now on reached ``subscriber``, or
    ``None`` if none did within ``limit`` seconds of ``since``.

    A probe is published (errors ignored: the server may be down), then the subscriber is
    waited on for up to 5 ms, and again: the probes pace the wait, no sleep involved. Probes
    of an earlier call still on their way are skipped (each call numbers its own)."""
    loop = asyncio.get_running_loop()
    mine = f"probe-{next(_probe_calls)}-"
    n = 0
    while (remaining := since + limit - loop.time()) > 0:
        n += 1
        with contextlib.suppress(Exception):
            async with asyncio.timeout(min(remaining, 1.0)):
                await publish(f"{mine}{n}")
        with contextlib.suppress(TimeoutError):
            event = await receive(subscriber, max(min(0.005, since + limit - loop.time()), 0.001))
            assert event.message.startswith("probe-"), event
            if event.message.startswith(mine):
                return loop.time() - since
    return None


async def receive_past_probes(subscriber: Any) -> Any:
    """The next event that is not a probe (probes of :func:`delivery_back` may still be on
    their way after it returned)."""
    while (event := await receive(subscriber)).message.startswith("probe-"):
        pass
    return event


def seconds(value: float | None, limit: float) -> str:
    return f"not back within {limit:g} s" if value is None else f"back after {value:.3f} s"


def stock_listener(b: broadcaster.Broadcast) -> str:
    """What became of the stock RedisBackend's listener task."""
    task = getattr(b._backend, "_listener", None)
    if task is None or not task.done():
        return "its listener task still runs"
    if task.cancelled():
        return "its listener task was cancelled"
    exc = task.exception()
    return f"its listener task died: {type(exc).__name__}" if exc else "its listener task ended"


def server_publisher(server: RedisServer, channel: str) -> Callable[[str], Awaitable[Any]]:
    """Publishes over a fresh connection each time: independent of any client under test."""

    async def publish(payload: str) -> Any:
        return await server.acommand("PUBLISH", channel, payload, timeout=0.5)

    return publish


# -- broadcaster's contract, end to end ---------------------------------------------------------


async def test_subscribe_publish_receive(broadcast: broadcaster.Broadcast) -> None:
    async with broadcast.subscribe("chatroom") as subscriber:
        await broadcast.publish("chatroom", "hello")
        event = await receive(subscriber)
    assert event == broadcaster.Event(channel="chatroom", message="hello")
    assert isinstance(event, broadcaster.Event)
    assert type(event.channel) is str and type(event.message) is str


async def test_messages_arrive_in_order_and_only_on_their_channel(
    broadcast: broadcaster.Broadcast,
) -> None:
    async with broadcast.subscribe("a") as sub_a, broadcast.subscribe("b") as sub_b:
        for i in range(50):
            await broadcast.publish("a", f"a{i}")
            await broadcast.publish("b", f"b{i}")
        assert [(await receive(sub_a)).message for _ in range(50)] == [f"a{i}" for i in range(50)]
        assert [(await receive(sub_b)).message for _ in range(50)] == [f"b{i}" for i in range(50)]
        await broadcast.publish("a", "end")
        assert (await receive(sub_a)).message == "end"
        assert sub_b._queue.empty()  # nothing of "a" reached "b"


async def test_multiple_subscribers_each_receive_every_message(
    broadcast: broadcaster.Broadcast, redis_server: RedisServer
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        enter = stack.enter_async_context
        subscribers = [await enter(broadcast.subscribe("room")) for _ in range(5)]
        assert await numsub(redis_server, "room") == 1  # one connection, one subscription
        for i in range(10):
            await broadcast.publish("room", str(i))
        for subscriber in subscribers:
            assert [(await receive(subscriber)).message for _ in range(10)] == [
                str(i) for i in range(10)
            ]


async def test_subscriber_iterates_until_it_leaves(broadcast: broadcaster.Broadcast) -> None:
    received: list[str] = []
    ready, leave = asyncio.Event(), asyncio.Event()

    async def consume() -> None:
        async with broadcast.subscribe("feed") as subscriber:
            ready.set()
            async for event in subscriber:  # type: ignore[union-attr]
                received.append(event.message)
                if event.message == "last":
                    leave.set()
                    break

    task = asyncio.create_task(consume())
    await asyncio.wait_for(ready.wait(), 5)
    for message in ("first", "second", "last"):
        await broadcast.publish("feed", message)
    await asyncio.wait_for(task, 5)
    assert received == ["first", "second", "last"]


async def test_unsubscribe_when_the_last_subscriber_leaves(
    broadcast: broadcaster.Broadcast, redis_server: RedisServer
) -> None:
    async with broadcast.subscribe("news") as first:
        async with broadcast.subscribe("news") as second:
            await broadcast.publish("news", "both")
            assert (await receive(first)).message == "both"
            assert (await receive(second)).message == "both"
        # One left: the channel stays subscribed for the other.
        assert await numsub(redis_server, "news") == 1
        await broadcast.publish("news", "one")
        assert (await receive(first)).message == "one"

    async def unsubscribed() -> bool:
        return await numsub(redis_server, "news") == 0

    await until(unsubscribed, 5, "UNSUBSCRIBE news")
    # And subscribing again works (a fresh SUBSCRIBE, confirmed before entering).
    async with broadcast.subscribe("news") as again:
        assert await numsub(redis_server, "news") == 1
        await broadcast.publish("news", "again")
        assert (await receive(again)).message == "again"


async def test_connect_and_disconnect_twice(
    redis_server: RedisServer, broadcast_class: type[broadcaster.Broadcast]
) -> None:
    backend = RedisMPXBackend(redis_server.url)
    b = broadcast_class(backend=backend)
    for round_ in range(2):
        await b.connect()
        async with b.subscribe("twice") as subscriber:
            await b.publish("twice", f"round {round_}")
            assert (await receive(subscriber)).message == f"round {round_}"
        await b.disconnect()
        with pytest.raises(RuntimeError, match="not connected"):
            backend.multiplexer  # noqa: B018

        async def gone() -> bool:
            return await pubsub_clients(redis_server) == 0

        await until(gone, 5, "the backend's Pub/Sub connection to close")
    await backend.disconnect()  # idempotent


async def test_our_broadcast_subscribes_again_after_a_reconnect(redis_server: RedisServer) -> None:
    # A subscriber still inside subscribe() across disconnect() and connect(): whoever joins
    # its channel next subscribes the new connection (broadcaster's own Broadcast would see a
    # channel with subscribers and not ask the backend: nobody would receive).
    b = Broadcast(backend=RedisMPXBackend(redis_server.url))
    await b.connect()
    async with b.subscribe("kept") as old:
        await b.disconnect()
        await b.connect()
        try:
            async with b.subscribe("kept") as new:
                assert await numsub(redis_server, "kept") == 1
                await b.publish("kept", "after the reconnect")
                assert (await receive(new)).message == "after the reconnect"
                assert (await receive(old)).message == "after the reconnect"
        finally:
            await b.disconnect()


async def test_backend_interface_directly(redis_server: RedisServer) -> None:
    # The five coroutines broadcaster's BroadcastBackend declares, without Broadcast.
    backend = RedisMPXBackend(redis_server.url)
    assert isinstance(backend, broadcaster.BroadcastBackend)
    await backend.connect()
    try:
        await backend.subscribe("direct")
        assert await numsub(redis_server, "direct") == 1
        await backend.publish("direct", "one")
        assert await asyncio.wait_for(backend.next_published(), 5) == broadcaster.Event(
            "direct", "one"
        )
        await backend.unsubscribe("direct")
        await backend.subscribe("other")
        await redis_server.acommand("PUBLISH", "direct", "stale")  # (still subscribed or not)
        await backend.publish("other", "two")
        # Nothing of an unsubscribed channel comes out, even if it was still on its way.
        assert await asyncio.wait_for(backend.next_published(), 5) == broadcaster.Event(
            "other", "two"
        )
    finally:
        await backend.disconnect()
    await backend.unsubscribe("other")  # after disconnect: a no-op (Broadcast does this)


# -- subscribe returns once Redis confirmed it ----------------------------------------------------


async def test_subscribe_returns_once_redis_confirmed(
    broadcast: broadcaster.Broadcast, redis_server: RedisServer
) -> None:
    async with broadcast.subscribe("confirmed"):
        assert await numsub(redis_server, "confirmed") == 1  # asked at once, no waiting


async def test_publish_right_after_subscribe_never_loses_the_first_message(
    broadcast: broadcaster.Broadcast, redis_server: RedisServer
) -> None:
    # 100 new channels, and 100 rounds on the same channel (SUBSCRIBE right after the
    # UNSUBSCRIBE of the previous round: an old confirmation must not count).
    for i in range(100):
        async with broadcast.subscribe(f"fresh:{i}") as subscriber:
            await redis_server.acommand("PUBLISH", f"fresh:{i}", f"first {i}")
            assert (await receive(subscriber, 2)).message == f"first {i}"
    for i in range(100):
        async with broadcast.subscribe("same") as subscriber:
            await broadcast.publish("same", f"first {i}")
            assert (await receive(subscriber, 2)).message == f"first {i}"


async def test_stock_backend_publish_right_after_subscribe(redis_server: RedisServer) -> None:
    # For comparison only (nothing asserted): broadcaster's RedisBackend, a fresh Broadcast per
    # round as a fresh app would have, the first message bounded by 0.5 s.
    rounds, delivered = 10, 0
    for i in range(rounds):
        b = broadcaster.Broadcast(backend=RedisBackend(redis_server.url))
        async with b, b.subscribe(f"stock:{i}") as subscriber:
            await b.publish(f"stock:{i}", "first")
            with contextlib.suppress(TimeoutError):
                await receive(subscriber, 0.5)
                delivered += 1
    record(
        "first message right after subscribe",
        "stock RedisBackend",
        f"{delivered}/{rounds} delivered within 0.5 s",
    )


async def test_concurrent_first_subscribers_all_receive(redis_server: RedisServer) -> None:
    # 20 tasks enter subscribe() for one new channel at once. With redismpx.broadcaster's
    # Broadcast every one of them is recorded and receives; broadcaster's own Broadcast is
    # measured for comparison (its subscribe records a channel's first subscriber only after
    # awaiting the backend: the later ones overwrite the earlier ones).
    crowd = 20

    async def trial(cls: type[broadcaster.Broadcast]) -> tuple[int, list[str]]:
        async with cls(backend=RedisMPXBackend(redis_server.url)) as b:
            entered: list[None] = []
            outcomes: list[bool] = []
            errors: list[str] = []
            all_in, all_out, leave = asyncio.Event(), asyncio.Event(), asyncio.Event()

            async def subscriber() -> None:
                try:
                    async with b.subscribe("crowd") as s:
                        entered.append(None)
                        if len(entered) == crowd:
                            all_in.set()
                        try:
                            await receive(s, 2)
                            outcomes.append(True)
                        except TimeoutError:
                            outcomes.append(False)
                        if len(outcomes) == crowd:
                            all_out.set()
                        await leave.wait()  # nobody leaves (unsubscribes) before all heard
                except Exception as exc:
                    errors.append(type(exc).__name__)

            tasks = [asyncio.create_task(subscriber()) for _ in range(crowd)]
            await asyncio.wait_for(all_in.wait(), 5)
            await b.publish("crowd", "hello")
            await asyncio.wait_for(all_out.wait(), 5)  # each waits at most 2 s
            leave.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 5)
            return sum(outcomes), errors

    received, errors = await trial(Broadcast)
    assert (received, errors) == (crowd, [])
    stock_received, stock_errors = await trial(broadcaster.Broadcast)
    scenario = f"{crowd} concurrent first subscribers, one message"
    record(
        scenario,
        "stock Broadcast",
        f"{stock_received}/{crowd} received; {len(stock_errors)} raised on leaving "
        f"({', '.join(sorted(set(stock_errors))) or '-'})",
    )
    record(scenario, "our Broadcast", f"{received}/{crowd} received")


# -- the buffer, decoding, payloads -------------------------------------------------------------


async def wait_received(backend: RedisMPXBackend, count: int) -> None:
    """Until the backend's multiplexer has read ``count`` messages from Redis."""

    async def read() -> bool:
        return int(backend.multiplexer.stats()["messages_received"]) >= count

    await until(read, 10, f"{count} messages read from Redis")


@pytest.mark.parametrize(
    ("overflow", "expected"),
    [
        ("drop_oldest", [f"a{i}" for i in range(40, 50)]),
        ("drop_newest", [f"a{i}" for i in range(10)]),
        ("latest_per_channel", ["a49", "b49"]),
    ],
)
async def test_bounded_buffer_and_overflow_policy(
    redis_server: RedisServer, overflow: Any, expected: list[str]
) -> None:
    # No Broadcast (hence no listener): the messages wait in the backend's buffer.
    backend = RedisMPXBackend(redis_server.url, max_buffer=10, overflow=overflow)
    await backend.connect()
    try:
        await backend.subscribe("a")
        await backend.subscribe("b")
        publishes = [["PUBLISH", "a", f"a{i}"] for i in range(50)]
        if overflow == "latest_per_channel":
            publishes += [["PUBLISH", "b", f"b{i}"] for i in range(50)]
        await asyncio.to_thread(redis_server.pipeline, *publishes)
        await wait_received(backend, len(publishes))
        dropped = len(publishes) - len(expected)

        async def counted() -> bool:  # drops are counted in stats() at the next loop turn
            return bool(backend.multiplexer.stats()["dropped"] == dropped)

        await until(counted, 5, f"{dropped} drops counted")
        got = [(await asyncio.wait_for(backend.next_published(), 5)).message for _ in expected]
        assert (
            sorted(got) == sorted(expected) if overflow == "latest_per_channel" else got == expected
        )
        await backend.publish("a", "end")  # and nothing else was waiting
        assert (await asyncio.wait_for(backend.next_published(), 5)).message == "end"
    finally:
        await backend.disconnect()


async def test_default_buffer_holds_a_burst(redis_server: RedisServer) -> None:
    # 30,000 of the smallest messages in one pipeline: whole socket reads of them land in the
    # buffer before Broadcast's listener runs; the default bound (10,000) drops none.
    backend = RedisMPXBackend(redis_server.url)
    count = 30_000
    async with Broadcast(backend=backend) as b, b.subscribe("c") as subscriber:
        await asyncio.to_thread(redis_server.pipeline, *[["PUBLISH", "c", ""]] * count)
        for _ in range(count):
            await receive(subscriber)
        assert backend.multiplexer.stats()["dropped"] == 0


async def test_payloads_are_decoded_without_killing_the_listener(
    redis_server: RedisServer,
) -> None:
    b = Broadcast(backend=RedisMPXBackend(redis_server.url))
    async with b, b.subscribe("bytes") as subscriber:
        await redis_server.acommand("PUBLISH", "bytes", b"\xff\xfeok")
        assert (await receive(subscriber)).message == "\ufffd\ufffdok"
        await b.publish("bytes", "é ✓")  # and the listener lives on
        assert (await receive(subscriber)).message == "é ✓"
    b = Broadcast(backend=RedisMPXBackend(redis_server.url, decode_errors="surrogateescape"))
    async with b, b.subscribe("bytes") as subscriber:
        await redis_server.acommand("PUBLISH", "bytes", b"\xff\xfeok")
        event = await receive(subscriber)
        assert event.message.encode("utf-8", "surrogateescape") == b"\xff\xfeok"


@pytest.mark.parametrize(
    ("message", "expected"),
    [("text", "text"), (b"raw", "raw"), (bytearray(b"ba"), "ba"), (42, "42"), (1.5, "1.5")],
)
async def test_publish_accepts_what_redis_py_accepts(
    broadcast: broadcaster.Broadcast, message: Any, expected: str
) -> None:
    async with broadcast.subscribe("types") as subscriber:
        await broadcast.publish("types", message)
        assert (await receive(subscriber)).message == expected


async def test_publish_refuses_other_types(broadcast: broadcaster.Broadcast) -> None:
    for message in ({"a": 1}, True, None):
        with pytest.raises(TypeError, match=r"json\.dumps"):
            await broadcast.publish("types", message)


# -- construction and conn ----------------------------------------------------------------------


async def test_shared_multiplexer_is_left_open(redis_server: RedisServer) -> None:
    async with Multiplexer(redis_server.url) as mpx:
        own: asyncio.Queue[bytes] = asyncio.Queue()
        other = mpx.new_channel_subscription(lambda channel, data: own.put_nowait(data))
        await other.add("shared")
        backend = RedisMPXBackend(conn=mpx)
        async with Broadcast(backend=backend) as b:
            assert backend.multiplexer is mpx
            async with b.subscribe("shared") as subscriber:
                await b.publish("shared", "both")
                assert (await receive(subscriber)).message == "both"
                assert await asyncio.wait_for(own.get(), 5) == b"both"
            assert await numsub(redis_server, "shared") == 1  # still the other's
        assert not mpx.closed and "shared" in other
        await mpx.publish("shared", "still")
        assert await asyncio.wait_for(own.get(), 5) == b"still"
        # A second connect on the same shared multiplexer works too.
        async with Broadcast(backend=backend) as b, b.subscribe("again") as subscriber:
            await b.publish("again", "yes")
            assert (await receive(subscriber)).message == "yes"


async def test_shared_cluster_multiplexer(cluster: RedisCluster) -> None:
    # A ClusterMultiplexer subscribes shard channels and publishes them with SPUBLISH; the
    # three rooms hash to slots 1584, 9842 and 13907: one on each of the three primaries.
    async with ClusterMultiplexer(cluster.urls) as mpx, contextlib.AsyncExitStack() as stack:
        b = Broadcast(backend=RedisMPXBackend(conn=mpx))
        await stack.enter_async_context(b)
        rooms = ["room:{3}", "room:{1}", "room:{0}"]
        assert len({cluster.node_for_key(room).port for room in rooms}) == 3
        subscribers = [await stack.enter_async_context(b.subscribe(room)) for room in rooms]
        for room in rooms:
            await b.publish(room, f"to {room}")
        for room, subscriber in zip(rooms, subscribers, strict=True):
            assert (await receive(subscriber)).message == f"to {room}"


async def test_redis_py_client_settings(redis_server: RedisServer) -> None:
    client = aioredis.Redis.from_url(redis_server.url, client_name="from-redis-py")
    try:
        backend = RedisMPXBackend(conn=client, health_check_interval=1.0)
        async with Broadcast(backend=backend) as b, b.subscribe("py") as subscriber:
            await b.publish("py", "via from_redis")
            assert (await receive(subscriber)).message == "via from_redis"
            text = await redis_server.acommand("CLIENT", "LIST", "TYPE", "pubsub", decode=True)
            assert "name=from-redis-py" in text
        assert await client.ping()  # not closed by the backend
    finally:
        await client.aclose()


async def test_url_defaults_to_redis_url(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    async with Broadcast(backend=RedisMPXBackend()) as b, b.subscribe("env") as subscriber:
        await b.publish("env", "from $REDIS_URL")
        assert (await receive(subscriber)).message == "from $REDIS_URL"


async def test_wait_connected_fails_connect_when_redis_is_unreachable(
    redis_server: RedisServer,
) -> None:
    url = redis_server.url
    await redis_server.astop()
    backend = RedisMPXBackend(url, wait_connected=0.3)
    with pytest.raises(TimeoutError):
        await backend.connect()
    with pytest.raises(RuntimeError, match="not connected"):
        await backend.subscribe("x")


async def test_invalid_arguments(redis_server: RedisServer) -> None:
    mpx = Multiplexer(redis_server.url)
    try:
        with pytest.raises(TypeError, match="either url or conn"):
            RedisMPXBackend(redis_server.url, conn=mpx)
        with pytest.raises(TypeError, match="existing Multiplexer"):
            RedisMPXBackend(conn=mpx, password="x")
        with pytest.raises(TypeError, match="conn must be"):
            RedisMPXBackend(conn=object())
        with pytest.raises(ValueError, match="overflow"):
            RedisMPXBackend(redis_server.url, overflow="close")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="decode_errors"):
            RedisMPXBackend(redis_server.url, decode_errors="strict")
        with pytest.raises(LookupError):
            RedisMPXBackend(redis_server.url, decode_errors="no-such-handler")
        with pytest.raises(TypeError):  # a misspelt multiplexer option, at connect()
            await RedisMPXBackend(redis_server.url, pasword="x").connect()
        backend = RedisMPXBackend(redis_server.url)
        for call in (backend.subscribe("x"), backend.publish("x", "y"), backend.next_published()):
            with pytest.raises(RuntimeError, match="not connected"):
                await call
        await backend.connect()
        try:
            with pytest.raises(RuntimeError, match="already connected"):
                await backend.connect()
        finally:
            await backend.disconnect()
    finally:
        await mpx.aclose()


async def test_closing_a_shared_multiplexer_ends_the_listener_with_an_error(
    redis_server: RedisServer,
) -> None:
    mpx = Multiplexer(redis_server.url)
    backend = RedisMPXBackend(conn=mpx)
    await backend.connect()
    waiting = asyncio.create_task(backend.next_published())
    await mpx.aclose()
    with pytest.raises(Exception, match="closed"):
        await asyncio.wait_for(waiting, 5)
    await backend.disconnect()


# -- outages: delivery comes back by itself -----------------------------------------------------

KINDS = ["RedisMPXBackend", "stock RedisBackend"]


def make_broadcast(kind: str, url: str) -> broadcaster.Broadcast:
    if kind == "RedisMPXBackend":
        return Broadcast(backend=RedisMPXBackend(url))
    return broadcaster.Broadcast(backend=RedisBackend(url))


@contextlib.asynccontextmanager
async def subscribed(kind: str, b: broadcaster.Broadcast, channel: str) -> AsyncIterator[Any]:
    """``b`` connected and subscribed to ``channel``. The stock backend's listener only starts
    reading once a second channel is subscribed (redis-py 8 records a channel only after
    SUBSCRIBE was sent, and the listener looks before): it gets one, so that the comparison
    measures outages, not that. Leaving is bounded and, for the stock backend, may fail."""
    stock = kind != "RedisMPXBackend"
    await b.connect()
    stack = contextlib.AsyncExitStack()
    try:
        subscriber = await stack.enter_async_context(b.subscribe(channel))
        if stock:
            await stack.enter_async_context(b.subscribe(channel + ":wake"))
        yield subscriber
    finally:
        try:
            async with asyncio.timeout(10):
                await stack.aclose()
                await b.disconnect()
        except Exception:
            if not stock:
                raise


async def delivering(subscriber: Any, publish: Callable[[str], Awaitable[Any]]) -> bool:
    """Whether delivery works now (a probe arrives within 5 s); the queue is left empty."""
    ok = await delivery_back(subscriber, publish, asyncio.get_running_loop().time(), 5) is not None
    await drain(subscriber)
    return ok


FAULTS = ["CLIENT KILL TYPE pubsub", "server restart", "server down 1 s, restarted"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fault", FAULTS)
async def test_delivery_comes_back_after_an_outage(
    redis_server: RedisServer, fault: str, kind: str
) -> None:
    ours = kind == "RedisMPXBackend"
    limit = OURS_LIMIT if ours else STOCK_LIMIT
    loop = asyncio.get_running_loop()
    publish = server_publisher(redis_server, "live")
    b = make_broadcast(kind, redis_server.url)
    async with subscribed(kind, b, "live") as subscriber:
        if not await delivering(subscriber, publish):
            assert not ours
            record(fault, kind, "never delivered, even before the fault")
            return
        t0 = loop.time()
        if fault == "CLIENT KILL TYPE pubsub":
            assert await redis_server.acommand("CLIENT", "KILL", "TYPE", "pubsub") >= 1
            detail = ""
        else:
            await redis_server.akill()
            if fault == "server down 1 s, restarted":
                await asyncio.sleep(1.0)  # the outage itself: the server stays down 1 s
            await redis_server.arestart()
            detail = f" (the server was up again after {loop.time() - t0:.3f} s)"
        back = await delivery_back(subscriber, publish, t0, limit)
        if not ours:
            detail += f"; {stock_listener(b)}"
        record(fault, kind, f"delivery {seconds(back, limit)}{detail}")
        if ours:
            assert back is not None
            backend = b._backend
            assert isinstance(backend, RedisMPXBackend)
            assert backend.multiplexer.stats()["reconnects"] >= 1
            await b.publish("live", "published by the backend")  # its connection is back too
            assert (await receive_past_probes(subscriber)).message == "published by the backend"


async def test_subscribe_and_publish_during_an_outage(redis_server: RedisServer) -> None:
    backend = RedisMPXBackend(redis_server.url, publish_timeout=0.3)
    async with Broadcast(backend=backend) as b, b.subscribe("early") as early:
        await redis_server.akill()
        with pytest.raises(PublishTimeout):
            await b.publish("early", "nobody can have it")
        entered = asyncio.Event()

        async def late() -> broadcaster.Event:
            async with b.subscribe("late") as subscriber:
                entered.set()
                return await receive(subscriber)

        task = asyncio.create_task(late())
        done, _ = await asyncio.wait({task}, timeout=0.3)
        assert not done and not entered.is_set()  # subscribe() waits for Redis
        await redis_server.arestart()
        await asyncio.wait_for(entered.wait(), 10)
        assert await numsub(redis_server, "late") == 1  # confirmed when it returned
        await b.publish("late", "hello")
        assert (await asyncio.wait_for(task, 5)).message == "hello"
        await b.publish("early", "still here")
        assert (await receive(early)).message == "still here"


async def test_our_broadcast_hands_over_a_cancelled_first_subscribe(
    redis_server: RedisServer,
) -> None:
    async with Broadcast(backend=RedisMPXBackend(redis_server.url)) as b:
        await redis_server.akill()
        entered = asyncio.Event()

        async def first() -> None:
            async with b.subscribe("handover"):
                raise AssertionError("the first subscriber was cancelled: never entered")

        async def second() -> broadcaster.Event:
            async with b.subscribe("handover") as subscriber:
                entered.set()
                return await receive(subscriber)

        task_a = asyncio.create_task(first())
        task_b = asyncio.create_task(second())
        done, _ = await asyncio.wait({task_a, task_b}, timeout=0.2)
        assert not done  # both wait for Redis; the first asked the backend
        task_a.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task_a
        await redis_server.arestart()
        await asyncio.wait_for(entered.wait(), 10)
        await b.publish("handover", "to the second")
        assert (await asyncio.wait_for(task_b, 5)).message == "to the second"


async def test_a_refused_subscribe_raises_its_own_error(redis_server: RedisServer) -> None:
    await redis_server.acommand(
        "ACL", "SETUSER", "limited", "on", ">pw", "resetchannels", "&ok:*", "+@all"
    )
    url = f"redis://limited:pw@{redis_server.host}:{redis_server.port}"

    async def trial(cls: type[broadcaster.Broadcast]) -> list[str]:
        async with cls(backend=RedisMPXBackend(url)) as b:

            async def subscriber() -> None:
                async with b.subscribe("secret"):
                    raise AssertionError("entered a refused channel")

            results = await asyncio.wait_for(
                asyncio.gather(subscriber(), subscriber(), return_exceptions=True), 10
            )
            async with b.subscribe("ok:fine") as fine:  # the others are not affected
                await b.publish("ok:fine", "yes")
                assert (await receive(fine)).message == "yes"
            return [type(r).__name__ for r in results]

    assert await trial(Broadcast) == [SubscribeRefused.__name__] * 2
    record(
        "2 subscribers to a channel the ACL refuses",
        "stock Broadcast",
        f"raised {', '.join(await trial(broadcaster.Broadcast))}",
    )
    record("2 subscribers to a channel the ACL refuses", "our Broadcast", "raised SubscribeRefused")


# -- a Sentinel failover ------------------------------------------------------------------------

SENTINEL_WAYS = ["redis+sentinel:// URL", "redis-py Sentinel client", "stock RedisBackend"]


@pytest.mark.timeout(90)
@pytest.mark.parametrize("way", SENTINEL_WAYS)
async def test_delivery_comes_back_after_a_sentinel_failover(
    sentinel_factory: Callable[..., RedisSentinel], way: str
) -> None:
    # SENTINEL FAILOVER; then probes published on the new primary must reach the subscriber,
    # and what the backend publishes must reach a subscriber of the new primary. The stock
    # backend cannot follow Sentinel (broadcaster has no such URL): it is given the primary's
    # own redis:// URL, as an app without Sentinel support would be.
    deployment = await asyncio.to_thread(sentinel_factory)
    ours = way != "stock RedisBackend"
    kind = "RedisMPXBackend" if ours else "stock RedisBackend"
    client = None
    if way == "redis+sentinel:// URL":
        b: broadcaster.Broadcast = Broadcast(backend=RedisMPXBackend(deployment.url))
    elif way == "redis-py Sentinel client":
        manager = aiosentinel.Sentinel(deployment.sentinel_addresses)
        client = manager.master_for(deployment.service_name)
        b = Broadcast(backend=RedisMPXBackend(conn=client))
    else:
        b = broadcaster.Broadcast(backend=RedisBackend(deployment.primary.url))
    limit = OURS_LIMIT if ours else STOCK_LIMIT
    loop = asyncio.get_running_loop()
    scenario = f"Sentinel failover ({way})" if ours else "Sentinel failover (primary's URL)"
    try:
        old = deployment.primary
        async with subscribed(kind, b, "live") as subscriber:
            assert await delivering(subscriber, server_publisher(old, "live")), "before"
            t0 = loop.time()
            new = await deployment.afailover()
            promoted = loop.time() - t0
            back = await delivery_back(subscriber, server_publisher(new, "live"), t0, limit)
            # What the backend publishes now: does it reach a subscriber of the new primary?
            async with Multiplexer(new.url) as witness:
                heard: asyncio.Queue[bytes] = asyncio.Queue()
                await witness.new_channel_subscription(
                    lambda channel, data: heard.put_nowait(data)
                ).add("live")
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5):
                        await b.publish("live", "from the backend")
                try:
                    reached = await asyncio.wait_for(heard.get(), 2) == b"from the backend"
                except TimeoutError:
                    reached = False
            detail = f" (new primary confirmed after {promoted:.3f} s)"
            if not ours:
                detail += f"; {stock_listener(b)}"
            record(scenario, kind, f"delivery {seconds(back, limit)}{detail}")
            record(
                scenario,
                kind,
                "its publish reaches the new primary"
                if reached
                else "its publish does NOT reach the new primary",
            )
            if ours:
                assert back is not None
                assert reached
                backend = b._backend
                assert isinstance(backend, RedisMPXBackend)
                assert backend.multiplexer.stats()["failovers"] >= 1
    finally:
        if client is not None:
            await client.aclose()


async def test_stock_backend_on_a_payload_that_is_not_utf8(redis_server: RedisServer) -> None:
    # For comparison only: a payload that is not UTF-8, then a valid one.
    b = make_broadcast("stock RedisBackend", redis_server.url)
    publish = server_publisher(redis_server, "bytes")
    async with subscribed("stock RedisBackend", b, "bytes") as subscriber:
        if not await delivering(subscriber, publish):
            record("a payload that is not UTF-8", "stock RedisBackend", "never delivered")
            return
        t0 = asyncio.get_running_loop().time()
        await redis_server.acommand("PUBLISH", "bytes", b"\xff\xfeok")
        back = await delivery_back(subscriber, publish, t0, STOCK_LIMIT)
        record(
            "a payload that is not UTF-8, then valid ones",
            "stock RedisBackend",
            f"delivery {seconds(back, STOCK_LIMIT)}; {stock_listener(b)}",
        )


# -- the documentation's example runs -----------------------------------------------------------


def doc_blocks(heading: str | None = None) -> list[str]:
    """The python blocks of docs/integrations/broadcaster.md (of one section if ``heading``)."""
    text = DOC.read_text(encoding="utf-8")
    if heading is not None:
        section = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
        assert section is not None, f"no {heading!r} section in {DOC.name}"
        text = section.group(1)
    return re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)


def test_every_python_block_of_the_doc_compiles() -> None:
    blocks = doc_blocks()
    assert len(blocks) >= 4
    for i, block in enumerate(blocks):
        compile(block, f"{DOC.name} python block #{i + 1}", "exec")


@pytest.mark.timeout(60)
def test_the_starlette_example_runs(redis_server: RedisServer) -> None:
    code = doc_blocks("## Starlette")[0]
    assert "redis://localhost:6379" in code
    namespace: dict[str, Any] = {"__name__": "chat_example"}
    exec(
        compile(code.replace("redis://localhost:6379", redis_server.url), DOC.name, "exec"),
        namespace,
    )
    with TestClient(namespace["app"]) as client, client.websocket_connect("/ws/lobby") as alice:
        alice.send_text("alice joined")
        assert alice.receive_text() == "alice joined"  # her own first message comes back
        with (
            client.websocket_connect("/ws/lobby") as bob,
            client.websocket_connect("/ws/kitchen") as carol,
        ):
            bob.send_text("bob joined")
            assert bob.receive_text() == "bob joined"
            carol.send_text("carol joined")
            assert carol.receive_text() == "carol joined"
            alice.send_text("hello lobby")
            assert bob.receive_text() == "hello lobby"
            assert alice.receive_text() == "bob joined"
            assert alice.receive_text() == "hello lobby"
            carol.send_text("kitchen only")
            assert carol.receive_text() == "kitchen only"
        response = client.get("/healthz")
        assert response.status_code == 200
        assert response.json()["state"] == "connected"
