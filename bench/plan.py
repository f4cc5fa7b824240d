"""What a bench run does: the list of runs (scenario variant x contenders) in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from bench.config import QUICK, Sizes
from bench.scenarios import (
    churn,
    cluster,
    history,
    latency,
    memory,
    publish,
    recovery,
    scaling,
    throughput,
    websocket,
)
from bench.scenarios.common import Env

ALL_SCENARIOS = ("S1", "S2", "S3", "S4", "S5", "S6", "S7", "S8", "S9", "S10", "S11", "S12",
                 "S13", "S14", "S15")  # fmt: skip
ALL_CONTENDERS = ("limit", "redispy", "mpx")
UVLOOP_CONTENDERS = ("limit", "mpx")

RunFunc = Callable[[Env, str], dict[str, Any]]


@dataclass(frozen=True)
class Run:
    key: str  # unique id, e.g. "S1-sync-uvloop"
    scenario: str  # "S1"
    title: str  # for humans
    contenders: tuple[str, ...]
    func: RunFunc
    rounds: int = 1  # >1: repeat, contenders interleaved, and report the median of each figure


def _throughput(sizes: Sizes) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        ("S1", "S1-sync", "S1 1 channel, 1 sub, sync callback",
         {"layout": "channels", "deliveries": sizes.s1_msgs}),
        ("S1", "S1-async", "S1 1 channel, 1 sub, async callback",
         {"layout": "channels", "deliveries": sizes.s1_msgs, "async_cb": True}),
        ("S2", "S2", f"S2 1 channel fanned out to {sizes.s2_subs:,} subs",
         {"layout": "channels", "subs_per_channel": sizes.s2_subs,
          "deliveries": sizes.s2_deliveries}),
        ("S3", "S3-sync", f"S3 {sizes.s3_channels:,} channels, 1 sub each, sync callback",
         {"layout": "channels", "channels": sizes.s3_channels, "deliveries": sizes.s3_msgs}),
        ("S3", "S3-async", f"S3 {sizes.s3_channels:,} channels, 1 sub each, async callback",
         {"layout": "channels", "channels": sizes.s3_channels, "deliveries": sizes.s3_msgs,
          "async_cb": True}),
        ("S4", "S4", f"S4 1 pattern, {sizes.s4_subs:,} pattern subs",
         {"layout": "pattern", "subs": sizes.s4_subs, "deliveries": sizes.s4_deliveries}),
    ]  # fmt: skip


def s12_variants(contenders: tuple[str, ...], experiments: bool = False) -> tuple[str, ...]:
    """S12's app variants for the chosen contenders: ``limit``; ``mpx``: the three redismpx
    variants (and the experiments ``mpx-eager`` and ``mpx-batched`` if asked for);
    ``redispy``: stock broadcaster, whose Redis backend is redis-py's."""
    out: list[str] = []
    if "limit" in contenders:
        out.append("limit")
    if "mpx" in contenders:
        out += ["mpx-callback", "mpx-iterator", "mpx-broadcaster"]
        if experiments:
            out += ["mpx-eager", "mpx-batched"]
    if "redispy" in contenders:
        out.append("broadcaster")
    return tuple(out)


def _s12(
    sizes: Sizes,
    contenders: tuple[str, ...],
    uvloop: bool,
    profile_dir: Path | None,
    experiments: bool,
) -> list[Run]:
    variants = s12_variants(contenders, experiments)
    if not variants:
        return []
    n, m, rate = sizes.s12_clients, sizes.s12_messages, sizes.s12_rate
    rounds = sizes.tp_rounds
    if profile_dir is not None:
        # cProfile makes the server ~5x slower: a fifth of the rate keeps it from falling
        # behind (which would batch frames per socket and change what is profiled).
        rate, rounds = rate / 5, 1
    title = f"S12 1 channel to {n:,} WebSockets (Starlette, uvicorn), {rate:g} msgs/s"
    runs = []
    loops = (False, True) if uvloop else (False,)
    for use_uvloop in loops:
        func = partial(websocket.run, clients=n, messages=m, rate=rate, use_uvloop=use_uvloop,
                       profile_dir=profile_dir)  # fmt: skip
        key, full = ("S12-uvloop", f"{title} (uvloop)") if use_uvloop else ("S12", title)
        runs.append(Run(key, "S12", full, variants, func, rounds))
    if not experiments or sizes == QUICK:
        return runs
    # Every message at once: no bar (see bench/README.md, S12), one round, asyncio.
    func = partial(websocket.run, clients=n, messages=m, rate=0.0, profile_dir=profile_dir)
    title = f"S12 1 channel to {n:,} WebSockets, {m:,} messages at once (no bar)"
    runs.append(Run("S12-burst", "S12", title, variants, func, 1))
    return runs


def _history(sizes: Sizes, wanted: set[str]) -> list[Run]:
    """S13-S15 (bench/scenarios/history.py): redismpx against itself, every variant in one
    run (the ratios are taken within a round)."""
    runs = []
    if "S13" in wanted:
        title = (f"S13 publish with history (history_size={sizes.s13_history_size}) vs plain, "
                 f"{sizes.s13_publishers:,} publisher tasks")  # fmt: skip
        runs.append(Run("S13", "S13", title, ("mpx",), history.run_publish, sizes.tp_rounds))
    if "S14" in wanted:
        title = (f"S14 recovery of {sizes.s14_channels:,} channels after a restart with "
                 f"persistence ({sizes.s14_during} missed each)")  # fmt: skip
        runs.append(Run("S14", "S14", title, ("mpx",), history.run_recovery, sizes.rounds))
    if "S15" in wanted:
        for key, n in (("S15-1", 1), ("S15-many", sizes.s15_channels)):
            what = "1 channel" if n == 1 else f"{n:,} channels"
            title = f"S15 hot path of recovering subscriptions: {what}, sync callback"
            func = partial(history.run_hot, channels=n)
            runs.append(Run(key, "S15", title, ("mpx",), func, sizes.tp_rounds))
    return runs


def build_plan(
    sizes: Sizes,
    scenarios: tuple[str, ...] = ALL_SCENARIOS,
    contenders: tuple[str, ...] = ALL_CONTENDERS,
    uvloop: bool = True,
    profile_dir: Path | None = None,
    s12_experiments: bool = False,
) -> list[Run]:
    """The runs for the chosen scenarios, contenders in the order limit, redis-py, redismpx."""
    runs: list[Run] = []
    wanted = set(scenarios)
    variants = _throughput(sizes)
    for scenario, key, title, kw in variants:
        if scenario in wanted:
            func = partial(throughput.run, **kw)
            runs.append(Run(key, scenario, title, contenders, func, sizes.tp_rounds))
    if "S5" in wanted:
        title = f"S5 churn: {sizes.s5_subs * sizes.s5_per_sub:,} channels added, then removed"
        runs.append(Run("S5", "S5", title, contenders, churn.run, sizes.rounds))
    if "S6" in wanted:
        title = f"S6 memory: {sizes.s6_subs:,} subs with 1-3 channels"
        runs.append(Run("S6", "S6", title, contenders, memory.run))
    if "S7" in wanted:
        title = f"S7 latency at {sizes.s7_rate:,} msgs/s"
        runs.append(Run("S7", "S7", title, contenders, latency.run, sizes.rounds))
    if "S8" in wanted:
        title = f"S8 recovery of {sizes.s8_subs * sizes.s8_per_sub:,} channels"
        runs.append(Run("S8", "S8", title, contenders, recovery.run, sizes.rounds))
    if "S9" in wanted:
        for axis, what in (("channels", "channels"), ("subs", "subscriptions on 1 channel")):
            title = f"S9 scaling: {what} {sizes.s9_sizes[0]:,}..{sizes.s9_sizes[-1]:,}"
            runs.append(Run(f"S9-{axis}", "S9", title, contenders, partial(scaling.run, axis=axis)))
    if "S10" in wanted and "mpx" in contenders:
        n, msgs = cluster.QUICK_SIZE if sizes == QUICK else cluster.FULL_SIZE
        title = f"S10 cluster: {n:,} channels on 3 shards vs 1 standalone server (redismpx)"
        func = partial(cluster.run, channels=n, messages=msgs)
        runs.append(Run("S10", "S10", title, ("mpx",), func, sizes.tp_rounds))
    s11_title = f"S11 publish: {sizes.s11_publishers:,} concurrent publisher tasks"
    if "S11" in wanted:
        runs.append(Run("S11", "S11", s11_title, contenders, publish.run, sizes.tp_rounds))
    if uvloop:
        uv = tuple(c for c in contenders if c in UVLOOP_CONTENDERS)
        for scenario, key, title, kw in variants:
            if scenario in wanted and uv:
                func = partial(throughput.run, use_uvloop=True, **kw)
                runs.append(
                    Run(f"{key}-uvloop", scenario, f"{title} (uvloop)", uv, func, sizes.tp_rounds)
                )
        if "S11" in wanted:
            # All three: the bar is against redis-py, which runs under uvloop as well.
            func = partial(publish.run, use_uvloop=True)
            title = f"{s11_title} (uvloop)"
            runs.append(Run("S11-uvloop", "S11", title, contenders, func, sizes.tp_rounds))
    if "mpx" in contenders:
        runs += _history(sizes, wanted)
    if "S12" in wanted:
        # Last: the longest set-up (1,000 WebSocket connections per run), and its own loops.
        runs += _s12(sizes, contenders, uvloop, profile_dir, s12_experiments)
    return runs
