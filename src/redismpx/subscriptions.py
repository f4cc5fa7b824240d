"""``ChannelSubscription`` and ``PatternSubscription``: the user's handles on the multiplexer.

Both are created by a multiplexer's factories, never directly. Delivery (inline or queued,
the bounded buffer and its overflow policy) is described in :mod:`redismpx._delivery`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._delivery import OnActivation, OnDisconnect, OnDrop, OnMessage, OverflowPolicy, Subscriber
from ._protocol import CHANNEL, PATTERN, SHARD, to_bytes
from .errors import InvalidArgument

if TYPE_CHECKING:
    from .multiplexer import Multiplexer

MAX_NAME_BYTES = 1 << 20
SMALL_SET = 16  # far above any sane channel name; guards against mistakes


def check_name(value: str | bytes, what: str) -> bytes:
    name = to_bytes(value, what)
    if 0 < len(name) <= MAX_NAME_BYTES:
        return name
    if not name:
        raise InvalidArgument(f"{what} must not be empty")
    if len(name) > MAX_NAME_BYTES:
        raise InvalidArgument(f"{what} is {len(name)} bytes long; the limit is {MAX_NAME_BYTES}")
    return name


class ChannelSubscription(Subscriber):
    """A set of channels whose messages reach ``on_message(channel, payload)``.

    ``add``/``remove`` return at once; Redis is told in one coalesced command per event-loop
    turn, and only when the first subscription in the process wants a channel or the last
    one leaves it (reference counting). ``on_activation(channel)`` fires once Redis has
    confirmed the channel (and again after each reconnect). With ``sharded=True`` the names
    are shard channels (``SSUBSCRIBE``; publish them with ``SPUBLISH``).
    """

    __slots__ = ("_channels", "_kind")

    def __init__(
        self,
        mpx: Multiplexer,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None = None,
        sharded: bool = False,
        queued: bool = False,
    ) -> None:
        from ._delivery import check_callback

        if not queued:
            check_callback("on_message", on_message, optional=False)
        self._kind = SHARD if sharded else CHANNEL
        # A list while small (a few channels per WebSocket client is the common case, and a
        # list costs a third of a dict), a dict once it grows past SMALL_SET.
        self._channels: list[bytes] | dict[bytes, None] = []
        super().__init__(
            mpx,
            on_message,
            on_disconnect,
            on_activation,
            max_buffer=max_buffer,
            overflow=overflow,
            on_drop=on_drop,
            queued=queued,
        )

    @property
    def channels(self) -> frozenset[bytes]:
        """The channels this subscription holds (as bytes)."""
        return frozenset(self._channels)

    def add(self, *channels: str | bytes) -> None:
        """Add channels (``str`` is encoded as UTF-8). Adding one already held does nothing."""
        mpx, kind, held = self._mpx, self._kind, self._channels
        mpx._maybe_start()  # first, since in a new event loop it closes the old loop's subs
        self._check_open()
        names = [check_name(c, "channel name") for c in channels]  # validate all first
        for name in names:
            if name in held:
                continue
            if held.__class__ is dict:
                held[name] = None
            elif len(held) < SMALL_SET:
                held.append(name)  # type: ignore[union-attr]
            else:
                self._channels = held = dict.fromkeys(held)
                held[name] = None
            mpx._add(kind, name, self)

    def remove(self, *channels: str | bytes) -> None:
        """Remove channels; a channel not held is ignored. Delivery stops when this returns."""
        self._check_open()
        names = [check_name(c, "channel name") for c in channels]
        mpx, kind, held = self._mpx, self._kind, self._channels
        for name in names:
            if name in held:
                if held.__class__ is dict:
                    del held[name]
                else:
                    held.remove(name)  # type: ignore[union-attr]
                mpx._remove(kind, name, self)
                self._forget_name(name)

    def clear(self) -> None:
        """Remove every channel."""
        self._check_open()
        self._detach()

    def _detach(self) -> None:
        mpx, kind = self._mpx, self._kind
        names, self._channels = self._channels, []
        for name in names:
            mpx._remove(kind, name, self)

    def _refresh_registrations(self) -> None:
        for name in self._channels:
            self._mpx._refresh(self._kind, name)

    def _wants(self, channel: bytes) -> bool:
        return channel in self._channels

    def _activated(self, name: bytes) -> None:
        if name in self._channels:
            super()._activated(name)

    def _label(self) -> str:
        n = len(self._channels)
        return f"ChannelSubscription@{id(self):#x}[{n} channel{'s' if n != 1 else ''}]"


class PatternSubscription(Subscriber):
    """One glob-style pattern; ``on_message`` receives the *actual* channel and the payload."""

    __slots__ = ("pattern",)

    def __init__(
        self,
        mpx: Multiplexer,
        pattern: str | bytes,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None = None,
        queued: bool = False,
    ) -> None:
        from ._delivery import check_callback

        if not queued:
            check_callback("on_message", on_message, optional=False)
        self.pattern: bytes = check_name(pattern, "pattern")
        """The glob-style pattern, as bytes."""
        super().__init__(
            mpx,
            on_message,
            on_disconnect,
            on_activation,
            max_buffer=max_buffer,
            overflow=overflow,
            on_drop=on_drop,
            queued=queued,
        )

    def _attach(self) -> None:
        self._mpx._add(PATTERN, self.pattern, self)

    def _detach(self) -> None:
        self._mpx._remove(PATTERN, self.pattern, self)

    def _refresh_registrations(self) -> None:
        self._mpx._refresh(PATTERN, self.pattern)

    def _label(self) -> str:
        return f"PatternSubscription@{id(self):#x}[{self.pattern!r}]"
