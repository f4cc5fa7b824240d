"""``RedisServer``: one throwaway server process, and the bookkeeping that stops them all."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Sequence
from typing import Any, Literal, Self

import hiredis

from redismpx.errors import ServerError

from . import _binary
from ._binary import ServerStartError, find_server_binary, server_version
from ._resp import Arg, ReplyCollector, _check, _encode
from .tls import TLSConfig

#: Seconds to wait for a new server to answer PING.
START_TIMEOUT = 10.0
#: Seconds :meth:`RedisServer.stop` waits after SIGTERM before it sends SIGKILL.
STOP_TIMEOUT = 5.0
_POLL = 0.005
_MAX_UNIX_PATH = 100  # sun_path holds 107 bytes and a NUL
_LOG_TAIL_LINES = 20
_Probe = Literal["ready", "wait", "foreign"]
_AUTH_ERRORS = ("NOAUTH", "WRONGPASS", "ERR invalid password", "ERR AUTH")


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


def _wait_or_kill(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Wait for ``proc`` to exit; SIGKILL it after ``timeout`` seconds."""
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _work_dir(
    owner: object, directory: str | None, prefix: str
) -> tuple[str, weakref.finalize[Any, Any] | None]:
    """``directory``, or a new temporary one and the finalizer that removes it (called at the
    latest when ``owner`` is collected)."""
    if directory is not None:
        return directory, None
    path = tempfile.mkdtemp(prefix=prefix)
    return path, weakref.finalize(owner, shutil.rmtree, path, ignore_errors=True)


def _stop_servers(servers: Sequence[RedisServer]) -> None:
    """Stop every server in order, whatever happens to one; raise the first error after."""
    errors: list[BaseException] = []
    for server in servers:
        try:
            server.stop()
        except BaseException as exc:  # stop all of them whatever happens
            errors.append(exc)
    if errors:
        raise errors[0]


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
        new_session: start the process in a session (and process group) of its own, so that
            a Ctrl-C in the terminal reaches only the Python process, which then stops the
            server in its own time (the demo does this). Off by default: a server in the
            terminal's process group also receives the terminal's signals.

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
        new_session: bool = False,
    ) -> None:
        if isinstance(args, str):
            raise TypeError("args must be a sequence of strings, not one string")
        self.binary = binary if binary is not None else find_server_binary()
        self._host = host
        self._auto_port = port is None
        self._port = _binary.free_port(host) if port is None else port
        self._args = list(args)
        self._own_dir = directory is None
        self._dir, self._cleanup = _work_dir(self, directory, "redismpx-server-")
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
        self._new_session = new_session
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
        self._port = _binary.free_port(self._host)

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
                start_new_session=self._new_session,
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
            _wait_or_kill(proc, STOP_TIMEOUT)
        self._forget()

    def kill(self, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        """Send ``sig`` (default SIGKILL) and wait until the process is gone.

        Waiting matters: right after a SIGKILL the kernel may still accept a connection on the
        port and then reset it, and a restart on the same port may fail to bind. If the process
        has not exited after ``timeout`` seconds it gets SIGKILL. Does nothing if not running.
        """
        proc = self._send_exit_signal(sig)
        if proc is not None:
            _wait_or_kill(proc, timeout)
            self._forget()

    def _send_exit_signal(self, sig: int) -> subprocess.Popen[bytes] | None:
        """Send ``sig`` to the running process and return it; None (forgotten) if none runs."""
        self._check_exit_signal(sig)
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._forget()
            return None
        self._signal(proc, sig)
        return proc

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
        proc = self._send_exit_signal(sig)
        if proc is None:
            return
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
                collector = ReplyCollector(count)
                while not collector.feed(sock.recv(65536)):
                    pass
                return self._probe_verdict(collector.replies)
        except ssl.SSLError:
            return "ready"  # the TLS handshake was refused: the server is up and speaks TLS
        except (OSError, EOFError, hiredis.ProtocolError):
            return "wait"

    async def _aprobe(self) -> _Probe:
        payload, count = self._probe_payload()
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(1.0):
                reader, writer = await self._aconnect()
                writer.write(payload)
                collector = ReplyCollector(count)
                while not collector.feed(await reader.read(65536)):
                    pass
                return self._probe_verdict(collector.replies)
        except ssl.SSLError:
            return "ready"
        except (OSError, EOFError, TimeoutError, hiredis.ProtocolError):
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

    def _command_payload(self, commands: Sequence[Sequence[Arg]]) -> tuple[bytes, int]:
        if not commands or not all(commands):
            raise ValueError("command() needs at least the command name")
        payload = b"".join(_encode(args) for args in commands)
        if self._password is None:
            return payload, len(commands)
        return _encode(["AUTH", self._password]) + payload, len(commands) + 1

    def _command_results(self, replies: list[Any], commands: Sequence[Sequence[Arg]]) -> list[Any]:
        if self._password is not None:
            _check(replies.pop(0), ["AUTH"])
        return [_check(reply, args) for reply, args in zip(replies, commands, strict=True)]

    def command(self, *args: Arg, decode: bool = False, timeout: float = 10.0) -> Any:
        """Send one command over a fresh connection and return its parsed (RESP2) reply.

        Authenticates first when the server has a password, uses TLS when it has TLS.
        Bulk strings are ``bytes`` unless ``decode`` (then ``str``). An error reply raises
        :class:`redismpx.errors.ServerError`. Example: ``srv.command("PUBSUB", "NUMSUB", "ch")``.
        """
        return self.pipeline(args, decode=decode, timeout=timeout)[0]

    def pipeline(
        self, *commands: Sequence[Arg], decode: bool = False, timeout: float = 10.0
    ) -> list[Any]:
        """Send several commands over one fresh connection, as :meth:`command` does, and
        return their replies; the first error reply raises. Example:
        ``srv.pipeline(["PUBLISH", "ch", "x"], ["WAIT", 1, 100])``."""
        payload, count = self._command_payload(commands)
        collector = ReplyCollector(count, decode)
        with self._connect(timeout) as sock:
            sock.sendall(payload)
            try:
                while not collector.feed(sock.recv(65536)):
                    pass
            except EOFError:
                first = commands[0][0]
                raise ConnectionError(f"server closed the connection during {first!r}") from None
        return self._command_results(collector.replies, commands)

    async def acommand(self, *args: Arg, decode: bool = False, timeout: float = 10.0) -> Any:
        """:meth:`command` over asyncio streams."""
        payload, count = self._command_payload([args])
        collector = ReplyCollector(count, decode)
        async with asyncio.timeout(timeout):
            reader, writer = await self._aconnect()
            try:
                writer.write(payload)
                while not collector.feed(await reader.read(65536)):
                    pass
            except EOFError:
                raise ConnectionError(f"server closed the connection during {args[0]!r}") from None
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
        return self._command_results(collector.replies, [args])[0]

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

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        if not self.running:
            await self.astart()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.astop()
