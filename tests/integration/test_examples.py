"""The examples in ``examples/`` end to end: uvicorn in the test's loop, websockets clients,
Redis from ``$REDIS_URL`` (the ``redis_server`` fixture)."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis.asyncio as aioredis
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.timeout(60)


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields ``host:port``."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited during startup")
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def redis_url(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[str]:
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    yield redis_server.url


async def recv(ws: ClientConnection, timeout: float = 5) -> str:
    async with asyncio.timeout(timeout):
        return str(await ws.recv())


async def test_chat(redis_url: str) -> None:
    module = load("chat")
    async with serve(module.app) as address:
        mpx = module.app.state.mpx
        async with (
            websockets.connect(f"ws://{address}/ws") as alice,
            websockets.connect(f"ws://{address}/ws") as bob,
        ):
            await alice.send("+room")
            assert await recv(alice) == "active: [room]"
            await bob.send("!room")
            await bob.send("hello, alice")
            assert await recv(alice) == "ch: [room] msg: [hello, alice]"
            await bob.send("what?")
            assert await recv(bob) == "error: use +chan, -chan or !chan"
            await bob.send("+")
            assert (await recv(bob)).startswith("error: channel name must not be empty")
            assert mpx.stats()["subscriptions"] == 2

            await alice.send("-room")
            await alice.send("+lobby")
            assert await recv(alice) == "active: [lobby]"
            for channel in ("room", "lobby"):
                await bob.send(f"!{channel}")
                await bob.send(f"to {channel}")
            assert await recv(alice) == "ch: [lobby] msg: [to lobby]"  # not "room": left
            stats = mpx.stats()  # the example publishes with mpx.publish, on one connection
            assert (stats["published"], stats["publish_connects"]) == (3, 1)
        async with asyncio.timeout(5):  # closing the sockets closed their subscriptions
            while mpx.stats()["subscriptions"]:
                await asyncio.sleep(0.02)
        assert mpx.stats()["channels"] == 0
    assert mpx.closed


async def test_pattern(redis_url: str) -> None:
    module = load("pattern")
    async with serve(module.app) as address, aioredis.Redis.from_url(redis_url) as client:
        async with websockets.connect(f"ws://{address}/ws?pattern=news:*") as ws:
            assert await recv(ws) == "active: [news:*]"
            await client.publish("news:sport", "goal")
            await client.publish("weather", "rain")
            await client.publish("news:tech", "chips")
            assert await recv(ws) == "ch: [news:sport] msg: [goal]"
            assert await recv(ws) == "ch: [news:tech] msg: [chips]"
        mpx = module.app.state.mpx
        async with asyncio.timeout(5):
            while mpx.stats()["subscriptions"]:
                await asyncio.sleep(0.02)


async def test_promise(redis_url: str) -> None:
    module = load("promise")
    async with (
        serve(module.app) as address,
        aioredis.Redis.from_url(redis_url) as client,
        websockets.connect(f"ws://{address}/ws") as ws,
    ):
        await ws.send("order-1 30")  # at once: the example waits for activation itself
        assert await recv(ws) == "waiting: [order-1]"
        await client.publish("promise:order-1", "shipped")
        assert await recv(ws) == "resolved: [order-1] msg: [shipped]"

        await ws.send("order-2 0.2")
        assert await recv(ws) == "waiting: [order-2]"
        assert await recv(ws) == "timeout: [order-2] no answer within 0.2 s"

        await ws.send("order-3 soon")
        assert await recv(ws) == "error: 'soon' is not a number of seconds"
        await ws.send("order-4 -1")
        assert (await recv(ws)).startswith("error: [order-4] timeout must be > 0")
