"""Fixtures for the public API against a real server: a multiplexer, a client, counters."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from redismpx import Multiplexer
from support.admin import Admin


@pytest.fixture
async def admin(redis_server: Any) -> AsyncIterator[Admin]:
    a = Admin(redis_server.url)
    yield a
    await a.close()


@pytest.fixture(params=[3, 2], ids=["resp3", "resp2"])
async def mpx(redis_server: Any, request: pytest.FixtureRequest) -> AsyncIterator[Multiplexer]:
    """A multiplexer on ``redis_server``, over RESP3 and over RESP2 (every test runs twice)."""
    m = Multiplexer(
        redis_server.url,
        health_check_interval=1.0,
        health_check_timeout=1.0,
        protocol=request.param,
    )
    yield m
    await m.aclose()
