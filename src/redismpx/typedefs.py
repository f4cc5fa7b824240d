"""The types in the public signatures: callbacks, the overflow policy, the keyword options."""

from __future__ import annotations

import ssl as _ssl
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Literal, TypedDict

if TYPE_CHECKING:  # a TypeVar default (PEP 696): typing has it from Python 3.13 only
    from typing_extensions import TypeVar

    Name = TypeVar("Name", bytes, str, default=bytes)
else:
    from typing import TypeVar

    Name = TypeVar("Name", bytes, str)
"""How a subscription hands channel names to the app: ``bytes``, or ``str`` with
``decode_names=True`` (``Message[str]``, ``Activated[str]``)."""

OnMessage = Callable[[bytes, bytes], "Awaitable[Any] | Any"]
"""``on_message(channel, payload)``: a plain function, or one returning an awaitable."""

OnTextMessage = Callable[[str, bytes], "Awaitable[Any] | Any"]
"""``on_message(channel, payload)`` of a subscription made with ``decode_names=True``."""

OnAnyMessage = Callable[[str | bytes, bytes], "Awaitable[Any] | Any"]
"""``on_message(channel, payload)`` when ``decode_names`` is a ``bool`` only known at run time:
it takes both name types."""

OnDisconnect = Callable[[BaseException], "Awaitable[Any] | Any"]
"""``on_disconnect(error)``: an outage (or a refusal, or a close by the library) reached it."""

OnActivation = Callable[[bytes], "Awaitable[Any] | Any"]
"""``on_activation(name)``: Redis confirmed ``name``; messages published from now on arrive."""

OnTextActivation = Callable[[str], "Awaitable[Any] | Any"]
"""``on_activation(name)`` of a subscription made with ``decode_names=True``."""

OnAnyActivation = Callable[[str | bytes], "Awaitable[Any] | Any"]
"""``on_activation(name)`` when ``decode_names`` is only known at run time."""

OnGap = Callable[[Any], "Awaitable[Any] | Any"]
"""``on_gap(gap)``: a recovering subscription missed messages its history no longer holds
(``gap`` is a :class:`~redismpx.Gap`)."""

OnDrop = Callable[[int], "Awaitable[Any] | Any"]
"""``on_drop(count)``: the overflow policy dropped ``count`` messages."""

OverflowPolicy = Literal["drop_oldest", "drop_newest", "close", "latest_per_channel"]
"""What a full buffer does with the next message (see the delivery model)."""

OVERFLOW_POLICIES: Final = ("drop_oldest", "drop_newest", "close", "latest_per_channel")
DEFAULT_MAX_BUFFER: Final = 1000
"""Pending messages per queued subscription, unless the multiplexer says otherwise."""


class ConnectionOptions(TypedDict, total=False):
    """How to reach Redis: the connection keywords of every facade (``None`` means unset).

    See :class:`~redismpx.Multiplexer` for what each means.
    """

    host: str | None
    port: int | None
    unix_socket_path: str | None
    username: str | None
    password: str | None
    db: int | None
    client_name: str | None
    ssl: _ssl.SSLContext | bool | None
    ssl_ca_certs: str | None
    ssl_certfile: str | None
    ssl_keyfile: str | None
    ssl_check_hostname: bool
    connect_timeout: float
    protocol: int | None


class TuningOptions(TypedDict, total=False):
    """Heartbeat, reconnection and delivery defaults of a multiplexer (see
    :class:`~redismpx.Multiplexer` for each and its default)."""

    health_check_interval: float
    health_check_timeout: float
    backoff_base: float
    backoff_cap: float
    max_buffer: int
    overflow: OverflowPolicy
    chunk_size: int
    random_source: Callable[[], float]


class SentinelOptions(TypedDict, total=False):
    """Redis Sentinel keywords (see :mod:`redismpx.sentinel`); any of them selects Sentinel."""

    sentinels: Sequence[tuple[str, int]]
    service_name: str
    sentinel_username: str | None
    sentinel_password: str | None


class MultiplexerOptions(ConnectionOptions, TuningOptions, SentinelOptions, total=False):
    """Every keyword option of :class:`~redismpx.Multiplexer` (and ``from_redis``)."""
