"""A Litestar channels backend: ``ChannelsPlugin(backend=RedisMPXChannelsBackend(...))``.

Litestar's :class:`~litestar.channels.ChannelsPlugin` funnels every channel of a process
through one backend: it subscribes a channel when its first subscriber arrives, unsubscribes
it when the last one leaves, reads one stream of ``(channel, data)`` events and fans it out.
This backend gives it one :class:`~redismpx.Multiplexer`::

    from litestar import Litestar
    from litestar.channels import ChannelsPlugin
    from redismpx.litestar import RedisMPXChannelsBackend

    channels = ChannelsPlugin(
        backend=RedisMPXChannelsBackend("redis://localhost:6379/0"),
        channels=["chat"],
    )
    app = Litestar(plugins=[channels])

What it changes compared with Litestar's ``RedisChannelsPubSubBackend``:

* ``subscribe()`` returns once Redis has confirmed every channel, so a message published after
  it returned arrives (the stock backend returns once ``SUBSCRIBE`` is written, which Redis may
  process after a ``PUBLISH`` sent meanwhile on another connection).
* A lost connection (a server restart, ``CLIENT KILL``, a Sentinel failover) is reconnected
  with backoff and every channel subscribed again; the event stream never ends because of it.
* ``on_startup()`` after ``on_shutdown()`` works, in the same event loop or in another one.
* ``publish()`` waits through an outage instead of raising, so the plugin's publishing worker
  (which one exception stops for good) survives a server restart.
* The events wait in one bounded buffer (``max_buffer``) with an overflow policy.

Redis Pub/Sub keeps no history: :meth:`RedisMPXChannelsBackend.get_history` raises
``NotImplementedError``, as the stock Pub/Sub backend does. See docs/integrations/litestar.md.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Unpack

from litestar.channels.backends.base import ChannelsBackend

from ._buffer import check_buffer
from .errors import ConnectError, ConnectionLost, InvalidArgument, InvalidArgumentType
from .iterators import ChannelIterator
from .multiplexer import Multiplexer
from .typedefs import ConnectionOptions, OverflowPolicy, SentinelOptions

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DEFAULT_MAX_BUFFER", "BackendMultiplexerOptions", "RedisMPXChannelsBackend"]

DEFAULT_MAX_BUFFER: Final = 10_000
"""Events the backend holds for the plugin's reader before its overflow policy applies."""

_POLICIES: Final = ("drop_oldest", "drop_newest", "latest_per_channel")

logger = logging.getLogger("redismpx.litestar")


class BackendMultiplexerOptions(ConnectionOptions, SentinelOptions, total=False):
    """The :class:`~redismpx.Multiplexer` keywords the backend passes on: all of them but
    ``max_buffer`` and ``overflow``, which are the backend's own (its subscription is the
    only one on a multiplexer it opens)."""

    health_check_interval: float
    health_check_timeout: float
    backoff_base: float
    backoff_cap: float
    chunk_size: int
    random_source: Callable[[], float]


class RedisMPXChannelsBackend(ChannelsBackend):
    """A Litestar :class:`~litestar.channels.backends.base.ChannelsBackend` on Redis Pub/Sub,
    through one redismpx :class:`~redismpx.Multiplexer`.

    ``redis`` says where the multiplexer comes from:

    * a URL (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://h1:p1,h2:p2/name``):
      the backend opens a :class:`~redismpx.Multiplexer` with it and ``multiplexer_options``
      at each startup and closes it at shutdown;
    * a ``redis.asyncio.Redis`` client: the same, with the client's connection settings
      (:meth:`redismpx.Multiplexer.from_redis`; ``multiplexer_options``
      add to them). The client itself is not used and not closed;
    * a :class:`~redismpx.Multiplexer` of your own (shared with the rest of the process): the
      backend makes its subscription on it at startup and closes that subscription at
      shutdown, never the multiplexer. ``multiplexer_options`` are then not accepted.

    Args:
        redis: A URL, a ``redis.asyncio.Redis`` client or a :class:`~redismpx.Multiplexer`.
        max_buffer: Events held for the plugin's reader (one buffer for every channel).
        overflow: What a full buffer does with the next event: ``"drop_oldest"`` (default),
            ``"drop_newest"`` or ``"latest_per_channel"``. Drops are counted in
            ``multiplexer.stats()["dropped"]`` and logged at WARNING. ``"close"`` is refused:
            a closed stream would stop the plugin's delivery for good.
        subscribe_timeout: Seconds :meth:`subscribe` waits for Redis to confirm (``None``: no
            limit). On ``TimeoutError`` the channels stay wanted: they are subscribed as soon
            as Redis is reachable again.
        publish_timeout: Seconds :meth:`publish` waits for its connection and Redis's reply;
            ``None`` (the default): as long as Redis is unreachable, so that the plugin's
            queued ``publish`` survives an outage (see :meth:`publish`).
        **multiplexer_options: Keywords of :class:`~redismpx.Multiplexer` (``password``,
            ``health_check_interval``, ``client_name``...), checked at startup.

    Raises:
        InvalidArgumentType: ``redis`` is none of the three, or ``multiplexer_options`` were
            given with a multiplexer.
        InvalidArgument: A bad ``max_buffer``, ``overflow`` or timeout.
    """

    def __init__(
        self,
        redis: str | Multiplexer | Redis,
        *,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: OverflowPolicy = "drop_oldest",
        subscribe_timeout: float | None = 5.0,
        publish_timeout: float | None = None,
        **multiplexer_options: Unpack[BackendMultiplexerOptions],
    ) -> None:
        if isinstance(redis, Multiplexer):
            if multiplexer_options:
                raise InvalidArgumentType(
                    "multiplexer options cannot apply to a Multiplexer passed in: give them to "
                    f"the Multiplexer (got {', '.join(sorted(multiplexer_options))})"
                )
        elif not isinstance(redis, str) and not hasattr(redis, "connection_pool"):
            raise InvalidArgumentType(
                "redis must be a URL, a redis.asyncio.Redis client or a redismpx.Multiplexer, "
                f"not {type(redis).__name__}"
            )
        check_buffer(max_buffer, overflow)
        if overflow not in _POLICIES:
            raise InvalidArgument(
                f"overflow must be one of {', '.join(_POLICIES)}; not {overflow!r}"
            )
        self._redis = redis
        self._options = multiplexer_options
        self._max_buffer = max_buffer
        self._overflow: OverflowPolicy = overflow
        self._subscribe_timeout = _seconds("subscribe_timeout", subscribe_timeout)
        self._publish_timeout = _seconds("publish_timeout", publish_timeout)
        self._mpx: Multiplexer | None = None
        self._sub: ChannelIterator[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # where on_startup last ran
        self._interrupted = 0  # publishes cut by a lost connection, not logged yet
        self._logged_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def multiplexer(self) -> Multiplexer | None:
        """The multiplexer in use between startup and shutdown (for ``stats()``, health)."""
        return self._mpx

    @property
    def owns_multiplexer(self) -> bool:
        """Whether the backend opens and closes its multiplexer (``redis`` was not one)."""
        return not isinstance(self._redis, Multiplexer)

    def _open(self) -> Multiplexer:
        redis = self._redis
        if isinstance(redis, Multiplexer):
            return redis
        if isinstance(redis, str):
            return Multiplexer(redis, **self._options)
        return Multiplexer.from_redis(redis, **self._options)

    async def on_startup(self) -> None:
        """Open the multiplexer (or take the one given) and the backend's subscription.

        Does not wait for Redis: :meth:`subscribe` does. Calling it again in the same event
        loop before :meth:`on_shutdown` does nothing; after it, or in a new event loop (a
        startup that failed, then a retry), it starts afresh.
        """
        loop = asyncio.get_running_loop()
        sub, mpx = self._sub, self._mpx
        if sub is not None and not sub.closed and self._loop is loop:
            return
        # A multiplexer left by a startup in a loop that has ended since moves to this one
        # at its first use (the old loop's subscription is dropped with that loop).
        fresh = mpx is None or mpx.closed
        if fresh:
            mpx = self._open()
        assert mpx is not None
        try:
            self._sub = mpx.subscribe(
                max_buffer=self._max_buffer, overflow=self._overflow, decode_names=True
            )
        except BaseException:
            if fresh and mpx is not self._redis:
                await mpx.aclose()
            raise
        self._mpx, self._loop = mpx, loop

    async def on_shutdown(self) -> None:
        """Close the subscription (Redis is told to unsubscribe what nobody else holds) and,
        unless it was passed in, the multiplexer. Idempotent."""
        sub, mpx = self._sub, self._mpx
        self._sub = self._mpx = self._loop = None
        if sub is not None:
            sub.close()
        if mpx is not None and mpx is not self._redis:
            await mpx.aclose()

    def _started(self) -> tuple[Multiplexer, ChannelIterator[str]]:
        if self._mpx is None or self._sub is None:
            raise RuntimeError(
                "RedisMPXChannelsBackend is not started: on_startup() was not called, or "
                "on_shutdown() was (ChannelsPlugin calls both)"
            )
        return self._mpx, self._sub

    # -- the channels contract ---------------------------------------------------------------------

    async def subscribe(self, channels: Iterable[str]) -> None:
        """Start listening on ``channels``; returns once Redis confirmed every one of them.

        Raises ``TimeoutError`` after ``subscribe_timeout`` seconds (an outage); the channels
        stay wanted and are subscribed once Redis is back. ``SubscribeRefused`` if Redis
        refuses a channel (an ACL denial).
        """
        _, sub = self._started()
        names = list(channels)
        if not names:
            return
        async with asyncio.timeout(self._subscribe_timeout):
            await sub.add(*names)

    async def unsubscribe(self, channels: Iterable[str]) -> None:
        """Stop listening on ``channels``: no event of theirs is yielded once this returns
        (even one already buffered). Channels not subscribed are ignored, as is a backend
        that is not started."""
        if self._sub is not None:
            self._sub.remove(*channels)

    async def publish(self, data: bytes, channels: Iterable[str]) -> None:
        """``PUBLISH data`` to each of ``channels``, all in one write, in order (not atomic
        like the stock backend's Lua script, which no Pub/Sub receiver can tell apart).

        While Redis is unreachable it waits (``publish_timeout``, no limit by default). A
        publish whose connection broke after it was written may or may not have been
        published: that one is logged at WARNING (rate-limited) and not raised, as Pub/Sub is
        at-most-once anyway, because Litestar's plugin sends its queued ``publish`` calls from
        one worker task that an exception ends for good (every later ``publish`` then stays
        queued and the plugin's shutdown waits for them forever).

        Raises:
            PublishTimeout: No connection or no reply within ``publish_timeout`` seconds.
            ServerError: An error reply (an ACL denial).
            ConnectionLost: The backend shut down before the publish completed.

        With several channels, the first error is raised once every channel's publish has
        ended.
        """
        mpx, _ = self._started()
        names = list(dict.fromkeys(channels))
        timeout = self._publish_timeout
        if len(names) == 1:
            try:
                await mpx.publish(names[0], data, timeout=timeout)
            except ConnectionLost as exc:
                self._interrupted_by(mpx, exc)
            return
        results = await asyncio.gather(
            *(mpx.publish(name, data, timeout=timeout) for name in names), return_exceptions=True
        )
        for result in results:
            if isinstance(result, ConnectionLost):
                self._interrupted_by(mpx, result)
            elif isinstance(result, BaseException):
                raise result

    def _interrupted_by(self, mpx: Multiplexer, exc: ConnectionLost) -> None:
        if isinstance(exc, ConnectError) or mpx.closed:  # not sent (or shut down): raise it
            raise exc
        self._interrupted += 1
        now = time.monotonic()
        if now - self._logged_at >= 1.0:  # at most once a second, with the count
            self._logged_at = now
            logger.warning(
                "%d publish(es) cut by a lost connection after they were written: each may or "
                "may not have been published (%s)",
                self._interrupted,
                exc,
            )
            self._interrupted = 0

    async def stream_events(self) -> AsyncGenerator[tuple[str, bytes], None]:
        """``(channel, data)`` for every message on a subscribed channel, in Redis's order.

        Never ends because of an outage (messages published while disconnected are lost:
        Pub/Sub is at-most-once); ends when the backend shuts down. One consumer at a time
        (the plugin's). Raises ``RuntimeError`` if the backend is not started.
        """
        _, sub = self._started()
        async for message in sub:
            yield message.channel, message.data

    async def get_history(self, channel: str, limit: int | None = None) -> list[bytes]:
        """Not available: Redis Pub/Sub keeps no history (as with Litestar's
        ``RedisChannelsPubSubBackend``). Use ``RedisChannelsStreamBackend`` if you need it.

        Raises:
            NotImplementedError: Always.
        """
        raise NotImplementedError("Redis Pub/Sub keeps no history (RedisMPXChannelsBackend)")

    def __repr__(self) -> str:
        state = "stopped" if self._mpx is None else repr(self._mpx)
        return f"<RedisMPXChannelsBackend {state}>"


def _seconds(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentType(f"{name} must be a number of seconds or None, not {value!r}")
    if not 0 < value < float("inf"):
        raise InvalidArgument(f"{name} must be > 0 and finite, not {value!r}")
    return float(value)
