"""Waiting on a condition that a recorder re-checks after each change it records."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def wait_for(
    changed: asyncio.Event,
    predicate: Callable[[], bool],
    timeout: float,
    explain: Callable[[], str],
) -> None:
    """Wait until ``predicate()`` holds, re-checking each time ``changed`` is set; on timeout
    an AssertionError whose message is ``explain()``."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                changed.clear()
                await changed.wait()
    except TimeoutError:
        raise AssertionError(explain()) from None
