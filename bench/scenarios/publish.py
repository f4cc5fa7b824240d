"""S11 publish throughput: 1,000 concurrent publisher tasks in one process.

Method: a fresh server and a fresh client process per run. The client starts the contender
(its Pub/Sub connection is up, as in an application that also subscribes) and ``publishers``
tasks, each publishing on its own channel ``pub:<i>`` one message after the other: ``await
contender.publish(channel, payload)``, the next one only once the reply is in. Nobody
subscribes to those channels (every reply is ``:0``): the server's work per publish is the
least it can be, and the same for everyone, so the client's publish path is what is measured.

Warm-up: every task publishes once (a contender that opens connections on demand, redis-py's
pool, opens them here). Then each repetition runs all the tasks for ``secs`` seconds (a timer
sets a flag; each task finishes the publish it is waiting for and stops) and measures wall
time, the client process's CPU time and the completed publishes; the orchestrator reads the
server process's CPU time (``/proc/PID/stat``, 10 ms ticks) around it. Figures are medians of
the repetitions. Checks: the server's own count (``INFO commandstats``, ``cmdstat_publish``)
equals the publishes the client saw completed, and every reply was 0 receivers. The number of
connections is the server's (``INFO clients``, without the orchestrator's), taken after the
warm-up: the Pub/Sub connection plus the publishing ones.

The bar: redismpx publishes/s (wall) >= 2x redis-py's, in the same run (the issue's goal).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.contenders import create
from bench.procs import ScenarioError, Worker
from bench.resp import Admin
from bench.scenarios.common import CLK_TCK, Env, cpu_ticks, median, spread
from bench.worker import Ctl

PREFIX = b"pub:"


class Running:
    """The flag every publisher task checks before its next publish."""

    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False

    def stop(self) -> None:
        self.on = False


async def publisher(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Client process: warm up, then one timed burst of all the publisher tasks per ``go``."""
    tasks: int = p["publishers"]
    options: dict[str, Any] = {}
    if name == "redispy":
        # The default pool (100) raises MaxConnectionsError with 1,000 concurrent publishers;
        # one connection per publisher, plus the Pub/Sub connection taken from the same pool.
        options["max_connections"] = tasks + 1
    contender = create(name, p["url"], **options)
    await contender.start()
    publish = contender.publish
    payload = b"m" * p["payload"]
    channels = [PREFIX + b"%d" % i for i in range(tasks)]
    running = Running()

    async def once(channel: bytes) -> int:
        return await publish(channel, payload)

    async def loop_until_stopped(channel: bytes) -> tuple[int, int]:
        done = receivers = 0
        while running.on:
            receivers += await publish(channel, payload)
            done += 1
        return done, receivers

    warm = await asyncio.wait_for(asyncio.gather(*map(once, channels)), p["setup_timeout"])
    if any(warm):
        raise ScenarioError(f"{sum(warm)} receivers on channels nobody subscribes to")
    ctl.send("ready", len(warm))
    loop = asyncio.get_running_loop()
    while True:
        msg = await ctl.recv(p["block_timeout"])  # the loop keeps running (heartbeats)
        if msg[0] != "go":
            break
        running.on = True
        timer = loop.call_later(msg[1], running.stop)
        c0 = time.process_time()
        w0 = time.perf_counter()
        counts = await asyncio.wait_for(
            asyncio.gather(*map(loop_until_stopped, channels)), msg[1] + p["drain_timeout"]
        )
        wall = time.perf_counter() - w0
        cpu = time.process_time() - c0
        timer.cancel()
        publishes = sum(c[0] for c in counts)
        receivers = sum(c[1] for c in counts)
        least = min(c[0] for c in counts)
        ctl.send("rep", {"cpu": cpu, "wall": wall, "publishes": publishes,
                         "receivers": receivers, "least": least})  # fmt: skip
    await asyncio.wait_for(contender.aclose(), 10)
    return {}


def _info_field(admin: Admin, section: str, field: bytes) -> bytes:
    info: bytes = admin.command("INFO", section)
    for line in info.split(b"\r\n"):
        if line.startswith(field + b":"):
            return line.split(b":", 1)[1]
    raise ScenarioError(f"INFO {section} has no {field.decode()}")


def _publish_calls(admin: Admin) -> int:
    """``PUBLISH`` calls the server has executed (``cmdstat_publish:calls=N,...``)."""
    try:
        stat = _info_field(admin, "commandstats", b"cmdstat_publish")
    except ScenarioError:
        return 0
    fields = dict(kv.split(b"=", 1) for kv in stat.split(b","))
    return int(fields[b"calls"])


def run(env: Env, contender: str, *, use_uvloop: bool = False) -> dict[str, Any]:
    """Orchestrator side of one S11 run; returns the median figures."""
    sizes = env.sizes
    secs = sizes.s11_secs
    params: dict[str, Any] = {
        "publishers": sizes.s11_publishers,
        "payload": sizes.payload,
        "setup_timeout": env.timeout(120.0),
        "block_timeout": env.timeout(300.0),
        "drain_timeout": env.timeout(60.0),
    }
    reps: list[dict[str, Any]] = []
    with env.server() as srv:
        assert srv.proc is not None
        pid = srv.proc.pid
        params["url"] = srv.url
        admin = Admin(srv.port)
        try:
            with Worker("bench.scenarios.publish:publisher", contender, params, use_uvloop) as w:
                warm = w.expect("ready", env.timeout(180.0))[1]
                # The server counts this admin connection too.
                connections = int(_info_field(admin, "clients", b"connected_clients")) - 1
                for _ in range(sizes.reps):
                    before = cpu_ticks(pid)
                    w.send("go", secs)
                    rep = w.expect("rep", secs + env.timeout(120.0))[1]
                    rep["server_cpu"] = (cpu_ticks(pid) - before) / CLK_TCK
                    reps.append(rep)
                w.send("stop")
                w.result(env.timeout(60.0))
            calls = _publish_calls(admin)
        finally:
            admin.close()
    published = warm + sum(r["publishes"] for r in reps)
    if calls != published:
        raise ScenarioError(f"the server ran {calls} PUBLISH, the client completed {published}")
    if any(r["receivers"] for r in reps):
        raise ScenarioError("a publish reached a receiver on a channel nobody subscribes to")
    rates = [r["publishes"] / r["wall"] for r in reps]
    return {
        "publishers": sizes.s11_publishers,
        "reps": len(reps),
        "secs": secs,
        "publishes": median([float(r["publishes"]) for r in reps]),
        "rate": median(rates),
        "cpu_us": median([r["cpu"] / r["publishes"] * 1e6 for r in reps]),
        "cpu_share": median([r["cpu"] / r["wall"] for r in reps]),
        "server_cpu_us": median([r["server_cpu"] / r["publishes"] * 1e6 for r in reps]),
        "connections": connections,
        "least_per_task": min(r["least"] for r in reps),
        "spread": spread(rates),
    }
