"""The subscription factories of every multiplexer: ``new_*_subscription``, ``subscribe`` and
``psubscribe`` (with their typing overloads: ``decode_names`` changes the name type).

A base class of :class:`~redismpx.Multiplexer` (hence of :class:`~redismpx.ClusterMultiplexer`),
apart so that the facade's own module (lifecycle, publishing, history, stats) reads in one
sitting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Unpack, overload

from ._buffered import BufferKeywords, DeliveryKeywords
from ._hub import Hub
from .errors import SubscriptionClosed
from .history import Position
from .iterators import ChannelIterator, PatternIterator
from .promises import PromiseSubscription
from .subscriptions import ChannelSubscription, PatternSubscription
from .typedefs import (
    OnActivation,
    OnAnyActivation,
    OnAnyMessage,
    OnDisconnect,
    OnGap,
    OnMessage,
    OnTextActivation,
    OnTextMessage,
    OverflowPolicy,
)


class SubscriptionFactories:
    """What makes subscriptions on a multiplexer (see the module docstring)."""

    _hub: Hub

    def _check_open(self) -> None:
        if self._hub.closed:
            raise SubscriptionClosed("the multiplexer is closed")

    # -- subscription factories --------------------------------------------------------------

    def _delivery(
        self, max_buffer: int | None = None, overflow: OverflowPolicy | None = None, **extra: Any
    ) -> dict[str, Any]:
        # A subscription's delivery settings, the multiplexer's where not given. A misspelt
        # keyword reaches the subscription's constructor: a TypeError, as for any call.
        tuning = self._hub.tuning
        return {
            "max_buffer": tuning.max_buffer if max_buffer is None else max_buffer,
            "overflow": tuning.overflow if overflow is None else overflow,
            **extra,
        }

    @overload
    def new_channel_subscription(
        self,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        sharded: bool | None = None,
        decode_names: Literal[False] = False,
        recover: bool = False,
        on_gap: OnGap | None = None,
        **delivery: Unpack[DeliveryKeywords],
    ) -> ChannelSubscription: ...

    @overload
    def new_channel_subscription(
        self,
        on_message: OnTextMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnTextActivation | None = None,
        *,
        sharded: bool | None = None,
        decode_names: Literal[True],
        recover: bool = False,
        on_gap: OnGap | None = None,
        **delivery: Unpack[DeliveryKeywords],
    ) -> ChannelSubscription: ...

    @overload
    def new_channel_subscription(
        self,
        on_message: OnAnyMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnAnyActivation | None = None,
        *,
        sharded: bool | None = None,
        decode_names: bool,
        recover: bool = False,
        on_gap: OnGap | None = None,
        **delivery: Unpack[DeliveryKeywords],
    ) -> ChannelSubscription: ...

    def new_channel_subscription(
        self,
        on_message: OnMessage | OnTextMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | OnTextActivation | None = None,
        *,
        sharded: bool | None = None,
        decode_names: bool = False,
        recover: bool = False,
        on_gap: OnGap | None = None,
        **delivery: Unpack[DeliveryKeywords],
    ) -> ChannelSubscription:
        """A subscription to a set of channels managed with ``add``/``remove``.

        ``sharded``: shard channels (``SSUBSCRIBE``, published with ``SPUBLISH``) rather than
        classic ones. The default is classic channels here and shard channels on a
        :class:`~redismpx.ClusterMultiplexer` (where classic channels live on one home node,
        fed by the cluster-wide broadcast of ``PUBLISH``).

        ``decode_names=True``: ``on_message`` and ``on_activation`` receive channel names as
        ``str`` (UTF-8; bytes that are not UTF-8 as surrogate escapes) instead of ``bytes``.
        Payloads stay ``bytes``.

        ``eager=True`` (for an async ``on_message``): when the subscription has nothing
        pending, the reader starts the callback at once and runs it to its first real wait,
        instead of waking the worker task for it; the order of the callbacks is the same. It
        saves a task switch per message (about a third of the work of sending one WebSocket
        frame per message), and puts the callback's code up to that wait on the reader, like
        a plain callback's. See docs/delivery.md.

        ``recover=True``: after an outage, deliver first what was missed from each channel's
        history (kept by ``publish(..., history_size=N)``), then the live messages, with no
        duplicate and no gap; ``on_gap(gap)`` hears (once per channel and outage) when the
        history no longer covered it. See :meth:`ChannelSubscription.add` (``since=``) and
        docs/history.md.
        """
        self._check_open()
        if sharded is None:
            sharded = self._hub.router.shard_by_default
        return ChannelSubscription(
            self._hub,
            on_message,
            on_disconnect,
            on_activation,
            sharded=sharded,
            decode_names=decode_names,
            recover=recover,
            on_gap=on_gap,
            **self._delivery(**delivery),
        )

    @overload
    def new_pattern_subscription(
        self,
        pattern: str | bytes,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        decode_names: Literal[False] = False,
        **delivery: Unpack[DeliveryKeywords],
    ) -> PatternSubscription: ...

    @overload
    def new_pattern_subscription(
        self,
        pattern: str | bytes,
        on_message: OnTextMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnTextActivation | None = None,
        *,
        decode_names: Literal[True],
        **delivery: Unpack[DeliveryKeywords],
    ) -> PatternSubscription: ...

    @overload
    def new_pattern_subscription(
        self,
        pattern: str | bytes,
        on_message: OnAnyMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnAnyActivation | None = None,
        *,
        decode_names: bool,
        **delivery: Unpack[DeliveryKeywords],
    ) -> PatternSubscription: ...

    def new_pattern_subscription(
        self,
        pattern: str | bytes,
        on_message: OnMessage | OnTextMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | OnTextActivation | None = None,
        *,
        decode_names: bool = False,
        **delivery: Unpack[DeliveryKeywords],
    ) -> PatternSubscription:
        """A subscription to one glob-style pattern (``PSUBSCRIBE``).

        ``decode_names=True``: channel names (and the pattern given to ``on_activation``)
        arrive as ``str``, and ``eager=True`` starts an async ``on_message`` on the reader,
        as for :meth:`new_channel_subscription`.
        """
        self._check_open()
        return PatternSubscription(
            self._hub,
            pattern,
            on_message,
            on_disconnect,
            on_activation,
            decode_names=decode_names,
            **self._delivery(**delivery),
        )

    def new_promise_subscription(
        self,
        prefix: str | bytes,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
    ) -> PromiseSubscription:
        """A networked promise system on the channels ``prefix + suffix``.

        ``on_activation(pattern)`` and ``on_disconnect(error)`` are optional: they tell when
        promises can be created and when pending ones were failed by an outage.
        """
        self._check_open()
        return PromiseSubscription(self._hub, prefix, on_disconnect, on_activation)

    @overload
    def subscribe(
        self,
        *channels: str | bytes,
        sharded: bool | None = None,
        decode_names: Literal[False] = False,
        recover: bool = False,
        since: Position | Mapping[str | bytes, Position] | None = None,
        **buffer: Unpack[BufferKeywords],
    ) -> ChannelIterator[bytes]: ...

    @overload
    def subscribe(
        self,
        *channels: str | bytes,
        sharded: bool | None = None,
        decode_names: Literal[True],
        recover: bool = False,
        since: Position | Mapping[str | bytes, Position] | None = None,
        **buffer: Unpack[BufferKeywords],
    ) -> ChannelIterator[str]: ...

    @overload
    def subscribe(
        self,
        *channels: str | bytes,
        sharded: bool | None = None,
        decode_names: bool,
        recover: bool = False,
        since: Position | Mapping[str | bytes, Position] | None = None,
        **buffer: Unpack[BufferKeywords],
    ) -> ChannelIterator[bytes] | ChannelIterator[str]: ...

    def subscribe(
        self,
        *channels: str | bytes,
        sharded: bool | None = None,
        decode_names: bool = False,
        recover: bool = False,
        since: Position | Mapping[str | bytes, Position] | None = None,
        **buffer: Unpack[BufferKeywords],
    ) -> ChannelIterator[bytes] | ChannelIterator[str]:
        """Channels to consume with ``async for`` (``async with mpx.subscribe("a") as sub``).

        Yields :class:`~redismpx.iterators.Message`; ``sub.events()`` also yields activation,
        disconnect and drop events in order. ``add``/``remove`` work as on any channel
        subscription; leaving the ``async with`` block closes it. ``sharded`` defaults to what
        ``new_channel_subscription`` does (classic channels here, shard channels on a
        :class:`~redismpx.ClusterMultiplexer`). ``decode_names=True``: messages and events
        carry names as ``str`` (``Message[str]``); payloads stay ``bytes``.
        ``recover=True`` (and ``since``): as for ``new_channel_subscription``, with the gaps
        as :class:`~redismpx.Gap` events in ``sub.events()``.
        """
        self._check_open()
        if sharded is None:
            sharded = self._hub.router.shard_by_default
        sub: ChannelIterator[Any] = ChannelIterator(
            self._hub,
            sharded=sharded,
            decode_names=decode_names,
            recover=recover,
            **self._delivery(**buffer),
        )
        try:
            sub.add(*channels, since=since)  # validates every name before registering any
        except BaseException:
            sub.close()  # a bad name: nothing stays behind
            raise
        return sub

    @overload
    def psubscribe(
        self,
        pattern: str | bytes,
        *,
        decode_names: Literal[False] = False,
        **buffer: Unpack[BufferKeywords],
    ) -> PatternIterator[bytes]: ...

    @overload
    def psubscribe(
        self,
        pattern: str | bytes,
        *,
        decode_names: Literal[True],
        **buffer: Unpack[BufferKeywords],
    ) -> PatternIterator[str]: ...

    @overload
    def psubscribe(
        self,
        pattern: str | bytes,
        *,
        decode_names: bool,
        **buffer: Unpack[BufferKeywords],
    ) -> PatternIterator[bytes] | PatternIterator[str]: ...

    def psubscribe(
        self,
        pattern: str | bytes,
        *,
        decode_names: bool = False,
        **buffer: Unpack[BufferKeywords],
    ) -> PatternIterator[bytes] | PatternIterator[str]:
        """A pattern to consume with ``async for``; messages carry the matching pattern.
        ``decode_names=True``: channel and pattern as ``str``."""
        self._check_open()
        return PatternIterator(
            self._hub, pattern, decode_names=decode_names, **self._delivery(**buffer)
        )
