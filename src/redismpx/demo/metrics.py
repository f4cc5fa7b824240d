"""Prometheus metrics of the demo: the public :class:`~redismpx.prometheus.RedisMPXCollector`
plus the demo's own gauges (``redismpx_demo_*``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from redismpx import Multiplexer
from redismpx.prometheus import RedisMPXCollector

_NAME = "default"


class MultiplexerCollector:
    """The app's multiplexer (``get_mpx()``, None outside the lifespan) through the public
    collector, without a name label (one multiplexer per app); ``extra`` adds demo gauges."""

    def __init__(
        self,
        get_mpx: Callable[[], Multiplexer | None],
        extra: Callable[[], dict[str, float]] | None = None,
    ) -> None:
        self._get_mpx = get_mpx
        self._extra = extra
        self._public = RedisMPXCollector(registry=None, name_label=None)

    def collect(self) -> Iterator[Metric]:
        self._follow(self._get_mpx())
        yield from self._public.collect()
        if self._extra is not None:
            for name, value in self._extra().items():
                yield GaugeMetricFamily(f"redismpx_demo_{name}", f"Demo: {name}", value=value)

    def _follow(self, mpx: Multiplexer | None) -> None:
        # The lifespan opens a new multiplexer each time the app starts: export that one.
        tracked = self._public.multiplexers().get(_NAME)
        if tracked is mpx:
            return
        if tracked is not None:
            self._public.remove(tracked)
        if mpx is not None:
            self._public.add(mpx, _NAME)


def metrics_registry(collector: MultiplexerCollector) -> CollectorRegistry:
    """A registry of its own (not the global one: several apps may live in one process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
