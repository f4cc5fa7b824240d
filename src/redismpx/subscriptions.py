"""``ChannelSubscription`` and ``PatternSubscription``: the user's handles on the multiplexer.

Both are created by a multiplexer's factories, never directly, and share their delivery
(:class:`~redismpx._buffered.BufferedSubscriber`): inline while every callback is a plain
function, queued in a bounded buffer once any is async. The reader never awaits user code (R1,
B34-B36 in docs/spec.md); the user's view is the delivery model, docs/delivery.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ._activation import Subscribing
from ._buffer import MISSED
from ._buffered import BufferedSubscriber, delivery_options
from ._decoding import AnyOnActivation, AnyOnMessage, decode_name
from ._protocol import CHANNEL, PATTERN, SHARD, to_bytes
from ._recovering import RecoveryTap
from ._subscriber import Host, check_callback
from .errors import InvalidArgument, InvalidArgumentType
from .history import Gap, GapReason, Position, check_position
from .typedefs import OnDisconnect, OnDrop, OnGap, OverflowPolicy

MAX_NAME_BYTES = 1 << 20
SMALL_SET = 4  # names held in a tuple up to this many (copied on change), in a dict beyond


def check_name(value: str | bytes, what: str) -> bytes:
    name = to_bytes(value, what)
    if 0 < len(name) <= MAX_NAME_BYTES:
        return name
    if not name:
        raise InvalidArgument(f"{what} must not be empty")
    raise InvalidArgument(f"{what} is {len(name)} bytes long; the limit is {MAX_NAME_BYTES}")


# A subscription's set of names, sized to its count (most hold one to three): nothing, the one
# name itself, a tuple up to SMALL_SET, a dict beyond (O(1) membership).
Names = bytes | tuple[bytes, ...] | dict[bytes, None] | None


# One name is kept as the bytes itself and compared with ``==`` (``in`` would test for a
# substring); ``add`` and ``remove`` handle no name and one name inline (hot during churn).


def _names_add(held: tuple[bytes, ...] | dict[bytes, None], name: bytes) -> Names:
    """``held`` (two names or more) with ``name``, which it does not hold."""
    if isinstance(held, tuple):
        return (*held, name) if len(held) < SMALL_SET else dict.fromkeys((*held, name))
    held[name] = None
    return held


def _names_remove(held: tuple[bytes, ...] | dict[bytes, None], name: bytes) -> Names:
    """``held`` (two names or more) without ``name``, which it holds."""
    if isinstance(held, tuple):
        i = held.index(name)
        rest = held[:i] + held[i + 1 :]
        return rest[0] if len(rest) == 1 else rest
    if isinstance(held, dict):
        del held[name]
        return held or None
    return None


def _escaped(name: str | bytes) -> str | bytes:
    """A ``str`` with surrogate escapes (PEP 383, as ``decode_names`` hands them out) as its
    bytes; anything else unchanged, for ``check_name`` to accept or refuse."""
    if isinstance(name, str):
        try:
            return name.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            pass
    return name


def _names_all(held: Names) -> tuple[bytes, ...]:
    if held is None:
        return ()
    if isinstance(held, bytes):
        return (held,)
    return tuple(held)


class ChannelSubscription(BufferedSubscriber):
    """A set of channels whose messages reach ``on_message(channel, payload)``.

    Names reach the callbacks as ``bytes``, or as ``str`` when the subscription was made with
    ``decode_names=True`` (see :func:`~redismpx.Multiplexer.new_channel_subscription`).

    ``add``/``remove`` return at once; Redis is told in one coalesced command per event-loop
    turn, and only when the first subscription in the process wants a channel or the last
    one leaves it (reference counting). ``on_activation(channel)`` fires once Redis has
    confirmed the channel (and again after each reconnect). With ``sharded=True`` the names
    are shard channels (``SSUBSCRIBE``; publish them with ``SPUBLISH``).

    With ``recover=True`` it recovers what it missed from the channels' history after an
    outage (see docs/history.md): ``on_activation(channel)`` then means "caught up, live
    from now on", and ``on_gap(gap)`` says when the history no longer covered an outage.
    """

    __slots__ = ("_channels", "_kind", "_tap")

    _filters_names = True

    def __init__(
        self,
        host: Host,
        on_message: AnyOnMessage | None,  # None: an iterator, its own consumer
        on_disconnect: OnDisconnect | None = None,
        on_activation: AnyOnActivation | None = None,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        on_drop: OnDrop | None = None,
        eager: bool = False,
        sharded: bool = False,
        queued: bool = False,
        decode_names: bool = False,
        recover: bool = False,
        on_gap: OnGap | None = None,
    ) -> None:
        if not queued:  # an iterator (queued) is its own consumer
            check_callback("on_message", on_message, optional=False)
        if recover is not True and recover is not False:
            raise InvalidArgumentType(
                f"recover must be True or False, not {type(recover).__name__}"
            )
        check_callback("on_gap", on_gap, optional=True)
        if on_gap is not None and not recover:
            raise InvalidArgument("on_gap needs recover=True")
        self._kind = SHARD if sharded else CHANNEL
        self._channels: Names = None
        opts = delivery_options(max_buffer, overflow, on_drop, decode_names, eager)
        # A recovering subscription's names go through its tap (the link's listener).
        self._tap = RecoveryTap(self, host, self._kind, on_gap) if recover else None
        super().__init__(host, on_message, on_disconnect, on_activation, opts, queued)
        host.register(self)

    @property
    def channels(self) -> frozenset[bytes]:
        """The channels this subscription holds (as bytes)."""
        return frozenset(_names_all(self._channels))

    def add(
        self,
        *channels: str | bytes,
        since: Position | Mapping[str | bytes, Position] | None = None,
    ) -> Subscribing:
        """Add channels (``str`` is encoded as UTF-8). Adding one already held does nothing.

        Returns at once; Redis is told at the end of the event-loop turn. ``await
        sub.add(...)`` also waits until Redis confirmed each channel (then what is published
        from now on arrives): see :class:`~redismpx.Subscribing`.

        ``since`` (``recover=True`` only): the position to continue from, for every channel
        given or per channel (a mapping): what was published after it is delivered first.
        A recovering channel is awaited until it has caught up.
        """
        host = self._host
        self._check_open()  # (in a new event loop, host.add closes the old loop's subs: raises)
        names = [check_name(c, "channel name") for c in channels]  # validate all first
        positions = None if since is None else self._positions(names, since)
        new: list[bytes] = []
        for name in names:
            # The common sizes (no name, one name) handled inline: add is hot during churn.
            held = self._channels
            if held is None:
                self._channels = name if name.__class__ is bytes else bytes(name)  # see _holds
            elif isinstance(held, bytes):
                if held == name:
                    continue
                self._channels = (held, name)
            elif name in held:  # a tuple or a dict here
                continue
            else:
                self._channels = _names_add(held, name)
            new.append(name)
        if new:
            if self._tap is not None:
                self._tap.add(new, positions or {})
            else:
                host.add(self._kind, new, self)
        return Subscribing(self, names)

    def _positions(
        self, names: list[bytes], since: Position | Mapping[str | bytes, Position]
    ) -> dict[bytes, Position]:
        if self._tap is None:
            raise InvalidArgument("since= needs a subscription made with recover=True")
        if isinstance(since, Position):
            return dict.fromkeys(names, check_position(since))
        if not isinstance(since, Mapping):
            raise InvalidArgumentType(
                f"since must be a Position or a mapping of them, not {type(since).__name__}"
            )
        return {
            check_name(_escaped(k), "channel name"): check_position(v, f"since[{k!r}]")
            for k, v in since.items()
        }

    def position(self, channel: str | bytes) -> Position | None:
        """Where a recovering subscription stands on ``channel``: the position of the last
        message delivered (or the one it started from); None without one yet, or for a
        channel it does not hold, or without ``recover=True``."""
        if self._tap is None:
            return None
        return self._tap.position(check_name(_escaped(channel), "channel name"))

    def __contains__(self, channel: object) -> bool:
        """``channel in sub``: whether it holds ``channel`` (``str`` or bytes-like)."""
        if isinstance(channel, str):
            try:
                channel = channel.encode(errors="surrogateescape")
            except UnicodeEncodeError:  # a surrogate that is no escaped byte: no name is that
                return False
        elif isinstance(channel, bytearray | memoryview):
            channel = bytes(channel)  # add() accepts them too
        return isinstance(channel, bytes) and self._holds(channel)

    def remove(self, *channels: str | bytes) -> None:
        """Remove channels; a channel not held is ignored. Delivery stops when this returns.

        A ``str`` handed over by ``decode_names=True`` is accepted as it is, surrogate escapes
        included (they stand for the name's bytes that are not UTF-8).
        """
        self._check_open()
        names = [check_name(_escaped(c), "channel name") for c in channels]
        gone: list[bytes] = []
        for name in names:
            held = self._channels
            if held is None:
                break
            if isinstance(held, bytes):  # one name, inline: remove is hot during churn
                if held != name:
                    continue
                self._channels = None
            elif name in held:  # a tuple or a dict here
                self._channels = _names_remove(held, name)
            else:
                continue
            gone.append(name)
        if gone:
            self._let_go(gone)
            for name in gone:
                self._forget_name(name)

    def clear(self) -> None:
        """Remove every channel."""
        self._check_open()
        self._detach()

    def _detach(self) -> None:
        super()._detach()
        self._channels = None

    def _let_go(self, names: Sequence[bytes]) -> None:
        if self._tap is not None:
            self._tap.remove(names)
        else:
            self._host.remove(self._kind, names, self)

    def _delivery_changed(self) -> None:
        if self._tap is not None:
            self._tap.delivery_changed()  # its tracks are the link's listeners, not us
        else:
            super()._delivery_changed()

    def _phase(self, name: bytes) -> bool | None:
        if self._tap is not None:
            return self._tap.phase(name)  # a recovering channel is active once caught up
        return self._host.phase(self._kind, name)

    # A recovering channel's history did not cover an outage (from the tap).
    def notify_gap(self, channel: bytes, reason: GapReason, since: Position | None) -> None:
        if self._end is not None or not self._holds(channel):
            return
        gap: Gap[str] | Gap[bytes]
        if self._opts.decode_names:
            gap = Gap(decode_name(channel), reason, since)
        else:
            gap = Gap(channel, reason, since)
        q = self._queue
        if q is not None:
            self._consumer().push(MISSED, gap)
            q.kick()
        else:
            fn = self._on_gap()
            if fn is not None:
                self._call("on_gap", fn, gap)

    def _on_gap(self) -> Callable[[Any], Any] | None:
        return None if self._tap is None else self._tap.on_gap

    def _held(self) -> tuple[bytes, ...]:
        return _names_all(self._channels)

    def _holds(self, name: bytes) -> bool:
        # Inline: the worker asks it per message (B17); one name is compared with ``==``.
        held = self._channels
        if held.__class__ is bytes:
            return held == name
        return held is not None and name in held

    def _label(self) -> str:
        n = len(self._held())
        return f"ChannelSubscription@{id(self):#x}[{n} channel{'s' if n != 1 else ''}]"


class PatternSubscription(BufferedSubscriber):
    """One glob-style pattern; ``on_message`` receives the *actual* channel and the payload."""

    __slots__ = ("pattern",)

    _kind = PATTERN

    def __init__(
        self,
        host: Host,
        pattern: str | bytes,
        on_message: AnyOnMessage | None,  # None: a PatternIterator
        on_disconnect: OnDisconnect | None = None,
        on_activation: AnyOnActivation | None = None,
        *,
        on_drop: OnDrop | None = None,
        eager: bool = False,
        max_buffer: int,
        overflow: OverflowPolicy,
        queued: bool = False,
        decode_names: bool = False,
    ) -> None:
        if not queued:
            check_callback("on_message", on_message, optional=False)
        self.pattern: bytes = check_name(pattern, "pattern")
        """The glob-style pattern, as bytes."""
        opts = delivery_options(max_buffer, overflow, on_drop, decode_names, eager)
        super().__init__(host, on_message, on_disconnect, on_activation, opts, queued)
        host.register(self)
        host.add(PATTERN, (self.pattern,), self)

    def _held(self) -> tuple[bytes, ...]:
        return (self.pattern,)

    def _label(self) -> str:
        return f"PatternSubscription@{id(self):#x}[{self.pattern!r}]"
