"""The OpenTelemetry recipe of docs/observability.md (examples/otel_metrics.py), run with the
SDK's in-memory reader against a real server; and the page shows the recipe unchanged."""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint

from redismpx import Multiplexer, State
from support.recorder import Recorder

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "otel_metrics.py"

pytestmark = pytest.mark.timeout(60)


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_otel_metrics", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Points = dict[tuple[str, tuple[tuple[str, Any], ...]], float]


def read(reader: InMemoryMetricReader) -> tuple[Points, dict[str, str]]:
    """Every data point of a collection, by (instrument, sorted attributes); and each
    instrument's point type (Sum monotonic, Sum, Gauge)."""
    points: Points = {}
    kinds: dict[str, str] = {}
    data = reader.get_metrics_data()
    if data is None:  # no data point at all
        return points, kinds
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                kind = type(metric.data).__name__
                if getattr(metric.data, "is_monotonic", False):
                    kind += " monotonic"
                kinds[metric.name] = kind
                for point in metric.data.data_points:
                    assert isinstance(point, NumberDataPoint)
                    attrs = tuple(sorted((point.attributes or {}).items()))
                    points[metric.name, attrs] = point.value
    return points, kinds


def expected(recipe: ModuleType, stats: dict[str, Any], name: str) -> Points:
    me = ("redismpx.multiplexer", name)
    want: Points = {}
    for key in (*recipe.COUNTERS, *recipe.UP_DOWN):
        want[f"redismpx.{key}", (me,)] = stats[key]
    want["redismpx.up", (me,)] = int(stats["state"] == "connected")
    for state in State:
        attrs = (me, ("redismpx.state", state.value))
        want["redismpx.connection_state", attrs] = int(stats["state"] == state.value)
    return want


async def test_the_recipe_reports_stats(redis_server: Any) -> None:
    recipe = load()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        observed = recipe.RedisMPXMetrics(provider.get_meter("test"), max_age=0)
        async with Multiplexer(redis_server.url) as a, Multiplexer(redis_server.url) as b:
            observed.add(a)
            observed.add(b, "events")
            rec = Recorder()
            await a.new_channel_subscription(*rec.callbacks).add("x", "y")
            a.new_pattern_subscription("p:*", *rec.callbacks)
            await rec.activated("p:*")
            for channel in ("x", "y", "p:1"):
                await a.publish(channel, "m")
            await rec.received(3)
            await b.wait_connected(5)
            for _ in range(20):  # until stats() stays the same around a collection
                before = {"default": a.stats(), "events": b.stats()}
                points, kinds = read(reader)
                if before == {"default": a.stats(), "events": b.stats()}:
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("stats() kept changing")
            assert points == {
                **expected(recipe, before["default"], "default"),
                **expected(recipe, before["events"], "events"),
            }
            assert points["redismpx.messages_received", (("redismpx.multiplexer", "default"),)] == 3
            assert kinds["redismpx.connects"] == "Sum monotonic"
            assert kinds["redismpx.channels"] == "Sum"
            assert kinds["redismpx.up"] == "Gauge"

        # Closed: reported as such; dropped by the app: no longer reported.
        points, _ = read(reader)
        closed = (("redismpx.multiplexer", "events"), ("redismpx.state", "closed"))
        assert points["redismpx.connection_state", closed] == 1
        del a, b
        gc.collect()
        points, _ = read(reader)
        assert not [key for key in points if key[0] == "redismpx.up"]
    finally:
        provider.shutdown()


def test_the_docs_show_the_recipe() -> None:
    source = EXAMPLE.read_text(encoding="utf-8")
    recipe = re.search(r"# -- recipe: start\n(.*?)\n+# -- recipe: end", source, re.S)
    assert recipe is not None
    page = (ROOT / "docs" / "observability.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, re.S)
    assert recipe.group(1).strip() + "\n" in [block.lstrip() for block in blocks]
