"""A chat room over WebSockets: what a client sends is published on the room's channel, and
every client of the room, on any instance of the app, receives it. Tested by
test_chatroom.py with redismpx's pytest plugin; run it with ``uvicorn chatroom:app``."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from redismpx.asgi import get_multiplexer, redismpx_lifespan


async def room(websocket: WebSocket) -> None:
    await websocket.accept()
    channel = f"room:{websocket.path_params['name']}"
    mpx = get_multiplexer(websocket)

    async def on_message(channel: bytes, data: bytes) -> None:
        await websocket.send_text(data.decode())

    sub = mpx.new_channel_subscription(on_message)
    try:
        await sub.add(channel)  # returns once Redis confirmed it
        await websocket.send_text("joined")
        async for text in websocket.iter_text():  # until the client leaves
            await mpx.publish(channel, text)
    finally:
        sub.close()  # unsubscribes: the client is gone


def create_app(redis_url: str | None = None) -> Starlette:
    """The app, on ``redis_url`` (default: ``$REDIS_URL``, else redis://localhost:6379)."""
    return Starlette(
        routes=[WebSocketRoute("/rooms/{name}", room)],
        lifespan=redismpx_lifespan(redis_url),
    )


app = create_app()
