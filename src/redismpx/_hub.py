"""The hub: what subscriptions and routers talk to, and the owner of every task.

Both public facades (:class:`~redismpx.Multiplexer`, :class:`~redismpx.ClusterMultiplexer`)
are thin shells over one hub; they differ only in the router they give it. The hub keeps the
live subscriptions, the counters, the event loop the multiplexer runs in and the
:class:`~redismpx._tasks.TaskOwner` of every task and callback; where a name goes, and who
hears of an outage, it asks the router.
"""

from __future__ import annotations

import asyncio
from asyncio.events import _get_running_loop  # the C accessor: None outside a loop, no raise
from collections.abc import Callable, Coroutine, Sequence
from contextvars import Context
from typing import Any, Protocol

from ._history import HistoryReader
from ._names import Listener
from ._options import Tuning
from ._protocol import CHANNEL, KINDS, PATTERN, SHARD
from ._recovery import Track
from ._router import MakeRouter
from ._tasks import TaskOwner
from .errors import EventLoopMismatch, SubscriptionClosed
from .state import State

# Why the subscriptions of an event loop that ended were closed (``close_reason``).
LOOP_ENDED = "the event loop it was used in has ended; subscribe again in the new loop"


class Member(Listener, Protocol):
    """What the hub needs of a subscription beyond the :class:`Listener` protocol."""

    @property
    def closed(self) -> bool:
        """True once closed."""

    def shut_down(self) -> None:
        """The multiplexer closes: stop without telling Redis (its connection goes too)."""

    def abandon(self, reason: str) -> None:
        """Its event loop is closed: close without running anything of that loop."""

    def start_consumer(self) -> None:
        """Start its worker, if it has one, now that the loop runs."""


class Hub:
    """Registrations, tasks, counters and the event loop of one multiplexer."""

    def __init__(self, tuning: Tuning, make_router: MakeRouter) -> None:
        self.tuning = tuning
        self.tasks = TaskOwner()
        self.closed = False
        self.dropped = 0
        self.callback_errors = 0
        self._members: dict[Member, None] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.router = make_router(self)
        self._route = self.router.route  # bound once: add/remove are hot during churn
        self.history = HistoryReader(self.router.call_for, self.tasks)

    # -- the event loop ----------------------------------------------------------------------

    def start_in_running_loop(self) -> None:
        """Start (or move) the connections into the running loop, if any.

        Called at every entry point that may be the first one in a loop. A multiplexer moves
        to a new loop once its previous loop is closed: what belonged to the old loop (its
        subscriptions, tasks and connections) is dropped without running anything of it, and
        the connection starts afresh. Serving two open loops at once is refused.
        """
        if self.closed:
            return
        loop = _get_running_loop()
        if loop is None or loop is self._loop:
            return  # started at the first use inside a loop; or already running here
        old = self._loop
        if old is not None:
            if not old.is_closed():
                raise EventLoopMismatch(
                    f"the multiplexer of {self.router.describe()} runs in another event loop "
                    "that is still open; use one multiplexer per event loop, or close the "
                    "old loop first"
                )
            # Subscriptions hold callbacks, futures and tasks of the closed loop: they end
            # with it (closed, with a reason) rather than half-work in the new one.
            for member in list(self._members):
                member.abandon(LOOP_ENDED)
            self._members.clear()
            self.tasks.forget()
            self.router.abandon()
        self._loop = loop
        self.tasks.bind(loop)
        self.router.start()

    @property
    def loop_closed(self) -> bool:
        """True when the loop the links ran in is closed (they ended with it)."""
        return self._loop is not None and self._loop.is_closed()

    # -- what subscriptions call (the ``Host`` protocol) --------------------------------------

    def register(self, member: Member) -> None:
        """A new subscription of this multiplexer."""
        if self.closed:
            raise SubscriptionClosed("the multiplexer is closed")
        self.start_in_running_loop()
        self._members[member] = None
        if self._loop is not None:
            member.start_consumer()  # else at its first event, which runs in the loop

    def add(self, kind: int, names: Sequence[bytes], listener: Listener) -> None:
        if _get_running_loop() is not self._loop:
            # First use in this loop (or before any): start or move before registering.
            self.start_in_running_loop()
            if listener not in self._members:  # made in a loop that has ended: abandoned
                raise SubscriptionClosed("the subscription is closed", LOOP_ENDED)
        for link, part in self._route(kind, names):
            link.add(kind, part, listener)

    def remove(self, kind: int, names: Sequence[bytes], listener: Listener) -> None:
        for link, part in self._route(kind, names):
            link.remove(kind, part, listener)

    def refresh(self, kind: int, name: bytes) -> None:
        self.router.link_for(kind, name).registry.refresh(kind, name)

    def phase(self, kind: int, name: bytes) -> bool | None:
        """True: Redis confirmed ``name``; None: Redis refused it; False: neither yet."""
        registry = self.router.link_for(kind, name).registry
        if registry.is_active(kind, name):
            return True
        return None if registry.is_refused(kind, name) else False

    def read_history(self, track: Track) -> None:
        """Read a recovering channel's history (batched with the others of this loop turn)."""
        self.history.request(track)

    def forget(self, member: Any) -> None:
        self._members.pop(member, None)
        if not self._members:
            self._members.clear()  # give the memory back: dicts never shrink on deletion

    def spawn(
        self, coro: Coroutine[Any, Any, None], name: str, context: Context | None = None
    ) -> asyncio.Task[None]:
        return self.tasks.spawn(coro, name, context)

    def call_soon(self, fn: Callable[[], None]) -> asyncio.Handle:
        return self.tasks.call_soon(fn)

    def count_dropped(self, n: int) -> None:
        self.dropped += n

    def count_callback_error(self) -> None:
        self.callback_errors += 1

    # -- what the router calls (the ``RouterHost`` protocol) ----------------------------------

    def notify_all_disconnected(self, error: BaseException) -> None:
        for member in list(self._members):
            member.notify_disconnected(error)

    # -- lifecycle and questions -------------------------------------------------------------

    @property
    def state(self) -> State:
        if self.closed:
            return State.CLOSED
        if self.loop_closed:
            return State.DISCONNECTED  # the links ended with their event loop
        return self.router.state

    def close(self) -> None:
        """Close every subscription, every link and every task, now; idempotent."""
        if self.closed:
            return
        self.closed = True
        for member in list(self._members):
            member.shut_down()
        self._members.clear()
        self.router.close()
        self.tasks.cancel()

    async def aclose(self) -> None:
        """``close()``, then wait until every task has ended."""
        self.close()
        await self.tasks.wait()

    def stats(self) -> dict[str, Any]:
        """The counters every topology shares (see ``Multiplexer.stats``)."""
        links = self.router.all_links()
        counts = [0] * len(KINDS)
        for link in links:
            for kind, n in zip(KINDS, link.registry.counts(), strict=True):
                counts[kind] += n
        error = self.router.last_error
        stats: dict[str, Any] = {
            "state": self.state.value,
            "subscriptions": len(self._members),
            "channels": counts[CHANNEL],
            "patterns": counts[PATTERN],
            "shard_channels": counts[SHARD],
            "messages_received": sum(link.messages_received() for link in links),
            "messages_dispatched": sum(link.messages_dispatched() for link in links),
            "connects": sum(link.connects for link in links),
            "reconnects": sum(link.reconnects for link in links),
            "dropped": self.dropped,
            "callback_errors": self.callback_errors,
            "last_error": None if error is None else str(error),
            "history_reads": self.history.reads,
        }
        self.router.add_stats(stats)
        return stats
