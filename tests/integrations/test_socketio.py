"""``redismpx.socketio.AsyncRedisMPXManager`` against python-socketio's own
``AsyncRedisManager``, on real servers.

Every Socket.IO server here is a real ``socketio.AsyncServer`` served by aiohttp on a free
loopback port, with real ``socketio.AsyncClient`` clients over WebSocket; the servers talk
only through Redis (the ``redis_server``/``sentinel_factory`` fixtures). The functional tests
run on both managers (they check the tests as much as the managers). The fault tests run a
redismpx fleet and a stock fleet side by side through the same fault, measure how long each
stays deaf, print both, and assert only redismpx's bound: the stock numbers are recorded
("never within N s" when nothing came back in N s), not asserted.

Recovery is measured with probes: a socketio ``emit`` message published on the channel
every ``PROBE_EVERY`` seconds over a fresh connection (as an external emitter would), from
the moment the fault is over; a fleet is back when its client receives a probe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

socketio = pytest.importorskip("socketio")
web = pytest.importorskip("aiohttp.web")

from redismpx.server import RedisSentinel, RedisServer  # noqa: E402
from redismpx.socketio import AsyncRedisMPXManager  # noqa: E402
from support.waiting import wait_for  # noqa: E402

pytestmark = pytest.mark.timeout(180)

KINDS = ("redismpx", "stock")
PROBE_EVERY = 0.01  # seconds between recovery probes
STOCK_LIMIT = 20.0  # how long a stock fleet is given to come back before "never within"


# -- the harness -----------------------------------------------------------------------------


def make_manager(kind: str, url: str, channel: str = "socketio", **kwargs: Any) -> Any:
    if kind == "redismpx":
        return AsyncRedisMPXManager(url, channel=channel, **kwargs)
    return socketio.AsyncRedisManager(url, channel=channel, **kwargs)


async def close_manager(manager: Any) -> None:
    if isinstance(manager, AsyncRedisMPXManager):
        await manager.aclose()
        return
    thread = getattr(manager, "thread", None)
    if isinstance(thread, asyncio.Future) and not thread.done():
        thread.cancel()
        await asyncio.wait([thread])
    for client in (manager.pubsub, manager.redis):
        if client is not None:
            with contextlib.suppress(Exception):
                await client.aclose()


class Node:
    """One Socket.IO server (``AsyncServer`` + a manager) served by aiohttp."""

    def __init__(self, kind: str, manager: Any) -> None:
        self.kind = kind
        self.manager = manager
        self.sio = socketio.AsyncServer(async_mode="aiohttp", client_manager=manager)
        self.app = web.Application()
        self.sio.attach(self.app)
        self.runner: Any = None
        self.url = ""

        @self.sio.on("join")
        async def join(sid: str, room: str) -> str:
            await self.sio.enter_room(sid, room)
            return "joined"

        @self.sio.on("whoami")
        async def whoami(sid: str, data: Any = None) -> str:
            return sid

    async def start(self) -> Node:
        self.runner = web.AppRunner(self.app, handle_signals=False)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        host, port = self.runner.addresses[0][:2]
        self.url = f"http://{host}:{port}"
        return self

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await self.sio.shutdown()
        if self.runner is not None:
            await self.runner.cleanup()
        await close_manager(self.manager)


class Client:
    """A Socket.IO client that records every event it receives."""

    def __init__(self) -> None:
        self.sio = socketio.AsyncClient(reconnection=False)
        self.received: list[tuple[str, Any, float]] = []
        self.changed = asyncio.Event()
        self.disconnected = asyncio.Event()
        self.sid = ""

        @self.sio.on("*")
        async def any_event(event: str, *args: Any) -> None:
            data = args[0] if len(args) == 1 else args
            self.received.append((event, data, time.monotonic()))
            self.changed.set()

        @self.sio.on("ask")
        async def ask(question: Any) -> str:
            return f"answer to {question}"

        @self.sio.event
        async def disconnect(*args: Any) -> None:
            self.disconnected.set()
            self.changed.set()

    async def connect(self, node: Node) -> Client:
        await self.sio.connect(node.url, transports=["websocket"], wait_timeout=10)
        self.sid = await self.sio.call("whoami", timeout=10)
        return self

    def got(self, event: str) -> list[Any]:
        return [data for name, data, _ in self.received if name == event]

    async def wait_event(self, event: str, count: int = 1, timeout: float = 10.0) -> list[Any]:
        await wait_for(
            self.changed,
            lambda: len(self.got(event)) >= count,
            timeout,
            lambda: f"{event!r} x{count} not received within {timeout} s: {self.received}",
        )
        return self.got(event)


@pytest.fixture
async def fleet() -> AsyncIterator[Callable[..., Any]]:
    """``await fleet(kind, url, **manager_kwargs)`` starts a Node; ``fleet.client(node)``
    connects a Client. Everything is stopped after the test."""
    nodes: list[Node] = []
    clients: list[Client] = []

    async def start_node(kind: str, url: str, **kwargs: Any) -> Node:
        node = Node(kind, make_manager(kind, url, **kwargs))
        nodes.append(node)
        return await node.start()

    async def connect(node: Node) -> Client:
        client = Client()
        clients.append(client)
        return await client.connect(node)

    start_node.client = connect  # type: ignore[attr-defined]
    yield start_node
    for client in clients:
        with contextlib.suppress(Exception):
            await client.sio.disconnect()
    for node in nodes:
        await node.stop()


def probe_message(n: int, event: str = "probe") -> str:
    """What ``AsyncPubSubManager.emit`` publishes for ``emit(event, n)`` to everyone."""
    return json.dumps(
        {
            "method": "emit",
            "event": event,
            "data": [n],
            "binary": False,
            "namespace": "/",
            "room": None,
            "skip_sid": None,
            "callback": None,
            "host_id": "external-probe",
        }
    )


async def time_until_delivery(
    publish_on: Callable[[], RedisServer],
    clients: dict[str, Client],
    limits: dict[str, float],
    channel: str = "socketio",
) -> dict[str, float | None]:
    """Publish a probe every PROBE_EVERY s (each over a fresh connection to
    ``publish_on()``) until every client received one or its limit passed; the seconds from
    the start until each client's first probe arrived (None: not within its limit)."""
    start = time.monotonic()
    first: dict[str, float | None] = {}
    marks = {name: len(client.received) for name, client in clients.items()}
    n = 0
    while True:
        now = time.monotonic()
        for name, client in clients.items():
            if name in first:
                continue
            arrived = [t for ev, _, t in client.received[marks[name] :] if ev == "probe"]
            if arrived:
                first[name] = arrived[0] - start
            elif now - start > limits[name]:
                first[name] = None
        if len(first) == len(clients):
            return first
        n += 1
        with contextlib.suppress(OSError, Exception):
            await publish_on().acommand("PUBLISH", channel, probe_message(n), timeout=1.0)
        await asyncio.sleep(PROBE_EVERY)  # the probing rate, not a wait for a condition


def describe(result: float | None, limit: float) -> str:
    return f"never within {limit:g} s" if result is None else f"{result:.3f} s"


def report(capsys: pytest.CaptureFixture[str], title: str, lines: dict[str, str]) -> None:
    with capsys.disabled():
        print(f"\n[socketio] {title}: " + "; ".join(f"{k}: {v}" for k, v in lines.items()))


# -- functional: the same behaviour from both managers ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_emit_across_two_servers(
    kind: str, redis_server: RedisServer, fleet: Any
) -> None:
    a = await fleet(kind, redis_server.url)
    b = await fleet(kind, redis_server.url)
    ca = await fleet.client(a)
    cb = await fleet.client(b)
    await a.sio.emit("hello", {"from": "a"})
    await b.sio.emit("hello", {"from": "b"})
    await a.sio.emit("blob", b"\x00\x01binary\xff")
    await a.sio.emit("pair", ("x", 2))
    for client in (ca, cb):
        got = await client.wait_event("hello", 2)
        assert sorted(m["from"] for m in got) == ["a", "b"]
        assert await client.wait_event("blob") == [b"\x00\x01binary\xff"]
        assert await client.wait_event("pair") == [("x", 2)]


@pytest.mark.parametrize("kind", KINDS)
async def test_rooms_across_servers(kind: str, redis_server: RedisServer, fleet: Any) -> None:
    a = await fleet(kind, redis_server.url)
    b = await fleet(kind, redis_server.url)
    in_room = await fleet.client(b)
    outside = await fleet.client(b)
    on_a = await fleet.client(a)
    assert await in_room.sio.call("join", "r1", timeout=10) == "joined"

    await a.sio.emit("to-room", 1, room="r1")
    await a.sio.emit("everyone", 1)  # published after: arrives after (one channel, in order)
    await in_room.wait_event("everyone")
    await outside.wait_event("everyone")
    await on_a.wait_event("everyone")
    assert in_room.got("to-room") == [1]
    assert outside.got("to-room") == [] and on_a.got("to-room") == []

    # skip_sid of a client on the other server
    await a.sio.emit("skipping", 2, skip_sid=in_room.sid)
    await a.sio.emit("everyone", 2)
    await in_room.wait_event("everyone", 2)
    await outside.wait_event("everyone", 2)
    assert in_room.got("skipping") == [] and outside.got("skipping") == [2]

    # a room entered and closed from the other server
    await a.sio.enter_room(outside.sid, "r2")
    await a.sio.emit("to-r2", 3, room="r2")
    assert await outside.wait_event("to-r2") == [3]
    assert in_room.got("to-r2") == []
    await a.sio.close_room("r1")
    await a.sio.emit("to-room", 4, room="r1")
    await a.sio.emit("everyone", 4)
    await in_room.wait_event("everyone", 3)
    assert in_room.got("to-room") == [1]


@pytest.mark.parametrize("kind", KINDS)
async def test_call_and_disconnect_across_servers(
    kind: str, redis_server: RedisServer, fleet: Any
) -> None:
    a = await fleet(kind, redis_server.url)
    b = await fleet(kind, redis_server.url)
    on_b = await fleet.client(b)
    # socketio starts a server's listener at its first client connection: without one, a
    # never hears the answer (with either manager)
    await fleet.client(a)
    # an acknowledged emit from a to a client of b: the answer comes back through Redis
    assert await a.sio.call("ask", "q1", to=on_b.sid, timeout=10) == "answer to q1"
    await a.sio.disconnect(on_b.sid)
    async with asyncio.timeout(10):
        await on_b.disconnected.wait()


@pytest.mark.parametrize("kind", KINDS)
async def test_write_only_emitter(kind: str, redis_server: RedisServer, fleet: Any) -> None:
    """An emitter outside the servers (``write_only=True``), as socketio documents it."""
    b = await fleet(kind, redis_server.url)
    on_b = await fleet.client(b)
    emitter = make_manager(kind, redis_server.url, write_only=True)
    try:
        await emitter.emit("external", {"n": 1})
        await emitter.emit("external", {"n": 2}, room=on_b.sid)
        assert await on_b.wait_event("external", 2) == [{"n": 1}, {"n": 2}]
    finally:
        await close_manager(emitter)
