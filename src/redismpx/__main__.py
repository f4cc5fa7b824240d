"""The ``redismpx`` command: ``redismpx demo [--host H] [--port P]``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = """usage: redismpx COMMAND [ARGS]

commands:
  demo [--host H] [--port P]   serve the demo web page (needs redismpx[demo])
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch a subcommand; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command, rest = args[0], args[1:]
    if command == "demo":
        try:
            from redismpx.demo.cli import main as demo_main
        except ImportError as exc:
            print(
                f"error: the demo needs its extras: pip install 'redismpx[demo]' ({exc})",
                file=sys.stderr,
            )
            return 1
        return demo_main(rest)
    print(f"error: unknown command {command!r}\n\n{USAGE}", end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
