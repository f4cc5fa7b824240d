"""The pure delivery buffer: overflow policies, drop counts, event coalescing (no I/O)."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from redismpx._buffer import (
    ACTIVATION,
    AWAITABLE,
    CLOSE,
    DISCONNECT,
    DROPPED,
    Buffer,
    Event,
    OverflowPolicy,
    check_buffer,
)
from redismpx.errors import InvalidArgument, InvalidArgumentType

CHANNELS = (b"a", b"b", b"c")


def drain(buf: Buffer, wants: Any = None) -> list[Any]:
    """Everything take() hands out, events as (tag, arg)."""
    out: list[Any] = []
    while (item := buf.take(wants)) is not None:
        out.append((item.tag, item.arg) if isinstance(item, Event) else tuple(item))
    return out


def messages(items: list[Any]) -> list[tuple[bytes, bytes]]:
    return [i for i in items if isinstance(i[0], bytes)]


# -- overflow policies --------------------------------------------------------------------------


def test_drop_oldest_keeps_the_newest() -> None:
    buf = Buffer(2, "drop_oldest")
    assert [buf.put(b"a", b"%d" % k) for k in range(4)] == [0, 0, 1, 1]
    assert drain(buf) == [(b"a", b"2"), (b"a", b"3")]
    assert buf.dropped == 2 and buf.nmsgs == 0


def test_drop_newest_keeps_the_oldest() -> None:
    buf = Buffer(2, "drop_newest")
    assert [buf.put(b"a", b"%d" % k) for k in range(4)] == [0, 0, 1, 1]
    assert drain(buf) == [(b"a", b"0"), (b"a", b"1")]
    assert buf.dropped == 2


def test_close_answers_close_and_keeps_what_was_pending() -> None:
    buf = Buffer(1, "close")
    assert buf.put(b"a", b"0") == 0
    assert buf.put(b"a", b"1") == CLOSE
    assert buf.dropped == 1
    assert drain(buf) == [(b"a", b"0")]


def test_latest_per_channel_replaces_in_place_and_drops_the_oldest_channel() -> None:
    buf = Buffer(2, "latest_per_channel")
    assert buf.put(b"a", b"1") == 0
    assert buf.put(b"b", b"1") == 0
    assert buf.put(b"a", b"2") == 1  # replaced where it waits
    assert buf.put(b"c", b"1") == 1  # full: the oldest channel goes
    assert drain(buf) == [(b"b", b"1"), (b"c", b"1")]
    assert buf.put(b"a", b"3") == 0  # taken: a new entry again
    assert drain(buf) == [(b"a", b"3")]
    assert buf.dropped == 2


def test_events_do_not_count_against_the_bound_and_drop_oldest_skips_them() -> None:
    buf = Buffer(1, "drop_oldest")
    buf.push_keyed(ACTIVATION, b"a", b"a")
    buf.put(b"a", b"0")
    buf.push(AWAITABLE, "x")
    assert buf.put(b"a", b"1") == 1
    assert drain(buf) == [(ACTIVATION, b"a"), (AWAITABLE, "x"), (b"a", b"1")]


def test_take_unreported_counts_each_drop_once() -> None:
    buf = Buffer(1, "drop_newest")
    buf.put(b"a", b"0")
    buf.put(b"a", b"1")
    buf.put(b"a", b"2")
    assert buf.take_unreported() == 2
    assert buf.take_unreported() == 0
    buf.put(b"a", b"3")
    assert buf.take_unreported() == 1


@settings(max_examples=300, deadline=None)
@given(
    size=st.integers(1, 5),
    policy=st.sampled_from(["drop_oldest", "drop_newest", "latest_per_channel"]),
    ops=st.lists(
        st.one_of(st.tuples(st.just("put"), st.sampled_from(CHANNELS)), st.just(("take",))),
        max_size=60,
    ),
)
def test_policies_against_a_model(size: int, policy: OverflowPolicy, ops: list[Any]) -> None:
    """Every policy keeps what a plain model keeps, counts every loss, and stays bounded."""
    buf = Buffer(size, policy)
    model: list[tuple[bytes, bytes]] = []
    latest: OrderedDict[bytes, bytes] = OrderedDict()
    dropped = 0
    for k, op in enumerate(ops):
        if op[0] == "take":
            item = buf.take(None)
            if policy == "latest_per_channel":
                expected = latest.popitem(last=False) if latest else None
            else:
                expected = model.pop(0) if model else None
            assert (None if item is None else tuple(item)) == expected
            continue
        channel, data = op[1], b"%d" % k
        n = buf.put(channel, data)
        if policy == "latest_per_channel":
            if channel in latest:
                latest[channel] = data
                dropped += 1
            else:
                if len(latest) >= size:
                    latest.popitem(last=False)
                    dropped += 1
                latest[channel] = data
        elif len(model) < size:
            model.append((channel, data))
        else:
            dropped += 1
            if policy == "drop_oldest":
                model.pop(0)
                model.append((channel, data))
        assert n >= 0
        assert buf.nmsgs <= size
        assert buf.dropped == dropped
    rest = list(latest.items()) if policy == "latest_per_channel" else model
    assert drain(buf) == rest


# -- what take() skips ---------------------------------------------------------------------------


def test_take_skips_names_no_longer_wanted() -> None:
    buf = Buffer(10, "drop_oldest")
    buf.put(b"a", b"0")
    buf.push_keyed(ACTIVATION, b"a", b"a")
    buf.put(b"b", b"0")
    buf.push_keyed(ACTIVATION, b"b", b"b")
    buf.push_keyed(DISCONNECT, (DISCONNECT, b"a"), "refused")
    buf.stale = True  # b"a" was let go
    assert drain(buf, lambda name: name == b"b") == [
        (b"b", b"0"),
        (ACTIVATION, b"b"),
        (DISCONNECT, "refused"),  # a refusal is news even for a name let go
    ]
    assert buf.nmsgs == 0
    assert not buf.stale  # found empty: nothing from before the removal is left to come


def test_take_asks_nothing_while_no_name_was_let_go() -> None:
    buf = Buffer(10, "drop_oldest")
    buf.put(b"a", b"0")
    buf.push_keyed(ACTIVATION, b"a", b"a")

    def refuse(name: bytes) -> bool:
        raise AssertionError("asked")

    assert drain(buf, refuse) == [(b"a", b"0"), (ACTIVATION, b"a")]


def test_clear_returns_the_awaitables_left_and_empties_everything() -> None:
    buf = Buffer(2, "latest_per_channel")
    buf.put(b"a", b"0")
    buf.push(AWAITABLE, "x")
    buf.push_gap(ConnectionError())
    buf.push_drops(3)
    assert buf.clear() == ["x"]
    assert buf.take(None) is None and buf.nmsgs == 0
    assert buf.put(b"a", b"1") == 0  # the per-channel table was cleared too


# -- coalescing of unread events -----------------------------------------------------------------


def test_activation_repeated_without_an_outage_is_kept_once() -> None:
    buf = Buffer(10, "drop_oldest")
    for _ in range(3):
        buf.push_keyed(ACTIVATION, b"a", b"a")
    assert drain(buf) == [(ACTIVATION, b"a")]
    buf.push_keyed(ACTIVATION, b"a", b"a")  # once read, the next one is news again
    assert drain(buf) == [(ACTIVATION, b"a")]


def test_consecutive_outages_merge_into_the_latest() -> None:
    buf = Buffer(10, "drop_oldest")
    errors = [ConnectionError(f"outage {i}") for i in range(3)]
    buf.push_keyed(ACTIVATION, b"a", b"a")
    for error in errors:
        buf.push_gap(error)
        buf.push_keyed(ACTIVATION, b"a", b"a")
    assert drain(buf) == [(ACTIVATION, b"a"), (DISCONNECT, errors[-1]), (ACTIVATION, b"a")]


def test_an_unread_outage_moves_after_the_messages_it_follows() -> None:
    buf = Buffer(10, "drop_oldest")
    first, second = ConnectionError("1"), ConnectionError("2")
    buf.push_gap(first)
    buf.push_keyed(ACTIVATION, b"a", b"a")
    buf.put(b"a", b"0")
    buf.push_gap(second)
    buf.push_keyed(ACTIVATION, b"a", b"a")
    assert drain(buf) == [(b"a", b"0"), (DISCONNECT, second), (ACTIVATION, b"a")]


def test_drops_add_up_in_one_pending_event() -> None:
    buf = Buffer(10, "drop_oldest")
    buf.push_drops(2)
    buf.push_drops(3)
    assert drain(buf) == [(DROPPED, 5)]
    buf.push_drops(1)
    assert drain(buf) == [(DROPPED, 1)]


def test_forget_voids_the_pending_events_of_a_name() -> None:
    buf = Buffer(10, "drop_oldest")
    buf.push_keyed(ACTIVATION, b"a", b"a")
    buf.push_gap(ConnectionError())
    buf.push_keyed(ACTIVATION, b"a", b"a")
    buf.push_keyed(ACTIVATION, b"b", b"b")
    buf.forget(b"a")
    assert [tag for tag, _ in drain(buf)] == [DISCONNECT, ACTIVATION]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("msg"), st.sampled_from(CHANNELS)),
            st.tuples(st.just("act"), st.sampled_from(CHANNELS)),
            st.tuples(st.just("refused"), st.sampled_from(CHANNELS)),
            st.tuples(st.just("forget"), st.sampled_from(CHANNELS)),
            st.just(("gap",)),
            st.just(("drops",)),
            st.just(("take",)),
        ),
        max_size=300,
    )
)
def test_unread_events_stay_bounded_and_end_in_the_latest_state(ops: list[Any]) -> None:
    size = 4
    buf = Buffer(size, "drop_oldest")
    last_gap: BaseException | None = None
    for k, op in enumerate(ops):
        kind = op[0]
        if kind == "msg":
            buf.put(op[1], b"%d" % k)
        elif kind == "act":
            buf.push_keyed(ACTIVATION, op[1], op[1])
        elif kind == "refused":
            buf.push_keyed(DISCONNECT, (DISCONNECT, op[1]), op[1])
        elif kind == "forget":
            buf.forget(op[1])
            buf.forget((DISCONNECT, op[1]))
        elif kind == "gap":
            last_gap = ConnectionError(str(k))
            buf.push_gap(last_gap)
        elif kind == "drops":
            buf.push_drops(1)
        else:
            buf.take(None)
        live = len(buf.buf) - buf.voided
        # messages + per name an activation and a refusal, before and after the outage + 2
        assert live <= size + 4 * len(CHANNELS) + 2
        assert len(buf.buf) <= 2 * (size + 4 * len(CHANNELS) + 2) + 32  # compacted
    items = drain(buf)
    gaps = [i for i in items if i[0] == DISCONNECT and isinstance(i[1], ConnectionError)]
    assert len(gaps) <= 1
    if gaps:
        assert gaps[0][1] is last_gap  # the unread outages merged into the latest
    assert len([i for i in items if i[0] == DROPPED]) <= 1
    assert len(messages(items)) <= size


def test_check_buffer_refuses_bad_settings() -> None:
    check_buffer(1, "close")
    with pytest.raises(InvalidArgumentType):
        check_buffer(True, "close")
    with pytest.raises(InvalidArgument):
        check_buffer(0, "close")
    with pytest.raises(InvalidArgument):
        check_buffer(1, "drop_everything")
