"""S12 end to end: one Redis channel fanned out to WebSocket clients of a Starlette app.

Three processes besides the Redis server, each a fresh spawn per run:

* the **server**: the variant's Starlette app under uvicorn (:mod:`bench.ws_app`), on the
  default asyncio loop or uvloop;
* the **clients**: ``clients`` WebSocket connections in one process (:mod:`bench.ws_client`,
  always on uvloop), each counting its text frames and checking their sequence numbers;
* the **publisher** (not for ``limit``): a raw socket writing ``PUBLISH`` commands of
  sequence-numbered 64-byte payloads.

After a warm-up repetition (not measured; none with ``--quick``), per repetition: the clients
are armed for ``messages`` frames each; the server reports its CPU
time (``time.process_time()``, the whole process); the publisher publishes ``messages``
messages (or, for ``limit``, the server's own driver sends them), paced at ``rate`` messages/s
or, with ``rate = 0``, all at once; the clients report once every socket has all its frames
(or nothing arrived for a while: then the missing frames are counted as *lost*); the server
reports its CPU time again. Figures: deliveries (frames received, all sockets) per
server CPU-second, server CPU us per delivery, deliveries/s wall (first publish to last frame),
losses and frames out of sequence; medians of the repetitions.

Clients connect one first, then the rest (in batches), so that the first subscriber of the
channel is alone (stock broadcaster's ``subscribe`` loses concurrent first subscribers, see
docs/integrations/broadcaster.md). Before measuring, the orchestrator waits until every endpoint
says its subscription is in place and, for the Redis variants, until Redis counts one
subscriber connection on the channel (``PUBSUB NUMSUB``).
"""

from __future__ import annotations

import contextlib
import select
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.procs import ScenarioError, Worker
from bench.resp import Admin, encode
from bench.scenarios.common import CLK_TCK, Env, cpu_ticks, median, spread
from bench.server import Server
from bench.worker import Ctl
from bench.ws_app import CHANNEL, EXPERIMENTS, VARIANTS, payload

CHUNK = 100  # PUBLISH commands per write when publishing at full speed

# With --profile: per run, where the server's time went (read by bench.report).
PROFILES: list[dict[str, Any]] = []


def burst_options(variant: str, messages: int) -> dict[str, Any]:
    """redismpx settings for a run: the documented defaults, with ``max_buffer`` raised to
    hold a whole repetition where the default could drop (a burst larger than it).

    A queued subscription holds at most ``max_buffer`` messages (1,000 by default,
    ``drop_oldest``; ``RedisMPXBackend``: 10,000). Paced, a socket's buffer holds a message or
    two; all at once, a whole repetition may wait in it. Stock broadcaster's queues are
    unbounded.
    """
    if variant in ("mpx-callback", "mpx-iterator") and messages > 1_000:
        return {"max_buffer": messages}
    if variant == "mpx-broadcaster" and messages > 10_000:
        return {"max_buffer": messages}
    return {}


# --------------------------------------------------------------------------------------------
# Publisher process


def _publish(sock: socket.socket, messages: int, rate: float, size: int) -> dict[str, Any]:
    """``messages`` PUBLISH on CHANNEL with sequence-numbered payloads; every reply read."""
    channel = CHANNEL.encode()
    replies = bytearray()
    t0 = time.monotonic()
    seq = 0
    while seq < messages:
        if rate:
            due = min(messages, int((time.monotonic() - t0) * rate) + 1)
            if due <= seq:
                time.sleep(max(0.0, t0 + seq / rate - time.monotonic()))
                continue
        else:
            due = min(messages, seq + CHUNK)
        cmds = (encode(b"PUBLISH", channel, payload(i, size)) for i in range(seq, due))
        sock.sendall(b"".join(cmds))
        seq = due
        while select.select([sock], [], [], 0)[0]:
            replies += _recv(sock)
    while replies.count(b"\n") < messages:
        replies += _recv(sock)
    return {
        "sent": messages,
        "not_one": messages - replies.count(b":1\r\n"),
        "secs": time.monotonic() - t0,
    }


def _recv(sock: socket.socket) -> bytes:
    data = sock.recv(1 << 16)
    if not data:
        raise ConnectionError("the server closed the publisher connection")
    return data


async def publisher(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Publisher process body: one ``_publish`` per ``publish`` message."""
    sock = socket.create_connection(("127.0.0.1", p["port"]), timeout=60.0)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        ctl.send("ready", None)
        while True:
            msg = ctl.block(p["block_timeout"])
            if msg[0] != "publish":
                break
            ctl.send("published", _publish(sock, msg[1], msg[2], p["payload"]))
    finally:
        sock.close()
    return {}


# --------------------------------------------------------------------------------------------
# Orchestrator


def _numsub(port: int) -> int:
    admin = Admin(port)
    try:
        reply = admin.command("PUBSUB", "NUMSUB", CHANNEL)
    finally:
        admin.close()
    return int(reply[1])


def _wait_numsub(port: int, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (have := _numsub(port)) != want:
        if time.monotonic() > deadline:
            raise ScenarioError(f"Redis counts {have} subscribers of {CHANNEL}, wanted {want}")
        time.sleep(0.005)


def run(
    env: Env,
    variant: str,
    *,
    clients: int,
    messages: int,
    rate: float,
    use_uvloop: bool = False,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """Orchestrator side of one S12 run for one variant; returns the median figures."""
    if variant not in VARIANTS + EXPERIMENTS:
        raise ScenarioError(f"unknown S12 variant {variant!r}")
    with contextlib.ExitStack() as stack:
        srv = None if variant == "limit" else stack.enter_context(env.server())
        return _measure(env, stack, variant, srv, clients, messages, rate, use_uvloop,
                        profile_dir)  # fmt: skip
    raise AssertionError("unreachable")  # (mypy: the with block always returns)


def _measure(
    env: Env,
    stack: contextlib.ExitStack,
    variant: str,
    srv: Server | None,
    clients: int,
    messages: int,
    rate: float,
    use_uvloop: bool,
    profile_dir: Path | None,
) -> dict[str, Any]:
    sizes = env.sizes
    timeouts = {"setup_timeout": env.timeout(120.0), "block_timeout": env.timeout(300.0)}
    profile_path = None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
        loop = "uvloop" if use_uvloop else "asyncio"
        mode = "paced" if rate else "burst"
        profile_path = str(profile_dir / f"S12-{variant}-{loop}-{mode}.prof")
    server_params = {
        "url": srv.url if srv is not None else "",
        "options": burst_options(variant, messages),
        "profile": profile_dir is not None,
        "profile_path": profile_path,
        **timeouts,
    }
    # The three processes start together (their imports overlap); each gets its own stop.
    server = stack.enter_context(Worker("bench.ws_app:server", variant, server_params, use_uvloop))
    client_params = {"path": "/ws", "batch": 100, "close_timeout": 5.0, **timeouts}
    conns = stack.enter_context(Worker("bench.ws_client:clients", variant, client_params, True))
    pub = None
    if srv is not None:
        pub_params = {"port": srv.port, "payload": sizes.payload, **timeouts}
        pub = stack.enter_context(
            Worker("bench.scenarios.websocket:publisher", f"{variant} publisher", pub_params)
        )
    port, impl = server.expect("ready", env.timeout(60.0))[1:]
    # One client first, alone (see the module docstring), then the others.
    conns.send("connect", port, 1)
    conns.expect("connected", env.timeout(60.0))
    server.send("ready", 1)
    server.expect("ready", env.timeout(60.0))
    conns.send("connect", port, clients)
    if conns.expect("connected", env.timeout(180.0))[1] != clients:
        raise ScenarioError("not every client connected")
    server.send("ready", clients)
    server.expect("ready", env.timeout(180.0))
    if srv is not None:
        _wait_numsub(srv.port, 1, env.timeout(30.0))
    if pub is not None:
        pub.expect("ready", env.timeout(60.0))
    # Long enough for the slowest variant to finish a paced repetition, generous for bursts.
    wait_limit = env.timeout((messages / rate if rate else 0.0) + 120.0)
    rep = Rep(env, server, conns, pub, clients, rate, sizes.payload, wait_limit,
              srv.proc.pid if srv is not None and srv.proc is not None else None)  # fmt: skip
    warmup = 0 if env.quick else max(10, messages // 5)
    if warmup:
        rep.measure(warmup, profile=False)
    reps = [rep.measure(messages, profile=True) for _ in range(sizes.s12_reps)]
    for worker in (pub, conns):
        if worker is not None:
            worker.send("stop")
            worker.result(env.timeout(60.0))
    server.send("stop")
    final = server.result(env.timeout(60.0))
    return _figures(variant, reps, final, impl, clients, messages, rate)


@dataclass
class Rep:
    """What one repetition needs: the three processes and the run's settings."""

    env: Env
    server: Worker
    conns: Worker
    pub: Worker | None  # None: the limit (the server sends by itself)
    clients: int
    rate: float
    size: int
    wait_limit: float
    redis_pid: int | None

    def measure(self, messages: int, profile: bool) -> dict[str, Any]:
        env, server, conns, pub = self.env, self.server, self.conns, self.pub
        deliveries = messages * self.clients
        conns.send("arm", messages)
        conns.expect("armed", env.timeout(30.0))
        redis0 = cpu_ticks(self.redis_pid) if self.redis_pid else 0
        server.send("mark", True, profile)
        cpu0, t0, user0, sys0 = server.expect("mark", env.timeout(30.0))[1:]
        if pub is None:
            server.send("drive", messages, self.rate, self.size)
            server.expect("driving", env.timeout(30.0))
        else:
            pub.send("publish", messages, self.rate)
        # Reported once every socket has every frame, or after this long without a frame.
        conns.send("wait", 3.0 if self.rate else 5.0, self.wait_limit)
        got = conns.expect("received", self.wait_limit + env.timeout(60.0))[1]
        if pub is None:
            server.send("driven")
            server.expect("driven", env.timeout(60.0))
            published: dict[str, Any] = {"not_one": 0}
        else:
            published = pub.expect("published", env.timeout(120.0))[1]
        server.send("mark", False, deliveries)
        cpu1, _, user1, sys1 = server.expect("mark", env.timeout(30.0))[1:]
        redis_cpu = (cpu_ticks(self.redis_pid) - redis0) / CLK_TCK if self.redis_pid else 0.0
        if published["not_one"]:
            raise ScenarioError(
                f"{published['not_one']} PUBLISH did not reach exactly one receiver"
            )
        if got["sockets"] != self.clients or got["closed"]:
            raise ScenarioError(f"{got['closed']} of {self.clients} client sockets were closed")
        cpu = (user1 - user0) + (sys1 - sys0)  # os.times(): 10 ms ticks, for the split only
        return {
            "cpu": cpu1 - cpu0,
            "sys": (sys1 - sys0) / cpu if cpu else float("nan"),
            "wall": (got["last"] - t0) if got["frames"] else float("nan"),
            # How late the last frame came after the last message was due (paced: > 0 means
            # the server fell behind, and then sent several frames per socket at once).
            "lag": got["last"] - t0 - ((messages - 1) / self.rate if self.rate else 0.0),
            "frames": got["frames"],
            "lost": deliveries - got["frames"],
            "disorder": got["errors"],
            "redis_cpu": redis_cpu,
        }


def _figures(
    variant: str,
    reps: list[dict[str, Any]],
    final: dict[str, Any],
    impl: str,
    clients: int,
    messages: int,
    rate: float,
) -> dict[str, Any]:
    rates = [r["frames"] / r["cpu"] if r["cpu"] else float("nan") for r in reps]
    out: dict[str, Any] = {
        "clients": clients,
        "messages": messages,
        "rate": rate,
        "reps": len(reps),
        "rate_cpu": median(rates),
        "cpu_us": median([r["cpu"] / r["frames"] * 1e6 if r["frames"] else float("nan")
                          for r in reps]),
        "rate_wall": median([r["frames"] / r["wall"] if r["wall"] else float("nan")
                             for r in reps]),
        "cpu_s": median([r["cpu"] for r in reps]),
        "sys_share": median([r["sys"] for r in reps]),
        "lag_ms": median([r["lag"] * 1e3 for r in reps]),
        "lost": sum(r["lost"] for r in reps),
        "disorder": sum(r["disorder"] for r in reps),
        "redis_cpu_us": median([r["redis_cpu"] / r["frames"] * 1e6 if r["frames"]
                                else float("nan") for r in reps]),
        "spread": spread(rates),
        "dropped": final["stats"].get("dropped", 0),
        "impl": impl,
    }  # fmt: skip
    if final["profiles"]:
        PROFILES.append({"variant": variant, "loop": impl.rsplit(" ", 1)[-1], "rate": rate,
                         **final["profiles"][len(final["profiles"]) // 2]})  # fmt: skip
    return out
