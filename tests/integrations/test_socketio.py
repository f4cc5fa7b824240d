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
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

socketio = pytest.importorskip("socketio")
web = pytest.importorskip("aiohttp.web")

from redismpx import Multiplexer  # noqa: E402
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
    if kind == "redismpx-startup_wait=0":  # without holding clients until it listens
        return AsyncRedisMPXManager(url, channel=channel, startup_wait=0, **kwargs)
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

    async def connect(self, node: Node, *, ask_sid: bool = True) -> Client:
        """Connect (``connect`` returns once the server sent CONNECT); then ask the server
        for this client's sid, unless ``ask_sid`` is false."""
        await self.sio.connect(node.url, transports=["websocket"], wait_timeout=10)
        if ask_sid:
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


async def until_listening(node: Node, client: Client, timeout: float = 10.0) -> None:
    """Return once ``node`` hears what is published: an emit to ``client`` goes through Redis
    and back. socketio starts a server's listener at its first client connection, and the
    stock manager's first SUBSCRIBE can trail an emit made at once (see the startup test,
    which measures exactly that and so does not wait)."""
    n = 0
    async with asyncio.timeout(timeout):
        while not client.got("__listening__"):
            n += 1
            await node.sio.emit("__listening__", n, to=client.sid)
            client.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):  # the emit rate while none arrived
                    await client.changed.wait()


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

    async def connect(node: Node, **kwargs: Any) -> Client:
        client = Client()
        clients.append(client)
        await client.connect(node, **kwargs)
        if client.sid:
            await until_listening(node, client)
        return client

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


class Fleet:
    """One kind's fleet for the fault tests: server ``a`` (no client: it only emits) and
    server ``b`` with ``client``, on the kind's own channel."""

    def __init__(self, kind: str, channel: str, a: Node, b: Node, client: Client) -> None:
        self.kind, self.channel, self.a, self.b, self.client = kind, channel, a, b, client


async def start_fleets(fleet: Any, url: str, kinds: tuple[str, ...] = KINDS) -> list[Fleet]:
    fleets = []
    for kind in kinds:
        channel = f"socketio-{kind}"
        a = await fleet(kind, url, channel=channel)
        b = await fleet(kind, url, channel=channel)
        fleets.append(Fleet(kind, channel, a, b, await fleet.client(b)))
    return fleets


Publisher = Callable[[Fleet, int], Awaitable[Any]]


def raw_probe(server: Callable[[], RedisServer]) -> Publisher:
    """Probes published on the fleet's channel over a fresh connection to ``server()``: what
    an external emitter does; it measures how long ``b`` does not listen."""

    async def publish(f: Fleet, n: int) -> None:
        await server().acommand("PUBLISH", f.channel, probe_message(n), timeout=1.0)

    return publish


async def emit_probe(f: Fleet, n: int) -> None:
    """Probes emitted by ``a``: publishing and listening, end to end."""
    await f.a.sio.emit("emit-probe", n)


async def time_until_delivery(
    fleets: list[Fleet], limits: dict[str, float], **publishers: Publisher
) -> dict[str, dict[str, float | None]]:
    """For each fleet and each publisher (``probe=...`` sends event "probe", ``emit_probe``
    sends "emit-probe"), publish a probe every PROBE_EVERY s until ``b``'s client received
    one or the kind's limit passed: the seconds from the start until the first one arrived
    (None: not within the limit), per kind and publisher."""
    start = time.monotonic()

    async def one(f: Fleet, event: str, publish: Publisher) -> float | None:
        mark = len(f.client.received)
        n = 0
        while True:
            arrived = [t for ev, _, t in f.client.received[mark:] if ev == event]
            if arrived:
                return arrived[0] - start
            remaining = limits[f.kind] - (time.monotonic() - start)
            if remaining <= 0:
                return None
            n += 1
            with contextlib.suppress(Exception):  # Redis down, refused, timed out
                async with asyncio.timeout(remaining):
                    await publish(f, n)
            f.client.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_EVERY):  # the probing rate
                    await f.client.changed.wait()

    events = {"probe": "probe", "emit_probe": "emit-probe"}
    jobs = [
        (f.kind, name, one(f, events[name], p)) for f in fleets for name, p in publishers.items()
    ]
    times = await asyncio.gather(*(job for _, _, job in jobs))
    result: dict[str, dict[str, float | None]] = {f.kind: {} for f in fleets}
    for (kind, name, _), value in zip(jobs, times, strict=True):
        result[kind][name] = value
    return result


def describe(result: float | None, limit: float) -> str:
    return f"never within {limit:g} s" if result is None else f"{result:.3f} s"


def report(capsys: pytest.CaptureFixture[str], title: str, lines: dict[str, str]) -> None:
    with capsys.disabled():
        print(f"\n[socketio] {title}: " + "; ".join(f"{k}: {v}" for k, v in lines.items()))


# -- functional: the same behaviour from both managers ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_emit_across_two_servers(kind: str, redis_server: RedisServer, fleet: Any) -> None:
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


async def lost_before_marker(
    sender: Node, receiver: Client, event: str, value: Any, timeout: float = 10.0
) -> bool:
    """Whether ``receiver`` missed ``event``/``value``, which ``sender`` emitted just before:
    ``sender`` emits markers until one arrives; what ``sender`` published before a marker
    arrives before it (one channel, one publisher, in order), so it was lost if it is not
    there by then."""
    n = 0
    async with asyncio.timeout(timeout):
        while not receiver.got(f"marker-{event}"):
            n += 1
            await sender.sio.emit(f"marker-{event}", n)
            receiver.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.05):  # the marker rate while none arrived
                    await receiver.changed.wait()
    return value not in receiver.got(event)


@pytest.mark.parametrize("kind", [*KINDS, "redismpx-startup_wait=0"])
async def test_publish_right_after_start(
    kind: str, redis_server: RedisServer, fleet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """100 rounds: a server starts, a client connects to it, and at once another server
    emits to everyone (does the new server hear it?) and the new server emits (does its
    first publish arrive?). ``redismpx-startup_wait=0`` shows what holding the client's
    connection until the server listens is for (measured, not asserted)."""
    rounds = 100
    a = await fleet(kind, redis_server.url)
    on_a = await fleet.client(a)
    missed_by_new = 0
    missed_from_new = 0
    started = time.monotonic()
    for i in range(rounds):
        b = await Node(kind, make_manager(kind, redis_server.url)).start()
        on_b = Client()
        try:
            await on_b.connect(b, ask_sid=False)
            await a.sio.emit("to-new", i)
            await b.sio.emit("from-new", i)
            missed_by_new += await lost_before_marker(a, on_b, "to-new", i)
            missed_from_new += await lost_before_marker(b, on_a, "from-new", i)
        finally:
            with contextlib.suppress(Exception):
                await on_b.sio.disconnect()
            await b.stop()
    report(
        capsys,
        f"publish right after start, {kind}",
        {
            "emits missed by the new server's client": f"{missed_by_new}/{rounds}",
            "first emits of the new server missed": f"{missed_from_new}/{rounds}",
            "time": f"{time.monotonic() - started:.1f} s",
        },
    )
    if kind == "redismpx":
        assert (missed_by_new, missed_from_new) == (0, 0)


# -- faults: a redismpx fleet and a stock fleet through the same fault ------------------------

LIMITS = {"redismpx": 10.0, "stock": STOCK_LIMIT}
REDISMPX_BOUND = 5.0  # seconds: what redismpx is held to (backoff cap 0.512 s, jitter, load)


async def expect_delivery(fleets: list[Fleet], server: Callable[[], RedisServer]) -> None:
    """Both paths work before the fault (both kinds, within 10 s)."""
    result = await time_until_delivery(
        fleets, dict.fromkeys(LIMITS, 10.0), probe=raw_probe(server), emit_probe=emit_probe
    )
    assert all(v is not None for r in result.values() for v in r.values()), result


def conclude(
    capsys: pytest.CaptureFixture[str], title: str, result: dict[str, dict[str, float | None]]
) -> None:
    """Print both fleets' times; assert redismpx's."""
    lines = {
        f"{kind} {path}": describe(value, LIMITS[kind])
        for kind, paths in result.items()
        for path, value in paths.items()
    }
    report(capsys, title, lines)
    for path, value in result["redismpx"].items():
        assert value is not None and value < REDISMPX_BOUND, (path, lines)


def output_buffer_kills(server: RedisServer) -> int:
    """How many clients the server closed for overcoming their output buffer limit, from
    its log (Redis 7.0 has no INFO counter for it; Valkey and Redis >= 7.2 log it the same)."""
    with open(server.log_path, errors="replace") as log:
        return log.read().count("overcoming of output buffer limits")


async def test_pubsub_connections_killed(
    redis_server: RedisServer, fleet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``CLIENT KILL TYPE pubsub``: the server drops every listener at once."""
    fleets = await start_fleets(fleet, redis_server.url)
    await expect_delivery(fleets, lambda: redis_server)
    killed = await redis_server.acommand("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= len(fleets)
    result = await time_until_delivery(
        fleets, LIMITS, probe=raw_probe(lambda: redis_server), emit_probe=emit_probe
    )
    conclude(capsys, f"CLIENT KILL TYPE pubsub ({killed} killed), time until delivery", result)


async def test_output_buffer_kill(
    redis_server: RedisServer, fleet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``client-output-buffer-limit pubsub 1kb 1kb 0``, then a flood of 64 KB emits: Redis
    kills every listener for overcoming its output buffer (python-socketio #1581; messages
    under 16 KB go through a client's static buffer, which the limit does not count). The
    limit stays in place while recovery is measured (the probes are smaller than 1 kB)."""
    fleets = await start_fleets(fleet, redis_server.url)
    await expect_delivery(fleets, lambda: redis_server)
    before = output_buffer_kills(redis_server)
    await redis_server.acommand("CONFIG", "SET", "client-output-buffer-limit", "pubsub 1kb 1kb 0")
    try:
        big = json.loads(probe_message(0, "flood"))
        big["data"] = ["x" * 65536]
        for _ in range(3):  # interleaved: the fleets' last kills are a publish apart
            for f in fleets:
                await redis_server.acommand("PUBLISH", f.channel, json.dumps(big))
        # measured from the end of the flood: Redis has flagged the listeners (it adds
        # nothing more to a client it is closing), so no probe arrives before the kill
        result = await time_until_delivery(
            fleets, LIMITS, probe=raw_probe(lambda: redis_server), emit_probe=emit_probe
        )
        kills = output_buffer_kills(redis_server) - before
        assert kills >= len(fleets)
    finally:
        await redis_server.acommand(
            "CONFIG", "SET", "client-output-buffer-limit", "pubsub 32mb 8mb 60"
        )
    conclude(capsys, f"output-buffer kill ({kills} listeners killed), time until delivery", result)


@pytest.mark.parametrize("outage", [3.0, 5.0, 10.0])
async def test_server_restart_after_outage(
    outage: float, redis_server: RedisServer, fleet: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server is killed, stays down ``outage`` seconds, and restarts on the same port:
    the time from the restart until delivery is back. The stock listener retries 1, 3, 7,
    15 ... s after the loss (1, 2, 4, 8 ... s apart): after 3 s it is back at once or 4 s
    late, depending on whether the restart beats its retry at about 3 s."""
    fleets = await start_fleets(fleet, redis_server.url)
    await expect_delivery(fleets, lambda: redis_server)
    await redis_server.akill()
    await asyncio.sleep(outage)  # the outage itself
    await redis_server.astart()
    result = await time_until_delivery(
        fleets, LIMITS, probe=raw_probe(lambda: redis_server), emit_probe=emit_probe
    )
    conclude(capsys, f"server restarted after a {outage:g} s outage, time until delivery", result)


async def test_sentinel_failover(
    sentinel_factory: Callable[..., RedisSentinel],
    fleet: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``SENTINEL FAILOVER`` under both fleets, configured with the same URL in socketio's
    form (``redis+sentinel://h1:p1,h2:p2,h3:p3/0/mymaster``): the time from the new
    primary's confirmation until delivery is back. The raw probes go to the new primary.

    A fleet's emits reaching its own listener says little when both stayed on the old
    primary, which stays a primary, on its own, until the sentinels demote it (about 3 s):
    "emit reaches new primary" is the time until ``a``'s emits reach a server listening on
    the new primary (the replica before the failover), where every process that starts or
    reconnects goes."""
    deployment = sentinel_factory()
    hosts = ",".join(f"{h}:{p}" for h, p in deployment.sentinel_addresses)
    url = f"redis+sentinel://{hosts}/0/{deployment.service_name}"
    fleets = await start_fleets(fleet, url)
    primary = deployment.primary
    (replica,) = deployment.replicas
    watchers = []
    for f in fleets:  # a server on the replica, on each fleet's channel
        c = await fleet("redismpx", f"redis://{replica.host}:{replica.port}", channel=f.channel)
        watchers.append(Fleet(f.kind, f.channel, f.a, c, await fleet.client(c)))
    await expect_delivery(fleets, lambda: primary)
    await expect_delivery(watchers, lambda: primary)
    primary = await deployment.afailover()
    assert primary.port == replica.port
    result, across = await asyncio.gather(
        time_until_delivery(
            fleets, LIMITS, probe=raw_probe(lambda: primary), emit_probe=emit_probe
        ),
        time_until_delivery(watchers, LIMITS, emit_probe=emit_probe),
    )
    for kind, paths in across.items():
        result[kind]["emit reaches new primary"] = paths["emit_probe"]
    conclude(capsys, "Sentinel failover, time until delivery", result)


@pytest.mark.parametrize("kind", KINDS)
async def test_sentinel_with_passwords(
    kind: str, sentinel_factory: Callable[..., RedisSentinel], fleet: Any
) -> None:
    """The docs' Sentinel configuration, on both managers: the data nodes' password in the
    URL (socketio's form), the sentinels' in ``redis_options["sentinel_kwargs"]``."""
    deployment = sentinel_factory(password="data-secret", sentinel_password="sentinel-secret")
    hosts = ",".join(f"{h}:{p}" for h, p in deployment.sentinel_addresses)
    url = f"redis+sentinel://:data-secret@{hosts}/0/{deployment.service_name}"
    options = {"sentinel_kwargs": {"password": "sentinel-secret"}}
    a = await fleet(kind, url, redis_options=options)
    b = await fleet(kind, url, redis_options=options)
    on_a, on_b = await fleet.client(a), await fleet.client(b)
    # The stock manager starts listening some time after it starts (emits right after a
    # start can be lost: see the startup test): wait until both listen on the primary.
    async with asyncio.timeout(10):
        while await deployment.primary.acommand("PUBSUB", "NUMSUB", "socketio") != [
            b"socketio",
            2,
        ]:
            await asyncio.sleep(0.01)  # polls the server: no event exists for it
    await a.sio.emit("hello", 1)
    await b.sio.emit("hello", 2)
    for client in (on_a, on_b):
        assert sorted(await client.wait_event("hello", 2)) == [1, 2]


# -- configuration: socketio's URL forms and redis_options ------------------------------------

URL_FORMS = [
    "redis://localhost:6379",
    "redis://:password@localhost:6379/0",
    "redis://user:password@localhost:6379/2",
    "rediss://localhost:6379/0",
    "valkey://localhost:6379/0",
    "valkeys://user:password@localhost:6379",
    "unix:///var/sock/redis.sock",
    "unix:///var/sock/redis.sock?db=1",
    "unix://user@/var/sock/redis.sock?db=0",
    "redis+sentinel://192.168.0.1:26379,192.168.0.2:26379/",
    "redis+sentinel://192.168.0.1:26379,192.168.0.2:26379/0/mymaster",
    "redis+sentinel://user:pw@192.168.0.1:26379/3/mymaster",
    "valkey+sentinel://192.168.0.1:26379/0/mymaster",
    # refused by both: the service name goes after the db in socketio's form, a sentinel
    # needs a port, and other schemes are not Redis
    "redis+sentinel://192.168.0.1:26379/mymaster",
    "redis+sentinel://192.168.0.1/0/mymaster",
    "http://localhost:6379",
]


@pytest.mark.parametrize("url", URL_FORMS)
def test_accepts_the_urls_socketio_accepts(url: str) -> None:
    """Each URL is accepted by both managers or refused (ValueError) by both; ours refuses
    at construction, the stock one when it connects."""
    try:
        socketio.AsyncRedisManager(url)._redis_connect()
        stock_accepts = True
    except ValueError:
        stock_accepts = False
    if stock_accepts:
        AsyncRedisMPXManager(url)
    else:
        with pytest.raises(ValueError):
            AsyncRedisMPXManager(url)


def test_redis_options(caplog: pytest.LogCaptureFixture) -> None:
    AsyncRedisMPXManager(
        "redis://localhost:6379/0",
        redis_options={"password": "pw", "socket_connect_timeout": 2, "backoff_cap": 0.1},
    )
    with caplog.at_level("WARNING"):
        AsyncRedisMPXManager(redis_options={"socket_timeout": 5, "retry_on_timeout": True})
    assert "retry_on_timeout, socket_timeout tune redis-py and are ignored" in caplog.text
    with pytest.raises(TypeError, match="sokcet_timeout"):
        AsyncRedisMPXManager(redis_options={"sokcet_timeout": 5})
    with pytest.raises(ValueError):
        AsyncRedisMPXManager(redis_options={"connect_timeout": -1})
    with pytest.raises(ValueError):
        AsyncRedisMPXManager(overflow="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        AsyncRedisMPXManager(publish_timeout=0)


async def test_shared_multiplexer(redis_server: RedisServer, fleet: Any) -> None:
    """``multiplexer=``: the app's multiplexer carries the manager too (one Pub/Sub
    connection per process), and ``aclose()`` leaves it open."""
    async with Multiplexer(redis_server.url) as mpx:
        a = await fleet("redismpx", redis_server.url, multiplexer=mpx)
        b = await fleet("redismpx", redis_server.url)
        on_a, on_b = await fleet.client(a), await fleet.client(b)
        async with mpx.subscribe("app-channel") as own:
            await a.sio.emit("shared", 1)
            await b.sio.emit("shared", 2)
            for client in (on_a, on_b):
                assert sorted(await client.wait_event("shared", 2)) == [1, 2]
            await mpx.publish("app-channel", "still mine")
            async with asyncio.timeout(5):
                assert (await anext(aiter(own))).data == b"still mine"
        assert a.manager.multiplexer is mpx
        await a.manager.aclose()
        assert not mpx.closed
        assert await mpx.publish("socketio", probe_message(1, "after")) >= 1  # b listens


# -- the bounded buffer -------------------------------------------------------------------------


class GatedManager(AsyncRedisMPXManager):
    """Handlers that wait for ``gate``: a server that fell behind."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()

    async def _handle_emit(self, message: Any) -> None:
        await self.gate.wait()
        await super()._handle_emit(message)


@pytest.mark.parametrize("overflow", ["drop_oldest", "close"])
async def test_slow_handlers_overflow(
    overflow: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Handlers stuck while 20 messages arrive. ``drop_oldest``: the listener keeps reading
    Redis, keeps the newest ``max_buffer`` messages and delivers them once the handlers move
    on. ``close``: it unsubscribes at the overflow, and subscribes afresh only once the
    handlers ask for the next message (deaf meanwhile; what was buffered is lost)."""
    manager = GatedManager(redis_server.url, max_buffer=5, overflow=overflow)
    node = await Node("redismpx", manager).start()
    client = Client()
    try:
        await client.connect(node)
        for n in range(20):
            await redis_server.acommand("PUBLISH", "socketio", probe_message(n, "burst"))
        async with asyncio.timeout(10):
            if overflow == "drop_oldest":  # all read (most of them dropped)
                while manager.multiplexer.stats()["messages_received"] < 20:
                    await asyncio.sleep(0.01)  # polls a counter: no event exists for it
            else:  # the listener closed at the overflow: it unsubscribed
                while await redis_server.acommand("PUBSUB", "NUMSUB", "socketio") != [
                    b"socketio",
                    0,
                ]:
                    await asyncio.sleep(0.01)  # polls the server: no event exists for it
        manager.gate.set()
        if overflow == "drop_oldest":
            assert await client.wait_event("burst", 6) == [0, 15, 16, 17, 18, 19]
            assert manager.multiplexer.stats()["dropped"] == 14
            assert "14 Socket.IO message(s) dropped" in caplog.text
        else:
            await client.wait_event("burst", 1)
            assert "delivery buffer overflow" in caplog.text
        fleet_of_one = Fleet("redismpx", "socketio", node, node, client)
        result = await time_until_delivery(
            [fleet_of_one], LIMITS, probe=raw_probe(lambda: redis_server)
        )
        assert result["redismpx"]["probe"] is not None
    finally:
        with contextlib.suppress(Exception):
            await client.sio.disconnect()
        await node.stop()


async def test_aclose_stops_the_listener(redis_server: RedisServer, fleet: Any) -> None:
    node = await fleet("redismpx", redis_server.url)
    await fleet.client(node)
    thread = node.manager.thread
    assert node.manager.listening
    await node.manager.aclose()
    assert thread.done() and not node.manager.listening
    assert node.manager.multiplexer.closed
    assert await redis_server.acommand("PUBSUB", "NUMSUB", "socketio") == [b"socketio", 0]


# -- the configuration of the docs, under uvicorn ----------------------------------------------


async def test_asgi_app_under_uvicorn(redis_server: RedisServer, fleet: Any) -> None:
    """docs/integrations/socketio.md's ASGI set-up: ``socketio.ASGIApp(sio,
    on_shutdown=mgr.aclose)`` under uvicorn, bridged with an aiohttp-served server."""
    import uvicorn

    mgr = AsyncRedisMPXManager(redis_server.url)
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=mgr)
    app = socketio.ASGIApp(sio, on_shutdown=mgr.aclose)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)  # uvicorn has no started event
        port = server.servers[0].sockets[0].getsockname()[1]
        other = await fleet("redismpx", redis_server.url)
        on_other = await fleet.client(other)
        on_uvicorn = Client()
        await on_uvicorn.sio.connect(f"http://127.0.0.1:{port}", transports=["websocket"])
        await sio.emit("from-uvicorn", 1)
        await other.sio.emit("from-aiohttp", 2)
        for client in (on_other, on_uvicorn):
            assert await client.wait_event("from-uvicorn") == [1]
            assert await client.wait_event("from-aiohttp") == [2]
        await on_uvicorn.sio.disconnect()
    finally:
        server.should_exit = True
        await task
    assert mgr.multiplexer.closed and not mgr.listening
