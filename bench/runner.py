"""Execute a plan: every run for every contender, failures recorded rather than raised.

Runs with ``rounds > 1`` (the wall-clock scenarios S5, S7, S8) are repeated with the
contenders interleaved (limit, redis-py, redismpx, limit, ...), so that a burst of outside load
hits everyone alike; each figure is then the median over the rounds.
"""

from __future__ import annotations

import statistics
import time
import traceback
from typing import Any

from bench.contenders import LABELS
from bench.plan import Run
from bench.scenarios.common import Env

Results = dict[str, dict[str, dict[str, Any]]]  # run key -> contender -> figures or {"error"}


def short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _median_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, first in rounds[0].items():
        if isinstance(first, int | float) and not isinstance(first, bool):
            out[key] = statistics.median(float(r[key]) for r in rounds)
        else:
            out[key] = first
    if len(rounds) > 1:
        out["rounds"] = len(rounds)
    return out


def execute(plan: list[Run], env: Env) -> tuple[Results, list[str]]:
    """Run everything; returns the results and a text per failed run."""
    results: Results = {}
    failures: list[str] = []
    for run in plan:
        collected: dict[str, list[dict[str, Any]]] = {c: [] for c in run.contenders}
        failed: set[str] = set()
        for _ in range(run.rounds):
            for contender in run.contenders:
                if contender in failed:
                    continue
                t0 = time.monotonic()
                try:
                    figures = run.func(env, contender)
                except Exception as exc:
                    text = "".join(traceback.format_exception(exc))
                    results.setdefault(run.key, {})[contender] = {"error": text}
                    failures.append(f"{run.key} [{LABELS[contender]}]:\n{text}")
                    failed.add(contender)
                    env.log(f"{run.key} {LABELS[contender]}: FAILED ({exc.__class__.__name__})")
                    continue
                collected[contender].append(figures)
                shown = ", ".join(f"{k}={short(v)}" for k, v in figures.items() if k != "points")
                env.log(f"{run.key} {LABELS[contender]} ({time.monotonic() - t0:.1f}s): {shown}")
        for contender, rounds in collected.items():
            if contender not in failed and rounds:
                results.setdefault(run.key, {})[contender] = _median_figures(rounds)
    return results, failures
