"""Throughput: S1-S4, the S9 scaling points and their uvloop variants.

Method (pre-buffered drain): the subscriber process subscribes, waits until every subscription
is confirmed to the client, then *blocks its event loop* on the control pipe. The publisher
process writes ``n`` pipelined ``PUBLISH`` commands and waits for all replies: every message is
now queued in the kernel socket buffer or in the server's output buffer for the subscriber (the
server runs with ``client-output-buffer-limit pubsub 0 0 0``, so nothing is dropped). Then the
subscriber is told ``go`` and we measure, in the subscriber process, ``time.process_time()`` and
wall time from ``go`` until the application callback has seen every delivery. Only the
subscriber's own cost is in the window: the publisher is idle, and the server only copies bytes
out of its buffer (the other core). Each run repeats this ``reps`` times; medians are reported.

Layouts: ``channels`` = ``channels`` channels with ``subs_per_channel`` subscriptions each,
traffic round-robin over the channels (S1: 1x1, S2: 1x1000, S3: 10,000x1, S9); ``pattern`` =
``subs`` pattern subscriptions on ``pat:*``, traffic over ``pat:0..pat:9`` (S4).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.contenders import create
from bench.procs import ScenarioError, Worker
from bench.resp import Admin
from bench.scenarios.common import Counter, Env, summary
from bench.worker import Ctl

PREFIX = b"c:"
PATTERN = b"pat:*"
PATTERN_PREFIX = b"pat:"
PATTERN_CHANNELS = 10
ASYNC_MAX_BUFFER = 100_000


async def subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Subscriber process: set up, then one measured drain per ``go``."""
    options: dict[str, Any] = {}
    if name == "mpx" and p["async_cb"]:
        # The pre-buffered burst arrives ~2,900 messages per read; the default bound (1,000
        # per subscription, drop_oldest) would drop most of them. The limit's queue is unbounded.
        options["max_buffer"] = ASYNC_MAX_BUFFER
    contender = create(name, p["url"], **options)
    await contender.start()
    counter = Counter()
    cb = counter.on_message_async if p["async_cb"] else counter.on_message
    subs: list[Any] = []
    if p["layout"] == "pattern":
        for _ in range(p["subs"]):
            subs.append(await contender.psubscription(PATTERN, cb))
    else:
        for i in range(p["channels"]):
            channel = PREFIX + b"%d" % i
            for _ in range(p["subs_per_channel"]):
                sub = contender.subscription(cb)
                await contender.add(sub, [channel])
                subs.append(sub)
    await contender.wait_ready(p["setup_timeout"])
    ctl.send("ready", None)
    while True:
        msg = ctl.block(p["block_timeout"])  # event loop blocked: the publisher fills the socket
        if msg[0] != "go":
            break
        done = counter.arm(msg[1])
        c0 = time.process_time()
        w0 = time.perf_counter()
        await asyncio.wait_for(done, p["drain_timeout"])
        wall = time.perf_counter() - w0
        cpu = time.process_time() - c0
        ctl.send("rep", {"cpu": cpu, "wall": wall})
    dropped = contender.stats().get("dropped", 0)
    await asyncio.wait_for(contender.aclose(), 10)
    return {"subs": len(subs), "dropped": dropped}


def run(
    env: Env,
    contender: str,
    *,
    layout: str,
    deliveries: int,
    channels: int = 1,
    subs_per_channel: int = 1,
    subs: int = 1,
    async_cb: bool = False,
    use_uvloop: bool = False,
    reps: int | None = None,
) -> dict[str, Any]:
    """Orchestrator side of one throughput run; returns the median figures."""
    sizes = env.sizes
    reps = reps or sizes.reps
    fanout = subs if layout == "pattern" else subs_per_channel
    msgs = max(1, deliveries // fanout)
    deliveries = msgs * fanout
    params = {
        "layout": layout,
        "channels": channels,
        "subs_per_channel": subs_per_channel,
        "subs": subs,
        "async_cb": async_cb,
        "setup_timeout": env.timeout(120.0),
        "block_timeout": env.timeout(300.0),
        "drain_timeout": env.timeout(120.0),
    }
    with env.server() as srv:
        params["url"] = srv.url
        with Worker("bench.scenarios.throughput:subscriber", contender, params, use_uvloop) as w:
            w.expect("ready", env.timeout(180.0))
            admin = Admin(srv.port)
            try:
                if layout == "pattern":
                    admin.wait_counts(None, 1, timeout=10)
                else:
                    admin.wait_counts(channels, None, timeout=10)
            finally:
                admin.close()
            results = []
            for _ in range(reps):
                if layout == "pattern":
                    env.publisher.bulk(
                        srv.port, PATTERN_PREFIX, PATTERN_CHANNELS, msgs, sizes.payload
                    )
                else:
                    env.publisher.bulk(srv.port, PREFIX, channels, msgs, sizes.payload)
                w.send("go", deliveries)
                results.append(w.expect("rep", env.timeout(180.0))[1])
            w.send("stop")
            final = w.result(env.timeout(60.0))
    if final["dropped"]:
        raise ScenarioError(f"the contender dropped {final['dropped']} messages")
    if len(results) != reps:
        raise ScenarioError("missing repetitions")
    out = summary(results, deliveries)
    out["messages"] = msgs
    return out
