"""The Pub/Sub reader, sans-I/O: RESP bytes in; messages delivered, other events out.

``PubSubReader.feed`` parses with hiredis, classifies each frame once (the table of
``_protocol``), hands each message to the listeners of its name (the registry's dispatch
lists) and each acknowledgement to the registry, and tells its :class:`FrameSink` (the link)
what else happened. It owns no socket and no timer: the connection feeds it what it reads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import hiredis

from ._envelope import RESERVED
from ._protocol import ACK_OF, ERROR, FRAME_TYPES, PMESSAGE, PONG, PUSH, SUBSCRIBED, classify
from .errors import ConnectionLost

if TYPE_CHECKING:
    from ._names import Deliver, Listener
    from ._registry import AckResult, Registry

FEED_SLICE: Final = 16 * 1024  # bytes handed to hiredis at a time (see ``feed``)


class FrameSink(Protocol):
    """What the reader tells of the frames that are not messages (a ``Link``)."""

    def acked(self, kind: int, name: bytes, result: list[Listener] | AckResult) -> None: ...
    def on_pong(self) -> None: ...
    def on_error(self, message: str) -> None: ...
    def on_unexpected(self, frame: Any) -> None: ...
    def callback_failed(self, kind: int, name: bytes, deliver: Deliver, exc: Exception) -> None: ...
    def callback_returned(self, kind: int, name: bytes, deliver: Deliver, result: Any) -> None: ...


class PubSubReader:
    """Reads one connection's Pub/Sub frames until ``stop``.

    ``fail`` is called (once) with the error that ends the connection: a protocol error, or
    a bug of ours while reading. After ``stop`` nothing more is dispatched, not even the
    rest of the chunk being read.
    """

    __slots__ = ("_fail", "_parser", "_push", "dispatched", "received", "registry", "sink")

    def __init__(
        self,
        registry: Registry,
        sink: FrameSink,
        fail: Callable[[BaseException], None],
        *,
        resp3: bool,
        parser: Any = None,
    ) -> None:
        self._parser: Any = parser if parser is not None else hiredis.Reader()
        # The class of a well-formed Pub/Sub frame: hiredis reads RESP3 pushes as
        # PushNotification, RESP2 ones as plain lists. Others go through ``classify``.
        self._push: type = hiredis.PushNotification if resp3 else list
        self.registry = registry
        self.sink: FrameSink | None = sink
        self._fail = fail
        # Messages read, and deliveries handed to listeners (callbacks called or buffered).
        self.received = 0
        self.dispatched = 0

    def stop(self) -> None:
        self.sink = None

    def feed(self, data: bytes) -> None:
        """Parse and dispatch what the connection read."""
        n = len(data)
        if n <= FEED_SLICE:
            self._parser.feed(data)
            self._drain()
            return
        # hiredis drops what it consumed from its buffer every 1 KiB, moving the rest down:
        # fed a whole 256 KiB read, it moves O(n^2 / 1 KiB) bytes (two thirds of the cost
        # per message under load). Fed in slices, the moves stay within a slice.
        feed = self._parser.feed
        for offset in range(0, n, FEED_SLICE):
            feed(data, offset, min(FEED_SLICE, n - offset))
            self._drain()
            if self.sink is None:
                return

    def _drain(self) -> None:
        # The hot path: kept flat, one loop, no call per message beyond hiredis and the
        # listeners'. Every non-message event may stop the reader: ``sink`` is checked then.
        sink = self.sink
        if sink is None:
            return
        parser = self._parser
        gets = parser.gets
        push: Any = self._push  # typed Any: an ``is`` test on a type would narrow ``frame``
        types = FRAME_TYPES
        tables = self.registry.tables
        on_ack = self.registry.on_ack
        received = 0  # local counters: one attribute update per chunk, not per message
        dispatched = 0
        try:
            frame: Any
            while (frame := gets()) is not False:
                # ``classify`` inlined for the well-formed pushes: the same table.
                t = types.get(frame[0], PUSH) if frame.__class__ is push else classify(frame)
                if t < SUBSCRIBED:  # a message; its type is its name kind
                    received += 1
                    name = frame[1]
                    st = tables[t].get(name)
                    if st is None:
                        continue
                    if t == PMESSAGE:
                        channel, payload = frame[2], frame[3]
                        if channel.startswith(RESERVED):
                            continue  # a history's envelope channel: for recovering subs only
                    else:
                        channel, payload = name, frame[2]
                    # One listener (the usual case): its deliver itself; else a list of them.
                    snap: Any = st.snapshot or st.build()
                    if snap.__class__ is not list:
                        dispatched += 1
                        try:
                            r = snap(channel, payload)
                        except Exception as exc:
                            sink.callback_failed(t, name, snap, exc)
                        else:
                            if r is not None:
                                sink.callback_returned(t, name, snap, r)
                        continue
                    dispatched += len(snap)
                    for deliver in snap:
                        try:
                            r = deliver(channel, payload)
                        except Exception as exc:
                            sink.callback_failed(t, name, deliver, exc)
                        else:
                            if r is not None:
                                sink.callback_returned(t, name, deliver, r)
                    continue
                ack = ACK_OF[t]
                if ack is not None:
                    # One per name after a reconnect: the link hears only of what matters.
                    result = on_ack(ack[0], ack[1], frame[1])
                    if result is None:
                        continue
                    sink.acked(ack[0], frame[1], result)
                elif t == PONG:
                    sink.on_pong()
                elif t == ERROR:
                    sink.on_error(str(frame))
                else:
                    sink.on_unexpected(frame)
                if self.sink is None:
                    return
        except hiredis.ProtocolError as exc:
            self.stop()
            self._fail(ConnectionLost(f"protocol error: {exc}"))
        except Exception as exc:  # a bug of ours: never let it kill the event loop's reader
            self.stop()
            self._fail(ConnectionLost(f"internal error while reading: {exc!r}"))
            raise
        finally:
            self.received += received
            self.dispatched += dispatched
