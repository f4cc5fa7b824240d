"""``redismpx demo``: serve the demo page with uvicorn (options: :mod:`redismpx.__main__`).

Before anything starts, each mistake of a first run is one plain line on stderr and exit
status 1: a bad Redis URL (checked by the library's own parser), a port that is in use or not
allowed (bound here, before the embedded server starts), no server binary for the embedded
server. The page's URL is printed once the server listens on it. Ctrl-C (or SIGTERM, or
SIGHUP) stops the demo quietly: the embedded server runs in a process group of its own, and
the shutdown closes the multiplexer before it stops the server. While Redis stays unreachable
a warning is repeated every 30 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Generator, Sequence
from typing import Any

import uvicorn

from redismpx import InvalidArgument, InvalidArgumentType, Multiplexer
from redismpx.__main__ import demo_parser
from redismpx.server import ServerNotFound, find_server_binary

from .app import create_app
from .backend import remind_unreachable

logger = logging.getLogger("redismpx.demo")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class StartupError(Exception):
    """Why the demo does not start, in one line."""


def check_url(url: str, source: str) -> None:
    """Parse ``url`` as the multiplexer will (a multiplexer built outside an event loop starts
    nothing); raise :class:`StartupError` with the parser's reason if it is refused."""
    try:
        Multiplexer(url).close()
    except (InvalidArgument, InvalidArgumentType) as exc:
        raise StartupError(f"bad Redis URL ({source}): {exc}") from None


def _free_port_near(host: str, family: int, port: int) -> int | None:
    for candidate in range(port + 1, min(port + 50, 65535) + 1):
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, candidate))
            except OSError:
                continue
            return candidate
    return None


def _bind_error(host: str, port: int, family: int, exc: OSError) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        near = _free_port_near(host, family, port)
        example = f"--port {near}" if near is not None else "--port 0 (any free port)"
        return f"port {port} is already in use on {host}: pick another with --port, e.g. {example}"
    if exc.errno == errno.EACCES:
        return f"not allowed to listen on {where}: pick a port above 1023 with --port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{host} is not an address of this machine: pick another with --host"
    return f"cannot listen on {where} ({exc.strerror or exc}): see --host and --port"


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` (not yet listening: uvicorn listens once the app has
    started). Raises :class:`StartupError` when that is impossible."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        reason = exc.strerror if isinstance(exc, socket.gaierror) else exc
        raise StartupError(f"cannot serve on --host {host}: {reason}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StartupError(_bind_error(host, port, family, exc)) from None
    return sock


def page_url(sock: socket.socket) -> str:
    """The URL to open for a socket bound to ``--host`` (loopback for a wildcard address)."""
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1" if host == "0.0.0.0" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/"


class DemoServer(uvicorn.Server):
    """uvicorn's server, which also prints the page's URL once it listens, reminds of an
    unreachable Redis, and stops quietly on Ctrl-C, SIGTERM and SIGHUP."""

    def __init__(
        self, config: uvicorn.Config, *, app: Any, redis_url: str | None, remind_every: float
    ) -> None:
        super().__init__(config)
        self.app = app
        self.redis_url = redis_url
        self.remind_every = remind_every
        self.url_line: str | None = None
        self._reminder: asyncio.Task[None] | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if not self.started or self.should_exit:
            return
        if self.url_line is not None:
            print(self.url_line, flush=True)
        mpx = getattr(self.app.state, "mpx", None)
        if isinstance(mpx, Multiplexer):
            demo = getattr(self.app.state, "demo", None)
            backend = getattr(demo, "backend", None)
            url = getattr(backend, "url", None) or self.redis_url or "Redis"
            self._reminder = asyncio.create_task(remind_unreachable(mpx, url, self.remind_every))

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        reminder, self._reminder = self._reminder, None
        if reminder is not None:
            reminder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reminder
        await super().shutdown(sockets=sockets)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        """As uvicorn's, with SIGHUP too, and without raising the signal again after the
        graceful shutdown: that would end a normal Ctrl-C with a KeyboardInterrupt
        traceback, and a SIGTERM with a death that skips the interpreter's cleanup."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


class _Formatter(logging.Formatter):
    """``LEVEL:    logger: message``, aligned with uvicorn's own lines."""

    def format(self, record: logging.LogRecord) -> str:
        record.levelprefix = f"{record.levelname}:".ljust(9)
        return super().format(record)


def _configure_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_Formatter("%(levelprefix)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level.upper())


def _prepare(args: argparse.Namespace) -> socket.socket:
    """Every check that can fail plainly, then the bound socket."""
    url: str | None = args.redis_url
    if url is not None:
        from_env = url == os.environ.get("REDIS_URL")
        check_url(url, "$REDIS_URL" if from_env else "--redis-url")
    else:
        try:
            find_server_binary()
        except ServerNotFound as exc:
            reason = str(exc).rstrip(".")
            raise StartupError(f"{reason}; or use a running Redis: --redis-url URL") from None
    return bind(args.host, args.port)


def run(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C, SIGTERM or SIGHUP; returns the exit status."""
    try:
        sock = _prepare(args)
    except StartupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    app = create_app(args.redis_url)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=sock.getsockname()[1],
        log_level=args.log_level,
        lifespan="on",
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=3,
    )
    _configure_logging(args.log_level)
    if args.host not in LOOPBACK:
        print(
            f"warning: serving on {args.host}: anyone who reaches it can publish, and restart "
            "the embedded server (POST /admin/restart-redis)",
            file=sys.stderr,
        )
    server = DemoServer(
        config, app=app, redis_url=args.redis_url, remind_every=args.unreachable_warning_interval
    )
    server.url_line = f"redismpx demo on {page_url(sock)} (Ctrl-C to stop)"
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # a Ctrl-C outside the server's own handling (loop teardown)
        return 130
    except SystemExit as exc:  # uvicorn: the application failed to start (logged above)
        if exc.code in (0, None):
            return 0
        print("error: the demo did not start (see the messages above)", file=sys.stderr)
        return 1
    finally:
        sock.close()
    return 0 if server.started else 1


def main(argv: Sequence[str] | None = None, prog: str = "redismpx demo") -> int:
    """``redismpx demo`` on its own (``python -m redismpx.demo``); returns the exit status."""
    return run(demo_parser(prog).parse_args(argv))
