"""redis-py's settings: a client's, for ``Multiplexer.from_redis``, and the keywords that tune
redis-py alone, which the integrations accept and ignore."""

from __future__ import annotations

import ssl as _ssl
from typing import Any, Final

from .errors import InvalidArgument, InvalidArgumentType

# redis-py keywords that tune redis-py's own sockets, pools, retries and decoding: redismpx has
# its own heartbeat and backoff. The integrations that take redis-py's keywords accept these
# and ignore them.
REDISPY_TUNING_KEYWORDS: Final = frozenset(
    {
        "socket_timeout",
        "socket_keepalive",
        "socket_keepalive_options",
        "socket_type",
        "retry",
        "retry_on_timeout",
        "retry_on_error",
        "decode_responses",
        "encoding",
        "encoding_errors",
        "max_connections",
        "single_connection_client",
        "lib_name",
        "lib_version",
        "driver_info",
    }
)


def settings_of_redis_client(client: Any) -> dict[str, Any]:
    """The keyword options that reach the server a ``redis.asyncio.Redis`` client reaches."""
    try:
        ck = dict(client.connection_pool.connection_kwargs)
    except AttributeError:
        raise InvalidArgumentType("from_redis needs a redis.asyncio.Redis client") from None
    settings: dict[str, Any] = {}
    pool = client.connection_pool
    if getattr(pool, "service_name", None) and hasattr(pool, "sentinel_manager"):
        settings.update(_sentinel_of_pool(pool))
    elif "path" in ck:
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


def _sentinel_of_pool(pool: Any) -> dict[str, Any]:
    """The Sentinel set-up of a ``SentinelConnectionPool`` (``Sentinel(...).master_for(name)``):
    its sentinels, service and the sentinels' own credentials."""
    if not getattr(pool, "is_master", True):
        raise InvalidArgument(
            "from_redis got a Sentinel replica client (slave_for); a multiplexer subscribes "
            "and publishes on the primary: pass the master_for client"
        )
    sentinels = []
    sentinel_auth: dict[str, Any] = {}
    for sentinel in pool.sentinel_manager.sentinels:
        kwargs = sentinel.connection_pool.connection_kwargs
        sentinels.append((kwargs.get("host", "localhost"), int(kwargs.get("port", 26379))))
        for key in ("username", "password"):
            if kwargs.get(key) is not None:
                sentinel_auth[f"sentinel_{key}"] = kwargs[key]
    return {"sentinels": sentinels, "service_name": pool.service_name, **sentinel_auth}


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
