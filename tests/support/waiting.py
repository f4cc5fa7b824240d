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


async def poll_until(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Wait until ``predicate()`` holds, looking every 5 ms (for state no recorder signals);
    on timeout an AssertionError naming ``what``."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate():
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}") from None
