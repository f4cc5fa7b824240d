"""Recovering one channel, sans-I/O: what a recovering subscription does with each event.

A :class:`Track` is one channel of one recovering subscription. It is fed the events of the
channel's two names (the channel and its envelope channel, see :mod:`redismpx._envelope`)
and the results of history reads, and answers through its :class:`TrackSink`: deliver this
payload, report this gap, the channel is caught up, read the history after this position.
No sockets, tasks or clocks in here.

The rules, and why:

* *Live*: an envelope whose offset follows the last one delivered is delivered; one at or
  before it is a duplicate and skipped; one further on (or of another epoch) means
  something was missed while connected, so the track reads the history (below).
* *The plain copy*: the script publishes the envelope and then the payload alone on the
  channel, back to back on the same connection. After an envelope, the next message of the
  channel is that copy and is skipped, if the channel was active when the envelope came
  (else the copy is not coming). A message of the channel that follows no envelope was
  published without history: delivered as it is, but only while the envelope channel is
  active too, since otherwise a copy cannot be told from it.
* *Recovering*: any activation of either name ends live delivery (it follows an outage, or
  the very start). From that moment everything that arrives is held, in order; once both
  names are active the history is read, and only a read started after the latest
  activation counts (a kill during the read means reading again). The read's entries after
  the last position are delivered, then the held messages by the live rules.
* *The start*: a track with no position yet takes the position of the first envelope held,
  or the history's last offset when none was held: a channel is recoverable from its first
  activation on, before it has received anything. Where the channel had no history at
  all, it stands before the first publication of the history to come (``NO_HISTORY``).
* *Merged by position*: the read's entries are delivered up to the first envelope held; from
  there the held messages are replayed in the order they came, so a message published
  without history keeps its place among those published with it.
* *Rolled back*: a history of the same epoch whose last offset is behind ours lost its last
  writes (a restart from a snapshot, a failover to a lagging replica): a gap, and the track
  goes on from that offset, which new publications reuse. When new publications have already
  reused it, the entry at our offset bears another tag (each entry's id is
  ``<offset>-<random tag>``): a gap too, and delivery from that entry on.
* *Caught up* is told once per activation (the subscription's ``on_activation``), not after
  a read caused by a miss while connected.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from ._envelope import VERSION, parse
from .history import GapReason, Position

Entry = tuple[int, bytes, bytes]  # (offset, tag, payload) of a history entry
_PLAIN = -1  # the offset of a held message published without history
NO_HISTORY = b""  # the epoch of a track that started where the channel had no history

#: Messages held while a channel recovers. Beyond, the held ones are let go: the envelopes
#: are in the history (an offset skipped once live makes the track read again), the plain
#: ones were at most once anyway. A read that keeps failing must not cost unbounded memory.
HELD_MAX = 10_000


def _unset(channel: bytes, payload: bytes) -> None:
    raise RuntimeError("a track delivered a message before it was given its delivery")


class TrackSink(Protocol):
    """What a track asks of the subscription it belongs to."""

    def deliver_to(self, channel: bytes, payload: bytes) -> None: ...
    def gap(self, channel: bytes, reason: GapReason, since: Position | None) -> None: ...
    def caught_up(self, channel: bytes) -> None: ...
    def read(self, track: Track) -> None: ...  # read the history after ``track.position``
    def refused(self, channel: bytes, error: BaseException) -> None: ...
    # Whether Redis holds the channel (the envelope channel) for us now: asked only while
    # the track recovers (live, both are).
    def channel_active(self, channel: bytes) -> bool: ...
    def envelope_active(self, channel: bytes) -> bool: ...
    # What the link tells a track beyond its frames.
    def name_activated(self, track: Track) -> None: ...
    def name_refused(self, track: Track, error: BaseException) -> None: ...
    def outage(self, error: BaseException) -> None: ...
    def unreadable(self, name: bytes) -> None: ...


class Delivery(Protocol):
    """Where a track hands its payloads: the subscription's delivery (inline or queued)."""

    deliver: Callable[[bytes, bytes], Any]

    def report_callback_error(self, exc: Exception) -> None: ...
    def await_result(self, result: Any) -> None: ...


class Track:
    """One recovering channel of one subscription (see the module docstring).

    It is also the link's listener of its two names (the channel and its envelope channel):
    each frame reaches its track with no lookup, which is what the hot path of thousands of
    recovering channels needs. What the link tells it beyond the frames goes to its sink.
    """

    __slots__ = (
        "channel",
        "deliver",
        "emit",
        "epoch",
        "expect_copy",
        "generation",
        "held",
        "live",
        "offset",
        "out",
        "outage",
        "refused",
        "sink",
        "tag",
    )

    hears_activations = True  # the link's Listener protocol

    def __init__(
        self,
        sink: TrackSink,
        channel: bytes,
        since: Position | None,
        out: Delivery | None = None,
    ) -> None:
        self.sink = sink
        self.channel = channel
        # The last position delivered; epoch None: none yet (a fresh start).
        self.epoch: bytes | None = None if since is None else since.epoch.encode()
        self.offset = 0 if since is None else since.offset
        self.tag: bytes | None = None  # the tag of the entry at ``offset``, if known
        self.live = False
        # (epoch, offset or _PLAIN, tag, payload)
        self.held: list[tuple[bytes, int, bytes, bytes]] = []
        self.expect_copy = False
        self.generation = 0  # bumped by each activation: reads of an older one are void
        self.outage = False  # recovering from an activation (told as caught up), not a miss
        self.refused = False  # reading the history was refused for good (until reactivated)
        self.out = out  # where payloads go (None: the unit tests drive the sink alone)
        # ``out.deliver`` as the live path calls it (not looked up through ``out`` per
        # message: across thousands of channels that is two objects fewer to fetch); set
        # again whenever ``out.deliver`` changes (see ``RecoveryTap.delivery_changed``).
        self.emit: Callable[[bytes, bytes], Any] = _unset if out is None else out.deliver
        # The link's ``Listener.deliver``, bound once: both names' dispatch then share one
        # callable (one object less to fetch per frame across thousands of channels).
        self.deliver: Callable[[bytes, bytes], None] = self.frame

    @property
    def position(self) -> Position | None:
        """The last position delivered (or started from)."""
        if not self.epoch:  # None or NO_HISTORY
            return None
        return Position(self.epoch.decode(), self.offset)

    def __repr__(self) -> str:
        state = "live" if self.live else f"recovering ({len(self.held)} held)"
        return f"<Track {self.channel!r} at {self.position} {state}>"

    # -- the link's calls (``Listener``) -----------------------------------------------------

    def frame(self, name: bytes, data: bytes) -> None:
        """A frame of one of the two names: the hot path (the live cases inlined; they are
        the first branches of :meth:`envelope` and :meth:`plain`)."""
        if name == self.channel:
            if self.expect_copy:
                self.expect_copy = False
            else:
                self.plain(data)
            return
        if self.live:
            parts = data.split(b":", 3)
            if len(parts) == 4 and parts[1] == self.epoch and parts[0] == VERSION:
                offset, _, tag = parts[2].partition(b"-")
                following = self.offset + 1
                try:
                    live = int(offset) == following
                except ValueError:
                    live = False
                if live:
                    self.offset = following
                    self.tag = tag
                    self.expect_copy = True
                    try:
                        result = self.emit(self.channel, parts[3])
                    except Exception as exc:
                        self.report_callback_error(exc)
                    else:
                        if result is not None:
                            self.await_result(result)
                    return
        envelope = parse(data)
        if envelope is None:
            self.sink.unreadable(name)
        else:
            self.envelope(*envelope)

    def notify_activated(self, name: bytes) -> None:
        self.sink.name_activated(self)

    def notify_disconnected(self, error: BaseException) -> None:
        self.sink.outage(error)

    def notify_refused(self, error: BaseException) -> None:
        self.sink.name_refused(self, error)

    def report_callback_error(self, exc: Exception) -> None:
        if self.out is not None:
            self.out.report_callback_error(exc)

    def await_result(self, result: Any) -> None:
        if self.out is not None:
            self.out.await_result(result)

    # -- events of the two names -------------------------------------------------------------

    def activated(self, both_active: bool) -> None:
        """One of the two names became active; ``both_active``: so is the other one."""
        self.live = False
        self.held.clear()  # an earlier outage's: the history has them
        self.expect_copy = False
        self.generation += 1
        self.outage = True
        self.refused = False
        if both_active:
            self.sink.read(self)

    def envelope(self, epoch: bytes, offset: int, tag: bytes, payload: bytes) -> None:
        """An envelope arrived (its plain copy follows if the channel is active)."""
        if self.live:
            self.expect_copy = True  # live implies both names are active
            if epoch == self.epoch and offset == self.offset + 1:
                self.offset, self.tag = offset, tag
                self.sink.deliver_to(self.channel, payload)
            elif offset == 1 and epoch != self.epoch:
                # A history that begins while we are live (the channel had none when we
                # started, or its last one expired while we heard all of it): the start.
                self.epoch, self.offset, self.tag = epoch, offset, tag
                self.sink.deliver_to(self.channel, payload)
            elif epoch != self.epoch or offset > self.offset:
                self._missed(epoch, offset, tag, payload)
            # else a duplicate: skipped
        else:
            self.expect_copy = self.sink.channel_active(self.channel)
            self._hold(epoch, offset, tag, payload)

    def plain(self, payload: bytes) -> None:
        """A message of the channel itself arrived."""
        if self.expect_copy:
            self.expect_copy = False  # the copy of the envelope just handled
        elif self.live:
            self.sink.deliver_to(self.channel, payload)
        elif self.sink.envelope_active(self.channel):
            self._hold(b"", _PLAIN, b"", payload)
        # else it cannot be told from the copy of an envelope we did not hear: if it is one,
        # the history has it; if not, it was published during the outage (at most once)

    def _hold(self, epoch: bytes, offset: int, tag: bytes, payload: bytes) -> None:
        held = self.held
        if self.refused:
            return  # nothing is delivered until the channel is activated again
        if len(held) >= HELD_MAX:
            held.clear()
        held.append((epoch, offset, tag, payload))

    def _missed(self, epoch: bytes, offset: int, tag: bytes, payload: bytes) -> None:
        # Live, something was missed (a position skipped, a new epoch): read the history.
        self.live = False
        self.held = [(epoch, offset, tag, payload)]
        self.generation += 1
        self.sink.read(self)

    # -- the history read --------------------------------------------------------------------

    def read_refused(self, generation: int, error: BaseException) -> None:
        """Redis refused the read for good (an ACL without scripting): the channel is refused
        until its next activation, as a refused subscribe is."""
        if generation == self.generation and not self.live:
            self.refused = True
            self.held.clear()
            self.sink.refused(self.channel, error)

    def read_done(
        self, generation: int, epoch: bytes | None, last: int, entries: Sequence[Entry]
    ) -> None:
        """The history read for ``generation``: its epoch (None: no history), its last offset,
        and its entries from this track's position on, that one included (all of them for
        another epoch; for a fresh start, the last one)."""
        if generation != self.generation or self.live:
            return  # an activation came after the read began: a newer read counts
        if self.epoch is None:
            self._start(epoch, last, entries)
        else:
            self._catch_up(epoch, last, entries)
        held, self.held = self.held, []
        # The held messages replayed by the live rules; their copies were skipped as they
        # came, and whether the next message of the channel is a copy stays as it was (the
        # read may land between an envelope and its copy).
        expect_copy = self.expect_copy
        self.live = True
        sink, channel = self.sink, self.channel
        for i, (h_epoch, h_offset, h_tag, payload) in enumerate(held):
            if h_offset == _PLAIN:
                sink.deliver_to(channel, payload)
                continue
            self.envelope(h_epoch, h_offset, h_tag, payload)
            if not self.live:  # that one revealed a miss: the rest waits for the new read
                self.held.extend(held[i + 1 :])
                break
        self.expect_copy = expect_copy
        if self.live and self.outage:
            self.outage = False
            sink.caught_up(channel)

    def _start(self, epoch: bytes | None, last: int, entries: Sequence[Entry]) -> None:
        # A fresh start: from the first held envelope, else the history's end, else (no
        # history yet) from before the first publication of the one to come.
        first = next((h for h in self.held if h[1] != _PLAIN), None)
        if first is not None:
            self.epoch, self.offset, self.tag = first[0], first[1] - 1, None
        elif epoch is not None:
            self.epoch, self.offset = epoch, last
            self.tag = entries[-1][1] if entries and entries[-1][0] == last else None
        else:
            self.epoch, self.offset, self.tag = NO_HISTORY, 0, None

    def _catch_up(self, epoch: bytes | None, last: int, entries: Sequence[Entry]) -> None:
        # Deliver what the read holds after our position, up to the first envelope held (from
        # there the held messages, plain ones included, are replayed in the order they came).
        assert self.epoch is not None  # (read_done: a track with a position)
        sink, channel = self.sink, self.channel
        reason: GapReason | None
        if self.epoch == NO_HISTORY:  # everything of a history begun since is after us
            first = entries[0][0] if entries else last + 1
            reason = None if epoch is None or first == 1 else "trimmed"
        elif epoch == self.epoch and entries and entries[0][0] == self.offset:
            if self.tag is not None and entries[0][1] != self.tag:
                # The entry at our position is another publication: the history lost what
                # we delivered (a failover to a lagging replica) and gave its offset to a new
                # one. Delivered from that one on.
                reason = "lost"
                self.offset -= 1
            else:
                entries = entries[1:]
                reason = _gap(self.epoch, self.offset, epoch, last, entries)
        else:
            reason = _gap(self.epoch, self.offset, epoch, last, entries)
        if reason is not None:
            sink.gap(channel, reason, self.position)
        if epoch is None:  # the history is gone: its next one starts us afresh
            self.epoch, self.offset, self.tag = NO_HISTORY, 0, None
        elif epoch != self.epoch:
            self.epoch, self.offset, self.tag = epoch, 0, None
        elif last < self.offset:  # rolled back (a restart lost its last writes)
            self.offset, self.tag = last, None  # new publications reuse the offsets after it
        held = next((h for h in self.held if h[1] != _PLAIN), None)
        # Held ones of a later history: the read's are all before them.
        stop = held[1] if held is not None and held[0] == self.epoch else None
        told = reason is not None
        for offset, tag, payload in entries:
            if stop is not None and offset >= stop:
                break
            if offset > self.offset:
                if offset > self.offset + 1 and not told:  # a hole: trimmed while read
                    sink.gap(channel, "trimmed", self.position)
                    told = True
                self.offset, self.tag = offset, tag
                sink.deliver_to(channel, payload)
        if stop is not None and stop > self.offset + 1 and last >= stop - 1:
            # The history had what came between our position and the first envelope held
            # but no longer holds it (trimmed during the outage): the held ones go on from
            # there. (With ``last`` before it, the read is older than what was held: the
            # replay finds the miss and reads again.)
            if not told:
                sink.gap(channel, "trimmed", self.position)
            self.offset, self.tag = stop - 1, None


def _gap(
    epoch: bytes, offset: int, now: bytes | None, last: int, entries: Sequence[Entry]
) -> GapReason | None:
    """Why a history (epoch ``now``, last offset ``last``, ``entries`` after ``offset``) does
    not cover what followed ``(epoch, offset)``; None when it does."""
    if now is None:
        return "lost" if offset > 0 else None
    if now != epoch:
        return "epoch"
    if last < offset:  # the same history, rolled back: it lost what followed ``last``
        return "lost"
    if last == offset:
        return None
    if not entries or entries[0][0] > offset + 1:
        return "trimmed"
    return None
