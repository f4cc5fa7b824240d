"""``RedisMPXChannelLayer``: the layer Django Channels is given, one ``_LoopLayer`` per
event loop, each with one multiplexer per host."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from channels.layers import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
    BaseChannelLayer,
)

from .._options import check_duration, check_seconds
from ..errors import InvalidArgument, InvalidArgumentType
from ..multiplexer import Multiplexer
from ._hosts import Host, consistent_hash, decode_hosts
from ._inbox import Hooks, Inbox, Overflow
from ._serializers import Serializer

logger = logging.getLogger("redismpx.channels")

_OVERFLOWS = ("drop_oldest", "drop_newest")
_FLUSHED = "the channel layer was flushed or closed"
_LEFT = "released: its receive was cancelled and not called again within receive_linger"


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidArgumentType(f"{what} must be a str, not {type(value).__name__}")
    if not value:
        raise InvalidArgument(f"{what} must not be empty")
    return value


def _hook(key: str, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidArgumentType(f"{key} must be a message type (a str) or None")
    return value or None


class RedisMPXChannelLayer(BaseChannelLayer):  # type: ignore[misc]
    """A Django Channels layer on Redis Pub/Sub through redismpx multiplexers.

    It takes the ``CONFIG`` of ``channels_redis.pubsub.RedisPubSubChannelLayer`` and speaks
    its wire format (channel and group names, msgpack or JSON, Fernet encryption), so that a
    fleet can move from one to the other a process at a time:

    Args:
        hosts: A list of Redis servers, each a URL (``redis://``, ``rediss://``,
            ``unix://``, or ``redis+sentinel://h1:p1,h2:p2/service``), a ``(host, port)``
            pair, or a dict of connection keywords: ``{"address": url, ...}``, ``{"host":
            ..., "port": ..., "password": ...}``, or Sentinel's ``{"sentinels": [(host,
            port), ...], "master_name": ..., "sentinel_kwargs": {"password": ...}, ...}``.
            redis-py's keywords are translated (``socket_connect_timeout``,
            ``ssl_cert_reqs``...) or ignored when they tune redis-py itself (``retry``,
            ``socket_timeout``...); redismpx's own (``health_check_interval``,
            ``backoff_cap``, ``client_name``...) are taken as they are. Several hosts shard
            the names as channels_redis does. Default: ``["redis://localhost:6379"]``.
        prefix: Prepended to every channel and group name in Redis (``"asgi"``).
        capacity: Messages a consumer channel holds for its consumer before the overflow
            policy applies (100, as Channels' layers).
        channel_capacity: Per-channel capacities: ``{glob or compiled regex: capacity}``.
        overflow: Which message goes when one arrives at a full channel: ``"drop_oldest"``
            (the default) or ``"drop_newest"``. The sender is never told (a Pub/Sub publish
            has no reply path, so :class:`channels.exceptions.ChannelFull` is never raised);
            drops are counted, logged at WARNING, and announced by ``on_overflow``.
        on_disconnect: A message type (e.g. ``"redis.disconnect"``) sent to every consumer
            of this process when its connection to Redis is lost: messages published from
            then on until ``on_reconnect`` are lost.
        on_reconnect: A message type sent to a consumer once its channel and every group it
            joined are subscribed again after an outage.
        on_overflow: A message type sent to a consumer whose messages were dropped, with
            ``"dropped"``: how many (the count of the drops since the last one it read).
        symmetric_encryption_keys: Fernet keys, as channels_redis takes them (needs the
            ``cryptography`` package).
        serializer_format: ``"msgpack"`` (the default) or ``"json"``; any other name is
            looked up in channels_redis's serializer registry if it is installed.
        subscribe_timeout: Seconds ``new_channel`` and ``group_add`` wait for Redis to
            confirm the subscription before raising ``TimeoutError`` (``None``: no limit).
        publish_timeout: Seconds ``send`` and ``group_send`` wait for Redis before raising
            :class:`~redismpx.PublishTimeout` (``None``: no limit).
        receive_linger: Seconds a channel whose ``receive`` was cancelled stays subscribed
            (and keeps what arrives) waiting for the next ``receive``; then it is released
            with its groups. Django Channels cancels ``receive`` when a consumer ends.
        expiry, group_expiry: Accepted and unused, as by channels_redis's Pub/Sub layer
            (Pub/Sub keeps no message and no membership in Redis).

    Each event loop the layer is used in gets its own multiplexers (one per host), closed
    when that loop closes (``asyncio.run`` and asgiref's ``async_to_sync`` close theirs).
    """

    extensions = ["groups", "flush"]  # noqa: RUF012 - Channels' own class attribute

    def __init__(
        self,
        hosts: Sequence[Any] | None = None,
        prefix: str = "asgi",
        *,
        capacity: int = 100,
        channel_capacity: Mapping[Any, int] | None = None,
        overflow: Overflow = "drop_oldest",
        on_disconnect: str | None = None,
        on_reconnect: str | None = None,
        on_overflow: str | None = None,
        symmetric_encryption_keys: Sequence[str | bytes] | None = None,
        serializer_format: str = "msgpack",
        subscribe_timeout: float | None = 5.0,
        publish_timeout: float | None = 5.0,
        receive_linger: float = 5.0,
        expiry: int = 60,
        group_expiry: int = 86400,
    ) -> None:
        if channel_capacity is not None and not isinstance(channel_capacity, Mapping):
            raise InvalidArgumentType(
                "channel_capacity must be a dict {glob or compiled regex: capacity}, not "
                f"{type(channel_capacity).__name__}"
            )
        for key in channel_capacity or {}:
            if not isinstance(key, str | re.Pattern):
                raise InvalidArgumentType(
                    "a channel_capacity key must be a glob (str) or a compiled regex, not "
                    f"{type(key).__name__}"
                )
        super().__init__(expiry=expiry, capacity=capacity, channel_capacity=channel_capacity)
        for key, value in [("capacity", capacity), *(channel_capacity or {}).items()]:
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentType(f"capacity {key!r} must be an int")
            if value < 1:
                raise InvalidArgument(f"capacity {key!r} must be >= 1, not {value}")
        self.channel_capacity = self.compile_capacities(channel_capacity or {})
        self.group_expiry = group_expiry
        if not isinstance(prefix, str):
            raise InvalidArgumentType(f"prefix must be a str, not {type(prefix).__name__}")
        self.prefix = prefix
        if overflow not in _OVERFLOWS:
            raise InvalidArgument(
                f"overflow must be one of {', '.join(_OVERFLOWS)}, not {overflow!r}"
            )
        self.overflow: Overflow = overflow
        self.hooks = Hooks(
            _hook("on_disconnect", on_disconnect),
            _hook("on_reconnect", on_reconnect),
            _hook("on_overflow", on_overflow),
        )
        self.subscribe_timeout = check_seconds(
            "subscribe_timeout", subscribe_timeout, allow_none=True
        )
        self.publish_timeout = check_seconds("publish_timeout", publish_timeout, allow_none=True)
        self.receive_linger: float = check_duration("receive_linger", receive_linger)
        self.hosts: list[Host] = decode_hosts(hosts)
        self._serializer = Serializer(serializer_format, symmetric_encryption_keys)
        self._layers: dict[asyncio.AbstractEventLoop, _LoopLayer] = {}
        # Loops whose close() is wrapped already: close() and reuse must not wrap it again.
        self._wrapped: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    # -- serialization (channels_redis's method names) -------------------------------------------

    def serialize(self, message: Any) -> bytes:
        """A message as the bytes published to Redis."""
        return self._serializer.serialize(message)

    def deserialize(self, data: bytes) -> Any:
        """Bytes received from Redis as a message."""
        return self._serializer.deserialize(data)

    # -- one layer per event loop ----------------------------------------------------------------

    def _get_layer(self) -> _LoopLayer:
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            for old in list(self._layers):  # a copy: other threads' loops come and go
                if old.is_closed():
                    # Closed without passing through close() (the wrapper was bypassed): its
                    # tasks and sockets ended with it; only the reference is left to drop.
                    logger.debug("channel layer: dropping the state of closed loop %r", old)
                    self._layers.pop(old, None)
            layer = self._layers[loop] = _LoopLayer(self)
            if loop not in self._wrapped:
                self._wrapped.add(loop)
                self._close_with(loop)
        return layer

    def _close_with(self, loop: asyncio.AbstractEventLoop) -> None:
        """Make ``loop.close()`` close this layer's state of ``loop`` first, inside ``loop``,
        as channels_redis does: the multiplexers' tasks then end in their own loop."""
        original = loop.close

        def close() -> None:
            layer = self._layers.pop(loop, None)
            if layer is not None and not loop.is_running() and not loop.is_closed():
                try:
                    loop.run_until_complete(layer.aclose())
                except Exception:
                    logger.exception("channel layer: closing the state of a closing loop")
                    layer.close_now()
            self._wrapped.discard(loop)
            setattr(loop, "close", original)  # noqa: B010 - an instance attribute, not mypy's method
            original()

        setattr(loop, "close", close)  # noqa: B010

    # -- the channel layer API -------------------------------------------------------------------

    async def send(self, channel: str, message: Any) -> None:
        """Publish ``message`` on ``channel`` (a consumer's channel, anywhere in the fleet)."""
        await self._get_layer().send(channel, message)

    async def receive(self, channel: str) -> Any:
        """The next message of ``channel``: one created by :meth:`new_channel` in this event
        loop, or any other name (subscribed at the first ``receive``).

        Cancelling it loses no message: what arrives stays for the next ``receive``
        (``receive_linger`` seconds; see the class docstring).

        Raises:
            SubscriptionClosed: The layer was flushed or closed while it waited.
        """
        return await self._get_layer().receive(channel)

    async def new_channel(self, prefix: str = "specific.") -> str:
        """A new channel name for a consumer of this process; returns once Redis confirmed
        its subscription (what is sent to it from then on arrives).

        Raises:
            TimeoutError: Not confirmed within ``subscribe_timeout`` (Redis unreachable).
        """
        return await self._get_layer().new_channel(prefix)

    async def group_add(self, group: str, channel: str) -> None:
        """Add ``channel`` (made by :meth:`new_channel` in this event loop) to ``group``;
        returns once Redis confirmed the group's subscription.

        Raises:
            RuntimeError: ``channel`` is not a channel of this process, as channels_redis.
            TimeoutError: Not confirmed within ``subscribe_timeout``; the channel is then not
                in the group.
        """
        await self._get_layer().group_add(group, channel)

    async def group_discard(self, group: str, channel: str) -> None:
        """Remove ``channel`` from ``group``; nothing if it is not in it."""
        await self._get_layer().group_discard(group, channel)

    async def group_send(self, group: str, message: Any) -> None:
        """Publish ``message`` to every member of ``group``, in any process."""
        await self._get_layer().group_send(group, message)

    async def flush(self) -> None:
        """Forget every channel and group of this event loop and close its connections; the
        layer can be used again at once. Pending ``receive`` calls raise
        :class:`~redismpx.SubscriptionClosed`."""
        await self._get_layer().aclose()

    async def close(self) -> None:
        """Release this event loop's state (channels, groups, connections): :meth:`flush`
        without keeping anything of the loop. Closing the loop does it too."""
        layer = self._layers.pop(asyncio.get_running_loop(), None)
        if layer is not None:
            await layer.aclose()

    async def close_pools(self) -> None:
        """The same as :meth:`close` (channels_redis's name)."""
        await self.close()

    def stats(self) -> dict[str, Any]:
        """This event loop's state: ``consumers`` (channels held), ``dropped`` (messages
        dropped by overflow, in all), and ``multiplexers``: each host's ``stats()`` (``None``
        before its first use)."""
        return self._get_layer().stats()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {len(self.hosts)} host(s) prefix={self.prefix!r}>"


class _LoopLayer:
    """The layer's state in one event loop: the multiplexers and the consumer channels."""

    def __init__(self, channel_layer: RedisMPXChannelLayer) -> None:
        self.channel_layer = channel_layer
        self.consumers: dict[str, Inbox] = {}
        self._mpx: list[Multiplexer | None] = [None] * len(channel_layer.hosts)
        self._dropped = 0  # by channels released since

    def _multiplexer(self, shard: int) -> Multiplexer:
        mpx = self._mpx[shard]
        if mpx is None:
            host = self.channel_layer.hosts[shard]
            mpx = self._mpx[shard] = Multiplexer(host.url, **host.options)
        return mpx

    def _shard(self, name: str) -> int:
        return consistent_hash(name, len(self._mpx))

    def _group_channel(self, group: str) -> str:
        return f"{self.channel_layer.prefix}__group__{_name(group, 'group name')}"

    def _open(self, name: str) -> Inbox:
        cl = self.channel_layer
        inbox = Inbox(name, cl.get_capacity(name), cl.overflow, cl.hooks, self._release)
        self.consumers[name] = inbox
        return inbox

    def _release(self, inbox: Inbox, reason: str = _LEFT) -> None:
        if self.consumers.get(inbox.name) is inbox:
            del self.consumers[inbox.name]
        self._dropped += inbox.dropped
        inbox.close(reason)

    def _subscription(self, inbox: Inbox, name: str) -> Any:
        shard = self._shard(name)
        return inbox.subscription(shard, self._multiplexer(shard))

    async def _publish(self, name: str, message: Any) -> None:
        data = self.channel_layer.serialize(message)
        mpx = self._multiplexer(self._shard(name))
        await mpx.publish(name, data, timeout=self.channel_layer.publish_timeout)

    async def send(self, channel: str, message: Any) -> None:
        await self._publish(_name(channel, "channel name"), message)

    async def group_send(self, group: str, message: Any) -> None:
        await self._publish(self._group_channel(group), message)

    async def new_channel(self, prefix: str) -> str:
        if not isinstance(prefix, str):
            raise InvalidArgumentType("prefix must be a str")
        name = f"{self.channel_layer.prefix}{prefix}{uuid.uuid4().hex}"
        inbox = self._open(name)
        try:
            async with asyncio.timeout(self.channel_layer.subscribe_timeout):
                await self._subscription(inbox, name).add(name)
        except BaseException:
            self._release(inbox, "its subscription failed")
            raise
        inbox.owned_by(asyncio.current_task(), self.channel_layer.receive_linger)
        return name

    async def receive(self, channel: str) -> Any:
        inbox = self.consumers.get(_name(channel, "channel name"))
        if inbox is None:  # a channel of another process's making: subscribed now
            inbox = self._open(channel)
            try:
                self._subscription(inbox, channel).add(channel)  # receive waits anyway
            except BaseException:  # a name Redis cannot take: nothing is held for it
                self._release(inbox, "its subscription failed")
                raise
        inbox.receiving()
        cancelled = False
        try:
            while True:
                item = inbox.take()
                if item is None:
                    inbox.check_open()
                    await inbox.wait()
                elif isinstance(item, dict):  # a hook
                    return item
                else:
                    try:
                        return self.channel_layer.deserialize(item)
                    except Exception as exc:  # one bad payload must not end the consumer
                        logger.error(
                            "channel %s: a message that cannot be deserialized was skipped "
                            "(%s: %s)",
                            channel,
                            type(exc).__name__,
                            exc,
                        )
        except asyncio.CancelledError:
            cancelled = True
            raise
        finally:
            inbox.received(cancelled, self.channel_layer.receive_linger)

    async def group_add(self, group: str, channel: str) -> None:
        name = self._group_channel(group)
        inbox = self.consumers.get(channel)
        if inbox is None or inbox.closed_reason is not None:
            raise RuntimeError(
                "You can only call group_add() on channels that exist in-process (made by "
                "new_channel() in this event loop). Consumers are encouraged to use the "
                f"common pattern: self.channel_layer.group_add({group!r}, self.channel_name)"
            )
        sub = self._subscription(inbox, name)
        joined = name.encode() in sub
        try:
            async with asyncio.timeout(self.channel_layer.subscribe_timeout):
                await sub.add(name)
        except BaseException:
            if not joined and not sub.closed:
                sub.remove(name)  # not a member after a failure
                inbox.forget(name.encode())
            raise

    async def group_discard(self, group: str, channel: str) -> None:
        name = self._group_channel(group)
        inbox = self.consumers.get(channel)
        if inbox is None:
            return
        sub = inbox.subs.get(self._shard(name))
        if sub is not None and not sub.closed and name.encode() in sub:
            sub.remove(name)
            inbox.forget(name.encode())

    def stats(self) -> dict[str, Any]:
        return {
            "consumers": len(self.consumers),
            "dropped": self._dropped + sum(i.dropped for i in self.consumers.values()),
            "multiplexers": [None if m is None else m.stats() for m in self._mpx],
        }

    def close_now(self) -> None:
        """Close everything without waiting (the loop cannot run any more)."""
        for inbox in list(self.consumers.values()):
            self._release(inbox, _FLUSHED)
        for mpx in self._mpx:
            if mpx is not None:
                mpx.close()
        self._mpx = [None] * len(self._mpx)

    async def aclose(self) -> None:
        """Close every channel and multiplexer and wait until their tasks have ended."""
        mpxs = [m for m in self._mpx if m is not None]
        self.close_now()
        for mpx in mpxs:
            await mpx.aclose()
