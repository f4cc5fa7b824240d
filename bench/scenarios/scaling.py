"""S9 scaling: CPU per delivery as the registry grows; it must stay flat.

Two axes, each point a fresh throughput run (pre-buffered drain, sync callback, see
:mod:`bench.scenarios.throughput`) with ``s9_deliveries`` deliveries:

* ``channels``: N channels with one subscription each, traffic round-robin over all N
  (N = 1 ... 100,000): does the cost per message depend on how many channels there are?
* ``subs``: N subscriptions on one channel (N = 1 ... 100,000): does the cost per delivery
  grow with the number of subscriptions? (At N = 1 it includes the per-message cost.)

*growth* = the worst cost at any size divided by the cost at the smallest size.
"""

from __future__ import annotations

from typing import Any

from bench.scenarios import throughput
from bench.scenarios.common import Env


def run(env: Env, contender: str, axis: str) -> dict[str, Any]:
    points: dict[int, float] = {}
    for n in env.sizes.s9_sizes:
        if axis == "channels":
            r = throughput.run(
                env, contender, layout="channels", channels=n, deliveries=env.sizes.s9_deliveries
            )
        else:
            r = throughput.run(
                env,
                contender,
                layout="channels",
                subs_per_channel=n,
                deliveries=env.sizes.s9_deliveries,
            )
        points[n] = r["cpu_per_m"]
    first = points[min(points)]
    return {"points": points, "growth": max(points.values()) / first}
