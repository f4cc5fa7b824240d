"""The publisher: a separate process writing pre-encoded, pipelined ``PUBLISH`` commands.

It runs a command loop on a ``multiprocessing`` pipe so one process serves the whole bench run.
It uses a raw blocking socket (no client library), so its cost is tiny and the same for every
contender. Modes:

* ``bulk``: publish ``n`` messages round-robin over channels ``prefix0..prefix{count-1}``, as fast
  as the server takes them, and wait for every reply. When it returns, the server has processed
  every ``PUBLISH`` (so every message sits in the subscriber's socket or output buffer). It reports
  how many replies said ``:0`` (no receiver), which must be none.
* ``paced``: ``rate`` msgs/s for ``duration`` s on one channel; each payload starts with the send
  time from ``clock_gettime_ns(CLOCK_MONOTONIC)`` (system-wide on Linux, so the subscriber
  process can subtract it from its own reading of the same clock).
* ``probe``: one timestamped message every ``interval`` s, round-robin over some channels,
  reconnecting every millisecond while the server is down, until told to stop (S8).
"""

from __future__ import annotations

import itertools
import select
import socket
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from bench.resp import encode

CHUNK = 1000
CLOCK = time.CLOCK_MONOTONIC


def now_ns() -> int:
    """The system-wide monotonic clock shared by publisher and subscriber processes."""
    return time.clock_gettime_ns(CLOCK)


def stamped_payload(size: int) -> bytes:
    """A payload of ``size`` bytes starting with the current monotonic time (19 digits)."""
    head = b"%019d" % now_ns()
    return head + b"." * max(0, size - len(head))


def publish_cmd(channel: bytes, payload: bytes) -> bytes:
    return encode(b"PUBLISH", channel, payload)


def _connect(port: int, timeout: float = 60.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _drain(sock: socket.socket, acc: bytearray) -> None:
    """Read whatever replies are ready, without blocking."""
    while select.select([sock], [], [], 0)[0]:
        data = sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the publisher connection")
        acc += data


def bulk(port: int, prefix: bytes, count: int, n: int, size: int) -> dict[str, Any]:
    """Publish ``n`` messages of ``size`` bytes round-robin over ``count`` channels."""
    payload = b"m" * size
    cmds = [publish_cmd(prefix + b"%d" % i, payload) for i in range(count)]
    t0 = time.perf_counter()
    replies = bytearray()
    with _connect(port) as sock:
        cycle = itertools.cycle(cmds)
        left = n
        while left > 0:
            k = min(CHUNK, left)
            sock.sendall(b"".join(itertools.islice(cycle, k)))
            left -= k
            _drain(sock, replies)
        while replies.count(b"\n") < n:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError("server closed the publisher connection")
            replies += data
    return {
        "sent": n,
        "zero": replies.count(b":0\r\n"),
        "secs": time.perf_counter() - t0,
    }


def paced(port: int, channel: bytes, rate: float, duration: float, size: int) -> dict[str, Any]:
    """Publish at ``rate`` msgs/s for ``duration`` s, each payload stamped with its send time.

    Messages due at the same wake-up are sent in one write with one stamp; at 10 k msgs/s and
    ~100 us sleeps that is usually 1-2 messages per write.
    """
    prefix = b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%s\r\n$%d\r\n" % (len(channel), channel, size)
    sent = 0
    replies = bytearray()
    with _connect(port) as sock:
        start = time.monotonic()
        end = start + duration
        while True:
            now = time.monotonic()
            if now >= end:
                break
            due = int((now - start) * rate) + 1 - sent
            if due > 0:
                cmd = prefix + stamped_payload(size) + b"\r\n"
                sock.sendall(cmd * due)
                sent += due
                _drain(sock, replies)
            wake = start + sent / rate
            delay = wake - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        deadline = time.monotonic() + 10
        while replies.count(b"\n") < sent and time.monotonic() < deadline:
            replies += sock.recv(1 << 20)
    return {"sent": sent, "zero": replies.count(b":0\r\n")}


def probe(
    conn: Connection, port: int, prefix: bytes, indices: list[int], interval: float, size: int
) -> dict[str, Any]:
    """Publish a stamped message every ``interval`` s until the pipe says stop; survive restarts."""
    names = itertools.cycle([prefix + b"%d" % i for i in indices])
    sent = reconnects = 0
    sock: socket.socket | None = None
    sink = bytearray()
    conn.send(("started", None))
    try:
        while not conn.poll(0):
            if sock is None:
                try:
                    sock = _connect(port, timeout=1.0)
                    reconnects += 1
                except OSError:
                    time.sleep(0.001)
                    continue
            try:
                sock.sendall(publish_cmd(next(names), stamped_payload(size)))
                sent += 1
                _drain(sock, sink)
                sink.clear()
            except OSError:
                sock.close()
                sock = None
                continue
            time.sleep(interval)
        conn.recv()
    finally:
        if sock is not None:
            sock.close()
    return {"sent": sent, "connects": reconnects}


def publisher_main(conn: Connection) -> None:
    """Process entry point: serve commands from the pipe until ``quit``."""
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        kind, args = msg[0], msg[1:]
        try:
            if kind == "quit":
                return
            if kind == "bulk":
                result = bulk(*args)
            elif kind == "paced":
                result = paced(*args)
            elif kind == "probe":
                result = probe(conn, *args)
            else:
                raise ValueError(f"unknown publisher command {kind!r}")
            conn.send(("ok", result))
        except Exception:
            conn.send(("error", traceback.format_exc()))
