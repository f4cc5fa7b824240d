"""The practical limit for Python: an asyncio Protocol, ``hiredis.Reader`` and a dict of callbacks.

This is the least a correct multiplexer must do, written for speed:

* ``data_received`` feeds hiredis (16 KiB at a time) and, per ``message``, calls every callback
  in ``channels[name]`` (a plain list), each inside its own ``try`` (zero-cost in 3.11);
* an ``async def`` callback gets what a library must give it at least: its own ordered worker
  task fed by a deque (the reader never awaits user code);
* add/remove are reference-counted and coalesced per loop turn into ``SUBSCRIBE`` /
  ``UNSUBSCRIBE`` commands of up to 1,000 names, pipelined in one write (S5);
* after a lost connection it reconnects every 5 ms and resubscribes everything in pipelined
  chunks of 1,000 names (S8);
* per subscription it keeps one small ``__slots__`` object: the callback and its channel set (S6);
* publishing (S11) has its own connection, opened at the first publish: every ``PUBLISH`` of
  one loop turn goes out in one write, replies are matched to futures in order (a deque), and
  a lost connection fails the waiting calls and is dialled again at the next call.

:class:`RecoveringLimit` is the same for the live hot path of recovering subscriptions (S15):
see its docstring.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from urllib.parse import urlparse

import hiredis

from bench.contenders.base import Contender, OnMessage
from bench.resp import encode_chunked

log = logging.getLogger(__name__)
Deliver = Callable[[bytes, bytes], Any]
RECONNECT_DELAY = 0.005


class _AsyncWorker:
    """Ordered delivery to one async callback: a deque drained by one task."""

    __slots__ = ("cb", "queue", "task", "waiter")

    def __init__(self, cb: Callable[[bytes, bytes], Awaitable[None]]) -> None:
        self.cb = cb
        self.queue: deque[tuple[bytes, bytes]] = deque()
        self.waiter: asyncio.Future[None] | None = None
        self.task = asyncio.get_running_loop().create_task(self._run())

    def deliver(self, channel: bytes, data: bytes) -> None:
        self.queue.append((channel, data))
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set_result(None)

    async def _run(self) -> None:
        queue = self.queue
        cb = self.cb
        loop = asyncio.get_running_loop()
        while True:
            while queue:
                channel, data = queue.popleft()
                try:
                    await cb(channel, data)
                except Exception:
                    log.exception("callback failed")
            self.waiter = loop.create_future()
            await self.waiter


def publish_command(channel: bytes, data: bytes) -> bytes:
    """``PUBLISH channel data`` in RESP, in one formatting step."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel), channel, len(data), data
    )  # fmt: skip


class _Commands(asyncio.Protocol):
    """The command side: one pipelined connection, one write per loop turn."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.reader = hiredis.Reader()
        self.waiting: deque[asyncio.Future[Any]] = deque()
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def call(self, command: bytes) -> asyncio.Future[Any]:
        if self.lost is not None:
            raise ConnectionError(f"command connection lost: {self.lost}")
        fut = self.loop.create_future()
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(command)
        self.waiting.append(fut)
        return fut

    def _flush(self) -> None:
        out, self.out = self.out, []
        if self.transport is not None and out:
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        popleft = self.waiting.popleft
        reply = reader.gets()
        while reply is not False:
            fut = popleft()
            if not fut.done():  # a cancelled caller: its reply is dropped
                if isinstance(reply, hiredis.ReplyError):
                    fut.set_exception(reply)
                else:
                    fut.set_result(reply)
            reply = reader.gets()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("closed")
        self.transport = None
        for fut in self.waiting:
            if not fut.done():
                fut.set_exception(ConnectionError(f"command connection lost: {self.lost}"))
        self.waiting.clear()
        self.out.clear()


SLICE = 16 * 1024


class LimitSub:
    """Per subscription: its delivery callable and its channel set (or pattern)."""

    __slots__ = ("deliver", "names", "pattern", "worker")

    def __init__(self, on_message: OnMessage, pattern: bytes | None = None) -> None:
        self.pattern = pattern
        self.worker: _AsyncWorker | None = None
        if inspect.iscoroutinefunction(on_message):
            self.worker = _AsyncWorker(on_message)
            self.deliver: Deliver = self.worker.deliver
        else:
            self.deliver = on_message
        self.names: set[bytes] = set()


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: Limit) -> None:
        self.owner = owner
        self.reader = hiredis.Reader()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check here.
        self.owner._connected(cast(asyncio.Transport, transport))

    def data_received(self, data: bytes) -> None:
        # In 16 KiB slices, as redismpx does: hiredis moves the rest of its buffer down every
        # 1 KiB it consumes, so a whole 256 KiB read costs O(n^2 / 1 KiB) in copying. The
        # limit must be the best plain Python can do, this included.
        n = len(data)
        if n <= SLICE:
            self.reader.feed(data)
            self._drain()
            return
        feed = self.reader.feed
        for offset in range(0, n, SLICE):
            feed(data, offset, min(SLICE, n - offset))
            self._drain()

    def _drain(self) -> None:
        gets = self.reader.gets
        owner = self.owner
        channels = owner.channels
        patterns = owner.patterns
        msg = gets()
        while msg is not False:
            kind = msg[0]
            if kind == b"message":
                targets = channels.get(msg[1])
                if targets:
                    channel = msg[1]
                    data = msg[2]
                    for deliver in targets:
                        try:
                            deliver(channel, data)
                        except Exception:
                            log.exception("callback failed")
            elif kind == b"pmessage":
                targets = patterns.get(msg[1])
                if targets:
                    channel = msg[2]
                    data = msg[3]
                    for deliver in targets:
                        try:
                            deliver(channel, data)
                        except Exception:
                            log.exception("callback failed")
            elif kind == b"subscribe" or kind == b"psubscribe":
                owner.acked += 1
            msg = gets()

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner._lost()


class Limit(Contender):
    """The reference: everything above, nothing more."""

    name = "limit"
    protocol: type[_Protocol] = _Protocol

    def __init__(self, url: str, track_activation: bool = True) -> None:
        super().__init__(url, track_activation)
        parsed = urlparse(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 6379
        self.channels: dict[bytes, list[Deliver]] = {}
        self.patterns: dict[bytes, list[Deliver]] = {}
        self.transport: asyncio.Transport | None = None
        self.sent = 0
        self.acked = 0
        self._want: dict[bytes, set[bytes]] = {b"SUBSCRIBE": set(), b"UNSUBSCRIBE": set()}
        self._flush_scheduled = False
        self._closing = False
        self._reconnect_task: asyncio.Task[None] | None = None
        self._commands: _Commands | None = None
        self._commands_opening: asyncio.Task[_Commands] | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self.protocol(self), self.host, self.port)

    def _connected(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def _lost(self) -> None:
        self.transport = None
        if not self._closing:
            self._reconnect_task = asyncio.get_running_loop().create_task(self._reconnect())

    async def _reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closing:
            try:
                await loop.create_connection(lambda: self.protocol(self), self.host, self.port)
                break
            except OSError:
                await asyncio.sleep(RECONNECT_DELAY)
        if self.transport is None:
            return
        self._want[b"SUBSCRIBE"].clear()
        self._want[b"UNSUBSCRIBE"].clear()
        out = encode_chunked(b"SUBSCRIBE", list(self.channels))
        out += encode_chunked(b"PSUBSCRIBE", list(self.patterns))
        self.sent += len(self.channels) + len(self.patterns)
        if out:
            self.transport.write(out)

    async def aclose(self) -> None:
        self._closing = True
        if self._reconnect_task is not None:
            self._reconnect_task.cancel()
        if self.transport is not None:
            self.transport.close()
        if self._commands is not None and self._commands.transport is not None:
            self._commands.transport.close()
        for targets in (*self.channels.values(), *self.patterns.values()):
            for deliver in targets:
                worker = getattr(deliver, "__self__", None)
                if isinstance(worker, _AsyncWorker):
                    worker.task.cancel()
        await asyncio.sleep(0)

    # -- coalesced commands -------------------------------------------------------------
    def _request(self, command: bytes, opposite: bytes, name: bytes) -> None:
        undo = self._want[opposite]
        if name in undo:
            undo.discard(name)
            if opposite == b"SUBSCRIBE":
                self.sent -= 1  # that subscribe is never sent, so never acknowledged
        else:
            self._want[command].add(name)
            if command == b"SUBSCRIBE":
                self.sent += 1
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        subs = list(self._want[b"SUBSCRIBE"])
        unsubs = list(self._want[b"UNSUBSCRIBE"])
        self._want[b"SUBSCRIBE"].clear()
        self._want[b"UNSUBSCRIBE"].clear()
        if self.transport is None:
            return  # resubscribed from self.channels after the reconnect
        self.transport.write(
            encode_chunked(b"SUBSCRIBE", subs) + encode_chunked(b"UNSUBSCRIBE", unsubs)
        )

    # -- subscriptions ------------------------------------------------------------------
    def subscription(self, on_message: OnMessage) -> LimitSub:
        return LimitSub(on_message)

    async def add(self, sub: LimitSub, names: Sequence[bytes]) -> None:
        channels = self.channels
        for name in names:
            if name in sub.names:
                continue
            sub.names.add(name)
            targets = channels.get(name)
            if targets is None:
                channels[name] = [sub.deliver]
                self._request(b"SUBSCRIBE", b"UNSUBSCRIBE", name)
            else:
                targets.append(sub.deliver)

    async def remove(self, sub: LimitSub, names: Sequence[bytes]) -> None:
        for name in names:
            if name in sub.names:
                sub.names.discard(name)
                self._drop(name, sub.deliver)

    def _drop(self, name: bytes, deliver: Deliver) -> None:
        targets = self.channels[name]
        for i, d in enumerate(targets):
            if d is deliver:
                del targets[i]
                break
        if not targets:
            del self.channels[name]
            self._request(b"UNSUBSCRIBE", b"SUBSCRIBE", name)

    async def close(self, sub: LimitSub) -> None:
        pattern = sub.pattern
        if pattern is not None:
            sub.pattern = None
            targets = self.patterns[pattern]
            targets.remove(sub.deliver)
            if not targets:
                del self.patterns[pattern]
                if self.transport is not None:
                    self.transport.write(encode_chunked(b"PUNSUBSCRIBE", [pattern]))
        else:
            for name in sub.names:
                self._drop(name, sub.deliver)
        sub.names.clear()
        if sub.worker is not None:
            sub.worker.task.cancel()

    async def psubscription(self, pattern: bytes, on_message: OnMessage) -> LimitSub:
        sub = LimitSub(on_message, pattern)
        targets = self.patterns.get(pattern)
        if targets is None:
            self.patterns[pattern] = [sub.deliver]
            if self.transport is not None:
                self.sent += 1
                self.transport.write(encode_chunked(b"PSUBSCRIBE", [pattern]))
        else:
            targets.append(sub.deliver)
        return sub

    # -- publishing -----------------------------------------------------------------------
    async def publish(self, channel: bytes, data: bytes) -> int:
        commands = self._commands
        if commands is None or commands.lost is not None:
            commands = await self._open_commands()
        count: int = await commands.call(publish_command(channel, data))
        return count

    async def _open_commands(self) -> _Commands:
        """Dial the command connection once, however many publishers wait for it."""
        opening = self._commands_opening
        if opening is None:
            opening = asyncio.get_running_loop().create_task(self._dial_commands())
            self._commands_opening = opening
        return await asyncio.shield(opening)

    async def _dial_commands(self) -> _Commands:
        try:
            loop = asyncio.get_running_loop()
            _, commands = await loop.create_connection(_Commands, self.host, self.port)
            self._commands = commands
            return commands
        finally:
            self._commands_opening = None

    def pending(self) -> int:
        return self.sent - self.acked


# -- recovering subscriptions (S15) -------------------------------------------------------------


class LimitTrack:
    """One recovering channel: its position, whether the plain copy of an envelope is due, and
    the callbacks of the recovering subscriptions on it."""

    __slots__ = ("channel", "epoch", "expect_copy", "missed", "offset", "tag", "targets")

    def __init__(self, channel: bytes) -> None:
        self.channel = channel
        self.epoch = b""  # no position yet: the first history that begins (offset 1) starts it
        self.offset = 0
        self.tag = b""
        self.expect_copy = False
        self.missed = 0  # a correct reader would read the history here; the bench wants 0
        self.targets: list[Deliver] = []

    def resync(self, epoch: bytes, offset: int) -> bool:
        """Off the hot path: an envelope that does not follow the position. True: deliver it
        (a history that begins); else a duplicate (skipped) or a miss (counted)."""
        if offset == 1 and epoch != self.epoch:
            self.epoch = epoch
            return True
        if epoch != self.epoch or offset > self.offset:
            self.missed += 1
        return False


class _RecoveringProtocol(_Protocol):
    def _drain(self) -> None:
        # The plain path's loop with the least a correct recovering reader adds, inlined: per
        # envelope, split it, check the version, the epoch and that the offset follows the
        # position, keep the position, deliver the payload; then skip the plain copy that
        # follows it on the channel (a message of the channel after no envelope is delivered).
        gets = self.reader.gets
        owner = cast(RecoveringLimit, self.owner)
        channels = owner.channels
        patterns = owner.patterns
        envelopes = owner.envelopes
        copies = owner.copies
        msg = gets()
        while msg is not False:
            kind = msg[0]
            if kind == b"message":
                name = msg[1]
                track = envelopes.get(name)
                if track is not None:
                    try:
                        version, epoch, entry, payload = msg[2].split(b":", 3)
                        offset_b, _, tag = entry.partition(b"-")
                        offset = int(offset_b)
                    except ValueError:
                        version = b""
                    if version == b"1":
                        track.expect_copy = True
                        if (offset == track.offset + 1 and epoch == track.epoch) or track.resync(
                            epoch, offset
                        ):
                            track.offset = offset
                            track.tag = tag
                            channel = track.channel
                            for deliver in track.targets:
                                try:
                                    deliver(channel, payload)
                                except Exception:
                                    log.exception("callback failed")
                    else:
                        log.warning("not an envelope on %r", name)
                else:
                    track = copies.get(name)
                    if track is not None:
                        if track.expect_copy:
                            track.expect_copy = False
                        else:  # published without history
                            channel = track.channel
                            data = msg[2]
                            for deliver in track.targets:
                                try:
                                    deliver(channel, data)
                                except Exception:
                                    log.exception("callback failed")
                    else:
                        targets = channels.get(name)
                        if targets:
                            data = msg[2]
                            for deliver in targets:
                                try:
                                    deliver(name, data)
                                except Exception:
                                    log.exception("callback failed")
            elif kind == b"pmessage":
                targets = patterns.get(msg[1])
                if targets:
                    channel = msg[2]
                    data = msg[3]
                    for deliver in targets:
                        try:
                            deliver(channel, data)
                        except Exception:
                            log.exception("callback failed")
            elif kind == b"subscribe" or kind == b"psubscribe":
                owner.acked += 1
            msg = gets()


class RecoveringLimit(Limit):
    """The limit for the live hot path of recovering subscriptions (S15): a recovering channel
    is subscribed under two names, the channel and its envelope channel (the caller gives
    the envelope channel's name: this module knows no library). Only the live path: no
    history read at the start (the position is taken from the first history that begins) and
    none after a miss or a reconnect (a miss is counted in ``LimitTrack.missed``; a
    reconnect resubscribes the plain channels only). A channel is either plain or
    recovering here."""

    protocol = _RecoveringProtocol

    def __init__(self, url: str, track_activation: bool = True) -> None:
        super().__init__(url, track_activation)
        self.envelopes: dict[bytes, LimitTrack] = {}  # envelope channel -> track
        self.copies: dict[bytes, LimitTrack] = {}  # channel -> track

    async def add_recovering(self, sub: LimitSub, channel: bytes, envelope: bytes) -> None:
        """Add ``channel``, whose envelope channel is ``envelope``, to ``sub``, recovering."""
        if channel in self.channels:
            raise ValueError(f"{channel!r} has plain subscriptions")
        track = self.copies.get(channel)
        if track is None:
            track = self.copies[channel] = self.envelopes[envelope] = LimitTrack(channel)
            self._request(b"SUBSCRIBE", b"UNSUBSCRIBE", channel)
            self._request(b"SUBSCRIBE", b"UNSUBSCRIBE", envelope)
        sub.names.add(channel)
        track.targets.append(sub.deliver)

    def tracks(self) -> list[LimitTrack]:
        return list(self.copies.values())
