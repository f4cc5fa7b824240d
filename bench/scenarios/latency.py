"""S7 latency from PUBLISH to callback, at a paced rate (10 k msgs/s by default).

Method: one subscription on one channel, sync callback. The publisher process paces
``s7_rate`` msgs/s for ``s7_secs`` s; each payload starts with its send time read from
``clock_gettime_ns(CLOCK_MONOTONIC)`` (one system-wide clock on Linux). The callback subtracts
that from its own reading of the same clock and appends the difference. The first 10% of the
samples are dropped (warm-up); p50/p99/p99.9 are nearest-rank percentiles of the rest. The
latency includes the server's hop, the same for everyone.
"""

from __future__ import annotations

import time
from typing import Any

from bench.contenders import create
from bench.procs import ScenarioError, Worker
from bench.scenarios.common import Env, Stamps, percentile
from bench.worker import Ctl

CHANNEL = b"lat"


async def subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    contender = create(name, p["url"])
    await contender.start()
    stamps = Stamps()
    sub = contender.subscription(stamps.on_message)
    await contender.add(sub, [CHANNEL])
    await contender.wait_ready(p["timeout"])
    ctl.send("ready", None)
    await ctl.recv(p["timeout"] + p["secs"])
    await contender.aclose()
    lat = [recv - sent for sent, recv in stamps.pairs]
    lat = sorted(lat[len(lat) // 10 :])
    return {
        "samples": len(lat),
        "received": len(stamps.pairs),
        "p50": percentile(lat, 50) / 1e3,
        "p99": percentile(lat, 99) / 1e3,
        "p999": percentile(lat, 99.9) / 1e3,
        "max": lat[-1] / 1e3 if lat else float("nan"),
    }


def run(env: Env, contender: str) -> dict[str, Any]:
    sizes = env.sizes
    with env.server() as srv:
        params = {"url": srv.url, "timeout": env.timeout(60.0), "secs": sizes.s7_secs}
        with Worker("bench.scenarios.latency:subscriber", contender, params) as w:
            w.expect("ready", env.timeout(60.0))
            sent = env.publisher.call(
                "paced",
                srv.port,
                CHANNEL,
                float(sizes.s7_rate),
                sizes.s7_secs,
                sizes.payload,
                timeout=sizes.s7_secs + 30,
            )
            time.sleep(0.2)
            w.send("stop")
            out = w.result(env.timeout(60.0))
    if out["received"] != sent["sent"]:
        raise ScenarioError(f"received {out['received']} of {sent['sent']} messages")
    out["rate"] = sent["sent"] / sizes.s7_secs
    return out
