"""redismpx, used through its public API only.

``Multiplexer(url)``; ``async with``-style start and ``aclose``; one
``new_channel_subscription(on_message, on_activation=...)`` per application subscription and
``sub.add(*names)`` / ``sub.remove(*names)`` / ``sub.close()``; S11 publishes with
``await mpx.publish(channel, data)`` (its own command connection, every publish of one loop
turn in one write). ``on_activation`` is passed only when the scenario waits for client-side
confirmation (throughput, latency); S5/S6/S8 pass ``None`` and use the server's counts, as a
typical application would not set it. Everything else is the library's default, except
``max_buffer`` in the async-callback throughput runs (see ``bench/README.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bench.contenders.base import Contender, OnMessage


class Mpx(Contender):
    name = "mpx"

    def __init__(
        self, url: str, track_activation: bool = True, max_buffer: int | None = None
    ) -> None:
        super().__init__(url, track_activation)
        self.options: dict[str, Any] = {} if max_buffer is None else {"max_buffer": max_buffer}
        self.expected = 0
        self.activated = 0
        self._mpx: Any = None

    async def start(self) -> None:
        from redismpx import Multiplexer

        self._mpx = Multiplexer(self.url, **self.options)
        await self._mpx.__aenter__()
        await self._mpx.wait_connected(10)

    def stats(self) -> dict[str, Any]:
        """The multiplexer's own counters (``dropped`` must stay 0 in the bench)."""
        stats: dict[str, Any] = self._mpx.stats()
        return stats

    async def aclose(self) -> None:
        if self._mpx is not None:
            await self._mpx.aclose()

    def _on_activation(self, name: bytes) -> None:
        self.activated += 1

    def subscription(self, on_message: OnMessage) -> Any:
        on_activation = self._on_activation if self.track_activation else None
        return self._mpx.new_channel_subscription(on_message, on_activation=on_activation)

    async def add(self, sub: Any, names: Sequence[bytes]) -> None:
        self.expected += len(names)
        sub.add(*names)

    async def remove(self, sub: Any, names: Sequence[bytes]) -> None:
        sub.remove(*names)

    async def close(self, sub: Any) -> None:
        sub.close()

    async def psubscription(self, pattern: bytes, on_message: OnMessage) -> Any:
        on_activation = self._on_activation if self.track_activation else None
        self.expected += 1
        return self._mpx.new_pattern_subscription(pattern, on_message, on_activation=on_activation)

    async def publish(self, channel: bytes, data: bytes) -> int:
        count: int = await self._mpx.publish(channel, data)
        return count

    def pending(self) -> int:
        return self.expected - self.activated
