"""Eager delivery (``eager=True``): an async ``on_message`` started by the reader when its
subscription has nothing pending, as a step of its worker task (docs/delivery.md)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import logging
import warnings

import pytest

from redismpx import InvalidArgumentType, Multiplexer
from support.waiting import poll_until as _until


@pytest.mark.parametrize("eager", [True, False])
async def test_eager_starts_the_callback_inside_the_dispatch(mpx: Multiplexer, eager: bool) -> None:
    # Three subscriptions on one channel, dispatched in the order they joined: a plain
    # callback, an async one, a plain one. Eager, the async one runs between the other two;
    # queued, after both (its worker runs in a later loop turn).
    ran: list[str] = []

    async def middle(channel: bytes, data: bytes) -> None:
        ran.append("async")

    first = mpx.new_channel_subscription(lambda c, d: ran.append("first"))
    second = mpx.new_channel_subscription(middle, eager=eager)
    third = mpx.new_channel_subscription(lambda c, d: ran.append("third"))
    for sub in (first, second, third):
        await sub.add("order")
    await mpx.publish("order", b"x")
    await _until(lambda: len(ran) == 3, "three callbacks")
    assert ran == (["first", "async", "third"] if eager else ["first", "third", "async"])


async def test_eager_keeps_the_order_when_a_callback_suspends(mpx: Multiplexer) -> None:
    log: list[tuple[str, int]] = []

    async def on_message(channel: bytes, data: bytes) -> None:
        n = int(data)
        log.append(("start", n))
        if n % 3 == 0:
            await asyncio.sleep(0.005)  # some really wait: later messages queue behind them
        log.append(("end", n))

    sub = mpx.new_channel_subscription(on_message, eager=True)
    await sub.add("burst")
    await asyncio.gather(*(mpx.publish("burst", str(i)) for i in range(1, 31)))
    await _until(lambda: len(log) == 60, "30 callbacks")
    expected = [(step, n) for n in range(1, 31) for step in ("start", "end")]
    assert log == expected  # one at a time, in publication order


async def test_eager_steps_run_as_the_worker_task_in_its_context(mpx: Multiplexer) -> None:
    counter: contextvars.ContextVar[int] = contextvars.ContextVar("counter", default=0)
    tasks: set[asyncio.Task[object] | None] = set()
    values: list[int] = []
    other: list[int] = []

    async def on_message(channel: bytes, data: bytes) -> None:
        tasks.add(asyncio.current_task())
        counter.set(counter.get() + 1)
        async with asyncio.timeout(5):  # needs a current task
            if data == b"2":
                await asyncio.sleep(0.01)
        values.append(counter.get())

    async def elsewhere(channel: bytes, data: bytes) -> None:
        other.append(counter.get())

    sub = mpx.new_channel_subscription(on_message, eager=True)
    watcher = mpx.new_channel_subscription(elsewhere, eager=True)
    await sub.add("ctx")
    await watcher.add("ctx")
    for i in range(1, 5):
        await mpx.publish("ctx", str(i))
    await _until(lambda: len(values) == 4 and len(other) == 4, "the callbacks")
    # One context for the subscription, kept across eager steps and the worker's resumption;
    # nothing of it leaks to another subscription, or to the reader.
    assert values == [1, 2, 3, 4] and other == [0, 0, 0, 0] and counter.get() == 0
    assert len(tasks) == 1 and None not in tasks
    (task,) = tasks
    assert task is not None and task.get_name().startswith("redismpx worker")


async def test_an_eager_callback_that_raises_is_logged_and_the_others_go_on(
    mpx: Multiplexer, caplog: pytest.LogCaptureFixture
) -> None:
    got: list[bytes] = []
    healthy: list[bytes] = []

    async def on_message(channel: bytes, data: bytes) -> None:
        if data == b"before":
            raise ValueError("raised before any await")
        if data == b"after":
            await asyncio.sleep(0)
            raise ValueError("raised after an await")
        got.append(data)

    async def fine(channel: bytes, data: bytes) -> None:
        healthy.append(data)

    sub = mpx.new_channel_subscription(on_message, eager=True)
    other = mpx.new_channel_subscription(fine, eager=True)
    await sub.add("raises")
    await other.add("raises")
    with caplog.at_level(logging.ERROR, logger="redismpx.delivery"):
        for data in (b"before", b"1", b"after", b"2"):
            await mpx.publish("raises", data)
        await _until(lambda: got == [b"1", b"2"] and len(healthy) == 4, "the rest")
    assert mpx.stats()["callback_errors"] == 2
    assert "raised before any await" in caplog.text or "on_message raised" in caplog.text


async def test_closing_while_a_started_callback_waits_runs_its_finally(mpx: Multiplexer) -> None:
    gate = asyncio.Event()
    cleaned: list[bytes] = []
    started: list[bytes] = []

    async def on_message(channel: bytes, data: bytes) -> None:
        started.append(data)
        try:
            await gate.wait()
        finally:
            cleaned.append(data)

    sub = mpx.new_channel_subscription(on_message, eager=True)
    await sub.add("stuck")
    await mpx.publish("stuck", b"1")
    await mpx.publish("stuck", b"2")  # queued behind the first, which waits
    await _until(lambda: started == [b"1"], "the first start")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # "never awaited", "Task was destroyed": failures
        sub.close()
        await _until(lambda: cleaned == [b"1"], "the finally of the started callback")
        gc.collect()
    assert started == [b"1"]  # nothing runs after close()


async def test_eager_with_a_slow_callback_stays_bounded(mpx: Multiplexer) -> None:
    gate = asyncio.Event()
    got: list[int] = []

    async def on_message(channel: bytes, data: bytes) -> None:
        await gate.wait()
        got.append(int(data))

    sub = mpx.new_channel_subscription(on_message, eager=True, max_buffer=5, overflow="drop_oldest")
    await sub.add("slow")
    for i in range(1, 51):
        await mpx.publish("slow", str(i))
    # Open the gate only once all 49 behind the first have arrived: 5 kept, 44 dropped. Opened
    # earlier, the consumer makes room while the rest still arrive, and keeps more than 5.
    await _until(lambda: sub.dropped == 44, "44 drops")
    gate.set()
    await _until(lambda: got and got[-1] == 50, "the last")  # type: ignore[arg-type,return-value]
    assert got == [1, 46, 47, 48, 49, 50]  # the first, then the last 5
    assert sub.dropped == 44


async def test_eager_must_be_a_bool(mpx: Multiplexer) -> None:
    async def on_message(channel: bytes, data: bytes) -> None:
        pass

    with pytest.raises(InvalidArgumentType, match="eager must be True or False"):
        mpx.new_channel_subscription(on_message, eager="yes")  # type: ignore[call-overload]
