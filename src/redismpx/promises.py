"""``PromiseSubscription``: one-shot, timed waiters for the next message on ``prefix + suffix``.

It is one pattern subscription on ``escape(prefix) + "*"`` (glob characters in the prefix are
escaped), so creating, fulfilling or expiring a promise sends no Redis command. Promises are
only handed out while the pattern is active (``InactiveSubscription`` otherwise), because a
message published while it is not could be missed silently.
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any

from ._delivery import (
    DEFAULT_MAX_BUFFER,
    OnActivation,
    OnDisconnect,
    Subscriber,
    check_callback,
    spawn_callback,
)
from ._protocol import PATTERN, encode_str
from .errors import (
    InactiveSubscription,
    InvalidArgument,
    InvalidArgumentType,
    PromiseTimeout,
    SubscriptionClosed,
    SubscriptionInterrupted,
)
from .subscriptions import check_name

if TYPE_CHECKING:
    from .multiplexer import Multiplexer

_GLOB = frozenset(b"*?[]\\")


def escape_glob(prefix: bytes) -> bytes:
    """Escape Redis glob characters so that ``prefix`` matches only itself."""
    return bytes(b for c in prefix for b in ((92, c) if c in _GLOB else (c,)))


def _check_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise InvalidArgumentType(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    if math.isnan(timeout) or timeout <= 0:
        raise InvalidArgument(f"timeout must be > 0 seconds (or None), not {timeout!r}")
    return None if math.isinf(timeout) else float(timeout)


class Promise:
    """The next message on one channel, awaitable once or many times: ``await promise``.

    Resolves to the payload (``bytes``). Raises :class:`PromiseTimeout` (an
    ``asyncio.TimeoutError``) when its timeout, counted from creation, expires;
    :class:`SubscriptionInterrupted` (an ``asyncio.CancelledError``) when the connection is
    lost first; :class:`SubscriptionClosed` when its subscription closes. ``cancel()``
    withdraws it; cancelling a task that awaits it withdraws it too.
    """

    __slots__ = ("_fut", "_sub", "_timer", "channel")

    def __init__(
        self, channel: bytes, fut: asyncio.Future[bytes], sub: PromiseSubscription
    ) -> None:
        self.channel = channel
        """The channel whose next message fulfils this promise (``prefix + suffix``)."""
        self._fut = fut
        self._sub = sub
        self._timer: asyncio.TimerHandle | None = None

    def __await__(self) -> Generator[Any, None, bytes]:
        return self._fut.__await__()

    def done(self) -> bool:
        """True once fulfilled, expired, failed or cancelled."""
        return self._fut.done()

    def cancel(self) -> bool:
        """Withdraw the promise; True if it was still pending."""
        cancelled = self._fut.cancel()
        self._sub._settled(self)  # at once, not in the done callback's later turn
        return cancelled

    def __repr__(self) -> str:
        state = "pending" if not self._fut.done() else "done"
        return f"<Promise {self.channel!r} {state}>"


class PromiseSubscription(Subscriber):
    """Hands out promises for channels ``prefix + suffix`` (see the module docstring)."""

    __slots__ = (
        "_activation_waiters",
        "_active",
        "_notices",
        "_notify_activation",
        "_notify_disconnect",
        "_pending",
        "pattern",
        "prefix",
    )

    def __init__(
        self,
        mpx: Multiplexer,
        prefix: str | bytes,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
    ) -> None:
        check_callback("on_disconnect", on_disconnect, optional=True)
        check_callback("on_activation", on_activation, optional=True)
        # Kept apart from the base class's callbacks: a promise subscription has no message
        # worker, so its state callbacks run inline (or as their own task when async).
        self._notify_disconnect = on_disconnect
        self._notify_activation = on_activation
        self.prefix: bytes = check_name(prefix, "prefix")
        """The prefix, as bytes: promises wait on ``prefix + suffix``."""
        self.pattern: bytes = escape_glob(self.prefix) + b"*"
        """The pattern subscribed in Redis: the escaped prefix followed by ``*``."""
        super().__init__(
            mpx,
            None,
            None,
            None,
            max_buffer=DEFAULT_MAX_BUFFER,
            overflow="drop_newest",
            on_drop=None,
        )
        self.deliver = self._fulfil
        self._pending: dict[bytes, list[asyncio.Future[bytes]]] = {}
        self._active = False
        self._activation_waiters: list[asyncio.Future[None]] = []
        # Tasks running async state callbacks: close() cancels them.
        self._notices: set[asyncio.Task[None]] | None = None

    _always_activate = True

    @property
    def active(self) -> bool:
        """True while Redis has confirmed the pattern (promises may be created)."""
        return self._active

    def _attach(self) -> None:
        self._mpx._add(PATTERN, self.pattern, self)

    def _detach(self) -> None:
        self._mpx._remove(PATTERN, self.pattern, self)

    def _label(self) -> str:
        return f"PromiseSubscription@{id(self):#x}[{self.prefix!r}]"

    # -- events from the link ----------------------------------------------------------------

    def _fulfil(self, channel: bytes, data: bytes) -> None:
        futures = self._pending.pop(channel, None)
        if futures is None:
            return
        for fut in futures:  # B43: every pending promise on the suffix resolves
            if not fut.done():
                fut.set_result(data)

    def _activated(self, name: bytes) -> None:
        if self.closed:
            return
        self._active = True
        waiters, self._activation_waiters = self._activation_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        self._notify("on_activation", self._notify_activation, name)

    def _disconnected(self, error: BaseException) -> None:
        self._active = False
        exc = SubscriptionInterrupted(f"connection lost: {error}")
        exc.__cause__ = error
        self._fail_all(exc)
        if not self.closed:
            self._notify("on_disconnect", self._notify_disconnect, error)

    def _refused(self, error: BaseException) -> None:
        self._disconnected(error)

    def _notify(self, which: str, fn: Callable[[Any], Any] | None, arg: Any) -> None:
        """Call a state callback inline; an async one runs as a task that close() cancels
        (the task that woke up from a failed promise may close us before it starts)."""
        if fn is None:
            return
        try:
            result = fn(arg)
        except Exception as exc:
            self._log_error(which, exc)
            return
        if result is not None and inspect.isawaitable(result):
            task = spawn_callback(self, which, result, f"redismpx {which}")
            notices = self._notices
            if notices is None:
                notices = self._notices = set()
            notices.add(task)
            task.add_done_callback(notices.discard)

    def _fail_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for futures in pending.values():
            for fut in futures:
                if not fut.done():
                    fut.set_exception(exc)

    # -- public API --------------------------------------------------------------------------

    async def wait_for_activation(self) -> None:
        """Return once the pattern is active (at once if it already is).

        Raises :class:`SubscriptionClosed` if the subscription closes first. Cancelling the
        caller is safe.
        """
        self._check_open()
        if self._active:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._activation_waiters.append(fut)
        try:
            await fut
        finally:
            if fut in self._activation_waiters:
                self._activation_waiters.remove(fut)

    def new_promise(self, suffix: str | bytes, timeout: float | None) -> Promise:
        """A promise for the next message on ``prefix + suffix`` published after this call.

        ``timeout`` (seconds, or None for none) counts from now. Raises
        :class:`InactiveSubscription` until the subscription is active.
        """
        self._check_open()
        seconds = _check_timeout(timeout)
        if isinstance(suffix, str):
            suffix_b = encode_str(suffix, "suffix")
        elif isinstance(suffix, bytes):
            suffix_b = suffix
        else:
            raise InvalidArgumentType(f"suffix must be str or bytes, not {type(suffix).__name__}")
        if not self._active:
            raise InactiveSubscription(f"{self._label()} is not active yet")
        loop = asyncio.get_running_loop()
        channel = self.prefix + suffix_b
        fut: asyncio.Future[bytes] = loop.create_future()
        promise = Promise(channel, fut, self)
        self._pending.setdefault(channel, []).append(fut)
        if seconds is not None:
            promise._timer = loop.call_later(seconds, _expire, fut, channel, seconds)
        fut.add_done_callback(lambda f: self._settled(promise))
        return promise

    async def wait_for_new_promise(self, suffix: str | bytes, timeout: float | None) -> Promise:
        """Wait for activation, then create the promise (its timeout starts then)."""
        _check_timeout(timeout)
        while True:
            await self.wait_for_activation()
            if self._active:
                return self.new_promise(suffix, timeout)

    def clear(self) -> None:
        """Cancel every pending promise (their awaiters get ``asyncio.CancelledError``)."""
        self._check_open()
        pending, self._pending = self._pending, {}
        for futures in pending.values():
            for fut in futures:
                fut.cancel()

    def _settled(self, promise: Promise) -> None:
        fut = promise._fut
        if promise._timer is not None:
            promise._timer.cancel()
            promise._timer = None
        futures = self._pending.get(promise.channel)
        if futures is not None:
            try:
                futures.remove(fut)
            except ValueError:
                pass
            if not futures:
                del self._pending[promise.channel]
        if not fut.cancelled():
            fut.exception()  # mark retrieved: an unawaited expired promise must not warn

    def _abandon(self, reason: str) -> None:
        # The futures and timers belong to the closed loop: resolving one would schedule
        # its callbacks there, so they are dropped untouched.
        self._pending = {}
        self._activation_waiters = []
        self._notices = None
        self._active = False
        super()._abandon(reason)

    def _stop(self) -> None:
        super()._stop()
        notices, self._notices = self._notices, None
        if notices:
            for task in notices:
                task.cancel()  # not started yet: the callback's body never runs
        self._active = False
        exc = SubscriptionClosed(f"{self._label()} is closed", self.close_reason)
        self._fail_all(exc)
        waiters, self._activation_waiters = self._activation_waiters, []
        for w in waiters:
            if not w.done():
                w.set_exception(exc)


def _expire(fut: asyncio.Future[bytes], channel: bytes, seconds: float) -> None:
    if not fut.done():
        fut.set_exception(PromiseTimeout(f"no message on {channel!r} within {seconds:g} s"))
