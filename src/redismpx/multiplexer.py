"""``Multiplexer``: many subscriptions over one Redis Pub/Sub connection."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import ssl as _ssl
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Self

from ._backoff import Backoff
from ._connection import connect
from ._delivery import (
    DEFAULT_MAX_BUFFER,
    OnActivation,
    OnDisconnect,
    OnDrop,
    OnMessage,
    OverflowPolicy,
    Subscriber,
    check_buffer,
)
from ._link import Link, State
from ._options import ConnectOptions, check_link_settings, check_seconds, parse_options
from ._registry import Listener
from .errors import (
    ConnectionLost,
    EventLoopMismatch,
    InvalidArgument,
    InvalidArgumentType,
    SubscriptionClosed,
)
from .iterators import ChannelIterator, PatternIterator
from .promises import PromiseSubscription
from .subscriptions import ChannelSubscription, PatternSubscription

logger = logging.getLogger("redismpx")

# Why the subscriptions of an event loop that ended were closed (``close_reason``).
LOOP_ENDED = "the event loop it was used in has ended; subscribe again in the new loop"


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _tls_of_redis_client(client: Any, ck: dict[str, Any]) -> _ssl.SSLContext | None:
    """The TLS settings of a redis-py client as an SSLContext (None for plain TCP).

    redis-py keeps them as ``ssl_*`` connection arguments of an ``SSLConnection`` class; a
    ``rediss://`` client must never be turned into a plain-text multiplexer.
    """
    if ck.get("ssl_context") is not None:
        return ck["ssl_context"]  # type: ignore[no-any-return]
    cls_name = getattr(client.connection_pool.connection_class, "__name__", "")
    if "SSL" not in cls_name and not any(k.startswith("ssl_") for k in ck):
        return None
    ctx = _ssl.create_default_context(
        cafile=ck.get("ssl_ca_certs"), capath=ck.get("ssl_ca_path"), cadata=ck.get("ssl_ca_data")
    )
    reqs = ck.get("ssl_cert_reqs", "required")
    if reqs in ("none", _ssl.CERT_NONE):
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    else:
        ctx.check_hostname = bool(ck.get("ssl_check_hostname", True))
        if reqs in ("optional", _ssl.CERT_OPTIONAL):
            ctx.verify_mode = _ssl.CERT_OPTIONAL
    if ck.get("ssl_certfile"):
        ctx.load_cert_chain(ck["ssl_certfile"], ck.get("ssl_keyfile"), ck.get("ssl_password"))
    return ctx


class Multiplexer:
    """Many subscriptions over one Redis Pub/Sub connection.

    The connection starts in the background at the first use inside a running event loop
    (constructing needs no loop), reconnects forever with full-jitter exponential backoff
    (``backoff_base`` doubling up to ``backoff_cap`` seconds), and resubscribes everything.
    Every subscription hears ``on_disconnect(error)`` once per outage and ``on_activation``
    once per name when Redis confirms it again.

    Connection: ``url`` (``redis://``, ``rediss://`` with certificate verification,
    ``unix://``) and/or ``host``, ``port``, ``unix_socket_path``, ``username``, ``password``,
    ``db``, ``client_name``, ``ssl`` (an :class:`ssl.SSLContext` or ``True``),
    ``ssl_ca_certs``/``ssl_certfile``/``ssl_keyfile``/``ssl_check_hostname``,
    ``connect_timeout`` (seconds, per attempt), ``protocol`` (2, 3, or None for RESP3 where
    the server speaks it).

    Health: after ``health_check_interval`` seconds without traffic a PING is sent; if
    nothing arrives within ``health_check_timeout`` more, the connection is declared dead.
    A silent dead link is therefore detected within ``2 * interval + timeout`` (15 s by
    default).

    Every duration (``connect_timeout``, ``health_check_interval``, ``health_check_timeout``,
    ``backoff_base``, ``backoff_cap``) must be from 0.001 to 86400 seconds (a day), and
    ``backoff_cap >= backoff_base``: anything else raises :class:`InvalidArgument`.

    Delivery defaults for subscriptions: ``max_buffer`` pending messages per subscription with
    async callbacks (the memory bound is ``max_buffer`` messages each) and the ``overflow``
    policy (see :mod:`redismpx._delivery`). ``chunk_size`` bounds the names per command.
    """

    # Channel subscriptions use SSUBSCRIBE unless asked otherwise (the cluster's default).
    _shard_by_default = False

    def __init__(
        self,
        url: str | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
        unix_socket_path: str | None = None,
        username: str | None = None,
        password: str | None = None,
        db: int | None = None,
        client_name: str | None = None,
        ssl: _ssl.SSLContext | bool | None = None,
        ssl_ca_certs: str | None = None,
        ssl_certfile: str | None = None,
        ssl_keyfile: str | None = None,
        ssl_check_hostname: bool = True,
        connect_timeout: float = 5.0,
        protocol: int | None = None,
        health_check_interval: float = 5.0,
        health_check_timeout: float = 5.0,
        backoff_base: float = 0.008,
        backoff_cap: float = 0.512,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: OverflowPolicy = "drop_oldest",
        chunk_size: int = 1000,
        random_source: Callable[[], float] = random.random,
    ) -> None:
        options = parse_options(
            url,
            host=host,
            port=port,
            unix_socket_path=unix_socket_path,
            username=username,
            password=password,
            db=db,
            client_name=client_name,
            ssl=ssl,
            ssl_ca_certs=ssl_ca_certs,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
            ssl_check_hostname=ssl_check_hostname,
            connect_timeout=connect_timeout,
            protocol=protocol,
        )
        self._init(
            options,
            health_check_interval=health_check_interval,
            health_check_timeout=health_check_timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
            max_buffer=max_buffer,
            overflow=overflow,
            chunk_size=chunk_size,
            random_source=random_source,
        )

    def _init(
        self,
        options: ConnectOptions,
        *,
        health_check_interval: float,
        health_check_timeout: float,
        backoff_base: float,
        backoff_cap: float,
        max_buffer: int,
        overflow: OverflowPolicy,
        chunk_size: int,
        random_source: Callable[[], float],
    ) -> None:
        interval, timeout, base, cap = check_link_settings(
            health_check_interval=health_check_interval,
            health_check_timeout=health_check_timeout,
            backoff_base=backoff_base,
            backoff_cap=backoff_cap,
        )
        self._hc = (interval, timeout)
        check_buffer(max_buffer, overflow)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise InvalidArgumentType("chunk_size must be an int")
        if chunk_size < 1:
            raise InvalidArgument("chunk_size must be >= 1")
        if not callable(random_source):
            raise InvalidArgumentType("random_source must be callable")
        self._options = options
        self._max_buffer = max_buffer
        self._overflow: OverflowPolicy = overflow
        self._backoff = (base, cap, random_source)
        self._chunk_size = chunk_size
        self._subs: dict[Subscriber, None] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._counters = {"dropped": 0, "callback_errors": 0}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop the links run in
        self._link = self._new_link(options)
        self._maybe_start()

    def _new_link(self, options: ConnectOptions) -> Link:
        base, cap, rand = self._backoff
        interval, timeout = self._hc
        assert interval is not None and timeout is not None
        return Link(
            self,
            options,
            backoff=Backoff(base, cap, rand),
            health_check_interval=interval,
            health_check_timeout=timeout,
            chunk_size=self._chunk_size,
        )

    @classmethod
    def from_redis(cls, client: Any, **kwargs: Any) -> Multiplexer:
        """A multiplexer with the connection settings of a ``redis.asyncio.Redis`` client."""
        try:
            ck = dict(client.connection_pool.connection_kwargs)
        except AttributeError:
            raise InvalidArgumentType("from_redis needs a redis.asyncio.Redis client") from None
        settings: dict[str, Any] = {}
        if "path" in ck:
            settings["unix_socket_path"] = ck["path"]
        else:
            settings["host"] = ck.get("host", "localhost")
            settings["port"] = int(ck.get("port", 6379))
        for key in ("username", "password", "db", "client_name"):
            if ck.get(key) is not None:
                settings[key] = ck[key]
        tls = _tls_of_redis_client(client, ck)
        if tls is not None:
            settings["ssl"] = tls
        if ck.get("socket_connect_timeout"):
            settings["connect_timeout"] = ck["socket_connect_timeout"]
        settings.update(kwargs)
        return cls(**settings)

    # -- lifecycle ---------------------------------------------------------------------------

    def _maybe_start(self) -> None:
        """Start (or move) the connections into the running loop, if any.

        Called at every entry point that may be the first one in a loop. A multiplexer moves
        to a new loop once its previous loop is closed: what belonged to the old loop (its
        subscriptions, tasks and connections) is dropped without running anything of it, and
        the connection starts afresh. Serving two open loops at once is refused.
        """
        if self._closed:
            return
        loop = _running_loop()
        if loop is None or loop is self._loop:
            return  # started at the first use inside a loop; or already running here
        old = self._loop
        if old is not None:
            if not old.is_closed():
                raise EventLoopMismatch(
                    f"{self!r} runs in another event loop that is still open; use one "
                    "multiplexer per event loop, or close the old loop first"
                )
            self._abandon_loop()
        self._loop = loop
        self._start()

    def _start(self) -> None:
        self._link.start()

    def _abandon_loop(self) -> None:
        # Subscriptions hold callbacks, futures and tasks of the closed loop: they end with
        # it (closed, with a reason) rather than half-work in the new one.
        for sub in list(self._subs):
            sub._abandon(LOOP_ENDED)
        self._subs.clear()
        self._tasks.clear()  # finished, or never to run again: their loop is closed
        self._abandon_links()

    def _abandon_links(self) -> None:
        self._link.abandon()

    def _check_open(self) -> None:
        if self._closed:
            raise SubscriptionClosed("the multiplexer is closed")

    @property
    def closed(self) -> bool:
        """True once ``close()`` or ``aclose()`` was called."""
        return self._closed

    @property
    def state(self) -> State:
        """``connecting``, ``connected``, ``disconnected`` or ``closed``."""
        return State.CLOSED if self._closed else self._link.state

    @property
    def last_error(self) -> BaseException | None:
        """The most recent connection error (a failed attempt or a lost connection)."""
        return self._link.last_error

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until the connection is up (raises ``TimeoutError`` after ``timeout``)."""
        self._check_open()
        self._maybe_start()
        up = self._link.up
        assert up is not None
        async with asyncio.timeout(timeout):
            await up.wait()

    def close(self) -> None:
        """Close now: the socket, every subscription (pending promises fail with
        :class:`SubscriptionClosed`) and every task. Nothing is called after it returns.
        Idempotent. ``await aclose()`` also waits for the tasks to finish.
        """
        if self._closed:
            return
        self._closed = True
        for sub in list(self._subs):
            sub._shutdown()
        self._subs.clear()
        self._close_links()
        for task in self._tasks:
            task.cancel()

    def _close_links(self) -> None:
        self._link.close()

    async def _wait_links(self) -> None:
        await self._link.wait_closed()

    async def aclose(self) -> None:
        """Close (see :meth:`close`) and wait until every task of the multiplexer has ended."""
        self.close()
        await self._wait_links()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def __aenter__(self) -> Self:
        self._check_open()
        self._maybe_start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Multiplexer {self._options.describe()} {self.state.value}>"

    # -- subscription factories --------------------------------------------------------------

    def _delivery(
        self, max_buffer: int | None, overflow: OverflowPolicy | None
    ) -> tuple[int, OverflowPolicy]:
        return (
            self._max_buffer if max_buffer is None else max_buffer,
            self._overflow if overflow is None else overflow,
        )

    def new_channel_subscription(
        self,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        max_buffer: int | None = None,
        overflow: OverflowPolicy | None = None,
        on_drop: OnDrop | None = None,
        sharded: bool | None = None,
    ) -> ChannelSubscription:
        """A subscription to a set of channels managed with ``add``/``remove``.

        ``sharded``: shard channels (``SSUBSCRIBE``, published with ``SPUBLISH``) rather than
        classic ones. The default is classic channels here and shard channels on a
        :class:`~redismpx.ClusterMultiplexer` (where classic channels live on one home node,
        fed by the cluster-wide broadcast of ``PUBLISH``).
        """
        self._check_open()
        size, policy = self._delivery(max_buffer, overflow)
        sub = ChannelSubscription(
            self,
            on_message,
            on_disconnect,
            on_activation,
            max_buffer=size,
            overflow=policy,
            on_drop=on_drop,
            sharded=self._shard_by_default if sharded is None else sharded,
        )
        self._register(sub)
        return sub

    def new_pattern_subscription(
        self,
        pattern: str | bytes,
        on_message: OnMessage,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
        *,
        max_buffer: int | None = None,
        overflow: OverflowPolicy | None = None,
        on_drop: OnDrop | None = None,
    ) -> PatternSubscription:
        """A subscription to one glob-style pattern (``PSUBSCRIBE``)."""
        self._check_open()
        size, policy = self._delivery(max_buffer, overflow)
        sub = PatternSubscription(
            self,
            pattern,
            on_message,
            on_disconnect,
            on_activation,
            max_buffer=size,
            overflow=policy,
            on_drop=on_drop,
        )
        self._register(sub)
        sub._attach()
        return sub

    def new_promise_subscription(
        self,
        prefix: str | bytes,
        on_disconnect: OnDisconnect | None = None,
        on_activation: OnActivation | None = None,
    ) -> PromiseSubscription:
        """A networked promise system on the channels ``prefix + suffix``.

        ``on_activation(pattern)`` and ``on_disconnect(error)`` are optional: they tell when
        promises can be created and when pending ones were failed by an outage.
        """
        self._check_open()
        sub = PromiseSubscription(self, prefix, on_disconnect, on_activation)
        self._register(sub)
        sub._attach()
        return sub

    def subscribe(
        self,
        *channels: str | bytes,
        max_buffer: int | None = None,
        overflow: OverflowPolicy | None = None,
        sharded: bool | None = None,
    ) -> ChannelIterator:
        """Channels to consume with ``async for`` (``async with mpx.subscribe("a") as sub``).

        Yields :class:`~redismpx.iterators.Message`; ``sub.events()`` also yields activation,
        disconnect and drop events in order. ``add``/``remove`` work as on any channel
        subscription; leaving the ``async with`` block closes it. ``sharded`` defaults to what
        ``new_channel_subscription`` does (classic channels here, shard channels on a
        :class:`~redismpx.ClusterMultiplexer`).
        """
        self._check_open()
        size, policy = self._delivery(max_buffer, overflow)
        if sharded is None:
            sharded = self._shard_by_default
        sub = ChannelIterator(self, max_buffer=size, overflow=policy, sharded=sharded)
        sub.add(*channels)  # validates every name before registering anything
        self._register(sub)
        return sub

    def psubscribe(
        self,
        pattern: str | bytes,
        *,
        max_buffer: int | None = None,
        overflow: OverflowPolicy | None = None,
    ) -> PatternIterator:
        """A pattern to consume with ``async for``; messages carry the matching pattern."""
        self._check_open()
        size, policy = self._delivery(max_buffer, overflow)
        sub = PatternIterator(self, pattern, max_buffer=size, overflow=policy)
        self._register(sub)
        sub._attach()
        return sub

    def _register(self, sub: Subscriber) -> None:
        self._maybe_start()
        self._subs[sub] = None
        if sub._q is not None and self._link.loop is not None:
            sub._ensure_consumer()  # else at its first event, which runs in the loop

    # -- plumbing used by subscriptions ------------------------------------------------------

    def _link_for(self, kind: int, name: bytes) -> Link:
        return self._link

    def _add(self, kind: int, name: bytes, listener: Listener) -> None:
        if _running_loop() is not self._loop:
            # First use in this loop (or before any): start or move before registering.
            self._maybe_start()
            if getattr(listener, "closed", False):
                raise SubscriptionClosed("the subscription is closed", LOOP_ENDED)
        link = self._link_for(kind, name)
        if link.registry.add(kind, name, listener):
            assert link.loop is not None  # active implies connected, hence started
            link.loop.call_soon(self._late_activation, link, kind, name, listener, link.epoch)
        elif link._flush_handle is None:
            link.schedule_flush()

    def _late_activation(
        self, link: Link, kind: int, name: bytes, listener: Listener, epoch: int
    ) -> None:
        # B29: a joiner of an already-active name is told in a later loop turn, if it still
        # holds the name and nothing happened to the connection in between.
        registry = link.registry
        if (
            link.epoch == epoch
            and registry.is_active(kind, name)
            and registry.holds(kind, name, listener)
        ):
            listener._activated(name)  # type: ignore[attr-defined]

    def _remove(self, kind: int, name: bytes, listener: Listener) -> None:
        link = self._link_for(kind, name)
        link.registry.remove(kind, name, listener)
        if link._flush_handle is None:
            link.schedule_flush()

    def _refresh(self, kind: int, name: bytes) -> None:
        self._link_for(kind, name).registry.refresh(kind, name)

    def _forget(self, sub: Subscriber) -> None:
        self._subs.pop(sub, None)
        if not self._subs:
            self._subs.clear()  # give the memory back: dicts never shrink on deletion

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        loop = self._link.loop or asyncio.get_running_loop()
        task = loop.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _count_dropped(self, n: int) -> None:
        self._counters["dropped"] += n

    def _count_callback_error(self) -> None:
        self._counters["callback_errors"] += 1

    # -- link events -------------------------------------------------------------------------

    def _link_up(self, link: Link) -> None:
        pass

    def _link_lost(self, link: Link, error: BaseException) -> None:
        # B6/B7: every live subscription hears of the outage once, before any reconnect.
        for sub in list(self._subs):
            sub._disconnected(error)

    def _names_lost(self, link: Link, kind: int, name: bytes, listeners: list[Listener]) -> None:
        # The server dropped a name by itself (a shard channel moved): subscribe again.
        error = ConnectionLost(f"Redis dropped {name!r} (its slot moved); resubscribing")
        for listener in listeners:
            listener._disconnected(error)  # type: ignore[attr-defined]
        if link.registry.retry(kind, name):
            link.schedule_flush()

    async def ping(self, timeout: float = 5.0) -> float:
        """End-to-end probe: publish on a private channel and see it arrive here.

        Returns the round trip in seconds; raises ``TimeoutError`` if it does not complete
        within ``timeout`` (which covers connecting, subscribing and delivery). Uses one extra
        short-lived connection to publish. Cancelling it is safe.
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
                sent = await self._publish_probe(channel)
                return await arrived - sent
        finally:
            sub.close()

    async def _publish_probe(self, channel: bytes) -> float:
        """Publish ``ping``'s message the way its subscription listens; returns when it was sent.

        Here a classic ``PUBLISH`` over a short-lived connection, opened before the clock
        starts (the round trip does not count the connection).
        """
        publisher = await connect(self._link.options)
        try:
            sent = asyncio.get_running_loop().time()
            await publisher.request(b"PUBLISH", channel, b"ping")
            return sent
        finally:
            publisher.close()

    # -- introspection -----------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counters and state, for logs and metrics.

        Keys: ``state``; ``subscriptions`` (live ones); ``channels``, ``patterns`` and
        ``shard_channels`` (names wanted); ``messages_received`` (messages read from Redis);
        ``messages_dispatched`` (deliveries to subscriptions: callbacks called inline or
        messages put in a subscription's buffer; a buffered message may still be dropped);
        ``connects`` and ``reconnects``; ``dropped`` (by overflow policies);
        ``callback_errors`` (exceptions raised by callbacks); ``last_error`` (the text of the
        most recent connection error, never a password, or None).
        """
        link = self._link
        channels, patterns, shard_channels = link.registry.counts()
        return {
            "state": self.state.value,
            "subscriptions": len(self._subs),
            "channels": channels,
            "patterns": patterns,
            "shard_channels": shard_channels,
            "messages_received": link.messages_received(),
            "messages_dispatched": link.messages_dispatched(),
            "connects": link.connects,
            "reconnects": link.reconnects,
            "dropped": self._counters["dropped"],
            "callback_errors": self._counters["callback_errors"],
            "last_error": None if link.last_error is None else str(link.last_error),
        }

    # -- Host protocol (redismpx._subscriber.Host) -------------------------------------------
    # What subscriptions call, under public names: moved to the hub at the architecture merge.
    # No docstrings: not user API (the API docs render members with docstrings only).

    def start_in_running_loop(self) -> None:
        self._maybe_start()

    def add(self, kind: int, name: bytes, listener: Listener) -> None:
        self._add(kind, name, listener)

    def remove(self, kind: int, name: bytes, listener: Listener) -> None:
        self._remove(kind, name, listener)

    def refresh(self, kind: int, name: bytes) -> None:
        self._refresh(kind, name)

    def forget(self, sub: Any) -> None:
        self._forget(sub)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        return self._spawn(coro, name)

    def count_dropped(self, n: int) -> None:
        self._count_dropped(n)

    def count_callback_error(self) -> None:
        self._count_callback_error()
