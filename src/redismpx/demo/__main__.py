"""``python -m redismpx.demo [--host H] [--port P]``."""

import sys

from .cli import main

sys.exit(main(prog="python -m redismpx.demo"))
