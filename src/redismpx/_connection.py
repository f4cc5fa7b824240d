"""One Redis connection: an asyncio Protocol, its handshake, its reader and its heartbeat.

The life of a connection, in order: ``connect()`` opens the transport and runs the handshake
(request/response, replies matched in order); ``start_pubsub()`` switches ``data_received``
to the Pub/Sub reader, which parses with hiredis and dispatches messages inline; the
heartbeat sends a PING after ``interval`` seconds without traffic and aborts the connection if
nothing arrives within ``timeout`` more; ``closed`` resolves with the cause when it ends.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections import deque
from typing import TYPE_CHECKING, Any

import hiredis

from ._options import ConnectOptions
from ._protocol import ACKS, MESSAGE, PMESSAGE, PONG, SMESSAGE, encode_command
from .errors import ConnectError, ConnectionLost, HeartbeatTimeout, ServerError

if TYPE_CHECKING:
    from ._link import Link

_ReplyError = hiredis.ReplyError
_Push = hiredis.PushNotification

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


class Connection(asyncio.Protocol):
    """The Protocol of one Pub/Sub connection (see the module docstring for its life)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._replies: deque[asyncio.Future[Any]] = deque()
        self.closed: asyncio.Future[BaseException] = loop.create_future()
        self.resp = 2
        self.server_info: dict[bytes, Any] = {}
        self._link: Link | None = None
        self._rx = False  # traffic seen since the last heartbeat tick
        self._heartbeat: asyncio.TimerHandle | None = None
        self._hb_interval = 0.0
        self._hb_timeout = 0.0
        self._frame_cls: type = list
        self._on_data = self._handshake_data
        # Messages read on plain and shard channels, and deliveries handed to subscriptions
        # (callbacks called or messages buffered); the link counts pattern traffic.
        self.received = 0
        self.dispatched = 0

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
        self._on_data(data)

    def _handshake_data(self, data: bytes) -> None:
        # Handshake mode: replies complete the futures of ``request`` in order.
        self._reader.feed(data)
        while True:
            try:
                frame = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.abort(ConnectionLost(f"protocol error: {exc}"))
                return
            if frame is False:
                return
            if not self._replies:
                self.abort(ConnectionLost(f"unexpected reply during handshake: {frame!r}"))
                return
            fut = self._replies.popleft()
            if not fut.done():
                fut.set_result(frame)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_heartbeat()
        error: BaseException
        if exc is None:
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
        self._link = None

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
        ``connection_lost`` comes a loop turn later, and the reader stops on ``_link``.
        """
        self._link = None
        if not self.closed.done():
            self.closed.set_result(error)
        if self._transport is not None:
            self._transport.abort()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

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
                info = await self.request(*args, secrets=secrets)
            except ServerError as exc:
                unsupported = exc.code in ("NOPROTO", "ERR") and (
                    "unknown command" in exc.reply or exc.code == "NOPROTO"
                )
                if opts.protocol == 3 or not unsupported:
                    raise
            else:
                hello_done = True
                self.resp = 3
                if isinstance(info, dict):
                    self.server_info = info
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
        """From now on frames go to ``link``; start the heartbeat."""
        self._link = link
        self._frame_cls = _Push if self.resp == 3 else list
        self._channels = link.registry.tables[0]
        self._on_data = self._pubsub_data
        self._hb_interval, self._hb_timeout = interval, timeout
        self._heartbeat = self._loop.call_later(interval, self._tick)

    def _pubsub_data(self, data: bytes) -> None:
        # The hot path: keep it flat. Messages on plain and shard channels and
        # acknowledgements are handled here; every other frame (pmessage, pongs, errors) goes
        # to ``_frame``, which may abort the connection: only after it is ``_link`` checked.
        self._rx = True
        reader = self._reader
        reader.feed(data)
        gets = reader.gets
        frame_cls: Any = self._frame_cls
        channels = self._channels
        link = self._link
        if link is None:
            return
        on_ack = link.registry.on_ack
        shards = link.registry.tables[2]
        acks = ACKS
        received = 0  # local counters: one attribute update per chunk, not per message
        dispatched = 0
        try:
            frame: Any
            while (frame := gets()) is not False:
                if frame.__class__ is not frame_cls:
                    self._frame(link, frame)
                    if self._link is None:
                        return
                    continue
                kind = frame[0]
                if kind == MESSAGE:
                    table, k = channels, 0
                elif kind == SMESSAGE:  # shard channels (a cluster's default) are as hot
                    table, k = shards, 2
                else:
                    ack = acks.get(kind)
                    if ack is not None:
                        # One per name after a reconnect: handled here, without calls for
                        # names nobody needs to hear about.
                        result = on_ack(ack[0], ack[1], frame[1])
                        if result is not None:
                            link.acked(ack[0], frame[1], result)
                    else:
                        self._frame(link, frame)
                        if self._link is None:
                            return
                    continue
                received += 1
                channel = frame[1]
                st = table.get(channel)
                if st is None:
                    continue
                payload = frame[2]
                snap = st.snapshot or st.build()
                dispatched += len(snap)
                for deliver in snap:
                    try:
                        r = deliver(channel, payload)
                    except Exception as exc:
                        link.callback_failed(k, channel, deliver, exc)
                    else:
                        if r is not None:
                            link.callback_returned(k, channel, deliver, r)
        except hiredis.ProtocolError as exc:
            self.abort(ConnectionLost(f"protocol error: {exc}"))
        except Exception as exc:  # a bug of ours: never let it kill the event loop's reader
            self.abort(ConnectionLost(f"internal error while reading: {exc!r}"))
            raise
        finally:
            self.received += received
            self.dispatched += dispatched

    def _frame(self, link: Link, frame: Any) -> None:
        if isinstance(frame, list):
            kind = frame[0]
            ack = ACKS.get(kind)
            if ack is not None:
                # Hot after a reconnect (one per name): straight to the registry, and to the
                # link only when someone must hear of it.
                result = link.registry.on_ack(ack[0], ack[1], frame[1])
                if result is not None:
                    link.acked(ack[0], frame[1], result)
            elif kind == PMESSAGE:
                link.dispatch(1, frame[1], frame[2], frame[3])
            elif kind == SMESSAGE:
                link.dispatch(2, frame[1], frame[1], frame[2])
            elif kind == PONG and frame.__class__ is list:
                link.on_pong()
            else:
                link.on_unexpected(frame)
        elif isinstance(frame, _ReplyError):
            link.on_error(str(frame))
        elif frame == b"PONG":
            link.on_pong()
        else:
            link.on_unexpected(frame)

    # -- heartbeat ---------------------------------------------------------------------------

    def _tick(self) -> None:
        if self._rx:
            self._rx = False
            self._heartbeat = self._loop.call_later(self._hb_interval, self._tick)
            return
        if self._link is None:
            return
        self._link.send_ping()
        self._heartbeat = self._loop.call_later(self._hb_timeout, self._deadline)

    def _deadline(self) -> None:
        if self._rx:
            self._rx = False
            self._heartbeat = self._loop.call_later(self._hb_interval, self._tick)
            return
        self.abort(
            HeartbeatTimeout(
                f"no reply to PING within {self._hb_timeout:g} s "
                f"(after {self._hb_interval:g} s of silence)"
            )
        )

    def _stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None


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
