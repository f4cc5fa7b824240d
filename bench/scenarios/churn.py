"""S5 churn: add 10,000 channels across many subscriptions, then remove them all.

Method: ``subs`` subscriptions are created (not timed); then, in one burst, each gets
``per_sub`` fresh channels (``subs * per_sub`` distinct names in all) and the clock runs until
the *server* reports that many channels (``INFO stats`` ``pubsub_channels``, polled every 1 ms
on a separate admin connection from the subscriber process). Then every subscription removes
its channels in one burst, until the server reports 0. ops/s = channel adds (or removes) per
second of wall time to the server's confirmation; CPU is the subscriber process's
``process_time`` over the same window (the polling is included, equally for everyone).
Repeated ``s5_reps`` times with new names each time; medians are reported.
"""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from bench.contenders import create
from bench.procs import Worker
from bench.resp import AsyncAdmin
from bench.scenarios.common import Env, median, noop
from bench.worker import Ctl


async def subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    contender = create(name, p["url"], track_activation=False)
    await contender.start()
    admin = AsyncAdmin(p["port"])
    await admin.connect()
    n_subs, per_sub, timeout = p["subs"], p["per_sub"], p["timeout"]
    total = n_subs * per_sub
    reps = []
    for rep in range(p["reps"]):
        names = [b"churn:%d:%d" % (rep, i) for i in range(total)]
        groups = [names[i * per_sub : (i + 1) * per_sub] for i in range(n_subs)]
        subs = [contender.subscription(noop) for _ in range(n_subs)]
        gc.collect()
        w0, c0 = time.perf_counter(), time.process_time()
        for sub, group in zip(subs, groups, strict=True):
            await contender.add(sub, group)
        await admin.wait_counts(total, timeout=timeout)
        w1, c1 = time.perf_counter(), time.process_time()
        for sub, group in zip(subs, groups, strict=True):
            await contender.remove(sub, group)
        await admin.wait_counts(0, timeout=timeout)
        w2, c2 = time.perf_counter(), time.process_time()
        for sub in subs:
            await contender.close(sub)
        reps.append(
            {"add_wall": w1 - w0, "add_cpu": c1 - c0, "rm_wall": w2 - w1, "rm_cpu": c2 - c1}
        )
        await asyncio.sleep(0.05)
    await admin.close()
    await asyncio.wait_for(contender.aclose(), 10)
    return {"reps": reps}


def run(env: Env, contender: str) -> dict[str, Any]:
    sizes = env.sizes
    total = sizes.s5_subs * sizes.s5_per_sub
    with env.server() as srv:
        params = {
            "url": srv.url,
            "port": srv.port,
            "subs": sizes.s5_subs,
            "per_sub": sizes.s5_per_sub,
            "reps": sizes.s5_reps,
            "timeout": env.timeout(120.0),
        }
        with Worker("bench.scenarios.churn:subscriber", contender, params) as w:
            reps = w.result(env.timeout(400.0))["reps"]
    add_wall = median([r["add_wall"] for r in reps])
    rm_wall = median([r["rm_wall"] for r in reps])
    both = median([r["add_wall"] + r["rm_wall"] for r in reps])
    return {
        "channels": total,
        "add_ops": total / add_wall,
        "remove_ops": total / rm_wall,
        "ops": 2 * total / both,
        "cpu_s": median([r["add_cpu"] + r["rm_cpu"] for r in reps]),
        "wall_s": both,
    }
