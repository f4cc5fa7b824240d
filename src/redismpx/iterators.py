"""``async for`` subscriptions: ``async with mpx.subscribe("a", "b") as sub: async for msg in sub``.

They are channel and pattern subscriptions whose consumer is the iterating task instead of
callbacks. Messages wait in the same bounded buffer with the same overflow policies as queued
callbacks (see :mod:`redismpx._buffer`). ``sub.events()`` yields, in order with the messages,
:class:`Activated`, :class:`Disconnected` and :class:`Dropped` events; while unread, they are
coalesced (the latest state of each name is kept, see :mod:`redismpx._buffer`), so an
iterator nobody reads holds O(names) events whatever happens. Iteration ends when the
subscription (or its multiplexer) is closed; when the library closed it (overflow policy
``close``), the iterator raises :class:`~redismpx.SubscriptionClosed` with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, Self, TypeAlias, cast

from ._buffer import ACTIVATION, CLOSED, DISCONNECT, DROPPED, MISSED, Event
from ._buffered import BufferedSubscriber
from ._decoding import decode_name
from ._subscriber import Host
from .history import Gap
from .subscriptions import ChannelSubscription, PatternSubscription
from .typedefs import Name, OverflowPolicy


@dataclass(frozen=True, slots=True)
class Message(Generic[Name]):
    """One message: the channel it was published to, its payload, and the pattern that
    matched it (``None`` for channel subscriptions).

    ``channel`` and ``pattern`` are ``bytes``, or ``str`` for an iterator made with
    ``decode_names=True`` (typed ``Message[str]``); the payload is always ``bytes``.
    """

    channel: Name
    data: bytes
    pattern: Name | None = None


@dataclass(frozen=True, slots=True)
class Activated(Generic[Name]):
    """Redis confirmed ``name``: messages published from now on will arrive."""

    name: Name


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost; messages published until the next ``Activated`` are lost."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Dropped:
    """``count`` messages were dropped by the overflow policy (the consumer was too slow)."""

    count: int


if TYPE_CHECKING:
    SubscriptionEvent: TypeAlias = (
        Message[Name] | Activated[Name] | Disconnected | Dropped | Gap[Name]
    )
else:  # the plain classes at run time: ``isinstance(x, SubscriptionEvent)`` keeps working
    SubscriptionEvent = Message | Activated | Disconnected | Dropped | Gap
"""What ``events()`` yields (``SubscriptionEvent[str]`` with ``decode_names=True``; annotations
only: at run time it is the union of the classes, for ``isinstance``)."""


class _Iterating(BufferedSubscriber, Generic[Name]):
    """The consumer side shared by both iterator classes: the iterating task is the worker."""

    __slots__ = ()

    async def _next(self, with_events: bool) -> SubscriptionEvent[Name]:
        q = self._consumer()
        wants = self._holds if self._filters_names else None
        decode = self._opts.decode_names
        while True:
            item = q.take(wants)  # the consumer step the worker takes too
            if item is None:
                if self._end is not None:
                    raise StopAsyncIteration
                await self._wait(q)
            elif item.__class__ is Event:
                tag = item.tag
                if tag == CLOSED:
                    raise item.arg
                if with_events:
                    if tag == ACTIVATION:
                        name = decode_name(item.arg) if decode else item.arg
                        return cast("Activated[Name]", Activated(name))
                    if tag == DISCONNECT:
                        return Disconnected(item.arg)
                    if tag == DROPPED:
                        return Dropped(item.arg)
                    if tag == MISSED:
                        return cast("Gap[Name]", item.arg)
            elif decode:
                pattern = self._pattern_of()
                text = None if pattern is None else decode_name(pattern)
                return cast("Message[Name]", Message(decode_name(item[0]), item[1], text))
            else:
                return Message(item[0], item[1], self._pattern_of())

    def __aiter__(self) -> AsyncIterator[Message[Name]]:
        return self

    async def __anext__(self) -> Message[Name]:
        message = await self._next(False)
        assert isinstance(message, Message)
        return message

    async def events(self) -> AsyncIterator[SubscriptionEvent[Name]]:
        """Messages and events (activation, disconnect, drops, and a recovering
        subscription's gaps) in the order they happened."""
        while True:
            try:
                yield await self._next(True)
            except StopAsyncIteration:
                return

    async def __aenter__(self) -> Self:
        """Wait until Redis confirmed every name held (bound it with ``asyncio.timeout``); a
        failure closes the subscription."""
        try:
            await self.wait_active(self._held())
        except BaseException:
            self.close()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def _pattern_of(self) -> bytes | None:
        return None


class ChannelIterator(_Iterating[Name], ChannelSubscription):
    """A :class:`ChannelSubscription` consumed with ``async for`` (see the module docstring).

    ``ChannelIterator[str]`` (``decode_names=True``) yields ``Message[str]``.
    """

    __slots__ = ()

    def __init__(
        self,
        host: Host,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        sharded: bool,
        decode_names: bool = False,
        recover: bool = False,
    ) -> None:
        ChannelSubscription.__init__(
            self,
            host,
            None,
            max_buffer=max_buffer,
            overflow=overflow,
            sharded=sharded,
            queued=True,
            decode_names=decode_names,
            recover=recover,
        )


class PatternIterator(_Iterating[Name], PatternSubscription):
    """A :class:`PatternSubscription` consumed with ``async for``.

    ``PatternIterator[str]`` (``decode_names=True``) yields ``Message[str]``.
    """

    __slots__ = ()

    def __init__(
        self,
        host: Host,
        pattern: str | bytes,
        *,
        max_buffer: int,
        overflow: OverflowPolicy,
        decode_names: bool = False,
    ) -> None:
        PatternSubscription.__init__(
            self,
            host,
            pattern,
            None,
            max_buffer=max_buffer,
            overflow=overflow,
            queued=True,
            decode_names=decode_names,
        )

    def _pattern_of(self) -> bytes | None:
        return self.pattern
