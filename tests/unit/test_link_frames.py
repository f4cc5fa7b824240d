"""A ``Connection`` and a ``Link`` fed raw RESP2/RESP3 bytes, with no socket.

The transport and the clock are stand-ins: what is written is recorded, and the heartbeat's
timers run when the test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from redismpx._connection import Connection, Heartbeat
from redismpx._link import Link
from redismpx._options import Tuning, parse_options
from redismpx._protocol import CHANNEL, PATTERN, SHARD
from redismpx._reader import FEED_SLICE
from redismpx._registry import PING
from redismpx._tasks import TaskOwner
from redismpx.errors import ConnectionLost, HeartbeatTimeout, ServerError, SubscribeRefused


class L:
    """A listener implementing the ``Listener`` protocol, recording what it hears."""

    def __init__(self, hears: bool = True, result: Any = None, fail: bool = False) -> None:
        self.hears_activations = hears
        self.got: list[tuple[bytes, bytes]] = []
        self.events: list[tuple[str, Any]] = []
        self._result, self._fail = result, fail

    def deliver(self, channel: bytes, data: bytes) -> Any:
        self.got.append((channel, data))
        if self._fail:
            raise ValueError("boom")
        return self._result

    def notify_activated(self, name: bytes) -> None:
        assert self.hears_activations, "told of an activation it does not listen for"
        self.events.append(("activated", name))

    def notify_disconnected(self, error: BaseException) -> None:
        self.events.append(("disconnected", error))

    def notify_refused(self, error: BaseException) -> None:
        self.events.append(("refused", error))

    def report_callback_error(self, exc: Exception) -> None:
        self.events.append(("error", exc))

    def await_result(self, result: Any) -> None:
        self.events.append(("result", result))


class Owner:
    def __init__(self) -> None:
        self.lost_names: list[tuple[int, bytes, list[Any]]] = []

    def link_up(self, link: Any) -> None:
        pass

    def link_lost(self, link: Any, error: BaseException) -> None:
        pass

    def names_lost(self, link: Any, kind: int, name: bytes, listeners: list[Any]) -> None:
        self.lost_names.append((kind, name, listeners))


class Transport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def is_closing(self) -> bool:
        return self.aborted

    def abort(self) -> None:
        self.aborted = True

    close = abort

    def get_extra_info(self, name: str) -> Any:
        return None


class Timer:
    def __init__(self, delay: float, callback: Callable[[], None]) -> None:
        self.delay, self.callback, self.cancelled = delay, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class Clock:
    """A loop whose ``call_later`` waits for the test: the heartbeat's injectable clock."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.timers: list[Timer] = []

    def create_future(self) -> asyncio.Future[Any]:
        return self.loop.create_future()

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(delay, callback)
        self.timers.append(timer)
        return timer

    def fire(self) -> float:
        """Run the last timer set; return its delay."""
        timer = self.timers[-1]
        assert not timer.cancelled
        timer.callback()
        return timer.delay


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


class Wire:
    def __init__(self, resp: int) -> None:
        self.resp = resp
        self.owner = Owner()
        self.link = Link(
            self.owner,
            parse_options("redis://127.0.0.1:7000"),
            TaskOwner(),
            Tuning(health_check_interval=5, health_check_timeout=2),
        )
        self.clock = Clock(asyncio.get_running_loop())
        self.conn = Connection(self.clock)  # type: ignore[arg-type]
        self.transport = Transport()
        self.conn.connection_made(self.transport)  # type: ignore[arg-type]
        self.conn.resp = resp
        self.link.conn = self.conn
        self.conn.start_pubsub(self.link, 5, 2)
        self.reg = self.link.registry
        self.reg.on_connected()

    def frame(self, *parts: bytes | int) -> bytes:
        head = b">" if self.resp == 3 else b"*"
        body = b"".join(b":%d\r\n" % p if isinstance(p, int) else bulk(p) for p in parts)
        return head + b"%d\r\n" % len(parts) + body

    def feed(self, *frames: bytes) -> None:
        self.conn.data_received(b"".join(frames))

    def hold(self, kind: int, name: bytes, listener: L) -> None:
        """``listener`` holds ``name``, subscribed and acknowledged."""
        self.reg.add(kind, name, listener)
        self.reg.commands()
        ack = (b"subscribe", b"psubscribe", b"ssubscribe")[kind]
        self.feed(self.frame(ack, name, 1))
        assert self.reg.is_active(kind, name)

    @property
    def aborted(self) -> BaseException | None:
        return self.conn.closed.result() if self.conn.closed.done() else None


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    yield Wire(request.param)


async def test_every_kind_of_message_takes_the_one_dispatch_path(wire: Wire) -> None:
    c, p, s = L(), L(), L()
    wire.hold(CHANNEL, b"ch", c)
    wire.hold(PATTERN, b"p*", p)
    wire.hold(SHARD, b"sh", s)
    wire.feed(
        wire.frame(b"message", b"ch", b"1"),
        wire.frame(b"pmessage", b"p*", b"pa", b"2"),
        wire.frame(b"smessage", b"sh", b"3"),
        wire.frame(b"message", b"nobody", b"4"),
    )
    assert c.got == [(b"ch", b"1")] and p.got == [(b"pa", b"2")] and s.got == [(b"sh", b"3")]
    assert (wire.conn.received, wire.conn.dispatched) == (4, 3)
    assert wire.link.messages_received() == 4 and wire.link.messages_dispatched() == 3
    assert wire.aborted is None


async def test_an_ack_activates_only_listeners_that_hear_activations(wire: Wire) -> None:
    hearing, deaf = L(), L(hears=False)
    wire.reg.add(CHANNEL, b"x", hearing)
    wire.reg.add(CHANNEL, b"x", deaf)
    wire.reg.commands()
    assert not wire.reg.is_active(CHANNEL, b"x")
    wire.feed(wire.frame(b"subscribe", b"x", 1))
    assert hearing.events == [("activated", b"x")] and deaf.events == []


async def test_a_raising_or_returning_callback_reaches_its_listener(wire: Wire) -> None:
    raising, returning = L(fail=True), L(result="an awaitable, say")
    wire.hold(CHANNEL, b"x", raising)
    wire.hold(CHANNEL, b"x", returning)
    raising.events.clear()
    returning.events.clear()
    wire.feed(wire.frame(b"message", b"x", b"1"), wire.frame(b"message", b"x", b"2"))
    assert [e for e, _ in raising.events] == ["error", "error"]
    assert returning.events == [("result", "an awaitable, say")] * 2
    assert len(returning.got) == 2  # one raising listener stops nobody (B35)


async def test_an_error_reply_refuses_the_head_command(wire: Wire) -> None:
    listener = L()
    wire.reg.add(CHANNEL, b"x", listener)
    wire.reg.commands()
    wire.feed(b"-NOPERM this user has no permissions to access the 'x' channel\r\n")
    assert wire.aborted is None and not wire.reg.pending
    [(what, error)] = listener.events
    assert what == "refused" and isinstance(error, SubscribeRefused) and error.name == b"x"
    assert wire.reg.commands() == []  # not retried by itself...
    wire.reg.add(CHANNEL, b"x", L())  # ...until someone asks again
    assert [c.names for c in wire.reg.commands()] == [[b"x"]]


async def test_an_acl_denial_of_several_names_retries_them_one_by_one(wire: Wire) -> None:
    a, b = L(), L()
    wire.reg.add(CHANNEL, b"a", a)
    wire.reg.add(CHANNEL, b"b", b)
    wire.reg.commands()
    wire.feed(b"-NOPERM no permissions\r\n")
    assert a.events == [] and b.events == []
    assert [c.names for c in wire.reg.commands()] == [[b"a"], [b"b"]]
    wire.feed(wire.frame(b"subscribe", b"a", 1), b"-NOPERM no permissions\r\n")
    assert a.events == [("activated", b"a")] and [e for e, _ in b.events] == ["refused"]


async def test_an_unsolicited_unsubscribe_tells_the_owner(wire: Wire) -> None:
    listener = L()
    wire.hold(SHARD, b"sh", listener)
    wire.feed(wire.frame(b"sunsubscribe", b"sh", 0))  # the slot moved away
    assert wire.owner.lost_names == [(SHARD, b"sh", [listener])]
    assert not wire.reg.is_active(SHARD, b"sh")


async def test_an_error_with_nothing_pending_aborts_and_stops_dispatch(wire: Wire) -> None:
    listener = L()
    wire.hold(CHANNEL, b"x", listener)
    wire.feed(b"-ERR out of the blue\r\n", wire.frame(b"message", b"x", b"late"))
    assert isinstance(wire.aborted, ConnectionLost) and "no command pending" in str(wire.aborted)
    assert listener.got == [] and wire.transport.aborted
    wire.feed(wire.frame(b"message", b"x", b"later"))
    assert listener.got == []


async def test_a_large_read_is_parsed_in_slices_with_frames_across_them(wire: Wire) -> None:
    # A read bigger than FEED_SLICE goes to hiredis a slice at a time; frames that straddle
    # the slices' edges, and payloads bigger than a slice, arrive whole and in order.
    listener = L()
    wire.hold(CHANNEL, b"x", listener)
    sizes = [1, 700, 5000, FEED_SLICE - 3, FEED_SLICE, 3 * FEED_SLICE + 7, 0, 13] * 5
    payloads = [bytes([65 + i % 26]) * size for i, size in enumerate(sizes)]
    data = b"".join(wire.frame(b"message", b"x", p) for p in payloads)
    assert len(data) > 10 * FEED_SLICE
    wire.feed(data)
    assert listener.got == [(b"x", p) for p in payloads]
    assert wire.conn.received == len(payloads) and wire.aborted is None


async def test_nothing_after_an_abort_in_an_early_slice_is_dispatched(wire: Wire) -> None:
    listener = L()
    wire.hold(CHANNEL, b"x", listener)
    first = wire.frame(b"message", b"x", b"before")
    rest = b"".join(wire.frame(b"message", b"x", b"%d" % i) for i in range(5000))
    assert len(rest) > 3 * FEED_SLICE
    wire.feed(first + b"-ERR out of the blue\r\n" + rest)
    assert listener.got == [(b"x", b"before")]
    assert isinstance(wire.aborted, ConnectionLost)


async def test_a_protocol_error_aborts(wire: Wire) -> None:
    listener = L()
    wire.hold(CHANNEL, b"x", listener)
    wire.feed(wire.frame(b"message", b"x", b"1"), b"?what\r\n")
    assert listener.got == [(b"x", b"1")]
    assert isinstance(wire.aborted, ConnectionLost) and "protocol error" in str(wire.aborted)


async def test_unknown_pushes_and_stray_replies_are_ignored(wire: Wire) -> None:
    listener = L()
    wire.hold(CHANNEL, b"x", listener)
    wire.feed(wire.frame(b"invalidate", b"k"), b"+OK\r\n", wire.frame(b"message", b"x", b"1"))
    assert wire.aborted is None and listener.got == [(b"x", b"1")]


async def test_heartbeat_pings_after_silence_and_counts_the_pong(wire: Wire) -> None:
    assert wire.clock.timers[-1].delay == 5  # the first wait: the interval
    assert wire.clock.fire() == 5  # silence: PING, then wait for the timeout
    assert wire.transport.written[-1] == b"*1\r\n$4\r\nPING\r\n"
    assert [c.kind for c in wire.reg.pending] == [PING]
    wire.feed(b"+PONG\r\n" if wire.resp == 3 else wire.frame(b"pong", b""))
    assert not wire.reg.pending
    assert wire.clock.fire() == 2 and wire.clock.timers[-1].delay == 5  # traffic: start over
    assert wire.aborted is None
    wire.clock.fire()  # silence: PING
    wire.clock.fire()  # no answer within the timeout
    assert isinstance(wire.aborted, HeartbeatTimeout) and wire.transport.aborted


def test_heartbeat_timing() -> None:
    hb = Heartbeat(5, 2)
    assert hb.due(True) == (Heartbeat.IDLE, 5)
    assert hb.due(False) == (Heartbeat.PING, 2)
    assert hb.due(True) == (Heartbeat.IDLE, 5)  # any frame counts as a sign of life (B8)
    assert hb.due(False) == (Heartbeat.PING, 2)
    assert hb.due(False)[0] == Heartbeat.DEAD
    assert "within 2 s (after 5 s of silence)" in str(hb.error())


# -- the handshake ----------------------------------------------------------------------------


async def test_handshake_replies_are_matched_in_order() -> None:
    conn = Connection(asyncio.get_running_loop())
    transport = Transport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    first = asyncio.ensure_future(conn.request(b"CLIENT", b"SETNAME", b"me"))
    second = asyncio.ensure_future(conn.request(b"SELECT", b"99"))
    await asyncio.sleep(0)
    assert transport.written == [
        b"*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n$2\r\nme\r\n",
        b"*2\r\n$6\r\nSELECT\r\n$2\r\n99\r\n",
    ]
    conn.data_received(b"+OK\r\n-ERR DB index is out of range\r\n")
    assert await first == b"OK"
    with pytest.raises(ServerError, match="out of range"):
        await second
    conn.data_received(b"+OK\r\n")  # nothing asked for it
    assert isinstance(conn.closed.result(), ConnectionLost) and transport.aborted


async def test_a_handshake_error_reply_hides_the_password() -> None:
    conn = Connection(asyncio.get_running_loop())
    conn.connection_made(Transport())  # type: ignore[arg-type]
    reply = asyncio.ensure_future(
        conn.request(b"HELLO", b"3", b"AUTH", b"u", b"hunter2", secrets=(b"hunter2",))
    )
    await asyncio.sleep(0)
    conn.data_received(
        b"-ERR unknown command 'HELLO', with args beginning with: '3' 'AUTH' 'u' 'hunt'\r\n"
    )
    with pytest.raises(ServerError) as info:
        await reply
    assert "hunt" not in str(info.value) and "(redacted)" in str(info.value)


async def test_a_lost_connection_fails_the_pending_requests() -> None:
    conn = Connection(asyncio.get_running_loop())
    conn.connection_made(Transport())  # type: ignore[arg-type]
    reply = asyncio.ensure_future(conn.request(b"PING"))
    await asyncio.sleep(0)
    conn.connection_lost(None)
    with pytest.raises(ConnectionLost):
        await reply
    assert isinstance(conn.closed.result(), ConnectionLost)
