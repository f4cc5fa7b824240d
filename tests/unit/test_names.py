"""One name's state machine (``_names.TRANSITIONS``) and its listener storage."""

from __future__ import annotations

import pytest

from redismpx._names import (
    ACTIVE,
    DISCONNECTED,
    DROPPED,
    EVENTS,
    FAILED,
    NEXT,
    OFF,
    PHASES,
    REFUSED,
    SENT_SUBSCRIBE,
    SENT_UNSUBSCRIBE,
    SETTLED,
    SMALL,
    SUBSCRIBING,
    TRANSITIONS,
    WANTED,
    NameState,
)


class L:
    def __init__(self, n: int) -> None:
        self.n = n
        self.got: list[bytes] = []
        self.deliver = lambda channel, data: self.got.append(data)

    def __repr__(self) -> str:
        return f"L{self.n}"


def test_the_table_reads_as_written() -> None:
    # Every phase has a row; every row sends DISCONNECTED to OFF.
    assert set(TRANSITIONS) == set(range(len(PHASES)))
    for phase, row in TRANSITIONS.items():
        assert row[DISCONNECTED] == OFF
        for event in range(len(EVENTS)):
            assert NEXT[event][phase] == row.get(event, phase)
    # The life of a name, as the docstring of _names tells it.
    assert TRANSITIONS[OFF][SENT_SUBSCRIBE] == SUBSCRIBING
    assert TRANSITIONS[SUBSCRIBING][SETTLED] == ACTIVE
    assert TRANSITIONS[ACTIVE][SENT_UNSUBSCRIBE] == OFF
    assert TRANSITIONS[SUBSCRIBING][FAILED] == REFUSED
    assert TRANSITIONS[REFUSED][WANTED] == OFF
    assert TRANSITIONS[ACTIVE][DROPPED] == OFF
    # A settled unsubscribe leaves OFF as it is; nothing re-activates a refused name.
    assert NEXT[SETTLED][OFF] == OFF and NEXT[SETTLED][REFUSED] == REFUSED


def test_stale_acknowledgements_never_activate() -> None:
    # B31: subscribe, unsubscribe, subscribe in flight; active only after the third reply.
    st = NameState()
    st.attach(L(0))
    for event in (SENT_SUBSCRIBE, SENT_UNSUBSCRIBE, SENT_SUBSCRIBE):
        st.inflight += 1
        st.to(event)
    assert st.phase == SUBSCRIBING and st.inflight == 3
    for _ in range(2):
        st.inflight -= 1
        assert not st.active
    st.inflight -= 1
    assert st.to(SETTLED) == ACTIVE and st.active and st.subscribed


@pytest.mark.parametrize(
    ("held", "phase", "inflight", "deletable"),
    [
        (False, OFF, 0, True),
        (False, REFUSED, 0, True),
        (False, OFF, 1, False),  # an unsubscribe's reply is due
        (False, SUBSCRIBING, 1, False),
        (False, ACTIVE, 0, False),  # Redis holds it: unsubscribe first
        (True, OFF, 0, False),
        (True, REFUSED, 0, False),
    ],
)
def test_one_rule_for_forgetting_a_name(
    held: bool, phase: int, inflight: int, deletable: bool
) -> None:
    st = NameState()
    if held:
        st.attach(L(0))
    st.phase, st.inflight = phase, inflight
    assert st.deletable is deletable


def test_what_a_name_needs() -> None:
    st = NameState()
    listener = L(0)
    st.attach(listener)
    assert st.needs_subscribe and not st.needs_unsubscribe
    st.inflight += 1
    st.to(SENT_SUBSCRIBE)
    assert not st.needs_subscribe
    st.detach(listener)
    assert st.needs_unsubscribe
    st.to(FAILED)  # refused: neither wanted again nor held by Redis
    assert not st.needs_subscribe and not st.needs_unsubscribe
    st.reset()
    assert st.phase == OFF and st.inflight == 0 and st.deletable


def test_listener_storage_grows_and_shrinks() -> None:
    st = NameState()
    many = [L(i) for i in range(SMALL + 2)]
    for listener in many:
        assert st.attach(listener)
        assert not st.attach(listener)
    assert st.listeners == many
    for listener in many:
        assert st.has(listener)
        assert st.detach(listener)
        assert not st.detach(listener)
    assert not st.held and st.listeners == []


def test_a_listener_removed_mid_dispatch_hears_nothing_more() -> None:
    # B17: the reader may be iterating the very list a callback changes.
    st = NameState()
    a, b, c = L(0), L(1), L(2)
    for listener in (a, b, c):
        st.attach(listener)
    snap = st.build()
    assert isinstance(snap, list)
    st.detach(b)
    for deliver in snap:
        deliver(b"ch", b"x")
    assert a.got == c.got == [b"x"] and b.got == []
    assert st.snapshot is None
    snap = st.build()
    assert snap == [a.deliver, c.deliver]
    st.silence()  # the multiplexer closed mid-dispatch
    for deliver in snap:
        deliver(b"ch", b"y")
    assert a.got == c.got == [b"x"]
    assert st.snapshot is None


def test_one_listener_is_dispatched_to_directly() -> None:
    # The usual case: the reader calls the one listener's deliver, no list in between; a
    # change of listeners drops it (the reader builds the entry again).
    st = NameState()
    a, b = L(0), L(1)
    st.attach(a)
    assert st.build() is a.deliver and st.snapshot is a.deliver
    st.attach(b)
    assert st.snapshot is None
    assert st.build() == [a.deliver, b.deliver]
    st.detach(a)
    assert st.snapshot is None
    assert st.build() is b.deliver
    st.silence()
    assert st.snapshot is None
    st.detach(b)
    assert st.build() == []
