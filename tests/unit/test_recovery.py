"""The sans-I/O recovery state machine (``redismpx._recovery.Track``) driven by hand, and the
wire format of ``redismpx._envelope``: no server, no event loop.

A :class:`Sink` records what a track asks for. Its ``active`` flags stand for what Redis holds
for the subscription (the channel and its envelope channel); the tests flip them as the link
would before calling ``Track.activated``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from redismpx._envelope import (
    RESERVED,
    encode,
    envelope_channel,
    history_keys,
    parse,
    slot_tag,
)
from redismpx._hashslot import SLOTS, key_slot
from redismpx._recovery import Track
from redismpx.history import GapReason, Position

CH = b"room"
E1, E2 = b"e1", b"e2"
AT3 = Position("e1", 3)
TAG = b"7"  # the tag of every entry here (a history that forks uses another)


@dataclass
class Sink:
    """A TrackSink that records every request, in order."""

    channel_on: bool = True
    envelope_on: bool = True
    delivered: list[bytes] = field(default_factory=list)
    gaps: list[tuple[GapReason, Position | None]] = field(default_factory=list)
    caught: int = 0
    reads: list[tuple[int, Position | None]] = field(default_factory=list)  # (generation, at)
    log: list[str] = field(default_factory=list)  # everything, to check relative order

    def deliver_to(self, channel: bytes, payload: bytes) -> None:
        assert channel == CH
        self.delivered.append(payload)
        self.log.append(f"deliver {payload.decode()}")

    def gap(self, channel: bytes, reason: GapReason, since: Position | None) -> None:
        assert channel == CH
        self.gaps.append((reason, since))
        self.log.append(f"gap {reason}")

    def caught_up(self, channel: bytes) -> None:
        assert channel == CH
        self.caught += 1
        self.log.append("caught up")

    def read(self, track: Track) -> None:
        self.reads.append((track.generation, track.position))
        self.log.append("read")

    def refused(self, channel: bytes, error: BaseException) -> None:
        self.log.append(f"refused {error}")

    def channel_active(self, channel: bytes) -> bool:
        return self.channel_on

    def envelope_active(self, channel: bytes) -> bool:
        return self.envelope_on


def live_track(since: Position | None = AT3) -> tuple[Track, Sink]:
    """A track that went through its first activation and read: live at ``since``."""
    sink = Sink()
    track = Track(sink, CH, since)
    track.activated(True)
    epoch = None if since is None else since.epoch.encode()
    last = 0 if since is None else since.offset
    track.read_done(track.generation, epoch, last, [])
    assert track.live
    sink.delivered.clear()
    sink.log.clear()
    sink.reads.clear()
    sink.caught = 0
    return track, sink


def publish(track: Track, epoch: bytes, offset: int, payload: bytes | None = None) -> None:
    """What the link hands a track for one publication with history: envelope, then copy."""
    data = payload if payload is not None else str(offset).encode()
    track.envelope(epoch, offset, TAG, data)
    if track.sink.channel_active(CH):  # type: ignore[attr-defined]
        track.plain(data)


def entries(*offsets: int) -> list[tuple[int, bytes, bytes]]:
    return [(o, TAG, str(o).encode()) for o in offsets]


# -- live ---------------------------------------------------------------------------------------


def test_live_envelopes_are_delivered_once_and_their_copies_skipped() -> None:
    track, sink = live_track()
    for offset in (4, 5, 6):
        publish(track, E1, offset)
    assert sink.delivered == [b"4", b"5", b"6"]
    assert track.position == Position("e1", 6)
    assert sink.reads == [] and sink.gaps == []


def test_a_duplicate_envelope_is_skipped_and_so_is_its_copy() -> None:
    track, sink = live_track()
    publish(track, E1, 4)
    publish(track, E1, 4)  # again (an envelope can be heard twice only in a bug elsewhere)
    publish(track, E1, 2)  # older
    assert sink.delivered == [b"4"]
    track.plain(b"plain")  # the copies were all consumed: this is a real message
    assert sink.delivered == [b"4", b"plain"]


def test_plain_messages_without_history_are_delivered_live() -> None:
    track, sink = live_track()
    track.plain(b"a")
    publish(track, E1, 4)
    track.plain(b"b")
    track.plain(b"c")
    assert sink.delivered == [b"a", b"4", b"b", b"c"]


def test_a_plain_payload_equal_to_a_copy_is_still_delivered() -> None:
    # Copies are skipped by position in the stream, not by content.
    track, sink = live_track()
    publish(track, E1, 4, b"same")
    track.plain(b"same")
    assert sink.delivered == [b"same", b"same"]


def test_a_skipped_offset_while_live_reads_the_history_then_goes_on_in_order() -> None:
    track, sink = live_track()
    publish(track, E1, 4)
    publish(track, E1, 7)  # 5 and 6 missed while connected
    assert sink.delivered == [b"4"] and not track.live
    assert sink.reads == [(track.generation, Position("e1", 4))]
    publish(track, E1, 8)  # held meanwhile
    track.read_done(track.generation, E1, 8, entries(5, 6, 7, 8))
    assert sink.delivered == [b"4", b"5", b"6", b"7", b"8"]
    assert sink.caught == 0  # a miss while connected is not an activation
    assert sink.gaps == [] and track.live


def test_a_new_epoch_while_live_reads_the_history_and_delivers_it_all() -> None:
    track, sink = live_track()
    publish(track, E2, 3)  # a new history whose first two we did not hear
    assert not track.live and len(sink.reads) == 1
    track.read_done(track.generation, E2, 3, entries(1, 2, 3))
    assert sink.delivered == [b"1", b"2", b"3"] and track.position == Position("e2", 3)
    assert sink.log[0] == "read" and sink.log[-3:] == ["deliver 1", "deliver 2", "deliver 3"]


def test_a_new_history_starting_while_live_is_no_gap() -> None:
    track, sink = live_track()
    publish(track, E2, 1)
    if not track.live:
        track.read_done(track.generation, E2, 1, entries(1))
    assert sink.delivered == [b"1"] and track.position == Position("e2", 1)
    assert sink.gaps == []


# -- recovering -----------------------------------------------------------------------------------


def test_messages_during_recovery_are_held_until_the_read_then_replayed() -> None:
    track, sink = live_track()
    track.activated(True)  # after an outage
    assert sink.reads == [(track.generation, Position("e1", 3))]
    publish(track, E1, 6)  # live again, before the read's reply
    track.plain(b"p")
    publish(track, E1, 7)
    assert sink.delivered == []
    track.read_done(track.generation, E1, 7, entries(4, 5, 6, 7))
    assert [d for d in sink.delivered if d != b"p"] == [b"4", b"5", b"6", b"7"]
    assert sink.delivered.count(b"p") == 1
    assert sink.caught == 1 and sink.log[-1] == "caught up"
    assert track.position == Position("e1", 7)
    publish(track, E1, 8)
    assert sink.delivered[-1] == b"8"


def test_a_held_plain_message_keeps_its_place_among_history_publications() -> None:
    track, sink = live_track()
    track.activated(True)
    publish(track, E1, 6)
    track.plain(b"p")  # published between 6 and 7, heard in that order
    publish(track, E1, 7)
    track.read_done(track.generation, E1, 7, entries(4, 5, 6, 7))
    assert sink.delivered == [b"4", b"5", b"6", b"p", b"7"]


def test_one_name_active_does_not_read_until_both_are() -> None:
    track, sink = live_track()
    sink.channel_on = False
    track.activated(False)  # the envelope channel came back first
    assert sink.reads == [] and not track.live
    # An envelope while the channel is not active: no copy is coming for it.
    track.envelope(E1, 4, TAG, b"4")
    sink.channel_on = True
    track.activated(True)  # now the channel: a newer generation, the held envelope dropped
    assert sink.reads == [(track.generation, Position("e1", 3))]
    track.read_done(track.generation, E1, 4, entries(4))
    assert sink.delivered == [b"4"] and sink.caught == 1


def test_a_plain_message_while_the_envelope_channel_is_down_is_dropped() -> None:
    # It cannot be told from the copy of an envelope not heard: the history has that one.
    track, sink = live_track()
    sink.envelope_on = False
    track.activated(False)
    track.plain(b"4")  # the copy of publication 4, or a plain message: unknowable
    sink.envelope_on = True
    track.activated(True)
    track.read_done(track.generation, E1, 4, entries(4))
    assert sink.delivered == [b"4"]


def test_a_plain_message_held_while_the_envelope_channel_is_up() -> None:
    track, sink = live_track()
    sink.channel_on = False
    track.activated(False)
    track.plain(b"p")  # cannot happen while the channel is down, but the rule holds
    sink.channel_on = True
    track.activated(True)
    track.plain(b"q")
    track.read_done(track.generation, E1, 3, [])
    assert sink.delivered == [b"q"]  # held ones of the older generation were dropped


def test_held_copies_are_skipped_as_they_come() -> None:
    track, sink = live_track()
    track.activated(True)
    for offset in (4, 5):
        publish(track, E1, offset)
    assert track.held == [(E1, 4, TAG, b"4"), (E1, 5, TAG, b"5")]  # the copies were not held
    track.read_done(track.generation, E1, 5, entries(4, 5))
    assert sink.delivered == [b"4", b"5"]


def test_a_read_landing_between_an_envelope_and_its_copy() -> None:
    track, sink = live_track()
    track.activated(True)
    track.envelope(E1, 4, TAG, b"4")  # its copy is still on the wire
    track.read_done(track.generation, E1, 4, entries(4))
    track.plain(b"4")  # the copy: skipped
    track.plain(b"p")  # a message without history: delivered
    assert sink.delivered == [b"4", b"p"]


def test_a_read_landing_after_the_copy_does_not_swallow_the_next_plain_message() -> None:
    track, sink = live_track()
    track.activated(True)
    publish(track, E1, 4)  # envelope and copy both in before the read's reply
    track.read_done(track.generation, E1, 4, entries(4))
    track.plain(b"p")
    assert sink.delivered == [b"4", b"p"]


def test_a_held_envelope_that_reveals_a_miss_starts_another_read() -> None:
    # The read saw up to 5; a held envelope says 8: 6 and 7 were published after the read
    # began and their envelopes lost (a kill between the read and the replay, say).
    track, sink = live_track()
    track.activated(True)
    publish(track, E1, 8)
    publish(track, E1, 9)
    first = track.generation
    track.read_done(first, E1, 5, entries(4, 5))
    assert sink.delivered == [b"4", b"5"] and not track.live
    assert track.generation == first + 1 and sink.reads[-1] == (first + 1, Position("e1", 5))
    assert sink.caught == 0
    assert [h[1] for h in track.held] == [8, 9]
    track.read_done(track.generation, E1, 9, entries(6, 7, 8, 9))
    assert sink.delivered == [b"4", b"5", b"6", b"7", b"8", b"9"]
    assert sink.caught == 1  # told once, when caught up for real


# -- gaps -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("epoch", "last", "found", "reason", "delivered"),
    [
        (E1, 10, entries(7, 8, 9, 10), "trimmed", [b"7", b"8", b"9", b"10"]),
        (E1, 10, [], "trimmed", []),  # trimmed to nothing (MAXLEN ~ keeps more, but still)
        (None, 0, [], "lost", []),
        (E2, 2, entries(1, 2), "epoch", [b"1", b"2"]),
    ],
    ids=["trimmed", "trimmed-empty", "lost", "epoch"],
)
def test_read_done_reports_one_gap_before_what_follows(
    epoch: bytes | None,
    last: int,
    found: list[tuple[int, bytes]],
    reason: GapReason,
    delivered: list[bytes],
) -> None:
    track, sink = live_track()
    track.activated(True)
    track.read_done(track.generation, epoch, last, found)
    assert sink.gaps == [(reason, Position("e1", 3))]
    assert sink.delivered == delivered
    assert sink.log[1] == f"gap {reason}" and sink.log[-1] == "caught up"  # after "read"
    assert sink.caught == 1


def test_a_hole_inside_the_read_entries_is_a_gap() -> None:
    track, sink = live_track()
    track.activated(True)
    track.read_done(track.generation, E1, 12, entries(4, 5, 11, 12))
    # Told where the hole is: after 5, before 11 (``since`` is the last one delivered).
    assert sink.gaps == [("trimmed", Position("e1", 5))]
    assert sink.delivered == [b"4", b"5", b"11", b"12"]
    assert sink.log.index("gap trimmed") == 3  # after "read", 4 and 5


def test_no_gap_when_nothing_was_published_or_all_is_there() -> None:
    track, sink = live_track()
    track.activated(True)
    track.read_done(track.generation, E1, 3, [])
    track.activated(True)
    track.read_done(track.generation, E1, 5, entries(4, 5))
    assert sink.gaps == [] and sink.delivered == [b"4", b"5"] and sink.caught == 2


def test_after_a_lost_history_the_next_publication_starts_afresh() -> None:
    track, sink = live_track()
    track.activated(True)
    track.read_done(track.generation, None, 0, [])
    assert sink.gaps == [("lost", Position("e1", 3))] and track.position is None
    publish(track, E2, 1)
    publish(track, E2, 2)
    assert sink.delivered == [b"1", b"2"] and track.position == Position("e2", 2)
    # Lost again while it had nothing: a gap from the new position only.
    track.activated(True)
    track.read_done(track.generation, None, 0, [])
    assert sink.gaps[-1] == ("lost", Position("e2", 2))


def test_a_lost_history_with_held_envelopes_of_the_new_one() -> None:
    track, sink = live_track()
    track.activated(True)
    publish(track, E2, 1)  # the new history began after the read was answered
    track.read_done(track.generation, None, 0, [])
    assert sink.delivered == [b"1"] and track.position == Position("e2", 1)
    assert len(sink.gaps) == 1


def test_a_since_of_another_epoch_delivers_the_whole_new_history() -> None:
    sink = Sink()
    track = Track(sink, CH, Position("old", 50))
    track.activated(True)
    track.read_done(track.generation, E1, 3, entries(1, 2, 3))
    assert sink.gaps == [("epoch", Position("old", 50))]
    assert sink.delivered == [b"1", b"2", b"3"]


# -- stale reads ----------------------------------------------------------------------------------


def test_a_read_of_an_older_generation_is_ignored() -> None:
    track, sink = live_track()
    track.activated(True)
    stale = track.generation
    track.activated(True)  # killed again during the read: reading again
    track.read_done(stale, E1, 9, entries(4, 5, 6, 7, 8, 9))
    assert sink.delivered == [] and not track.live and sink.caught == 0
    track.read_done(track.generation, E1, 9, entries(4, 5, 6, 7, 8, 9))
    assert sink.delivered == [b"4", b"5", b"6", b"7", b"8", b"9"]
    assert sink.caught == 1


def test_a_read_answered_after_the_track_went_live_is_ignored() -> None:
    track, sink = live_track()
    track.activated(True)
    g = track.generation
    track.read_done(g, E1, 3, [])
    track.read_done(g, E1, 5, entries(4, 5))  # the same generation again: live, ignored
    assert sink.delivered == [] and sink.caught == 1


def test_an_activation_drops_what_an_earlier_outage_held() -> None:
    track, sink = live_track()
    track.activated(True)
    publish(track, E1, 4)
    track.activated(True)  # the history has 4: no need to hold it twice
    assert track.held == []
    track.read_done(track.generation, E1, 4, entries(4))
    assert sink.delivered == [b"4"]


# -- fresh starts ---------------------------------------------------------------------------------


def test_fresh_start_from_the_first_held_envelope() -> None:
    sink = Sink()
    track = Track(sink, CH, None)
    track.activated(True)
    track.plain(b"p")  # without history: delivered, but not a start
    publish(track, E1, 8)
    publish(track, E1, 9)
    # The read saw the end at 9: the start is the first envelope held, not the history's end.
    track.read_done(track.generation, E1, 9, [])
    assert sink.delivered == [b"p", b"8", b"9"] and sink.gaps == []
    assert track.position == Position("e1", 9) and sink.caught == 1


def test_fresh_start_from_the_history_end_when_nothing_was_held() -> None:
    sink = Sink()
    track = Track(sink, CH, None)
    track.activated(True)
    track.read_done(track.generation, E1, 41, [])
    assert sink.delivered == [] and track.position == Position("e1", 41)
    publish(track, E1, 42)
    assert sink.delivered == [b"42"]
    # From then on an outage is recovered from 41 on, even before anything was delivered.
    track.activated(True)
    assert sink.reads[-1][1] == Position("e1", 42)


def test_fresh_start_recovers_from_its_start_even_before_any_delivery() -> None:
    sink = Sink()
    track = Track(sink, CH, None)
    track.activated(True)
    track.read_done(track.generation, E1, 10, [])
    track.activated(True)  # an outage before anything came
    track.read_done(track.generation, E1, 12, entries(11, 12))
    assert sink.delivered == [b"11", b"12"] and sink.gaps == []


def test_fresh_start_without_history_starts_at_the_first_live_envelope() -> None:
    sink = Sink()
    track = Track(sink, CH, None)
    track.activated(True)
    track.read_done(track.generation, None, 0, [])
    assert sink.gaps == [] and track.position is None and track.live
    publish(track, E1, 1)
    publish(track, E1, 2)
    assert sink.delivered == [b"1", b"2"] and track.position == Position("e1", 2)


def test_fresh_start_without_history_gap_free_on_its_first_outage() -> None:
    sink = Sink()
    track = Track(sink, CH, None)
    track.activated(True)
    track.read_done(track.generation, None, 0, [])
    track.activated(True)  # an outage before any publication: still no history
    track.read_done(track.generation, None, 0, [])
    assert sink.gaps == []  # nothing was ever delivered: nothing was missed


# -- caught up ------------------------------------------------------------------------------------


def test_caught_up_once_per_activation() -> None:
    sink = Sink()
    track = Track(sink, CH, Position("e1", 0))
    sink.channel_on = False
    track.activated(False)
    sink.channel_on = True
    track.activated(True)
    track.read_done(track.generation, E1, 0, [])
    assert sink.caught == 1
    publish(track, E1, 3)  # a miss while live: read, but not "caught up" again
    track.read_done(track.generation, E1, 3, entries(1, 2, 3))
    assert sink.caught == 1
    for _ in range(3):
        track.activated(True)
        track.read_done(track.generation, E1, 3, [])
    assert sink.caught == 4


def test_removal_style_generation_bump_voids_a_read_in_flight() -> None:
    # What RecoveryTap.remove does to a track: the read in flight must deliver nothing.
    track, sink = live_track()
    track.activated(True)
    g = track.generation
    track.generation += 1
    track.live = False
    track.read_done(g, E1, 5, entries(4, 5))
    assert sink.delivered == [] and sink.caught == 0


@given(st.lists(st.sampled_from(["pub", "plain", "down", "up", "read", "late"]), max_size=80))
def test_any_interleaving_delivers_history_publications_once_in_order(script: list[str]) -> None:
    """A model of one channel: publications with history (numbered) and without, outages
    (what is published while down reaches the history only; "up" is the activation) and
    reads, answered with the history as it was when asked ("read") or as it is now
    ("late": publications since were held meanwhile, and are in the reply too). Whatever
    the order, every publication with history is delivered exactly once, in order, with no
    gap, and no plain message twice."""
    sink = Sink()
    track = Track(sink, CH, Position("e1", 0))
    history: list[int] = []
    pending: list[tuple[int, int]] = []  # reads asked: (generation, history length then)
    connected = True
    plain_sent = 0
    sink.read = lambda t: pending.append((t.generation, len(history)))  # type: ignore[method-assign]
    track.activated(True)

    def answer(late: bool) -> None:
        generation, upto = pending.pop(0)
        seen = len(history) if late else upto
        start = track.offset if track.epoch == E1 else 0
        track.read_done(generation, E1, seen, entries(*range(start + 1, seen + 1)))

    for step in script:
        if step == "pub":
            history.append(len(history) + 1)
            if connected:
                publish(track, E1, history[-1])
        elif step == "plain":
            plain_sent += 1
            if connected:
                track.plain(b"p%d" % plain_sent)
        elif step == "down":
            connected = False
        elif step == "up" and not connected:
            connected = True
            track.activated(True)
        elif step in ("read", "late") and pending:
            answer(step == "late")
    if not connected:
        track.activated(True)
    while pending:
        answer(True)
    numbered = [d for d in sink.delivered if not d.startswith(b"p")]
    assert numbered == [str(i).encode() for i in range(1, len(history) + 1)]
    assert sink.gaps == [] and track.live
    plains = [d for d in sink.delivered if d.startswith(b"p")]
    assert len(plains) == len(set(plains))


# -- the envelope format and names ----------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"", b"x", b"a:b:c", b":", b"\r\n", b"1:e:5:nested", bytes(range(256)), b"\x00:\xff\r\n"],
)
def test_envelopes_round_trip(payload: bytes) -> None:
    data = encode(b"0a1b2c3d4e5f6071", 12345, b"99", payload)
    assert parse(data) == (b"0a1b2c3d4e5f6071", 12345, b"99", payload)


@given(st.binary(), st.integers(min_value=0, max_value=10**14))
def test_envelopes_round_trip_any_payload(payload: bytes, offset: int) -> None:
    epoch = b"%016x" % (offset * 7919 % 2**64)
    assert parse(encode(epoch, offset, b"5", payload)) == (epoch, offset, b"5", payload)


@pytest.mark.parametrize(
    "data",
    [b"", b"1", b"1:e", b"1:e:5", b"2:e:5:x", b"1:e:x5:y", b"1:e::y", b"1:e:-5:y", b"hello"],
)
def test_what_is_not_an_envelope_parses_as_none(data: bytes) -> None:
    assert parse(data) is None


def test_the_script_builds_the_envelope_encode_builds() -> None:
    # The publish script concatenates '1:' .. e .. ':' .. o .. ':' .. payload.
    assert encode(b"ab", 7, b"42", b"p") == b"1:ab:7-42:p"


def test_slot_tags_cover_every_slot_with_at_most_three_characters() -> None:
    tags = [slot_tag(s) for s in range(SLOTS)]
    assert all(1 <= len(t) <= 3 for t in tags)
    assert all(key_slot(t) == s for s, t in enumerate(tags))
    assert len(set(tags)) == SLOTS
    assert all(b"{" not in t and b"}" not in t for t in tags)


@pytest.mark.parametrize(
    "channel",
    [b"room", b"", b"news:sport", b"user:{42}:inbox", b"{}weird", b"a{b}c{d}", b"{", b"\xff\x00"],
)
def test_reserved_names_share_the_channels_slot(channel: bytes) -> None:
    env = envelope_channel(channel)
    meta, log = history_keys(channel)
    slot = key_slot(channel)
    for name in (env, meta, log):
        assert name.startswith(RESERVED)
        assert name.endswith(channel)
        assert key_slot(name) == slot
    assert env != channel and len({env, meta, log}) == 3


def test_a_channel_that_looks_reserved_gets_its_own_names() -> None:
    # An envelope channel is a channel too: its own envelope channel differs from it.
    env = envelope_channel(b"room")
    assert envelope_channel(env) != env
    assert key_slot(envelope_channel(env)) == key_slot(env)
