"""Redis Cluster hash slots, sans-I/O: which of the 16,384 slots a name belongs to.

Core, not :mod:`redismpx.cluster`'s: a history's keys and envelope channel must share their
channel's slot on any topology (see :mod:`redismpx._envelope`).
"""

from __future__ import annotations

from binascii import crc_hqx
from typing import Final

SLOTS: Final = 16384


def key_slot(name: bytes) -> int:
    """The hash slot of ``name``: CRC16 (XMODEM) mod 16384 of its hash tag if it has one.

    The tag is the part between the first ``{`` and the next ``}``, when not empty.
    """
    start = name.find(b"{")
    if start != -1:
        end = name.find(b"}", start + 1)
        if end > start + 1:
            name = name[start + 1 : end]
    # binascii.crc_hqx is CRC-CCITT with the given initial value: with 0 it is XMODEM.
    return crc_hqx(name, 0) % SLOTS
