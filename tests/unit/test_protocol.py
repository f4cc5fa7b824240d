"""The wire protocol without sockets: frames parsed from raw RESP2/RESP3 bytes, classified once."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest
from hypothesis import given
from hypothesis import strategies as st

from redismpx._protocol import (
    ACK_OF,
    CHANNEL,
    ERROR,
    FRAME_TYPES,
    KINDS,
    MESSAGE,
    OTHER,
    PATTERN,
    PMESSAGE,
    PONG,
    PUSH,
    SHARD,
    SMESSAGE,
    SUBSCRIBED,
    UNSUBSCRIBED,
    classify,
    encode_command,
    encode_names,
    encode_pair,
)


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


def frame(resp: int, *parts: bytes | int) -> Any:
    """One frame as hiredis reads it: a RESP3 push or a RESP2 array of ``parts``."""
    head = b">" if resp == 3 else b"*"
    body = b"".join(b":%d\r\n" % p if isinstance(p, int) else bulk(p) for p in parts)
    return parse(head + b"%d\r\n" % len(parts) + body)


def parse(data: bytes) -> Any:
    reader = hiredis.Reader()
    reader.feed(data)
    out = reader.gets()
    assert out is not False and reader.gets() is False
    return out


@pytest.mark.parametrize("resp", [2, 3])
@pytest.mark.parametrize(
    ("parts", "expected"),
    [
        ((b"message", b"ch", b"data"), MESSAGE),
        ((b"pmessage", b"p*", b"ch", b"data"), PMESSAGE),
        ((b"smessage", b"ch", b"data"), SMESSAGE),
        ((b"subscribe", b"ch", 1), SUBSCRIBED + CHANNEL),
        ((b"psubscribe", b"p*", 1), SUBSCRIBED + PATTERN),
        ((b"ssubscribe", b"ch", 1), SUBSCRIBED + SHARD),
        ((b"unsubscribe", b"ch", 0), UNSUBSCRIBED + CHANNEL),
        ((b"punsubscribe", b"p*", 0), UNSUBSCRIBED + PATTERN),
        ((b"sunsubscribe", b"ch", 0), UNSUBSCRIBED + SHARD),
        ((b"pong", b""), PONG),
        ((b"invalidate", b"key"), PUSH),
        ((b"message", b"ch"), PUSH),  # too short to be a message
        ((b"pmessage", b"p*", b"ch"), PUSH),
        ((b"subscribe",), PUSH),
    ],
)
def test_classify_arrays_and_pushes_alike(
    resp: int, parts: tuple[bytes | int, ...], expected: int
) -> None:
    assert classify(frame(resp, *parts)) == expected


def test_classify_replies() -> None:
    assert classify(parse(b"-NOPERM no\r\n")) == ERROR
    assert classify(parse(b"+PONG\r\n")) == PONG  # RESP3 (and RESP2 outside Pub/Sub)
    assert classify(parse(b"+OK\r\n")) == OTHER
    assert classify(parse(b":1\r\n")) == OTHER
    assert classify(parse(b"*0\r\n")) == PUSH


def test_a_message_type_is_its_name_kind_and_acks_name_theirs() -> None:
    # The reader indexes the per-kind tables with a message's type directly.
    assert (MESSAGE, PMESSAGE, SMESSAGE) == KINDS
    for kind in KINDS:
        assert ACK_OF[kind] is None
        assert ACK_OF[SUBSCRIBED + kind] == (kind, True)
        assert ACK_OF[UNSUBSCRIBED + kind] == (kind, False)
    for t in (PONG, ERROR, PUSH, OTHER):
        assert ACK_OF[t] is None
    assert set(FRAME_TYPES.values()) == {*KINDS, *range(SUBSCRIBED, PONG + 1)}


def test_encoding() -> None:
    assert encode_command(b"PING") == b"*1\r\n$4\r\nPING\r\n"
    assert encode_names(b"SUBSCRIBE", [b"a", b"bc"]) == (
        b"*3\r\n$9\r\nSUBSCRIBE\r\n$1\r\na\r\n$2\r\nbc\r\n"
    )
    assert parse(encode_command(b"SELECT", b"2")) == [b"SELECT", b"2"]


@given(st.binary(max_size=64), st.binary(max_size=300), st.binary(max_size=300))
def test_encode_pair_is_encode_command_of_three(
    command: bytes, first: bytes, second: bytes
) -> None:
    # The publish path's one-format encoder must produce the very bytes of the general one.
    assert encode_pair(command, first, second) == encode_command(command, first, second)
    reader = hiredis.Reader()
    reader.feed(encode_pair(command, first, second))
    assert reader.gets() == [command, first, second]
