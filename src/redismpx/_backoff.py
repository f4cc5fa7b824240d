"""Full-jitter exponential backoff (the AWS "full jitter" scheme the original used)."""

from __future__ import annotations

import asyncio
import random as _random
from collections.abc import Callable


class Backoff:
    """Delays for successive reconnect attempts: ``uniform(0, min(cap, base * 2**attempt))``.

    ``rand`` returns a float in [0, 1); tests inject a fixed one. ``reset()`` starts over after
    a connection proved stable.
    """

    __slots__ = ("attempt", "base", "cap", "rand")

    def __init__(self, base: float, cap: float, rand: Callable[[], float] = _random.random) -> None:
        if not base > 0 or not cap >= base:
            raise ValueError(f"backoff needs 0 < base <= cap, got base={base!r} cap={cap!r}")
        self.base = base
        self.cap = cap
        self.rand = rand
        self.attempt = 0

    def ceiling(self) -> float:
        """The upper bound of the next delay."""
        # Cap the exponent: past ~60 doublings 2**attempt only wastes time computing floats.
        return min(self.cap, self.base * float(2 ** min(self.attempt, 60)))

    def next_delay(self) -> float:
        """The delay before the next attempt; each call counts one more attempt."""
        delay = self.rand() * self.ceiling()
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0


class Pause:
    """The wait between two attempts, which ``wake`` cuts short (a failover names where to
    go now: no reason to wait out the backoff)."""

    __slots__ = ("_woken",)

    def __init__(self) -> None:
        self._woken: asyncio.Event | None = None

    async def __call__(self, delay: float) -> None:
        woken = self._woken = asyncio.Event()
        try:
            async with asyncio.timeout(delay):
                await woken.wait()
        except TimeoutError:
            pass
        finally:
            self._woken = None

    def wake(self) -> None:
        """End the current wait now, if one is under way."""
        if self._woken is not None:
            self._woken.set()
