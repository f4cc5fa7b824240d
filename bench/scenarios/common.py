"""Pieces shared by the scenarios: the application callbacks, the run environment, statistics."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench.config import Sizes
from bench.procs import Publisher
from bench.server import Server, ServerBinary

CLOCK = time.CLOCK_MONOTONIC
CLK_TCK = os.sysconf("SC_CLK_TCK")


class Counter:
    """The application callback of the throughput scenarios: count, and signal the target."""

    __slots__ = ("done", "n", "target")

    def __init__(self) -> None:
        self.n = 0
        self.target = -1
        self.done: asyncio.Future[None] | None = None

    def arm(self, target: int) -> asyncio.Future[None]:
        self.n = 0
        self.target = target
        self.done = asyncio.get_running_loop().create_future()
        return self.done

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.n += 1
        if self.n == self.target and self.done is not None:
            self.done.set_result(None)

    async def on_message_async(self, channel: bytes, data: bytes) -> None:
        self.n += 1
        if self.n == self.target and self.done is not None:
            self.done.set_result(None)


class Stamps:
    """Records (send time, receive time) in ns from payloads stamped by the publisher."""

    __slots__ = ("pairs",)

    def __init__(self) -> None:
        self.pairs: list[tuple[int, int]] = []

    def on_message(
        self,
        channel: bytes,
        data: bytes,
        _now: Callable[[int], int] = time.clock_gettime_ns,
        _clock: int = CLOCK,
    ) -> None:
        self.pairs.append((int(data[:19]), _now(_clock)))


def noop(channel: bytes, data: bytes) -> None:
    """A callback for scenarios that deliver nothing."""


@dataclass
class Env:
    """What the orchestrator hands every scenario run."""

    binary: ServerBinary
    publisher: Publisher
    sizes: Sizes
    quick: bool
    log: Callable[[str], None]

    @contextmanager
    def server(self) -> Iterator[Server]:
        srv = Server(self.binary)
        try:
            yield srv.start()
        finally:
            srv.close()

    def timeout(self, full: float) -> float:
        return min(full, 15.0) if self.quick else full


def cpu_ticks(pid: int) -> int:
    """utime + stime of a process (a server's), in clock ticks (``CLK_TCK`` per second)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: list[float]) -> float:
    """(max - min) / median: how far repetitions disagree."""
    if len(values) < 2:
        return 0.0
    m = statistics.median(values)
    return (max(values) - min(values)) / m if m else 0.0


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q / 100.0 * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[k])


def summary(reps: list[dict[str, Any]], deliveries: int) -> dict[str, Any]:
    """Median over repetitions of one throughput measurement."""
    cpu = [r["cpu"] for r in reps]
    wall = [r["wall"] for r in reps]
    cpu_m = median(cpu)
    wall_m = median(wall)
    return {
        "deliveries": deliveries,
        "reps": len(reps),
        "cpu_s": cpu_m,
        "wall_s": wall_m,
        "rate_cpu": deliveries / cpu_m if cpu_m else float("nan"),
        "rate_wall": deliveries / wall_m if wall_m else float("nan"),
        "cpu_per_m": cpu_m / deliveries * 1e6,  # CPU s per 1M = CPU us per delivery
        "spread": spread(cpu),
    }
