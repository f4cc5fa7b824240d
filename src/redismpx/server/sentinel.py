"""``RedisSentinel``: a loopback primary, its replicas and the sentinels watching them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from redismpx.errors import ServerError

from ._binary import _free_ports, find_server_binary
from ._resp import Arg
from .standalone import START_TIMEOUT, RedisServer, _stop_servers, _work_dir
from .tls import TLSConfig

#: The failure-detection timings of a :class:`RedisSentinel` (``sentinel <option> <name> N``).
#: Measured on Valkey 8.1 and Redis 7.0: a SIGKILLed primary is replaced in about 2.6 s,
#: ``SENTINEL FAILOVER`` names a new primary in about 0.5 s and all is settled after 3.8 s.
SENTINEL_TIMINGS: dict[str, int] = {
    "down-after-milliseconds": 1000,
    "failover-timeout": 5000,
    "parallel-syncs": 1,
}
#: Internal sentinel periods (``SENTINEL DEBUG``, servers >= 7.0; not kept in the config file,
#: so set again at every start). The defaults are INFO to replicas every 10 s and hello
#: messages every 2 s: a sentinel then needs 10-20 s to turn an old primary into a replica,
#: which it does once the node has said "master" for 4 hello periods (here 2 s).
SENTINEL_DEBUG_PERIODS: dict[str, int] = {"info-period": 1000, "publish-period": 500}
_POLL = 0.02


def _pairs(reply: Any) -> dict[str, str]:
    """A RESP2 flat ``[key, value, ...]`` reply (``SENTINEL MASTER`` and friends) as a dict."""
    items = [x.decode() if isinstance(x, bytes) else str(x) for x in reply]
    return dict(zip(items[::2], items[1::2], strict=True))


def _tls_client_args(tls: TLSConfig) -> list[str]:
    """The flags making a server talk TLS when it is the client (a replica to its primary, a
    sentinel to the nodes it watches): ``tls-replication``, and the client certificate when
    ``tls`` has one (otherwise the server's own certificate is presented, which a peer
    checking client certificates may refuse: the test server certificate is for servers
    only)."""
    args = ["--tls-replication", "yes"]
    if tls.client_cert_file is not None:
        args += ["--tls-client-cert-file", tls.client_cert_file]
        if tls.client_key_file is not None:
            args += ["--tls-client-key-file", tls.client_key_file]
    return args


class SentinelNode(RedisServer):
    """A :class:`RedisServer` started in sentinel mode (``--sentinel``) with the config file
    :attr:`config_path` (``<directory>/sentinel.conf``).

    The file is written from ``config`` (its lines, e.g. ``sentinel monitor ...``) at the
    first start only: the sentinel rewrites it with what it learns (its id, the replicas and
    the other sentinels), so a restarted sentinel rejoins as itself. ``debug`` are
    ``SENTINEL DEBUG`` periods set after every start (default :data:`SENTINEL_DEBUG_PERIODS`;
    ``{}`` keeps the server's). ``password`` is the sentinel's ``requirepass``, used by the
    helpers and (when set alike on every sentinel) by the sentinels to talk to one another.
    ``tls`` makes the sentinel serve TLS only (see :class:`RedisServer`); for it to reach the
    data nodes and the other sentinels over TLS, it also needs ``--tls-replication yes`` in
    ``args`` (as :class:`RedisSentinel` gives it).
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        config: Sequence[str] = (),
        debug: Mapping[str, int] | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        password: str | None = None,
        args: Sequence[str] = (),
        directory: str | None = None,
        tls: TLSConfig | None = None,
    ) -> None:
        super().__init__(
            binary,
            host=host,
            port=port,
            args=args,
            directory=directory,
            password=password,
            tls=tls,
        )
        self._config = list(config)
        self._config_written = False
        self._debug = dict(SENTINEL_DEBUG_PERIODS if debug is None else debug)

    def _debug_args(self) -> list[Arg]:
        return ["SENTINEL", "DEBUG", *(x for kv in self._debug.items() for x in kv)]

    def start(self, timeout: float = START_TIMEOUT) -> Self:
        """Start the sentinel, wait until it answers, then set its ``debug`` periods."""
        super().start(timeout)
        if self._debug:
            self.command(*self._debug_args())
        return self

    async def astart(self, timeout: float = START_TIMEOUT) -> Self:
        """:meth:`start` without blocking the event loop."""
        await super().astart(timeout)
        if self._debug:
            await self.acommand(*self._debug_args())
        return self

    @property
    def config_path(self) -> str:
        """The sentinel's config file (rewritten by the sentinel itself)."""
        return os.path.join(self.directory, "sentinel.conf")

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` of the sentinel."""
        return self.host, self.port

    def argv(self) -> list[str]:
        """The command line: the binary, the config file, ``--sentinel``, then the flags."""
        binary, *flags = super().argv()
        return [binary, self.config_path, "--sentinel", *flags]

    def _spawn(self) -> int:
        if not self._config_written:
            os.makedirs(self.directory, exist_ok=True)
            with open(self.config_path, "w", encoding="utf-8") as f:
                f.write("".join(f"{line}\n" for line in self._config))
            self._config_written = True
        return super()._spawn()

    def __repr__(self) -> str:
        state = "paused" if self.paused else "running" if self.running else "stopped"
        return f"<SentinelNode {self.host}:{self.port} {state}>"


class RedisSentinel:
    """A loopback Sentinel deployment: one primary, ``replicas`` replicas and ``sentinels``
    sentinels monitoring it as ``service_name`` with quorum ``sentinels // 2 + 1`` and the
    fast :data:`SENTINEL_TIMINGS` and :data:`SENTINEL_DEBUG_PERIODS`.

    ``password`` protects the data nodes, ``sentinel_password`` the sentinels; :attr:`url`
    holds neither. Data nodes live in ``<directory>/data-<i>`` (``data-0`` is the first
    primary), sentinels in ``<directory>/sentinel-<i>``. Every process is a
    :class:`RedisServer`: kill, pause or restart them directly, then :meth:`wait_ready`. A
    restarted data node comes back with its first role (primary, or replica of ``data-0``);
    the sentinels reconfigure it to follow the current primary about 2-3 s later.

    ``tls`` (a TLS-capable binary needed) makes every process serve TLS only with these
    settings: the data nodes replicate over TLS and the sentinels talk to the data nodes and
    to one another over TLS (``--tls-replication yes`` on all, presenting ``tls``'s client
    certificate when it has one), and :attr:`url` is
    ``rediss+sentinel://``. The helpers (:meth:`sentinel_command`, :meth:`wait_ready`,
    :meth:`failover`, ...) use TLS as :meth:`RedisServer.command` does.
    """

    def __init__(
        self,
        binary: str | None = None,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        service_name: str = "mymaster",
        replicas: int = 1,
        sentinels: int = 3,
        host: str = "127.0.0.1",
        directory: str | None = None,
        args: Sequence[str] = (),
        tls: TLSConfig | None = None,
    ) -> None:
        if replicas < 0 or sentinels < 1:
            raise ValueError("a sentinel deployment needs replicas >= 0 and sentinels >= 1")
        self.binary = binary if binary is not None else find_server_binary()
        self.service_name = service_name
        """The name the sentinels monitor the primary under."""
        self.password = password
        """The data nodes' password (``requirepass``, ``masterauth``, ``sentinel auth-pass``)."""
        self.sentinel_password = sentinel_password
        """The sentinels' password (their ``requirepass``)."""
        self.tls = tls
        """The TLS settings of every process, if any."""
        self._own_dir = directory is None
        self.directory, self._cleanup = _work_dir(self, directory, "redismpx-sentinel-")
        """The directory holding the nodes' directories."""
        ports = _free_ports(1 + replicas + sentinels, host)
        tls_args = [] if tls is None else _tls_client_args(tls)
        data_args = ["--repl-diskless-sync-delay", "0", *tls_args, *args]
        if password is not None:
            data_args += ["--masterauth", password]
        self.data_nodes: list[RedisServer] = [
            RedisServer(
                self.binary,
                host=host,
                port=ports[i],
                password=password,
                args=data_args if i == 0 else [*data_args, "--replicaof", host, str(ports[0])],
                directory=os.path.join(self.directory, f"data-{i}"),
                tls=tls,
            )
            for i in range(1 + replicas)
        ]
        """The primary and replicas as created (``data_nodes[0]`` was the first primary)."""
        config = [f"sentinel monitor {service_name} {host} {ports[0]} {sentinels // 2 + 1}"]
        config += [f"sentinel {key} {service_name} {n}" for key, n in SENTINEL_TIMINGS.items()]
        if password is not None:
            config.append(f"sentinel auth-pass {service_name} {password}")
        self.sentinels: list[SentinelNode] = [
            SentinelNode(
                self.binary,
                host=host,
                port=ports[1 + replicas + i],
                config=config,
                password=sentinel_password,
                args=tls_args,
                directory=os.path.join(self.directory, f"sentinel-{i}"),
                tls=tls,
            )
            for i in range(sentinels)
        ]
        """The sentinels."""
        self._legacy: bool | None = None  # whether only the MASTER/SLAVES names are known

    # -- layout -------------------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every sentinel."""
        return [s.address for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://H1:P1,H2:P2,.../SERVICE`` (``rediss+sentinel://`` with TLS;
        without credentials)."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        scheme = "redis+sentinel" if self.tls is None else "rediss+sentinel"
        return f"{scheme}://{hosts}/{self.service_name}"

    @property
    def primary(self) -> RedisServer:
        """The data node the first running sentinel names as the primary now (right after
        a failover the sentinels may disagree for a moment: :meth:`wait_ready` waits until
        they agree)."""
        return self._node_at(self.primary_address())

    @property
    def replicas(self) -> list[RedisServer]:
        """The data nodes other than :attr:`primary` (whether or not they replicate yet)."""
        primary = self.primary
        return [n for n in self.data_nodes if n is not primary]

    def _node_at(self, address: tuple[str, int]) -> RedisServer:
        for node in self.data_nodes:
            if node.port == address[1]:
                return node
        raise LookupError(f"no data node at {address[0]}:{address[1]}")

    # -- asking the sentinels -----------------------------------------------------------------

    def sentinel_command(self, sentinel: SentinelNode, sub: str, *args: Arg) -> Any:
        """``SENTINEL sub *args`` on ``sentinel``. ``sub`` is the Valkey name (``PRIMARY``,
        ``REPLICAS``, ``GET-PRIMARY-ADDR-BY-NAME``): on a server that does not know it the
        Redis name (``MASTER``, ``SLAVES``, ``GET-MASTER-ADDR-BY-NAME``) is used instead."""
        legacy = sub.replace("PRIMARY", "MASTER").replace("REPLICAS", "SLAVES")
        if legacy == sub or self._legacy:
            return sentinel.command("SENTINEL", legacy if self._legacy else sub, *args)
        try:
            reply = sentinel.command("SENTINEL", sub, *args)
        except ServerError as exc:
            if "unknown subcommand" not in str(exc).lower():
                raise
            self._legacy = True
            return sentinel.command("SENTINEL", legacy, *args)
        self._legacy = False
        return reply

    def _asked(self) -> SentinelNode:
        for sentinel in self.sentinels:
            if sentinel.running and not sentinel.paused:
                return sentinel
        raise RuntimeError("no running sentinel to ask")

    def primary_address(self, sentinel: SentinelNode | None = None) -> tuple[str, int]:
        """``(host, port)`` of the primary as ``sentinel`` (default: the first running one)
        names it (``SENTINEL GET-PRIMARY-ADDR-BY-NAME``)."""
        asked = self._asked() if sentinel is None else sentinel
        host, port = self.sentinel_command(asked, "GET-PRIMARY-ADDR-BY-NAME", self.service_name)
        return host.decode(), int(port)

    def _problems(self) -> list[str]:
        """Why the deployment is not settled yet (empty when it is)."""
        stopped = [repr(n) for n in [*self.data_nodes, *self.sentinels] if not n.running]
        if stopped:
            return [f"not running: {stopped}"]
        problems: list[str] = []
        views: set[int] = set()
        for sentinel in self.sentinels:
            try:
                problems += self._sentinel_problems(sentinel, views)
            except (OSError, ServerError) as exc:
                problems.append(f"sentinel {sentinel.port}: {exc}")
        if len(views) > 1:
            problems.append(f"the sentinels disagree on the primary: {sorted(views)}")
        if problems:
            return problems
        return self._replication_problems(views.pop())

    def _replication_problems(self, primary_port: int) -> list[str]:
        """Why the data nodes are not yet a primary on ``primary_port`` with every other node
        replicating it, connected and caught up (empty when they are)."""
        problems: list[str] = []
        for node in self.data_nodes:
            role = node.command("ROLE")
            if node.port == primary_port and role[0] != b"master":
                problems.append(f"primary {node.port} says it is a {role[0]!r}")
            elif node.port != primary_port and (role[0], role[2]) != (b"slave", primary_port):
                problems.append(f"{node.port} does not replicate {primary_port} yet: {role}")
            elif node.port != primary_port and role[3] != b"connected":
                problems.append(f"{node.port} replication state {role[3]!r}")
        if problems:
            return problems
        # "connected" is not enough: after a full sync a primary streams writes to a replica
        # only once the replica has sent its first ACK (up to 1 s later). So: a write that
        # changes no data (PUBLISH is replicated), and WAIT until every replica has it.
        primary, count = self._node_at(("", primary_port)), len(self.data_nodes) - 1
        sync = ["PUBLISH", "__redismpx__:sync", "x"]
        acked = primary.pipeline(sync, ["WAIT", count, 100])[1]
        return [] if acked >= count else [f"{count - acked} replica(s) not caught up"]

    def _sentinel_problems(self, sentinel: SentinelNode, views: set[int]) -> list[str]:
        name, tag = self.service_name, f"sentinel {sentinel.port}"
        primary = _pairs(self.sentinel_command(sentinel, "PRIMARY", name))
        views.add(int(primary["port"]))
        problems = []
        if primary["flags"] != "master":
            problems.append(f"{tag}: primary flags {primary['flags']}")
        replicas = [_pairs(r) for r in self.sentinel_command(sentinel, "REPLICAS", name)]
        healthy = {
            int(r["port"])
            for r in replicas
            if r["flags"] == "slave"
            and r["master-link-status"] == "ok"
            and int(r["master-port"]) == int(primary["port"])
        }
        wanted = {n.port for n in self.data_nodes} - {int(primary["port"])}
        if healthy != wanted:
            problems.append(f"{tag}: healthy replicas {sorted(healthy)}, not {sorted(wanted)}")
        others = [_pairs(s) for s in sentinel.command("SENTINEL", "SENTINELS", name)]
        seen = {int(s["port"]) for s in others if "s_down" not in s["flags"]}
        if seen != {s.port for s in self.sentinels} - {sentinel.port}:
            problems.append(f"{tag}: sees sentinels {sorted(seen)}")
        return problems

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait until every process runs, every sentinel names the same primary (flags just
        ``master``), knows every other data node as a healthy replica of it and sees every
        other sentinel, and every replica is connected to that primary (``ROLE``) and receives
        its writes (a ``PUBLISH`` acknowledged within ``WAIT``)."""
        self._wait(self._problems, timeout, "deployment not ready")

    async def await_ready(self, timeout: float = 60.0) -> None:
        """:meth:`wait_ready` in a thread, without blocking the event loop."""
        await asyncio.to_thread(self.wait_ready, timeout)

    @staticmethod
    def _wait(problems: Callable[[], list[str]], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while found := problems():
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what} after {timeout:g} s: {found[:6]}")
            time.sleep(_POLL)

    # -- failover -----------------------------------------------------------------------------

    def failover(self, timeout: float = 30.0) -> RedisServer:
        """``SENTINEL FAILOVER`` (retried while the sentinel has no replica it deems good),
        then :meth:`wait_primary_changed`; returns the new primary. The old primary keeps
        the primary role until the sentinels reconfigure it (see :meth:`wait_ready`)."""
        deadline = time.monotonic() + timeout
        old = self.primary_address()
        while True:
            try:
                self._asked().command("SENTINEL", "FAILOVER", self.service_name)
                break
            except ServerError as exc:
                if "NOGOODSLAVE" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(_POLL)
        return self.wait_primary_changed(old, max(deadline - time.monotonic(), 0.0))

    async def afailover(self, timeout: float = 30.0) -> RedisServer:
        """:meth:`failover` in a thread, without blocking the event loop."""
        return await asyncio.to_thread(self.failover, timeout)

    def wait_primary_changed(self, old: tuple[str, int], timeout: float = 30.0) -> RedisServer:
        """Wait until a running sentinel names a primary other than ``old`` and that node
        says ``ROLE`` master; return it. The other sentinels may name ``old`` a little longer
        (they learn the new configuration from the winner's hello messages)."""
        found: list[RedisServer] = []

        def problems() -> list[str]:
            for sentinel in self.sentinels:
                with contextlib.suppress(OSError, ServerError, RuntimeError):
                    if not sentinel.running or sentinel.paused:
                        continue
                    address = self.primary_address(sentinel)
                    node = self._node_at(address)
                    if address != old and node.command("ROLE")[0] == b"master":
                        found.append(node)
                        return []
            return [f"no sentinel names a new primary in place of {old[0]}:{old[1]}"]

        self._wait(problems, timeout, "no failover")
        return found[0]

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 60.0) -> Self:
        """Start the data nodes, wait until the replicas are in sync, start the sentinels and
        wait until :meth:`wait_ready`. On failure every started process is stopped again."""
        try:
            for node in self.data_nodes:
                node.start()
            deadline = time.monotonic() + timeout
            port = self.data_nodes[0].port
            self._wait(lambda: self._replication_problems(port), timeout, "replicas not in sync")
            for sentinel in self.sentinels:
                sentinel.start()
            self.wait_ready(max(deadline - time.monotonic(), 0.0))
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self, timeout: float = 60.0) -> Self:
        """:meth:`start` in a thread, without blocking the event loop."""
        return await asyncio.to_thread(self.start, timeout)

    def stop(self) -> None:
        """Stop the sentinels first (so they do not react), then the data nodes, and remove
        the directory if the deployment made it. Idempotent."""
        try:
            _stop_servers([*self.sentinels, *reversed(self.data_nodes)])
        finally:
            if self._own_dir and self._cleanup is not None:
                self._cleanup()

    async def astop(self) -> None:
        """:meth:`stop` in a thread, without blocking the event loop."""
        await asyncio.to_thread(self.stop)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await self.astart()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.astop()

    def __repr__(self) -> str:
        data = ",".join(str(n.port) for n in self.data_nodes)
        return f"<RedisSentinel {self.url} data={data}>"
