"""The command side: one lazily opened request/response connection to one node.

``publish`` never uses the Pub/Sub connection: its replies would queue behind the
messages (and under RESP2 a subscribed connection refuses other commands). A
:class:`CommandLink` opens its connection at the first call, writes every command of one
event-loop turn in one write (a pipeline: 1,000 concurrent publishers cost one system call,
not 1,000), and matches replies in order. A broken connection fails the calls whose replies
were outstanding (they may or may not have run: the caller decides whether to send again)
and keeps the unsent ones for the next connection, which is dialled with the reconnect
backoff while callers wait. Each call waits at most its ``timeout``.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from typing import Any

import hiredis

from ._backoff import Backoff, Pause
from ._connection import Connection, Dial
from ._options import Tuning
from ._tasks import TaskOwner
from .errors import ConnectError, ConnectionLost, PublishTimeout, ServerError

logger = logging.getLogger("redismpx.commands")

_PING = b"*1\r\n$4\r\nPING\r\n"
_ASKING = b"*1\r\n$6\r\nASKING\r\n"
# A connection must stay up this long before the backoff starts over.
STABLE_AFTER = 1.0


class CommandLink:
    """Request/response calls to one node over one pipelined connection (see the module)."""

    def __init__(
        self, dial: Dial, tasks: TaskOwner, tuning: Tuning, describe: Callable[[], str]
    ) -> None:
        self._dial = dial
        self._tasks = tasks
        self._describe = describe
        self._backoff = Backoff(tuning.backoff_base, tuning.backoff_cap, tuning.random_source)
        self._hc = (tuning.health_check_interval, tuning.health_check_timeout)
        self.conn: Connection | None = None
        self.last_error: BaseException | None = None
        self.connects = 0
        self._unsent: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._flush_handle: asyncio.Handle | None = None
        self._task: asyncio.Task[None] | None = None
        self._logged: str | None = None
        self._pause = Pause()  # the backoff wait, which ``wake`` cuts short
        self._closed = False
        self._deadline: _Deadline | None = None  # the window new calls share a timer with

    # -- calls -------------------------------------------------------------------------------

    async def call(
        self, command: bytes, name: str, timeout: float | None, *, asking: bool = False
    ) -> Any:
        """Send ``command`` (encoded) and return its reply; ``name`` names it in errors.

        ``asking``: preceded by ``ASKING`` on the same connection, right before it (a cluster
        slot being imported: what an ``ASK`` redirect asks for).

        Raises :class:`PublishTimeout` after ``timeout`` seconds (``sent`` says whether it was
        written), :class:`ConnectionLost` when the connection broke before the reply, and
        :class:`ServerError` for an error reply.
        """
        if self._closed:
            raise ConnectionLost("the multiplexer closed")
        loop = self._tasks.loop or asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if asking:  # its reply (+OK) is not wanted; the two stay adjacent in the pipeline
            aux: asyncio.Future[Any] = loop.create_future()
            aux.add_done_callback(_retrieve)
            self._unsent.append((_ASKING, aux))
        self._unsent.append((command, fut))
        if self._flush_handle is None:
            if self.conn is not None:
                self._flush_handle = self._tasks.call_soon(self._flush)
            elif self._task is None:
                self._task = self._tasks.spawn(self._run(), f"redismpx commands {self._describe()}")
        if timeout is None:
            reply = await fut
        else:
            deadline = self._deadline_for(loop, timeout)
            deadline.calls.append((fut, name))
            deadline.pending += 1
            try:
                reply = await fut
            finally:
                deadline.pending -= 1
                if not deadline.pending:
                    self._release(deadline)
        if isinstance(reply, hiredis.ReplyError):
            raise ServerError(str(reply), name)
        return reply

    # -- timeouts: one timer per 10 ms window of deadlines, not one per call -----------------

    def _deadline_for(self, loop: asyncio.AbstractEventLoop, timeout: float) -> _Deadline:
        at = math.ceil((loop.time() + timeout) / _GRAIN) * _GRAIN  # up to 10 ms late
        deadline = self._deadline
        if deadline is None or deadline.at != at or deadline.timeout != timeout:
            deadline = self._deadline = _Deadline(at, timeout)
            deadline.timer = loop.call_at(at, self._expire, deadline)
        return deadline

    def _release(self, deadline: _Deadline) -> None:
        # Every call of the window has its outcome: drop the timer and the futures.
        if deadline.timer is not None:
            deadline.timer.cancel()
            deadline.timer = None
        deadline.calls.clear()
        if self._deadline is deadline:
            self._deadline = None

    def _expire(self, deadline: _Deadline) -> None:
        deadline.timer = None
        if self._deadline is deadline:
            self._deadline = None
        for fut, name in deadline.calls:
            if not fut.done():
                fut.set_exception(self._timeout_error(fut, name, deadline.timeout))

    def _timeout_error(self, fut: asyncio.Future[Any], name: str, timeout: float) -> Exception:
        for i, (_, waiting) in enumerate(self._unsent):
            if waiting is fut:
                del self._unsent[i]
                reason = "" if self.last_error is None else f" (last error: {self.last_error})"
                return PublishTimeout(
                    f"{name} not sent: no connection to {self._describe()} within "
                    f"{timeout:g} s{reason}",
                    sent=False,
                )
        return PublishTimeout(
            f"{name} sent to {self._describe()} but not answered within {timeout:g} s; "
            "it may or may not have run",
            sent=True,
        )

    def _flush(self) -> None:
        self._flush_handle = None
        conn = self.conn
        if conn is None or conn.closed.done() or not self._unsent:
            # A connection already lost (``_run`` has not resumed to see it): the batch waits
            # for the next one; written here, it would be neither sent nor failed.
            return
        batch, self._unsent = self._unsent, []
        live = [(cmd, fut) for cmd, fut in batch if not fut.done()]  # cancelled: never sent
        if live:
            conn.send(b"".join([cmd for cmd, _ in live]), [fut for _, fut in live])

    def send_ping(self) -> None:
        # The heartbeat of an idle connection: its reply completes a future nobody awaits.
        conn = self.conn
        if conn is not None:
            loop = self._tasks.loop or asyncio.get_running_loop()
            pong: asyncio.Future[Any] = loop.create_future()
            pong.add_done_callback(_retrieve)
            conn.send(_PING, [pong])

    # -- the connection's life ---------------------------------------------------------------

    async def _run(self) -> None:
        # Connected while calls wait; once the connection ends with nothing left to send, the
        # task ends too and the next call dials again.
        loop = asyncio.get_running_loop()
        try:
            while not self._closed:
                started: float | None = None
                try:
                    conn = await self._dial()
                except ConnectError as exc:
                    self._failed(exc)
                except Exception as exc:
                    # A bug of ours: an attempt that failed, not the end of publishing. Not
                    # its text nor its traceback: either may hold a password.
                    self._failed(
                        ConnectError(
                            f"unexpected {type(exc).__name__} while connecting to "
                            f"{self._describe()} (a bug)"
                        )
                    )
                else:
                    started = loop.time()
                    self.conn = conn
                    self.connects += 1
                    if self._logged is not None:
                        logger.info("command connection to %s restored", self._describe())
                    self._logged = None
                    conn.start_heartbeat(self, *self._hc)
                    self._flush()
                    error = await conn.closed
                    self.conn = None
                    if self._closed:
                        break
                    self.last_error = error
                    logger.debug("command connection to %s lost: %s", self._describe(), error)
                if not self._unsent:
                    break  # nobody waits: connect again at the next call
                if started is not None and loop.time() - started >= STABLE_AFTER:
                    self._backoff.reset()
                await self._pause(self._backoff.next_delay())
                self._unsent = [(c, f) for c, f in self._unsent if not f.done()]
                if not self._unsent:
                    break
        finally:
            self._task = None
            if self.conn is not None:
                self.conn.abort(ConnectionLost("the multiplexer closed"))
                self.conn = None

    def wake(self) -> None:
        """Retry now if waiting out the backoff (something changed: no need to wait)."""
        self._pause.wake()

    def _failed(self, exc: ConnectError) -> None:
        self.last_error = exc
        text = str(exc)
        if text != self._logged:  # once per distinct error, not once per attempt
            self._logged = text
            logger.warning("publishing: %s; retrying with backoff", text)

    def reconnect(self, error: ConnectionLost) -> None:
        """Drop the connection now (the node is no longer the one to use); calls waiting for a
        reply fail with ``error``, the others go out on the next connection."""
        if self.conn is not None:
            self.conn.abort(error)

    def close(self) -> None:
        """Fail every waiting call and close the connection; later calls raise."""
        self._closed = True
        error = ConnectionLost("the multiplexer closed")
        for _, fut in self._unsent:
            if not fut.done():
                fut.set_exception(error)
        self._unsent.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if self.conn is not None:
            self.conn.close()
            self.conn.abort(error)
        if self._task is not None:
            self._task.cancel()

    def abandon(self) -> None:
        """The loop it ran in is closed: forget its connection and calls (none can run)."""
        self.conn = None
        self._task = None
        self._flush_handle = None
        self._unsent = []


_GRAIN = 0.01  # seconds: calls whose deadlines fall in the same window share one timer


class _Deadline:
    """The calls whose timeouts end in one window, and the one timer that fails them."""

    __slots__ = ("at", "calls", "pending", "timeout", "timer")

    def __init__(self, at: float, timeout: float) -> None:
        self.at = at
        self.timeout = timeout
        self.calls: list[tuple[asyncio.Future[Any], str]] = []
        self.pending = 0  # calls still awaiting their outcome
        self.timer: asyncio.TimerHandle | None = None


def _retrieve(fut: asyncio.Future[Any]) -> None:
    # A PING's future fails when the connection breaks; nobody awaits it.
    if not fut.cancelled():
        fut.exception()
