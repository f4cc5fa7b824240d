"""``redismpx demo [--host H] [--port P]``: serve the demo with uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def parser(prog: str = "redismpx demo") -> argparse.ArgumentParser:
    """The demo's command line."""
    p = argparse.ArgumentParser(
        prog=prog,
        description="Serve the redismpx demo page. Redis: $REDIS_URL, or else an embedded "
        "server started (and stopped) by the demo.",
    )
    p.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind ({DEFAULT_HOST})")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT})")
    p.add_argument("--redis-url", default=None, help="Redis to use (default: $REDIS_URL)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (info)")
    return p


def main(argv: Sequence[str] | None = None, prog: str = "redismpx demo") -> int:
    """Run the demo until Ctrl-C or SIGTERM; the embedded server is stopped on the way out."""
    args = parser(prog).parse_args(argv)
    import uvicorn

    from redismpx.server import ServerNotFound, find_server_binary

    from .app import create_app

    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s:  %(name)s %(message)s")
    url = args.redis_url or os.environ.get("REDIS_URL") or None
    if url is None:
        try:
            find_server_binary()  # fail early and plainly, not in a lifespan traceback
        except ServerNotFound as exc:
            print(f"error: {exc}\n(or point $REDIS_URL at a running Redis)", file=sys.stderr)
            return 1
    config = uvicorn.Config(
        create_app(url),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        lifespan="on",
        ws_max_size=64 * 1024,
        timeout_graceful_shutdown=3,
    )
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"warning: serving on {args.host}: anyone who reaches it can publish, and restart "
            "the embedded server (POST /admin/restart-redis)",
            file=sys.stderr,
        )
    server = uvicorn.Server(config)
    print(f"redismpx demo on http://{args.host}:{args.port}/ (Ctrl-C to stop)", flush=True)
    server.run()
    return 0 if server.started else 1
