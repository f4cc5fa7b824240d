"""Sentinel settings: the ``redis+sentinel://`` URL and the keywords, validated."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import parse_qs, unquote

from .._options import ConnectOptions, parse_options
from ..errors import InvalidArgument, InvalidArgumentType

DEFAULT_PORT = 26379
SCHEMES = {"redis+sentinel": False, "valkey+sentinel": False}
SCHEMES.update({"rediss+sentinel": True, "valkeys+sentinel": True})  # TLS
#: The keywords only Sentinel takes.
SENTINEL_KEYS = frozenset({"sentinels", "service_name", "sentinel_username", "sentinel_password"})
# Keywords that name one server: with Sentinel the sentinels say which.
_ADDRESS_KEYS = ("host", "port", "unix_socket_path")
_HINT = "percent-encode special characters such as # / ? @ , in the password"

Address = tuple[str, int]


def where(address: Address) -> str:
    """``host:port`` for messages and reprs (``[::1]:26379`` for IPv6)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class SentinelConfig:
    """Where the sentinels are, what they watch, and how to talk to them and to the data
    nodes. ``repr`` never shows a password."""

    sentinels: tuple[Address, ...]
    service_name: str
    data: ConnectOptions  # the primary's settings (its address is filled in per primary)
    username: str | None = None  # the sentinels' own credentials
    password: str | None = field(default=None, repr=False)

    def sentinel_options(self, address: Address) -> ConnectOptions:
        """How to reach one sentinel: its credentials, the data nodes' TLS and timeout, RESP2."""
        return replace(
            self.data.with_address(*address),
            username=self.username,
            password=self.password,
            db=0,
            protocol=2,  # the replies parsed here are the RESP2 shapes
        )


def is_sentinel_url(url: object) -> bool:
    """Whether ``url`` is a Sentinel URL (``redis+sentinel://...`` and the TLS/Valkey forms)."""
    return isinstance(url, str) and url.split("://", 1)[0].lower() in SCHEMES


def is_number(text: str) -> bool:
    """ASCII digits only (``str.isdigit`` also accepts ``²`` and other scripts' digits)."""
    return text.isascii() and text.isdigit()


def parse_sentinel(url: str | None, options: Mapping[str, Any]) -> SentinelConfig:
    """Build a :class:`SentinelConfig` from a Sentinel URL and/or the keywords.

    ``options`` holds the connection keywords and the :data:`SENTINEL_KEYS`; keywords win
    over the URL. The URL's credentials and ``/db`` are the data nodes'.
    """
    connection = {k: v for k, v in options.items() if k not in SENTINEL_KEYS}
    for key in _ADDRESS_KEYS:
        if connection.get(key) is not None:
            raise InvalidArgument(
                f"{key} does not apply with Sentinel: the sentinels name the primary"
            )
    from_url: dict[str, Any] = {}
    sentinels: list[Address] = []
    service: str | None = None
    tls = False
    if url is not None:
        if not isinstance(url, str):
            raise InvalidArgumentType(f"url must be a str, not {type(url).__name__}")
        if not is_sentinel_url(url):
            raise InvalidArgument(
                "the Sentinel keywords need a redis+sentinel:// URL (or no URL): this URL "
                "names one server"
            )
        sentinels, service, tls, from_url = _parse_url(url)
    for key, value in from_url.items():
        if connection.get(key) is None:
            connection[key] = value
    if tls and connection.get("ssl") is None:
        connection["ssl"] = True
    data = parse_options(None, **connection)
    if "sentinels" in options:
        sentinels = _addresses(options["sentinels"])
    if options.get("service_name") is not None:
        service = options["service_name"]
        if not isinstance(service, str):
            raise InvalidArgumentType("service_name must be a str")
    if not sentinels:
        raise InvalidArgument("Sentinel needs at least one sentinel address")
    if not service:
        raise InvalidArgument("Sentinel needs a service_name (the name the sentinels monitor)")
    creds = []
    for key in ("sentinel_username", "sentinel_password"):
        value = options.get(key)
        if value is not None and not isinstance(value, str):
            raise InvalidArgumentType(f"{key} must be a str")
        creds.append(value)
    # The same checks as the data nodes' credentials (encodable, no spaces in names).
    parse_options(None, username=creds[0], password=creds[1])
    return SentinelConfig(tuple(sentinels), service, data, creds[0], creds[1])


def _parse_url(url: str) -> tuple[list[Address], str | None, bool, dict[str, Any]]:
    # Parsed by hand: urlsplit cannot read several host:port pairs. Errors never quote the
    # URL (it may hold a password).
    scheme, _, rest = url.partition("://")
    tls = SCHEMES[scheme.lower()]
    if "#" in rest:
        raise InvalidArgument(f"the URL must not contain '#' ({_HINT})")
    rest, _, query = rest.partition("?")
    netloc, _, path = rest.partition("/")
    if "@" in path or "@" in query:
        # A password holding an unencoded '/' or '?': its tail would become the service
        # name or a parameter, which errors and reprs would show.
        raise InvalidArgument(f"the URL has an '@' after its host part ({_HINT})")
    userinfo, at, hosts = netloc.rpartition("@")
    values: dict[str, Any] = {}
    if at:
        user, colon, password = userinfo.partition(":")
        if user:
            values["username"] = unquote(user)
        if colon:
            values["password"] = unquote(password)
    sentinels = [_host_port(part, i) for i, part in enumerate(hosts.split(","), 1) if part]
    segments = [unquote(s) for s in path.split("/") if s]
    if len(segments) > 2 or (len(segments) == 2 and not is_number(segments[1])):
        raise InvalidArgument(f"the URL path must be /service_name or /service_name/db ({_HINT})")
    service = segments[0] if segments else None
    if len(segments) == 2:
        values["db"] = int(segments[1])
    if any("=" not in item for item in query.split("&") if item):
        raise InvalidArgument(f"the URL query must be key=value pairs ({_HINT})")
    for key, items in parse_qs(query).items():
        if key in ("db", "protocol"):
            if not is_number(items[-1]):
                raise InvalidArgument(f"{key} in the URL must be a number")
            values[key] = int(items[-1])
        elif key == "client_name":
            values[key] = items[-1]
        else:
            raise InvalidArgument(f"unknown URL parameter {key!r} (db, protocol, client_name)")
    return sentinels, service, tls, values


def _host_port(part: str, index: int) -> Address:
    host, port = part, ""
    if part.startswith("["):  # [IPv6]:port
        host, bracket, after = part[1:].partition("]")
        if not bracket or (after and not after.startswith(":")):
            raise InvalidArgument(
                f"sentinel address #{index} in the URL has an unbalanced or invalid [IPv6] "
                f"host ({_HINT})"
            )
        port = after[1:]
    elif "[" in part or "]" in part:
        raise InvalidArgument(
            f"sentinel address #{index} in the URL has an unbalanced or invalid [IPv6] host "
            f"({_HINT})"
        )
    elif part.count(":") == 1:
        host, _, port = part.partition(":")
    elif part.count(":") > 1:
        raise InvalidArgument(
            f"sentinel address #{index} in the URL has several ':' (write IPv6 addresses as "
            f"[::1]:26379; {_HINT})"
        )
    if not host:
        raise InvalidArgument(f"sentinel address #{index} in the URL has no host ({_HINT})")
    if not port:
        return host, DEFAULT_PORT
    if not is_number(port) or not 0 < int(port) < 65536:
        raise InvalidArgument(
            f"sentinel address #{index} in the URL has a bad port: it must be a number from "
            f"1 to 65535 ({_HINT})"
        )
    return host, int(port)


def _addresses(value: Any) -> list[Address]:
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise InvalidArgumentType("sentinels must be a sequence of (host, port) pairs")
    result: list[Address] = []
    for item in value:
        if (
            not isinstance(item, tuple | list)
            or len(item) != 2
            or not isinstance(item[0], str)
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
        ):
            raise InvalidArgumentType(f"each sentinel must be a (host, port) pair, not {item!r}")
        if not item[0] or not 0 < item[1] < 65536:
            raise InvalidArgument(f"bad sentinel address {item!r}")
        result.append((item[0], item[1]))
    return result
