"""A backend for `broadcaster <https://pypi.org/project/broadcaster/>`_ on a redismpx multiplexer.

broadcaster's ``Broadcast`` (popular with Starlette and FastAPI) takes a backend object; this
one carries every channel of the process over one redismpx :class:`~redismpx.Multiplexer`::

    from broadcaster import Broadcast
    from redismpx.broadcaster import RedisMPXBackend

    broadcast = Broadcast(backend=RedisMPXBackend("redis://localhost:6379"))

What it changes against broadcaster's own ``RedisBackend``:

* ``subscribe()`` returns once Redis has confirmed the channel (``await sub.add(channel)``):
  what is published after ``broadcast.subscribe(...)`` was entered arrives.
* After a lost connection, a restarted server or a Sentinel failover, the multiplexer
  reconnects with jittered backoff and resubscribes every channel: delivery resumes by itself
  (messages published during the outage are lost, as always with Pub/Sub).
* Messages travel through one bounded buffer (``max_buffer`` messages, ``overflow`` policy)
  between Redis and ``Broadcast``'s listener task; a payload that is not UTF-8 is decoded with
  ``decode_errors`` instead of killing that task.
* ``publish()`` uses the multiplexer's own publish connection, waits at most
  ``publish_timeout`` seconds and raises what :meth:`redismpx.Multiplexer.publish` raises.

broadcaster's ``Broadcast.subscribe`` itself checks for and records a channel's first
subscriber on either side of ``await backend.subscribe(channel)``: two tasks entering
``subscribe`` for the same new channel while the first waits for Redis both become "first",
and the second overwrites the first's queue (which then never receives anything, and raises
``KeyError`` on leaving). :class:`Broadcast` here is ``broadcaster.Broadcast`` with that method
fixed; see its docstring.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
from collections.abc import AsyncIterator
from typing import Any, Literal

try:
    import broadcaster as _broadcaster
    from broadcaster import BroadcastBackend, Event
    from broadcaster._base import Subscriber
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "redismpx.broadcaster needs the broadcaster package: pip install 'redismpx[broadcaster]'"
    ) from exc

from .asgi import resolve_url
from .errors import InvalidArgument, InvalidArgumentType, SubscriptionClosed
from .iterators import ChannelIterator
from .multiplexer import Multiplexer

__all__ = ["DEFAULT_MAX_BUFFER", "Broadcast", "BroadcastOverflow", "RedisMPXBackend"]

DEFAULT_MAX_BUFFER = 10_000
"""Messages the backend holds for ``Broadcast``'s listener by default. One read from the
socket (256 KiB) holds at most about 8,700 of the smallest possible messages, all appended
before the listener can run; the listener then empties the buffer in one go."""

BroadcastOverflow = Literal["drop_oldest", "drop_newest", "latest_per_channel"]
"""The overflow policies the backend accepts (redismpx's ``close`` is refused: see
:class:`RedisMPXBackend`)."""


class RedisMPXBackend(BroadcastBackend):
    """broadcaster's backend interface on a redismpx multiplexer.

    ``RedisMPXBackend(url)`` opens a :class:`~redismpx.Multiplexer` of its own at
    ``connect()`` and closes it at ``disconnect()``; ``url`` is any URL ``Multiplexer`` takes
    (``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://h1:p1,h2:p2/service``) and
    defaults to ``$REDIS_URL``, then ``redis://localhost:6379``. ``multiplexer_options`` go to
    ``Multiplexer`` (``password``, ``ssl_ca_certs``, ``health_check_interval``, ...).

    ``conn`` instead of a URL:

    * a :class:`~redismpx.Multiplexer` (or :class:`~redismpx.ClusterMultiplexer`) you own,
      shared with the rest of your app: the backend adds one subscription to it and closes
      only that subscription at ``disconnect()``; the multiplexer stays open (close it
      yourself). ``multiplexer_options`` are refused then.
    * a ``redis.asyncio.Redis`` client: its connection settings (address, credentials, db,
      TLS, Sentinel) make the backend's own multiplexer, through
      :meth:`Multiplexer.from_redis <redismpx.Multiplexer.from_redis>` with
      ``multiplexer_options`` on top. The client's own connections are not used, and it is
      not closed by the backend.

    Every channel of the backend lives in one channel subscription whose messages wait in one
    bounded buffer for ``Broadcast``'s listener task: at most ``max_buffer`` messages, then
    ``overflow`` decides: ``drop_oldest`` (the default), ``drop_newest`` or
    ``latest_per_channel`` (see docs/delivery.md). The listener moves each message at once to
    the subscribers' own (unbounded) queues, so the buffer only fills while the event loop is
    starved. The ``close`` policy is refused: ``Broadcast`` has no way to hear that its backend
    stopped, and its listener task would end with every subscriber waiting forever.

    Messages are ``broadcaster.Event(channel: str, message: str)``: channel and payload are
    decoded as UTF-8 with ``decode_errors`` (``"replace"``: an invalid byte becomes U+FFFD;
    ``"strict"`` is refused, since one bad payload would end the listener task).

    ``publish(channel, message)`` takes ``str``, bytes-like, ``int`` or ``float`` (as
    redis-py's ``publish`` does, numbers as their ``repr``), waits at most
    ``publish_timeout`` seconds (``None``: no limit) and raises
    :class:`~redismpx.PublishTimeout`, :class:`~redismpx.ConnectionLost` or
    :class:`~redismpx.ServerError` as :meth:`Multiplexer.publish
    <redismpx.Multiplexer.publish>` does; nothing is retried.

    ``connect()`` does not wait for Redis (the multiplexer connects, and reconnects, in the
    background) unless ``wait_connected`` is a number of seconds: then an unreachable Redis
    fails it with ``TimeoutError``. ``subscribe(channel)`` returns once Redis has confirmed
    the channel; during an outage it waits until the connection is back.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        conn: Any = None,
        max_buffer: int = DEFAULT_MAX_BUFFER,
        overflow: BroadcastOverflow = "drop_oldest",
        publish_timeout: float | None = 5.0,
        decode_errors: str = "replace",
        wait_connected: float | None = None,
        **multiplexer_options: Any,
    ) -> None:
        # (BroadcastBackend.__init__ only raises NotImplementedError: not called.)
        if overflow not in ("drop_oldest", "drop_newest", "latest_per_channel"):
            raise InvalidArgument(
                f"overflow must be 'drop_oldest', 'drop_newest' or 'latest_per_channel', not "
                f"{overflow!r} (a closed backend would leave every broadcaster subscriber "
                "waiting forever)"
            )
        if not isinstance(decode_errors, str) or decode_errors == "strict":
            raise InvalidArgument(
                "decode_errors must be a codec error handler other than 'strict' "
                "(e.g. 'replace', 'backslashreplace', 'surrogateescape')"
            )
        codecs.lookup_error(decode_errors)  # LookupError for an unknown handler
        self._shared: Multiplexer | None = None
        self._client: Any = None
        if conn is not None:
            if url is not None:
                raise InvalidArgumentType("give either url or conn, not both")
            if isinstance(conn, Multiplexer):
                if multiplexer_options:
                    raise InvalidArgumentType(
                        "multiplexer options cannot apply to an existing Multiplexer: "
                        f"got {sorted(multiplexer_options)}"
                    )
                self._shared = conn
            elif hasattr(conn, "connection_pool"):
                self._client = conn
            else:
                raise InvalidArgumentType(
                    "conn must be a redismpx Multiplexer or a redis.asyncio.Redis client, "
                    f"not {type(conn).__name__}"
                )
        self._url = url
        self._options = multiplexer_options
        self._max_buffer = max_buffer
        self._overflow: BroadcastOverflow = overflow
        self._publish_timeout = publish_timeout
        self._decode_errors = decode_errors
        self._wait_connected = wait_connected
        self._mpx: Multiplexer | None = None
        self._sub: ChannelIterator | None = None

    def _open(self) -> Multiplexer:
        if self._shared is not None:
            return self._shared
        if self._client is not None:
            return Multiplexer.from_redis(self._client, **self._options)
        return Multiplexer(resolve_url(self._url), **self._options)

    @property
    def multiplexer(self) -> Multiplexer:
        """The multiplexer in use (for ``stats()``, ``state``, a health check); only while
        connected."""
        if self._mpx is None:
            raise RuntimeError("the backend is not connected: call connect() first")
        return self._mpx

    def _subscription(self) -> ChannelIterator:
        if self._sub is None:
            raise RuntimeError("the backend is not connected: call connect() first")
        return self._sub

    # -- broadcaster's backend interface ------------------------------------------------------

    async def connect(self) -> None:
        """Open the multiplexer (unless one was given) and the backend's subscription."""
        if self._sub is not None:
            raise RuntimeError("the backend is already connected")
        mpx = self._open()
        try:
            sub = mpx.subscribe(max_buffer=self._max_buffer, overflow=self._overflow)
            if self._wait_connected is not None:
                await mpx.wait_connected(self._wait_connected)
        except BaseException:
            if mpx is not self._shared:
                await mpx.aclose()
            raise
        self._mpx, self._sub = mpx, sub

    async def disconnect(self) -> None:
        """Close the subscription, and the multiplexer if the backend opened it. Idempotent."""
        sub, self._sub = self._sub, None
        mpx, self._mpx = self._mpx, None
        if sub is not None and not sub.closed:
            sub.close()
        if mpx is not None and mpx is not self._shared:
            await mpx.aclose()

    async def subscribe(self, channel: str) -> None:
        """Add ``channel``; returns once Redis has confirmed it (waits through an outage)."""
        await self._subscription().add(channel)

    async def unsubscribe(self, channel: str) -> None:
        """Remove ``channel``: nothing of it is returned by ``next_published`` any more. A
        no-op once disconnected (``Broadcast`` unsubscribes when a subscriber leaves, which
        may be after ``disconnect()``)."""
        if self._sub is not None and not self._sub.closed:
            self._sub.remove(channel)

    async def publish(self, channel: str, message: Any) -> None:
        """``PUBLISH channel message`` on the multiplexer's publish connection."""
        mpx = self.multiplexer
        await mpx.publish(channel, _payload(message), timeout=self._publish_timeout)

    async def next_published(self) -> Event:
        """The next message of a subscribed channel, as ``Event(channel, message)`` (``str``)."""
        sub = self._subscription()
        try:
            msg = await sub.__anext__()
        except StopAsyncIteration:
            raise SubscriptionClosed(
                "the broadcaster backend's subscription was closed (its multiplexer was closed "
                "before Broadcast.disconnect())"
            ) from None
        errors = self._decode_errors
        return Event(msg.channel.decode("utf-8", errors), msg.data.decode("utf-8", errors))


def _payload(message: Any) -> str | bytes:
    """What redis-py's ``publish`` accepts: str, bytes-like, int and float (not bool)."""
    if isinstance(message, str | bytes):
        return message
    if isinstance(message, bytearray | memoryview):
        return bytes(message)
    if isinstance(message, int | float) and not isinstance(message, bool):
        return repr(message)
    raise InvalidArgumentType(
        f"a broadcaster message must be str, bytes, int or float, not {type(message).__name__}"
        " (serialise it first, e.g. json.dumps)"
    )


class Broadcast(_broadcaster.Broadcast):
    """``broadcaster.Broadcast`` whose ``subscribe`` holds when several tasks subscribe at once.

    broadcaster 0.3.1's ``Broadcast.subscribe`` checks for a channel's first subscriber,
    awaits ``backend.subscribe(channel)``, and only then records the subscriber. A backend
    that waits for Redis (this one, and any backend during an outage) opens a window: every
    task entering ``subscribe`` for that channel meanwhile is "first" too, and the last one to
    return overwrites the others' queues, which then never receive anything and raise
    ``KeyError`` on leaving. A failed or cancelled ``backend.subscribe`` raises ``KeyError``
    too, instead of its own error.

    Here a subscriber's queue is recorded before anything is awaited; the channel's first
    subscriber subscribes the backend while the others wait for that same call (and take over
    if it is cancelled, or share its error if it fails); the last one to leave, also after a
    failure or a cancellation, unsubscribes the backend. Everything else is broadcaster's.
    """

    def __init__(self, url: str | None = None, *, backend: BroadcastBackend | None = None) -> None:
        super().__init__(url, backend=backend)
        # Per channel: the backend.subscribe() in flight or done, resolved with None (done),
        # the exception it raised, or _RETRY (its caller was cancelled: someone else asks).
        self._subscribing: dict[str, asyncio.Future[object]] = {}

    async def disconnect(self) -> None:
        # A backend connected again holds no channel: whoever subscribes next asks it again.
        self._subscribing.clear()
        await super().disconnect()

    @contextlib.asynccontextmanager
    async def subscribe(self, channel: str) -> AsyncIterator[Subscriber]:
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        queues = self._subscribers.setdefault(channel, set())
        queues.add(queue)
        try:
            await self._subscribe_backend(channel)
            yield Subscriber(queue)
        finally:
            queues.discard(queue)
            if not queues and self._subscribers.get(channel) is queues:
                del self._subscribers[channel]
                self._subscribing.pop(channel, None)
                await self._backend.unsubscribe(channel)
            await queue.put(None)

    async def _subscribe_backend(self, channel: str) -> None:
        while True:
            pending = self._subscribing.get(channel)
            if pending is not None:
                outcome = await asyncio.shield(pending)  # at once when it is done
                if outcome is None:
                    return
                if isinstance(outcome, BaseException):
                    raise outcome
                continue  # _RETRY: its caller was cancelled
            pending = self._subscribing[channel] = asyncio.get_running_loop().create_future()
            try:
                await self._backend.subscribe(channel)
            except BaseException as exc:
                if self._subscribing.get(channel) is pending:
                    del self._subscribing[channel]
                pending.set_result(exc if isinstance(exc, Exception) else _RETRY)
                raise
            pending.set_result(None)
            return


_RETRY = object()
