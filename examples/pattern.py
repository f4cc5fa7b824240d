"""Pattern subscriptions: each WebSocket listens to one glob pattern (``pattern:*`` unless the
URL says ``?pattern=news:*``) and hears the *actual* channel of every message.

Run it (Redis from ``$REDIS_URL``, else an embedded server started for you)::

    uvicorn examples.pattern:app

connect to ``ws://127.0.0.1:8000/ws`` and publish, e.g. ``redis-cli publish pattern:x hi``.
The socket receives ``active: [pattern:*]`` once Redis has confirmed the pattern, then
``ch: [pattern:x] msg: [hi]`` for each message.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from redismpx import RedisMPXError
from redismpx.asgi import get_multiplexer, open_multiplexer
from redismpx.demo.backend import redis_backend


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with redis_backend() as backend, open_multiplexer(app, backend.url):
        yield


async def listen(websocket: WebSocket) -> None:
    await websocket.accept()
    pattern = websocket.query_params.get("pattern", "pattern:*")

    async def on_message(channel: bytes, message: bytes) -> None:
        await websocket.send_text(f"ch: [{channel.decode()}] msg: [{message.decode()}]")

    async def on_activation(name: bytes) -> None:
        await websocket.send_text(f"active: [{name.decode()}]")

    async def on_disconnect(error: BaseException) -> None:
        await websocket.send_text(f"disconnected: [{error}] (reconnecting)")

    try:
        sub = get_multiplexer(websocket).new_pattern_subscription(
            pattern, on_message, on_disconnect, on_activation
        )
    except RedisMPXError as exc:
        await websocket.close(code=1008, reason=str(exc)[:120])
        return
    try:
        async for _ in websocket.iter_text():  # listen only; wait for the client to leave
            await websocket.send_text("error: this socket only listens")
    finally:
        sub.close()  # the original never closed it: a leak, and sends to dead sockets


app = Starlette(routes=[WebSocketRoute("/ws", listen)], lifespan=lifespan)
