"""The counting of the demo's "Nothing missed" panel (:mod:`redismpx.demo.recovery`): pure,
no server."""

from __future__ import annotations

from redismpx.demo.recovery import Tally, ranges


def test_ranges_groups_consecutive_numbers_and_stops_at_the_limit() -> None:
    assert ranges([]) == []
    assert ranges([5, 3, 4, 9, 11, 12]) == [[3, 5], [9, 9], [11, 12]]
    assert ranges([1, 3, 5, 7], limit=2) == [[1, 1], [3, 3]]


def test_a_number_is_missed_only_once_a_later_one_arrived() -> None:
    tally = Tally(first=10)
    published = [10, 11, 12, 13]
    for n in (10, 11):
        tally.receive(n)
    # 12 and 13 may still be on their way: pending, not missed.
    assert tally.missed(published) == [] and tally.pending(published) == 2
    tally.receive(13)
    assert tally.missed(published) == [12] and tally.pending(published) == 0
    report = tally.report(published)
    assert report["received"] == 3 and report["missed"] == 1
    assert report["missed_ranges"] == [[12, 12]] and report["last"] == 13


def test_duplicates_and_out_of_order_are_counted_apart() -> None:
    tally = Tally(first=1)
    for n in (1, 3, 2, 3):
        tally.receive(n)
    report = tally.report([1, 2, 3])
    assert report["deliveries"] == 4 and report["received"] == 3
    assert report["duplicates"] == 1 and report["out_of_order"] == 1
    assert report["missed"] == 0 and report["last"] == 3


def test_a_fresh_tally_reports_nothing_received() -> None:
    report = Tally(first=7).report([7, 8])
    assert report["received"] == 0 and report["last"] is None
    assert report["missed"] == 0 and report["pending"] == 2
    assert report["state"] == "activating" and report["gaps"] == 0
