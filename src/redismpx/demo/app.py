"""The demo's Starlette application: routes, lifespan and the small HTTP endpoints.

``create_app()`` builds it; ``redismpx demo`` (see :mod:`redismpx.demo.cli`) serves it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
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
DOCS_URL_ENV = "REDISMPX_DOCS_URL"
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


async def favicon(request: Request) -> Response:
    """The page links an inline icon; this one is for browsers showing /metrics or /healthz."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


async def healthz(request: Request) -> Response:
    """200 while the multiplexer is connected to Redis, else 503 (a readiness check).

    The body is what the page shows (:meth:`DemoContext.status`): ``link.error`` is set only
    during an outage; once the link is back the error moves to ``link.last_outage``, with
    when it began and ended. ``sockets`` is ``tabs`` under its former name."""
    status = _ctx(request).status()
    body = {**status, "sockets": status["tabs"]}
    return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)


async def stats(request: Request) -> Response:
    """The same status as the page's ``stats`` messages."""
    return JSONResponse(_ctx(request).snapshot())


async def metrics(request: Request) -> Response:
    """Prometheus text format."""
    return Response(render(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)


def find_docs() -> dict[str, Path]:
    """The Markdown pages of a source checkout's ``docs/`` (``make demo`` runs from one), by
    file name; empty when installed from a wheel, which has no docs."""
    docs = Path(__file__).resolve().parents[3] / "docs"
    if not (docs.parent / "mkdocs.yml").is_file():
        return {}
    return {page.name: page for page in sorted(docs.glob("*.md"))}


async def doc(request: Request) -> Response:
    """``/docs/NAME.md``: the page's documentation links.

    With a docs URL (``create_app(docs_url=...)`` or ``$REDISMPX_DOCS_URL``, the address of
    the built MkDocs site) it redirects there (``guide.md`` -> ``URL/guide/``); else it serves
    the Markdown of the source checkout's ``docs/`` as plain text; else a 404 that says where
    the docs are."""
    name = request.path_params["name"]
    base: str | None = request.app.state.docs_url
    pages: dict[str, Path] = request.app.state.docs
    if base:
        stem = name.removesuffix(".md")
        target = base.rstrip("/") + "/" + ("" if stem == "index" else f"{stem}/")
        return RedirectResponse(target, status_code=307)
    page = pages.get(name)
    if page is None:
        return PlainTextResponse(
            f"{name}: the documentation is in the docs/ folder of the redismpx source "
            f"repository (set ${DOCS_URL_ENV} to the address of the built site to link it).",
            status_code=404,
        )
    return PlainTextResponse(page.read_text(encoding="utf-8"))


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


def create_app(
    redis_url: str | None = None, *, limits: Limits | None = None, docs_url: str | None = None
) -> Starlette:
    """The demo app. Redis: ``redis_url``, else ``$REDIS_URL``, else an embedded server that
    the app starts at startup and stops at shutdown. The page's documentation links go to
    ``docs_url`` (else ``$REDISMPX_DOCS_URL``), the built documentation site, else to the
    Markdown of the source checkout (see :func:`doc`)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with redis_backend(redis_url) as backend, open_multiplexer(app, backend.url) as mpx:
            settings = limits or Limits()
            board = QuestionBoard(mpx, publish_timeout=settings.publish_timeout)
            ctx = DemoContext(mpx, backend, board, settings)
            app.state.demo = ctx
            watch = asyncio.create_task(ctx.watch())
            try:
                yield
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
                await ctx.numbers.aclose()
                await board.aclose()
                del app.state.demo

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/favicon.ico", favicon),
            Route("/docs/{name:str}", doc),
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
    app.state.docs_url = docs_url or os.environ.get(DOCS_URL_ENV) or None
    app.state.docs = find_docs()
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
