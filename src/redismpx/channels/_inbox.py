"""One consumer channel's inbox: its subscription(s), its bounded queue and its hooks.

A consumer channel is one :class:`~redismpx.ChannelSubscription` holding the channel's own
name and the channel name of every group it joined: a group's message reaches every member
through the multiplexer's reference counting (one ``SUBSCRIBE`` per name per process),
without a table of members here. With several hosts, a name lives on the host of its shard,
so a consumer holds one subscription per host it uses, all feeding the same queue.

The subscriptions' callbacks are plain functions, called inline by the multiplexer's reader:
a message is appended to the queue and a waiting ``receive`` woken, nothing else. The queue
holds at most ``capacity`` messages; the overflow policy decides which one goes when a
message arrives at a full queue (the sender cannot be told: Pub/Sub has no reply path).

Hooks (``on_disconnect``, ``on_reconnect``, ``on_overflow`` in CONFIG) are messages of their
own ``type`` put in the queue, in order with the messages: "messages may have been lost
from here" and "every name is back". They do not count against the capacity and coalesce
while unread (at most one of each kind waits), so an idle consumer costs bounded memory
however many outages happen.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Literal

from ..errors import SubscribeRefused, SubscriptionClosed
from ..multiplexer import Multiplexer
from ..subscriptions import ChannelSubscription

logger = logging.getLogger("redismpx.channels")

Overflow = Literal["drop_oldest", "drop_newest"]

_LOG_EVERY = 10.0  # seconds between two drop warnings of one consumer


class Hook:
    """A hook message waiting in a queue (``void`` once coalesced away)."""

    __slots__ = ("count", "type", "void")

    def __init__(self, type: str, count: int = 0) -> None:
        self.type = type
        self.count = count
        self.void = False

    def message(self) -> dict[str, Any]:
        if self.count:
            return {"type": self.type, "dropped": self.count}
        return {"type": self.type}


class Hooks:
    """The hook message types from CONFIG (``None``: not sent)."""

    __slots__ = ("on_disconnect", "on_overflow", "on_reconnect")

    def __init__(
        self, on_disconnect: str | None, on_reconnect: str | None, on_overflow: str | None
    ) -> None:
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.on_overflow = on_overflow


class Inbox:
    """A consumer channel of one event loop's layer (see the module docstring)."""

    def __init__(
        self,
        name: str,
        capacity: int,
        overflow: Overflow,
        hooks: Hooks,
        on_release: Callable[[Inbox], None],
    ) -> None:
        self.name = name
        self.capacity = capacity
        self.overflow = overflow
        self.hooks = hooks
        self.subs: dict[int, ChannelSubscription] = {}  # by shard
        self.groups: set[str] = set()  # the group channel names held
        self.dropped = 0
        self.closed_reason: str | None = None
        self._on_release = on_release
        self._queue: deque[bytes | Hook] = deque()
        self._messages = 0  # the bytes items of the queue (hooks do not count)
        self._wake: asyncio.Future[None] | None = None
        self._receivers = 0
        self._linger: asyncio.TimerHandle | None = None
        self._orphan = False  # the task that made the channel has ended
        self._linger_seconds = 0.0
        # Names not confirmed again since an outage, and whether one is under way.
        self._inactive: set[bytes] = set()
        self._gap = False
        self._pending: dict[str, Hook] = {}  # unread hooks by CONFIG key, for coalescing
        self._logged_at = -_LOG_EVERY
        self._unlogged = 0

    # -- the subscriptions ---------------------------------------------------------------------

    def subscription(self, shard: int, mpx: Multiplexer) -> ChannelSubscription:
        """The subscription on ``shard``, made at its first name."""
        sub = self.subs.get(shard)
        if sub is None:
            sub = self.subs[shard] = mpx.new_channel_subscription(
                self._on_message,
                lambda error: self._on_disconnect(shard, error),
                self._on_activation,
            )
        return sub

    def _on_message(self, channel: bytes, data: bytes) -> None:
        queue = self._queue
        if self._messages >= self.capacity:
            if self.overflow == "drop_newest":
                self._dropped(1)
                return
            self._drop_oldest()
            self._dropped(1)
        queue.append(data)
        self._messages += 1
        self._kick()

    def _drop_oldest(self) -> None:
        queue = self._queue
        if queue[0].__class__ is bytes:
            queue.popleft()
        else:  # a hook first: the oldest message is behind it
            for i, item in enumerate(queue):
                if item.__class__ is bytes:
                    del queue[i]
                    break
        self._messages -= 1

    def _dropped(self, n: int) -> None:
        self.dropped += n
        self._unlogged += n
        if self.hooks.on_overflow is not None:
            hook = self._pending.get("on_overflow")
            if hook is None:
                self._push("on_overflow", Hook(self.hooks.on_overflow, n))
            else:
                hook.count += n
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY:
            logger.warning(
                "channel %s: %d message(s) dropped (%d in all): its consumer is %d behind "
                "(capacity), overflow policy %r",
                self.name,
                self._unlogged,
                self.dropped,
                self.capacity,
                self.overflow,
            )
            self._logged_at = now
            self._unlogged = 0

    def _on_disconnect(self, shard: int, error: BaseException) -> None:
        if isinstance(error, SubscribeRefused):
            logger.error("channel %s: Redis refused a subscription: %s", self.name, error)
            return
        sub = self.subs.get(shard)
        names = sub.channels if sub is not None else frozenset()
        if not names:
            return  # nothing of this consumer lives on that host: no gap for it
        self._inactive.update(names)
        self._gap = True
        stale = self._pending.pop("on_reconnect", None)
        if stale is not None:  # unread "back": it is not any more
            stale.void = True
        if self.hooks.on_disconnect is not None and "on_disconnect" not in self._pending:
            self._push("on_disconnect", Hook(self.hooks.on_disconnect))

    def _on_activation(self, name: bytes) -> None:
        self._inactive.discard(name)
        self._back_if_complete()

    def forget(self, name: bytes) -> None:
        """``name`` was removed from a subscription: an outage no longer waits for it."""
        self._inactive.discard(name)
        self._back_if_complete()

    def _back_if_complete(self) -> None:
        if self._gap and not self._inactive:
            self._gap = False
            if self.hooks.on_reconnect is not None:
                self._push("on_reconnect", Hook(self.hooks.on_reconnect))

    def _push(self, key: str, hook: Hook) -> None:
        self._pending[key] = hook
        self._queue.append(hook)
        self._kick()

    def _kick(self) -> None:
        wake = self._wake
        if wake is not None:
            self._wake = None
            if not wake.done():
                wake.set_result(None)

    # -- the consumer side ---------------------------------------------------------------------

    def take(self) -> bytes | dict[str, Any] | None:
        """The next message (bytes, to deserialize) or hook message; None when empty."""
        queue = self._queue
        while queue:
            item = queue.popleft()
            if item.__class__ is bytes:
                self._messages -= 1
                return item
            assert isinstance(item, Hook)
            for key, hook in list(self._pending.items()):
                if hook is item:
                    del self._pending[key]
            if not item.void:
                return item.message()
        return None

    async def wait(self) -> None:
        """Until something arrives or the inbox closes. Cancelling it loses nothing."""
        if self._wake is None or self._wake.done():
            self._wake = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._wake)  # shared by concurrent receivers

    def check_open(self) -> None:
        if self.closed_reason is not None:
            raise SubscriptionClosed(f"channel {self.name}: {self.closed_reason}")

    def receiving(self) -> None:
        """A ``receive`` starts: the channel is in use (a pending release is called off)."""
        self._receivers += 1
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def received(self, cancelled: bool, linger: float) -> None:
        """A ``receive`` ended; ``cancelled``: its consumer may have left (Django Channels
        cancels ``receive`` when a consumer ends, and says nothing else). The channel is
        released ``linger`` seconds later unless a ``receive`` comes meanwhile."""
        self._receivers -= 1
        if (cancelled or self._orphan) and not self._receivers:
            self._release_in(linger)

    def owned_by(self, task: asyncio.Task[Any] | None, linger: float) -> None:
        """``task`` made the channel (a Channels consumer's own task, which ends with the
        consumer, however it ends: a handler that raised leaves no receive to cancel, nor a
        receive that had already returned when the consumer stopped)."""
        if task is not None:
            self._linger_seconds = linger
            task.add_done_callback(self._owner_ended)

    def _owner_ended(self, _: object) -> None:
        self._orphan = True
        if not self._receivers:
            self._release_in(self._linger_seconds)

    def _release_in(self, linger: float) -> None:
        if self.closed_reason is not None:
            return
        if self._linger is not None:
            self._linger.cancel()
        loop = asyncio.get_running_loop()
        self._linger = loop.call_later(linger, self._on_release, self)

    def close(self, reason: str) -> None:
        """Unsubscribe (what no other consumer holds) and wake the receivers, who raise
        :class:`~redismpx.SubscriptionClosed`. Idempotent."""
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        for sub in self.subs.values():
            if not sub.closed:
                sub.close()
        self.subs.clear()
        self._queue.clear()
        self._messages = 0
        self._pending.clear()
        self._kick()
