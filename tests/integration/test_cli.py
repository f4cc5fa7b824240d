"""The ``redismpx`` command in subprocesses, as a new user meets it: ``--version``, ``--help``,
one plain line for each startup mistake, the URL only once the page is served, a quiet
Ctrl-C that leaves no server behind, and a repeated warning while Redis is unreachable.

Every wait is on an output line (or a process exit) with a timeout."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psutil
import pytest

import redismpx
from redismpx.server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
URL_LINE = re.compile(r"^redismpx demo on (http://\S+) \(Ctrl-C to stop\)$")

pytestmark = pytest.mark.timeout(90)


def child_env(**extra: str) -> dict[str, str]:
    """This checkout's sources first; no $REDIS_URL unless given."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, code: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m redismpx ARGS`` (or ``python -c CODE``) to completion."""
    argv = [sys.executable, "-c", code] if code else [sys.executable, "-m", "redismpx", *args]
    return subprocess.run(
        argv,
        env=env or child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line a failed start must print, and nothing else."""
    assert result.returncode == 1, result
    assert result.stdout == "", result
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines
    return lines[0]


def _reset_sigint() -> None:
    # As in a terminal: a shell's background job would start with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Demo:
    """``python -m redismpx demo ARGS`` running in a session of its own (so that SIGINT to
    its process group is what a terminal's Ctrl-C does), its output read by threads."""

    def __init__(self, args: Sequence[str], env: dict[str, str]) -> None:
        self.lines: list[tuple[str, str]] = []  # (stream, line)
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "redismpx", "demo", *args],
            env=env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
            preexec_fn=_reset_sigint,
        )
        self._readers = [
            threading.Thread(target=self._read, args=(name, stream), daemon=True)
            for name, stream in (("out", self.proc.stdout), ("err", self.proc.stderr))
        ]
        for reader in self._readers:
            reader.start()

    def _read(self, name: str, stream: object) -> None:
        assert stream is not None
        for line in stream:  # type: ignore[attr-defined]
            with self._cond:
                self.lines.append((name, line.rstrip("\n")))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    @property
    def output(self) -> str:
        with self._cond:
            return "\n".join(f"[{name}] {line}" for name, line in self.lines)

    def wait_lines(
        self, match: Callable[[str, str], bool], count: int = 1, timeout: float = 30
    ) -> list[str]:
        """Wait until ``count`` lines satisfy ``match(stream, line)``; returns them."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [line for name, line in self.lines if match(name, line)]
                if len(found) >= count:
                    return found
                done = self.proc.poll() is not None
                if done and not any(reader.is_alive() for reader in self._readers):
                    code = self.proc.returncode
                    raise AssertionError(f"the demo exited ({code}):\n{self.output}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no such line after {timeout} s:\n{self.output}")
                self._cond.wait(min(left, 0.5))

    def wait_url(self, timeout: float = 30) -> str:
        line = self.wait_lines(
            lambda name, line: name == "out" and bool(URL_LINE.match(line)), timeout=timeout
        )
        match = URL_LINE.match(line[0])
        assert match is not None
        return match[1]

    def wait_exit(self, timeout: float = 30) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the demo did not exit in {timeout} s:\n{self.output}") from None
        for reader in self._readers:
            reader.join(5)
        return code

    def ctrl_c(self) -> None:
        """What a terminal does: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def close(self) -> None:
        """Kill the demo if it still runs, and its embedded server with it: that one is in a
        process group of its own, and a killed demo cannot stop it."""
        if self.proc.poll() is None:
            children: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                children = psutil.Process(self.proc.pid).children(recursive=True)
            self.proc.kill()
            self.proc.wait(10)
            for child in children:
                with contextlib.suppress(psutil.Error):
                    child.kill()
        for reader in self._readers:
            reader.join(5)


@pytest.fixture
def start_demo() -> Iterator[Callable[..., Demo]]:
    demos: list[Demo] = []

    def start(*args: str, env: dict[str, str] | None = None) -> Demo:
        demo = Demo(args, env or child_env())
        demos.append(demo)
        return demo

    yield start
    for demo in demos:
        demo.close()


@pytest.fixture
def embedded_env(server_binary: str) -> dict[str, str]:
    """The embedded server is the binary of this test run."""
    return child_env(REDIS_SERVER=server_binary)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


def embedded_server(demo: Demo, timeout: float = 10) -> psutil.Process:
    """The demo's embedded server process (its child)."""
    deadline = time.monotonic() + timeout
    while True:
        children = psutil.Process(demo.proc.pid).children()
        servers = [c for c in children if "server" in c.name()]
        if servers:
            assert len(servers) == 1, servers
            return servers[0]
        assert time.monotonic() < deadline, f"no embedded server among {children}"
        time.sleep(0.05)  # no event to wait on: the process table


# -- version and help ------------------------------------------------------------------------


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result
    assert result.stdout == f"redismpx {redismpx.__version__}\n"


def test_console_script_is_the_same_main() -> None:
    with open(ROOT / "pyproject.toml", "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts == {"redismpx": "redismpx.__main__:main"}


@pytest.mark.parametrize("args", [["--help"], []], ids=["help", "no-command"])
def test_help(args: list[str]) -> None:
    result = run_cli(*args)
    assert result.returncode == 0, result
    assert "multiplexes many Redis Pub/Sub subscriptions" in result.stdout
    assert "demo" in result.stdout and "--version" in result.stdout


def test_demo_help() -> None:
    result = run_cli("demo", "--help")
    assert result.returncode == 0, result
    text = " ".join(result.stdout.split())
    assert "Serve the redismpx demo web page" in text
    for option in ("--redis-url", "$REDIS_URL", "--port", "--host", "redismpx[demo]"):
        assert option in text, option
    assert "--unreachable-warning-interval" not in text  # for tests only


# starlette missing, as without the extras (an import of a None entry fails)
BLOCK_STARLETTE = (
    "import sys; sys.modules['starlette'] = None\nfrom redismpx.__main__ import main\n"
)


def test_demo_help_without_the_extras() -> None:
    result = run_cli(code=BLOCK_STARLETTE + "sys.exit(main(['demo', '--help']))")
    assert result.returncode == 0, result
    assert "--redis-url" in result.stdout


def test_demo_without_the_extras_says_what_to_install() -> None:
    line = one_error_line(run_cli(code=BLOCK_STARLETTE + "sys.exit(main(['demo']))"))
    assert "starlette" in line and "pip install" in line and "[demo]" in line


# -- one line, before anything starts --------------------------------------------------------


@pytest.mark.parametrize(
    "url", ["localhost:6379", "foo://localhost", "redis://:hunter2@localhost:99999"]
)
@pytest.mark.parametrize("source", ["option", "env"])
def test_bad_url_is_one_line(url: str, source: str) -> None:
    if source == "option":
        result = run_cli("demo", "--redis-url", url, "--port", "0")
    else:
        result = run_cli("demo", "--port", "0", env=child_env(REDIS_URL=url))
    line = one_error_line(result)
    assert line.startswith("error: bad Redis URL")
    assert ("$REDIS_URL" if source == "env" else "--redis-url") in line
    assert "hunter2" not in line


@pytest.mark.parametrize("redis", ["embedded", "url"])
def test_busy_port_is_one_line_naming_port(redis: str, embedded_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        extra = ["--redis-url", f"redis://127.0.0.1:{closed_port()}"] if redis == "url" else []
        line = one_error_line(run_cli("demo", "--port", str(port), *extra, env=embedded_env))
    assert f"port {port} is already in use" in line
    assert "--port" in line


def test_no_server_binary_is_one_line() -> None:
    line = one_error_line(run_cli("demo", env=child_env(REDIS_SERVER="/nonexistent/redis")))
    assert "--redis-url" in line


# -- running ---------------------------------------------------------------------------------


def test_url_printed_once_the_page_is_served(
    start_demo: Callable[..., Demo], embedded_env: dict[str, str]
) -> None:
    demo = start_demo("--port", "0", env=embedded_env)
    url = demo.wait_url()
    status, body = get(url)  # at once: the line means it listens
    assert status == 200 and "<html" in body.lower()
    assert len(demo.wait_lines(lambda name, line: bool(URL_LINE.match(line)))) == 1
    demo.ctrl_c()
    assert demo.wait_exit() == 0


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_stop_is_quiet_and_leaves_no_server(
    stop: str, start_demo: Callable[..., Demo], embedded_env: dict[str, str]
) -> None:
    demo = start_demo("--port", "0", env=embedded_env)
    get(demo.wait_url())
    server = embedded_server(demo)
    # the terminal's Ctrl-C must reach the demo only: it stops the server itself
    assert os.getpgid(server.pid) != os.getpgid(demo.proc.pid)
    if stop == "ctrl-c":
        demo.ctrl_c()
    else:
        demo.proc.send_signal(signal.SIGTERM)
    assert demo.wait_exit() == 0, demo.output
    out = demo.output
    for word in ("lost", "reconnecting", "Traceback", "KeyboardInterrupt", "ERROR"):
        assert word not in out, out
    assert "stopped the embedded server" in out
    assert not psutil.pid_exists(server.pid), server  # waited for by the demo: no zombie


def test_unreachable_redis_is_repeated(start_demo: Callable[..., Demo]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{closed_port()}"
    demo = start_demo("--port", "0", "--redis-url", url, "--unreachable-warning-interval", "0.3")
    demo.wait_url()  # the page is served while Redis is away
    reminders = demo.wait_lines(lambda name, line: "still cannot reach" in line, count=3)
    assert all("redis://:***@127.0.0.1" in line for line in reminders), reminders
    assert all("Connection refused" in line for line in reminders), reminders
    demo.ctrl_c()
    assert demo.wait_exit() == 0
    assert "hunter2" not in demo.output


def test_new_session_server_has_its_own_process_group(server_binary: str) -> None:
    with RedisServer(server_binary, new_session=True) as server:
        assert server.pid is not None
        assert os.getpgid(server.pid) == server.pid != os.getpgid(0)
    with RedisServer(server_binary) as server:  # the default is unchanged
        assert server.pid is not None
        assert os.getpgid(server.pid) == os.getpgid(0)


# -- the Makefile ----------------------------------------------------------------------------

needs_make = pytest.mark.skipif(
    shutil.which("make") is None or shutil.which("bash") is None, reason="needs make and bash"
)


def fake_python(path: Path, version: str, pip_error: str = "") -> Path:
    """An executable that says it is Python ``version`` and whose ``-m pip`` fails."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = "-c" ]; then echo {version}; exit 0; fi\n'
        f'echo "{pip_error or "unexpected call: $*"}" >&2\n'
        "exit 1\n"
    )
    path.chmod(0o755)
    return path


def make(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MAKE", "MFLAGS"))}
    return subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )


def required_python() -> str:
    with open(ROOT / "pyproject.toml", "rb") as f:
        spec: str = tomllib.load(f)["project"]["requires-python"]
    assert spec.startswith(">="), spec
    return spec[2:]


@needs_make
def test_make_demo_refuses_an_old_python_at_once(tmp_path: Path) -> None:
    old = fake_python(tmp_path / "python3.10", "3.10")
    venv = tmp_path / "venv"
    result = make("demo", f"PYTHON={old}", f"VENV={venv}")
    assert result.returncode != 0, result
    assert f"is Python 3.10, redismpx needs Python >= {required_python()}" in result.stderr
    assert "make demo PYTHON=python3." in result.stderr
    assert not venv.exists()


@needs_make
def test_make_demo_refuses_an_old_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    fake_python(venv / "bin" / "python", "3.10")
    result = make("demo", f"VENV={venv}")
    assert result.returncode != 0, result
    assert f"{venv} has Python 3.10" in result.stderr and "rm -rf" in result.stderr


@needs_make
def test_make_demo_stops_when_the_install_fails(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    fake_python(venv / "bin" / "python", "3.12", pip_error="ERROR: no starlette today")
    result = make("demo", f"VENV={venv}")
    assert result.returncode != 0, result
    assert "ERROR: no starlette today" in result.stderr
    assert "redismpx demo" not in result.stdout  # the recipe never got there
    assert "No such file" not in result.stderr
    assert not (venv / ".installed-demo").exists()
