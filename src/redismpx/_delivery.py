"""Per-subscription delivery: inline for sync callbacks, an ordered bounded worker for async ones.

The reader never awaits user code (design rule R1 in docs/spec.md). A subscription whose
callbacks are plain functions is called inline by the reader: nothing is buffered, and a
callback that raises is logged and skipped. A subscription with any ``async`` callback gets its
own worker task fed by a bounded buffer; messages and events (activation, disconnect) keep
their order in it, and when the buffer is full the subscription's overflow policy decides:

* ``drop_oldest``: the oldest pending message is dropped for the new one;
* ``drop_newest``: the new message is dropped;
* ``close``: the subscription is closed, ``close_reason`` says why, and ``on_disconnect``
  receives a :class:`SubscriptionClosed` carrying the reason;
* ``latest_per_channel``: at most one message per channel is pending; a newer one replaces
  it (counted as a drop). When more channels than ``max_buffer`` are pending, the oldest goes.

Drops are counted in ``dropped`` and reported through ``on_drop(count)``, at most once per
event-loop turn.

Events waiting in the buffer are coalesced, so that a consumer that does not keep up (or a
stuck worker) costs bounded memory however many outages happen; a consumer that keeps up
sees every event as it happened. While events wait unread:

* at most one ``Disconnected`` (``on_disconnect``) is pending: a new outage removes the
  pending one, and the activations queued since it, and goes to the end. Unread outages thus
  look like one long outage that follows every activation it undid;
* per name, at most one ``Activated`` (``on_activation``) is pending since the last outage
  (a repeat with no outage in between is dropped), and at most one, the earliest, from
  before it. A refusal of a name (``SubscribeRefused``) is kept the same way, per name;
* at most one ``Dropped`` (``on_drop`` when it is async) is pending; later drops add to its
  count.

So what the consumer sees last is the latest state of every name, and it sees every
message kept by the overflow policy in order; messages received between two unread outages
appear before the remaining ``Disconnected``. Memory bound: at most ``max_buffer`` pending
messages per subscription, plus O(names) events.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from .errors import InvalidArgument, InvalidArgumentType, SubscriptionClosed

if TYPE_CHECKING:
    from .multiplexer import Multiplexer

logger = logging.getLogger("redismpx.delivery")

OverflowPolicy = Literal["drop_oldest", "drop_newest", "close", "latest_per_channel"]
OVERFLOW_POLICIES: Final = ("drop_oldest", "drop_newest", "close", "latest_per_channel")
DEFAULT_MAX_BUFFER: Final = 1000

OnMessage = Callable[[bytes, bytes], "Awaitable[Any] | Any"]
OnDisconnect = Callable[[BaseException], "Awaitable[Any] | Any"]
OnActivation = Callable[[bytes], "Awaitable[Any] | Any"]
OnDrop = Callable[[int], "Awaitable[Any] | Any"]

# Event tags in the buffer.
ACTIVATION: Final = 0
DISCONNECT: Final = 1
AWAITABLE: Final = 2
DROPPED: Final = 3
CLOSED: Final = 4
VOID: Final = 5  # coalesced away while waiting: consumers skip it

# Compact a buffer once it holds this many voided events and they are half of it.
_COMPACT_AT: Final = 32


class Event:
    """A non-message item in a delivery buffer (kept in order with the messages)."""

    __slots__ = ("arg", "key", "tag")

    def __init__(self, tag: int, arg: Any, key: Any = None) -> None:
        self.tag = tag
        self.arg = arg
        self.key = key  # the name, for the events coalesced per name


def check_callback(name: str, fn: Any, *, optional: bool) -> None:
    if fn is None:
        if optional:
            return
        raise InvalidArgumentType(f"{name} is required and cannot be None")
    if not callable(fn):
        raise InvalidArgumentType(f"{name} must be callable, not {type(fn).__name__}")


def check_buffer(max_buffer: Any, overflow: Any) -> None:
    if isinstance(max_buffer, bool) or not isinstance(max_buffer, int):
        raise InvalidArgumentType(f"max_buffer must be an int, not {type(max_buffer).__name__}")
    if max_buffer < 1:
        raise InvalidArgument(f"max_buffer must be >= 1, not {max_buffer}")
    if overflow not in OVERFLOW_POLICIES:
        raise InvalidArgument(
            f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; not {overflow!r}"
        )


def is_async(fn: Any) -> bool:
    # An object whose __call__ is ``async def`` counts too.
    call = getattr(type(fn), "__call__", None)  # noqa: B004
    return fn is not None and (inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call))


class Queue:
    """The buffer of a queued subscription and the state of its consumer."""

    __slots__ = (
        "after",
        "before",
        "buf",
        "dropped",
        "drops",
        "gap",
        "latest",
        "logged_at",
        "max",
        "nmsgs",
        "reported",
        "scheduled",
        "voided",
        "wake",
        "worker",
    )

    def __init__(self, max_buffer: int, latest: bool) -> None:
        self.buf: deque[Any] = deque()
        self.latest: dict[bytes, list[bytes]] | None = {} if latest else None
        self.max = max_buffer
        self.nmsgs = 0  # messages in ``buf`` (events do not count against ``max``)
        self.wake: asyncio.Future[None] | None = None  # set while the consumer waits
        self.worker: asyncio.Task[None] | None = None
        self.dropped = 0
        self.reported = 0
        self.scheduled = False
        self.logged_at = -1e9
        # Pending events that later ones may coalesce with (see the module docstring):
        self.gap: Event | None = None  # the Disconnected
        self.drops: Event | None = None  # the Dropped
        self.after: dict[Any, Event] | None = None  # per-name events since the last outage
        self.before: dict[Any, Event] | None = None  # ... and before it
        self.voided = 0  # VOID events still in ``buf``

    def kick(self) -> None:
        wake = self.wake
        self.wake = None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def push(self, event: Event) -> None:
        self.buf.append(event)
        if self.wake is not None:
            self.kick()

    def void(self, event: Event) -> None:
        """Coalesce ``event`` away where it waits (removing it from the deque is O(n))."""
        event.tag = VOID
        self.voided += 1

    def push_keyed(self, tag: int, key: Any, arg: Any) -> None:
        """An event about one name: once since the last outage, the earliest before it."""
        after = self.after
        if after is None:
            after = self.after = {}
        elif key in after:
            return  # the same news, with no outage in between
        event = after[key] = Event(tag, arg, key)
        self.push(event)

    def push_gap(self, error: BaseException) -> None:
        """An outage: the one pending Disconnected, moved to the end (after what it undoes)."""
        gap = self.gap
        buf = self.buf
        if gap is not None and buf and buf[-1] is gap:
            gap.arg = error  # consecutive: merge in place
            return
        after, self.after = self.after, None
        if gap is not None:
            # Unread since the pending outage: this one joins it, with what came between.
            self.void(gap)
            if after:
                for event in after.values():
                    self.void(event)
        elif after:
            before = self.before
            if before is None:
                self.before = after
            else:
                for key, event in after.items():
                    if key in before:
                        self.void(event)  # the earliest before the outage is kept
                    else:
                        before[key] = event
        self.gap = gap = Event(DISCONNECT, error)
        self.push(gap)
        self.compact()

    def push_drops(self, n: int) -> None:
        drops = self.drops
        if drops is not None:
            drops.arg += n
            return
        self.drops = drops = Event(DROPPED, n)
        self.push(drops)

    def forget(self, key: Any) -> None:
        """``key`` was removed: its pending per-name events go."""
        for table in (self.after, self.before):
            if table is not None:
                event = table.pop(key, None)
                if event is not None:
                    self.void(event)
        self.compact()

    def taken(self, event: Event) -> None:
        """The consumer took ``event`` out of the buffer: nothing coalesces with it now."""
        tag = event.tag
        if tag == VOID:
            self.voided -= 1
        elif event.key is not None:
            for table in (self.after, self.before):
                if table is not None and table.get(event.key) is event:
                    del table[event.key]
        elif event is self.gap:
            self.gap = None
        elif event is self.drops:
            self.drops = None

    def compact(self) -> None:
        voided = self.voided
        buf = self.buf
        if voided < _COMPACT_AT or voided * 2 < len(buf):
            return
        for _ in range(len(buf)):  # in place: consumers hold ``buf``
            item = buf.popleft()
            if item.__class__ is not Event or item.tag != VOID:
                buf.append(item)
        self.voided = 0

    def reset(self) -> None:
        """Empty the buffer (closing)."""
        self.buf.clear()
        self.nmsgs = 0
        if self.latest is not None:
            self.latest.clear()
        self.gap = self.drops = None
        self.after = self.before = None
        self.voided = 0


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


class Subscriber:
    """Base of every subscription: callbacks, delivery mode, buffer, worker, closing.

    Kept small (a few slots): a process may hold hundreds of thousands of subscriptions.
    The buffer state lives in a :class:`Queue` made only for queued subscriptions.
    """

    __slots__ = (
        "_errors",
        "_mpx",
        "_on_activation",
        "_on_disconnect",
        "_on_message",
        "_opts",
        "_q",
        "close_reason",
        "closed",
        "deliver",
    )

    def __init__(
        self,
        mpx: Multiplexer,
        on_message: OnMessage | None,
        on_disconnect: OnDisconnect | None,
        on_activation: OnActivation | None,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None,
        queued: bool = False,
    ) -> None:
        check_callback("on_disconnect", on_disconnect, optional=True)
        check_callback("on_activation", on_activation, optional=True)
        check_callback("on_drop", on_drop, optional=True)
        check_buffer(max_buffer, overflow)
        self._mpx = mpx
        self._on_message = on_message
        self._on_disconnect = on_disconnect
        self._on_activation = on_activation
        self._opts = delivery_options(max_buffer, overflow, on_drop)
        self.closed = False
        """True once closed (by ``close()``, the multiplexer's close, or an overflow)."""
        self.close_reason: str | None = None
        """Why the library closed it (the ``close`` overflow policy); None otherwise."""
        self._errors: dict[str, tuple[float, int]] | None = None
        self._q: Queue | None = None
        self.deliver: Callable[[bytes, bytes], Any] = on_message  # type: ignore[assignment]
        if queued or any(is_async(f) for f in (on_message, on_disconnect, on_activation)):
            self._become_queued()

    # Subclasses that must hear every activation even without callbacks (promises).
    _always_activate = False

    @property
    def dropped(self) -> int:
        """Messages dropped by the overflow policy so far."""
        return 0 if self._q is None else self._q.dropped

    # -- naming (for logs) -------------------------------------------------------------------

    def _label(self) -> str:
        return f"{type(self).__name__}@{id(self):#x}"

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<{self._label()} {state}>"

    # -- modes -------------------------------------------------------------------------------

    def _become_queued(self) -> None:
        if self._q is not None:
            return
        latest = self._opts.overflow == "latest_per_channel"
        self._q = Queue(self._opts.max_buffer, latest)
        self.deliver = self._enqueue_latest if latest else self._enqueue

    def _refresh_registrations(self) -> None:
        """Our ``deliver`` changed: the registry must rebuild the dispatch lists we are in."""

    # -- called by the link (reader context) -------------------------------------------------

    def _enqueue(self, channel: bytes, data: bytes) -> None:
        q = self._q
        assert q is not None
        if q.nmsgs >= q.max:
            self._overflow(channel, data)
            return
        q.buf.append((channel, data))
        q.nmsgs += 1
        if q.wake is not None:
            q.kick()

    def _enqueue_latest(self, channel: bytes, data: bytes) -> None:
        q = self._q
        assert q is not None and q.latest is not None
        entry = q.latest.get(channel)
        if entry is not None:
            entry[1] = data
            self._count_drop(1)
            return
        if q.nmsgs >= q.max:
            self._drop_oldest_message()
            self._count_drop(1)
        entry = q.latest[channel] = [channel, data]
        q.buf.append(entry)
        q.nmsgs += 1
        if q.wake is not None:
            q.kick()

    def _overflow(self, channel: bytes, data: bytes) -> None:
        q = self._q
        assert q is not None
        policy = self._opts.overflow
        if policy == "drop_newest":
            self._count_drop(1)
        elif policy == "drop_oldest":
            self._drop_oldest_message()
            q.buf.append((channel, data))
            q.nmsgs += 1
            self._count_drop(1)
        else:  # "close"
            self._count_drop(1)
            self._fail(f"delivery buffer overflow ({q.max} messages pending)")

    def _drop_oldest_message(self) -> None:
        q = self._q
        assert q is not None
        buf = q.buf
        if buf and buf[0].__class__ is not Event:
            item = buf.popleft()
        else:
            for i, item in enumerate(buf):
                if item.__class__ is not Event:
                    del buf[i]
                    break
            else:  # pragma: no cover - only called with messages pending
                return
        q.nmsgs -= 1
        if q.latest is not None:
            q.latest.pop(item[0], None)

    def _count_drop(self, n: int) -> None:
        q = self._q
        assert q is not None
        q.dropped += n
        if not q.scheduled:
            q.scheduled = True
            asyncio.get_running_loop().call_soon(self._report_drops)

    def _report_drops(self) -> None:
        q = self._q
        assert q is not None
        q.scheduled = False
        if self.closed:
            return  # an overflow close reported its drops before its notice (see _fail)
        n = self._take_drops()
        if not n:
            return
        on_drop = self._opts.on_drop
        if self._on_message is None or is_async(on_drop):
            # In the stream of an iterator, or for the worker to call an async on_drop in
            # order (one pending call, not one coroutine per loop turn).
            self._ensure_consumer()
            q.push_drops(n)
        elif on_drop is not None:
            self._call("on_drop", on_drop, n)

    def _take_drops(self) -> int:
        """Drops not reported yet, now counted in the multiplexer's stats and logged."""
        q = self._q
        assert q is not None
        n = q.dropped - q.reported
        if n <= 0:
            return 0
        q.reported = q.dropped
        self._mpx._count_dropped(n)
        now = time.monotonic()
        if now - q.logged_at >= 1.0:  # at most once a second: overload must not flood the log
            q.logged_at = now
            logger.warning(
                "%s: dropped %d message(s) (slow consumer, total %d)", self._label(), n, q.dropped
            )
        return n

    def _push_event(self, tag: int, arg: Any) -> None:
        q = self._q
        assert q is not None
        q.push(Event(tag, arg))

    def _activated(self, name: bytes) -> None:
        """Redis confirmed ``name`` for us."""
        if self.closed:
            return
        q = self._q
        if q is not None:
            self._ensure_consumer()
            q.push_keyed(ACTIVATION, name, name)
        elif self._on_activation is not None:
            self._call("on_activation", self._on_activation, name)

    def _disconnected(self, error: BaseException) -> None:
        """The connection carrying our names was lost (once per outage)."""
        if self.closed:
            return
        q = self._q
        if q is not None:
            self._ensure_consumer()
            q.push_gap(error)
        elif self._on_disconnect is not None:
            self._call("on_disconnect", self._on_disconnect, error)

    def _refused(self, error: BaseException) -> None:
        """Redis refused one of our names (ACL): told through ``on_disconnect``."""
        q = self._q
        name = getattr(error, "name", None)
        if q is None or name is None or self.closed:
            self._disconnected(error)
            return
        self._ensure_consumer()
        q.push_keyed(DISCONNECT, (DISCONNECT, name), error)  # not an outage: per name

    def _forget_name(self, name: bytes) -> None:
        """``name`` was removed: its activation or refusal waiting unread is moot."""
        q = self._q
        if q is not None and (q.after or q.before):
            q.forget(name)
            q.forget((DISCONNECT, name))

    def _callback_failed(self, exc: Exception) -> None:
        self._log_error("on_message", exc)

    def _callback_returned(self, result: Any) -> None:
        """A sync ``on_message`` returned something: await it if it is awaitable (B34)."""
        if not inspect.isawaitable(result):
            return
        if self._q is None:
            self._become_queued()
            self._refresh_registrations()
        self._ensure_consumer()
        self._push_event(AWAITABLE, result)

    # -- calling user code -------------------------------------------------------------------

    def _call(self, which: str, fn: Callable[[Any], Any], arg: Any) -> None:
        """Call a callback inline; an awaitable result is handed to the worker (B34)."""
        try:
            result = fn(arg)
        except Exception as exc:
            self._log_error(which, exc)
            return
        if result is not None and inspect.isawaitable(result):
            if self._q is None:
                self._become_queued()
                self._refresh_registrations()
            self._ensure_consumer()
            self._push_event(AWAITABLE, result)

    def _log_error(self, which: str, exc: BaseException) -> None:
        # Rate-limited per callback: one that raises on every message must not flood the log.
        if self._errors is None:
            self._errors = {}
        now = time.monotonic()
        last, count = self._errors.get(which, (-1e9, 0))
        if now - last >= 1.0:
            extra = f" ({count} more times in the last second)" if count else ""
            logger.error("%s: %s raised%s", self._label(), which, extra, exc_info=exc)
            self._errors[which] = (now, 0)
        else:
            self._errors[which] = (last, count + 1)
        self._mpx._count_callback_error()

    def _ensure_consumer(self) -> None:
        q = self._q
        if q is not None and q.worker is None and self._on_message is not None and not self.closed:
            q.worker = self._mpx._spawn(self._work(q), f"redismpx worker {self._label()}")

    def _wants(self, channel: bytes) -> bool:
        return not self.closed

    async def _work(self, q: Queue) -> None:
        buf = q.buf
        on_message = self._on_message
        assert on_message is not None
        latest = q.latest
        loop = asyncio.get_running_loop()
        while True:
            if not buf:
                q.wake = wake = loop.create_future()
                await wake
                continue
            item = buf.popleft()
            if item.__class__ is Event:
                q.taken(item)
                await self._run_event(item)
                continue
            q.nmsgs -= 1
            channel = item[0]
            if latest is not None:
                latest.pop(channel, None)
            if not self._wants(channel):
                continue
            try:
                result = on_message(channel, item[1])
                if result is not None and inspect.isawaitable(result):
                    await result
            except Exception as exc:
                self._log_error("on_message", exc)

    async def _run_event(self, event: Event) -> None:
        tag = event.tag
        fn: Callable[[Any], Any] | None
        which = "on_message"
        if tag == AWAITABLE:
            try:
                await event.arg
            except Exception as exc:
                self._log_error(which, exc)
            return
        if tag == ACTIVATION:
            if not self._wants(event.arg):
                return  # removed while the activation waited in the buffer
            fn, which = self._on_activation, "on_activation"
        elif tag == DISCONNECT:
            fn, which = self._on_disconnect, "on_disconnect"
        elif tag == DROPPED:
            fn, which = self._opts.on_drop, "on_drop"
        else:
            return
        if fn is None:
            return
        try:
            result = fn(event.arg)
            if result is not None and inspect.isawaitable(result):
                await result
        except Exception as exc:
            self._log_error(which, exc)

    # -- closing -----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise SubscriptionClosed(f"{type(self).__name__} is closed", self.close_reason)

    def _detach(self) -> None:
        """Remove every registration of ours (subclasses)."""

    def close(self) -> None:
        """Close the subscription: unsubscribe its names (reference counted) and stop delivery.

        No callback of this subscription runs after ``close()`` returns. Closing twice is a
        harmless no-op.
        """
        if self.closed:
            return
        self.closed = True
        self._detach()
        self._mpx._forget(self)
        self._stop()

    def _shutdown(self) -> None:
        """The multiplexer is closing: stop without telling Redis (the socket goes too)."""
        if self.closed:
            return
        self.closed = True
        self._stop()

    def _abandon(self, reason: str) -> None:
        """Its event loop is closed: close without running or resolving anything of it."""
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        q = self._q
        if q is not None:
            # The worker and its wake-up future belong to the closed loop: drop, never call.
            q.worker = q.wake = None
            for item in q.buf:
                if item.__class__ is Event and item.tag == AWAITABLE:
                    discard(item.arg)
            q.reset()

    def _stop(self) -> None:
        q = self._q
        if q is None:
            return
        if q.worker is not None:
            q.worker.cancel()
        for item in q.buf:
            if item.__class__ is Event and item.tag == AWAITABLE:
                discard(item.arg)  # a callback's coroutine that will never be awaited now
        q.reset()
        q.kick()

    def _fail(self, reason: str) -> None:
        """Close on the library's initiative; tell the user why, once."""
        if self.closed:
            return
        self.close_reason = reason
        logger.warning("%s closed: %s", self._label(), reason)
        self.closed = True
        self._detach()
        self._mpx._forget(self)
        self._stop()
        error = SubscriptionClosed(f"{type(self).__name__} was closed", reason)
        # The drops not reported yet (the overflowing message at least) are reported now,
        # before the notice: nothing of a closed subscription may be heard after it.
        n = 0 if self._q is None else self._take_drops()
        if self._q is not None and self._on_message is None:
            if n:
                self._q.push_drops(n)
            self._push_event(CLOSED, error)  # the buffer was cleared: an iterator raises next
        # The worker may be the thing that is stuck: the notices run on their own.
        dropping = self._call_now("on_drop", self._opts.on_drop if n else None, n)
        if dropping is None:
            result = self._call_now("on_disconnect", self._on_disconnect, error)
            if result is not None:
                spawn_callback(self, "on_disconnect", result, "redismpx close notice")
            return
        # An async on_drop: the close notice waits for it.
        task = spawn_callback(
            self, "on_disconnect", self._notice_after(dropping, error), "redismpx close notice"
        )
        task.add_done_callback(lambda t: discard(dropping) if t.cancelled() else None)

    def _call_now(self, which: str, fn: Callable[[Any], Any] | None, arg: Any) -> Any:
        """Call ``fn(arg)`` if there is one; return its awaitable result, if any."""
        if fn is None:
            return None
        try:
            result = fn(arg)
        except Exception as exc:
            self._log_error(which, exc)
            return None
        return result if result is not None and inspect.isawaitable(result) else None

    async def _notice_after(self, dropping: Awaitable[Any], error: SubscriptionClosed) -> None:
        try:
            await dropping
        except Exception as exc:
            self._log_error("on_drop", exc)
        result = self._call_now("on_disconnect", self._on_disconnect, error)
        if result is not None:
            await result

    # -- TEMPORARY (branch arch/protocol) --------------------------------------------------
    # The public ``Listener`` names (``_names.py``) over today's private ones, so the link can
    # be written against the protocol before the delivery split lands; that split implements
    # these names itself: keep its version and drop this block when merging.

    @property
    def hears_activations(self) -> bool:
        return self._q is not None or self._on_activation is not None or self._always_activate

    def notify_activated(self, name: bytes) -> None:
        self._activated(name)

    def notify_disconnected(self, error: BaseException) -> None:
        self._disconnected(error)

    def notify_refused(self, error: BaseException) -> None:
        self._refused(error)

    def report_callback_error(self, exc: Exception) -> None:
        self._callback_failed(exc)

    def await_result(self, result: Any) -> None:
        self._callback_returned(result)

    # -- end TEMPORARY ----------------------------------------------------------------------


def discard(awaitable: Any) -> None:
    """Forget a callback's awaitable that will never be awaited.

    A coroutine is closed: none of its body runs, and Python does not warn that it was never
    awaited.
    """
    if inspect.iscoroutine(awaitable):
        awaitable.close()


async def _await(awaitable: Awaitable[Any]) -> None:
    await awaitable


def spawn_callback(
    sub: Subscriber, which: str, awaitable: Awaitable[Any], name: str
) -> asyncio.Task[None]:
    """Run a callback's awaitable as a task of the multiplexer; failures are logged.

    A coroutine becomes the task itself (not wrapped): cancelling the task before its first
    step then means that none of the callback's body ever runs, without a "never awaited"
    warning. Whoever must stop it on close keeps the task.
    """
    if inspect.iscoroutine(awaitable):
        coro = cast(Coroutine[Any, Any, None], awaitable)
    else:
        coro = _await(awaitable)
    task = sub._mpx._spawn(coro, name)
    task.add_done_callback(functools.partial(_log_outcome, sub, which))
    return task


def _log_outcome(sub: Subscriber, which: str, task: asyncio.Task[None]) -> None:
    if task.cancelled():
        return
    exc = task.exception()
    if isinstance(exc, Exception):
        sub._log_error(which, exc)
