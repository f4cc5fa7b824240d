"""S12's server process: one Starlette app under uvicorn, one variant of the fan-out per run.

Every variant serves ``/ws``: each WebSocket client gets every message of the one channel
``CHANNEL`` as a text frame. The endpoints are written the way the project's documentation
tells users to write them (docs/guide.md, docs/migration.md, docs/integrations/broadcaster.md):

* ``limit``: no Redis. The endpoint registers its socket and waits for the client to leave; a
  driver task (started by the orchestrator) sends the messages itself: for each message, one
  ``await websocket.send_text(text)`` per socket, in one loop. The least an app can do to put
  the same frames on the same sockets through Starlette and uvicorn.
* ``mpx-callback``: ``redismpx_lifespan``; per socket ``new_channel_subscription`` with the
  guide's ``async def on_message(channel, data): await websocket.send_text(data.decode())``
  (a queued subscription: a buffer and a worker task per socket), ``await sub.add(CHANNEL)``,
  and the endpoint reads the socket until the client leaves (``finally: sub.close()``).
* ``mpx-iterator``: ``async with get_multiplexer(websocket).subscribe(CHANNEL) as sub: async for
  msg in sub: await websocket.send_text(msg.data.decode())``, with a task reading the socket
  until the client leaves (anyio task group, as in the broadcaster page's example).
* ``mpx-broadcaster``: ``redismpx.broadcaster.Broadcast(backend=RedisMPXBackend(url))``, the
  broadcaster page's endpoint (``async with broadcast.subscribe(channel=...)``, ``async for
  event in subscriber: await websocket.send_text(event.message)``).
* ``broadcaster``: the same endpoint on stock ``broadcaster.Broadcast(url)`` 0.3.1 (its
  ``redis://`` backend: redis-py asyncio ``PubSub``). Its listener task stops for good when
  the first channel it ever subscribes races with the redis-py ``SUBSCRIBE`` (see
  docs/integrations/broadcaster.md), so the lifespan holds a subscription to a second channel
  (``WARM``, never published to) from startup: the app's channel is then the second one, and
  its listener runs.

Two experiments (``--s12-experiments``), not documented patterns, size a proposal (see
bench/README.md, S12): ``mpx-eager``, a plain callback that starts the send coroutine itself
and hands it to redismpx only if it suspends; ``mpx-batched``, a plain callback that queues the
frame, with one drain per loop turn sending socket by socket the same way.

The orchestrator talks to the process through :class:`bench.worker.Ctl` (the event loop keeps
running): ``ready`` (``n`` sockets subscribed, and confirmed by Redis where the API says so),
``mark`` (the process's CPU time; the first ``mark`` of a pair starts the profiler when asked
for, the second stops it), ``drive`` (the limit's sender), ``stop``.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import os
import pstats
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from bench.worker import Ctl

if TYPE_CHECKING:
    from broadcaster import Event

CHANNEL = "s12"
WARM = "s12:warm"  # stock broadcaster only: see the module docstring
SEQ_DIGITS = 8
VARIANTS = ("limit", "mpx-callback", "mpx-iterator", "mpx-broadcaster", "broadcaster")
EXPERIMENTS = ("mpx-eager", "mpx-batched")  # measured on request only (no bars)


def payload(seq: int, size: int) -> bytes:
    """The ``seq``-th message: its sequence number in ``SEQ_DIGITS`` digits, then dots."""
    head = b"%0*d" % (SEQ_DIGITS, seq)
    return head + b"." * max(0, size - len(head))


class Room:
    """What the endpoints share with the control loop: the sockets, and who is ready."""

    def __init__(self) -> None:
        self.sockets: list[Any] = []  # the limit's driver sends to these
        self.ready = 0  # endpoints whose subscription is in place
        self.changed = asyncio.Event()
        self.stats: Callable[[], dict[str, Any]] = dict  # the library's counters, if any

    def joined(self) -> None:
        self.ready += 1
        self.changed.set()

    def left(self) -> None:
        self.ready -= 1
        self.changed.set()

    async def wait_ready(self, n: int, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while self.ready < n:
                self.changed.clear()
                await self.changed.wait()


def build_app(variant: str, url: str, room: Room, options: dict[str, Any]) -> Any:
    """The Starlette app of one variant (imports only what that variant uses)."""
    import anyio
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    Endpoint = Callable[[WebSocket], Awaitable[None]]
    endpoint: Endpoint
    lifespan: Any = None

    if variant == "limit":

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            room.sockets.append(websocket)
            room.joined()
            try:
                async for _ in websocket.iter_text():
                    pass
            finally:
                room.sockets.remove(websocket)
                room.left()

    elif variant == "mpx-callback":
        from redismpx.asgi import get_multiplexer, redismpx_lifespan

        lifespan = redismpx_lifespan(url, **options)
        room.stats = lambda: _mpx_stats(app.state.mpx)

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()

            async def on_message(channel: bytes, data: bytes) -> None:
                await websocket.send_text(data.decode())

            sub = get_multiplexer(websocket).new_channel_subscription(on_message, eager=True)
            try:
                await sub.add(CHANNEL)  # Redis confirmed it
                room.joined()
                try:
                    async for _ in websocket.iter_text():
                        pass
                finally:
                    room.left()
            finally:
                sub.close()  # the socket is gone: unsubscribe, stop the callbacks

    elif variant == "mpx-eager":
        # Not a documented pattern: a plain callback that runs the send coroutine itself and
        # hands it to the library only if it suspends (what an "eager" delivery mode of async
        # callbacks would do inside redismpx). Measured to size that proposal.
        from redismpx.asgi import get_multiplexer, redismpx_lifespan

        lifespan = redismpx_lifespan(url, **options)
        room.stats = lambda: _mpx_stats(app.state.mpx)

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()

            def on_message(channel: bytes, data: bytes) -> Any:
                return _eager(websocket.send_text(data.decode()))

            sub = get_multiplexer(websocket).new_channel_subscription(on_message)
            try:
                await sub.add(CHANNEL)
                room.joined()
                try:
                    async for _ in websocket.iter_text():
                        pass
                finally:
                    room.left()
            finally:
                sub.close()

    elif variant == "mpx-batched":
        # Not a documented pattern either: a plain callback that queues the frame, and one
        # drain per event-loop turn that sends socket by socket, starting each send coroutine
        # by hand (what an "eager drain" of queued subscriptions would do inside redismpx).
        from redismpx.asgi import get_multiplexer, redismpx_lifespan

        lifespan = redismpx_lifespan(url, **options)
        room.stats = lambda: _mpx_stats(app.state.mpx)
        batcher = _Batcher()

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            outbox = _Outbox(websocket)

            def on_message(channel: bytes, data: bytes) -> None:
                batcher.push(outbox, data.decode())

            sub = get_multiplexer(websocket).new_channel_subscription(on_message)
            try:
                await sub.add(CHANNEL)
                room.joined()
                try:
                    async for _ in websocket.iter_text():
                        pass
                finally:
                    room.left()
            finally:
                sub.close()
                outbox.close()

    elif variant == "mpx-iterator":
        from redismpx.asgi import get_multiplexer, redismpx_lifespan

        lifespan = redismpx_lifespan(url, **options)
        room.stats = lambda: _mpx_stats(app.state.mpx)

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            async with get_multiplexer(websocket).subscribe(CHANNEL) as sub:  # confirmed
                room.joined()
                try:
                    async with anyio.create_task_group() as tasks:
                        tasks.start_soon(_read_until_closed, websocket, tasks.cancel_scope)
                        async for msg in sub:
                            await websocket.send_text(msg.data.decode())
                finally:
                    room.left()

    elif variant in ("mpx-broadcaster", "broadcaster"):
        if variant == "broadcaster":
            from broadcaster import Broadcast

            broadcast = Broadcast(url)
        else:
            from redismpx.broadcaster import Broadcast as MPXBroadcast
            from redismpx.broadcaster import RedisMPXBackend

            backend = RedisMPXBackend(url, **options)
            broadcast = MPXBroadcast(backend=backend)
            room.stats = lambda: _mpx_stats(backend.multiplexer)

        @contextlib.asynccontextmanager
        async def broadcast_lifespan(app: Any) -> AsyncIterator[None]:
            async with broadcast:
                if variant == "broadcaster":
                    async with broadcast.subscribe(channel=WARM):
                        yield
                else:
                    yield

        lifespan = broadcast_lifespan

        async def endpoint(websocket: WebSocket) -> None:
            await websocket.accept()
            async with broadcast.subscribe(channel=CHANNEL) as subscriber:
                room.joined()
                try:
                    async with anyio.create_task_group() as tasks:
                        tasks.start_soon(_read_until_closed, websocket, tasks.cancel_scope)
                        # (broadcaster's Subscriber.__aiter__ is annotated as possibly None.)
                        async for event in cast("AsyncIterator[Event]", subscriber):
                            await websocket.send_text(event.message)
                finally:
                    room.left()

    else:
        raise ValueError(f"unknown S12 variant {variant!r}")

    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)], lifespan=lifespan)
    return app


def _mpx_stats(mpx: Any) -> dict[str, Any]:
    stats = mpx.stats()
    return {"dropped": stats.get("dropped", 0), "callback_errors": stats.get("callback_errors", 0)}


class _Resumed:
    """Awaiting it finishes a coroutine that was started by hand and suspended on ``fut``."""

    __slots__ = ("coro", "fut")

    def __init__(self, coro: Any, fut: Any) -> None:
        self.coro = coro
        self.fut = fut

    def __await__(self) -> Any:
        coro, fut = self.coro, self.fut
        while True:
            try:
                yield fut
            except BaseException as exc:  # cancelled: into the coroutine
                try:
                    fut = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
                continue
            try:
                fut = coro.send(None)
            except StopIteration as stop:
                return stop.value


def _eager(coro: Any) -> Any:
    """Run ``coro`` now; None if it finished without suspending, else an awaitable of the rest."""
    try:
        fut = coro.send(None)
    except StopIteration:
        return None
    return _Resumed(coro, fut)


class _Outbox:
    """One socket's frames waiting for the drain, and its sender task while a send blocks."""

    __slots__ = ("pending", "task", "websocket")

    def __init__(self, websocket: Any) -> None:
        self.websocket = websocket
        self.pending: list[str] = []
        self.task: asyncio.Task[None] | None = None  # set while a send is suspended

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.pending.clear()

    def flush(self) -> None:
        """Send what is pending, each send run by hand until one suspends."""
        pending, self.pending = self.pending, []
        send = self.websocket.send_text
        for i, text in enumerate(pending):
            try:
                rest = _eager(send(text))
            except Exception:
                self.pending.clear()  # the socket is gone: its endpoint cleans up
                return
            if rest is not None:
                self.pending[:0] = pending[i + 1 :]
                self.task = asyncio.get_running_loop().create_task(self._finish(rest))
                return

    async def _finish(self, rest: Any) -> None:
        try:
            await rest
            while self.pending:
                text = self.pending.pop(0)
                await self.websocket.send_text(text)
        except Exception:
            self.pending.clear()
        finally:
            self.task = None


class _Batcher:
    """The sockets with frames pending, drained once per event-loop turn."""

    def __init__(self) -> None:
        self.dirty: list[_Outbox] = []

    def push(self, outbox: _Outbox, text: str) -> None:
        if not outbox.pending and outbox.task is None:
            if not self.dirty:
                asyncio.get_running_loop().call_soon(self.drain)
            self.dirty.append(outbox)
        outbox.pending.append(text)

    def drain(self) -> None:
        dirty, self.dirty = self.dirty, []
        for outbox in dirty:
            if outbox.task is None:  # else its task sends what is pending
                outbox.flush()


async def _read_until_closed(websocket: Any, scope: Any) -> None:
    """Read the socket until the client leaves, then stop the sending side (cancel scope)."""
    async for _ in websocket.iter_text():
        pass
    scope.cancel()


async def drive(room: Room, messages: int, rate: float, size: int) -> None:
    """The limit: put ``messages`` frames on every socket.

    Paced (``rate`` msgs/s): each message goes to every socket in turn, as it is due. At full
    speed (``rate`` 0) every message is there at once, and the cheapest order is used: all
    the frames of one socket, then the next socket (about half the kernel's cost per frame of
    the message-by-message order, measured).
    """
    sockets = list(room.sockets)
    texts = [payload(seq, size).decode() for seq in range(messages)]
    if not rate:
        for websocket in sockets:
            for text in texts:
                await websocket.send_text(text)
        return
    start = time.monotonic()
    for seq, text in enumerate(texts):
        delay = start + seq / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        for websocket in sockets:
            await websocket.send_text(text)


# --------------------------------------------------------------------------------------------
# Where the time goes: cProfile's own time, summed per package


GROUPS = (
    ("/uvicorn/", "uvicorn (ASGI send, protocol)"),
    ("/websockets/", "websockets (frames)"),
    ("/starlette/", "starlette (WebSocket.send)"),
    ("/anyio/", "anyio"),
    ("/redismpx/", "redismpx"),
    ("/broadcaster/", "broadcaster"),
    ("/redis/", "redis-py"),
    ("/asyncio/", "asyncio (loop, tasks, queues)"),
    ("/bench/", "app code (the endpoints)"),
)


def _group(key: tuple[str, int, str]) -> str:
    path, _, func = key
    if path == "~":
        if "'send' of '_socket.socket'" in func:
            return "socket.send (kernel)"
        if "'poll' of 'select.epoll'" in func:
            return "epoll (kernel)"
        if "uvloop" in func or "_asyncio" in func:
            return "event loop (C)"
        if "hiredis" in func:
            return "hiredis"
        return "builtins (other)"
    for marker, label in GROUPS:
        if marker in path:
            return label
    return "other Python"


def profile_groups(prof: cProfile.Profile, deliveries: int) -> dict[str, Any]:
    """Own CPU time per group, in us per delivery, and the 12 costliest functions."""
    stats = pstats.Stats(prof)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    groups: dict[str, float] = {}
    total = 0.0
    for key, (_, _, tottime, _, _) in table.items():
        groups[_group(key)] = groups.get(_group(key), 0.0) + tottime
        total += tottime
    per = max(1, deliveries)
    top = sorted(table.items(), key=lambda kv: kv[1][2], reverse=True)[:12]
    return {
        "total_us": total / per * 1e6,
        "groups": {k: v / per * 1e6 for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top": [
            (f"{k[0]}:{k[1]}({k[2]})" if k[0] != "~" else k[2], v[1], v[2] / per * 1e6)
            for k, v in top
        ],
    }


# --------------------------------------------------------------------------------------------
# The process body


def _listen() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def _impl(config: Any) -> str:
    import importlib.metadata

    import uvicorn

    ws_class = getattr(config, "ws_protocol_class", None)
    http_class = getattr(config, "http_protocol_class", None)
    ws_name = getattr(ws_class, "__name__", str(ws_class))
    http_name = getattr(http_class, "__name__", str(http_class))
    loop = type(asyncio.get_running_loop()).__module__.split(".")[0]
    websockets = importlib.metadata.version("websockets")
    ws = f"{ws_name} (websockets {websockets})"
    return f"uvicorn {uvicorn.__version__} {ws}, {http_name}, loop {loop}"


async def server(ctl: Ctl, variant: str, p: dict[str, Any]) -> dict[str, Any]:
    """Server process body: serve the variant's app until told to stop."""
    import uvicorn

    room = Room()
    app = build_app(variant, p["url"], room, p["options"])
    config = uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=5
    )
    srv = uvicorn.Server(config)
    sock = _listen()
    port = sock.getsockname()[1]
    serving = asyncio.create_task(srv.serve(sockets=[sock]))
    async with asyncio.timeout(p["setup_timeout"]):
        while not srv.started:
            if serving.done():
                serving.result()
                raise RuntimeError("uvicorn stopped during startup")
            await asyncio.sleep(0.005)  # uvicorn has no startup event to wait on
    ctl.send("ready", port, _impl(config))
    driver: asyncio.Task[None] | None = None
    prof: cProfile.Profile | None = None
    profiles: list[dict[str, Any]] = []
    try:
        while True:
            msg = await ctl.recv(p["block_timeout"])
            kind = msg[0]
            if kind == "ready":
                await room.wait_ready(msg[1], p["setup_timeout"])
                ctl.send("ready", room.ready)
            elif kind == "mark":
                # A pair of marks brackets a repetition: ("mark", True, profile) starts it,
                # ("mark", False, deliveries) ends it.
                if msg[1] and msg[2] and p["profile"]:
                    # CPU time, not wall time: the idle waits in epoll must not count.
                    prof = cProfile.Profile(time.process_time)
                    prof.enable()
                elif not msg[1] and prof is not None:
                    prof.disable()
                    if p["profile_path"]:
                        prof.dump_stats(f"{p['profile_path']}.{len(profiles)}")
                    profiles.append(profile_groups(prof, msg[2]))
                    prof = None
                t = os.times()
                ctl.send("mark", time.process_time(), time.monotonic(), t.user, t.system)
            elif kind == "drive":
                driver = asyncio.create_task(drive(room, msg[1], msg[2], msg[3]))
                ctl.send("driving", None)
            elif kind == "driven":
                if driver is not None:
                    await driver
                ctl.send("driven", None)
            else:  # stop
                break
        stats = room.stats()  # while the lifespan still runs
    finally:
        srv.should_exit = True
        await asyncio.wait_for(serving, p["setup_timeout"])
        sock.close()
    return {"stats": stats, "profiles": profiles}
