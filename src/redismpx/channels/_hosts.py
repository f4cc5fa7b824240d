"""``CONFIG["hosts"]`` as channels_redis reads it, turned into Multiplexer settings; and the
shard a channel or group lives on, as channels_redis computes it.

An entry is a URL string, a ``(host, port)`` pair, or a dict of redis-py connection keywords
(``{"address": url, ...}``, ``{"host": ..., "port": ...}``, or Sentinel's ``{"sentinels":
[(host, port)], "master_name": ..., "sentinel_kwargs": {...}}``). Everything is checked here,
when the layer is built, so that a mistake shows at startup and not at the first message.
"""

from __future__ import annotations

import binascii
import logging
import ssl
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._options import parse_options, split_options
from .._redispy import REDISPY_TUNING_KEYWORDS
from ..errors import InvalidArgument, InvalidArgumentType
from ..sentinel import SENTINEL_KEYS, is_sentinel_url, parse_sentinel
from ..typedefs import MultiplexerOptions

logger = logging.getLogger("redismpx.channels")

DEFAULT_HOSTS = ("redis://localhost:6379",)

# Multiplexer keywords taken as they are (the buffer's are the layer's own: capacity).
_MPX_KEYS = frozenset(MultiplexerOptions.__optional_keys__) - {"max_buffer", "overflow"}
# redis-py connection keywords with an equivalent under another name.
_RENAMED = {"socket_connect_timeout": "connect_timeout", "path": "unix_socket_path"}
# redis-py keywords that tune redis-py's own sockets, pools, retries and decoding: redismpx
# has its own heartbeat and backoff, and the layer decodes nothing. Accepted, and ignored.
_IGNORED = REDISPY_TUNING_KEYWORDS | {"socket_read_size", "connection_class", "parser_class"}


@dataclass(frozen=True)
class Host:
    """One shard: the ``Multiplexer(url, **options)`` arguments."""

    url: str | None
    options: Mapping[str, Any]


def decode_hosts(hosts: Any) -> list[Host]:
    """Each entry of ``hosts`` as multiplexer arguments, validated.

    Raises:
        InvalidArgument: A bad value (a URL with an unknown scheme, a Sentinel entry with no
            sentinel...), or ``hosts`` given as one string instead of a list.
        InvalidArgumentType: A value of the wrong type, or an unknown keyword.
    """
    if hosts is None or (isinstance(hosts, list | tuple) and not hosts):
        hosts = list(DEFAULT_HOSTS)
    if isinstance(hosts, str | bytes):
        raise InvalidArgument("hosts must be a list of Redis hosts, even if there is only one")
    if not isinstance(hosts, list | tuple):
        raise InvalidArgumentType(f"hosts must be a list, not {type(hosts).__name__}")
    result = []
    for entry in hosts:
        if isinstance(entry, str):
            host = Host(entry, {})
        elif isinstance(entry, list | tuple):
            if len(entry) != 2:
                raise InvalidArgument("a (host, port) entry of hosts must have two items")
            host = Host(None, {"host": entry[0], "port": entry[1]})
        elif isinstance(entry, Mapping):
            host = _from_dict(entry)
        else:
            raise InvalidArgumentType(
                "an entry of hosts must be a URL, a (host, port) pair or a dict, not "
                f"{type(entry).__name__}"
            )
        _check(host)
        result.append(host)
    return result


def _from_dict(entry: Mapping[str, Any]) -> Host:
    options = dict(entry)
    url = options.pop("address", None)
    if url is not None and not isinstance(url, str):
        raise InvalidArgumentType(f"address must be a URL string, not {type(url).__name__}")
    if url is not None:
        # channels_redis hands both to redis-py's from_url, where the URL's userinfo wins.
        parts = urllib.parse.urlsplit(url)
        if parts.password is not None:
            options.pop("password", None)
        if parts.username:
            options.pop("username", None)
    master_name = options.pop("master_name", None)
    sentinel_kwargs = options.pop("sentinel_kwargs", None)
    tls = (url is not None and url.lower().startswith("rediss://")) or bool(options.get("ssl"))
    if "ssl_cert_reqs" in options and not tls:
        raise InvalidArgument(
            "ssl_cert_reqs applies to TLS: a rediss:// address or ssl=True (redis-py refuses "
            "it too on a plain connection)"
        )
    result = _translate(options)
    if master_name is not None:
        if url is not None:
            raise InvalidArgument("a hosts entry takes address or master_name, not both")
        if "sentinels" not in result:
            raise InvalidArgument("a Sentinel entry of hosts (master_name) needs sentinels")
        result["service_name"] = master_name
    for key, value in _translate(sentinel_kwargs or {}, sentinel=True).items():
        result.setdefault(key, value)
    return Host(url, result)


def _translate(options: Mapping[str, Any], *, sentinel: bool = False) -> dict[str, Any]:
    """redis-py keywords (or redismpx's own) as Multiplexer keywords; ``sentinel``: those of
    ``sentinel_kwargs``, which only give the sentinels' credentials."""
    where = "sentinel_kwargs" if sentinel else "a hosts entry"
    result: dict[str, Any] = {}
    ignored = []
    verify = True
    for key, value in options.items():
        if sentinel:
            if key in ("username", "password"):
                result[f"sentinel_{key}"] = value
            elif key in _IGNORED or key in _RENAMED:
                ignored.append(key)
            else:
                raise InvalidArgumentType(f"unknown keyword {key!r} in {where}")
        elif key in _MPX_KEYS:
            result[key] = value
        elif key in _RENAMED:
            if value is not None:
                result[_RENAMED[key]] = value
        elif key == "ssl_cert_reqs":
            # redis-py: None or "none" is TLS without certificate verification.
            if value in (None, "none", ssl.CERT_NONE):
                verify = False
            elif value not in ("required", "optional", ssl.CERT_REQUIRED, ssl.CERT_OPTIONAL):
                raise InvalidArgument(
                    "ssl_cert_reqs must be None, 'none', 'optional' or 'required'"
                )
        elif key == "health_check_interval" and value == 0:
            ignored.append(key)  # redis-py's "off"; redismpx's heartbeat keeps its default
        elif key in _IGNORED:
            ignored.append(key)
        else:
            raise InvalidArgumentType(f"unknown keyword {key!r} in {where}")
    if ignored:
        logger.info(
            "%s: %s tune redis-py and are ignored (redismpx has its own heartbeat and backoff)",
            where,
            ", ".join(sorted(ignored)),
        )
    if not verify and not isinstance(result.get("ssl"), ssl.SSLContext):
        result["ssl"] = _unverified_context(result)
    return result


def _unverified_context(options: dict[str, Any]) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=options.pop("ssl_ca_certs", None))
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    certfile = options.pop("ssl_certfile", None)
    keyfile = options.pop("ssl_keyfile", None)
    if certfile is not None:
        context.load_cert_chain(certfile, keyfile)
    options.pop("ssl_check_hostname", None)
    return context


def _check(host: Host) -> None:
    """What ``Multiplexer(host.url, **host.options)`` would raise, without making one (made
    inside a running loop, a multiplexer starts connecting)."""
    connection, _, sentinel = split_options(host.options, SENTINEL_KEYS)
    sentinel = {k: v for k, v in sentinel.items() if v is not None}
    if sentinel or is_sentinel_url(host.url):
        parse_sentinel(host.url, {**connection, **sentinel})
    else:
        parse_options(host.url, **connection)


def consistent_hash(name: str, ring_size: int) -> int:
    """The shard of a channel or group name among ``ring_size`` hosts: the index
    channels_redis picks (the low 12 bits of its CRC-32, over 4096 / ring_size), so that a
    fleet mixing both layers agrees on where each name lives."""
    if ring_size == 1:
        return 0
    bucket = binascii.crc32(name.encode("utf-8")) & 0xFFF
    return int(bucket / (4096 / ring_size))
