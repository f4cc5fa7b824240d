"""Full-jitter exponential backoff, with an injected random source."""

from __future__ import annotations

import pytest

from redismpx._backoff import Backoff


def test_ceiling_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.008, 0.512, rand=lambda: 1.0)
    delays = [b.next_delay() for _ in range(9)]
    assert delays == [0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 0.512, 0.512]
    b.reset()
    assert b.next_delay() == 0.008


def test_full_jitter_scales_the_ceiling() -> None:
    b = Backoff(0.01, 1.0, rand=lambda: 0.25)
    assert [b.next_delay() for _ in range(3)] == [0.0025, 0.005, 0.01]
    huge = Backoff(0.01, 1.0, rand=lambda: 0.5)
    huge.attempt = 10_000  # no overflow after a very long outage
    assert huge.next_delay() == 0.5


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Backoff(0.0, 1.0)
    with pytest.raises(ValueError):
        Backoff(1.0, 0.5)
