"""``redismpx.litestar.RedisMPXChannelsBackend`` against real servers, through Litestar.

The contract is the one Litestar's channels documentation gives a backend and its plugin:
events are bytes; a subscriber's event stream holds the events of every channel it
subscribed to; unsubscribing stops them; ``publish`` is queued and sent eventually (the
plugin drains its queue at shutdown), ``wait_published`` is sent directly; every backend on
the same broker sees the same messages; ``get_history`` is only for backends that keep
history. It is checked end to end, through ``ChannelsPlugin`` in a Litestar application
driven by its ``TestClient`` (WebSocket subscribers, HTTP publishers), and on the backend
itself.

Then what the stock ``RedisChannelsPubSubBackend`` gets wrong, measured side by side (``pytest
-s`` prints one ``litestar:`` line per measurement; every wait is bounded and a backend that
does not recover is reported as "never within N s"): publishing right after subscribing,
restarting after shutdown, the server dropping the Pub/Sub connection, a server restart and a
Sentinel failover. Only this module's backend is asserted on; the stock one is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import os
import queue
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest

if os.environ.get("CI", "").strip().lower() in ("", "0", "false", "no"):
    pytest.importorskip("litestar")  # in CI a missing Litestar fails instead (see conftest)

import redis.asyncio as aioredis
from litestar import Litestar, Request, Response, post, websocket
from litestar.channels import ChannelsBackend, ChannelsPlugin
from litestar.channels.backends.redis import RedisChannelsPubSubBackend
from litestar.channels.subscriber import Subscriber
from litestar.connection import WebSocket
from litestar.testing import TestClient
from litestar.testing.websocket_test_session import WebSocketTestSession
from redis.asyncio.sentinel import Sentinel

from redismpx import (
    ConnectionLost,
    InvalidArgument,
    InvalidArgumentType,
    Multiplexer,
    PublishTimeout,
)
from redismpx.litestar import RedisMPXChannelsBackend
from redismpx.server import RedisSentinel, RedisServer

pytestmark = pytest.mark.timeout(120)

#: How long a backend gets to deliver again after a fault before it is "never".
RECOVERY_BOUND = 10.0
#: Rounds of "publish right after subscribe" through the application.
ROUNDS = 100
#: Rounds of the stock test suite's Pub/Sub check (fresh backend, subscribe, publish, read).
FLAKE_ROUNDS = 28


def _report(line: str) -> None:
    print(f"\nlitestar: {line}", flush=True)


# -- the application under test ---------------------------------------------------------------


def make_app(backend: ChannelsBackend, **plugin_options: Any) -> tuple[Litestar, ChannelsPlugin]:
    """A Litestar app with ``backend`` behind a ChannelsPlugin, a WebSocket route streaming a
    channel's events and two HTTP routes publishing to a channel.

    ``/ws?channel=c`` accepts the connection only once the plugin's ``subscribe`` returned:
    the client knows the subscription is in place when its connect returns.
    ``POST /publish?channel=c`` calls ``wait_published`` (503 with the error's name if it
    raised or took over 2 s); ``POST /enqueue?channel=c`` calls the non-blocking ``publish``.
    """
    plugin_options.setdefault("arbitrary_channels_allowed", "channels" not in plugin_options)
    plugin = ChannelsPlugin(backend=backend, **plugin_options)

    @websocket("/ws")
    async def stream(socket: WebSocket[Any, Any, Any]) -> None:
        async with plugin.start_subscription(socket.query_params["channel"]) as subscriber:
            await socket.accept()
            async with subscriber.run_in_background(socket.send_bytes):
                while (await socket.receive())["type"] != "websocket.disconnect":
                    pass

    @post("/publish", status_code=200)
    async def publish(request: Request[Any, Any, Any]) -> Response[str]:
        data = await request.body()
        try:
            async with asyncio.timeout(2.0):
                await plugin.wait_published(data, request.query_params["channel"])
        except Exception as exc:
            return Response(type(exc).__name__, status_code=503)
        return Response("ok")

    @post("/enqueue", status_code=202)
    async def enqueue(request: Request[Any, Any, Any]) -> None:
        plugin.publish(await request.body(), request.query_params["channel"])

    app = Litestar(route_handlers=[stream, publish, enqueue], plugins=[plugin], logging_config=None)
    return app, plugin


def receive(ws: WebSocketTestSession, timeout: float) -> bytes | None:
    """The next event on ``ws``, or None if none came within ``timeout`` seconds."""
    try:
        message = ws.receive(timeout=timeout)
    except queue.Empty:
        return None
    assert message["type"] == "websocket.send", message
    data = message.get("bytes")
    assert isinstance(data, bytes), message
    return data


def publish(client: TestClient[Any], channel: str, data: bytes) -> int:
    return client.post("/publish", params={"channel": channel}, content=data).status_code


def enqueue(client: TestClient[Any], channel: str, data: bytes) -> int:
    return client.post("/enqueue", params={"channel": channel}, content=data).status_code


class ClosingStock(RedisChannelsPubSubBackend):
    """Litestar's stock Pub/Sub backend, whose redis-py client is closed after its shutdown
    (test hygiene: the client was made for it)."""

    async def on_shutdown(self) -> None:
        try:
            await super().on_shutdown()
        finally:
            await self._redis.aclose()


def stock(url: str) -> RedisChannelsPubSubBackend:
    return ClosingStock(redis=aioredis.Redis.from_url(url))


async def take(subscriber: Subscriber, count: int, timeout: float = 5.0) -> list[bytes]:
    """The next ``count`` events of ``subscriber`` (AssertionError after ``timeout``)."""
    events: list[bytes] = []
    stream = subscriber.iter_events()
    try:
        async with asyncio.timeout(timeout):
            while len(events) < count:
                events.append(await anext(stream))
    except TimeoutError:
        raise AssertionError(f"{len(events)} of {count} events within {timeout} s") from None
    finally:
        await stream.aclose()
    return events


async def numsub(server: RedisServer, channel: str) -> int:
    reply = await server.acommand("PUBSUB", "NUMSUB", channel)
    return int(reply[1])


async def wait_numsub(server: RedisServer, channel: str, expected: int) -> None:
    """Poll the server (no event exists for it) until ``channel`` has ``expected`` subscribers."""
    async with asyncio.timeout(5):
        while await numsub(server, channel) != expected:
            await asyncio.sleep(0.005)


@pytest.fixture
async def backend(redis_server: RedisServer) -> AsyncIterator[RedisMPXChannelsBackend]:
    """A started backend on ``redis_server`` (in the test's own event loop)."""
    b = RedisMPXChannelsBackend(redis_server.url)
    await b.on_startup()
    yield b
    await b.on_shutdown()


# -- construction ----------------------------------------------------------------------------------


def test_bad_arguments_are_refused_at_construction(redis_server: RedisServer) -> None:
    with pytest.raises(InvalidArgumentType):
        RedisMPXChannelsBackend(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        RedisMPXChannelsBackend(Multiplexer(redis_server.url), password="x")
    with pytest.raises(InvalidArgument):
        RedisMPXChannelsBackend(redis_server.url, overflow="close")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        RedisMPXChannelsBackend(redis_server.url, max_buffer=0)
    with pytest.raises(InvalidArgument):
        RedisMPXChannelsBackend(redis_server.url, subscribe_timeout=0)
    with pytest.raises(InvalidArgumentType):
        RedisMPXChannelsBackend(redis_server.url, publish_timeout="5")  # type: ignore[arg-type]


async def test_not_started_raises_runtime_error(redis_server: RedisServer) -> None:
    b = RedisMPXChannelsBackend(redis_server.url)
    with pytest.raises(RuntimeError, match="not started"):
        await b.publish(b"x", ["a"])
    with pytest.raises(RuntimeError, match="not started"):
        await b.subscribe(["a"])
    with pytest.raises(RuntimeError, match="not started"):
        await anext(b.stream_events())
    await b.unsubscribe(["a"])  # nothing to stop: a no-op
    await b.on_shutdown()  # idempotent, even before startup


async def test_get_history_is_not_implemented(backend: RedisMPXChannelsBackend) -> None:
    with pytest.raises(NotImplementedError):
        await backend.get_history("a", 10)
    async with ChannelsPlugin(backend=backend, channels=["a"]) as plugin:
        with pytest.raises(NotImplementedError):
            await plugin.subscribe("a", history=1)


@pytest.mark.parametrize("form", ["url", "redis-py client", "multiplexer"])
async def test_each_form_of_redis_argument(redis_server: RedisServer, form: str) -> None:
    shared = Multiplexer(redis_server.url)
    client = aioredis.Redis.from_url(redis_server.url)
    given: Any = {"url": redis_server.url, "redis-py client": client, "multiplexer": shared}[form]
    b = RedisMPXChannelsBackend(given)
    try:
        async with ChannelsPlugin(backend=b, channels=["a"]) as plugin:
            assert (b.multiplexer is shared) == (form == "multiplexer")
            assert b.owns_multiplexer == (form != "multiplexer")
            subscriber = await plugin.subscribe("a")
            await plugin.wait_published(b"hello", "a")
            assert await take(subscriber, 1) == [b"hello"]
            used = b.multiplexer
        assert b.multiplexer is None
        assert used is not None
        # Shutdown closes what the backend opened, never a multiplexer it was given.
        assert used.closed == (form != "multiplexer")
        if form == "multiplexer":
            await wait_numsub(redis_server, "a", 0)  # its subscription is gone
    finally:
        await shared.aclose()
        await client.aclose()


# -- the backend contract ------------------------------------------------------------------------


async def test_stream_yields_str_channel_and_bytes_of_subscribed_channels(
    backend: RedisMPXChannelsBackend, redis_server: RedisServer
) -> None:
    await backend.subscribe({"a", "b"})
    assert await numsub(redis_server, "a") == 1  # confirmed by the time subscribe returned
    await backend.publish(b"\x00\xff binary", ["not-subscribed"])
    await backend.publish(b"\x00\xff binary", ["a", "b"])
    stream = backend.stream_events()
    async with asyncio.timeout(5):
        got = {await anext(stream), await anext(stream)}
    assert got == {("a", b"\x00\xff binary"), ("b", b"\x00\xff binary")}
    await stream.aclose()


async def test_unsubscribe_stops_events_even_those_already_buffered(
    backend: RedisMPXChannelsBackend, redis_server: RedisServer
) -> None:
    await backend.subscribe(["a", "b"])
    mpx = backend.multiplexer
    assert mpx is not None
    await backend.publish(b"buffered", ["a"])
    async with asyncio.timeout(5):  # in the backend's buffer, not yet read by anyone
        while mpx.stats()["messages_dispatched"] < 1:
            await asyncio.sleep(0.005)
    await backend.unsubscribe(["a"])
    await backend.unsubscribe(["never-subscribed"])  # ignored
    await backend.publish(b"after", ["a"])
    await backend.publish(b"marker", ["b"])
    stream = backend.stream_events()
    async with asyncio.timeout(5):
        assert await anext(stream) == ("b", b"marker")  # nothing of "a" came first
    await stream.aclose()
    await wait_numsub(redis_server, "a", 0)


async def test_events_keep_redis_order(backend: RedisMPXChannelsBackend) -> None:
    async with ChannelsPlugin(backend=backend, channels=["a"]) as plugin:
        subscriber = await plugin.subscribe("a")
        sent = [str(i).encode() for i in range(1000)]
        for data in sent:
            plugin.publish(data, "a")  # queued; the plugin's worker sends them in order
        assert await take(subscriber, len(sent)) == sent


@pytest.mark.parametrize(
    ("overflow", "expected"),
    [
        ("drop_oldest", [str(i).encode() for i in range(40, 50)]),
        ("drop_newest", [str(i).encode() for i in range(10)]),
        ("latest_per_channel", [b"49"]),
    ],
)
async def test_buffer_is_bounded_with_its_overflow_policy(
    redis_server: RedisServer, overflow: Any, expected: list[bytes]
) -> None:
    b = RedisMPXChannelsBackend(redis_server.url, max_buffer=10, overflow=overflow)
    await b.on_startup()
    try:
        await b.subscribe(["a"])
        mpx = b.multiplexer
        assert mpx is not None
        for i in range(50):  # nobody reads the stream meanwhile
            await b.publish(str(i).encode(), ["a"])
        # Drops reach stats() once reported (at most once per loop turn, after the messages).
        async with asyncio.timeout(5):
            while mpx.stats()["dropped"] < 50 - len(expected):
                await asyncio.sleep(0.005)
        assert mpx.stats()["messages_dispatched"] == 50
        assert mpx.stats()["dropped"] == 50 - len(expected)
        stream = b.stream_events()
        async with asyncio.timeout(5):
            got = [(await anext(stream))[1] for _ in expected]
            await b.publish(b"next", ["a"])
            assert await anext(stream) == ("a", b"next")  # the buffer is usable again
        assert got == expected
        await stream.aclose()
    finally:
        await b.on_shutdown()


async def test_publish_with_a_timeout_raises_publish_timeout(redis_server: RedisServer) -> None:
    b = RedisMPXChannelsBackend(redis_server.url, publish_timeout=0.2)
    await b.on_startup()
    try:
        await b.publish(b"x", ["a", "b"])
        redis_server.pause()  # connected, but nothing is answered
        with pytest.raises(PublishTimeout):
            await b.publish(b"x", ["a", "b"])
        with pytest.raises(PublishTimeout):
            await b.publish(b"x", ["a"])
    finally:
        redis_server.resume()
        await b.on_shutdown()


async def test_publish_cut_by_shutdown_raises_connection_lost(redis_server: RedisServer) -> None:
    b = RedisMPXChannelsBackend(redis_server.url)
    await b.on_startup()
    await b.publish(b"x", ["a"])  # the publish connection is up
    redis_server.pause()  # nothing is answered from now on
    try:
        pending = asyncio.create_task(b.publish(b"y", ["a"]))
        await asyncio.sleep(0)  # let it start (written or not, shutdown cuts it)
        await b.on_shutdown()
        with pytest.raises(ConnectionLost):
            await pending
    finally:
        redis_server.resume()


async def _queued_publishes_through_a_restart(
    server: RedisServer, backend: ChannelsBackend
) -> tuple[str, str]:
    """Queue ``publish`` calls (about one a millisecond) across a SIGKILL and restart of the
    server, then queue a marker once Redis is back; an independent redismpx subscriber says
    whether the marker reached Redis, and the plugin's shutdown (which waits for its queue)
    is bounded. Returns (marker outcome, shutdown outcome)."""
    received: asyncio.Queue[bytes] = asyncio.Queue()
    activations = 0

    def on_activation(name: bytes) -> None:
        nonlocal activations
        activations += 1

    plugin = ChannelsPlugin(backend=backend, channels=["a"])
    async with Multiplexer(server.url) as observer:
        watch = observer.new_channel_subscription(
            lambda channel, data: received.put_nowait(data), on_activation=on_activation
        )
        await watch.add("a")
        await plugin.__aenter__()
        stop = asyncio.Event()

        async def load() -> None:
            while not stop.is_set():
                plugin.publish(b"load", "a")
                await asyncio.sleep(0.001)

        loader = asyncio.create_task(load())
        async with asyncio.timeout(5):
            assert await received.get() == b"load"  # the load flows
        await server.akill()
        await server.arestart()
        async with asyncio.timeout(5):  # the observer is subscribed again (no event for it)
            while activations < 2:
                await asyncio.sleep(0.005)
        stop.set()
        await loader
        plugin.publish(b"marker", "a")
        marker = "never within 20 s"  # behind the load still queued, sent one at a time
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(20):
                while await received.get() != b"marker":
                    pass
                marker = "delivered"
        shutdown = "ok"
        try:
            async with asyncio.timeout(5):
                await plugin.__aexit__(None, None, None)
        except TimeoutError:
            shutdown = "hung (over 5 s)"
        except Exception as exc:
            shutdown = f"raised {type(exc).__name__}: {exc}"
        # A plugin whose workers died and whose shutdown was abandoned leaves tasks behind:
        # take their exceptions and collect them now. Left to a later garbage collection they
        # made pytest's final AST rewrite fail on CPython 3.11.7 ("AST constructor recursion
        # depth mismatch", whenever another test ran after this one).
        for task in (plugin._pub_task, plugin._sub_task):
            if task is not None and task.done() and not task.cancelled():
                task.exception()
        if isinstance(backend, RedisChannelsPubSubBackend):
            await backend._redis.aclose()
    gc.collect()
    return marker, shutdown


async def test_queued_publishes_survive_a_server_restart(redis_server: RedisServer) -> None:
    """Litestar's plugin sends queued ``publish`` calls from one worker task, which the first
    exception of ``backend.publish`` ends for good (later ones stay queued, and shutdown waits
    for them forever). This backend waits through the outage instead."""
    ours = await _queued_publishes_through_a_restart(
        redis_server, RedisMPXChannelsBackend(redis_server.url)
    )
    theirs = await _queued_publishes_through_a_restart(redis_server, stock(redis_server.url))
    _report(
        f"queued publish across a server restart: redismpx marker {ours[0]}, shutdown "
        f"{ours[1]}; stock marker {theirs[0]}, shutdown {theirs[1]}"
    )
    assert ours == ("delivered", "ok")


async def test_subscribe_times_out_during_an_outage_and_completes_after(
    redis_server: RedisServer,
) -> None:
    b = RedisMPXChannelsBackend(redis_server.url, subscribe_timeout=0.3)
    await b.on_startup()
    try:
        await b.subscribe(["a"])
        await redis_server.akill()
        with pytest.raises(TimeoutError):
            await b.subscribe(["b"])
        await redis_server.arestart()
        await wait_numsub(redis_server, "b", 1)  # still wanted: subscribed once Redis is back
        await b.subscribe(["b"])
    finally:
        await b.on_shutdown()


# -- end to end: Litestar app, TestClient --------------------------------------------------------


def test_websocket_subscribers_receive_what_is_published(redis_server: RedisServer) -> None:
    app, _ = make_app(RedisMPXChannelsBackend(redis_server.url), channels=["news", "chat"])
    with TestClient(app) as client:
        with (
            client.websocket_connect("/ws?channel=news") as news_1,
            client.websocket_connect("/ws?channel=news") as news_2,
            client.websocket_connect("/ws?channel=chat") as chat,
        ):
            assert publish(client, "news", b"headline") == 200
            assert enqueue(client, "chat", b"hi") == 202
            assert receive(news_1, 5) == b"headline"
            assert receive(news_2, 5) == b"headline"
            assert receive(chat, 5) == b"hi"
            assert publish(client, "chat", b"second") == 200
            assert receive(chat, 5) == b"second"  # not b"headline": only its channel
        # The last WebSocket of a channel left: the backend unsubscribed it.
        client.blocking_portal.call(wait_numsub, redis_server, "chat", 0)


def test_two_apps_on_one_redis_share_messages(redis_server: RedisServer) -> None:
    """Litestar's "inter-process communication": every backend on the broker sees it all."""
    app_a, _ = make_app(RedisMPXChannelsBackend(redis_server.url), channels=["room"])
    app_b, _ = make_app(RedisMPXChannelsBackend(redis_server.url), channels=["room"])
    with (
        TestClient(app_a) as a,
        TestClient(app_b) as b,
        b.websocket_connect("/ws?channel=room") as ws,
    ):
        assert publish(a, "room", b"from a") == 200
        assert receive(ws, 5) == b"from a"


def test_queued_publishes_are_sent_at_shutdown(redis_server: RedisServer) -> None:
    """``publish`` only enqueues; "on shutdown, the plugin will wait for all queues to empty"."""
    app_a, _ = make_app(RedisMPXChannelsBackend(redis_server.url), channels=["room"])
    app_b, _ = make_app(RedisMPXChannelsBackend(redis_server.url), channels=["room"])
    with TestClient(app_b) as b, b.websocket_connect("/ws?channel=room") as ws:
        with TestClient(app_a) as a:
            for i in range(200):
                assert enqueue(a, "room", str(i).encode()) == 202
        # app_a has shut down: everything it queued reached Redis before its backend closed.
        got = [receive(ws, 5) for _ in range(200)]
    assert got == [str(i).encode() for i in range(200)]


def test_publish_right_after_subscribe_is_never_lost(redis_server: RedisServer) -> None:
    """A WebSocket is accepted once ``subscribe`` returned; what is published then arrives.

    ``ROUNDS`` rounds, each on a new channel (a fresh ``SUBSCRIBE``), through the app; the
    stock backend is measured the same way.
    """
    lost: dict[str, int] = {}
    for name, b in [
        ("redismpx", RedisMPXChannelsBackend(redis_server.url)),
        ("stock", stock(redis_server.url)),
    ]:
        app, _ = make_app(b)
        lost[name] = 0
        with TestClient(app) as client:
            for i in range(ROUNDS):
                channel = f"{name}-round-{i}"
                with client.websocket_connect(f"/ws?channel={channel}") as ws:
                    assert publish(client, channel, b"first") == 200
                    # A slow delivery is no loss: redismpx's bar (none lost) gets room for a
                    # loaded machine; 2 s tells the stock backend's losses.
                    lost[name] += receive(ws, 10.0 if name == "redismpx" else 2.0) != b"first"
    _report(
        f"publish right after subscribe, {ROUNDS} rounds: lost redismpx {lost['redismpx']}, "
        f"stock {lost['stock']}"
    )
    assert lost["redismpx"] == 0


# -- restarting after shutdown -------------------------------------------------------------------


def _two_lifespans(backend: ChannelsBackend) -> list[str]:
    """Run the same app (same plugin, same backend) twice, each time in a new TestClient
    (a new event loop), and deliver one message each time; what happened, per run."""
    app, _ = make_app(backend, channels=["room"])
    outcomes = []
    for run in range(2):
        outcome = ""
        try:
            with TestClient(app, timeout=5) as client:
                with client.websocket_connect("/ws?channel=room") as ws:
                    status = publish(client, "room", f"run {run}".encode())
                    data = receive(ws, 5.0)
                outcome = "ok" if data == f"run {run}".encode() else f"lost (publish {status})"
        except BaseException as exc:  # what the stock backend raises at startup or shutdown
            errors = "; ".join(
                f"{type(e).__name__}: {e}" for e in getattr(exc, "exceptions", [exc])
            )
            outcome = f"{outcome}, then {errors}" if outcome else errors
        outcomes.append(outcome)
    return outcomes


def test_restart_after_shutdown(redis_server: RedisServer) -> None:
    ours = _two_lifespans(RedisMPXChannelsBackend(redis_server.url))
    shared = Multiplexer(redis_server.url)  # a multiplexer of one's own survives both runs
    borrowed = _two_lifespans(RedisMPXChannelsBackend(shared))
    # The stock backend as one uses it: with a redis-py client that outlives the app.
    theirs = _two_lifespans(
        RedisChannelsPubSubBackend(redis=aioredis.Redis.from_url(redis_server.url))
    )
    _report(f"restart after shutdown (2 TestClient runs): redismpx {ours}, stock {theirs}")
    assert ours == ["ok", "ok"]
    assert borrowed == ["ok", "ok"]
    assert not shared.closed
    shared.close()


def test_startup_fails_while_redis_is_down_and_works_once_it_is_back(
    redis_server: RedisServer,
) -> None:
    """Declared channels are subscribed at startup: an unreachable Redis fails the startup
    after ``subscribe_timeout``; the same app (no shutdown ran) starts once Redis is back."""
    backend = RedisMPXChannelsBackend(redis_server.url, subscribe_timeout=0.3)
    app, _ = make_app(backend, channels=["room"])
    redis_server.kill()
    with pytest.raises(BaseException) as failed, TestClient(app, timeout=5):
        pass
    errors = getattr(failed.value, "exceptions", [failed.value])
    assert any(isinstance(e, TimeoutError) for e in errors), errors
    redis_server.restart()
    with TestClient(app, timeout=5) as client, client.websocket_connect("/ws?channel=room") as ws:
        assert publish(client, "room", b"back") == 200
        assert receive(ws, 5) == b"back"


async def test_restart_after_shutdown_in_one_event_loop(redis_server: RedisServer) -> None:
    plugin = ChannelsPlugin(backend=RedisMPXChannelsBackend(redis_server.url), channels=["a"])
    for run in range(3):
        async with plugin:
            subscriber = await plugin.subscribe("a")
            await plugin.wait_published(str(run).encode(), "a")
            assert await take(subscriber, 1) == [str(run).encode()]
            await plugin.unsubscribe(subscriber)


# -- the stock test suite's flaky Pub/Sub check, over a network with jitter ----------------------


class JitterProxy:
    """A TCP proxy that holds every chunk for a random 0 to ``max_delay`` seconds, keeping
    each direction of each connection in order. As on any real network (and unlike loopback,
    where a single-threaded server reads sockets in the order they were written), nothing
    then orders the bytes of two different connections: a ``SUBSCRIBE`` written first may
    reach the server after a ``PUBLISH`` written later on another connection."""

    def __init__(self, target_port: int, max_delay: float, seed: int) -> None:
        self.target_port = target_port
        self.max_delay = max_delay
        self._random = random.Random(seed)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"redis://127.0.0.1:{port}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        for writer in self._writers:
            writer.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - loop.time()))  # the simulated latency
                writer.write(chunk)
                await writer.drain()

        sender = asyncio.create_task(deliver())
        last_due = 0.0
        try:
            while chunk := await reader.read(65536):
                last_due = max(last_due, loop.time() + self._random.uniform(0, self.max_delay))
                queue.put_nowait((last_due, chunk))
            while not queue.empty():
                await asyncio.sleep(0.001)
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()
            writer.close()


async def _flake_round(make: Callable[[], ChannelsBackend], timeout: float = 2.0) -> bool:
    """One round of the stock suite's Pub/Sub check: a fresh backend behind a plugin whose
    publishing connections are already open (as in a running app), ``subscribe``,
    ``wait_published``, then read; True if the event arrived within ``timeout``."""
    async with ChannelsPlugin(backend=make(), arbitrary_channels_allowed=True) as plugin:
        # Two at once: a running app's redis-py pool holds several idle connections, so the
        # stock backend's Pub/Sub connection takes one and its publish finds another open.
        await asyncio.gather(*(plugin.wait_published(b"warm-up", "elsewhere") for _ in "ab"))
        subscriber = await plugin.subscribe("foo")
        await plugin.wait_published(b"something", "foo")
        try:
            return await take(subscriber, 1, timeout=timeout) == [b"something"]
        except AssertionError:
            return False


@pytest.mark.parametrize("max_delay", [0.0, 0.005])
async def test_first_subscribe_never_trails_a_publish(
    redis_server: RedisServer, max_delay: float
) -> None:
    """``FLAKE_ROUNDS`` rounds per backend, on loopback and through a 0-5 ms jitter."""
    proxy = JitterProxy(redis_server.port, max_delay, seed=12)
    url = await proxy.start() if max_delay else redis_server.url
    try:
        lost = {"redismpx": 0, "stock": 0}
        for _ in range(FLAKE_ROUNDS):
            # 10 s for redismpx: a slow round on a loaded machine is not a lost message.
            lost["redismpx"] += not await _flake_round(lambda: RedisMPXChannelsBackend(url), 10.0)
            lost["stock"] += not await _flake_round(lambda: stock(url))
    finally:
        await proxy.close()
    where = f"jitter 0-{max_delay * 1000:g} ms" if max_delay else "loopback"
    _report(
        f"subscribe then publish, fresh backend, {FLAKE_ROUNDS} rounds, {where}: lost "
        f"redismpx {lost['redismpx']}/{FLAKE_ROUNDS}, stock {lost['stock']}/{FLAKE_ROUNDS}"
    )
    assert lost["redismpx"] == 0


# -- faults: how long until delivery is back -----------------------------------------------------


@dataclass
class Recovery:
    """What the app's WebSocket subscriber saw while a fault ran: the longest time without a
    delivery (``outage``, from the fault's start on; None if delivery never came back), when
    that outage ended (``back_at``, seconds after the fault began), and the probes lost."""

    backend: str
    outage: float | None
    back_at: float | None
    bound: float
    published: int
    lost: int
    failed_publishes: int
    last_event: float = 0.0
    notes: str = ""

    def __str__(self) -> str:
        if self.outage is None or self.back_at is None:
            when = (
                f"never back within {self.bound:g} s (last event {self.last_event:.3f} s "
                "after the fault began)"
            )
        else:
            when = f"no delivery for {self.outage:.3f} s, back {self.back_at:.3f} s after the fault"
        extra = f", {self.notes}" if self.notes else ""
        return (
            f"{self.backend} {when} ({self.lost} of {self.published} probes lost, "
            f"{self.failed_publishes} publishes failed{extra})"
        )


def measure_recovery(
    name: str, backend: ChannelsBackend, fault: Callable[[], None], bound: float = RECOVERY_BOUND
) -> Recovery:
    """Run the app and check delivery; start ``fault`` in a thread; publish a numbered probe
    through the app (``wait_published``) every ~20 ms and read the WebSocket, until a probe
    published after ``fault`` returned has arrived, or ``bound`` seconds have passed."""
    app, _ = make_app(backend, channels=["probe"])
    result: Recovery | None = None
    fault_error: list[BaseException] = []

    def run_fault() -> None:
        try:
            fault()
        except BaseException as exc:
            fault_error.append(exc)

    try:
        with (
            TestClient(app, timeout=5) as client,
            client.websocket_connect("/ws?channel=probe") as ws,
        ):
            assert publish(client, "probe", b"0") == 200
            assert receive(ws, 5) == b"0"
            thread = threading.Thread(target=run_fault, daemon=True)
            start = time.monotonic()
            thread.start()
            sent: dict[int, float] = {}  # probe -> when it was published (answered 200)
            received: set[int] = set()
            deliveries = [start]
            failed, fault_done, back = 0, None, False
            while not back and time.monotonic() - start < bound:
                if fault_done is None and not thread.is_alive():
                    fault_done = time.monotonic()
                probe, at = len(sent) + failed + 1, time.monotonic()
                if publish(client, "probe", str(probe).encode()) == 200:
                    sent[probe] = at
                else:
                    failed += 1
                    time.sleep(0.01)  # the probes' cadence while publishing fails
                data, wait = receive(ws, 0.02), 0.0
                while data is not None:
                    deliveries.append(time.monotonic())
                    received.add(int(data))
                    if fault_done is not None and sent.get(int(data), 0.0) >= fault_done:
                        back = True
                    data = receive(ws, wait)
            thread.join(60)
            while (data := receive(ws, 0.5)) is not None:  # stragglers, for the loss count
                received.add(int(data))
            gaps = [(b - a, b - start) for a, b in itertools.pairwise(deliveries)]
            outage, back_at = max(gaps) if back and gaps else (None, None)
            lost = len(set(sent) - received)
            last_event = deliveries[-1] - start
            result = Recovery(name, outage, back_at, bound, len(sent), lost, failed, last_event)
    except BaseException as exc:
        if result is None:
            raise
        errors = getattr(exc, "exceptions", [exc])
        note = "shutdown raised " + "; ".join(f"{type(e).__name__}: {e}" for e in errors)
        result.notes = note[:160]
    assert not fault_error, fault_error
    assert result is not None
    return result


def compare(what: str, ours: Recovery, theirs: Recovery) -> None:
    _report(f"{what}: {ours}; {theirs}")
    assert ours.outage is not None, str(ours)


def test_server_drops_the_pubsub_connection(redis_server: RedisServer) -> None:
    def kill_pubsub() -> None:
        assert redis_server.command("CLIENT", "KILL", "TYPE", "pubsub") >= 1

    ours = measure_recovery("redismpx", RedisMPXChannelsBackend(redis_server.url), kill_pubsub)
    theirs = measure_recovery("stock", stock(redis_server.url), kill_pubsub)
    compare("CLIENT KILL TYPE pubsub", ours, theirs)
    assert ours.outage is not None and ours.outage < 5.0


def test_server_restart(redis_server: RedisServer) -> None:
    downtime: list[float] = []

    def restart() -> None:
        began = time.monotonic()
        redis_server.kill()
        redis_server.restart()
        downtime.append(time.monotonic() - began)

    ours = measure_recovery("redismpx", RedisMPXChannelsBackend(redis_server.url), restart)
    theirs = measure_recovery("stock", stock(redis_server.url), restart)
    compare(
        f"server SIGKILLed and restarted (down {downtime[0]:.3f} s, {downtime[1]:.3f} s)",
        ours,
        theirs,
    )
    assert ours.outage is not None and ours.outage < downtime[0] + 5.0


def test_sentinel_failover(sentinel_factory: Callable[..., RedisSentinel]) -> None:
    """``SENTINEL FAILOVER``, measured until the deployment has settled: the new primary
    named, the old one demoted (the sentinels then kill its clients) and replicating."""
    settled: list[float] = []

    def failover(deployment: RedisSentinel) -> Callable[[], None]:
        def run() -> None:
            began = time.monotonic()
            deployment.failover()
            deployment.wait_ready(timeout=30)
            settled.append(time.monotonic() - began)

        return run

    mine = sentinel_factory()
    ours = measure_recovery(
        "redismpx", RedisMPXChannelsBackend(mine.url), failover(mine), bound=RECOVERY_BOUND + 10
    )
    other = sentinel_factory()
    client = Sentinel(other.sentinel_addresses).master_for(other.service_name)
    theirs = measure_recovery(
        "stock", ClosingStock(redis=client), failover(other), bound=RECOVERY_BOUND + 10
    )
    compare(
        f"Sentinel failover (settled after {settled[0]:.3f} s, {settled[1]:.3f} s)", ours, theirs
    )
    assert ours.outage is not None and ours.outage < 6.0
