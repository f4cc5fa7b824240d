"""``RedisCluster``: a loopback cluster built without a cli, and ``key_slot``."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from typing import Self

from redismpx.errors import ServerError

from ._binary import ServerNotFound, _free_ports, find_server_binary, server_version
from .standalone import RedisServer, _stop_servers, _work_dir

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
        ports_picked: bool = False,
    ) -> None:
        # ``ports_picked``: the caller chose free ports itself, so a conflict at start may
        # move the node elsewhere as if it had picked them here.
        auto = ports_picked or (port is None and bus_port is None)
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
        self._dir, self._cleanup = _work_dir(self, directory, "redismpx-cluster-")
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
                ports_picked=True,
            )
            for i in range(total)
        ]
        """Every node: the primaries (as created) first, then the replicas."""

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
        try:
            _stop_servers(self.nodes)
        finally:
            if self._own_dir and self._cleanup is not None:
                self._cleanup()

    def __iter__(self) -> Iterator[ClusterNode]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        ports = ",".join(str(n.port) for n in self.nodes)
        return f"<RedisCluster {self._primaries}x(1+{self._replicas}) ports={ports}>"
