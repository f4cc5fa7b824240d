"""Where and how to connect: URL parsing and validation, with the password kept out of reprs."""

from __future__ import annotations

import math
import random
import ssl as _ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Unpack
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from ._buffer import check_buffer
from .errors import InvalidArgument, InvalidArgumentType
from .typedefs import DEFAULT_MAX_BUFFER, ConnectionOptions, OverflowPolicy

_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")


@dataclass(frozen=True)
class ConnectOptions:
    """Connection settings of one Redis node. ``repr`` never shows the password."""

    host: str = "127.0.0.1"
    port: int = 6379
    unix_path: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    db: int = 0
    client_name: str | None = None
    ssl: _ssl.SSLContext | None = None
    server_hostname: str | None = None
    connect_timeout: float = 5.0
    protocol: int | None = None  # None: RESP3 when the server speaks it, else RESP2

    def describe(self) -> str:
        """The address for logs and errors (never the password)."""
        if self.unix_path is not None:
            where = f"unix://{self.unix_path}"
        else:
            where = f"{'rediss' if self.ssl else 'redis'}://{self.host}:{self.port}"
        return where if not self.db else f"{where}/{self.db}"

    def with_address(self, host: str, port: int) -> ConnectOptions:
        """The same settings for another node (a cluster shard)."""
        return replace(self, host=host, port=port, unix_path=None, server_hostname=None)


def _check_timeout(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentType(f"{name} must be a number of seconds, not {value!r}")
    if math.isnan(value) or value <= 0:
        raise InvalidArgument(f"{name} must be a positive number of seconds, not {value!r}")
    return float(value)


def check_seconds(name: str, value: Any, *, allow_none: bool = False) -> float | None:
    """Validate a duration argument: a positive, finite-or-infinite number (or None)."""
    return _check_timeout(name, value, allow_none=allow_none)


# The bounds of the durations the supervisor waits for. Infinity, or 1e300, would stop it
# reconnecting (or detecting a dead link); a vanishing backoff_base would make it retry in a
# hot loop (the delay only doubles 60 times).
MIN_SECONDS = 0.001
MAX_SECONDS = 86400.0  # a day


def check_duration(name: str, value: Any) -> float:
    """Validate a supervisor duration: a number of seconds in [MIN_SECONDS, MAX_SECONDS]."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidArgumentType(f"{name} must be a number of seconds, not {value!r}")
    if not MIN_SECONDS <= value <= MAX_SECONDS:  # NaN too
        raise InvalidArgument(
            f"{name} must be from {MIN_SECONDS:g} to {MAX_SECONDS:g} seconds (a day), not {value!r}"
        )
    return float(value)


def check_link_settings(
    *,
    health_check_interval: Any,
    health_check_timeout: Any,
    backoff_base: Any,
    backoff_cap: Any,
) -> tuple[float, float, float, float]:
    """Validate the heartbeat and reconnect settings of a multiplexer (each with
    :func:`check_duration`, and ``backoff_base <= backoff_cap``); returned in that order."""
    interval = check_duration("health_check_interval", health_check_interval)
    timeout = check_duration("health_check_timeout", health_check_timeout)
    base = check_duration("backoff_base", backoff_base)
    cap = check_duration("backoff_cap", backoff_cap)
    if cap < base:
        raise InvalidArgument(f"backoff_cap ({cap:g}) must be >= backoff_base ({base:g})")
    return interval, timeout, base, cap


# URL errors never quote the URL: a password with an unencoded '#', '/', '?' or '@' is split
# into the wrong parts (the port, the path, the query), which an error would then show.
_ENCODE_HINT = "percent-encode special characters such as # / ? @ in the password"


def _split_url(url: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:
        pass  # outside the except clause: the error quotes a part of the URL
    raise InvalidArgument(f"malformed URL: unbalanced or invalid [IPv6] host ({_ENCODE_HINT})")


def _url_port(parts: SplitResult) -> int | None:
    try:
        return parts.port
    except ValueError:
        pass  # its message quotes what stood after the last ':' (maybe half a password)
    raise InvalidArgument(
        f"bad port in the URL: it must be a number from 1 to 65535 ({_ENCODE_HINT})"
    )


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _default_ssl_context(
    ca_certs: str | None, certfile: str | None, keyfile: str | None, check_hostname: bool
) -> _ssl.SSLContext:
    ctx = _ssl.create_default_context(cafile=ca_certs)
    ctx.check_hostname = check_hostname
    if certfile is not None:
        ctx.load_cert_chain(certfile, keyfile)
    return ctx


# -- the keyword options of the public facades, defined once --------------------------------


# Keywords that override what the URL says, and the ConnectOptions field each sets.
_OVERRIDES = (
    "host",
    "port",
    "unix_socket_path",
    "username",
    "password",
    "db",
    "client_name",
    "protocol",
)
_FIELD = {"unix_socket_path": "unix_path"}


def parse_options(url: str | None = None, **options: Unpack[ConnectionOptions]) -> ConnectOptions:
    """Build :class:`ConnectOptions` from a URL and keyword overrides (keywords win).

    URLs: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` (TLS, certificate
    verification on), ``unix:///path/to/socket[?db=N]``; the query may give ``db``,
    ``client_name`` and ``protocol``.
    """
    values: dict[str, Any] = {}
    use_tls = False
    if url is not None:
        if not isinstance(url, str):
            raise InvalidArgumentType(f"url must be a str, not {type(url).__name__}")
        parts = _split_url(url)
        scheme = parts.scheme.lower()
        if scheme not in _SCHEMES:
            # Quoted only when it is one: in "user:password@host" it is the user name.
            what = repr(parts.scheme) if url.lower().startswith(f"{scheme}://") else "missing"
            raise InvalidArgument(
                f"unsupported URL scheme ({what}): use redis://, rediss:// or unix://"
            )
        if "#" in url:
            raise InvalidArgument(f"the URL must not contain '#' ({_ENCODE_HINT})")
        if parts.username:
            values["username"] = unquote(parts.username)
        if parts.password is not None:
            values["password"] = unquote(parts.password)
        if any("=" not in field for field in parts.query.split("&") if field):
            # "redis://:12?x@host" too: a password cut short at an unencoded '?'
            raise InvalidArgument(f"the URL query must be key=value pairs ({_ENCODE_HINT})")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        if scheme == "unix":
            if not parts.path:
                raise InvalidArgument("a unix:// URL needs a socket path")
            values["unix_path"] = unquote(parts.path)
        else:
            use_tls = scheme in ("rediss", "valkeys")
            parsed_port = _url_port(parts)
            if parts.hostname:
                values["host"] = parts.hostname
            if parsed_port is not None:
                values["port"] = parsed_port
            path = parts.path.strip("/")
            if path:
                if not (path.isascii() and path.isdigit()):
                    raise InvalidArgument(
                        f"the URL path must be a db number such as /0 ({_ENCODE_HINT})"
                    )
                values["db"] = int(path)
        for key in ("db", "protocol"):
            if key in query:
                if not (query[key].isascii() and query[key].isdigit()):
                    raise InvalidArgument(f"{key} in the URL must be a number")
                values[key] = int(query[key])
        for key in ("client_name", "username", "password"):
            if key in query:
                values[key] = query[key]
    for key in options:
        if key not in _CONNECTION_KEYS:
            raise InvalidArgumentType(f"unknown connection option {key!r}")
    overrides = {_FIELD.get(k, k): options.get(k) for k in _OVERRIDES}
    values.update({k: v for k, v in overrides.items() if v is not None})

    for key in ("host", "unix_path", "username", "password", "client_name"):
        if key in values and not isinstance(values[key], str):
            raise InvalidArgumentType(f"{key} must be a str")
    for key in ("port", "db"):
        if key in values and (isinstance(values[key], bool) or not isinstance(values[key], int)):
            raise InvalidArgumentType(f"{key} must be an int")
    if not 0 < values.get("port", 6379) < 65536:
        raise InvalidArgument(f"port out of range: {values['port']}")
    if values.get("db", 0) < 0:
        raise InvalidArgument(f"db must be >= 0, not {values['db']}")
    if values.get("protocol") not in (None, 2, 3):
        raise InvalidArgument(f"protocol must be 2 or 3, not {values['protocol']!r}")
    for key in ("username", "password"):
        if key in values and not _utf8_encodable(values[key]):
            # Not quoted, nor chained: UnicodeEncodeError's repr holds the whole value.
            raise InvalidArgument(f"{key} cannot be encoded as UTF-8 (a lone surrogate?)")
    name = values.get("client_name")
    if name is not None and (not name or not all("!" <= c <= "~" for c in name)):
        # Redis and Valkey refuse the rest ("Client names cannot contain spaces, newlines or
        # special characters"): the handshake would fail on every attempt.
        raise InvalidArgument(
            f"client_name must be non-empty printable ASCII without spaces ('!' to '~'), "
            f"not {name!r}"
        )

    ssl = options.get("ssl")
    context: _ssl.SSLContext | None
    if isinstance(ssl, _ssl.SSLContext):
        context = ssl
    elif ssl is True or (ssl is None and use_tls):
        context = _default_ssl_context(
            options.get("ssl_ca_certs"),
            options.get("ssl_certfile"),
            options.get("ssl_keyfile"),
            options.get("ssl_check_hostname", True),
        )
    elif ssl is None or ssl is False:
        context = None
    else:
        raise InvalidArgumentType("ssl must be an ssl.SSLContext or a bool")
    timeout = check_duration("connect_timeout", options.get("connect_timeout", 5.0))
    return ConnectOptions(ssl=context, connect_timeout=timeout, **values)


@dataclass(frozen=True, slots=True)
class Tuning:
    """The validated :class:`TuningOptions` of a multiplexer, with their defaults."""

    health_check_interval: float = 5.0
    health_check_timeout: float = 5.0
    backoff_base: float = 0.008
    backoff_cap: float = 0.512
    max_buffer: int = DEFAULT_MAX_BUFFER
    overflow: OverflowPolicy = "drop_oldest"
    chunk_size: int = 1000
    random_source: Callable[[], float] = random.random


_CONNECTION_KEYS = frozenset(ConnectionOptions.__annotations__)
_TUNING_KEYS = frozenset(f.name for f in fields(Tuning))


def split_options(
    options: Mapping[str, Any], extra: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], Tuning, dict[str, Any]]:
    """Split and validate a facade's keywords: connection ones (for :func:`parse_options`),
    the :class:`Tuning`, and the ``extra`` keys a facade adds (returned as given).

    An unknown keyword raises :class:`InvalidArgumentType`, as a misspelt keyword argument
    does for any Python function.
    """
    connection: dict[str, Any] = {}
    tuning: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    for key, value in options.items():
        if key in _CONNECTION_KEYS:
            connection[key] = value
        elif key in _TUNING_KEYS:
            tuning[key] = value
        elif key in extra:
            rest[key] = value
        else:
            raise InvalidArgumentType(f"unknown option {key!r}")
    result = Tuning(**tuning)
    check_link_settings(
        health_check_interval=result.health_check_interval,
        health_check_timeout=result.health_check_timeout,
        backoff_base=result.backoff_base,
        backoff_cap=result.backoff_cap,
    )
    check_buffer(result.max_buffer, result.overflow)
    chunk = result.chunk_size
    if isinstance(chunk, bool) or not isinstance(chunk, int):
        raise InvalidArgumentType("chunk_size must be an int")
    if chunk < 1:
        raise InvalidArgument("chunk_size must be >= 1")
    if not callable(result.random_source):
        raise InvalidArgumentType("random_source must be callable")
    # Durations as floats (an int is accepted and kept exact as a float).
    return (
        connection,
        replace(
            result,
            health_check_interval=float(result.health_check_interval),
            health_check_timeout=float(result.health_check_timeout),
            backoff_base=float(result.backoff_base),
            backoff_cap=float(result.backoff_cap),
        ),
        rest,
    )
