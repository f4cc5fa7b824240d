"""``redismpx.asgi``: the lifespan helpers, against a real server.

Starlette's TestClient runs the lifespan (startup on enter, shutdown on exit) in its own
event loop thread; the async tests drive ``open_multiplexer`` and httpx's ASGITransport in
the test's loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from redismpx import Multiplexer
from redismpx.asgi import (
    DEFAULT_URL,
    get_multiplexer,
    open_multiplexer,
    redismpx_lifespan,
    resolve_url,
)
from redismpx.server import free_port

with warnings.catch_warnings():  # Starlette >= 1.x prefers httpx2 for its TestClient
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient


async def stats(request: Request) -> Response:
    mpx = get_multiplexer(request)
    await mpx.wait_connected(5)
    return JSONResponse({"stats": mpx.stats(), "extra": getattr(request.state, "extra", None)})


async def roundtrip(request: Request) -> Response:
    """Subscribe, publish with redis-py, return what the subscription heard."""
    mpx = get_multiplexer(request)
    got: asyncio.Queue[bytes] = asyncio.Queue()
    active = asyncio.Event()
    sub = mpx.new_channel_subscription(
        lambda ch, data: got.put_nowait(data), on_activation=lambda ch: active.set()
    )
    try:
        sub.add("asgi-test")
        async with asyncio.timeout(5):
            await active.wait()
            client = aioredis.Redis.from_url(request.app.state.url)
            try:
                await client.publish("asgi-test", "through the lifespan")
            finally:
                await client.aclose()
            data = await got.get()
    finally:
        sub.close()
    return JSONResponse({"message": data.decode()})


def make_app(lifespan: Any, url: str) -> Starlette:
    app = Starlette(
        routes=[Route("/stats", stats), Route("/roundtrip", roundtrip)], lifespan=lifespan
    )
    app.state.url = url
    return app


def test_lifespan_opens_and_closes_the_multiplexer(redis_server: Any) -> None:
    app = make_app(redismpx_lifespan(redis_server.url), redis_server.url)
    assert not hasattr(app.state, "mpx")
    with TestClient(app) as client:
        mpx = app.state.mpx
        assert isinstance(mpx, Multiplexer)
        body = client.get("/stats").json()
        assert body["stats"]["state"] == "connected"
        assert client.get("/roundtrip").json() == {"message": "through the lifespan"}
        assert client.get("/stats").json()["stats"]["subscriptions"] == 0  # closed after use
    assert mpx.closed
    assert not hasattr(app.state, "mpx")


def test_user_lifespan_runs_inside_and_passes_state(redis_server: Any) -> None:
    seen: list[str] = []

    @contextlib.asynccontextmanager
    async def mine(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        mpx = app.state.mpx  # already open
        seen.append(f"start:{mpx.closed}")
        yield {"extra": "from my lifespan"}
        seen.append(f"stop:{mpx.closed}")  # still open while mine shuts down

    app = make_app(redismpx_lifespan(redis_server.url, lifespan=mine), redis_server.url)
    with TestClient(app) as client:
        assert client.get("/stats").json()["extra"] == "from my lifespan"
    assert seen == ["start:False", "stop:False"]


def test_kwargs_and_attribute(redis_server: Any) -> None:
    lifespan = redismpx_lifespan(redis_server.url, attribute="pubsub", max_buffer=7)
    app = Starlette(lifespan=lifespan)
    with TestClient(app):
        assert isinstance(app.state.pubsub, Multiplexer)
        assert app.state.pubsub._hub.tuning.max_buffer == 7
    assert not hasattr(app.state, "pubsub")


def test_wait_connected_fails_the_startup_when_redis_is_down() -> None:
    app = Starlette(
        lifespan=redismpx_lifespan(
            f"redis://127.0.0.1:{free_port()}", wait_connected=0.3, connect_timeout=0.2
        )
    )
    with pytest.raises(TimeoutError), TestClient(app):
        pass
    assert not hasattr(app.state, "mpx")


def test_startup_does_not_wait_by_default() -> None:
    """A Redis that is down does not stop the app: the multiplexer keeps reconnecting."""
    app = Starlette(lifespan=redismpx_lifespan(f"redis://127.0.0.1:{free_port()}"))
    with TestClient(app):
        assert app.state.mpx.state.value in ("connecting", "disconnected")


def test_get_multiplexer_without_lifespan() -> None:
    app = Starlette(routes=[Route("/stats", stats)])
    with TestClient(app) as client, pytest.raises(RuntimeError, match="redismpx_lifespan"):
        client.get("/stats")


def test_resolve_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    assert resolve_url(None) == DEFAULT_URL
    monkeypatch.setenv("REDIS_URL", "redis://example:1234/2")
    assert resolve_url(None) == "redis://example:1234/2"
    assert resolve_url("redis://explicit") == "redis://explicit"


async def test_open_multiplexer_with_httpx_asgi_transport(redis_server: Any) -> None:
    app = make_app(None, redis_server.url)
    async with open_multiplexer(app, redis_server.url, wait_connected=5) as mpx:
        assert app.state.mpx is mpx
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            response = await client.get("/roundtrip")
        assert response.json() == {"message": "through the lifespan"}
    assert mpx.closed
    assert not hasattr(app.state, "mpx")


async def test_open_multiplexer_closes_on_error(redis_server: Any) -> None:
    app = make_app(None, redis_server.url)
    with pytest.raises(ZeroDivisionError):
        async with open_multiplexer(app, redis_server.url) as mpx:
            1 / 0  # noqa: B018
    assert mpx.closed
