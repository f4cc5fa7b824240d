"""The connection settings of a redis-py client, for ``Multiplexer.from_redis``."""

from __future__ import annotations

import ssl as _ssl
from typing import Any

from .errors import InvalidArgumentType


def settings_of_redis_client(client: Any) -> dict[str, Any]:
    """The keyword options that reach the server a ``redis.asyncio.Redis`` client reaches."""
    try:
        ck = dict(client.connection_pool.connection_kwargs)
    except AttributeError:
        raise InvalidArgumentType("from_redis needs a redis.asyncio.Redis client") from None
    settings: dict[str, Any] = {}
    if "path" in ck:
        settings["unix_socket_path"] = ck["path"]
    else:
        settings["host"] = ck.get("host", "localhost")
        settings["port"] = int(ck.get("port", 6379))
    for key in ("username", "password", "db", "client_name"):
        if ck.get(key) is not None:
            settings[key] = ck[key]
    tls = _tls_of_redis_client(client, ck)
    if tls is not None:
        settings["ssl"] = tls
    if ck.get("socket_connect_timeout"):
        settings["connect_timeout"] = ck["socket_connect_timeout"]
    return settings


def _tls_of_redis_client(client: Any, ck: dict[str, Any]) -> _ssl.SSLContext | None:
    """The TLS settings of a redis-py client as an SSLContext (None for plain TCP).

    redis-py keeps them as ``ssl_*`` connection arguments of an ``SSLConnection`` class; a
    ``rediss://`` client must never be turned into a plain-text multiplexer.
    """
    if ck.get("ssl_context") is not None:
        context: _ssl.SSLContext = ck["ssl_context"]
        return context
    cls_name = getattr(client.connection_pool.connection_class, "__name__", "")
    if "SSL" not in cls_name and not any(k.startswith("ssl_") for k in ck):
        return None
    ctx = _ssl.create_default_context(
        cafile=ck.get("ssl_ca_certs"), capath=ck.get("ssl_ca_path"), cadata=ck.get("ssl_ca_data")
    )
    reqs = ck.get("ssl_cert_reqs", "required")
    if reqs in ("none", _ssl.CERT_NONE):
        ctx.check_hostname = False
        ctx.verify_mode = _ssl.CERT_NONE
    else:
        ctx.check_hostname = bool(ck.get("ssl_check_hostname", True))
        if reqs in ("optional", _ssl.CERT_OPTIONAL):
            ctx.verify_mode = _ssl.CERT_OPTIONAL
    if ck.get("ssl_certfile"):
        ctx.load_cert_chain(ck["ssl_certfile"], ck.get("ssl_keyfile"), ck.get("ssl_password"))
    return ctx
