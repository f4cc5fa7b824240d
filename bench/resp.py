"""RESP encoding and two tiny admin clients (blocking and asyncio) used to read server counts.

The admin connection is separate from every contender's subscriber connection. It asks the
server ``INFO stats`` for ``pubsub_channels`` / ``pubsub_patterns``: what Redis itself has
confirmed, the same for every contender.
"""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import hiredis


def encode(*args: bytes | str | int) -> bytes:
    """One RESP2 command as bytes."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(out)


def encode_chunked(command: bytes, names: list[bytes], chunk: int = 1000) -> bytes:
    """``command`` with up to ``chunk`` names per command, all commands pipelined."""
    return b"".join(encode(command, *names[i : i + chunk]) for i in range(0, len(names), chunk))


def parse_pubsub_counts(info: bytes) -> tuple[int, int]:
    """(pubsub_channels, pubsub_patterns) from an ``INFO stats`` reply."""
    channels = patterns = -1
    for line in info.split(b"\r\n"):
        if line.startswith(b"pubsub_channels:"):
            channels = int(line.split(b":", 1)[1])
        elif line.startswith(b"pubsub_patterns:"):
            patterns = int(line.split(b":", 1)[1])
    return channels, patterns


class Admin:
    """Blocking admin client (orchestrator side)."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = hiredis.Reader()

    def command(self, *args: bytes | str | int) -> Any:
        self.sock.sendall(encode(*args))
        while True:
            reply = self.reader.gets()
            if reply is not False:
                return reply
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("admin connection closed")
            self.reader.feed(data)

    def counts(self) -> tuple[int, int]:
        return parse_pubsub_counts(self.command("INFO", "stats"))

    def wait_counts(
        self, channels: int | None, patterns: int | None = None, timeout: float = 30.0
    ) -> float:
        """Poll until the server reports these counts; returns the monotonic time it did."""
        deadline = time.monotonic() + timeout
        while True:
            c, p = self.counts()
            if (channels is None or c == channels) and (patterns is None or p == patterns):
                return time.monotonic()
            if time.monotonic() > deadline:
                raise TimeoutError(f"server counts {c}/{p}, wanted {channels}/{patterns}")
            time.sleep(0.002)

    def close(self) -> None:
        self.sock.close()


class AsyncAdmin:
    """asyncio admin client (subscriber-process side, for S5/S6 server confirmations)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader = hiredis.Reader()
        self._r: asyncio.StreamReader | None = None
        self._w: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        self._r, self._w = await asyncio.open_connection("127.0.0.1", self.port)

    async def command(self, *args: bytes | str | int) -> Any:
        assert self._r is not None and self._w is not None
        self._w.write(encode(*args))
        while True:
            reply = self.reader.gets()
            if reply is not False:
                return reply
            data = await self._r.read(65536)
            if not data:
                raise ConnectionError("admin connection closed")
            self.reader.feed(data)

    async def counts(self) -> tuple[int, int]:
        return parse_pubsub_counts(await self.command("INFO", "stats"))

    async def wait_counts(
        self,
        channels: int | None,
        patterns: int | None = None,
        timeout: float = 30.0,
        interval: float = 0.001,
    ) -> None:
        """Poll (every ``interval`` s) until the server reports these counts."""
        async with asyncio.timeout(timeout):
            while True:
                c, p = await self.counts()
                if (channels is None or c == channels) and (patterns is None or p == patterns):
                    return
                await asyncio.sleep(interval)

    async def close(self) -> None:
        if self._w is not None:
            self._w.close()
            try:
                await self._w.wait_closed()
            except OSError:
                pass
