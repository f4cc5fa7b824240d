"""Fixtures of the Sentinel tests (the helpers are in ``support.sentinels``).

    shared      the session ``sentinel`` deployment, settled before the test and put back
                after it (a test that fails over, kills or stops nodes leaves it healthy)
    mpx_factory ``mpx_factory(url, **kwargs)``: a Multiplexer, closed after the test
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from redismpx import Multiplexer
from redismpx.server import RedisSentinel

# -- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
async def shared(sentinel: RedisSentinel) -> AsyncIterator[RedisSentinel]:
    """The session deployment, settled before and put back after the test."""
    await sentinel.await_ready(timeout=30)
    try:
        yield sentinel
    finally:
        for node in [*sentinel.data_nodes, *sentinel.sentinels]:
            if node.paused:
                node.resume()
            if not node.running:
                await node.arestart()
        await sentinel.await_ready(timeout=30)


@pytest.fixture
async def mpx_factory() -> AsyncIterator[Callable[..., Multiplexer]]:
    made: list[Multiplexer] = []

    def factory(url: str | None = None, **kwargs: Any) -> Multiplexer:
        kwargs.setdefault("client_name", "rmpx-sentinel")
        m = Multiplexer(url, **kwargs)
        made.append(m)
        return m

    yield factory
    for m in made:
        await m.aclose()
