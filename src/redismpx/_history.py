"""History on the command side: publishing with history, reading it, and the batched reads
of recovering subscriptions.

Every command goes to the node that owns the channel's slot (``call_for`` of the router)
over the command connection, never the Pub/Sub one: a read never delays live delivery.
Reads asked in one event-loop turn go out in one pipeline (10,000 channels recovering after
a restart cost one write and one pass over the replies, not 10,000 round trips), and the
subscriptions of one process recovering the same channel share one read.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import _scripts
from ._envelope import envelope_channel, history_keys
from ._recovery import Entry, Track
from ._tasks import TaskOwner
from .errors import ConnectionLost, PublishTimeout, ServerError
from .history import GapReason, History, HistoryEntry, Position

logger = logging.getLogger("redismpx.history")

CallFor = Callable[[bytes, bytes, str, "float | None"], Awaitable[Any]]
"""``call_for(key, command, name, timeout)``: a command to the node that owns ``key``."""

#: Entries per read command; a longer backlog is read in several, in order.
READ_CHUNK = 1000
#: Error replies that reading again will not change: the channel is refused instead.
REFUSALS = frozenset({"NOPERM", "WRONGTYPE"})
#: How long a recovery read may take before it is tried again.
READ_TIMEOUT = 10.0
#: The pause before reading again after a failed read (doubling up to RETRY_CAP).
RETRY_BASE, RETRY_CAP = 0.05, 2.0


async def publish(
    call_for: CallFor,
    channel: bytes,
    payload: bytes,
    *,
    size: int,
    ttl_ms: int,
    sharded: bool,
    timeout: float | None,
) -> tuple[int, Position]:
    """Append to the history and publish (see :mod:`redismpx._scripts`); returns the
    receivers Redis counted on ``channel`` and the publication's position."""
    meta, log = history_keys(channel)
    epoch = os.urandom(8).hex().encode()  # used only if this publication starts a history
    tag = b"%d" % int.from_bytes(os.urandom(6), "big")  # the entry id's second part

    async def call(command: bytes, name: str) -> Any:
        return await call_for(channel, command, name, timeout)

    args = (
        channel,
        envelope_channel(channel),
        payload,
        b"%d" % size,
        b"%d" % ttl_ms,
        epoch,
        b"SPUBLISH" if sharded else b"PUBLISH",
        tag,
    )
    receivers, used, offset = await _scripts.PUBLISH.run(call, (meta, log), args)
    return int(receivers), Position(_text(used), int(offset))


async def read(
    call_for: CallFor,
    channel: bytes,
    *,
    since: tuple[bytes, int] | None,
    limit: int,
    timeout: float | None,
) -> tuple[bytes | None, int, list[Entry]]:
    """``(epoch, last offset, entries)`` of ``channel``'s history: up to ``limit`` entries
    from ``since`` on, the one at ``since`` included (all of them if ``since`` is of another
    epoch), oldest first; the last ``limit`` without ``since``. Epoch None: the channel has
    no history."""
    keys = history_keys(channel)

    async def call(command: bytes, name: str) -> Any:
        return await call_for(channel, command, name, timeout)

    if since is None:
        args: tuple[bytes, ...] = (b"tail", b"", b"0", b"%d" % limit)
    else:
        args = (b"from", since[0], b"%d" % since[1], b"%d" % limit)
    epoch, last, raw = await _scripts.READ.run(call, keys, args)
    entries = [_entry(item) for item in raw]
    if since is None:
        entries.reverse()  # XREVRANGE: newest first
    return (None if not epoch else _bytes(epoch)), int(last or 0), entries


async def read_history(
    call_for: CallFor, channel: bytes, since: Position | None, limit: int, timeout: float | None
) -> History:
    """What :meth:`Multiplexer.history` returns (see there)."""
    start = None if since is None else (since.epoch.encode(), since.offset)
    # From ``since`` on, that one included: one more, to return ``limit`` after it.
    count = limit if since is None else limit + 1
    epoch, last, entries = await read(call_for, channel, since=start, limit=count, timeout=timeout)
    if epoch is None:
        return History([], None, None if since is None else "lost")
    text = _text(epoch)
    gap: GapReason | None = None
    if since is not None:
        if text != since.epoch:
            gap = "epoch"
        else:
            entries = [e for e in entries if e[0] > since.offset][:limit]
            if last < since.offset:
                gap = "lost"  # rolled back (see _recovery)
            elif last > since.offset and (not entries or entries[0][0] > since.offset + 1):
                gap = "trimmed"
        entries = entries[:limit]
    found = [HistoryEntry(Position(text, offset), data) for offset, _, data in entries]
    # Where to go on from: the last entry when ``limit`` cut the read short, else the end.
    at = found[-1].position if since is not None and len(found) == limit else Position(text, last)
    return History(found, at, gap)


def _entry(item: Any) -> Entry:
    # A stream entry: [b"<offset>-<tag>", [b"d", payload]].
    offset, _, tag = _bytes(item[0]).partition(b"-")
    return int(offset), tag, _bytes(item[1][1])


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


class HistoryReader:
    """The recovery reads of one multiplexer, batched per event-loop turn (see the module)."""

    def __init__(self, call_for: CallFor, tasks: TaskOwner) -> None:
        self._call_for = call_for
        self._tasks = tasks
        self._pending: dict[tuple[bytes, bytes | None], list[tuple[Track, int]]] = {}
        self._handle: asyncio.Handle | None = None
        self._retry: dict[bytes, float] = {}  # the next pause of a channel whose read failed
        self.reads = 0  # read commands answered (for stats)
        self._failures = 0  # failed reads not logged yet
        self._first = asyncio.Lock()  # taken by each batch's first read (see _read_batch)
        self._logged_at = -1e9

    def request(self, track: Track, delay: float = 0.0) -> None:
        """Read the history after ``track``'s position, for its current generation."""
        if delay:
            self._tasks.call_later(delay, self._later, track, track.generation)
            return
        key = (track.channel, track.epoch)
        self._pending.setdefault(key, []).append((track, track.generation))
        if self._handle is None:
            self._handle = self._tasks.call_soon(self._flush)

    def _later(self, track: Track, generation: int) -> None:
        if track.generation == generation and not track.live:
            self.request(track)

    def _flush(self) -> None:
        self._handle = None
        batch, self._pending = self._pending, {}
        self._tasks.spawn(self._read_batch(batch), "redismpx history reads")

    async def _read_batch(self, batch: dict[tuple[bytes, bytes | None], list[Any]]) -> None:
        groups = list(batch.items())
        # The first read alone, one batch at a time: a server that lost its scripts (a
        # restart, a failover) learns the read script from it, instead of refusing every read
        # of the batch (or of the next batch, sent meanwhile) with NOSCRIPT.
        (channel, epoch), waiting = groups[0]
        async with self._first:
            ok = await self._read(channel, epoch, waiting)
        rest = groups[1:]
        if not ok:  # the server is not there yet, or loading: the rest follows the retry
            for _, group in rest:
                for track, generation in group:
                    if track.generation == generation:
                        self.request(track, self._retry.get(channel, RETRY_BASE))
            return
        if rest:
            await asyncio.gather(*(self._read(c, e, w) for (c, e), w in rest))

    async def _read(
        self, channel: bytes, epoch: bytes | None, waiting: list[tuple[Track, int]]
    ) -> bool:
        # One read for every track of this channel and epoch, from the earliest position.
        # False: it failed (each track reads again after a pause).
        waiting = [(t, g) for t, g in waiting if t.generation == g]
        if not waiting:
            return True
        start = None if epoch is None else min(t.offset for t, _ in waiting)
        try:
            found_epoch, last, entries = await self._read_all(channel, epoch, start)
        except (ConnectionLost, PublishTimeout, ServerError, OSError) as exc:
            if isinstance(exc, ServerError) and exc.code in REFUSALS:
                for track, generation in waiting:
                    track.read_refused(generation, exc)
                return True  # not the server's state: the other reads of the batch go on
            delay = min(self._retry.get(channel, RETRY_BASE / 2) * 2, RETRY_CAP)
            self._retry[channel] = delay
            self._log_failure(channel, exc)
            for track, generation in waiting:
                if track.generation == generation:
                    self.request(track, delay)
            return False
        self._retry.pop(channel, None)
        for track, generation in waiting:
            mine = entries
            if found_epoch == track.epoch:
                mine = [e for e in entries if e[0] >= track.offset]
            track.read_done(generation, found_epoch, last, mine)
        return True

    def _log_failure(self, channel: bytes, exc: BaseException) -> None:
        # At most one line a second: 10,000 channels recovering from a server still loading
        # its data fail together, and retry together.
        self._failures += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:
            more = self._failures - 1
            logger.warning(
                "history read of %r failed (%s)%s; reading again with a backoff",
                channel,
                exc,
                f", and {more} more since the last report" if more else "",
            )
            self._logged_at, self._failures = now, 0

    async def _read_all(
        self, channel: bytes, epoch: bytes | None, start: int | None
    ) -> tuple[bytes | None, int, list[Entry]]:
        if epoch is None or start is None:  # a fresh start: the last entry only
            found, last, tail = await read(
                self._call_for, channel, since=None, limit=1, timeout=READ_TIMEOUT
            )
            self.reads += 1
            return found, last, tail
        since = (epoch, start)
        entries: list[Entry] = []
        while True:
            found, last, chunk = await read(
                self._call_for, channel, since=since, limit=READ_CHUNK, timeout=READ_TIMEOUT
            )
            self.reads += 1
            if entries:
                if found != since[0]:
                    entries = []  # the history changed between two chunks: start over
                    since = (epoch, start)
                    continue
                if chunk and chunk[0][0] == entries[-1][0]:
                    chunk = chunk[1:]  # each chunk starts with the last one read
                if chunk and chunk[0][0] != entries[-1][0] + 1:
                    # Trimmed past what was read meanwhile: that is gone too. What is left
                    # starts after a hole, which the track reports as "trimmed".
                    entries = []
            entries.extend(chunk)
            if len(chunk) < READ_CHUNK - 1 or found is None or not entries:
                return found, last, entries
            since = (found, entries[-1][0])
