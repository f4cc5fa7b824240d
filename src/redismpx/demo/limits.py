"""Input validation and per-socket rate limiting for the demo's WebSocket protocols.

Everything a browser or a command-line client sends is checked here; a bad input raises
:class:`BadInput`, whose message is sent back on that socket (the socket stays open).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

_NAME = re.compile(r"[A-Za-z0-9_.:\-]+")
_PATTERN = re.compile(r"[A-Za-z0-9_.:\-*?\[\]^]+")


class BadInput(ValueError):
    """An input the demo refuses; the message is safe to show to the client."""


@dataclass(frozen=True)
class Limits:
    """What one WebSocket may do."""

    max_name: int = 64  # characters of a channel name, a pattern or a promise suffix
    max_message: int = 4096  # UTF-8 bytes of a published message
    max_frame: int = 16384  # characters of one incoming WebSocket frame
    max_question: int = 200  # characters of a promise question
    max_channels: int = 32  # channels joined per socket
    max_patterns: int = 8  # patterns per socket
    max_promises: int = 8  # pending promises per socket
    min_timeout: float = 1.0  # seconds, promise timeout bounds
    max_timeout: float = 300.0
    rate: float = 20.0  # sustained commands per second per socket
    burst: int = 40  # commands allowed at once
    publish_timeout: float = 2.0  # seconds a publish waits for Redis before it is refused


def _check(value: object, what: str, limit: int, allowed: re.Pattern[str], chars: str) -> str:
    if not isinstance(value, str) or not value:
        raise BadInput(f"{what} must be a non-empty string")
    if len(value) > limit:
        raise BadInput(f"{what} is too long ({len(value)} characters, at most {limit})")
    if allowed.fullmatch(value) is None:
        raise BadInput(f"{what} {value!r} may only contain {chars}")
    return value


def check_channel(value: object, limits: Limits, what: str = "channel name") -> str:
    """A channel name (or promise suffix): letters, digits and ``_ . : -``."""
    return _check(value, what, limits.max_name, _NAME, "letters, digits and _ . : -")


def check_pattern(value: object, limits: Limits) -> str:
    """A glob pattern: the channel characters plus ``* ? [ ] ^``."""
    return _check(value, "pattern", limits.max_name, _PATTERN, "letters, digits, _ . : - * ? [ ] ^")


def check_message(value: object, limits: Limits) -> str:
    """A message to publish: a string of at most ``max_message`` UTF-8 bytes."""
    if not isinstance(value, str):
        raise BadInput("message must be a string")
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > limits.max_message:
        raise BadInput(f"message is too large ({size} bytes, at most {limits.max_message})")
    return value


def check_question(value: object, limits: Limits) -> str:
    """The free text of a promise question (may be empty)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadInput("question must be a string")
    if len(value) > limits.max_question:
        raise BadInput(f"question is too long (at most {limits.max_question} characters)")
    return value


def check_timeout(value: object, limits: Limits) -> float:
    """A promise timeout in seconds, within the limits."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadInput("timeout must be a number of seconds")
    if not limits.min_timeout <= value <= limits.max_timeout:
        raise BadInput(
            f"timeout must be between {limits.min_timeout:g} and {limits.max_timeout:g} seconds"
        )
    return float(value)


class RateLimiter:
    """A token bucket: ``rate`` commands per second, ``burst`` at once."""

    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = time.monotonic()

    def allow(self) -> bool:
        """Take one token if there is one."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
