"""``Multiplexer``: many subscriptions over one Redis Pub/Sub connection (a thin facade).

Everything it does goes through its :class:`~redismpx._hub.Hub`; the topology (one server
here) is the hub's router. :class:`~redismpx.ClusterMultiplexer` is the same facade over
another router.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Self, Unpack

from . import _history
from ._factories import SubscriptionFactories
from ._hub import Hub
from ._options import check_seconds, parse_options, split_options
from ._protocol import to_bytes
from ._redispy import settings_of_redis_client
from ._router import SingleRouter
from .errors import InvalidArgument, InvalidArgumentType
from .history import History, Position, check_position
from .sentinel import SENTINEL_KEYS, SentinelRouter, is_sentinel_url, parse_sentinel
from .state import State
from .typedefs import (
    MultiplexerOptions,
)

logger = logging.getLogger("redismpx")

MAX_HISTORY_TTL = 366 * 86400.0  # a year: keys that live longer are not a history any more


class Multiplexer(SubscriptionFactories):
    """Many subscriptions over one Redis Pub/Sub connection.

    The connection starts in the background at the first use inside a running event loop
    (constructing needs no loop), reconnects forever with full-jitter exponential backoff
    (``backoff_base`` doubling up to ``backoff_cap`` seconds), and resubscribes everything.
    Every subscription hears ``on_disconnect(error)`` once per outage and ``on_activation``
    once per name when Redis confirms it again.

    Connection: ``url`` (``redis://``, ``rediss://`` with certificate verification,
    ``unix://``, or ``redis+sentinel://`` for Redis Sentinel: see below) and/or ``host``,
    ``port``, ``unix_socket_path``, ``username``, ``password``, ``db``, ``client_name``,
    ``ssl`` (an :class:`ssl.SSLContext` or ``True``),
    ``ssl_ca_certs``/``ssl_certfile``/``ssl_keyfile``/``ssl_check_hostname``,
    ``connect_timeout`` (seconds, per attempt), ``protocol`` (2, 3, or None for RESP3 where
    the server speaks it).

    Sentinel: ``redis+sentinel://[[user]:password@]host1:26379,host2:26379/service_name[/db]``
    (``rediss+sentinel://`` for TLS), or the keywords ``sentinels`` (``(host, port)`` pairs)
    and ``service_name``, with ``sentinel_username``/``sentinel_password`` for the sentinels'
    own credentials (the other credentials are the data nodes'). The primary the sentinels
    name is used once ``ROLE`` confirms it, and a failover they announce moves the
    connections at once. ``stats()`` then adds ``primary``, ``sentinels`` and ``failovers``.

    Health: after ``health_check_interval`` seconds without traffic a PING is sent; if
    nothing arrives within ``health_check_timeout`` more, the connection is declared dead.
    A silent dead link is therefore detected within ``2 * interval + timeout`` (15 s by
    default).

    Every duration (``connect_timeout``, ``health_check_interval``, ``health_check_timeout``,
    ``backoff_base``, ``backoff_cap``) must be from 0.001 to 86400 seconds (a day), and
    ``backoff_cap >= backoff_base``: anything else raises :class:`InvalidArgument`.

    Delivery defaults for subscriptions: ``max_buffer`` pending messages per subscription with
    async callbacks (the memory bound is ``max_buffer`` messages each) and the ``overflow``
    policy (see the delivery model in the docs). ``chunk_size`` bounds the names per command.
    ``random_source`` (a ``random.random``-like callable) drives the backoff's jitter.

    Defaults: ``connect_timeout`` 5 s, ``health_check_interval`` and ``health_check_timeout``
    5 s, ``backoff_base`` 8 ms, ``backoff_cap`` 512 ms, ``max_buffer`` 1000, ``overflow``
    ``"drop_oldest"``, ``chunk_size`` 1000. An unknown keyword raises
    :class:`InvalidArgumentType`.
    """

    def __init__(self, url: str | None = None, **options: Unpack[MultiplexerOptions]) -> None:
        connection, tuning, sentinel = split_options(options, SENTINEL_KEYS)
        sentinel = {k: v for k, v in sentinel.items() if v is not None}  # None: unset
        if sentinel or is_sentinel_url(url):
            config = parse_sentinel(url, {**connection, **sentinel})
            self._setup(Hub(tuning, lambda host: SentinelRouter(host, config)))
            return
        settings = parse_options(url, **connection)
        self._setup(Hub(tuning, lambda host: SingleRouter(host, settings)))

    def _setup(self, hub: Hub) -> None:
        self._hub = hub
        hub.start_in_running_loop()  # at once when constructed inside a running loop

    @classmethod
    def from_redis(cls, client: Any, **options: Unpack[MultiplexerOptions]) -> Self:
        """A multiplexer with the connection settings of a ``redis.asyncio.Redis`` client
        (``options`` add to or override them)."""
        settings: dict[str, Any] = settings_of_redis_client(client)
        settings.update(options)
        return cls(**settings)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once ``close()`` or ``aclose()`` was called."""
        return self._hub.closed

    @property
    def state(self) -> State:
        """``connecting``, ``connected``, ``disconnected`` or ``closed``."""
        return self._hub.state

    @property
    def last_error(self) -> BaseException | None:
        """The most recent connection error (a failed attempt or a lost connection)."""
        return self._hub.router.last_error

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the connection is up (raises ``TimeoutError`` after ``timeout``).

        Cancelling the caller is safe.
        """
        self._check_open()
        self._hub.start_in_running_loop()
        async with asyncio.timeout(timeout):
            await self._hub.router.wait_connected()

    def close(self) -> None:
        """Close now: the socket, every subscription (pending promises fail with
        :class:`SubscriptionClosed`) and every task. Nothing is called after it returns.
        Idempotent. ``await aclose()`` also waits for the tasks to finish.
        """
        self._hub.close()

    async def aclose(self) -> None:
        """Close (see :meth:`close`) and wait until every task of the multiplexer has ended."""
        await self._hub.aclose()

    async def __aenter__(self) -> Self:
        self._check_open()
        self._hub.start_in_running_loop()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._hub.router.describe()} {self.state.value}>"

    async def publish(
        self,
        channel: str | bytes,
        data: str | bytes,
        *,
        sharded: bool = False,
        timeout: float | None = 5.0,
        history_size: int | None = None,
        history_ttl: float = 3600.0,
    ) -> int:
        """Publish ``data`` on ``channel``; returns the number of receivers Redis reports.

        ``history_size=N``: also keep it in the channel's history (at least the last ``N``
        publications, forgotten ``history_ttl`` seconds after the last one), atomically with
        the publish, for recovering subscriptions and :meth:`history` (docs/history.md).

        ``sharded=True`` sends ``SPUBLISH`` (for shard-channel subscriptions) instead of
        ``PUBLISH``. ``str`` is encoded as UTF-8; anything but ``str`` or bytes-like
        (``bytes``, ``bytearray``, ``memoryview``) raises :class:`InvalidArgumentType`.

        Publishing uses its own connection (never the subscriber one), opened at the first
        publish and kept; every publish of one event-loop turn goes out in one write. While that
        connection is down the publish waits for it (it is re-dialled with the reconnect
        backoff, and follows a Sentinel failover) for up to ``timeout`` seconds (``None``: no
        limit; it may end up to 10 ms late, never early), then raises :class:`PublishTimeout`
        (``sent=False``: nothing was published). Pub/Sub is at-most-once and nothing is retried
        behind your back: a connection that breaks after the message was written raises
        :class:`ConnectionLost` (it may or may not have been published), a reply that does not
        come within ``timeout`` raises :class:`PublishTimeout` with ``sent=True``, and an error
        reply raises :class:`ServerError`. Cancelling the caller before the write means the
        message is not sent.
        """
        self._check_open()
        name = to_bytes(channel, "channel")
        payload = to_bytes(data, "data")
        if not isinstance(sharded, bool):
            raise InvalidArgumentType("sharded must be a bool")
        if timeout is not None and (timeout.__class__ is not float or not 0 < timeout < 1e300):
            check_seconds("timeout", timeout)  # the common case (a float) checked inline
        self._hub.start_in_running_loop()
        if history_size is None:
            return await self._hub.router.publish(name, payload, sharded=sharded, timeout=timeout)
        size, ttl_ms = _check_history(history_size, history_ttl)
        receivers, _ = await _history.publish(
            self._hub.router.call_for,
            name,
            payload,
            size=size,
            ttl_ms=ttl_ms,
            sharded=sharded,
            timeout=timeout,
        )
        return receivers

    async def history(
        self,
        channel: str | bytes,
        *,
        since: Position | None = None,
        limit: int = 100,
        timeout: float | None = 5.0,
    ) -> History:
        """Read ``channel``'s history (kept by ``publish(..., history_size=N)``).

        Without ``since``: the last ``limit`` publications. With ``since``: up to ``limit``
        publications after it, oldest first, and :attr:`History.gap` says if the history no
        longer reaches back to it. :attr:`History.position` is where to continue from: pass
        it as ``since`` to the next call, or to a recovering subscription's ``add`` to go on
        live without a duplicate or a gap. Errors as for :meth:`publish`.
        """
        self._check_open()
        name = to_bytes(channel, "channel")
        if since is not None:
            check_position(since)
        if isinstance(limit, bool) or not isinstance(limit, int):
            raise InvalidArgumentType(f"limit must be an int, not {type(limit).__name__}")
        if not 1 <= limit <= 1_000_000:
            raise InvalidArgument(f"limit must be from 1 to 1000000, not {limit}")
        if timeout is not None:
            check_seconds("timeout", timeout)
        self._hub.start_in_running_loop()
        return await _history.read_history(self._hub.router.call_for, name, since, limit, timeout)

    async def ping(self, timeout: float = 5.0) -> float:
        """End-to-end probe: publish on a private channel and see it arrive here.

        Returns the round trip in seconds; raises ``TimeoutError`` if it does not complete
        within ``timeout`` (which covers connecting, subscribing and delivery). Publishes over
        the connection :meth:`publish` uses. Cancelling it is safe.
        """
        self._check_open()
        check_seconds("timeout", timeout)
        loop = asyncio.get_running_loop()
        channel = b"__redismpx:ping:" + os.urandom(8).hex().encode()
        active: asyncio.Future[None] = loop.create_future()
        arrived: asyncio.Future[float] = loop.create_future()

        def on_message(channel: bytes, data: bytes) -> None:
            if not arrived.done():
                arrived.set_result(loop.time())

        def on_activation(name: bytes) -> None:
            if not active.done():
                active.set_result(None)

        sub = self.new_channel_subscription(on_message, None, on_activation)
        try:
            async with asyncio.timeout(timeout):
                sub.add(channel)
                await active
                sent = await self._hub.router.publish_probe(channel)
                return await arrived - sent
        finally:
            sub.close()

    def stats(self) -> dict[str, Any]:
        """Counters and state, for logs and metrics.

        Keys: ``state``; ``subscriptions`` (live ones); ``channels``, ``patterns`` and
        ``shard_channels`` (names wanted); ``messages_received`` (messages read from Redis);
        ``messages_dispatched`` (deliveries to subscriptions: callbacks called inline or
        messages put in a subscription's buffer; a buffered message may still be dropped);
        ``connects`` and ``reconnects``; ``dropped`` (by overflow policies);
        ``callback_errors`` (exceptions raised by callbacks); ``last_error`` (the text of the
        most recent connection error, never a password, or None); ``publish_connects``
        (connections opened by :meth:`publish`) and ``published`` (publishes Redis answered;
        ``ping`` probes included); ``history_reads`` (history read commands recovering
        subscriptions sent). With
        Sentinel: ``primary`` (``"host:port"`` while connected, else None), ``sentinels``
        (those known) and ``failovers`` (announced failovers followed).
        """
        return self._hub.stats()


def _check_history(size: object, ttl: object) -> tuple[int, int]:
    """``history_size`` and ``history_ttl`` checked; the TTL in milliseconds."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise InvalidArgumentType(f"history_size must be an int, not {type(size).__name__}")
    if not 1 <= size <= 10_000_000:
        raise InvalidArgument(f"history_size must be from 1 to 10000000, not {size}")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise InvalidArgumentType(f"history_ttl must be a number, not {type(ttl).__name__}")
    if not 0.001 <= ttl <= MAX_HISTORY_TTL:  # NaN fails too
        raise InvalidArgument(
            f"history_ttl must be from 0.001 to {MAX_HISTORY_TTL:.0f} s, not {ttl}"
        )
    return size, round(ttl * 1000)
