"""A WebSocket chat on Redis Pub/Sub: one ChannelSubscription per socket, one multiplexer.

Run it (Redis from ``$REDIS_URL``, else an embedded server started for you)::

    uvicorn examples.chat:app

then talk to ``ws://127.0.0.1:8000/ws`` with a WebSocket client (``python -m websockets``,
``websocat``...) or a browser's console (``new WebSocket("ws://localhost:8000/ws")``):

* ``+chan`` joins ``chan`` (``active: [chan]`` follows once Redis has confirmed it);
* ``-chan`` leaves it;
* ``!chan`` publishes your *next* message to ``chan``.

Every message on a joined channel arrives as ``ch: [chan] msg: [text]``.
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
    # One multiplexer (app.state.mpx) for the whole process: it also publishes.
    async with redis_backend() as backend, open_multiplexer(app, backend.url):
        yield


async def chat(websocket: WebSocket) -> None:
    await websocket.accept()
    mpx = get_multiplexer(websocket)

    async def on_message(channel: bytes, message: bytes) -> None:
        # Redis hands us bytes: decode before send_text.
        await websocket.send_text(f"ch: [{channel.decode()}] msg: [{message.decode()}]")

    async def on_activation(channel: bytes) -> None:
        await websocket.send_text(f"active: [{channel.decode()}]")

    async def on_disconnect(error: BaseException) -> None:
        await websocket.send_text(f"disconnected: [{error}] (reconnecting)")

    sub = mpx.new_channel_subscription(on_message, on_disconnect, on_activation)
    target: str | None = None  # set by !chan: where the next message goes
    try:
        async for text in websocket.iter_text():
            try:
                if target is not None:
                    channel, target = target, None
                    # Over the multiplexer's own command connection (not the subscriber one);
                    # while Redis is down it waits at most `timeout` s, then PublishTimeout.
                    await mpx.publish(channel, text, timeout=2.0)
                elif text.startswith("+"):
                    sub.add(text[1:])
                elif text.startswith("-"):
                    sub.remove(text[1:])
                elif text.startswith("!") and len(text) > 1:
                    target = text[1:]
                else:
                    await websocket.send_text("error: use +chan, -chan or !chan")
            except RedisMPXError as exc:  # PublishTimeout, ConnectionLost, a bad name...
                await websocket.send_text(f"error: {exc}")
    finally:
        sub.close()  # the socket is gone: unsubscribe and stop the callbacks


app = Starlette(routes=[WebSocketRoute("/ws", chat)], lifespan=lifespan)
