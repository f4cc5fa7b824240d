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


@pytest.fixture
async def mpx(redis_server: Any) -> AsyncIterator[Multiplexer]:
    m = Multiplexer(redis_server.url, health_check_interval=1.0, health_check_timeout=1.0)
    yield m
    await m.aclose()
