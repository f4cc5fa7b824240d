"""History and recovery: the public types (the guide is docs/history.md).

A publication made with ``publish(..., history_size=N)`` is kept in a bounded per-channel
history and carries a :class:`Position`: the history's epoch and the publication's offset in
it. A subscription made with ``recover=True`` remembers the last position it delivered per
channel and, after an outage, delivers what it missed from the history before the live
messages; when the history no longer covers the outage it says so once with a :class:`Gap`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, NamedTuple

from .errors import InvalidArgument, InvalidArgumentType
from .typedefs import Name

GapReason = Literal["trimmed", "lost", "epoch"]
"""Why a history did not cover an outage:

* ``"trimmed"``: the history was trimmed past the last position delivered (more was
  published during the outage than ``history_size`` keeps);
* ``"lost"``: the history is gone (it expired after ``history_ttl`` without a publication,
  was evicted, or the server restarted without persistence and nothing was published since),
  or it lost its last writes (a restart from a snapshot, a failover to a lagging replica);
* ``"epoch"``: a new history replaced the one the position belongs to (it was lost, then
  publishing started a new one)."""


class Position(NamedTuple):
    """Where a publication sits in its channel's history: the history's ``epoch`` (it changes
    when a history is lost and started again) and the publication's ``offset`` (1, 2, 3 ...
    within the epoch). ``str(position)`` is ``"<epoch>:<offset>"``, and
    :meth:`parse` reads it back: store it (in a page, a cookie, a database) to resume later."""

    epoch: str
    offset: int

    def __str__(self) -> str:
        return f"{self.epoch}:{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position:
        """The position ``str(position)`` gave; :class:`InvalidArgument` if it is not one."""
        if not isinstance(text, str):
            raise InvalidArgumentType(f"a position is a str, not {type(text).__name__}")
        epoch, sep, offset = text.rpartition(":")
        if not sep or not epoch or not offset.isdigit() or not epoch.isascii():
            raise InvalidArgument(f"not a position (expected '<epoch>:<offset>'): {text!r}")
        return cls(epoch, int(offset))


#: The largest offset a position may have (offsets are exact Lua numbers up to it).
MAX_OFFSET = 10**14


def check_position(position: object, what: str = "since") -> Position:
    """``position`` if it is a :class:`Position` a history can have; else a typed error."""
    if not isinstance(position, Position):
        raise InvalidArgumentType(f"{what} must be a Position, not {type(position).__name__}")
    epoch, offset = position
    if not isinstance(epoch, str):
        raise InvalidArgumentType(f"{what}.epoch must be a str, not {type(epoch).__name__}")
    if not epoch or not epoch.isascii() or ":" in epoch:
        raise InvalidArgument(f"{what}.epoch is not an epoch a history has: {epoch!r}")
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise InvalidArgumentType(f"{what}.offset must be an int, not {type(offset).__name__}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidArgument(f"{what}.offset must be from 0 to {MAX_OFFSET}, not {offset}")
    return position


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    """One publication kept in a history."""

    position: Position
    data: bytes


@dataclass(frozen=True, slots=True)
class History:
    """What :meth:`~redismpx.Multiplexer.history` read.

    ``entries``: oldest first. ``position``: where to continue from (pass it as ``since`` to
    a recovering subscription, or to the next ``history`` call) without a duplicate or a gap;
    None when the channel has no history. ``gap``: when ``since`` was given and the history
    no longer reaches back to it, why (see :data:`GapReason`); the entries are then what it
    still holds.
    """

    entries: list[HistoryEntry]
    position: Position | None
    gap: GapReason | None = None


@dataclass(frozen=True, slots=True)
class Gap(Generic[Name]):
    """A recovering subscription missed messages of ``channel`` that the history no longer
    holds: re-sync that channel from your database. ``reason`` says why (:data:`GapReason`);
    ``since`` is the last position delivered before (None if there was none). Told once per
    channel and outage, before the messages that follow it."""

    channel: Name
    reason: GapReason
    since: Position | None
