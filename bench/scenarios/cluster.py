"""S10 cluster: redismpx over a 3-primary Redis Cluster versus one standalone server.

Same binary, same work, two set-ups, each with a fresh server (or cluster) and a fresh
subscriber process:

* *standalone*: ``Multiplexer(url)`` on one server; the channels are classic channels
  (``SUBSCRIBE``), published with ``PUBLISH``.
* *cluster*: ``ClusterMultiplexer(urls)`` on a loopback cluster of 3 primaries (no replicas,
  :class:`redismpx.server.RedisCluster`); the channels are shard channels (``SSUBSCRIBE``, one
  Pub/Sub connection per primary), published with ``SPUBLISH`` on each channel's owner.

``channels`` channels ``c:0 .. c:N-1`` (spread over all hash slots, so about N/3 per primary),
one subscription each with the sync counting callback. Method: the pre-buffered drain of
:mod:`bench.scenarios.throughput` (the subscriber blocks its event loop, the publisher fills
every socket and server output buffer, then the subscriber drains under measurement;
``reps`` drains per process, medians). The publisher is a process of its own (not the session
publisher, which speaks to one port): one raw socket per node, each node gets only the
pre-encoded pipelined commands for the channels it owns, the nodes' streams interleaved in
chunks of 1,000 commands, and every reply must be ``:1`` (exactly one receiver).

Figures: the subscriber's deliveries per CPU-second and per wall-second for both set-ups and
their ratio cluster/standalone; also the CPU time the server process(es) spent per 1M messages
(``/proc/PID/stat`` utime+stime, publish and drain, summed over the nodes) and the busiest
node's share of it. No bar: the figures are information.
"""

from __future__ import annotations

import asyncio
import itertools
import select
import socket
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from bench.procs import ScenarioError, Worker
from bench.resp import Admin, encode
from bench.scenarios.common import CLK_TCK, Counter, Env, cpu_ticks, median, summary
from bench.server import RESERVED_PORTS
from bench.worker import Ctl

if TYPE_CHECKING:  # redismpx is imported lazily: a broken library fails only its own runs
    from redismpx.server import ClusterNode

PREFIX = b"c:"
PRIMARIES = 3
FULL_SIZE = (3_000, 300_000)  # channels, messages per repetition
QUICK_SIZE = (30, 600)
CHUNK = 1000  # commands per write
SERVER_ARGS = ("--client-output-buffer-limit", "pubsub 0 0 0")

# (port, command, channel names owned by that node)
Group = tuple[int, bytes, list[bytes]]


def channel_names(count: int) -> list[bytes]:
    return [PREFIX + b"%d" % i for i in range(count)]


# --------------------------------------------------------------------------------------------
# Publisher process


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=60.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _chunks(cmds: list[bytes], rounds: int) -> Iterator[bytes]:
    seq = itertools.chain.from_iterable(itertools.repeat(cmds, rounds))
    while block := list(itertools.islice(seq, CHUNK)):
        yield b"".join(block)


def _read(sock: socket.socket, acc: bytearray) -> int:
    """Read once; return the number of reply lines received."""
    data = sock.recv(1 << 20)
    if not data:
        raise ConnectionError("server closed the publisher connection")
    acc += data
    return data.count(b"\n")


def publish_all(
    socks: Sequence[socket.socket], cmds: Sequence[list[bytes]], rounds: int
) -> dict[str, Any]:
    """Send ``rounds`` times every node's commands (nodes interleaved chunk by chunk), then
    wait for every reply. Returns the count sent and the replies that were not ``:1``."""
    t0 = time.perf_counter()
    replies = [bytearray() for _ in socks]
    lines = [0] * len(socks)
    expected = [len(c) * rounds for c in cmds]
    streams = [_chunks(c, rounds) for c in cmds]
    live = list(range(len(socks)))
    while live:
        for g in list(live):
            data = next(streams[g], None)
            if data is None:
                live.remove(g)
                continue
            socks[g].sendall(data)
            while select.select([socks[g]], [], [], 0)[0]:
                lines[g] += _read(socks[g], replies[g])
    for g, sock in enumerate(socks):
        while lines[g] < expected[g]:
            lines[g] += _read(sock, replies[g])
    sent = sum(expected)
    ok = sum(r.count(b":1\r\n") for r in replies)
    return {"sent": sent, "not_one": sent - ok, "secs": time.perf_counter() - t0}


async def publisher(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Publisher process body: one connection per node, one ``publish_all`` per ``bulk``."""
    groups: list[Group] = p["groups"]
    payload = b"m" * p["payload"]
    cmds = [[encode(command, ch, payload) for ch in names] for _, command, names in groups]
    socks = [_connect(port) for port, _, _ in groups]
    try:
        ctl.send("ready", None)
        while True:
            msg = ctl.block(p["timeout"])
            if msg[0] != "bulk":
                break
            ctl.send("published", publish_all(socks, cmds, msg[1]))
    finally:
        for sock in socks:
            sock.close()
    return {}


# --------------------------------------------------------------------------------------------
# Subscriber process


async def subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Subscriber process body: ``name`` is ``standalone`` or ``cluster``."""
    from redismpx import ClusterMultiplexer, Multiplexer

    urls: list[str] = p["urls"]
    mpx = ClusterMultiplexer(urls) if name == "cluster" else Multiplexer(urls[0])
    await mpx.__aenter__()
    await mpx.wait_connected(p["setup_timeout"])
    names: list[bytes] = p["channels"]
    ready = asyncio.get_running_loop().create_future()
    activated = 0

    def on_activation(channel: bytes) -> None:
        nonlocal activated
        activated += 1
        if activated == len(names) and not ready.done():
            ready.set_result(None)

    counter = Counter()
    subs = []
    for channel in names:
        sub = mpx.new_channel_subscription(counter.on_message, on_activation=on_activation)
        sub.add(channel)
        subs.append(sub)
    await asyncio.wait_for(ready, p["setup_timeout"])
    ctl.send("ready", None)
    while True:
        msg = ctl.block(p["block_timeout"])  # event loop blocked: the publisher fills the sockets
        if msg[0] != "go":
            break
        done = counter.arm(msg[1])
        c0 = time.process_time()
        w0 = time.perf_counter()
        await asyncio.wait_for(done, p["drain_timeout"])
        wall = time.perf_counter() - w0
        cpu = time.process_time() - c0
        ctl.send("rep", {"cpu": cpu, "wall": wall})
    stats = mpx.stats()
    await asyncio.wait_for(mpx.aclose(), 10)
    return {
        "subs": len(subs),
        "dropped": stats.get("dropped", 0),
        "nodes": stats.get("nodes", 1),
        "redirects": stats.get("redirects", 0),
    }


# --------------------------------------------------------------------------------------------
# Orchestrator


def _wait_subscribed(
    ports: Sequence[int], command: tuple[str, ...], want: int, timeout: float
) -> None:
    """Poll the nodes until the server side counts ``want`` subscribed channels in all."""
    admins = [Admin(port) for port in ports]
    try:
        deadline = time.monotonic() + timeout
        while True:
            have = sum(len(a.command(*command)) for a in admins)
            if have == want:
                return
            if time.monotonic() > deadline:
                raise ScenarioError(f"the server(s) count {have} channels, wanted {want}")
            time.sleep(0.002)
    finally:
        for admin in admins:
            admin.close()


def _measure(
    env: Env,
    setup: str,
    urls: list[str],
    groups: list[Group],
    pids: list[int],
    per_channel: int,
) -> dict[str, Any]:
    """One set-up: spawn publisher and subscriber, ``reps`` drains, figures."""
    names = [ch for _, _, chs in groups for ch in chs]
    names.sort(key=lambda ch: int(ch[len(PREFIX) :]))
    msgs = per_channel * len(names)
    reps = env.sizes.reps
    timeouts = {
        "setup_timeout": env.timeout(120.0),
        "block_timeout": env.timeout(300.0),
        "drain_timeout": env.timeout(120.0),
    }
    sub_params = {"urls": urls, "channels": names, **timeouts}
    pub_params = {"groups": groups, "payload": env.sizes.payload, "timeout": env.timeout(300.0)}
    results: list[dict[str, Any]] = []
    server_cpu: list[list[int]] = []
    publish_s: list[float] = []
    with (
        Worker("bench.scenarios.cluster:subscriber", setup, sub_params) as sub,
        Worker("bench.scenarios.cluster:publisher", f"{setup} publisher", pub_params) as pub,
    ):
        pub.expect("ready", env.timeout(60.0))
        sub.expect("ready", env.timeout(180.0))
        sharded = groups[0][1] == b"SPUBLISH"
        command = ("PUBSUB", "SHARDCHANNELS") if sharded else ("PUBSUB", "CHANNELS")
        _wait_subscribed([port for port, _, _ in groups], command, len(names), 10.0)
        for _ in range(reps):
            before = [cpu_ticks(pid) for pid in pids]
            pub.send("bulk", per_channel)
            published = pub.expect("published", env.timeout(180.0))[1]
            if published["not_one"]:
                raise ScenarioError(
                    f"{setup}: {published['not_one']} of {published['sent']} publishes "
                    "did not reach exactly one receiver"
                )
            publish_s.append(published["secs"])
            sub.send("go", msgs)
            results.append(sub.expect("rep", env.timeout(180.0))[1])
            server_cpu.append([cpu_ticks(pid) - b for pid, b in zip(pids, before, strict=True)])
        pub.send("stop")
        sub.send("stop")
        pub.result(env.timeout(30.0))
        final = sub.result(env.timeout(60.0))
    if final["dropped"]:
        raise ScenarioError(f"{setup}: redismpx dropped {final['dropped']} messages")
    if len(results) != reps:
        raise ScenarioError(f"{setup}: missing repetitions")
    out = summary(results, msgs)
    totals = [float(sum(ticks)) for ticks in server_cpu]
    out["server_cpu_per_m"] = median(totals) / CLK_TCK / msgs * 1e6
    out["busiest_share"] = median(
        [max(t) / sum(t) if sum(t) else float("nan") for t in server_cpu]
    )
    out["publish_rate"] = msgs / median(publish_s) if median(publish_s) else float("nan")
    out["nodes"] = final["nodes"]
    out["redirects"] = final["redirects"]
    return out


def _slot_owners(node: ClusterNode) -> dict[int, int]:
    """Slot -> owner port, from one node's ``CLUSTER SLOTS``."""
    owners: dict[int, int] = {}
    for entry in node.command("CLUSTER", "SLOTS"):
        lo, hi, primary = int(entry[0]), int(entry[1]), entry[2]
        for slot in range(lo, hi + 1):
            owners[slot] = int(primary[1])
    return owners


FIELDS = ("rate_cpu", "cpu_per_m", "rate_wall", "server_cpu_per_m", "busiest_share",
          "publish_rate", "cpu_s", "wall_s", "spread")  # fmt: skip


def run(env: Env, contender: str, *, channels: int, messages: int) -> dict[str, Any]:
    """Orchestrator side of one S10 run (``contender`` is always ``mpx``): ``messages`` per
    repetition (rounded down to a multiple of ``channels``), the same for both set-ups."""
    from redismpx.server import RedisCluster, key_slot

    per_channel = max(1, messages // channels)
    names = channel_names(channels)
    figures: dict[str, dict[str, Any]] = {}

    with env.server() as srv:
        assert srv.proc is not None
        groups: list[Group] = [(srv.port, b"PUBLISH", names)]
        figures["standalone"] = _measure(env, "standalone", [srv.url], groups, [srv.proc.pid],
                                         per_channel)  # fmt: skip

    t0 = time.monotonic()
    cluster = RedisCluster(env.binary.path, primaries=PRIMARIES, args=SERVER_ARGS)
    if any(n.port in RESERVED_PORTS or n.bus_port in RESERVED_PORTS for n in cluster.nodes):
        raise ScenarioError("the cluster picked a reserved port")
    try:
        cluster.start()
        env.log(f"S10 cluster of {PRIMARIES} primaries ready in {time.monotonic() - t0:.1f}s")
        primaries = cluster.primaries()
        owners = _slot_owners(primaries[0])
        by_port: dict[int, list[bytes]] = {n.port: [] for n in primaries}
        for ch in names:
            by_port[owners[key_slot(ch)]].append(ch)
        groups = [(port, b"SPUBLISH", chs) for port, chs in by_port.items() if chs]
        pids = [n.pid for n in primaries if n.pid is not None]
        if len(pids) != PRIMARIES:
            raise ScenarioError("a cluster node is not running")
        figures["cluster"] = _measure(env, "cluster", cluster.urls, groups, pids, per_channel)
    finally:
        cluster.stop()

    out: dict[str, Any] = {
        "channels": channels,
        "messages": per_channel * channels,
        "reps": env.sizes.reps,
        "split": "/".join(str(len(chs)) for _, _, chs in groups),
    }
    for setup, figs in figures.items():
        for field in FIELDS:
            out[f"{setup}_{field}"] = figs[field]
    out["cluster_nodes"] = figures["cluster"]["nodes"]
    out["cluster_redirects"] = figures["cluster"]["redirects"]
    for field in ("rate_cpu", "rate_wall"):
        base = figures["standalone"][field]
        out[f"ratio_{field}"] = figures["cluster"][field] / base if base else float("nan")
    return out
