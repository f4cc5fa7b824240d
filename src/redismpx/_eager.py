"""Eager delivery (``eager=True``): an async ``on_message`` started by the reader itself.

A queued subscription's worker costs a task switch per message: the reader appends, wakes
the worker, and the callback starts in a later loop turn. Sending one WebSocket frame per
message, that switch is a third of the work (bench S12). With ``eager=True``, when the worker
is idle and nothing waits in the buffer, the reader runs the callback's coroutine at once up
to its first suspension, in the worker's context; most sends finish right there. If it
suspends, the rest is handed to the worker as an awaitable, ahead of any later message, so
the order of one subscription's callbacks never changes.

The cost of the choice: the code of an async callback up to its first ``await`` that really
waits runs inside the reader, like a plain callback's (what it does there delays the
dispatch of the other subscriptions, exactly as a slow plain callback would).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect

# The two calls a task's own step makes around it (what Python 3.12's eager tasks use).
from asyncio.tasks import _enter_task as enter_task
from asyncio.tasks import _leave_task as leave_task
from collections.abc import Callable, Generator
from typing import Any

NOT_STARTED: Any = object()


def start(
    task: asyncio.Task[Any],
    context: contextvars.Context,
    fn: Callable[[bytes, bytes], Any],
    channel: bytes,
    data: bytes,
) -> Any:
    """Call ``fn(channel, data)`` and run its coroutine until it suspends, as a step of the
    idle worker ``task``: in its ``context``, and with ``task`` as the current task (so that
    ``asyncio.timeout``, ``current_task()`` and cancel scopes work as in the worker).

    Returns None if it finished, else an awaitable of the rest (for the worker), or
    :data:`NOT_STARTED` if another task is running (the message is then queued as usual).
    Raises what the callback raised before suspending.
    """
    loop = task.get_loop()
    try:
        enter_task(loop, task)
    except RuntimeError:  # dispatched from inside a running task: not ours to step
        return NOT_STARTED
    try:
        result = context.run(fn, channel, data)
        if result is None:
            return None
        if not inspect.iscoroutine(result):
            return result if inspect.isawaitable(result) else None  # the worker awaits it
        try:
            first = context.run(result.send, None)
        except StopIteration:
            return None
        return Rest(result, first)
    finally:
        leave_task(loop, task)


class Rest:
    """The rest of a started coroutine, for the worker to await (or to close, unread)."""

    __slots__ = ("coro", "first")

    def __init__(self, coro: Any, first: Any) -> None:
        self.coro = coro
        self.first = first  # what it suspended on

    def __await__(self) -> Generator[Any, Any, None]:
        return _drive(self.coro, self.first)

    def close(self) -> None:
        """The subscription closed before the worker resumed it: its ``finally`` runs now."""
        self.coro.close()


def _drive(coro: Any, waiting: Any) -> Generator[Any, Any, None]:
    # What the coroutine waits for is handed to the awaiting task as it is (a future, or
    # None for a bare yield); what the task sends or throws back goes to the coroutine.
    while True:
        try:
            value = yield waiting
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # a cancellation, or the awaited future's exception
            try:
                waiting = coro.throw(exc)
            except StopIteration:
                return
        else:
            try:
                waiting = coro.send(value)
            except StopIteration:
                return
