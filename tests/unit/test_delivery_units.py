"""Pure-logic checks of delivery: name encoding, and the coalescing of buffered events."""

from __future__ import annotations

import asyncio

import pytest

from redismpx import ClusterMultiplexer, InvalidArgument, RedisMPXError
from redismpx._protocol import to_bytes

BAD_NAME = "a\udc80"  # a lone surrogate: UTF-8 cannot encode it
NOWHERE = "redis://127.0.0.1:1"  # never connected to: nothing here starts a connection


def test_to_bytes_refuses_text_utf8_cannot_encode() -> None:
    with pytest.raises(InvalidArgument, match="channel name cannot be encoded as UTF-8") as info:
        to_bytes(BAD_NAME, "channel name")
    assert isinstance(info.value, RedisMPXError)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert to_bytes("é", "x") == "é".encode()


def test_cluster_publish_refuses_unencodable_channel_and_data() -> None:
    cm = ClusterMultiplexer(NOWHERE)  # outside a loop: not started
    try:
        for channel, data in ((BAD_NAME, "x"), ("c", BAD_NAME)):
            with pytest.raises(InvalidArgument, match="UTF-8"):
                asyncio.run(cm.publish(channel, data))
    finally:
        cm.close()
