"""Recipe: multiplexers' ``stats()`` as OpenTelemetry metrics (see docs/observability.md).

Only ``opentelemetry-api`` is imported by the recipe; the app sets up its SDK and exporter as
usual. Run this file to see the metrics of a throwaway server's multiplexer, read with the
SDK's in-memory reader (``pip install opentelemetry-sdk``)::

    python examples/otel_metrics.py

tests/integration/test_otel_recipe.py runs the recipe against a real server, and checks that
docs/observability.md shows the code between the two ``recipe`` marks below, unchanged.
"""

from __future__ import annotations

# -- recipe: start
import threading
import time
import weakref
from collections.abc import Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Meter, Observation

from redismpx import Multiplexer, State

# stats() key -> (unit, description). Counters only grow; the others go up and down.
COUNTERS = {
    "messages_received": ("{message}", "Pub/Sub messages read from Redis"),
    "messages_dispatched": ("{message}", "Deliveries handed to subscriptions"),
    "dropped": ("{message}", "Messages dropped by overflow policies"),
    "callback_errors": ("{error}", "Exceptions raised by subscription callbacks"),
    "connects": ("{connection}", "Pub/Sub connections established"),
    "reconnects": ("{connection}", "Pub/Sub connections lost"),
    "published": ("{message}", "Publishes Redis answered"),
}
UP_DOWN = {
    "subscriptions": ("{subscription}", "Open subscriptions"),
    "channels": ("{channel}", "Distinct channels wanted"),
    "patterns": ("{pattern}", "Distinct patterns wanted"),
    "shard_channels": ("{channel}", "Distinct shard channels wanted"),
}


class RedisMPXMetrics:
    """Observable instruments reading ``stats()`` of every multiplexer added, at most once
    per ``max_age`` seconds (one read serves every instrument of a collection).

    Create one per meter: instruments are registered once, multiplexers are added to it.
    Multiplexers are held weakly: one the app dropped stops being reported.
    """

    def __init__(self, meter: Meter | None = None, max_age: float = 1.0) -> None:
        meter = meter or metrics.get_meter("redismpx")
        self._max_age = max_age
        self._lock = threading.Lock()  # readers may collect in a thread of their own
        self._mpxs: dict[str, weakref.ref[Multiplexer]] = {}
        self._read_at = -float("inf")
        self._snapshot: list[tuple[dict[str, str], dict[str, Any]]] = []
        for key, (unit, doc) in COUNTERS.items():
            meter.create_observable_counter(
                f"redismpx.{key}", [self._reader(key)], unit=unit, description=doc
            )
        for key, (unit, doc) in UP_DOWN.items():
            meter.create_observable_up_down_counter(
                f"redismpx.{key}", [self._reader(key)], unit=unit, description=doc
            )
        meter.create_observable_gauge(
            "redismpx.up", [self._up], unit="1", description="1 while connected to Redis"
        )
        meter.create_observable_gauge(
            "redismpx.connection_state",
            [self._states],
            unit="1",
            description="1 for the current state (attribute redismpx.state), 0 for the others",
        )

    def add(self, mpx: Multiplexer, name: str = "default") -> None:
        """Report ``mpx`` with the attribute ``redismpx.multiplexer=name``."""
        with self._lock:
            self._mpxs[name] = weakref.ref(mpx)
            self._read_at = -float("inf")

    def remove(self, name: str) -> None:
        with self._lock:
            self._mpxs.pop(name, None)
            self._read_at = -float("inf")

    def _stats(self) -> list[tuple[dict[str, str], dict[str, Any]]]:
        with self._lock:
            if time.monotonic() - self._read_at >= self._max_age:
                snapshot = []
                for name, ref in list(self._mpxs.items()):
                    mpx = ref()
                    if mpx is None:  # garbage-collected: forget it
                        del self._mpxs[name]
                        continue
                    try:
                        stats = mpx.stats()
                    except RuntimeError:  # changed under a read from another thread
                        continue  # skipped this time; read at the next collection
                    snapshot.append(({"redismpx.multiplexer": name}, stats))
                self._snapshot, self._read_at = snapshot, time.monotonic()
            return self._snapshot

    def _reader(self, key: str) -> Any:
        def observe(options: CallbackOptions) -> Iterable[Observation]:
            for attributes, stats in self._stats():
                value = stats.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    yield Observation(value, attributes)

        return observe

    def _up(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, stats in self._stats():
            yield Observation(int(stats["state"] == State.CONNECTED), attributes)

    def _states(self, options: CallbackOptions) -> Iterable[Observation]:
        for attributes, stats in self._stats():
            for state in State:
                yield Observation(
                    int(stats["state"] == state), {**attributes, "redismpx.state": state.value}
                )


# -- recipe: end


async def main() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

    from redismpx.server import RedisServer

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    observed = RedisMPXMetrics(provider.get_meter("redismpx"))
    async with RedisServer() as server, Multiplexer(server.url) as mpx:
        observed.add(mpx)
        await mpx.new_channel_subscription(lambda channel, data: None).add("news")
        await mpx.publish("news", "hello")
        await mpx.ping()
        data = reader.get_metrics_data()
        assert data is not None
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        if isinstance(point, NumberDataPoint):
                            print(metric.name, dict(point.attributes or {}), point.value)
    provider.shutdown()


if __name__ == "__main__":
    import asyncio

    asyncio.run(main())
