"""The demo's Starlette application: routes, lifespan and the small HTTP endpoints.

``create_app()`` builds it; ``redismpx demo`` (see :mod:`redismpx.demo.cli`) serves it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from redismpx.asgi import open_multiplexer

from .backend import RedisBackend, redis_backend
from .board import QuestionBoard
from .context import DemoContext
from .json_ws import JsonSession
from .limits import Limits
from .metrics import MultiplexerCollector, metrics_registry, render
from .text_ws import TextSession

logger = logging.getLogger("redismpx.demo")

STATIC = Path(__file__).parent / "static"
ADMIN_HEADER = "x-demo-admin"  # a custom header: browsers send it cross-site only after CORS


def _ctx(conn: Request | WebSocket) -> DemoContext:
    ctx: DemoContext = conn.app.state.demo
    return ctx


def _same_origin(websocket: WebSocket) -> bool:
    """Refuse cross-site WebSockets (another web page driving the demo from a browser);
    clients that send no Origin (command-line tools) are accepted."""
    origin = websocket.headers.get("origin")
    return origin is None or urlsplit(origin).netloc == websocket.headers.get("host")


async def ws_text(websocket: WebSocket) -> None:
    """``/ws``: the original examples' ``+chan`` / ``-chan`` / ``!chan`` text protocol."""
    if not _same_origin(websocket):
        await websocket.close(code=1008)
        return
    await TextSession(websocket, _ctx(websocket)).run()


async def ws_json(websocket: WebSocket) -> None:
    """``/ws/json``: the page's JSON protocol (see :mod:`redismpx.demo.json_ws`)."""
    if not _same_origin(websocket):
        await websocket.close(code=1008)
        return
    await JsonSession(websocket, _ctx(websocket)).run()


async def index(request: Request) -> Response:
    """The single page."""
    return FileResponse(STATIC / "index.html")


async def healthz(request: Request) -> Response:
    """200 while the multiplexer is connected to Redis, else 503 (a readiness check)."""
    ctx = _ctx(request)
    stats = ctx.mpx.stats()
    body = {
        "status": "ok" if stats["state"] == "connected" else "unavailable",
        "mpx": stats,
        "redis": ctx.backend.describe(),
        "sockets": ctx.sockets,
    }
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


async def stats(request: Request) -> Response:
    """The same status as the page's ``stats`` messages."""
    return JSONResponse(_ctx(request).snapshot())


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(render(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


async def restart_redis(request: Request) -> Response:
    """``POST /admin/restart-redis?downtime=SECONDS``: kill the embedded server and start it
    again, so that the page shows subscriptions going disconnected, then active. Only when
    the demo started the server itself, and only with the ``X-Demo-Admin`` header."""
    ctx = _ctx(request)
    if request.headers.get(ADMIN_HEADER) is None:
        return JSONResponse({"error": f"send the {ADMIN_HEADER} header"}, status_code=403)
    if not ctx.backend.embedded:
        return JSONResponse({"error": "Redis is external: not restarting it"}, status_code=409)
    try:
        downtime = float(request.query_params.get("downtime", "1"))
    except ValueError:
        return JSONResponse({"error": "downtime must be a number"}, status_code=400)
    try:
        pid = await ctx.backend.restart(downtime)
    except RuntimeError as exc:
        return JSONResponse({"error": str(exc)}, status_code=409)
    return JSONResponse({"restarted": True, "pid": pid})


def create_app(redis_url: str | None = None, *, limits: Limits | None = None) -> Starlette:
    """The demo app. Redis: ``redis_url``, else ``$REDIS_URL``, else an embedded server that
    the app starts at startup and stops at shutdown."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with redis_backend(redis_url) as backend, open_multiplexer(app, backend.url) as mpx:
            board = QuestionBoard(mpx)
            app.state.demo = DemoContext(mpx, backend, board, limits or Limits())
            try:
                yield
            finally:
                board.close()
                del app.state.demo

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/api/stats", stats),
            Route("/admin/restart-redis", restart_redis, methods=["POST"]),
            WebSocketRoute("/ws", ws_text),
            WebSocketRoute("/ws/json", ws_json),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        lifespan=lifespan,
    )
    app.state.metrics = metrics_registry(
        MultiplexerCollector(
            lambda: getattr(app.state, "mpx", None),
            lambda: _extra_metrics(getattr(app.state, "demo", None)),
        )
    )
    return app


def _extra_metrics(ctx: DemoContext | None) -> dict[str, float]:
    if ctx is None:
        return {}
    return {"websockets": float(ctx.sockets), "redis_restarts": float(ctx.backend.restarts)}


__all__ = ["RedisBackend", "create_app"]
