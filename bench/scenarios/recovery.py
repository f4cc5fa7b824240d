"""S8 recovery: 100,000 channels subscribed, then the server is SIGKILLed and restarted.

Method: the subscriber process subscribes ``s8_subs`` subscriptions x ``s8_per_sub`` channels
and the server confirms them all. The publisher starts probing: one message per millisecond,
round-robin over 100 of the channels spread over the whole set, each stamped with its send time
(CLOCK_MONOTONIC). The orchestrator SIGKILLs the server, waits for the PID to be gone,
starts it again on the same port and waits for PONG (``ready``). Then it polls ``INFO stats``
every 2 ms until ``pubsub_channels`` is back to the full count.

Figures, from ``ready``: *all active* = the server counts every channel again; *flowing* = the
first probe sent after the kill reaches a callback. Reconnect policies differ (the limit retries
every 5 ms; redismpx uses its default full-jitter backoff from 8 ms; redis-py its default retry
object), and that is part of what is measured.
"""

from __future__ import annotations

import time
from typing import Any

from bench.contenders import create
from bench.procs import ScenarioError, Worker
from bench.publisher import now_ns
from bench.resp import Admin, AsyncAdmin
from bench.scenarios.common import Env, Stamps
from bench.worker import Ctl

PREFIX = b"rc:"
PROBES = 100


async def subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    contender = create(name, p["url"], track_activation=False)
    await contender.start()
    stamps = Stamps()
    per_sub = p["per_sub"]
    subs = []
    for i in range(p["subs"]):
        sub = contender.subscription(stamps.on_message)
        await contender.add(sub, [PREFIX + b"%d" % (i * per_sub + j) for j in range(per_sub)])
        subs.append(sub)
    admin = AsyncAdmin(p["port"])
    await admin.connect()
    await admin.wait_counts(p["subs"] * per_sub, timeout=p["timeout"])
    await admin.close()
    ctl.send("ready", None)
    while True:  # the loop keeps running meanwhile: the contender reconnects
        msg = await ctl.recv(p["timeout"] * 3)
        if msg[0] != "first":
            break
        t_kill = msg[1]
        after = [recv for sent, recv in stamps.pairs if sent > t_kill]
        before = sum(1 for sent, _ in stamps.pairs if sent < t_kill)
        ctl.send("first", min(after) if after else None, before)
    await contender.aclose()
    return {}


def run(env: Env, contender: str) -> dict[str, Any]:
    sizes = env.sizes
    total = sizes.s8_subs * sizes.s8_per_sub
    timeout = env.timeout(120.0)
    indices = [i * total // PROBES for i in range(PROBES)]
    with env.server() as srv:
        params = {
            "url": srv.url,
            "port": srv.port,
            "subs": sizes.s8_subs,
            "per_sub": sizes.s8_per_sub,
            "timeout": timeout,
        }
        with Worker("bench.scenarios.recovery:subscriber", contender, params) as w:
            w.expect("ready", timeout * 2)
            env.publisher.start_probe(srv.port, PREFIX, indices, 0.001, 64)
            try:
                time.sleep(0.2)
                t_kill = now_ns()
                srv.kill()
                srv.start()
                t_ready = now_ns()
                t_all = _wait_all_active(srv.port, total, timeout)
                first, before = _wait_flowing(w, t_kill, timeout)
            finally:
                env.publisher.stop_probe()
            w.send("stop")
            w.result(timeout)
    if not before:
        raise ScenarioError("no probe was delivered before the kill")
    return {
        "channels": total,
        "restart_ms": (t_ready - t_kill) / 1e6,
        "all_active_ms": (t_all - t_ready) / 1e6,
        "flowing_ms": (first - t_ready) / 1e6,
    }


def _wait_all_active(port: int, total: int, timeout: float) -> int:
    """Poll the server every 2 ms until it counts ``total`` channels; the time it did."""
    admin = Admin(port)
    try:
        deadline = time.monotonic() + timeout
        while admin.counts()[0] != total:
            if time.monotonic() > deadline:
                raise ScenarioError(f"not all {total} channels back after {timeout}s")
            time.sleep(0.002)
        return now_ns()
    finally:
        admin.close()


def _wait_flowing(w: Worker, t_kill: int, timeout: float) -> tuple[int, int]:
    """Ask the subscriber every 20 ms for its first delivery of a probe sent after the kill."""
    deadline = time.monotonic() + timeout
    while True:
        w.send("first", t_kill)
        _, first, before = w.expect("first", timeout)
        if first is not None:
            return int(first), int(before)
        if time.monotonic() > deadline:
            raise ScenarioError(f"no message delivered within {timeout}s of the restart")
        time.sleep(0.02)
