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


def _new_reader(decode: bool) -> Any:
    return hiredis.Reader(encoding="utf-8") if decode else hiredis.Reader()


# --------------------------------------------------------------------------------------------
# TLS
