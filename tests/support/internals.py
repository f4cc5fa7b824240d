"""Reaching the insides of a multiplexer, for the few tests that must (fault injection)."""

from __future__ import annotations

from typing import Any

from redismpx._link import Link


def link_of(mpx: Any) -> Link:
    """The one link of a standalone multiplexer."""
    link: Link = mpx._hub.router.link
    return link


def router_of(mpx: Any) -> Any:
    """The router of a multiplexer (for a cluster: links, home node, topology reader)."""
    return mpx._hub.router


def replies_awaited(mpx: Any) -> int:
    """Publishes written on a standalone multiplexer's command connection and not answered."""
    conn = mpx._hub.router.commands.conn
    return 0 if conn is None else int(conn.awaiting)
