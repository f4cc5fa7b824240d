"""What every subscription shares: how it is called, how it calls user code, how it closes.

* :class:`Host` is what a subscription needs of its multiplexer, and
  :class:`~redismpx._names.Listener` what the link calls on it: both declared with public
  names (R7 in docs/spec.md).
* :class:`Subscriber` is the base of every subscription: state callbacks, the one way to call
  user code (:meth:`Subscriber._call`), error logging and the one close path
  (:meth:`Subscriber._finish`). Promise subscriptions build on it directly.
* ``BufferedSubscriber`` (in ``_buffered.py``) adds ``on_message`` and delivery
  through a bounded buffer, for channel and pattern subscriptions.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from contextvars import Context
from typing import Any, Protocol

from ._eager import Rest
from ._names import Listener
from ._recovery import Track
from .errors import InvalidArgumentType, SubscriptionClosed
from .typedefs import OnActivation, OnDisconnect

logger = logging.getLogger("redismpx.delivery")


class Host(Protocol):
    """What a subscription needs of its multiplexer."""

    def register(self, sub: Subscriber) -> None: ...  # a new subscription: at construction
    def start_in_running_loop(self) -> None: ...
    # Names go in batches: one call per ``sub.add(...)``, not one per name (churn is hot).
    def add(self, kind: int, names: Sequence[bytes], listener: Listener) -> None: ...
    def remove(self, kind: int, names: Sequence[bytes], listener: Listener) -> None: ...
    def refresh(self, kind: int, name: bytes) -> None: ...
    # True: Redis confirmed the name; None: Redis refused it; False: neither yet.
    def phase(self, kind: int, name: bytes) -> bool | None: ...
    def forget(self, sub: Any) -> None: ...
    def spawn(
        self, coro: Coroutine[Any, Any, None], name: str, context: Context | None = None
    ) -> asyncio.Task[None]: ...
    def call_soon(self, fn: Callable[[], None]) -> asyncio.Handle: ...
    def count_dropped(self, n: int) -> None: ...
    def count_callback_error(self) -> None: ...
    def read_history(self, track: Track) -> None: ...  # a recovering channel's history


def check_callback(name: str, fn: Any, *, optional: bool) -> None:
    if fn is None:
        if optional:
            return
        raise InvalidArgumentType(f"{name} is required and cannot be None")
    if not callable(fn):
        raise InvalidArgumentType(f"{name} must be callable, not {type(fn).__name__}")


def is_async(fn: Any) -> bool:
    # An object whose __call__ is ``async def`` counts too.
    call = getattr(type(fn), "__call__", None)  # noqa: B004
    return fn is not None and (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call))


def discard(awaitable: Any) -> None:
    """Forget a callback's awaitable that will never be awaited: a coroutine is closed, so none
    of its body runs and Python does not warn that it was never awaited."""
    if inspect.iscoroutine(awaitable) or isinstance(awaitable, Rest):
        awaitable.close()


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


class Subscriber:
    """Base of every subscription: state callbacks, calling user code, closing.

    Kept small (a few slots): a process may hold hundreds of thousands of subscriptions.
    """

    __slots__ = (
        "_end",
        "_errors",
        "_host",
        "_on_activation",
        "_on_disconnect",
        "deliver",
        "hears_activations",
    )

    def __init__(
        self, host: Host, on_disconnect: OnDisconnect | None, on_activation: OnActivation | None
    ) -> None:
        check_callback("on_disconnect", on_disconnect, optional=True)
        check_callback("on_activation", on_activation, optional=True)
        self._host = host
        self._on_disconnect = on_disconnect
        self._on_activation = on_activation
        self._end: str | None = None  # None while open; the close reason, "" for none
        self._errors: dict[str, tuple[float, int]] | None = None  # log rate limit per callback
        self.deliver: Callable[[bytes, bytes], Any]
        self.hears_activations = on_activation is not None

    @property
    def closed(self) -> bool:
        """True once closed (by ``close()``, the multiplexer's close, or an overflow)."""
        return self._end is not None

    @property
    def close_reason(self) -> str | None:
        """Why the library closed it (the ``close`` overflow policy); None otherwise."""
        return self._end or None

    def _label(self) -> str:
        return f"{type(self).__name__}@{id(self):#x}"

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{self._label()} {state}>"

    def _check_open(self) -> None:
        if self._end is not None:
            raise SubscriptionClosed(f"{type(self).__name__} is closed", self.close_reason)

    # -- Listener protocol: called by the link ------------------------------------------------

    # Redis confirmed ``name`` for us.
    def notify_activated(self, name: bytes) -> None:
        if self._end is None and self._on_activation is not None:
            self._call("on_activation", self._on_activation, name)

    # The connection carrying our names was lost (once per outage).
    def notify_disconnected(self, error: BaseException) -> None:
        if self._end is None and self._on_disconnect is not None:
            self._call("on_disconnect", self._on_disconnect, error)

    # Redis refused one of our names (ACL): told through on_disconnect (B37).
    def notify_refused(self, error: BaseException) -> None:
        self.notify_disconnected(error)

    # A sync deliver raised.
    def report_callback_error(self, exc: Exception) -> None:
        self._log_error("on_message", exc)

    # A sync deliver returned something: awaited in order if it is awaitable (B34).
    def await_result(self, result: Any) -> None:
        if inspect.isawaitable(result):
            self._defer("on_message", result)

    # -- calling user code -------------------------------------------------------------------

    def _call(
        self, which: str, fn: Callable[[Any], Any], arg: Any, *, defer: bool = True
    ) -> Awaitable[Any] | None:
        """Call the callback ``fn(arg)``: the one way user code is called, but for messages.

        A raise is logged and counted (B35). An awaitable result (B34) is handed to
        :meth:`_defer`, where it runs in this subscription's order; with ``defer=False`` it is
        returned instead, to a caller that awaits it itself (the worker, a close notice).
        """
        try:
            result = fn(arg)
        except Exception as exc:
            self._log_error(which, exc)
            return None
        if result is None or not inspect.isawaitable(result):
            return None
        if not defer:
            return result
        self._defer(which, result)
        return None

    async def _await(self, which: str, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception as exc:
            self._log_error(which, exc)

    def _defer(self, which: str, awaitable: Awaitable[Any]) -> None:
        """Run a callback's awaitable result where this kind of subscription runs them."""
        raise NotImplementedError

    def _spawn_call(self, which: str, awaitable: Awaitable[Any], name: str) -> asyncio.Task[None]:
        """Run a callback's awaitable as a task of the host; a failure is logged.

        A coroutine becomes the task itself (not wrapped): cancelling the task before its first
        step then means that none of the callback's body ever runs, without a "never awaited"
        warning. Whoever must stop it on close keeps the task.
        """
        coro = awaitable if inspect.iscoroutine(awaitable) else _await(awaitable)
        task = self._host.spawn(coro, name)
        task.add_done_callback(functools.partial(self._log_outcome, which))
        return task

    def _log_outcome(self, which: str, task: asyncio.Task[None]) -> None:
        if not task.cancelled():
            exc = task.exception()
            if isinstance(exc, Exception):
                self._log_error(which, exc)

    def _log_error(self, which: str, exc: BaseException) -> None:
        # Rate-limited per callback: one that raises on every message must not flood the log.
        errors = self._errors
        if errors is None:
            errors = self._errors = {}
        now = time.monotonic()
        last, count = errors.get(which, (-1e9, 0))
        if now - last >= 1.0:
            extra = f" ({count} more times in the last second)" if count else ""
            logger.error("%s: %s raised%s", self._label(), which, extra, exc_info=exc)
            errors[which] = (now, 0)
        else:
            errors[which] = (last, count + 1)
        self._host.count_callback_error()

    # -- closing -----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the subscription: unsubscribe its names (reference counted) and stop delivery.

        No callback of this subscription runs after ``close()`` returns. Closing twice is a
        harmless no-op.
        """
        self._finish(None, tell_host=True)

    def _finish(
        self, reason: str | None, *, tell_host: bool, notify: bool = False, alive: bool = True
    ) -> None:
        """The one close path; what differs between the ways of closing is a parameter.

        ``reason``: the ``close_reason`` (None for a close asked for); ``tell_host``: give the
        names back (hence Redis) and leave the host's set, unless the host is the one closing;
        ``notify``: tell the user (the library closed it); ``alive``: False when its event loop
        is closed, so that nothing of that loop is touched, run or resolved.
        """
        if self._end is not None:
            return
        self._end = reason or ""
        if notify:
            logger.warning("%s closed: %s", self._label(), reason)
        if tell_host:
            self._detach()
            self._host.forget(self)
        self._release(alive)
        if notify:
            self._tell_closed(SubscriptionClosed(f"{type(self).__name__} was closed", reason))

    # The host closes: stop without telling Redis (its connection goes too).
    def shut_down(self) -> None:
        self._finish(None, tell_host=False)

    # Its event loop is closed: close without running or resolving anything of that loop.
    def abandon(self, reason: str) -> None:
        self._finish(reason, tell_host=False, alive=False)

    # The loop runs: start the worker, if this subscription has one.
    def start_consumer(self) -> None:
        pass

    def _detach(self) -> None:
        """Give back every name held."""
        raise NotImplementedError

    def _release(self, alive: bool) -> None:
        """Drop what is pending (buffers, promises, tasks): closing."""
        raise NotImplementedError

    def _tell_closed(self, error: SubscriptionClosed) -> None:
        """Tell the user that the library closed the subscription (B37)."""
        fn = self._on_disconnect
        result = None if fn is None else self._call("on_disconnect", fn, error, defer=False)
        if result is not None:
            self._spawn_call("on_disconnect", result, "redismpx close notice")
