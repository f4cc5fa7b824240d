"""What the demo shares across sockets in one process: the multiplexer, the board, ..."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redismpx import Multiplexer

from .backend import RedisBackend
from .board import QuestionBoard
from .limits import Limits


@dataclass
class DemoContext:
    """The process-wide parts of the demo (``app.state.demo``)."""

    mpx: Multiplexer
    backend: RedisBackend
    board: QuestionBoard
    limits: Limits
    sockets: int = 0

    async def publish(self, channel: str, message: str) -> int:
        """PUBLISH through the multiplexer's own command connection; returns the number of
        subscribers (connections) that received it. While Redis is down it waits for the
        connection at most ``limits.publish_timeout`` seconds, then raises
        :class:`~redismpx.PublishTimeout`: the page is told, it does not hang."""
        return await self.mpx.publish(channel, message, timeout=self.limits.publish_timeout)

    def snapshot(self) -> dict[str, Any]:
        """The periodic status message of the page."""
        return {
            "type": "stats",
            "stats": self.mpx.stats(),
            "questions": self.board.open_questions(),
            "sockets": self.sockets,
            "redis": self.backend.describe(),
        }
