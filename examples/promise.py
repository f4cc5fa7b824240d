"""Networked promises: each text message is a suffix; the socket is told when the next
message on ``promise:<suffix>`` arrives, or that none came in time.

Run it (Redis from ``$REDIS_URL``, else an embedded server started for you)::

    uvicorn examples.promise:app

connect to ``ws://127.0.0.1:8000/ws`` and send ``order-42`` (or ``order-42 30`` for a
30-second timeout; 5 s by default). After ``waiting: [order-42]``, publish the answer, e.g.
``redis-cli publish promise:order-42 shipped``: the socket gets
``resolved: [order-42] msg: [shipped]``, or ``timeout: [order-42]``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket

from redismpx import PromiseSubscription, PromiseTimeout, RedisMPXError, SubscriptionInterrupted
from redismpx.asgi import get_multiplexer, open_multiplexer
from redismpx.demo.backend import redis_backend

PREFIX = "promise:"
DEFAULT_TIMEOUT = 5.0


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with redis_backend() as backend, open_multiplexer(app, backend.url):
        yield


async def wait_for_answer(
    websocket: WebSocket, promises: PromiseSubscription, suffix: str, seconds: float
) -> None:
    # wait_for_new_promise waits until the subscription is active (the original did not,
    # and failed with InactiveSubscription on a fresh socket).
    try:
        promise = await promises.wait_for_new_promise(suffix, seconds)
    except RedisMPXError as exc:  # a bad timeout or suffix
        await websocket.send_text(f"error: [{suffix}] {exc}")
        return
    await websocket.send_text(f"waiting: [{suffix}]")
    try:
        answer = await promise
    except PromiseTimeout:
        await websocket.send_text(f"timeout: [{suffix}] no answer within {seconds:g} s")
    except SubscriptionInterrupted:
        await websocket.send_text(f"interrupted: [{suffix}] the connection to Redis was lost")
    else:
        await websocket.send_text(f"resolved: [{suffix}] msg: [{answer.decode()}]")


async def ask(websocket: WebSocket) -> None:
    await websocket.accept()
    promises = get_multiplexer(websocket).new_promise_subscription(PREFIX)
    waiting: set[asyncio.Task[None]] = set()
    try:
        async for text in websocket.iter_text():
            suffix, _, seconds = text.strip().partition(" ")
            try:
                timeout = float(seconds) if seconds else DEFAULT_TIMEOUT
            except ValueError:
                await websocket.send_text(f"error: {seconds!r} is not a number of seconds")
                continue
            task = asyncio.create_task(wait_for_answer(websocket, promises, suffix, timeout))
            waiting.add(task)
            task.add_done_callback(waiting.discard)
    finally:
        promises.close()  # pending promises fail with SubscriptionClosed
        for task in waiting:
            task.cancel()


app = Starlette(routes=[WebSocketRoute("/ws", ask)], lifespan=lifespan)
