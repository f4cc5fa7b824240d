"""A python-socketio client manager on redismpx: ``AsyncRedisManager``, with redismpx's
reconnects.

``socketio.AsyncRedisManager`` bridges the ``AsyncServer`` instances of a fleet through one
Redis channel. Its listener reconnects after 1, 2, 4 ... 60 s without jitter, so a server that
lost Redis stays deaf for up to a minute after Redis is back (and the whole fleet retries in
step); a client connected right after a server started can miss what another server emits
before that server's ``SUBSCRIBE`` is in place. :class:`AsyncRedisMPXManager` takes the same
arguments and speaks the same wire format (JSON messages on the same channel, so stock and
redismpx servers can share a fleet during a migration), and:

- listens through one redismpx channel subscription: it reconnects with full-jitter backoff
  (8 ms doubling to 512 ms by default) after a restart, a failover, a ``CLIENT KILL`` or an
  output-buffer kill, and never stops trying;
- reads the socket whatever the Socket.IO handlers do: messages wait in a bounded buffer
  (``max_buffer`` messages, ``overflow`` policy ``"drop_oldest"`` by default; each drop is
  counted and logged) instead of piling up in Redis until Redis kills the connection;
- publishes through the multiplexer's own command connection (``publish_timeout``);
- follows Redis Sentinel failovers (``redis+sentinel://`` URLs, in socketio's form);
- holds a client's connection until the server listens, right after start (``startup_wait``).

Usage::

    import socketio
    from redismpx.socketio import AsyncRedisMPXManager

    sio = socketio.AsyncServer(
        async_mode="asgi",
        client_manager=AsyncRedisMPXManager("redis://localhost:6379/0"),
    )

See ``docs/integrations/socketio.md`` for what it changes and the measured recovery times.
"""

from __future__ import annotations

import asyncio
import json as _stdlib_json
import logging
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

try:
    # python-socketio has no type hints (no py.typed): its classes are Any here.
    from socketio.async_pubsub_manager import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        AsyncPubSubManager,
    )
    from socketio.redis_manager import (  # type: ignore[import-untyped, import-not-found, unused-ignore]
        parse_redis_sentinel_url,
    )
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "redismpx.socketio needs python-socketio >= 5.16: pip install 'redismpx[socketio]'"
    ) from exc

from ._options import check_seconds, parse_options, split_options
from ._redispy import REDISPY_TUNING_KEYWORDS
from .errors import RedisMPXError, SubscriptionClosed
from .history import Gap
from .iterators import Activated, Disconnected, Dropped, Message
from .multiplexer import Multiplexer
from .sentinel import SENTINEL_KEYS, parse_sentinel
from .typedefs import MultiplexerOptions, OverflowPolicy

__all__ = ["AsyncRedisMPXManager"]

logger = logging.getLogger("redismpx.socketio")

# URL schemes, as socketio.AsyncRedisManager accepts them.
_PLAIN_SCHEMES = ("redis", "rediss", "valkey", "valkeys", "unix")
_SENTINEL_SCHEMES = ("redis+sentinel", "valkey+sentinel")

# redis-py keywords of ``redis_options`` that mean the same thing here under another name.
_RENAMED = {"socket_connect_timeout": "connect_timeout"}

# redis-py keywords that tune redis-py's own sockets, pools and retries: redismpx has its own
# (the heartbeat, the reconnect backoff), so they are accepted and ignored, with a warning.
_IGNORED = REDISPY_TUNING_KEYWORDS | {
    "auto_close_connection_pool",
    "connection_pool",
    "min_other_sentinels",
    "force_master_ip",
}

# Every keyword Multiplexer takes (connection, tuning, Sentinel) but the buffer's, which the
# manager takes itself.
_MPX_KEYS = frozenset(MultiplexerOptions.__optional_keys__) - {"max_buffer", "overflow"}


def _translate_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """``redis_options`` as Multiplexer keywords, and the redis-py keywords ignored.

    redismpx's own keywords pass as they are; redis-py's are renamed where they have an
    equivalent (``socket_connect_timeout``, ``ssl_cert_reqs``, ``sentinel_kwargs``).
    Anything else raises ``TypeError``, as a misspelt keyword does.
    """
    result: dict[str, Any] = {}
    ignored: list[str] = []
    verify = True
    for key, value in options.items():
        if key in _MPX_KEYS:
            result[key] = value
        elif key in _RENAMED:
            if value is not None:
                result[_RENAMED[key]] = value
        elif key == "ssl_cert_reqs":
            if value in ("none", ssl.CERT_NONE):
                verify = False
            elif value not in ("required", "optional", ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL, None):
                raise ValueError("ssl_cert_reqs must be 'none', 'optional' or 'required'")
        elif key == "sentinel_kwargs":
            for inner, inner_value in (value or {}).items():
                if inner in ("username", "password"):
                    result[f"sentinel_{inner}"] = inner_value
                elif inner not in _IGNORED and inner not in _RENAMED:
                    raise TypeError(
                        f"unknown option in redis_options['sentinel_kwargs']: {inner!r}"
                    )
        elif key in _IGNORED:
            ignored.append(key)
        else:
            raise TypeError(f"unknown option in redis_options: {key!r}")
    if not verify and not isinstance(result.get("ssl"), ssl.SSLContext):
        # redis-py's ssl_cert_reqs='none': TLS without certificate verification.
        context = ssl.create_default_context(cafile=result.pop("ssl_ca_certs", None))
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        certfile = result.pop("ssl_certfile", None)
        if certfile is not None:
            context.load_cert_chain(certfile, result.pop("ssl_keyfile", None))
        result.pop("ssl_keyfile", None)
        result.pop("ssl_check_hostname", None)
        if result.get("ssl") is not False:
            result["ssl"] = context
    return result, ignored


class AsyncRedisMPXManager(AsyncPubSubManager):  # type: ignore[misc]
    """Redis client manager for ``socketio.AsyncServer`` on a redismpx multiplexer.

    The arguments of ``socketio.AsyncRedisManager``, with the same meaning:

    Args:
        url: ``redis://``, ``rediss://`` (TLS), ``valkey://``, ``valkeys://``, ``unix://``, or
            ``redis+sentinel://[user:password@]host1:port1,host2:port2/DB/SERVICE`` (also
            ``valkey+sentinel://``), parsed by socketio's own parser: the db comes *before*
            the service name, and without a service name the ``channel`` is used, as socketio
            does.
        channel: the Redis channel every server of the fleet uses.
        write_only: only publish (an emitter outside the servers); never listen.
        logger: a logger; the server's when not given.
        json: a JSON module for a write-only manager (a server sets its own).
        redis_options: keywords for the connection. redismpx's own
            (:class:`~redismpx.Multiplexer`'s: ``password``, ``ssl``, ``connect_timeout``,
            ``health_check_interval``, ``backoff_cap``, ``sentinel_password``...), or
            redis-py's where they have an equivalent (``socket_connect_timeout``,
            ``ssl_cert_reqs``, ``sentinel_kwargs``); redis-py's socket, pool and retry
            tuning (``socket_timeout``, ``retry``...) is ignored with a warning.

    And, as keywords:

    Args:
        max_buffer: messages received but not yet handled that are kept (per server);
            beyond that, ``overflow`` decides.
        overflow: ``"drop_oldest"`` (the default), ``"drop_newest"``, or ``"close"``
            (the listener is closed and subscribes afresh; what was buffered is lost).
            Drops are counted in ``multiplexer.stats()["dropped"]`` and logged.
        publish_timeout: how long an emit waits for Redis (connection and reply) before it
            is given up and logged, as ``AsyncRedisManager`` gives up; ``None``: no limit.
        startup_wait: after the server starts, a client's connection is completed only once
            this server listens on Redis, so that what another server emits to it right away
            arrives; at most this many seconds after start (Redis down), 0 to never wait.
        multiplexer: a :class:`~redismpx.Multiplexer` to use (shared with the rest of the
            app) instead of one of its own built from ``url``; it is not closed by
            :meth:`aclose`.

    Publishing is at-most-once, as Redis Pub/Sub is: an emit that times out or loses its
    connection is logged and not retried (``AsyncRedisManager`` retries once, which can
    deliver twice).
    """

    name = "redismpx"

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        channel: str = "socketio",
        write_only: bool = False,
        logger: Any = None,
        json: Any = None,
        redis_options: Mapping[str, Any] | None = None,
        *,
        max_buffer: int = 10_000,
        overflow: OverflowPolicy = "drop_oldest",
        publish_timeout: float | None = 5.0,
        startup_wait: float = 5.0,
        multiplexer: Multiplexer | None = None,
    ) -> None:
        super().__init__(channel=channel, write_only=write_only, logger=logger)
        if json is not None:  # set here: the base class takes ``json`` only since 5.17
            self.json = json
        self.redis_url = url
        self.redis_options = dict(redis_options or {})
        self.max_buffer = max_buffer
        self.overflow: OverflowPolicy = overflow
        self.publish_timeout = publish_timeout
        self.startup_wait = startup_wait
        self._mpx = multiplexer
        self._owns_mpx = multiplexer is None
        self._mpx_url: str | None = None
        self._mpx_options: dict[str, Any] = {}
        if multiplexer is None:
            self._mpx_url, self._mpx_options = self._connection_settings()
        # Checked now (the multiplexer itself is made at the first use, in the server's loop).
        split_options({"max_buffer": max_buffer, "overflow": overflow})
        check_seconds("publish_timeout", publish_timeout, allow_none=True)
        if isinstance(startup_wait, bool) or not isinstance(startup_wait, int | float):
            raise TypeError(f"startup_wait must be a number of seconds, not {startup_wait!r}")
        self._listening = asyncio.Event()
        self._ever_listened = False
        self._startup_deadline: float | None = None
        self._deaf_since: float | None = None

    # -- configuration -------------------------------------------------------------------------

    def _connection_settings(self) -> tuple[str | None, dict[str, Any]]:
        """The URL and keywords of the multiplexer, validated (``ValueError``/``TypeError``)."""
        url = self.redis_url
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, not {type(url).__name__}")
        scheme = urlsplit(url).scheme.lower()
        options, ignored = _translate_options(self.redis_options)
        if ignored:
            self._log().warning(
                "redis_options %s tune redis-py and are ignored by redismpx (it has its own "
                "heartbeat and reconnect backoff)",
                ", ".join(sorted(ignored)),
            )
        if scheme in _SENTINEL_SCHEMES:
            sentinels, service_name, from_url = parse_redis_sentinel_url(url)
            options.update(from_url)  # as socketio: the URL's credentials and db win
            options["sentinels"] = sentinels
            options["service_name"] = service_name or self.channel
            connection, _, sentinel = split_options(options, SENTINEL_KEYS)
            parse_sentinel(None, {**connection, **sentinel})
            return None, options
        if scheme not in _PLAIN_SCHEMES:
            raise ValueError(f"Unsupported Redis URL scheme: {scheme}")
        connection, _, _ = split_options(options)
        parse_options(url, **connection)
        return url, options

    @property
    def multiplexer(self) -> Multiplexer:
        """The multiplexer (made at the first use): ``stats()``, ``state``, ``ping()``."""
        if self._mpx is None:
            self._mpx = Multiplexer(self._mpx_url, **self._mpx_options)
        return self._mpx

    @property
    def listening(self) -> bool:
        """Whether Redis has confirmed this server's subscription and it is still in place."""
        return self._listening.is_set()

    def _log(self) -> Any:
        """The ``logger`` given, else ``redismpx.socketio`` (not the server's logger, which
        python-socketio sets to ERROR by default: a deaf listener must not be silent)."""
        return self.logger or logger

    def _dumps(self, data: Any) -> Any:
        codec = getattr(self, "json", None) or _stdlib_json  # BaseManager.json since 5.17
        return codec.dumps(data)

    # -- the AsyncPubSubManager interface ------------------------------------------------------

    def initialize(self) -> None:
        super().initialize()
        if not self.write_only and self.startup_wait > 0:
            self._startup_deadline = time.monotonic() + self.startup_wait

    async def _publish(self, data: Any) -> int | None:
        """Publish one message on the channel; the receivers Redis counted, or ``None`` if
        it could not be published (logged, as ``AsyncRedisManager`` does)."""
        try:
            return await self.multiplexer.publish(
                self.channel, self._dumps(data), timeout=self.publish_timeout
            )
        except (RedisMPXError, TimeoutError) as exc:
            self._log().error(
                "Cannot publish to redis (redismpx): %s: %s",
                type(exc).__name__,
                exc,
                extra={"redis_exception": str(exc)},
            )
            return None

    async def _listen(self) -> AsyncIterator[bytes]:
        """The messages of the channel, for ``_thread``; ends only if the multiplexer is
        closed. A subscription closed by the ``close`` overflow policy is replaced."""
        mpx = self.multiplexer
        while not mpx.closed:
            try:
                sub = mpx.subscribe(
                    self.channel, max_buffer=self.max_buffer, overflow=self.overflow
                )
            except SubscriptionClosed:
                break
            except Exception as exc:  # never a hot loop: _thread calls _listen again at once
                self._on_deaf(exc, "Retrying in 1 s")
                await asyncio.sleep(1.0)
                continue
            try:
                async for event in sub.events():
                    if isinstance(event, Message):
                        yield event.data
                    else:
                        self._on_event(event)
            except SubscriptionClosed as exc:  # the "close" overflow policy
                self._on_deaf(exc, "Subscribing afresh")
                self._deaf_since = None  # deaf since the overflow, not since now
                await asyncio.sleep(0)
            finally:
                sub.close()
        self._listening.clear()

    def _on_event(self, event: Activated | Disconnected | Dropped | Gap) -> None:
        loop = asyncio.get_running_loop()
        if isinstance(event, Activated):
            self._listening.set()
            if self._deaf_since is not None:
                self._log().warning(
                    "redismpx: listening on Redis again after %.3f s",
                    loop.time() - self._deaf_since,
                )
            elif not self._ever_listened:
                self._log().info("redismpx: listening on Redis channel %r", self.channel)
            self._ever_listened = True
            self._deaf_since = None
        elif isinstance(event, Disconnected):
            self._on_deaf(event.error)
        elif isinstance(event, Dropped):
            self._log().warning(
                "redismpx: %d Socket.IO message(s) dropped: the handlers fell %d messages "
                "behind (overflow policy %r)",
                event.count,
                self.max_buffer,
                self.overflow,
            )

    def _on_deaf(self, error: BaseException, then: str = "Reconnecting") -> None:
        self._listening.clear()
        if self._deaf_since is None:
            self._deaf_since = asyncio.get_running_loop().time()
        self._log().error(
            "redismpx: not listening on Redis (%s: %s); messages published until it is back "
            "are lost. %s.",
            type(error).__name__,
            error,
            then,
        )

    async def _wait_until_listening(self) -> None:
        """Right after start, hold a connecting client until this server listens."""
        deadline = self._startup_deadline
        thread = getattr(self, "thread", None)
        if deadline is None or self._listening.is_set():
            return
        if self._ever_listened or not isinstance(thread, asyncio.Future) or thread.done():
            self._startup_deadline = None  # past the start, or no listener task to wait for
            return
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            self._startup_deadline = None
            return
        try:
            async with asyncio.timeout(remaining):
                await self._listening.wait()
        except TimeoutError:
            self._startup_deadline = None
            self._log().error(
                "redismpx: not listening on Redis %.1f s after start; accepting clients anyway",
                self.startup_wait,
            )

    async def pre_connect(self, *args: Any, **kwargs: Any) -> Any:
        # python-socketio >= 5.18 calls it before sending CONNECT to the client.
        await self._wait_until_listening()
        return await super().pre_connect(*args, **kwargs)

    async def connect(self, *args: Any, **kwargs: Any) -> Any:
        # python-socketio < 5.18 calls it before sending CONNECT to the client.
        await self._wait_until_listening()
        return await super().connect(*args, **kwargs)

    # -- closing -------------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Stop listening and close the multiplexer (unless it was passed in). Call it when
        the server stops (``AsyncServer.shutdown()`` does not stop the listener)."""
        thread = getattr(self, "thread", None)
        if isinstance(thread, asyncio.Future) and not thread.done():
            thread.cancel()
            await asyncio.wait([thread])
        self._listening.clear()
        if self._mpx is not None and self._owns_mpx:
            await self._mpx.aclose()
