"""One owner for every task and loop callback the library schedules (design rule R6).

As a trio nursery or an ``asyncio.TaskGroup`` does, the owner keeps what it started until it
ended: ``cancel()`` stops all of it, ``await wait()`` returns once all of it has ended, and
``forget()`` drops what belonged to an event loop that is closed (nothing of it can run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextvars import Context
from typing import Any


class TaskOwner:
    """The tasks and ``call_soon`` callbacks of one multiplexer, in its event loop."""

    __slots__ = ("_handles", "_tasks", "loop")

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None  # set by ``bind``
        self._tasks: set[asyncio.Task[Any]] = set()
        self._handles: set[asyncio.Handle] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def spawn(
        self, coro: Coroutine[Any, Any, Any], name: str, context: Context | None = None
    ) -> asyncio.Task[Any]:
        """Start ``coro`` as a task owned here (in the bound loop, else the running one),
        in ``context`` if given (else a copy of the current one, as always)."""
        loop = self.loop or asyncio.get_running_loop()
        task = loop.create_task(coro, name=name, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> asyncio.Handle:
        """``loop.call_soon(fn, *args)``, cancelled by ``cancel()`` if it has not run yet."""
        loop = self.loop or asyncio.get_running_loop()
        handles = self._handles

        def run() -> None:
            handles.discard(handle)
            fn(*args)

        handle = loop.call_soon(run)
        handles.add(handle)
        return handle

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.Handle:
        """``loop.call_later(delay, fn, *args)``, cancelled by ``cancel()`` likewise."""
        loop = self.loop or asyncio.get_running_loop()
        handles = self._handles

        def run() -> None:
            handles.discard(handle)
            fn(*args)

        handle = loop.call_later(delay, run)
        handles.add(handle)
        return handle

    def cancel(self) -> None:
        """Cancel every task and every callback not run yet."""
        for handle in self._handles:
            handle.cancel()
        self._handles.clear()
        for task in self._tasks:
            task.cancel()

    async def wait(self) -> None:
        """Return once every owned task has ended (cancelled ones included)."""
        current = asyncio.current_task()  # aclose() called from a task of ours
        while pending := [t for t in self._tasks if t is not current]:
            await asyncio.gather(*pending, return_exceptions=True)

    def forget(self) -> None:
        """The loop is closed: what it held can neither run nor be awaited."""
        self._tasks.clear()
        self._handles.clear()
        self.loop = None

    def __len__(self) -> int:
        """Tasks and callbacks that have not ended yet."""
        return len(self._tasks) + len(self._handles)
