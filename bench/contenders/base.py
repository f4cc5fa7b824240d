"""The interface every contender implements for the scenarios.

A *subscription* is the application's unit: one callback plus a set of channels (or one
pattern), like one WebSocket client. Scenarios only use these calls, so each contender does the
same work. ``add``/``remove``/``close`` are coroutines because redis-py's are; for the others the
``await`` costs one coroutine step.

``pending()`` is the number of subscribe requests the *client* has not yet seen confirmed; the
scenarios wait for 0 before measuring so that no acknowledgement is processed inside a
measurement window (S5, S6 and S8 use the server's own counts instead).

``publish`` is the one command-side call (S11): each contender publishes the way its users
would, on connections of its own besides the Pub/Sub one.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

OnMessage = Callable[[bytes, bytes], "Awaitable[None] | None"]


class Contender(abc.ABC):
    """One way of multiplexing application subscriptions over one Pub/Sub connection."""

    name: ClassVar[str]

    def __init__(self, url: str, track_activation: bool = True) -> None:
        self.url = url
        self.track_activation = track_activation

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect; return once the contender can take subscriptions."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the connection and every task."""

    @abc.abstractmethod
    def subscription(self, on_message: OnMessage) -> Any:
        """A new channel subscription with no channels yet."""

    @abc.abstractmethod
    async def add(self, sub: Any, names: Sequence[bytes]) -> None:
        """Add channels to ``sub``."""

    @abc.abstractmethod
    async def remove(self, sub: Any, names: Sequence[bytes]) -> None:
        """Remove channels from ``sub``."""

    @abc.abstractmethod
    async def close(self, sub: Any) -> None:
        """Close ``sub`` (drop all its channels or its pattern)."""

    @abc.abstractmethod
    async def psubscription(self, pattern: bytes, on_message: OnMessage) -> Any:
        """A new pattern subscription."""

    @abc.abstractmethod
    async def publish(self, channel: bytes, data: bytes) -> int:
        """``PUBLISH channel data`` (S11); returns the receivers Redis counted."""

    @abc.abstractmethod
    def pending(self) -> int:
        """Subscribe requests not yet confirmed to this client."""

    async def wait_ready(self, timeout: float) -> None:
        """Wait until :meth:`pending` is 0 (polling every 2 ms)."""
        async with asyncio.timeout(timeout):
            while self.pending() > 0:  # noqa: ASYNC110 (a counter, no event to wait on)
                await asyncio.sleep(0.002)

    def stats(self) -> dict[str, Any]:
        """Contender-specific counters (only redismpx has any)."""
        return {}
