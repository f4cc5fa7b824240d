"""ASGI lifespan integration: one :class:`~redismpx.Multiplexer` per process.

A multiplexer must live inside the server's event loop, be created once per process (per
worker) and be closed when the server stops. The lifespan protocol of Starlette and FastAPI
is the place for that::

    from starlette.applications import Starlette
    from redismpx.asgi import get_multiplexer, redismpx_lifespan

    app = Starlette(routes=[...], lifespan=redismpx_lifespan("redis://localhost:6379"))

    async def endpoint(websocket):
        mpx = get_multiplexer(websocket)      # the same as websocket.app.state.mpx
        sub = mpx.new_channel_subscription(on_message)
        try:
            ...
        finally:
            sub.close()

Your own lifespan composes in two ways. Pass it in, and it runs while the multiplexer is
open (``app.state.mpx`` is set before it starts and closed after it ends)::

    app = Starlette(lifespan=redismpx_lifespan(url, lifespan=my_lifespan))

or open the multiplexer yourself inside your lifespan, where you choose the order::

    @contextlib.asynccontextmanager
    async def lifespan(app):
        async with start_something() as thing, open_multiplexer(app, url):
            yield

Both work with any framework whose application object has a ``state`` namespace and whose
lifespan is an ``app -> async context manager`` callable (Starlette, FastAPI).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

from .multiplexer import Multiplexer

__all__ = [
    "DEFAULT_URL",
    "get_multiplexer",
    "open_multiplexer",
    "redismpx_lifespan",
    "resolve_url",
]

DEFAULT_URL = "redis://localhost:6379"
"""The URL used when none is given and ``REDIS_URL`` is not set."""

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]
"""``app -> async context manager``, as Starlette and FastAPI take it (Any-typed so that the
result type-checks as either of Starlette's stateless or stateful lifespans)."""


class _HasApp(Protocol):
    @property
    def app(self) -> Any: ...


def resolve_url(url: str | None) -> str:
    """``url``, else the ``REDIS_URL`` environment variable, else :data:`DEFAULT_URL`."""
    if url is not None:
        return url
    return os.environ.get("REDIS_URL") or DEFAULT_URL


@contextlib.asynccontextmanager
async def open_multiplexer(
    app: Any,
    url: str | None = None,
    *,
    attribute: str = "mpx",
    wait_connected: float | None = None,
    **kwargs: Any,
) -> AsyncIterator[Multiplexer]:
    """Open a multiplexer, store it as ``app.state.<attribute>``, and close it on exit.

    ``url`` defaults to ``$REDIS_URL`` and then to :data:`DEFAULT_URL`; ``kwargs`` go to
    :class:`~redismpx.Multiplexer`. Startup does not wait for Redis (the multiplexer connects
    and reconnects in the background) unless ``wait_connected`` is a number of seconds: then a
    Redis that cannot be reached in time fails the startup with ``TimeoutError``. On exit the
    attribute is removed and ``await mpx.aclose()`` ends every subscription and task.
    """
    mpx = Multiplexer(resolve_url(url), **kwargs)
    try:
        if wait_connected is not None:
            await mpx.wait_connected(wait_connected)
        setattr(app.state, attribute, mpx)
        try:
            yield mpx
        finally:
            with contextlib.suppress(AttributeError):
                delattr(app.state, attribute)
    finally:
        await mpx.aclose()


def redismpx_lifespan(
    url: str | None = None,
    *,
    lifespan: Lifespan | None = None,
    attribute: str = "mpx",
    wait_connected: float | None = None,
    **kwargs: Any,
) -> Lifespan:
    """A lifespan for ``Starlette(lifespan=...)`` / ``FastAPI(lifespan=...)``.

    At startup it opens one multiplexer (see :func:`open_multiplexer` for ``url``,
    ``attribute``, ``wait_connected`` and ``kwargs``) and stores it in ``app.state.mpx``; then
    it runs ``lifespan(app)`` if given, passing on whatever state mapping that yields. At
    shutdown it ends ``lifespan`` first, then closes the multiplexer.
    """

    @contextlib.asynccontextmanager
    async def _lifespan(app: Any) -> AsyncIterator[Mapping[str, Any] | None]:
        async with open_multiplexer(
            app, url, attribute=attribute, wait_connected=wait_connected, **kwargs
        ):
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state

    return _lifespan


def get_multiplexer(conn: _HasApp, attribute: str = "mpx") -> Multiplexer:
    """The multiplexer of a request's or WebSocket's application (``conn.app.state.mpx``).

    Raises ``RuntimeError`` when the lifespan did not run (e.g. a server started with
    ``lifespan="off"``).
    """
    mpx = getattr(conn.app.state, attribute, None)
    if not isinstance(mpx, Multiplexer):
        raise RuntimeError(
            f"no multiplexer in app.state.{attribute}: is redismpx_lifespan the app's lifespan,"
            " and does the server run lifespan events?"
        )
    return mpx
