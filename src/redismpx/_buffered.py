"""``BufferedSubscriber``: the delivery of channel and pattern subscriptions (and iterators).

Inline while every callback is a plain function: the link calls ``on_message`` itself and
nothing is buffered. Queued once any callback is async (or returns an awaitable, B34), and
always for an iterator: the reader appends to a bounded :class:`~redismpx._buffer.Buffer` and
moves on (R1), and one consumer (the worker task, or the iterating task) takes from it in
order. Overflow, drops and the coalescing of events are the buffer's (see ``_buffer.py``); the
user's view is the delivery model, docs/delivery.md.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import Context, copy_context
from typing import Any, TypedDict

from . import _eager as eager
from ._activation import ActivationWaiters
from ._buffer import (
    ACTIVATION,
    AWAITABLE,
    CLOSE,
    CLOSED,
    DISCONNECT,
    DROPPED,
    MISSED,
    Buffer,
    Event,
    check_buffer,
)
from ._decoding import AnyOnActivation, AnyOnMessage, decoding_message, decoding_name
from ._protocol import SUBSCRIBE_COMMANDS
from ._subscriber import Host, Subscriber, check_callback, discard, is_async, logger
from .errors import InvalidArgumentType, SubscribeRefused, SubscriptionClosed
from .typedefs import OnDisconnect, OnDrop, OnMessage, OverflowPolicy


class BufferKeywords(TypedDict, total=False):
    """The buffer keywords of the subscription factories (``None``: the multiplexer's)."""

    max_buffer: int | None
    overflow: OverflowPolicy | None


class DeliveryKeywords(BufferKeywords, total=False):
    """The delivery keywords of the callback subscription factories."""

    on_drop: OnDrop | None
    eager: bool


class DeliveryOptions:
    """Buffer size, overflow policy, drop callback and name type: shared by subscriptions
    that agree."""

    __slots__ = ("decode_names", "eager", "max_buffer", "on_drop", "overflow")

    def __init__(
        self,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None,
        decode_names: bool = False,
        eager: bool = False,
    ) -> None:
        self.max_buffer = max_buffer
        self.overflow = overflow
        self.on_drop = on_drop
        self.decode_names = decode_names
        self.eager = eager


_shared_options: dict[tuple[int, str, bool, bool], DeliveryOptions] = {}


def delivery_options(
    max_buffer: int,
    overflow: OverflowPolicy,
    on_drop: OnDrop | None,
    decode_names: bool = False,
    eager: bool = False,
) -> DeliveryOptions:
    """Checked settings; one object shared by all the subscriptions that use the defaults."""
    check_callback("on_drop", on_drop, optional=True)
    check_buffer(max_buffer, overflow)
    for name, flag in (("decode_names", decode_names), ("eager", eager)):
        if flag is not True and flag is not False:
            raise InvalidArgumentType(f"{name} must be True or False, not {type(flag).__name__}")
    if on_drop is not None:
        return DeliveryOptions(max_buffer, overflow, on_drop, decode_names, eager)
    # Thousands of subscriptions usually share the defaults: one object for all of them.
    key = (max_buffer, overflow, decode_names, eager)
    opts = _shared_options.get(key)
    if opts is None:
        opts = DeliveryOptions(max_buffer, overflow, None, decode_names, eager)
        _shared_options[key] = opts
    return opts


class Queue(Buffer):
    """A :class:`Buffer` with its consumer: the worker task or the waiting iterator."""

    __slots__ = ("context", "logged_at", "on_message", "scheduled", "wake", "worker")

    def __init__(
        self, max_buffer: int, policy: OverflowPolicy, on_message: OnMessage | None
    ) -> None:
        super().__init__(max_buffer, policy)
        # Here, not on the subscription: only the worker needs it (an inline subscription's
        # deliver is on_message itself); None for an iterator.
        self.on_message = on_message
        self.wake: asyncio.Future[None] | None = None  # set while the consumer waits
        self.worker: asyncio.Task[None] | None = None
        self.scheduled = False  # a drop report is due this loop turn
        self.context: Context | None = None  # the worker's, where eager steps run too
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

    __slots__ = ("_opts", "_queue", "_waiters")

    _kind: int  # CHANNEL, SHARD or PATTERN
    _filters_names = False  # True: the consumer skips names no longer held (B17)

    def __init__(
        self,
        host: Host,
        on_message: AnyOnMessage | None,
        on_disconnect: OnDisconnect | None,
        on_activation: AnyOnActivation | None,
        opts: DeliveryOptions,
        queued: bool,
    ) -> None:
        super().__init__(host, on_disconnect, on_activation)
        self._opts = opts
        self._queue: Queue | None = None
        self._waiters: ActivationWaiters | None = None  # while a task awaits activation
        queued = queued or any(is_async(f) for f in (on_message, on_disconnect, on_activation))
        if opts.decode_names:
            # Wrapped once here: the reader and the worker call on_message as they always do.
            if on_message is not None:
                on_message = decoding_message(on_message)
            if on_activation is not None:
                self._on_activation = decoding_name(on_activation)
        if on_message is not None:  # else an iterator: queued below
            self.deliver = on_message
        if queued:
            self._become_queued(on_message)

    @property
    def dropped(self) -> int:
        """Messages dropped by the overflow policy so far."""
        return 0 if self._queue is None else self._queue.dropped

    def _held(self) -> tuple[bytes, ...]:
        raise NotImplementedError

    def _holds(self, name: bytes) -> bool:
        return True

    def _detach(self) -> None:
        self._let_go(self._held())
        if self._waiters is not None:
            self._waiters.wake_all()  # their names are gone: each waiter looks again
        if self._queue is not None:
            self._queue.stale = True  # what waits of those names is skipped (B17)

    def _let_go(self, names: Sequence[bytes]) -> None:
        """Give ``names`` back to the host (Redis unsubscribes those nobody else holds)."""
        self._host.remove(self._kind, names, self)

    def _phase(self, name: bytes) -> bool | None:
        """True: ``name`` is active; None: Redis refused it; False: neither yet."""
        return self._host.phase(self._kind, name)

    def _become_queued(self, on_message: OnMessage | None) -> None:
        if self._queue is not None:
            return
        opts = self._opts
        self._queue = Queue(opts.max_buffer, opts.overflow, on_message)
        latest = opts.overflow == "latest_per_channel"
        if opts.eager and on_message is not None:
            self.deliver = self._deliver_eager
        else:
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

    def _deliver_eager(self, channel: bytes, data: bytes) -> None:
        # eager=True (see _eager.py): started here when the worker idles with nothing
        # pending, so that no later message can overtake what waits.
        q = self._queue
        assert q is not None
        worker, context, on_message = q.worker, q.context, q.on_message
        rest = eager.NOT_STARTED
        idle = q.wake is not None and not q.buf
        if idle and worker is not None and context is not None and on_message is not None:
            try:
                rest = eager.start(worker, context, on_message, channel, data)
            except Exception as exc:
                self._log_error("on_message", exc)
                return
        if rest is eager.NOT_STARTED:
            if q.latest is not None:
                self._enqueue_latest(channel, data)
            else:
                self._enqueue(channel, data)
        elif rest is not None:
            q.push(AWAITABLE, rest)
            q.kick()

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
            self._host.call_soon(self._report_drops)  # once per loop turn

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
        if q.on_message is None or is_async(on_drop):
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

    # -- awaiting activation (what ``add()`` returns) -----------------------------------------

    async def wait_active(self, names: Sequence[bytes]) -> None:
        """Return once each of ``names`` this subscription still holds is active in Redis."""
        loop = asyncio.get_running_loop()
        self._host.start_in_running_loop()  # the first use in this loop may be this wait
        while True:
            self._check_open()
            missing = []
            for name in names:
                if not self._holds(name):
                    continue  # removed meanwhile: no longer waited for
                phase = self._phase(name)
                if phase is None:  # refused, now or before this wait began
                    raise SubscribeRefused(
                        "Redis refused it (an ACL denial: see the log for its reply)",
                        SUBSCRIBE_COMMANDS[self._kind].decode(),
                        name,
                    )
                if not phase:
                    missing.append(name)
            if not missing:
                return
            waiters = self._waiters
            if waiters is None:
                waiters = self._waiters = ActivationWaiters()
                self.hears_activations = True  # the link skips the others' activations
            fut = waiters.wait(missing, loop)
            try:
                await fut
            finally:
                waiters.forget(missing, fut)
                if not waiters and self._waiters is waiters:
                    self._waiters = None
                    self.hears_activations = (
                        self._queue is not None or self._on_activation is not None
                    )

    # Redis confirmed ``name`` for us.
    def notify_activated(self, name: bytes) -> None:
        if self._waiters is not None:
            self._waiters.changed(name)
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
        if self._waiters is not None and name is not None:
            self._waiters.changed(name, error)
        if self._queue is None or name is None or self._end is not None:
            self.notify_disconnected(error)
        else:
            q = self._consumer()
            q.push_keyed(DISCONNECT, (DISCONNECT, name), error)  # not an outage: per name
            q.kick()

    def _on_gap(self) -> Callable[[Any], Any] | None:
        """The ``on_gap`` callback of a recovering subscription (None: none)."""
        return None

    def _forget_name(self, name: bytes) -> None:
        """``name`` was removed: its messages, activation or refusal waiting unread are moot."""
        if self._waiters is not None:
            self._waiters.changed(name)
        q = self._queue
        if q is not None:
            q.stale = True  # its messages waiting are skipped (B17)
            q.forget(name)
            q.forget((DISCONNECT, name))

    def _defer(self, which: str, awaitable: Awaitable[Any]) -> None:
        # Awaited by the worker, in order with the messages: the subscription becomes queued.
        if self._queue is None:
            self._become_queued(self.deliver)  # still on_message: inline until now
            self._delivery_changed()
        q = self._consumer()
        q.push(AWAITABLE, awaitable)
        q.kick()

    def _delivery_changed(self) -> None:
        """Our ``deliver`` changed: whoever calls it directly must take the new one."""
        for name in self._held():  # the link's dispatch entries
            self._host.refresh(self._kind, name)

    # -- the consumer's side -----------------------------------------------------------------

    # The loop runs: start the worker (a subscription with callbacks).
    def start_consumer(self) -> None:
        q = self._queue
        if q is not None and q.worker is None and q.on_message is not None and not self.closed:
            if self._opts.eager:
                q.context = copy_context()  # one context for the worker and the eager steps
            q.worker = self._host.spawn(
                self._work(q), f"redismpx worker {self._label()}", q.context
            )

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
        on_message = q.on_message
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
        elif tag == MISSED:
            fn, which = self._on_gap(), "on_gap"
        else:
            return
        result = None if fn is None else self._call(which, fn, event.arg, defer=False)
        if result is not None:
            await self._await(which, result)

    # -- closing -----------------------------------------------------------------------------

    def _release(self, alive: bool) -> None:
        waiters = self._waiters
        if waiters is not None and alive:
            waiters.wake_all()  # each waiter looks again and raises SubscriptionClosed
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
        if q.on_message is None:  # an iterator: it raises at its next step
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
