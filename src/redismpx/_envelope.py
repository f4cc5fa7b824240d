"""The wire format of publications with history, sans-I/O (docs/history.md).

A publication with history goes out twice, back to back, from one server-side script: the
payload alone on its channel (what every subscriber sees, in any language) and an
*envelope* on the channel's *envelope channel*, which only recovering subscriptions
subscribe to. Keeping the position out of the channel itself leaves the hot path of every
other subscription untouched and makes the envelope unambiguous: nothing but the script
publishes on a reserved name.

Names, for a channel ``C`` whose hash slot (:func:`~redismpx._hashslot.key_slot`) has the
tag ``T`` (:func:`slot_tag`):

* ``__redismpx:{T}:env:C``: the envelope channel;
* ``__redismpx:{T}:meta:C``: a hash, ``e`` the epoch and ``o`` the last offset given;
* ``__redismpx:{T}:log:C``: a stream, one entry ``<offset>-<tag>`` with field ``d`` (the
  payload) per publication kept; the tag is a random number the publisher chose.

The hash tag puts all three in ``C``'s slot on a cluster (the script's keys and its shard
channels must share one). An envelope is ``1:<epoch>:<offset>-<tag>:<payload>``: a version,
the history's epoch (hex), the entry's id (both parts decimal) and the payload's bytes,
unescaped.
"""

from __future__ import annotations

import itertools
from typing import Final

from ._hashslot import SLOTS, key_slot

#: Every reserved name starts with this; pattern subscriptions never see such a channel.
RESERVED: Final = b"__redismpx:{"
VERSION: Final = b"1"

_ALPHABET: Final = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_tags: list[bytes] | None = None


def slot_tag(slot: int) -> bytes:
    """The hash tag of ``slot``: the first string, shortest first and then in the order of
    ``0-9A-Za-z``, whose CRC16 lands in it (three characters at most cover every slot)."""
    global _tags
    tags = _tags
    if tags is None:
        found: list[bytes | None] = [None] * SLOTS
        for size in (1, 2, 3):
            for chars in itertools.product(_ALPHABET, repeat=size):
                tag = bytes(chars)
                i = key_slot(tag)
                if found[i] is None:
                    found[i] = tag
        assert None not in found
        tags = _tags = [t for t in found if t is not None]
    return tags[slot]


def _prefix(channel: bytes) -> bytes:
    return RESERVED + slot_tag(key_slot(channel)) + b"}:"


def envelope_channel(channel: bytes) -> bytes:
    """The channel the envelopes of ``channel`` are published on."""
    return _prefix(channel) + b"env:" + channel


def history_keys(channel: bytes) -> tuple[bytes, bytes]:
    """``(meta, log)``: the keys of ``channel``'s history (see the module docstring)."""
    prefix = _prefix(channel)
    return prefix + b"meta:" + channel, prefix + b"log:" + channel


def encode(epoch: bytes, offset: int, tag: bytes, payload: bytes) -> bytes:
    """An envelope (the script builds the same bytes; this is for tests and the docs)."""
    return b"%s:%s:%d-%s:%s" % (VERSION, epoch, offset, tag, payload)


def parse(data: bytes) -> tuple[bytes, int, bytes, bytes] | None:
    """``(epoch, offset, tag, payload)`` of an envelope; None if it is not one we can read (a
    later version, or garbage: published on a reserved name by something else)."""
    parts = data.split(b":", 3)
    if len(parts) != 4 or parts[0] != VERSION:
        return None
    offset, _, tag = parts[2].partition(b"-")
    if not offset.isdigit() or not tag.isdigit():
        return None
    return parts[1], int(offset), tag, parts[3]
