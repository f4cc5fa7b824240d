"""The three contenders, behind one small interface (:class:`bench.contenders.base.Contender`).

Imports are lazy so that a missing or broken redismpx fails only its own runs.
"""

from __future__ import annotations

from typing import Any

from bench.contenders.base import Contender

NAMES = ("limit", "redispy", "mpx")
LABELS = {"limit": "limit", "redispy": "redis-py", "mpx": "redismpx"}
# S12 (end to end, bench/scenarios/websocket.py) runs app variants rather than contenders:
# their labels, for the log and the tables.
LABELS.update({v: v for v in ("mpx-callback", "mpx-iterator", "mpx-broadcaster",
                              "broadcaster", "mpx-eager", "mpx-batched")})  # fmt: skip


def create(name: str, url: str, **options: Any) -> Contender:
    """A new, not yet started contender by short name (``limit``, ``redispy``, ``mpx``)."""
    if name == "limit":
        from bench.contenders.limit import Limit

        return Limit(url, **options)
    if name == "redispy":
        from bench.contenders.redispy import RedisPy

        return RedisPy(url, **options)
    if name == "mpx":
        from bench.contenders.mpx import Mpx

        return Mpx(url, **options)
    raise ValueError(f"unknown contender {name!r}")


__all__ = ["LABELS", "NAMES", "Contender", "create"]
