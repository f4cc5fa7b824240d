"""RESP encoding and reply checks for the helpers' one-off commands."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hiredis

from redismpx.errors import ServerError

Arg = str | bytes | int | float


def _encode(args: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("bool is not a valid command argument")
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"invalid command argument {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _command_name(args: Sequence[Arg]) -> str:
    first = args[0]
    name = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
    return name.upper()


def _check(reply: Any, args: Sequence[Arg]) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        raise ServerError(str(reply), _command_name(args))
    return reply


class ReplyCollector:
    """Collects ``count`` replies from what a socket reads (sans-I/O: the sync and async
    helpers feed it alike). ``feed(b"")`` means the server closed: it raises EOFError."""

    def __init__(self, count: int, decode: bool = False) -> None:
        self._reader = hiredis.Reader(encoding="utf-8") if decode else hiredis.Reader()
        self._count = count
        self.replies: list[Any] = []

    def feed(self, data: bytes) -> bool:
        """Parse ``data``; True once every expected reply has arrived."""
        if not data:
            raise EOFError("the server closed the connection")
        self._reader.feed(data)
        replies = self.replies
        while len(replies) < self._count and (reply := self._reader.gets()) is not False:
            replies.append(reply)
        return len(replies) >= self._count
