"""What the demo shares across sockets in one process: the multiplexer, the publisher, ..."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from redismpx import Multiplexer

from .backend import RedisBackend
from .board import QuestionBoard
from .limits import Limits


def new_publisher(url: str) -> aioredis.Redis:
    """One redis-py client per process for PUBLISH. Short timeouts and two quick retries: a
    pooled connection that died with the server is replaced, and a publish while Redis is
    down fails in well under a second instead of hanging the page."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.25, base=0.05), 2),
    )


@dataclass
class DemoContext:
    """The process-wide parts of the demo (``app.state.demo``)."""

    mpx: Multiplexer
    backend: RedisBackend
    publisher: aioredis.Redis
    board: QuestionBoard
    limits: Limits
    sockets: int = 0

    async def publish(self, channel: str, message: str) -> int:
        """PUBLISH; returns the number of subscribers (connections) that received it."""
        return int(await self.publisher.publish(channel, message))

    def snapshot(self) -> dict[str, Any]:
        """The periodic status message of the page."""
        return {
            "type": "stats",
            "stats": self.mpx.stats(),
            "questions": self.board.open_questions(),
            "sockets": self.sockets,
            "redis": self.backend.describe(),
        }
