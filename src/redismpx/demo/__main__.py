"""``python -m redismpx.demo [options]``: the same as ``redismpx demo`` (see ``--help``)."""

import sys

from .cli import main

sys.exit(main(prog="python -m redismpx.demo"))
