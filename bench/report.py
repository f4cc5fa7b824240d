"""Turn raw results into the figures table (console and ``results.md``) and ``scaling.png``.

Each figure shows the three contenders, redismpx's ratio to the limit and to redis-py, and,
where the project set one, the target and PASS/FAIL. Bars never change the exit code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.contenders import LABELS
from bench.plan import Run
from bench.runner import Results, short

RETAINED_SLACK = 64 * 1024  # bytes: tracemalloc noise allowed over the limit's own retention
FLAT_GROWTH = 1.5


@dataclass(frozen=True)
class Figure:
    name: str
    field: str
    fmt: Callable[[float], str]
    higher_better: bool
    target: str = ""  # text shown in the table
    check: Callable[[dict[str, float]], bool] | None = None  # values by contender -> pass
    info: bool = False  # no bar: the result column says "info"


def _si(v: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= div:
            return f"{v / div:.2f}{suffix}"
    return f"{v:.0f}"


def _f(digits: int) -> Callable[[float], str]:
    return lambda v: f"{v:,.{digits}f}"


def _x(v: float) -> str:
    return f"{v:.2f}x"


def _pct(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0%}"


def _kib(v: float) -> str:
    return f"{v / 1024:,.0f} KiB"


def _vs_limit(op: str, x: float) -> Callable[[dict[str, float]], bool]:
    if op == ">=":
        return lambda v: v["mpx"] >= x * v["limit"]
    return lambda v: v["mpx"] <= x * v["limit"]


def _vs_redispy(op: str, x: float) -> Callable[[dict[str, float]], bool]:
    if op == ">=":
        return lambda v: v["mpx"] >= x * v["redispy"]
    return lambda v: v["mpx"] <= x * v["redispy"]


def _retained(v: dict[str, float]) -> bool:
    return v["mpx"] <= max(v["limit"], 0.0) + RETAINED_SLACK


def _flat(v: dict[str, float]) -> bool:
    return v["mpx"] <= max(FLAT_GROWTH, 1.2 * v["limit"])


def _throughput_figures(bar: float | None) -> list[Figure]:
    target = f">= {bar}x limit" if bar else ""
    check = _vs_limit(">=", bar) if bar else None
    return [
        Figure("deliveries/s per CPU-s", "rate_cpu", _si, True, target, check),
        Figure("CPU s per 1M deliveries", "cpu_per_m", _f(3), False),
        Figure("deliveries/s wall", "rate_wall", _si, True),
    ]


THROUGHPUT_BARS = {
    "S1-sync": 0.6,
    "S1-async": 0.3,
    "S2": 0.9,
    "S3-sync": 0.6,
    "S3-async": 0.3,
    "S4": 0.9,
}


def figures_for(key: str) -> list[Figure]:
    base = key.removesuffix("-uvloop")
    if base in THROUGHPUT_BARS:
        return _throughput_figures(THROUGHPUT_BARS[base])
    if key == "S5":
        return [
            Figure("add+remove ops/s", "ops", _si, True, ">= 0.5x limit", _vs_limit(">=", 0.5)),
            Figure("add ops/s", "add_ops", _si, True),
            Figure("remove ops/s", "remove_ops", _si, True),
            Figure("CPU s (add+remove)", "cpu_s", _f(3), False),
        ]
    if key == "S6":
        return [
            Figure("RSS bytes/sub", "rss_per_sub", _f(0), False, "<= 1.3x limit",
                   _vs_limit("<=", 1.3)),
            Figure("tracemalloc bytes/sub", "tracemalloc_per_sub", _f(0), False),
            Figure("RSS kept after close", "rss_retained", _kib, False),
            Figure("tracemalloc kept after close", "tracemalloc_retained", _kib, False,
                   "<= limit's + 64 KiB", _retained),
        ]  # fmt: skip
    if key == "S7":
        return [
            Figure("p50 us", "p50", _f(1), False, "<= 1.15x limit", _vs_limit("<=", 1.15)),
            Figure("p99 us", "p99", _f(1), False, "<= redis-py",
                   lambda v: v["mpx"] <= v["redispy"]),
            Figure("p99.9 us", "p999", _f(1), False),
        ]  # fmt: skip
    if key == "S8":
        return [
            Figure("ms to all active", "all_active_ms", _f(1), False, "<= 2x limit",
                   _vs_limit("<=", 2.0)),
            Figure("ms to messages flowing", "flowing_ms", _f(1), False, "<= 2x limit",
                   _vs_limit("<=", 2.0)),
        ]  # fmt: skip
    if key == "S10":
        return [
            Figure("deliveries/s per CPU-s, standalone", "standalone_rate_cpu", _si, True),
            Figure("deliveries/s per CPU-s, cluster", "cluster_rate_cpu", _si, True),
            Figure("cluster/standalone per CPU-s", "ratio_rate_cpu", _x, True,
                   "no bar (ideal ~1x)", info=True),
            Figure("deliveries/s wall, standalone", "standalone_rate_wall", _si, True),
            Figure("deliveries/s wall, cluster", "cluster_rate_wall", _si, True),
            Figure("cluster/standalone wall", "ratio_rate_wall", _x, True,
                   "no bar (2 cores)", info=True),
            Figure("server CPU s per 1M msgs, standalone", "standalone_server_cpu_per_m",
                   _f(3), False),
            Figure("server CPU s per 1M msgs, cluster (3 nodes)", "cluster_server_cpu_per_m",
                   _f(3), False),
            Figure("busiest cluster node's share of server CPU", "cluster_busiest_share",
                   _pct, False, "no bar (33% = even)", info=True),
            Figure("publish msgs/s (1 publisher), standalone", "standalone_publish_rate", _si,
                   True),
            Figure("publish msgs/s (1 publisher), cluster", "cluster_publish_rate", _si, True),
        ]  # fmt: skip
    if base == "S11":
        return [
            Figure("publishes/s wall", "rate", _si, True, ">= 2x redis-py",
                   _vs_redispy(">=", 2.0)),
            Figure("client CPU us per publish", "cpu_us", _f(2), False),
            Figure("server CPU us per publish", "server_cpu_us", _f(2), False),
            Figure("connections (server's count)", "connections", _f(0), False),
        ]  # fmt: skip
    if key in ("S13", "S14") or key.startswith("S15-"):
        return _history_figures(key)
    if key.startswith("S9-"):
        return [
            Figure("cost growth (max/first)", "growth", _f(2), False,
                   f"flat: <= {FLAT_GROWTH} or 1.2x limit's", _flat),
        ]  # fmt: skip
    return []


HOT_PATH_BAR = 0.95  # S15: redismpx/limit with recovery within 5% of it without (issue 14)


def _history_figures(key: str) -> list[Figure]:
    """S13-S15: redismpx against itself; each ratio is taken within one round."""
    if key == "S13":
        return [
            Figure("publishes/s wall, plain", "plain_rate", _si, True),
            Figure("publishes/s wall, with history", "history_rate", _si, True),
            Figure("history/plain publishes/s", "ratio_rate", _x, True, "no bar", info=True),
            Figure("client CPU us per publish, plain", "plain_cpu_us", _f(2), False),
            Figure("client CPU us per publish, with history", "history_cpu_us", _f(2), False),
            Figure("server CPU us per publish, plain", "plain_server_cpu_us", _f(2), False),
            Figure("server CPU us per publish, with history", "history_server_cpu_us", _f(2),
                   False),
            Figure("server command us (usec_per_call), PUBLISH", "plain_cmd_us", _f(2), False),
            Figure("server command us (usec_per_call), EVALSHA", "history_cmd_us", _f(2), False),
            Figure("history/plain server command us", "ratio_cmd_us", _x, False, "no bar",
                   info=True),
            Figure("server used_memory per 1,000 retained 100-byte msgs", "mem_per_1000", _kib,
                   False),
            Figure("MEMORY USAGE of one history per 1,000 msgs", "mem_keys_per_1000", _kib,
                   False),
        ]  # fmt: skip
    if key == "S14":
        return [
            Figure("ms from restart to PING answered (AOF loaded)", "ready_ms", _f(1), False),
            Figure("ms from restart to all names active", "all_active_ms", _f(1), False),
            Figure("ms from restart to the first channel caught up", "first_caught_up_ms",
                   _f(1), False),
            Figure("ms from restart to every channel caught up", "caught_up_ms", _f(1), False),
            Figure("plain subscriptions: ms from restart to every on_activation",
                   "plain_caught_up_ms", _f(1), False),
            Figure("recovering/plain time to every channel back", "ratio_caught_up", _x, False,
                   "no bar", info=True),
            Figure("ms from all active to every channel caught up", "active_to_caught_up_ms",
                   _f(1), False),
            Figure("EVALSHA calls", "evalsha", _f(0), False),
            Figure("EVALSHA failed (NOSCRIPT)", "evalsha_failed", _f(0), False),
            Figure("EVAL calls (after NOSCRIPT)", "eval", _f(0), False),
            Figure("history reads (library's count)", "history_reads", _f(0), False),
            Figure("command connection writes (round trips)", "command_writes", _f(0), False),
            Figure("subscriber CPU ms, kill to caught up", "client_cpu_ms", _f(0), False),
            Figure("server CPU ms, restart to caught up", "server_cpu_ms", _f(0), False),
            Figure("plain subscriptions: subscriber CPU ms", "plain_client_cpu_ms", _f(0), False),
            Figure("messages lost (a gap fails the run)", "lost", _f(0), False, "0",
                   lambda v: v["mpx"] == 0),
            Figure("plain subscriptions: messages lost (expected: all missed)", "plain_lost",
                   _f(0), False),
        ]  # fmt: skip
    figures = [
        Figure(f"deliveries/s per CPU-s, {variant}", f"{variant}_rate_cpu", _si, True)
        for variant in ("limit-plain", "plain", "limit-recover", "recover", "plain-sub+history",
                        "recover+plain-pub")
    ]  # fmt: skip
    figures += [
        Figure("plain: redismpx/limit per CPU-s", "plain_vs_limit", _x, True, "no bar (S1/S3)",
               info=True),
        Figure("recover: redismpx/limit per CPU-s", "recover_vs_limit", _x, True, "no bar",
               info=True),
        Figure("hot-path ratio with recovery: recover mpx/limit / plain mpx/limit",
               "hot_path_ratio", _x, True, f">= {HOT_PATH_BAR}x",
               lambda v: v["mpx"] >= HOT_PATH_BAR),
        Figure("limit's CPU per delivery, recover/plain", "limit_recover_cost", _x, False,
               "no bar (2 frames per msg)", info=True),
        Figure("recover/plain per CPU-s", "recover_ratio", _x, True, "no bar", info=True),
        Figure("plain-sub+history/plain per CPU-s", "plain-sub+history_ratio", _x, True,
               "no bar (ideal 1x)", info=True),
        Figure("recover+plain-pub/plain per CPU-s", "recover+plain-pub_ratio", _x, True,
               "no bar", info=True),
    ]  # fmt: skip
    return figures


@dataclass
class Row:
    title: str
    figure: str
    cells: dict[str, str]
    vs_limit: str
    vs_redispy: str
    target: str
    verdict: str


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0 or math.isnan(a) or math.isnan(b):
        return ""
    return f"{a / b:.2f}x"


# S12: redismpx's variants against the limit and against stock broadcaster (the bars), with
# the limit in the table's limit column and stock broadcaster in its redis-py column.
S12_MPX = ("mpx-callback", "mpx-iterator", "mpx-broadcaster", "mpx-eager", "mpx-batched")
S12_BAR_LIMIT = 0.8
S12_BAR_BROADCASTER = 3.0


def _cell(r: dict[str, Any] | None, field: str, fmt: Callable[[float], str]) -> str:
    if r is None:
        return "not run"
    if "error" in r:
        return "FAILED"
    return fmt(float(r[field]))


def _value(r: dict[str, Any] | None, field: str) -> float | None:
    return None if r is None or "error" in r else float(r[field])


def _s12_rows(run: Run, per: dict[str, dict[str, Any]]) -> list[Row]:
    """One row per redismpx variant: deliveries per server CPU-second, both bars."""
    rows = []
    barred = run.key != "S12-burst"
    limit, stock = per.get("limit"), per.get("broadcaster")
    for variant in S12_MPX:
        if variant not in run.contenders:
            continue
        r = per.get(variant)
        cells = {
            "limit": _cell(limit, "rate_cpu", _si) if "limit" in run.contenders else "-",
            "redispy": _cell(stock, "rate_cpu", _si) if "broadcaster" in run.contenders else "-",
            "mpx": _cell(r, "rate_cpu", _si),
        }
        mine, lim, sto = _value(r, "rate_cpu"), _value(limit, "rate_cpu"), _value(stock, "rate_cpu")
        target = verdict = ""
        if variant in ("mpx-eager", "mpx-batched"):
            verdict = "info" if mine is not None else ""
        elif barred:
            target = f">= {S12_BAR_LIMIT}x limit, >= {S12_BAR_BROADCASTER:g}x broadcaster"
            if mine is None or lim is None or sto is None:
                verdict = "n/a"
            else:
                ok = mine >= S12_BAR_LIMIT * lim and mine >= S12_BAR_BROADCASTER * sto
                verdict = "PASS" if ok else "FAIL"
            lost = _value(r, "lost")
            if lost:
                verdict = f"FAIL ({lost:,.0f} lost)"
        elif mine is not None:
            verdict = "info"
        rows.append(Row(f"{run.title}: {variant}",
                        "deliveries/s per server CPU-s (redis-py column: stock broadcaster)",
                        cells, _ratio(mine, lim), _ratio(mine, sto), target, verdict))  # fmt: skip
    return rows


def build_rows(plan: list[Run], results: Results) -> list[Row]:
    rows: list[Row] = []
    for run in plan:
        per = results.get(run.key, {})
        if run.scenario == "S12":
            rows += _s12_rows(run, per)
            continue
        for fig in figures_for(run.key):
            values: dict[str, float] = {}
            cells: dict[str, str] = {}
            for c in ("limit", "redispy", "mpx"):
                r = per.get(c)
                if c not in run.contenders:
                    cells[c] = "-"
                elif r is None:
                    cells[c] = "not run"
                elif "error" in r:
                    cells[c] = "FAILED"
                else:
                    values[c] = float(r[fig.field])
                    cells[c] = fig.fmt(values[c])
            verdict = "info" if fig.info and values else ""
            if fig.check is not None:
                try:
                    verdict = "PASS" if fig.check(values) else "FAIL"
                except KeyError:
                    verdict = "n/a"
            rows.append(
                Row(
                    run.title,
                    fig.name,
                    cells,
                    _ratio(values.get("mpx"), values.get("limit")),
                    _ratio(values.get("mpx"), values.get("redispy")),
                    fig.target,
                    verdict,
                )
            )
    return rows


HEADER = ("scenario", "figure", "limit", "redis-py", "redismpx", "mpx/limit", "mpx/redis-py",
          "target", "result")  # fmt: skip


def _cols(row: Row) -> list[str]:
    return [row.title, row.figure, row.cells["limit"], row.cells["redispy"], row.cells["mpx"],
            row.vs_limit, row.vs_redispy, row.target, row.verdict]  # fmt: skip


def console_table(rows: list[Row]) -> str:
    table = [list(HEADER), *(_cols(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    out = []
    for i, line in enumerate(table):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown_table(rows: list[Row]) -> str:
    out = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    last = None
    for r in rows:
        cols = _cols(r)
        if r.title == last:
            cols[0] = ""
        last = r.title
        if r.verdict:
            cols[-1] = f"**{r.verdict}**"
        out.append("| " + " | ".join(cols) + " |")
    return "\n".join(out)


def scaling_table(results: Results) -> str:
    out: list[str] = []
    for axis, what in (("channels", "channels (1 sub each)"), ("subs", "subs on 1 channel")):
        per = results.get(f"S9-{axis}", {})
        sizes = sorted({int(n) for r in per.values() for n in r.get("points", {})})
        if not sizes:
            continue
        out.append(f"CPU us per delivery vs number of {what}:\n")
        out.append("| contender | " + " | ".join(f"{n:,}" for n in sizes) + " |")
        out.append("|---|" + "---|" * len(sizes))
        for c, r in per.items():
            pts = {int(k): v for k, v in r.get("points", {}).items()}
            cells = [f"{pts[n]:.3f}" if n in pts else "" for n in sizes]
            out.append(f"| {LABELS[c]} | " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def plot_scaling(results: Results, path: Path) -> bool:
    """Draw S9 to ``path`` (matplotlib, Agg). False if there is nothing to draw."""
    axes_data = [(a, results.get(f"S9-{a}", {})) for a in ("channels", "subs")]
    if not any(per for _, per in axes_data):
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    titles = {
        "channels": ("channels (1 subscription each, uniform traffic)", "CPU us per message"),
        "subs": ("subscriptions on one channel", "CPU us per delivery"),
    }
    for ax, (axis, per) in zip(axes, axes_data, strict=True):
        for c, r in per.items():
            pts = sorted((int(k), v) for k, v in r.get("points", {}).items())
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=LABELS[c])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(titles[axis][0])
        ax.set_ylabel(titles[axis][1])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("S9 scaling: subscriber CPU per delivery (lower is better, flat is the goal)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


S12_HEADER = ("run", "variant", "deliveries/s per server CPU-s", "server CPU us/delivery",
              "of which kernel", "vs limit", "vs broadcaster", "deliveries/s wall", "lost",
              "out of order", "dropped (redismpx)")  # fmt: skip


def s12_lines(plan: list[Run], results: Results) -> list[list[str]]:
    """Every S12 variant of every S12 run, with its ratios to the limit and to broadcaster."""
    lines = []
    for run in plan:
        if run.scenario != "S12":
            continue
        per = results.get(run.key, {})
        lim = _value(per.get("limit"), "rate_cpu")
        sto = _value(per.get("broadcaster"), "rate_cpu")
        for variant in run.contenders:
            r = per.get(variant)
            if r is None or "error" in r:
                lines.append([run.key, variant, "FAILED" if r else "not run"] + [""] * 8)
                continue
            rate = float(r["rate_cpu"])
            lines.append([
                run.key, variant, _si(rate), f"{r['cpu_us']:.1f}", _pct(float(r["sys_share"])),
                _ratio(rate, lim), _ratio(rate, sto), _si(float(r["rate_wall"])),
                f"{r['lost']:,.0f}", f"{r['disorder']:,.0f}", f"{r['dropped']:,.0f}",
            ])  # fmt: skip
    return lines


def s12_console(plan: list[Run], results: Results) -> str:
    lines = s12_lines(plan, results)
    if not lines:
        return ""
    table = [list(S12_HEADER), *lines]
    widths = [max(len(line[i]) for line in table) for i in range(len(S12_HEADER))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                     for line in table)  # fmt: skip


def s12_markdown(plan: list[Run], results: Results) -> list[str]:
    """The S12 section of results.md: every variant, what uvicorn ran, the profiles if any."""
    from bench.scenarios.websocket import PROFILES

    lines = s12_lines(plan, results)
    if not lines:
        return []
    out = ["## S12 end to end", ""]
    impls = sorted({str(r["impl"]) for run in plan if run.scenario == "S12"
                    for r in results.get(run.key, {}).values() if "impl" in r})  # fmt: skip
    out += [f"Server: {impl}." for impl in impls] + [""]
    out += ["| " + " | ".join(S12_HEADER) + " |", "|" + "---|" * len(S12_HEADER)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    out.append("")
    if PROFILES:
        out += [
            "### Where the server's time goes (cProfile, own time per group, us per delivery;",
            "inflated by the profiler: compare shares, not totals)",
            "",
        ]
        for prof in PROFILES:
            mode = f"{prof['rate']:g} msgs/s" if prof["rate"] else "all at once"
            out.append(f"**{prof['variant']}** ({prof['loop']}, {mode}): "
                       f"{prof['total_us']:.1f} us per delivery in all")  # fmt: skip
            out.append("")
            out += ["| group | us/delivery | share |", "|---|---|---|"]
            for group, us in prof["groups"].items():
                out.append(f"| {group} | {us:.2f} | {us / prof['total_us']:.0%} |")
            out += ["", "| costliest functions (own time) | calls | us/delivery |", "|---|---|---|"]
            for func, calls, us in prof["top"]:
                out.append(f"| `{func}` | {calls:,} | {us:.2f} |")
            out.append("")
    return out


def details_table(plan: list[Run], results: Results) -> str:
    """Raw numbers per run, for checking stability (spread = (max-min)/median of reps)."""
    out = ["| run | contender | raw figures |", "|---|---|---|"]
    for run in plan:
        for c, r in results.get(run.key, {}).items():
            if "error" in r:
                text = "FAILED: " + r["error"].strip().splitlines()[-1][:160]
            else:
                text = ", ".join(f"{k}={short(v)}" for k, v in r.items() if k not in ("points",))
            out.append(f"| {run.key} | {LABELS[c]} | {text} |")
    return "\n".join(out)


def write_markdown(
    path: Path,
    meta: dict[str, str],
    plan: list[Run],
    results: Results,
    rows: list[Row],
    plotted: bool,
) -> None:
    parts = ["# redismpx benchmark results", ""]
    parts += ["| | |", "|---|---|"]
    parts += [f"| {k} | {v} |" for k, v in meta.items()]
    parts += [
        "",
        "Method and definitions: [README.md](README.md). Ratios are redismpx's value divided by",
        "the other contender's (for times, bytes and CPU lower is better; for rates higher).",
        "",
        "## Figures",
        "",
        markdown_table(rows),
        "",
    ]
    scaling = scaling_table(results)
    if scaling or plotted:
        parts += ["## S9 scaling", ""]
        if plotted:
            parts += ["![S9 scaling](scaling.png)", ""]
        parts += [scaling, ""]
    parts += s12_markdown(plan, results)
    parts += ["## Raw figures per run", "", details_table(plan, results), ""]
    path.write_text("\n".join(parts))
