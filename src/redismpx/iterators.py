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
from typing import Self

from ._buffer import ACTIVATION, CLOSED, DISCONNECT, DROPPED, Event
from ._buffered import BufferedSubscriber
from ._subscriber import Host
from .subscriptions import ChannelSubscription, PatternSubscription
from .typedefs import OverflowPolicy


@dataclass(frozen=True, slots=True)
class Message:
    """One message: the channel it was published to, its payload, and the pattern that
    matched it (``None`` for channel subscriptions)."""

    channel: bytes
    data: bytes
    pattern: bytes | None = None


@dataclass(frozen=True, slots=True)
class Activated:
    """Redis confirmed ``name``: messages published from now on will arrive."""

    name: bytes


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The connection was lost; messages published until the next ``Activated`` are lost."""

    error: BaseException


@dataclass(frozen=True, slots=True)
class Dropped:
    """``count`` messages were dropped by the overflow policy (the consumer was too slow)."""

    count: int


SubscriptionEvent = Message | Activated | Disconnected | Dropped


class _Iterating(BufferedSubscriber):
    """The consumer side shared by both iterator classes: the iterating task is the worker."""

    __slots__ = ()

    async def _next(self, with_events: bool) -> SubscriptionEvent:
        q = self._consumer()
        wants = self._holds if self._filters_names else None
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
                        return Activated(item.arg)
                    if tag == DISCONNECT:
                        return Disconnected(item.arg)
                    if tag == DROPPED:
                        return Dropped(item.arg)
            else:
                return Message(item[0], item[1], self._pattern_of())

    def __aiter__(self) -> AsyncIterator[Message]:
        return self

    async def __anext__(self) -> Message:
        message = await self._next(False)
        assert isinstance(message, Message)
        return message

    async def events(self) -> AsyncIterator[SubscriptionEvent]:
        """Messages and events (activation, disconnect, drops) in the order they happened."""
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


class ChannelIterator(_Iterating, ChannelSubscription):
    """A :class:`ChannelSubscription` consumed with ``async for`` (see the module docstring)."""

    __slots__ = ()

    def __init__(
        self, host: Host, *, max_buffer: int, overflow: OverflowPolicy, sharded: bool
    ) -> None:
        ChannelSubscription.__init__(
            self, host, None, max_buffer=max_buffer, overflow=overflow, sharded=sharded, queued=True
        )


class PatternIterator(_Iterating, PatternSubscription):
    """A :class:`PatternSubscription` consumed with ``async for``."""

    __slots__ = ()

    def __init__(
        self, host: Host, pattern: str | bytes, *, max_buffer: int, overflow: OverflowPolicy
    ) -> None:
        PatternSubscription.__init__(
            self, host, pattern, None, max_buffer=max_buffer, overflow=overflow, queued=True
        )

    def _pattern_of(self) -> bytes | None:
        return self.pattern
