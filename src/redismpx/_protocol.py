"""The Pub/Sub wire protocol, sans-I/O: command encoding, the kinds of names and of frames.

Parsing itself is hiredis's ``Reader``; RESP3 pushes arrive as ``hiredis.PushNotification``
(a ``list`` subclass) and RESP2 Pub/Sub frames as plain lists, so both are read as
``[type, *args]``. :func:`classify` says once what a frame is; the reader's hot loop
(:class:`~redismpx._reader.PubSubReader`) uses the same table, ``FRAME_TYPES``.
"""

from __future__ import annotations

from typing import Any, Final

import hiredis

from .errors import InvalidArgument, InvalidArgumentType

# The three kinds of Pub/Sub names, used as indexes into per-kind tables.
CHANNEL: Final = 0
PATTERN: Final = 1
SHARD: Final = 2
KINDS: Final = (CHANNEL, PATTERN, SHARD)
KIND_NAMES: Final = ("channel", "pattern", "shard channel")

SUBSCRIBE_COMMANDS: Final = (b"SUBSCRIBE", b"PSUBSCRIBE", b"SSUBSCRIBE")
UNSUBSCRIBE_COMMANDS: Final = (b"UNSUBSCRIBE", b"PUNSUBSCRIBE", b"SUNSUBSCRIBE")

# What a frame is (the answer of ``classify``). A message's type is its name kind, so the
# hot loop indexes the per-kind tables with it directly; an acknowledgement's kind and
# direction are ``ACK_OF[type]``.
MESSAGE: Final = CHANNEL  # [message, channel, payload]
PMESSAGE: Final = PATTERN  # [pmessage, pattern, channel, payload]
SMESSAGE: Final = SHARD  # [smessage, channel, payload]
SUBSCRIBED: Final = 3  # [subscribe, name, count], and psubscribe / ssubscribe: +kind
UNSUBSCRIBED: Final = 6  # [unsubscribe, name, count], and punsubscribe / sunsubscribe: +kind
PONG: Final = 9  # RESP2 [pong, ""] in Pub/Sub mode, or the simple string PONG
ERROR: Final = 10  # an error reply (hiredis.ReplyError)
PUSH: Final = 11  # an array or push of a type we do not know (RESP3 invalidate, say)
OTHER: Final = 12  # anything else: a reply no command of ours asks for

FRAME_TYPES: Final[dict[bytes, int]] = {
    b"message": MESSAGE,
    b"pmessage": PMESSAGE,
    b"smessage": SMESSAGE,
    b"subscribe": SUBSCRIBED + CHANNEL,
    b"psubscribe": SUBSCRIBED + PATTERN,
    b"ssubscribe": SUBSCRIBED + SHARD,
    b"unsubscribe": UNSUBSCRIBED + CHANNEL,
    b"punsubscribe": UNSUBSCRIBED + PATTERN,
    b"sunsubscribe": UNSUBSCRIBED + SHARD,
    b"pong": PONG,
}
# Acknowledgement frame type -> (name kind, is a subscribe); None for other types.
ACK_OF: Final[tuple[tuple[int, bool] | None, ...]] = (
    *(None for _ in KINDS),
    *((kind, True) for kind in KINDS),
    *((kind, False) for kind in KINDS),
    None,
    None,
    None,
    None,
)
# Where a message frame holds (subscribed name, channel, payload), by message type.
MESSAGE_FIELDS: Final = ((1, 1, 2), (1, 2, 3), (1, 1, 2))


def classify(frame: Any) -> int:
    """What ``frame`` (as hiredis returns it) is: one of the frame types above.

    RESP2 arrays and RESP3 pushes are read alike, by their first element. An array too
    short for its type is ``PUSH`` (not ours to read).
    """
    if isinstance(frame, list):
        if not frame:
            return PUSH
        kind = FRAME_TYPES.get(frame[0], PUSH)
        if kind < SUBSCRIBED:
            return kind if len(frame) > MESSAGE_FIELDS[kind][2] else PUSH
        if kind < PONG and len(frame) < 2:
            return PUSH
        return kind
    if isinstance(frame, hiredis.ReplyError):
        return ERROR
    if frame == b"PONG":
        return PONG
    return OTHER


def _bulk(arg: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(arg), arg)


def encode_command(*args: bytes) -> bytes:
    """One RESP command (an array of bulk strings)."""
    return encode_names(args[0], list(args[1:]))


def encode_pair(command: bytes, first: bytes, second: bytes) -> bytes:
    """``command first second`` (``PUBLISH channel data``) as one RESP array, in one format:
    a fifth of :func:`encode_command`'s cost on the publish path."""
    return b"*3\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(command),
        command,
        len(first),
        first,
        len(second),
        second,
    )


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
