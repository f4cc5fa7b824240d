"""The redismpx demo: a web page where browsers join channels, subscribe to patterns, publish
and answer each other's promises, with live subscription states and multiplexer stats.

Run it with ``redismpx demo`` or ``python -m redismpx.demo`` (needs ``redismpx[demo]``).
Build the app yourself with :func:`create_app`.
"""

from .app import create_app

__all__ = ["create_app"]
