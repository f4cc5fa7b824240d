"""``ChannelSubscription`` and ``PatternSubscription``: the user's handles on the multiplexer.

Both are created by a multiplexer's factories, never directly, and share their delivery
(``BufferedSubscriber``): inline while every callback is a plain function; queued in a bounded
:class:`~redismpx._buffer.Buffer` once any callback is async, drained in order by a worker task
(or by the iterating task of an iterator). The reader never awaits user code (R1, B34-B36 in
docs/spec.md); the user's view is the delivery model, docs/delivery.md.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from ._buffer import (
    ACTIVATION,
    AWAITABLE,
    CLOSE,
    CLOSED,
    DISCONNECT,
    DROPPED,
    Buffer,
    Event,
    OverflowPolicy,
    check_buffer,
)
from ._protocol import CHANNEL, PATTERN, SHARD, to_bytes
from ._subscriber import (
    Host,
    OnActivation,
    OnDisconnect,
    OnDrop,
    OnMessage,
    Subscriber,
    check_callback,
    discard,
    is_async,
    logger,
)
from .errors import InvalidArgument, SubscriptionClosed

MAX_NAME_BYTES = 1 << 20
SMALL_SET = 16  # names held in a tuple up to this many, in a dict beyond


def check_name(value: str | bytes, what: str) -> bytes:
    name = to_bytes(value, what)
    if 0 < len(name) <= MAX_NAME_BYTES:
        return name
    if not name:
        raise InvalidArgument(f"{what} must not be empty")
    raise InvalidArgument(f"{what} is {len(name)} bytes long; the limit is {MAX_NAME_BYTES}")


class DeliveryOptions:
    """Buffer size, overflow policy and drop callback: shared by subscriptions that agree."""

    __slots__ = ("max_buffer", "on_drop", "overflow")

    def __init__(self, max_buffer: int, overflow: OverflowPolicy, on_drop: OnDrop | None) -> None:
        self.max_buffer = max_buffer
        self.overflow = overflow
        self.on_drop = on_drop


_shared_options: dict[tuple[int, str], DeliveryOptions] = {}


def delivery_options(
    max_buffer: int, overflow: OverflowPolicy, on_drop: OnDrop | None
) -> DeliveryOptions:
    if on_drop is not None:
        return DeliveryOptions(max_buffer, overflow, on_drop)
    # Thousands of subscriptions usually share the defaults: one object for all of them.
    key = (max_buffer, overflow)
    opts = _shared_options.get(key)
    if opts is None:
        opts = _shared_options[key] = DeliveryOptions(max_buffer, overflow, None)
    return opts


class Queue(Buffer):
    """A :class:`Buffer` with its consumer: the worker task or the waiting iterator."""

    __slots__ = ("logged_at", "scheduled", "wake", "worker")

    def __init__(self, max_buffer: int, policy: OverflowPolicy) -> None:
        super().__init__(max_buffer, policy)
        self.wake: asyncio.Future[None] | None = None  # set while the consumer waits
        self.worker: asyncio.Task[None] | None = None
        self.scheduled = False  # a drop report is due this loop turn
        self.logged_at = -1e9  # when drops were last logged

    def kick(self) -> None:
        wake = self.wake
        self.wake = None
        if wake is not None and not wake.done():
            wake.set_result(None)


class BufferedSubscriber(Subscriber):
    """A subscription with ``on_message``: inline delivery, or queued in a bounded buffer.

    The buffer (a :class:`Queue`) exists only once the subscription is queued.
    """

    __slots__ = ("_on_message", "_opts", "_queue")

    _kind: int  # CHANNEL, SHARD or PATTERN
    _filters_names = False  # True: the consumer skips names no longer held (B17)

    def __init__(
        self,
        host: Host,
        on_message: OnMessage | None,
        on_disconnect: OnDisconnect | None,
        on_activation: OnActivation | None,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None,
        queued: bool,
    ) -> None:
        super().__init__(host, on_disconnect, on_activation)
        check_callback("on_drop", on_drop, optional=True)
        check_buffer(max_buffer, overflow)
        self._on_message = on_message
        self._opts = delivery_options(max_buffer, overflow, on_drop)
        self._queue: Queue | None = None
        self.deliver = on_message  # type: ignore[assignment]
        if queued or any(is_async(f) for f in (on_message, on_disconnect, on_activation)):
            self._become_queued()

    @property
    def dropped(self) -> int:
        """Messages dropped by the overflow policy so far."""
        return 0 if self._queue is None else self._queue.dropped

    def _held(self) -> tuple[bytes, ...]:
        raise NotImplementedError

    def _holds(self, name: bytes) -> bool:
        return True

    def _detach(self) -> None:
        for name in self._held():
            self._host.remove(self._kind, name, self)

    def _become_queued(self) -> None:
        if self._queue is not None:
            return
        opts = self._opts
        self._queue = Queue(opts.max_buffer, opts.overflow)
        latest = opts.overflow == "latest_per_channel"
        self.deliver = self._enqueue_latest if latest else self._enqueue
        self.hears_activations = True

    # -- the reader's side (R1: never awaits) ------------------------------------------------

    def _enqueue(self, channel: bytes, data: bytes) -> None:
        q = self._queue
        assert q is not None
        if q.nmsgs < q.max:  # Buffer.put's common case, inlined: one call per message
            q.buf.append((channel, data))
            q.nmsgs += 1
            if q.wake is not None:
                q.kick()
            return
        self._dropped(q.overflow(channel, data))

    def _enqueue_latest(self, channel: bytes, data: bytes) -> None:
        q = self._queue
        assert q is not None
        self._dropped(q.put(channel, data))
        q.kick()

    def _dropped(self, n: int) -> None:
        """What the buffer answered: ``n`` messages dropped, or CLOSE."""
        q = self._queue
        assert q is not None
        if n == CLOSE:
            self._finish(
                f"delivery buffer overflow ({q.max} messages pending)", tell_host=True, notify=True
            )
        elif n and not q.scheduled:
            q.scheduled = True
            asyncio.get_running_loop().call_soon(self._report_drops)

    def _report_drops(self) -> None:
        q = self._queue
        assert q is not None
        q.scheduled = False
        if self._end is not None:
            return  # an overflow close reported its drops before its notice (see _tell_closed)
        n = self._take_drops(q)
        if not n:
            return
        on_drop = self._opts.on_drop
        if self._on_message is None or is_async(on_drop):
            # In the stream of an iterator, or for the worker to call an async on_drop in
            # order (one pending call, not one coroutine per loop turn).
            self._consumer().push_drops(n)
            q.kick()
        elif on_drop is not None:
            self._call("on_drop", on_drop, n)

    def _take_drops(self, q: Queue) -> int:
        """Drops not reported yet, now counted in the host's stats and logged."""
        n = q.take_unreported()
        if n <= 0:
            return 0
        self._host.count_dropped(n)
        now = time.monotonic()
        if now - q.logged_at >= 1.0:  # at most once a second: overload must not flood the log
            q.logged_at = now
            logger.warning(
                "%s: dropped %d message(s) (slow consumer, total %d)", self._label(), n, q.dropped
            )
        return n

    def _consumer(self) -> Queue:
        """The buffer (queued only), its consumer started: for an event (then ``kick()``)."""
        q = self._queue
        assert q is not None
        self.start_consumer()
        return q

    # Redis confirmed ``name`` for us.
    def notify_activated(self, name: bytes) -> None:
        if self._end is not None or not self._holds(name):
            return
        if self._queue is None:
            super().notify_activated(name)
        else:
            q = self._consumer()
            q.push_keyed(ACTIVATION, name, name)
            q.kick()

    # The connection carrying our names was lost (once per outage).
    def notify_disconnected(self, error: BaseException) -> None:
        if self._queue is None or self._end is not None:
            super().notify_disconnected(error)
        else:
            q = self._consumer()
            q.push_gap(error)
            q.kick()

    # Redis refused one of our names (ACL): told through on_disconnect, per name (B37).
    def notify_refused(self, error: BaseException) -> None:
        name = getattr(error, "name", None)
        if self._queue is None or name is None or self._end is not None:
            self.notify_disconnected(error)
        else:
            q = self._consumer()
            q.push_keyed(DISCONNECT, (DISCONNECT, name), error)  # not an outage: per name
            q.kick()

    def _forget_name(self, name: bytes) -> None:
        """``name`` was removed: its activation or refusal waiting unread is moot."""
        q = self._queue
        if q is not None:
            q.forget(name)
            q.forget((DISCONNECT, name))

    def _defer(self, which: str, awaitable: Awaitable[Any]) -> None:
        # Awaited by the worker, in order with the messages: the subscription becomes queued.
        if self._queue is None:
            self._become_queued()
            for name in self._held():  # our deliver changed: rebuild the dispatch lists
                self._host.refresh(self._kind, name)
        q = self._consumer()
        q.push(AWAITABLE, awaitable)
        q.kick()

    # -- the consumer's side -----------------------------------------------------------------

    # The loop runs: start the worker (a subscription with callbacks).
    def start_consumer(self) -> None:
        q = self._queue
        if q is not None and q.worker is None and self._on_message is not None and not self.closed:
            q.worker = self._host.spawn(self._work(q), f"redismpx worker {self._label()}")

    async def _wait(self, q: Queue) -> None:
        """Wait until something is pushed (or the subscription closes)."""
        if q.wake is not None:
            raise RuntimeError("another task is already iterating this subscription")
        q.wake = wake = asyncio.get_running_loop().create_future()
        try:
            await wake
        finally:
            # A cancelled wait (a timeout around it) must not leave us registered as the
            # waiting consumer: the next wait, by any task, would be refused.
            if q.wake is wake:
                q.wake = None

    async def _work(self, q: Queue) -> None:
        """The worker of a subscription with callbacks: calls them in order, one at a time."""
        on_message = self._on_message
        assert on_message is not None
        take, wants = q.take, (self._holds if self._filters_names else None)
        while True:
            item = take(wants)
            if item is None:
                if self._end is not None:
                    return
                await self._wait(q)
            elif item.__class__ is Event:
                await self._run_event(item)
            else:
                # Not through _call: this is the per-message hot path (one call saved).
                try:
                    result = on_message(item[0], item[1])
                    if result is not None and inspect.isawaitable(result):
                        await result
                except Exception as exc:
                    self._log_error("on_message", exc)

    async def _run_event(self, event: Event) -> None:
        tag = event.tag
        if tag == AWAITABLE:
            await self._await("on_message", event.arg)
            return
        fn: Callable[[Any], Any] | None
        if tag == ACTIVATION:
            fn, which = self._on_activation, "on_activation"
        elif tag == DISCONNECT:
            fn, which = self._on_disconnect, "on_disconnect"
        elif tag == DROPPED:
            fn, which = self._opts.on_drop, "on_drop"
        else:
            return
        result = None if fn is None else self._call(which, fn, event.arg, defer=False)
        if result is not None:
            await self._await(which, result)

    # -- closing -----------------------------------------------------------------------------

    def _release(self, alive: bool) -> None:
        q = self._queue
        if q is None:
            return
        if alive:
            if q.worker is not None:
                q.worker.cancel()
        else:
            q.worker = q.wake = None  # they belong to the closed loop: drop, never call
        for awaitable in q.clear():
            discard(awaitable)  # a callback's coroutine that will never be awaited now
        q.kick()  # an iterating task wakes up to find the subscription closed

    def _tell_closed(self, error: SubscriptionClosed) -> None:
        q = self._queue
        assert q is not None  # only an overflow closes a subscription by itself
        # The drops not reported yet (the overflowing message at least) are reported now,
        # before the notice: nothing of a closed subscription may be heard after it.
        n = self._take_drops(q)
        if self._on_message is None:  # an iterator: it raises at its next step
            if n:
                q.push_drops(n)
            q.push(CLOSED, error)
            q.kick()
        # The worker may be the thing that is stuck: the notices run on their own.
        on_drop = self._opts.on_drop
        dropping = None
        if n and on_drop is not None:
            dropping = self._call("on_drop", on_drop, n, defer=False)
        if dropping is None:
            super()._tell_closed(error)
            return
        # An async on_drop: the close notice waits for it.
        task = self._spawn_call(
            "on_disconnect", self._notice_after(dropping, error), "redismpx close notice"
        )
        task.add_done_callback(lambda t: discard(dropping) if t.cancelled() else None)

    async def _notice_after(self, dropping: Awaitable[Any], error: SubscriptionClosed) -> None:
        await self._await("on_drop", dropping)
        fn = self._on_disconnect
        result = None if fn is None else self._call("on_disconnect", fn, error, defer=False)
        if result is not None:
            await result


# A subscription's set of names, sized to its count (most hold one to three): nothing, the one
# name itself, a tuple up to SMALL_SET, a dict beyond (O(1) membership).
Names = bytes | tuple[bytes, ...] | dict[bytes, None] | None


def _names_has(held: Names, name: bytes) -> bool:
    if held is None:
        return False
    if isinstance(held, bytes):
        return held == name  # not ``in``: that would be a substring test
    return name in held


def _names_add(held: Names, name: bytes) -> Names:
    """``held`` with ``name``, which it does not hold."""
    if held is None:
        return name
    if isinstance(held, bytes):
        return (held, name)
    if isinstance(held, tuple):
        return (*held, name) if len(held) < SMALL_SET else dict.fromkeys((*held, name))
    held[name] = None
    return held


def _names_remove(held: Names, name: bytes) -> Names:
    """``held`` without ``name``, which it holds."""
    if isinstance(held, tuple):
        rest = tuple(n for n in held if n != name)
        return rest[0] if len(rest) == 1 else rest
    if isinstance(held, dict):
        del held[name]
        return held or None
    return None


def _names_all(held: Names) -> tuple[bytes, ...]:
    if held is None:
        return ()
    if isinstance(held, bytes):
        return (held,)
    return tuple(held)


class ChannelSubscription(BufferedSubscriber):
    """A set of channels whose messages reach ``on_message(channel, payload)``.

    ``add``/``remove`` return at once; Redis is told in one coalesced command per event-loop
    turn, and only when the first subscription in the process wants a channel or the last
    one leaves it (reference counting). ``on_activation(channel)`` fires once Redis has
    confirmed the channel (and again after each reconnect). With ``sharded=True`` the names
    are shard channels (``SSUBSCRIBE``; publish them with ``SPUBLISH``).
    """

    __slots__ = ("_channels", "_kind")

    _filters_names = True

    def __init__(
        self,
        host: Host,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None = None,
        sharded: bool = False,
        queued: bool = False,
    ) -> None:
        if not queued:  # an iterator (queued) is its own consumer
            check_callback("on_message", on_message, optional=False)
        self._kind = SHARD if sharded else CHANNEL
        self._channels: Names = None
        super().__init__(
            host,
            on_message,
            on_disconnect,
            on_activation,
            max_buffer=max_buffer,
            overflow=overflow,
            on_drop=on_drop,
            queued=queued,
        )

    @property
    def channels(self) -> frozenset[bytes]:
        """The channels this subscription holds (as bytes)."""
        return frozenset(_names_all(self._channels))

    def add(self, *channels: str | bytes) -> None:
        """Add channels (``str`` is encoded as UTF-8). Adding one already held does nothing."""
        host = self._host
        host.start_in_running_loop()  # first: in a new event loop it closes the old loop's subs
        self._check_open()
        names = [check_name(c, "channel name") for c in channels]  # validate all first
        for name in names:
            if not _names_has(self._channels, name):
                self._channels = _names_add(self._channels, name)
                host.add(self._kind, name, self)

    def remove(self, *channels: str | bytes) -> None:
        """Remove channels; a channel not held is ignored. Delivery stops when this returns."""
        self._check_open()
        names = [check_name(c, "channel name") for c in channels]
        for name in names:
            if _names_has(self._channels, name):
                self._channels = _names_remove(self._channels, name)
                self._host.remove(self._kind, name, self)
                self._forget_name(name)

    def clear(self) -> None:
        """Remove every channel."""
        self._check_open()
        self._detach()

    def _detach(self) -> None:
        super()._detach()
        self._channels = None

    def _held(self) -> tuple[bytes, ...]:
        return _names_all(self._channels)

    def _holds(self, name: bytes) -> bool:
        return _names_has(self._channels, name)

    def _label(self) -> str:
        n = len(self._held())
        return f"ChannelSubscription@{id(self):#x}[{n} channel{'s' if n != 1 else ''}]"


class PatternSubscription(BufferedSubscriber):
    """One glob-style pattern; ``on_message`` receives the *actual* channel and the payload."""

    __slots__ = ("pattern",)

    _kind = PATTERN

    def __init__(
        self,
        host: Host,
        pattern: str | bytes,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None = None,
        queued: bool = False,
    ) -> None:
        if not queued:
            check_callback("on_message", on_message, optional=False)
        self.pattern: bytes = check_name(pattern, "pattern")
        """The glob-style pattern, as bytes."""
        super().__init__(
            host,
            on_message,
            on_disconnect,
            on_activation,
            max_buffer=max_buffer,
            overflow=overflow,
            on_drop=on_drop,
            queued=queued,
        )

    def _attach(self) -> None:
        self._host.add(PATTERN, self.pattern, self)

    def _held(self) -> tuple[bytes, ...]:
        return (self.pattern,)

    def _label(self) -> str:
        return f"PatternSubscription@{id(self):#x}[{self.pattern!r}]"
