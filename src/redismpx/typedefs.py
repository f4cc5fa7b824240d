"""The types in the public signatures: callbacks and the overflow policy."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

OnMessage = Callable[[bytes, bytes], "Awaitable[Any] | Any"]
"""``on_message(channel, payload)``: a plain function, or one returning an awaitable."""

OnDisconnect = Callable[[BaseException], "Awaitable[Any] | Any"]
"""``on_disconnect(error)``: an outage (or a refusal, or a close by the library) reached it."""

OnActivation = Callable[[bytes], "Awaitable[Any] | Any"]
"""``on_activation(name)``: Redis confirmed ``name``; messages published from now on arrive."""

OnDrop = Callable[[int], "Awaitable[Any] | Any"]
"""``on_drop(count)``: the overflow policy dropped ``count`` messages."""

OverflowPolicy = Literal["drop_oldest", "drop_newest", "close", "latest_per_channel"]
"""What a full buffer does with the next message (see the delivery model)."""

OVERFLOW_POLICIES: Final = ("drop_oldest", "drop_newest", "close", "latest_per_channel")
DEFAULT_MAX_BUFFER: Final = 1000
"""Pending messages per queued subscription, unless the multiplexer says otherwise."""
