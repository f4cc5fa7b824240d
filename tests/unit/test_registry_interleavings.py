"""Replies interleaved with unsolicited pushes, without sockets.

A cluster node that gives a slot away pushes ``sunsubscribe`` for each of its shard channels
there, whatever we sent: such a push can meet a PING at the head of the pending commands, or
stand in for the acknowledgement of an unsubscribe of ours whose real reply (``MOVED``) is
still to come. First the registry alone, then a :class:`ClusterLink` fed raw RESP bytes
through a :class:`Connection` with no transport.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import pytest

from redismpx._connection import Connection
from redismpx._options import Tuning, parse_options
from redismpx._protocol import SHARD
from redismpx._registry import AckResult
from redismpx._tasks import TaskOwner
from redismpx.cluster import ClusterLink
from redismpx.cluster._slots import SlotRegistry, key_slot


class L:
    """A listener: hashable, with ``deliver`` and what ``Link.acked`` looks at."""

    hears_activations = True

    def __init__(self, n: int) -> None:
        self.n = n
        self.deliver = lambda channel, data: None
        self.activated: list[bytes] = []

    def notify_activated(self, name: bytes) -> None:
        self.activated.append(name)

    def __repr__(self) -> str:
        return f"L{self.n}"


def names_in_slots(n: int, prefix: str = "n") -> list[bytes]:
    """``n`` names, each in a hash slot of its own."""
    out: list[bytes] = []
    seen: set[int] = set()
    i = 0
    while len(out) < n:
        name = f"{prefix}{i}".encode()
        if key_slot(name) not in seen:
            seen.add(key_slot(name))
            out.append(name)
        i += 1
    return out


X, Y, Z = names_in_slots(3)
SX = key_slot(X)


def subscribed(*names: bytes) -> tuple[SlotRegistry, dict[bytes, L]]:
    """A registry with each name held by a listener of its own, every name active."""
    reg = SlotRegistry()
    reg.on_connected()
    listeners = {name: L(i) for i, name in enumerate(names)}
    for name, listener in listeners.items():
        reg.add(SHARD, name, listener)
    reg.commands()
    for name in names:
        assert reg.on_ack(SHARD, True, name) == [listeners[name]]
    assert not reg.pending
    return reg, listeners


# -- the registry: a PING at the head ---------------------------------------------------------


def test_pushed_unsubscribe_meets_a_ping_at_the_head() -> None:
    reg, ls = subscribed(X, Y)
    reg.ping()
    result = reg.on_ack(SHARD, False, X)  # the slot of X moved away
    assert isinstance(result, AckResult) and result.lost == [ls[X]]
    assert not reg.is_active(SHARD, X) and reg.is_active(SHARD, Y)
    assert reg.on_pong()  # the PING is still due, and answered in turn
    assert not reg.pending
    assert reg.retry(SHARD, X)
    assert [(c.subscribe, c.names) for c in reg.commands()] == [(True, [X])]


def test_pushed_unsubscribe_behind_a_ping_for_a_name_being_removed() -> None:
    reg, ls = subscribed(X, Y)
    reg.ping()
    reg.remove(SHARD, X, ls[X])
    assert [(c.subscribe, c.names) for c in reg.commands()] == [(False, [X])]
    assert reg.on_ack(SHARD, False, X) is None  # pushed: nobody holds X any more
    assert reg.on_pong()
    failed = reg.on_error()  # the SUNSUBSCRIBE's own reply: MOVED
    assert failed is not None and failed[0].names == [X] and failed[1] == []
    assert X not in reg.tables[SHARD] and not reg.pending


# -- the registry: an unsubscribe completed by a push, its MOVED still to come ----------------


X2 = b"x2{%s}" % X  # in the slot of X (a hash tag)


def test_moved_after_a_pushed_unsubscribe_is_that_unsubscribes() -> None:
    reg, ls = subscribed(X, Y)
    reg.remove(SHARD, X, ls[X])
    reg.commands()
    assert reg.on_ack(SHARD, False, X) is None  # pushed by the move: completes our SUNSUBSCRIBE
    assert X not in reg.tables[SHARD] and not reg.pending
    assert reg.late_error(SX)  # its own reply: dropped, nothing pending is touched
    assert reg.late_error(SX)  # and so would a second unsubscribe's be
    assert not reg.late_error(key_slot(Y))  # an error for another slot is no late reply
    assert reg.is_active(SHARD, Y)


def test_moved_after_a_pushed_unsubscribe_spares_a_subscribe_of_another_slot() -> None:
    reg, ls = subscribed(X, Y)
    lz = L(9)
    reg.remove(SHARD, X, ls[X])
    reg.add(SHARD, Z, lz)
    assert [(c.subscribe, c.names) for c in reg.commands()] == [(False, [X]), (True, [Z])]
    assert reg.on_ack(SHARD, False, X) is None  # the push
    assert reg.late_error(SX)  # the SUNSUBSCRIBE's MOVED: not charged to SSUBSCRIBE Z
    assert [c.names for c in reg.pending] == [[Z]]
    assert reg.on_ack(SHARD, True, Z) == [lz]
    # Z's reply proves every earlier command answered: a MOVED for X's slot now is no late one.
    assert not reg.late_error(SX)


def test_moved_for_the_heads_own_slot_is_the_heads_then_the_late_ones() -> None:
    reg, ls = subscribed(X, Y)
    l2 = L(9)
    reg.remove(SHARD, X, ls[X])
    reg.add(SHARD, X2, l2)  # same slot as X, queued behind its SUNSUBSCRIBE
    reg.commands()
    assert reg.on_ack(SHARD, False, X) is None  # the push
    # Two MOVED follow, one per command: the first goes to the head (the slot moved for it
    # too), the second finds no command of that slot and is the unsubscribe's.
    assert not reg.late_error(SX)
    failed = reg.on_error()
    assert failed is not None and failed[0].names == [X2] and failed[1] == [(X2, [l2])]
    assert reg.late_error(SX)
    assert not reg.pending


def test_an_unsubscribe_answered_in_full_is_forgotten_at_the_next_pong() -> None:
    reg, ls = subscribed(X, Y)
    reg.remove(SHARD, X, ls[X])
    reg.commands()
    assert reg.on_ack(SHARD, False, X) is None  # its real acknowledgement, as it happens
    reg.ping()
    assert reg.late_error(SX)  # not known yet: the PING is no shard command
    assert reg.on_pong()
    assert not reg.late_error(SX) and not reg.late_error(None)


def test_errors_naming_no_slot() -> None:
    reg, ls = subscribed(X, Y)
    reg.remove(SHARD, X, ls[X])
    reg.commands()
    reg.on_ack(SHARD, False, X)  # the push
    assert reg.late_error(None)  # CLUSTERDOWN with nothing pending: the unsubscribe's
    reg.add(SHARD, Z, L(9))
    reg.commands()
    assert not reg.late_error(None)  # with a shard command pending it is the head's
    reg.on_disconnected()
    reg.on_connected()
    assert not reg.late_error(SX)  # a new connection owes nothing


def test_pushes_out_of_order_leave_a_multi_name_unsubscribe_to_its_moved() -> None:
    reg, ls = subscribed(X, X2, Y)
    reg.remove(SHARD, X, ls[X])
    reg.remove(SHARD, X2, ls[X2])
    assert [c.names for c in reg.commands()] == [[X, X2]]  # one slot, one command
    assert reg.on_ack(SHARD, False, X2) is None  # the node pushes in its own order
    assert reg.on_ack(SHARD, False, X) is None
    assert [c.acked for c in reg.pending] == [1]
    assert not reg.late_error(SX)  # the head's MOVED
    failed = reg.on_error()
    assert failed is not None and failed[1] == []
    assert reg.tables[SHARD].keys() == {Y} and not reg.pending


# -- a cluster link fed RESP bytes ------------------------------------------------------------


class Owner:
    """What a ClusterLink tells its router, recorded (and what it needs of the router)."""

    def __init__(self) -> None:
        self.host = SimpleNamespace(
            tasks=TaskOwner(), tuning=Tuning(health_check_interval=3600, health_check_timeout=3600)
        )
        self.lost: list[BaseException] = []
        self.lost_names: list[tuple[bytes, list[Any]]] = []
        self.refused: list[tuple[bool, list[bytes], str]] = []

    def link_up(self, link: Any) -> None:
        pass

    def link_lost(self, link: Any, error: BaseException) -> None:
        self.lost.append(error)

    def names_lost(self, link: Any, kind: int, name: bytes, listeners: list[Any]) -> None:
        self.lost_names.append((name, listeners))
        link.registry.retry(kind, name)

    def shard_refused(self, link: Any, cmd: Any, names: list[bytes], message: str) -> None:
        self.refused.append((cmd.subscribe, names, message))


def bulk(value: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(value), value)


class Wire:
    """A ClusterLink over a Connection without a transport: bytes in, events out."""

    def __init__(self, resp: int) -> None:
        self.owner = Owner()
        self.link = ClusterLink(
            self.owner,  # type: ignore[arg-type]
            parse_options("redis://127.0.0.1:7000"),
            ("127.0.0.1", 7000),
        )
        self.conn = Connection(asyncio.get_running_loop())
        self.conn.resp = resp
        self.resp = resp
        self.link.conn = self.conn
        self.conn.start_pubsub(self.link, 3600, 3600)
        self.reg: SlotRegistry = self.link.registry
        self.reg.on_connected()

    def ack(self, kind: bytes, name: bytes, count: int = 0) -> None:
        head = b">3\r\n" if self.resp == 3 else b"*3\r\n"
        self.conn.data_received(head + bulk(kind) + bulk(name) + b":%d\r\n" % count)

    def pong(self) -> None:
        self.conn.data_received(
            b"+PONG\r\n" if self.resp == 3 else b"*2\r\n$4\r\npong\r\n$0\r\n\r\n"
        )

    def error(self, message: str) -> None:
        self.conn.data_received(b"-%b\r\n" % message.encode())

    @property
    def aborted(self) -> BaseException | None:
        return self.conn.closed.result() if self.conn.closed.done() else None

    def close(self) -> None:
        self.conn._stop_heartbeat()


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
async def wire(request: pytest.FixtureRequest) -> AsyncIterator[Wire]:
    w = Wire(request.param)
    yield w
    w.close()


def moved(slot: int) -> str:
    return f"MOVED {slot} 127.0.0.1:7001"


async def test_link_push_then_pong_with_a_ping_in_flight(wire: Wire) -> None:
    ls = {X: L(0), Y: L(1)}
    for name, listener in ls.items():
        wire.reg.add(SHARD, name, listener)
    wire.reg.commands()
    wire.ack(b"ssubscribe", X, 1)
    wire.ack(b"ssubscribe", Y, 2)
    wire.link.send_ping()
    wire.ack(b"sunsubscribe", X, 1)  # the slot of X moved while the PING was due
    wire.pong()
    assert wire.aborted is None
    assert wire.owner.lost_names == [(X, [ls[X]])]
    assert wire.reg.is_active(SHARD, Y) and not wire.reg.pending
    # X subscribed again on the same link: the node redirects it.
    assert [(c.subscribe, c.names) for c in wire.reg.commands()] == [(True, [X])]
    wire.error(moved(SX))
    assert wire.owner.refused == [(True, [X], moved(SX))]
    assert wire.aborted is None and wire.owner.lost == []


async def test_link_push_then_moved_with_nothing_pending(wire: Wire) -> None:
    lx, ly = L(0), L(1)
    wire.reg.add(SHARD, X, lx)
    wire.reg.add(SHARD, Y, ly)
    wire.reg.commands()
    wire.ack(b"ssubscribe", X, 1)
    wire.ack(b"ssubscribe", Y, 2)
    wire.reg.remove(SHARD, X, lx)
    wire.reg.commands()
    wire.ack(b"sunsubscribe", X, 1)  # pushed by the move
    wire.error(moved(SX))  # the SUNSUBSCRIBE's own reply
    assert wire.aborted is None
    assert wire.owner.lost_names == [] and wire.owner.refused == []
    assert wire.reg.is_active(SHARD, Y) and X not in wire.reg.tables[SHARD]


async def test_link_push_moved_ping_and_a_queued_subscribe(wire: Wire) -> None:
    lx, ly, lz = L(0), L(1), L(2)
    wire.reg.add(SHARD, X, lx)
    wire.reg.add(SHARD, Y, ly)
    wire.reg.commands()
    wire.ack(b"ssubscribe", X, 1)
    wire.ack(b"ssubscribe", Y, 2)
    wire.reg.remove(SHARD, X, lx)
    wire.reg.add(SHARD, Z, lz)
    wire.reg.commands()  # SUNSUBSCRIBE X, SSUBSCRIBE Z
    wire.link.send_ping()
    wire.ack(b"sunsubscribe", X, 1)
    wire.error(moved(SX))
    wire.ack(b"ssubscribe", Z, 2)
    wire.pong()
    assert wire.aborted is None
    assert lz.activated == [Z] and wire.reg.is_active(SHARD, Z)
    assert wire.owner.lost_names == [] and wire.owner.refused == []
    assert not wire.reg.pending
