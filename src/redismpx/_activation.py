"""Awaiting a subscription: ``await sub.add("a", "b")`` returns once Redis confirmed both.

A framework's ``subscribe()`` promises that what is published after it returns arrives: the
subscription is *active* (Redis acknowledged it). ``add()`` keeps returning at once, but what
it returns can be awaited for that. Waiting costs nothing until someone waits: the
subscription then holds an :class:`ActivationWaiters` (its futures by name) and hears every
activation, and drops it again afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator, Sequence
from typing import Any, Protocol


class Waitable(Protocol):
    """What :class:`Subscribing` needs of a subscription."""

    async def wait_active(self, names: Sequence[bytes]) -> None:
        """Return once each of ``names`` it still holds is active."""


class Subscribing:
    """What ``add()`` returns: ``await`` it to wait until Redis confirmed every name added
    (those removed meanwhile excepted). Not awaiting it is fine too: nothing is pending.

    Waiting has no limit of its own (an outage makes it wait for the reconnect): bound it
    with ``asyncio.timeout``. It raises :class:`~redismpx.SubscriptionClosed` if the
    subscription closes first and :class:`~redismpx.SubscribeRefused` if Redis refuses a
    name (an ACL denial).
    """

    __slots__ = ("_names", "_sub")

    def __init__(self, sub: Waitable, names: Sequence[bytes]) -> None:
        self._sub = sub
        self._names = names

    def __await__(self) -> Generator[Any, None, None]:
        return self._sub.wait_active(self._names).__await__()

    def __repr__(self) -> str:
        return f"<Subscribing {len(self._names)} name(s)>"


class ActivationWaiters:
    """The futures of the tasks waiting for names of one subscription to become active."""

    __slots__ = ("_by_name",)

    def __init__(self) -> None:
        self._by_name: dict[bytes, list[asyncio.Future[None]]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_name)

    def wait(self, names: Sequence[bytes], loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """One future, resolved when any of ``names`` changes (the caller checks them again)."""
        fut = loop.create_future()
        for name in names:
            self._by_name.setdefault(name, []).append(fut)
        return fut

    def forget(self, names: Sequence[bytes], fut: asyncio.Future[None]) -> None:
        for name in names:
            futs = self._by_name.get(name)
            if futs is not None:
                if fut in futs:
                    futs.remove(fut)
                if not futs:
                    del self._by_name[name]

    def changed(self, name: bytes, error: BaseException | None = None) -> None:
        """``name`` became active, was removed, or was refused (``error``)."""
        for fut in self._by_name.pop(name, ()):
            if not fut.done():
                if error is None:
                    fut.set_result(None)
                else:
                    fut.set_exception(error)

    def wake_all(self) -> None:
        """The subscription closed: every waiter looks again (and raises)."""
        for name in list(self._by_name):
            self.changed(name)
