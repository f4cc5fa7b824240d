"""``async for`` subscriptions: ``async with mpx.subscribe("a", "b") as sub: async for msg in sub``.

They are channel and pattern subscriptions whose consumer is the iterating task instead of
callbacks. Messages wait in the same bounded buffer with the same overflow policies as queued
callbacks (see :mod:`redismpx._delivery`). ``sub.events()`` yields, in order with the messages,
:class:`Activated`, :class:`Disconnected` and :class:`Dropped` events; while unread, they are
coalesced (the latest state of each name is kept, see :mod:`redismpx._delivery`), so an
iterator nobody reads holds O(names) events whatever happens. Iteration ends when the
subscription (or its multiplexer) is closed; when the library closed it (overflow policy
``close``), the iterator raises :class:`~redismpx.SubscriptionClosed` with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from ._delivery import ACTIVATION, CLOSED, DISCONNECT, DROPPED, Event, OverflowPolicy
from .subscriptions import ChannelSubscription, PatternSubscription

if TYPE_CHECKING:
    from .multiplexer import Multiplexer


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


class _Iterating:
    """The consumer side shared by both iterator classes (a mixin over ``Subscriber``)."""

    __slots__ = ()

    async def _next(self, with_events: bool) -> SubscriptionEvent:
        sub: Any = self
        q = sub._q
        buf = q.buf
        loop = asyncio.get_running_loop()
        while True:
            while buf:
                item = buf.popleft()
                if item.__class__ is Event:
                    q.taken(item)
                    if item.tag == CLOSED:
                        raise item.arg
                    if with_events:
                        if item.tag == ACTIVATION:
                            return Activated(item.arg)
                        if item.tag == DISCONNECT:
                            return Disconnected(item.arg)
                        if item.tag == DROPPED:
                            return Dropped(item.arg)
                    continue
                q.nmsgs -= 1
                channel = item[0]
                if q.latest is not None:
                    q.latest.pop(channel, None)
                if sub._wants(channel):
                    return Message(channel, item[1], sub._pattern_of())
            if sub.closed:
                raise StopAsyncIteration
            if q.wake is not None:
                raise RuntimeError("another task is already iterating this subscription")
            q.wake = wake = loop.create_future()
            try:
                await wake
            finally:
                # A cancelled wait (a timeout around it) must not leave us registered as
                # the waiting consumer: the next wait, by any task, would be refused.
                if q.wake is wake:
                    q.wake = None

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
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()  # type: ignore[attr-defined]

    def _pattern_of(self) -> bytes | None:
        return None


class ChannelIterator(_Iterating, ChannelSubscription):
    """A :class:`ChannelSubscription` consumed with ``async for`` (see the module docstring)."""

    __slots__ = ()

    def __init__(
        self, mpx: Multiplexer, *, max_buffer: int, overflow: OverflowPolicy, sharded: bool
    ) -> None:
        ChannelSubscription.__init__(
            self,
            mpx,
            None,  # type: ignore[arg-type]
            max_buffer=max_buffer,
            overflow=overflow,
            sharded=sharded,
            queued=True,
        )


class PatternIterator(_Iterating, PatternSubscription):
    """A :class:`PatternSubscription` consumed with ``async for``."""

    __slots__ = ()

    def __init__(
        self, mpx: Multiplexer, pattern: str | bytes, *, max_buffer: int, overflow: OverflowPolicy
    ) -> None:
        PatternSubscription.__init__(
            self,
            mpx,
            pattern,
            None,  # type: ignore[arg-type]
            max_buffer=max_buffer,
            overflow=overflow,
            queued=True,
        )

    def _pattern_of(self) -> bytes | None:
        return self.pattern
