"""S12's client process: many WebSocket connections that count the frames they receive.

A minimal RFC 6455 client on ``asyncio.Protocol`` (no library): it sends the upgrade request,
checks the ``101`` answer and its ``Sec-WebSocket-Accept``, then parses the server's frames
(unmasked, as a server must send them). Text frames are counted and their sequence number (the
first 8 bytes of the payload, published in order from 0) is checked: a frame out of order, a
duplicate or a gap is counted as an error. A ``PING`` (uvicorn's keepalive) is answered with a
masked ``PONG``, a ``CLOSE`` with a close. It costs the client about one microsecond per frame,
so that 1,000 sockets in one process keep up with the server under test.

Protocol with the orchestrator (``Ctl``): ``connect port n`` (open connections until there are
``n``, report), ``arm m`` (expect ``m`` frames per socket, from sequence 0), ``wait`` (report
once every socket has its ``m`` frames, or once nothing has arrived for ``idle`` seconds),
``stop`` (close every socket and return).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import time
from typing import Any, cast

from bench.worker import Ctl

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SEQ_DIGITS = 8


class Tally:
    """What all the sockets of the process received (shared, so one counter to watch)."""

    __slots__ = ("complete", "done", "errors", "expected", "first", "frames", "last", "sockets")

    def __init__(self) -> None:
        self.expected = -1  # frames per socket in this repetition
        self.sockets = 0  # sockets armed
        self.complete = 0  # sockets that have all their frames
        self.frames = 0  # text frames received in this repetition, all sockets
        self.errors = 0  # frames out of sequence
        self.first = 0.0  # monotonic time of the first frame
        self.last = 0.0  # ... and of the last one
        self.done: asyncio.Future[None] | None = None  # resolved when every socket is complete

    def arm(self, expected: int, sockets: int) -> asyncio.Future[None]:
        self.expected = expected
        self.sockets = sockets
        self.complete = self.frames = self.errors = 0
        self.first = self.last = 0.0
        self.done = asyncio.get_running_loop().create_future()
        return self.done


class WSClient(asyncio.Protocol):
    """One client connection; ``opened`` resolves once the server accepted the upgrade."""

    def __init__(self, host: str, port: int, path: str, tally: Tally) -> None:
        loop = asyncio.get_running_loop()
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.tally = tally
        self.transport: asyncio.Transport | None = None
        self.key = base64.b64encode(os.urandom(16))
        self.request = (
            b"GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (path.encode(), host.encode(), port, self.key)
        )
        self.buf = bytearray()
        self.upgraded = False
        self.next_seq = 0

    def arm(self) -> None:
        self.next_seq = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError(f"closed before the upgrade: {exc}"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _handshake(self) -> bool:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return False
        head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
        del self.buf[: end + 4]
        accept = base64.b64encode(hashlib.sha1(self.key + GUID).digest()).decode()
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
        if not head[0].startswith("HTTP/1.1 101") or headers.get("sec-websocket-accept") != accept:
            self.opened.set_exception(ConnectionError(f"upgrade refused: {head[0]!r}"))
            assert self.transport is not None
            self.transport.close()
            return False
        self.upgraded = True
        self.opened.set_result(None)
        return True

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.upgraded and not self._handshake():
            return
        n = len(buf)
        i = 0
        tally = self.tally
        frames = 0
        while n - i >= 2:
            b0 = buf[i]
            ln = buf[i + 1]  # the mask bit is never set by a server
            head = 2
            if ln == 126:
                if n - i < 4:
                    break
                ln = (buf[i + 2] << 8) | buf[i + 3]
                head = 4
            elif ln == 127:
                if n - i < 10:
                    break
                ln = struct.unpack_from("!Q", buf, i + 2)[0]
                head = 10
            end = i + head + ln
            if end > n:
                break
            opcode = b0 & 0x0F
            if opcode == 1:
                frames += 1
                if int(buf[i + head : i + head + SEQ_DIGITS]) != self.next_seq:
                    tally.errors += 1
                self.next_seq += 1
                if self.next_seq == tally.expected:
                    tally.complete += 1
            else:
                self._control(opcode, bytes(buf[i + head : end]))
            i = end
        if i:
            del buf[:i]
        if frames:
            if not tally.frames:
                tally.first = time.monotonic()
            tally.frames += frames
            tally.last = time.monotonic()
            done = tally.done
            if tally.complete == tally.sockets and done is not None and not done.done():
                done.set_result(None)

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 9:  # PING: answer with a masked PONG
            self.transport.write(_masked(0x8A, payload))
        elif opcode == 8:  # CLOSE: answer, then the server closes the TCP connection
            self.transport.write(_masked(0x88, payload[:2]))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_masked(0x88, struct.pack("!H", 1000)))


def _masked(b0: int, payload: bytes) -> bytes:
    """A client frame (control frames only: payloads < 126 bytes), masked as RFC 6455 wants."""
    mask = os.urandom(4)
    body = bytes(b ^ mask[k % 4] for k, b in enumerate(payload))
    return bytes((b0, 0x80 | len(payload))) + mask + body


async def _open(
    loop: asyncio.AbstractEventLoop, port: int, path: str, tally: Tally, timeout: float
) -> WSClient:
    _, proto = await loop.create_connection(
        lambda: WSClient("127.0.0.1", port, path, tally), "127.0.0.1", port
    )
    async with asyncio.timeout(timeout):
        await proto.opened
    return proto


async def clients(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Client process body (``name`` is the variant, for the logs only)."""
    loop = asyncio.get_running_loop()
    tally = Tally()
    conns: list[WSClient] = []
    batch: int = p["batch"]
    while True:
        msg = await ctl.recv(p["block_timeout"])
        kind = msg[0]
        if kind == "connect":
            port, want = msg[1], msg[2]
            async with asyncio.timeout(p["setup_timeout"]):
                while len(conns) < want:
                    k = min(batch, want - len(conns))
                    opened = await asyncio.gather(
                        *(_open(loop, port, p["path"], tally, p["setup_timeout"])
                          for _ in range(k))
                    )  # fmt: skip
                    conns.extend(opened)
            ctl.send("connected", len(conns))
        elif kind == "arm":
            tally.arm(msg[1], len(conns))
            for c in conns:
                c.arm()
            ctl.send("armed", None)
        elif kind == "wait":
            idle, limit = msg[1], msg[2]
            done = tally.done
            assert done is not None
            start = time.monotonic()
            while not done.done():
                now = time.monotonic()
                if now - max(start, tally.last) > idle or now - start > limit:
                    break
                await asyncio.wait([done], timeout=0.05)
            counts = [c.next_seq for c in conns]
            ctl.send("received", {
                "frames": tally.frames,
                "complete": tally.complete,
                "sockets": len(conns),
                "min": min(counts, default=0),
                "max": max(counts, default=0),
                "errors": tally.errors,
                "first": tally.first,
                "last": tally.last,
                "closed": sum(1 for c in conns if c.closed.done()),
            })  # fmt: skip
        else:  # stop
            break
    for c in conns:
        c.close()
    if conns:
        await asyncio.wait([c.closed for c in conns], timeout=p["close_timeout"])
    for c in conns:
        if c.transport is not None:
            c.transport.abort()
    return {}
