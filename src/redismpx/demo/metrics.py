"""Prometheus metrics: a custom collector that reads ``Multiplexer.stats()`` at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from redismpx import Multiplexer, State

# stats() keys that only ever grow are counters (exported with a _total suffix).
COUNTERS = {
    "messages_received": "Pub/Sub messages received from Redis",
    "messages_dispatched": "Deliveries handed to subscriptions",
    "connects": "Connections established to Redis",
    "reconnects": "Connections lost and re-established",
    "dropped": "Messages dropped by full subscription buffers",
    "callback_errors": "Exceptions raised by subscription callbacks",
}
GAUGES = {
    "subscriptions": "Open subscriptions",
    "channels": "Channels subscribed in Redis",
    "patterns": "Patterns subscribed in Redis",
    "shard_channels": "Shard channels subscribed in Redis",
}


class MultiplexerCollector(Collector):
    """Exports ``mpx.stats()`` as ``redismpx_*`` metrics; numeric keys it does not know become
    gauges too, so new stats appear without a code change. ``extra`` adds demo gauges."""

    def __init__(
        self,
        get_mpx: Callable[[], Multiplexer | None],
        extra: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self._get_mpx = get_mpx
        self._extra = extra

    def collect(self) -> Iterator[Metric]:
        mpx = self._get_mpx()
        if mpx is not None:
            yield from _from_stats(mpx.stats())
        if self._extra is not None:
            for name, value in self._extra().items():
                yield GaugeMetricFamily(f"redismpx_demo_{name}", f"Demo: {name}", value=value)


def _from_stats(stats: dict[str, Any]) -> Iterator[Metric]:
    state = GaugeMetricFamily(
        "redismpx_connection_state", "1 for the multiplexer's current state", labels=["state"]
    )
    for candidate in State:
        state.add_metric([candidate.value], 1.0 if stats.get("state") == candidate.value else 0.0)
    yield state
    yield GaugeMetricFamily(
        "redismpx_up",
        "1 while connected to Redis",
        value=1.0 if stats.get("state") == State.CONNECTED.value else 0.0,
    )
    for key, value in stats.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key in COUNTERS:
            yield CounterMetricFamily(f"redismpx_{key}", COUNTERS[key], value=value)
        else:
            doc = GAUGES.get(key, f"Multiplexer statistic {key!r}")
            yield GaugeMetricFamily(f"redismpx_{key}", doc, value=value)


def metrics_registry(collector: MultiplexerCollector) -> CollectorRegistry:
    """A registry of its own (not the global one: several apps may live in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
