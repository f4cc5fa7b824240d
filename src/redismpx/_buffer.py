"""The bounded delivery buffer of a queued subscription: pure bookkeeping, no I/O.

A :class:`Buffer` holds a subscription's pending messages, ``(channel, payload)`` pairs, in
order with its events (:class:`Event`: activation, disconnect, drops, an awaitable to await,
the close notice of an iterator). It never calls anything: each operation answers with what
happened (messages dropped, "close the subscription") and the subscriber acts on it. The
user's view is the delivery model, docs/delivery.md.

At most ``max_buffer`` messages wait (events do not count). When a message arrives and the
buffer is full, the overflow policy decides:

* ``drop_oldest``: the oldest pending message is dropped for the new one;
* ``drop_newest``: the new message is dropped;
* ``close``: the message is dropped and :meth:`Buffer.put` answers :data:`CLOSE`;
* ``latest_per_channel``: at most one message per channel is pending; a newer one replaces
  it (counted as a drop). When more channels than ``max_buffer`` are pending, the oldest goes.

Events waiting unread are coalesced, so that a consumer that does not keep up (or a stuck
worker) costs bounded memory however many outages happen; a consumer that keeps up sees every
event as it happened. While events wait unread:

* at most one ``Disconnected`` is pending: a new outage removes the pending one, and the
  activations queued since it, and goes to the end. Unread outages thus look like one long
  outage that follows every activation it undid;
* per name, at most one activation is pending since the last outage (a repeat with no outage
  in between is dropped), and at most one, the earliest, from before it. A refusal of a name
  is kept the same way, per name;
* at most one ``Dropped`` is pending; later drops add to its count.

So what the consumer sees last is the latest state of every name, and it sees every message
kept by the overflow policy in order; messages received between two unread outages appear
before the remaining ``Disconnected``. Memory bound: at most ``max_buffer`` pending messages,
plus O(names) events.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final

from .errors import InvalidArgument, InvalidArgumentType
from .typedefs import OVERFLOW_POLICIES, OverflowPolicy

# Event tags.
ACTIVATION: Final = 0
DISCONNECT: Final = 1
AWAITABLE: Final = 2
DROPPED: Final = 3
CLOSED: Final = 4
VOID: Final = 5  # coalesced away while waiting: take() skips it
MISSED: Final = 6  # a recovering subscription's history gap (a ``Gap``): never coalesced

# What put() answers besides a count of dropped messages (0 or more).
CLOSE: Final = -1  # the "close" policy overflowed: the subscriber must close

# Compact a buffer once it holds this many voided events and they are half of it.
_COMPACT_AT: Final = 32


def check_buffer(max_buffer: Any, overflow: Any) -> None:
    if isinstance(max_buffer, bool) or not isinstance(max_buffer, int):
        raise InvalidArgumentType(f"max_buffer must be an int, not {type(max_buffer).__name__}")
    if max_buffer < 1:
        raise InvalidArgument(f"max_buffer must be >= 1, not {max_buffer}")
    if overflow not in OVERFLOW_POLICIES:
        raise InvalidArgument(
            f"overflow must be one of {', '.join(OVERFLOW_POLICIES)}; not {overflow!r}"
        )


class Event:
    """A non-message item in a buffer (kept in order with the messages)."""

    __slots__ = ("arg", "key", "tag")

    def __init__(self, tag: int, arg: Any, key: Any = None) -> None:
        self.tag = tag
        self.arg = arg
        self.key = key  # the name, for the events coalesced per name


class Buffer:
    """Pending messages and events of one queued subscription, with its drop count.

    Messages are ``(channel, payload)`` tuples, or ``[channel, payload]`` lists under
    ``latest_per_channel`` (replaced in place). ``buf`` and ``nmsgs`` are read directly by the
    subscriber's hot path.
    """

    __slots__ = (
        "after",
        "before",
        "buf",
        "dropped",
        "drops",
        "gap",
        "latest",
        "max",
        "nmsgs",
        "policy",
        "reported",
        "stale",
        "voided",
    )

    def __init__(self, max_buffer: int, policy: OverflowPolicy) -> None:
        self.buf: deque[Any] = deque()
        self.max = max_buffer
        self.policy = policy
        self.latest: dict[bytes, list[bytes]] | None = (
            {} if policy == "latest_per_channel" else None
        )
        self.nmsgs = 0  # messages in ``buf`` (events do not count against ``max``)
        self.dropped = 0  # messages dropped so far
        self.reported = 0  # ... of which were handed out by take_unreported()
        # Pending events that later ones may coalesce with (see the module docstring):
        self.gap: Event | None = None  # the Disconnected
        self.drops: Event | None = None  # the Dropped
        self.after: dict[Any, Event] | None = None  # per-name events since the last outage
        self.before: dict[Any, Event] | None = None  # ... and before it
        self.voided = 0  # VOID events still in ``buf``
        # A name was let go: messages of it may wait (or come from a dispatch under way), so
        # take() asks ``wants`` until it has found the buffer empty.
        self.stale = False

    # -- messages ----------------------------------------------------------------------------

    def put(self, channel: bytes, data: bytes) -> int:
        """Append a message; answer how many were dropped, or :data:`CLOSE`."""
        if self.latest is not None:
            return self._put_latest(channel, data)
        if self.nmsgs < self.max:
            self.buf.append((channel, data))
            self.nmsgs += 1
            return 0
        return self.overflow(channel, data)

    def overflow(self, channel: bytes, data: bytes) -> int:
        """A message arrived with the buffer full (not ``latest_per_channel``)."""
        self.dropped += 1
        policy = self.policy
        if policy == "drop_oldest":
            self._drop_oldest()
            self.buf.append((channel, data))
            self.nmsgs += 1
        elif policy == "close":
            return CLOSE
        return 1

    def _put_latest(self, channel: bytes, data: bytes) -> int:
        latest = self.latest
        assert latest is not None
        entry = latest.get(channel)
        if entry is not None:
            entry[1] = data
            self.dropped += 1
            return 1
        dropped = 0
        if self.nmsgs >= self.max:
            self._drop_oldest()
            self.dropped += 1
            dropped = 1
        entry = latest[channel] = [channel, data]
        self.buf.append(entry)
        self.nmsgs += 1
        return dropped

    def _drop_oldest(self) -> None:
        buf = self.buf
        if buf and buf[0].__class__ is not Event:
            item = buf.popleft()
        else:
            for i, item in enumerate(buf):
                if item.__class__ is not Event:
                    del buf[i]
                    break
            else:  # pragma: no cover - only called with messages pending
                return
        self.nmsgs -= 1
        if self.latest is not None:
            self.latest.pop(item[0], None)

    def take_unreported(self) -> int:
        """Drops not handed out before; they count as reported from now on."""
        n = self.dropped - self.reported
        self.reported = self.dropped
        return n

    # -- the consumer side -------------------------------------------------------------------

    def take(self, wants: Callable[[bytes], bool] | None) -> Any:
        """Remove and return the next message or live event; None when empty.

        While ``stale``, ``wants(name)`` (None: everything) is asked about each message's
        channel and each activation's name: what it refuses is skipped (a name removed while it
        waited, B17). This is the one consumer step of both the worker and the iterators.
        """
        buf = self.buf
        while buf:
            item = buf.popleft()
            if item.__class__ is not Event:
                self.nmsgs -= 1
                if self.latest is not None:
                    self.latest.pop(item[0], None)
                if not self.stale or wants is None or wants(item[0]):
                    return item
                continue
            self._taken(item)
            tag = item.tag
            if tag == VOID:
                continue
            if tag == ACTIVATION and self.stale and wants is not None and not wants(item.arg):
                continue
            return item
        # Empty, and the consumer runs outside any dispatch: nothing from before a removal is
        # left to come.
        self.stale = False
        return None

    def _taken(self, event: Event) -> None:
        # Out of the buffer: nothing coalesces with it now.
        if event.tag == VOID:
            self.voided -= 1
        elif event.key is not None:
            for table in (self.after, self.before):
                if table is not None and table.get(event.key) is event:
                    del table[event.key]
        elif event is self.gap:
            self.gap = None
        elif event is self.drops:
            self.drops = None

    # -- events ------------------------------------------------------------------------------

    def push(self, tag: int, arg: Any) -> None:
        """An event that coalesces with nothing (an awaitable, a close notice)."""
        self.buf.append(Event(tag, arg))

    def push_keyed(self, tag: int, key: Any, arg: Any) -> None:
        """An event about one name: once since the last outage, the earliest before it."""
        after = self.after
        if after is None:
            after = self.after = {}
        elif key in after:
            return  # the same news, with no outage in between
        event = after[key] = Event(tag, arg, key)
        self.buf.append(event)

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
            self._void(gap)
            if after:
                for event in after.values():
                    self._void(event)
        elif after:
            before = self.before
            if before is None:
                self.before = after
            else:
                for key, event in after.items():
                    if key in before:
                        self._void(event)  # the earliest before the outage is kept
                    else:
                        before[key] = event
        self.gap = gap = Event(DISCONNECT, error)
        buf.append(gap)
        self._compact()

    def push_drops(self, n: int) -> None:
        """``n`` more drops to report in order: added to the pending Dropped if any."""
        drops = self.drops
        if drops is not None:
            drops.arg += n
            return
        self.drops = drops = Event(DROPPED, n)
        self.buf.append(drops)

    def forget(self, key: Any) -> None:
        """``key`` was removed: its pending per-name events go."""
        if not (self.after or self.before):
            return
        for table in (self.after, self.before):
            if table is not None:
                event = table.pop(key, None)
                if event is not None:
                    self._void(event)
        self._compact()

    def _void(self, event: Event) -> None:
        # Coalesced away where it waits (removing it from the deque would be O(n)).
        event.tag = VOID
        self.voided += 1

    def _compact(self) -> None:
        voided = self.voided
        buf = self.buf
        if voided < _COMPACT_AT or voided * 2 < len(buf):
            return
        for _ in range(len(buf)):  # in place: the consumer holds ``buf``
            item = buf.popleft()
            if item.__class__ is not Event or item.tag != VOID:
                buf.append(item)
        self.voided = 0

    def clear(self) -> list[Any]:
        """Empty the buffer (closing); return the awaitables that will never be awaited."""
        orphans = [e.arg for e in self.buf if e.__class__ is Event and e.tag == AWAITABLE]
        self.buf.clear()
        self.nmsgs = 0
        if self.latest is not None:
            self.latest.clear()
        self.gap = self.drops = None
        self.after = self.before = None
        self.voided = 0
        return orphans
