"""S6 memory: bytes per subscription, and what stays after every subscription is closed.

Method: a fresh subscriber process per contender and per measure. It connects, warms up (one
subscription added, confirmed, closed), collects garbage and reads its baseline. Then it creates
``s6_subs`` subscriptions holding 1-3 channels each (subscription ``i`` has ``u:i``; one in three
also ``room:i%1000``; one in three also ``global``), all with the same callback so that only the
contender's own memory counts, and waits for the server to report every channel. After
``gc.collect()`` it reads the figure again; then it closes every subscription, waits for the
server to report 0 channels, lets acknowledgements drain, drops its own references, collects,
and reads a third time.

Two measures, each in its own fresh process: RSS (``/proc/self/statm``; includes allocator
slack) and ``tracemalloc`` (Python allocations only, exact; started after the warm-up).
"""

from __future__ import annotations

import asyncio
import gc
import os
import tracemalloc
from typing import Any

from bench.contenders import create
from bench.procs import Worker
from bench.resp import AsyncAdmin
from bench.scenarios.common import Env, noop
from bench.worker import Ctl

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def channels_of(i: int) -> list[bytes]:
    names = [b"u:%d" % i]
    if i % 3 >= 1:
        names.append(b"room:%d" % (i % 1000))
    if i % 3 == 2:
        names.append(b"global")
    return names


async def subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    use_trace = p["measure"] == "tracemalloc"
    contender = create(name, p["url"], track_activation=False)
    await contender.start()
    admin = AsyncAdmin(p["port"])
    await admin.connect()
    timeout = p["timeout"]

    warm = contender.subscription(noop)
    await contender.add(warm, [b"warm"])
    await admin.wait_counts(1, timeout=timeout)
    await contender.close(warm)
    await admin.wait_counts(0, timeout=timeout)
    del warm
    await asyncio.sleep(0.1)

    def reading() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0] if use_trace else rss()

    if use_trace:
        tracemalloc.start()
    n = p["subs"]
    groups = [channels_of(i) for i in range(n)]
    distinct = len({c for g in groups for c in g})
    base = reading()
    subs = []
    for group in groups:
        sub = contender.subscription(noop)
        await contender.add(sub, group)
        subs.append(sub)
    await admin.wait_counts(distinct, timeout=timeout)
    await asyncio.sleep(0.2)  # let the acknowledgements be read
    held = reading()
    for sub in subs:
        await contender.close(sub)
    await admin.wait_counts(0, timeout=timeout)
    await asyncio.sleep(0.2)
    del subs, sub
    after = reading()
    if use_trace:
        tracemalloc.stop()
    await admin.close()
    await asyncio.wait_for(contender.aclose(), 10)
    return {
        "subs": n,
        "channels": distinct,
        "per_sub": (held - base) / n,
        "retained": after - base,
    }


def run(env: Env, contender: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for measure in ("rss", "tracemalloc"):
        with env.server() as srv:
            params = {
                "url": srv.url,
                "port": srv.port,
                "subs": env.sizes.s6_subs,
                "measure": measure,
                "timeout": env.timeout(60.0),
            }
            with Worker("bench.scenarios.memory:subscriber", contender, params) as w:
                r = w.result(env.timeout(180.0))
        out[f"{measure}_per_sub"] = r["per_sub"]
        out[f"{measure}_retained"] = r["retained"]
        out["subs"] = r["subs"]
    return out
