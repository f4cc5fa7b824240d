"""RESP command encoding and the names of the Pub/Sub frames we read.

Parsing itself is hiredis's ``Reader``; RESP3 pushes arrive as ``hiredis.PushNotification``
(a ``list`` subclass) and RESP2 Pub/Sub frames as plain lists, so both normalise to
``[kind, *args]`` with ``kind`` one of the byte strings below.
"""

from __future__ import annotations

from .errors import InvalidArgument, InvalidArgumentType

# The three kinds of Pub/Sub names, used as indexes into per-kind tables.
CHANNEL = 0
PATTERN = 1
SHARD = 2
KINDS = (CHANNEL, PATTERN, SHARD)
KIND_NAMES = ("channel", "pattern", "shard channel")

SUBSCRIBE_COMMANDS = (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE")
UNSUBSCRIBE_COMMANDS = (b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"SUNSUBSCRIBE")

# Acknowledgement frames: kind name -> (name kind, is a subscribe).
ACKS: dict[bytes, tuple[int, bool]] = {
    b"subscribe": (CHANNEL, True),
    b"unsubscribe": (CHANNEL, False),
    b"psubscribe": (PATTERN, True),
    b"punsubscribe": (PATTERN, False),
    b"ssubscribe": (SHARD, True),
    b"sunsubscribe": (SHARD, False),
}
MESSAGE = b"message"
PMESSAGE = b"pmessage"
SMESSAGE = b"smessage"
PONG = b"pong"


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def encode_command(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    return b"*%d\r\n" % len(args) + b"".join([_bulk(a) for a in args])


def encode_names(command: bytes, names: list[bytes]) -> bytes:
    """``command name1 name2 ...`` as one RESP array."""
    parts = [b"*%d\r\n" % (len(names) + 1), _bulk(command)]
    parts += [b"$%d\r\n%b\r\n" % (len(n), n) for n in names]
    return b"".join(parts)


def encode_str(value: str, what: str) -> bytes:
    """``value`` as UTF-8; a string UTF-8 cannot encode (a lone surrogate) is InvalidArgument."""
    try:
        return value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgument(
            f"{what} cannot be encoded as UTF-8 ({exc.reason} at position {exc.start}); "
            "pass bytes for names that are not text"
        ) from None


def to_bytes(value: str | bytes, what: str) -> bytes:
    """Accept a ``str`` (encoded as UTF-8) or ``bytes``-like name; anything else is a TypeError."""
    if value.__class__ is bytes:
        return value
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return encode_str(value, what)
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    raise InvalidArgumentType(f"{what} must be str or bytes, not {type(value).__name__}")
