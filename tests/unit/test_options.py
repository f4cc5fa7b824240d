"""Validation of durations and connection options (no server needed)."""

from __future__ import annotations

from typing import Any

import pytest

from redismpx._options import (
    MAX_SECONDS,
    MIN_SECONDS,
    check_duration,
    check_link_settings,
    parse_options,
)
from redismpx.errors import InvalidArgument, InvalidArgumentType

GOOD = {
    "health_check_interval": 5.0,
    "health_check_timeout": 5.0,
    "backoff_base": 0.008,
    "backoff_cap": 0.512,
}


@pytest.mark.parametrize("value", [MIN_SECONDS, 1, 2.5, MAX_SECONDS])
def test_durations_in_range_are_accepted(value: float) -> None:
    assert check_duration("d", value) == float(value)


@pytest.mark.parametrize(
    "value", [float("inf"), float("-inf"), float("nan"), 1e300, MAX_SECONDS * 1.01, 0, -1, 1e-9]
)
def test_durations_out_of_range_name_the_parameter_and_the_range(value: float) -> None:
    with pytest.raises(InvalidArgument, match=r"^d must be from 0\.001 to 86400 seconds"):
        check_duration("d", value)


@pytest.mark.parametrize("value", ["5", None, True, [1]])
def test_durations_of_the_wrong_type(value: Any) -> None:
    with pytest.raises(InvalidArgumentType, match="d must be a number of seconds"):
        check_duration("d", value)


@pytest.mark.parametrize("name", sorted(GOOD))
def test_link_settings_check_each_one(name: str) -> None:
    assert check_link_settings(**GOOD) == (5.0, 5.0, 0.008, 0.512)
    with pytest.raises(InvalidArgument, match=name):
        check_link_settings(**{**GOOD, name: float("inf")})


def test_backoff_cap_below_base() -> None:
    with pytest.raises(InvalidArgument, match=r"backoff_cap \(1\) must be >= backoff_base \(2\)"):
        check_link_settings(**{**GOOD, "backoff_base": 2, "backoff_cap": 1})


def test_connect_timeout_is_bounded() -> None:
    assert parse_options(connect_timeout=MAX_SECONDS).connect_timeout == MAX_SECONDS
    with pytest.raises(InvalidArgument, match="connect_timeout"):
        parse_options(connect_timeout=float("inf"))


@pytest.mark.parametrize(
    "url", ["redis://h/\u00b2", "redis://h/0?db=\u00b2", "unix:///tmp/s?protocol=\u00b3"]
)
def test_non_ascii_digits_in_the_url_are_a_typed_error(url: str) -> None:
    # str.isdigit() accepts superscripts, which int() refuses. BUG: a raw ValueError
    # ("invalid literal for int() with base 10: '²'"), quoting the URL.
    with pytest.raises(InvalidArgument) as info:
        parse_options(url)
    assert info.value.__cause__ is None and info.value.__context__ is None
