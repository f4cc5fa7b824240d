"""``PromiseSubscription``: one-shot, timed waiters for the next message on ``prefix + suffix``.

It is one pattern subscription on ``escape(prefix) + "*"`` (glob characters in the prefix are
escaped), so creating, fulfilling or expiring a promise sends no Redis command. Promises are
only handed out while the pattern is active (``InactiveSubscription`` otherwise), because a
message published while it is not could be missed silently.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Generator
from typing import Any

from ._protocol import PATTERN, encode_str
from ._subscriber import Host, Subscriber
from .errors import (
    InactiveSubscription,
    InvalidArgument,
    InvalidArgumentType,
    PromiseTimeout,
    SubscriptionClosed,
    SubscriptionInterrupted,
)
from .subscriptions import check_name
from .typedefs import OnActivation, OnDisconnect

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

    __slots__ = ("_fut", "_timer", "_withdraw", "channel")

    def __init__(
        self,
        channel: bytes,
        fut: asyncio.Future[bytes],
        timeout: float | None,
        withdraw: Callable[[bytes, asyncio.Future[bytes]], None],
    ) -> None:
        self.channel = channel
        """The channel whose next message fulfils this promise (``prefix + suffix``)."""
        self._fut = fut
        self._withdraw = withdraw  # removes ``fut`` from its subscription
        self._timer: asyncio.TimerHandle | None = None
        if timeout is not None:  # B42: counted from creation
            self._timer = fut.get_loop().call_later(timeout, _expire, fut, channel, timeout)
        fut.add_done_callback(self._settled)

    def __await__(self) -> Generator[Any, None, bytes]:
        return self._fut.__await__()

    def done(self) -> bool:
        """True once fulfilled, expired, failed or cancelled."""
        return self._fut.done()

    def cancel(self) -> bool:
        """Withdraw the promise; True if it was still pending."""
        cancelled = self._fut.cancel()
        self._settled()  # at once, not in the done callback's later turn
        return cancelled

    def _settled(self, _: object = None) -> None:
        # Fulfilled, expired, failed or withdrawn: nothing of it stays behind (B45).
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        fut = self._fut
        self._withdraw(self.channel, fut)
        if fut.done() and not fut.cancelled():
            fut.exception()  # mark retrieved: an unawaited expired promise must not warn

    def __repr__(self) -> str:
        state = "pending" if not self._fut.done() else "done"
        return f"<Promise {self.channel!r} {state}>"


class PromiseSubscription(Subscriber):
    """Hands out promises for channels ``prefix + suffix`` (see the module docstring)."""

    __slots__ = (
        "_activation_waiters",
        "_active",
        "_notices",
        "_pending",
        "pattern",
        "prefix",
    )

    def __init__(
        self,
        host: Host,
        prefix: str | bytes,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
    ) -> None:
        super().__init__(host, on_disconnect, on_activation)
        self.prefix: bytes = check_name(prefix, "prefix")
        """The prefix, as bytes: promises wait on ``prefix + suffix``."""
        self.pattern: bytes = escape_glob(self.prefix) + b"*"
        """The pattern subscribed in Redis: the escaped prefix followed by ``*``."""
        self.deliver = self._fulfil
        self.hears_activations = True  # activation is what makes promises possible (B39)
        self._pending: dict[bytes, list[asyncio.Future[bytes]]] = {}
        self._active = False
        self._activation_waiters: list[asyncio.Future[None]] = []
        # Tasks running async state callbacks: close() cancels them.
        self._notices: set[asyncio.Task[None]] | None = None
        host.register(self)
        host.add(PATTERN, (self.pattern,), self)

    @property
    def active(self) -> bool:
        """True while Redis has confirmed the pattern (promises may be created)."""
        return self._active

    def _detach(self) -> None:
        self._host.remove(PATTERN, (self.pattern,), self)

    def _label(self) -> str:
        return f"PromiseSubscription@{id(self):#x}[{self.prefix!r}]"

    # -- the link's side ---------------------------------------------------------------------

    def _fulfil(self, channel: bytes, data: bytes) -> None:
        futures = self._pending.pop(channel, None)
        if futures is None:
            return
        for fut in futures:  # B43: every pending promise on the suffix resolves
            if not fut.done():
                fut.set_result(data)

    # Redis confirmed the pattern: promises may be created (B39, B40).
    def notify_activated(self, name: bytes) -> None:
        if self._end is not None:
            return
        self._active = True
        waiters, self._activation_waiters = self._activation_waiters, []
        for w in waiters:
            if not w.done():
                w.set_result(None)
        super().notify_activated(name)

    # An outage: every pending promise fails (B46).
    def notify_disconnected(self, error: BaseException) -> None:
        self._active = False
        exc = SubscriptionInterrupted(f"connection lost: {error}")
        exc.__cause__ = error
        self._fail_all(exc)
        super().notify_disconnected(error)

    def _defer(self, which: str, awaitable: Awaitable[Any]) -> None:
        # No worker here: an async state callback runs as a task that close() cancels (the
        # task that woke up from a failed promise may close us before it starts).
        task = self._spawn_call(which, awaitable, f"redismpx {which}")
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
        self._pending.setdefault(channel, []).append(fut)
        return Promise(channel, fut, seconds, self._withdraw)

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

    def _withdraw(self, channel: bytes, fut: asyncio.Future[bytes]) -> None:
        futures = self._pending.get(channel)
        if futures is not None:
            try:
                futures.remove(fut)
            except ValueError:
                pass
            if not futures:
                del self._pending[channel]

    def _release(self, alive: bool) -> None:
        notices, self._notices = self._notices, None
        waiters, self._activation_waiters = self._activation_waiters, []
        self._active = False
        if not alive:
            self._pending = {}  # futures, timers and tasks of a closed loop: dropped untouched
            return
        if notices:
            for task in notices:
                task.cancel()  # not started yet: the callback's body never runs
        exc = SubscriptionClosed(f"{self._label()} is closed", self.close_reason)
        self._fail_all(exc)
        for w in waiters:
            if not w.done():
                w.set_exception(exc)


def _expire(fut: asyncio.Future[bytes], channel: bytes, seconds: float) -> None:
    if not fut.done():
        fut.set_exception(PromiseTimeout(f"no message on {channel!r} within {seconds:g} s"))
