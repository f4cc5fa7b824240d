"""Regressions for review findings on delivery: iterators, promises, overflow, names, events.

Every "did not run after close" assertion is made after a barrier (``settle``: a probe
subscription activates, so the loop went round many times and Redis answered everything
sent before), never after a sleep.
"""

from __future__ import annotations

import asyncio
import gc
import warnings
from collections.abc import Iterator
from typing import Any

import pytest

from redismpx import (
    Activated,
    Message,
    Multiplexer,
)

BAD_NAME = "a\udc80"  # a lone surrogate: UTF-8 cannot encode it


class _NeverAwaited:
    """Collects "coroutine ... was never awaited" warnings raised inside the block."""

    def __init__(self) -> None:
        self.caught: list[warnings.WarningMessage] = []

    def messages(self) -> list[str]:
        gc.collect()  # a coroutine dropped in a reference cycle warns when collected
        return [str(w.message) for w in self.caught if "never awaited" in str(w.message)]


@pytest.fixture
def never_awaited() -> Iterator[_NeverAwaited]:
    probe = _NeverAwaited()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        probe.caught = caught
        yield probe


async def _publish_all(admin: Any, channel: str, n: int) -> None:
    pipe = admin.client.pipeline(transaction=False)
    for i in range(n):
        pipe.publish(channel, str(i))
    await pipe.execute()


# -- finding 1: a cancelled wait leaves the iterator usable -----------------------------------


async def test_timed_out_anext_leaves_the_iterator_usable(mpx: Multiplexer, admin) -> None:
    async with mpx.subscribe("c") as it:
        assert await anext(it.events()) == Activated(b"c")
        for _ in range(2):  # the second wait used to raise "another task is iterating"
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(it.__anext__(), 0.05)
        await admin.publish("c", "1")
        assert await asyncio.wait_for(it.__anext__(), 5) == Message(b"c", b"1")


async def test_timeout_around_async_for_and_events_leaves_the_iterator_usable(
    mpx: Multiplexer, admin
) -> None:
    async with mpx.subscribe("c") as it:
        assert await anext(it.events()) == Activated(b"c")
        for _ in range(2):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async for _msg in it:
                        raise AssertionError("nothing was published")
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.05):
                    async for _event in it.events():
                        raise AssertionError("nothing happened")
        await admin.publish("c", "1")
        async with asyncio.timeout(5):
            async for event in it.events():
                assert event == Message(b"c", b"1")
                break


async def test_a_second_concurrent_consumer_still_gets_the_clear_error(
    mpx: Multiplexer, admin
) -> None:
    async with mpx.subscribe("c") as it:
        assert await anext(it.events()) == Activated(b"c")
        first = asyncio.ensure_future(it.__anext__())
        await asyncio.sleep(0)  # one loop turn: ``first`` runs up to its wait
        assert not first.done()
        with pytest.raises(RuntimeError, match="another task"):
            await it.__anext__()
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await admin.publish("c", "1")  # the cancelled consumer left it usable
        assert await asyncio.wait_for(it.__anext__(), 5) == Message(b"c", b"1")
