"""The supervisor of one Redis node: connect -> serve -> lost -> backoff -> connect, forever.

A ``Link`` owns a registry (what this node must be subscribed to) and, while up, one
connection. It turns the registry's commands into writes, once per event-loop turn, and the
connection's frames into registry events and user notifications. Its owner (a router)
decides who hears about an outage; its tasks and callbacks belong to the multiplexer's
:class:`~redismpx._tasks.TaskOwner`.
"""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Sequence
from typing import Any, Protocol

from ._backoff import Backoff, Pause
from ._connection import Connection, Dial, connect
from ._names import Deliver, Listener
from ._options import ConnectOptions, Tuning
from ._protocol import KIND_NAMES, encode_names
from ._registry import AckResult, Command, Registry
from ._tasks import TaskOwner
from .errors import ConnectError, ConnectionLost, SubscribeRefused
from .state import State

logger = logging.getLogger("redismpx.connection")

# A connection must stay up this long before the backoff starts over (B5: a connection that
# opens and dies at once must not reconnect in a hot loop).
STABLE_AFTER = 1.0
_PING = b"*1\r\n$4\r\nPING\r\n"


class LinkOwner(Protocol):
    """What a link tells its router (the topology decides who hears of what)."""

    def link_up(self, link: Link) -> None:
        """The link connected (its resubscription is under way)."""

    def link_lost(self, link: Link, error: BaseException) -> None:
        """The link's connection was lost (not on close); it reconnects by itself."""

    def names_lost(self, link: Link, kind: int, name: bytes, listeners: list[Listener]) -> None:
        """The server dropped ``name`` by itself (a shard channel's slot moved)."""


class Link:
    """One node's supervisor, registry and connection."""

    def __init__(
        self,
        owner: LinkOwner,
        options: ConnectOptions,
        tasks: TaskOwner,
        tuning: Tuning,
        registry: Registry | None = None,
        dial: Dial | None = None,
    ) -> None:
        self.owner = owner
        self.options = options  # a Sentinel's dial updates it to the primary in use
        self._dial = dial or self._connect
        self.tasks = tasks
        self.registry = registry or Registry(chunk_size=tuning.chunk_size)
        self.backoff = Backoff(tuning.backoff_base, tuning.backoff_cap, tuning.random_source)
        self.hc_interval = tuning.health_check_interval
        self.hc_timeout = tuning.health_check_timeout
        self.state = State.CONNECTING
        self.conn: Connection | None = None
        self.epoch = 0  # bumped on every connection: late activations check it
        self.last_error: BaseException | None = None
        self.reconnects = 0
        self.connects = 0
        self.received = 0  # messages read on past connections (``conn`` counts its own)
        self.dispatched = 0  # the same for deliveries
        self._logged_error: str | None = None
        self._logged_unexpected: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._resubscribe_handle: asyncio.Handle | None = None
        self._closing = False
        self._pause = Pause()  # the backoff wait, which ``wake`` cuts short
        self.up: asyncio.Event | None = None  # made by ``start``, in the link's loop

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the supervisor in the tasks' loop (once; again only after ``abandon``)."""
        if self._task is None and not self._closing:
            if self.up is None:
                self.up = asyncio.Event()
            self._task = self.tasks.spawn(self._run(), f"redismpx link {self.options.describe()}")

    def close(self) -> None:
        """Stop now: no reconnect, the socket is closed, the task cancelled."""
        self._closing = True
        self.state = State.CLOSED
        self.registry.clear()
        for handle in (self._flush_handle, self._resubscribe_handle):
            if handle is not None:
                handle.cancel()
        self._flush_handle = self._resubscribe_handle = None
        if self.conn is not None:
            self.conn.close()
            self.conn.abort(ConnectionLost("multiplexer closed"))
        if self._task is not None:
            self._task.cancel()

    def abandon(self) -> None:
        """The event loop that ran this link is closed: forget its task, connection and names.

        Nothing of that loop is touched (its transports, futures and handles cannot run any
        more); ``start`` in the new loop begins afresh with the same settings.
        """
        conn = self.conn
        if conn is not None:
            self.received += conn.received
            self.dispatched += conn.dispatched
        self.conn = None
        self.registry.clear()
        self._task = None
        self._flush_handle = self._resubscribe_handle = None
        self.up = None
        if not self._closing:
            self.state = State.CONNECTING

    async def wait_closed(self) -> None:
        if self._task is not None:
            try:
                await self._task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except Exception:  # ``_run`` reports its own errors: closing must not raise
                logger.debug("the supervisor of %s failed", self.options.describe())

    async def _connect(self) -> Connection:
        return await connect(self.options)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while not self._closing:
                self.state = State.CONNECTING
                started: float | None = None
                try:
                    conn = await self._dial()
                    if self._closing:
                        conn.close()
                        break
                    started = loop.time()
                    self._serve(conn)
                    error = await conn.closed
                    self._lost(error)
                except ConnectError as exc:
                    self._connect_failed(exc)
                except Exception as exc:
                    # A bug of ours, or options replaced behind the validation's back: the
                    # supervisor must not die of it (it promised to reconnect forever).
                    self._unexpected(exc, serving=started is not None)
                if self._closing:
                    break
                # Waiting out the backoff: down, not "connecting" (an outage of Redis must
                # not read as a connection about to come up).
                self.state = State.DISCONNECTED
                if started is not None and loop.time() - started >= STABLE_AFTER:
                    self.backoff.reset()
                    self._logged_unexpected = None
                await self._pause(self.backoff.next_delay())
        finally:
            # Closed, or cancelled from outside (``asyncio.run`` cancels every task of a loop
            # it ends): either way nothing is connected any more, so say so.
            last = self.conn
            if last is not None:
                self.received += last.received
                self.dispatched += last.dispatched
                last.abort(ConnectionLost("multiplexer closed"))
                self.conn = None
            self.registry.on_disconnected()
            if self.up is not None:
                self.up.clear()
            if not self._closing:
                self.state = State.DISCONNECTED

    def wake(self) -> None:
        """Retry now if waiting out the backoff (something changed: no need to wait)."""
        self._pause.wake()

    def _connect_failed(self, exc: ConnectError) -> None:
        self.last_error = exc
        text = str(exc)
        if text != self._logged_error:  # once per distinct error, not once per attempt
            self._logged_error = text
            logger.warning("%s; retrying with backoff", text)
        else:
            logger.debug("%s; retrying", text)

    def _unexpected(self, exc: Exception, *, serving: bool) -> None:
        """Report an exception that escaped connect or serve, then carry on as for an outage.

        Neither ``exc`` nor its text is kept or chained: it may hold a password (the repr of
        a UnicodeEncodeError holds the string it failed on). The log gets the traceback with
        any password replaced.
        """
        where = "serving" if serving else "connecting to"
        text = f"unexpected {type(exc).__name__} while {where} {self.options.describe()}"
        error = (ConnectionLost if serving else ConnectError)(f"{text} (a bug: see the log)")
        # Once per distinct error until a connection proves stable: a bug met at every
        # connection must not log its traceback at every reconnect.
        if text != self._logged_unexpected:
            self._logged_unexpected = text
            logger.error("%s; retrying with backoff\n%s", text, self._trace(exc))
        else:
            logger.debug("%s; retrying", text)
        conn = self.conn
        if conn is not None:
            conn.abort(error)
            try:
                self._lost(error, log=False)  # tell the subscriptions, as for any outage
            except Exception as again:
                logger.error("could not report the outage\n%s", self._trace(again))
        if serving and not self._closing:
            self.state = State.DISCONNECTED
            if self.up is not None:
                self.up.clear()
        self.last_error = error

    def _trace(self, exc: BaseException) -> str:
        trace = "".join(traceback.format_exception(exc)).rstrip()
        password = self.options.password
        return trace.replace(password, "(redacted)") if password else trace

    def _serve(self, conn: Connection) -> None:
        self.conn = conn
        self.epoch += 1
        self.connects += 1
        self.state = State.CONNECTED
        if self._logged_error is not None:
            logger.info("connected to %s", self.options.describe())
        self._logged_error = None
        conn.start_pubsub(self, self.hc_interval, self.hc_timeout)
        self._write(self.registry.on_connected())
        if self.registry.resubscribing():
            self._resubscribe_handle = self.tasks.call_soon(self._resubscribe_more, conn)
        if self.up is not None:
            self.up.set()
        self.owner.link_up(self)

    def messages_received(self) -> int:
        return self.received + (self.conn.received if self.conn is not None else 0)

    def messages_dispatched(self) -> int:
        return self.dispatched + (self.conn.dispatched if self.conn is not None else 0)

    def _lost(self, error: BaseException, *, log: bool = True) -> None:
        if self.conn is not None:
            self.received += self.conn.received
            self.dispatched += self.conn.dispatched
        self.conn = None
        self.registry.on_disconnected()
        if self.up is not None:
            self.up.clear()
        if self._closing:
            return
        self.state = State.DISCONNECTED
        self.last_error = error
        self.reconnects += 1
        if log:
            logger.warning("lost %s: %s; reconnecting", self.options.describe(), error)
        self.owner.link_lost(self, error)

    def _resubscribe_more(self, conn: Connection) -> None:
        # One batch per loop turn: replies to the first batches are read in between.
        self._resubscribe_handle = None
        if self.conn is not conn:
            return
        self._write(self.registry.resubscribe_more())
        if self.registry.resubscribing():
            self._resubscribe_handle = self.tasks.call_soon(self._resubscribe_more, conn)

    # -- names in and out (called through the router) ----------------------------------------

    def add(self, kind: int, names: Sequence[bytes], listener: Listener) -> None:
        """Register ``listener`` for ``names``; Redis is told at the end of the loop turn."""
        registry = self.registry
        flush = False
        for name in names:
            if registry.add(kind, name, listener):
                # B29: a joiner of an already-active name is told in a later loop turn.
                self.tasks.call_soon(self._late_activation, kind, name, listener, self.epoch)
            else:
                flush = True
        if flush and self._flush_handle is None:
            self.schedule_flush()

    def _late_activation(self, kind: int, name: bytes, listener: Listener, epoch: int) -> None:
        # Only if it still holds the name and nothing happened to the connection meanwhile.
        registry = self.registry
        if (
            self.epoch == epoch
            and registry.is_active(kind, name)
            and registry.holds(kind, name, listener)
        ):
            listener.notify_activated(name)

    def remove(self, kind: int, names: Sequence[bytes], listener: Listener) -> None:
        """Unregister ``listener``; the last one out makes Redis unsubscribe a name."""
        registry = self.registry
        for name in names:
            registry.remove(kind, name, listener)
        if self._flush_handle is None:
            self.schedule_flush()

    # -- commands out ------------------------------------------------------------------------

    def schedule_flush(self) -> None:
        """Coalesce every add/remove of this loop turn into one write (B23)."""
        if self._flush_handle is None and self.conn is not None:
            self._flush_handle = self.tasks.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        if self.conn is not None:
            self._write(self.registry.commands())

    def _write(self, commands: list[Command]) -> None:
        if commands and self.conn is not None:
            self.conn.write(b"".join([encode_names(c.encode_name(), c.names) for c in commands]))

    def send_ping(self) -> None:
        if self.conn is not None:
            self.registry.ping()
            self.conn.write(_PING)

    # -- frames in (the connection's reader is the FrameSink) --------------------------------

    def _listener_of(self, kind: int, name: bytes, deliver: Deliver) -> Listener | None:
        # Only for the rare callback that raised or returned something: no reverse index.
        st = self.registry.tables[kind].get(name)
        if st is not None:
            for listener in st.listeners:
                if listener.deliver == deliver:
                    return listener
        return None

    def callback_failed(self, kind: int, name: bytes, deliver: Deliver, exc: Exception) -> None:
        listener = self._listener_of(kind, name, deliver)
        if listener is not None:
            listener.report_callback_error(exc)
        else:  # removed by the callback that raised
            logger.error("on_message raised", exc_info=exc)

    def callback_returned(self, kind: int, name: bytes, deliver: Deliver, result: Any) -> None:
        listener = self._listener_of(kind, name, deliver)
        if listener is not None:
            listener.await_result(result)

    def acked(self, kind: int, name: bytes, result: list[Listener] | AckResult) -> None:
        """What the registry made of an acknowledgement: activations, or a dropped name."""
        if isinstance(result, list):
            for listener in result:
                # Most subscriptions ignore activations: skip the call (100,000 per reconnect).
                if listener.hears_activations:
                    listener.notify_activated(name)
        else:
            self.owner.names_lost(self, kind, name, result.lost)

    def on_pong(self) -> None:
        if not self.registry.on_pong():
            self.on_unexpected(b"PONG")

    def on_error(self, message: str) -> None:
        # An ACL denial refuses the whole command without naming the channel: retry its
        # names one by one so that only the denied ones are refused.
        failed = self.registry.on_error(split=message.startswith("NOPERM"))
        if failed is None:
            self._protocol_error(f"error reply with no command pending: {message}")
            return
        cmd, refused = failed
        command = cmd.encode_name().decode()
        if not refused:
            logger.warning("%s failed: %s", command, message)
            self.schedule_flush()  # names to retry one by one, if any
            return
        for name, listeners in refused:
            error = SubscribeRefused(message, command, name)
            logger.warning("Redis refused %s %r: %s", KIND_NAMES[cmd.kind], name, message)
            for listener in listeners:
                listener.notify_refused(error)

    def on_unexpected(self, frame: Any) -> None:
        logger.debug("ignored unexpected frame %r", frame)

    def _protocol_error(self, text: str) -> None:
        logger.error("protocol out of step with %s: %s", self.options.describe(), text)
        if self.conn is not None:
            self.conn.abort(ConnectionLost(text))
