"""One Redis connection: an asyncio Protocol, its handshake, its reader and its heartbeat.

The life of a connection, in order: ``connect()`` opens the transport and runs the handshake
(request/response, replies matched in order); ``start_pubsub()`` hands ``data_received`` to
the sans-I/O :class:`~redismpx._reader.PubSubReader`, which dispatches messages inline; the
:class:`Heartbeat` sends a PING after ``interval`` seconds without traffic and aborts the
connection if nothing arrives within ``timeout`` more; ``closed`` resolves with the cause.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

import hiredis

from ._options import ConnectOptions
from ._protocol import encode_command
from ._reader import PubSubReader
from .errors import ConnectError, ConnectionLost, HeartbeatTimeout, ServerError

if TYPE_CHECKING:
    from ._link import Link

_ReplyError = hiredis.ReplyError


#: Opens a connection, handshake done: to a fixed address, or to the primary a Sentinel names.
Dial = Callable[[], Awaitable["Connection"]]


class Pinger(Protocol):
    """Who the heartbeat asks to send a PING (the link, or a command connection)."""

    def send_ping(self) -> None:
        """Write one PING (its reply counts as traffic)."""


# Servers quote the arguments of a command they refuse ("ERR unknown command 'HELLO', with
# args beginning with: '3' 'AUTH' 'default' 'hunter2'"), each cut to fit a length budget: a
# cut-off password would escape a plain search-and-replace, so the whole echo goes.
_ARGS_ECHO = re.compile(r",?\s*with args beginning with:.*", re.DOTALL)


def redact_reply(reply: str, secrets: tuple[bytes, ...]) -> str:
    """An error reply to a command that carried ``secrets``, with no trace of them left."""
    text, echoed = _ARGS_ECHO.subn("", reply)
    if echoed:
        text += ", with args beginning with: (redacted)"
    # Other servers and proxies may word it differently: never let a whole secret through.
    for secret in secrets:
        if secret:
            text = text.replace(secret.decode(errors="replace"), "(redacted)")
    return text


class Heartbeat:
    """B8's timing, sans-I/O: after each wait, ``due`` says what to do and how long to wait.

    Wait ``interval``; if no traffic came, PING and wait ``timeout``; if still nothing came,
    the link is dead. Any traffic starts over. The caller owns the clock.
    """

    IDLE: Final = 0
    PING: Final = 1
    DEAD: Final = 2

    __slots__ = ("interval", "timeout", "waiting")

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self.waiting = False  # a PING was sent after a silent interval

    def due(self, traffic: bool) -> tuple[int, float]:
        """``(action, seconds to the next call)``; ``traffic``: anything read since the last."""
        if traffic:
            self.waiting = False
            return self.IDLE, self.interval
        if self.waiting:
            return self.DEAD, 0.0
        self.waiting = True
        return self.PING, self.timeout

    def error(self) -> HeartbeatTimeout:
        return HeartbeatTimeout(
            f"no reply to PING within {self.timeout:g} s (after {self.interval:g} s of silence)"
        )


class Connection(asyncio.Protocol):
    """The Protocol of one Pub/Sub connection (see the module docstring for its life)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._parser = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._replies: deque[asyncio.Future[Any]] = deque()
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        self.resp = 2
        self.reader: PubSubReader | None = None  # set by ``start_pubsub``
        self._rx = False  # traffic seen since the last heartbeat tick
        self._heartbeat: Heartbeat | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._pinger: Pinger | None = None  # asked to PING by the heartbeat
        self._on_data: Callable[[bytes], None] = self._handshake_data
        self._on_push: Callable[[Any], None] | None = None  # see ``start_events``

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the connection runs in."""
        return self._loop

    @property
    def received(self) -> int:
        """Messages read on this connection."""
        return 0 if self.reader is None else self.reader.received

    @property
    def dispatched(self) -> int:
        """Deliveries handed to subscriptions (callbacks called or messages buffered)."""
        return 0 if self.reader is None else self.reader.dispatched

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses: no isinstance check.
        self._transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)

    def data_received(self, data: bytes) -> None:
        # One indirection per chunk (not per message): uvloop caches ``data_received`` at
        # connection time, so the switch to Pub/Sub mode swaps ``_on_data`` instead.
        self._rx = True
        self._on_data(data)

    def _handshake_data(self, data: bytes) -> None:
        # Handshake mode: replies complete the futures of ``request`` in order.
        self._parser.feed(data)
        while True:
            try:
                frame = self._parser.gets()
            except hiredis.ProtocolError as exc:
                self.abort(ConnectionLost(f"protocol error: {exc}"))
                return
            if frame is False:
                return
            if not self._replies:
                if self._on_push is not None:
                    self._on_push(frame)
                    continue
                self.abort(ConnectionLost(f"unexpected reply during handshake: {frame!r}"))
                return
            fut = self._replies.popleft()
            if not fut.done():
                fut.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_heartbeat()
        error: BaseException
        closed = self.closed
        if closed.done() and not closed.cancelled():
            # Aborted: the reason given then (heartbeat, close, failover). Cancelled when
            # asyncio.run ended with the multiplexer still open: then it is as below.
            error = closed.result()
        elif exc is None:
            error = ConnectionLost("connection closed by the server")
        elif isinstance(exc, ConnectionLost):
            error = exc
        else:
            error = ConnectionLost(f"connection lost: {exc!r}")
            error.__cause__ = exc
        for fut in self._replies:
            if not fut.done():
                fut.set_exception(error)
        self._replies.clear()
        if not self.closed.done():
            self.closed.set_result(error)
        self._stop_reading()

    def eof_received(self) -> bool | None:
        return False  # close the transport: a half-closed Pub/Sub link is useless

    # -- writing -----------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def abort(self, error: BaseException) -> None:
        """End the connection now; ``closed`` resolves with ``error``.

        Nothing more read from it is dispatched, not even the rest of the chunk being read:
        ``connection_lost`` comes a loop turn later, and the reader stops now.
        """
        self._stop_reading()
        if not self.closed.done():
            self.closed.set_result(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    def send(self, data: bytes, replies: list[asyncio.Future[Any]]) -> None:
        """Write commands already encoded; their replies complete ``replies``, in order.

        A reply is the decoded frame (an error reply is a ``hiredis.ReplyError`` value): the
        caller turns it into an exception. A future cancelled meanwhile is skipped.
        """
        self._replies.extend(replies)
        self.write(data)

    @property
    def awaiting(self) -> int:
        """Replies not read yet."""
        return len(self._replies)

    # -- handshake ---------------------------------------------------------------------------

    async def request(self, *args: bytes, secrets: tuple[bytes, ...] = ()) -> Any:
        """Send one command and return its reply; an error reply raises :class:`ServerError`.

        ``secrets``: credentials among ``args``; the server may echo them in an error reply,
        which is then redacted (see :func:`redact_reply`).
        """
        fut: asyncio.Future[Any] = self._loop.create_future()
        self._replies.append(fut)
        self.write(encode_command(*args))
        reply = await fut
        if isinstance(reply, _ReplyError):
            text = str(reply)
            if secrets:
                text = redact_reply(text, secrets)
            # Raised outside any ``except``: nothing holding the raw reply gets chained.
            raise ServerError(text, args[0].decode(errors="replace"))
        return reply

    async def handshake(self, opts: ConnectOptions) -> None:
        """HELLO (RESP3 where the server speaks it), AUTH, CLIENT SETNAME and SELECT."""
        auth: tuple[bytes, ...] = ()
        secrets: tuple[bytes, ...] = ()
        if opts.password is not None:
            auth = (
                _encode(opts.username or "default", "username"),
                _encode(opts.password, "password"),
            )
            secrets = (auth[1],)
        name = _encode(opts.client_name, "client_name") if opts.client_name else None
        hello_done = False
        if opts.protocol != 2:
            args = [b"HELLO", b"3"]
            if auth:
                args += [b"AUTH", *auth]
            if name:
                args += [b"SETNAME", name]
            try:
                await self.request(*args, secrets=secrets)
            except ServerError as exc:
                unsupported = exc.code in ("NOPROTO", "ERR") and (
                    "unknown command" in exc.reply or exc.code == "NOPROTO"
                )
                if opts.protocol == 3 or not unsupported:
                    raise
            else:
                hello_done = True
                self.resp = 3
        if not hello_done:
            if auth:
                if opts.username is None:
                    await self.request(b"AUTH", auth[1], secrets=secrets)
                else:
                    await self.request(b"AUTH", *auth, secrets=secrets)
            if name:
                await self.request(b"CLIENT", b"SETNAME", name)
        if opts.db:
            await self.request(b"SELECT", str(opts.db).encode())

    # -- Pub/Sub mode ------------------------------------------------------------------------

    def start_pubsub(self, link: Link, interval: float, timeout: float) -> None:
        """From now on frames go to ``link``'s reader; start the heartbeat."""
        self.reader = PubSubReader(
            link.registry, link, self.abort, resp3=self.resp == 3, parser=self._parser
        )
        self._on_data = self.reader.feed
        self.start_heartbeat(link, interval, timeout)

    def start_events(self, on_push: Callable[[Any], None]) -> None:
        """Frames that answer no request (Pub/Sub messages on a connection that subscribed
        with :meth:`request`) go to ``on_push`` instead of ending the connection."""
        self._on_push = on_push

    def start_heartbeat(self, pinger: Pinger, interval: float, timeout: float) -> None:
        """PING through ``pinger`` after ``interval`` s of silence; abort after ``timeout``."""
        self._pinger = pinger
        self._heartbeat = Heartbeat(interval, timeout)
        self._rx = False  # the handshake's replies are not traffic of this connection's use
        self._timer = self._loop.call_later(interval, self._tick)

    def _stop_reading(self) -> None:
        if self.reader is not None:
            self.reader.stop()
        self._pinger = None
        self._on_push = None

    # -- heartbeat ---------------------------------------------------------------------------

    def _tick(self) -> None:
        heartbeat, pinger = self._heartbeat, self._pinger
        if heartbeat is None or pinger is None:
            return
        action, delay = heartbeat.due(self._rx)
        self._rx = False
        if action == Heartbeat.DEAD:
            self.abort(heartbeat.error())
            return
        if action == Heartbeat.PING:
            pinger.send_ping()
        self._timer = self._loop.call_later(delay, self._tick)

    def _stop_heartbeat(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def _encode(value: str, what: str) -> bytes:
    # ``parse_options`` refuses what UTF-8 cannot encode; options replaced since get here.
    # The UnicodeEncodeError holds the whole value (a password): never raise or chain it.
    try:
        return value.encode()
    except UnicodeEncodeError:
        pass
    raise ConnectError(f"the {what} cannot be encoded as UTF-8")


async def connect(opts: ConnectOptions) -> Connection:
    """Open a connection and run the handshake, within ``opts.connect_timeout``.

    Raises :class:`ConnectError` (with the cause chained) on any failure.
    """
    loop = asyncio.get_running_loop()
    conn: Connection | None = None
    try:
        async with asyncio.timeout(opts.connect_timeout):
            if opts.unix_path is not None:
                _, conn = await loop.create_unix_connection(
                    lambda: Connection(loop), opts.unix_path
                )
            else:
                _, conn = await loop.create_connection(
                    lambda: Connection(loop),
                    opts.host,
                    opts.port,
                    ssl=opts.ssl,
                    server_hostname=(opts.server_hostname or opts.host) if opts.ssl else None,
                )
            await conn.handshake(opts)
    except TimeoutError:
        if conn is not None:
            conn.abort(ConnectError("timed out"))
        raise ConnectError(
            f"could not connect to {opts.describe()}: timed out after {opts.connect_timeout:g} s"
        ) from None
    except ServerError as exc:
        if conn is not None:
            conn.abort(ConnectError(str(exc)))
        raise ConnectError(f"{opts.describe()} refused the handshake: {exc}") from exc
    except (OSError, ConnectionLost) as exc:
        if conn is not None:
            conn.abort(ConnectError(str(exc)))
        raise ConnectError(f"could not connect to {opts.describe()}: {exc}") from exc
    except BaseException:
        # Cancelled mid-handshake (the multiplexer closed): never leave the socket open.
        if conn is not None:
            conn.abort(ConnectionLost("connection attempt cancelled"))
        raise
    return conn
