"""redismpx.prometheus without a server: arguments, membership, and how stats() values of
every shape become samples (the exporting itself is tested against real servers in
tests/integration/test_prometheus.py)."""

from __future__ import annotations

import gc
import math
import subprocess
import sys
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from redismpx import ClusterMultiplexer, InvalidArgument, InvalidArgumentType, Multiplexer
from redismpx.prometheus import COUNTERS, GAUGES, RedisMPXCollector

# Constructed outside an event loop, a multiplexer does not connect (nothing to connect to).
URL = "redis://127.0.0.1:1"


def samples(collector: RedisMPXCollector) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, by (name, sorted labels)."""
    registry = CollectorRegistry()
    registry.register(collector)
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Fixed(Multiplexer):
    """A multiplexer whose stats() returns what a test gives (the shapes a future version or
    a subclass might produce), or raises it."""

    def __init__(self, stats: Any) -> None:
        super().__init__(URL)
        self.fixed = stats

    def stats(self) -> Any:
        if isinstance(self.fixed, BaseException):
            raise self.fixed
        return self.fixed


BASE: dict[str, Any] = {
    "state": "connected",
    **dict.fromkeys(GAUGES, 2),
    **dict.fromkeys(COUNTERS, 3),
    "last_error": None,
}


def one(name: str, **labels: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({"multiplexer": "default", **labels}.items()))


# -- arguments ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "a" * 65, "redis://:hunter2-secret@host:6379", "a b", "é", "x\n"]
)
def test_a_bad_name_is_refused_without_repeating_it(name: str) -> None:
    collector = RedisMPXCollector(registry=None)
    with pytest.raises(InvalidArgument) as info:
        collector.add(Multiplexer(URL), name)
    if name:
        assert name not in str(info.value)
    assert "hunter2" not in str(info.value)


def test_argument_types() -> None:
    collector = RedisMPXCollector(registry=None)
    with pytest.raises(InvalidArgumentType):
        collector.add("redis://localhost", "x")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        collector.add(Multiplexer(URL), 7)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        RedisMPXCollector(registry=object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentType):
        RedisMPXCollector(registry=None, max_multiplexers=2.5)  # type: ignore[arg-type]
    for bad in (0, -1, 100_001):
        with pytest.raises(InvalidArgument):
            RedisMPXCollector(registry=None, max_nodes=bad)
    for label in ("", "1x", "__x", "state", "node", "primary", "a-b"):
        with pytest.raises(InvalidArgument):
            RedisMPXCollector(registry=None, name_label=label)


def test_the_default_registry() -> None:
    collector = RedisMPXCollector()
    try:
        mpx = Multiplexer(URL)
        collector.add(mpx, "global")
        assert 'redismpx_up{multiplexer="global"} 0.0' in generate_latest(REGISTRY).decode()
    finally:
        collector.unregister()
    assert "redismpx_up" not in generate_latest(REGISTRY).decode()


def test_one_collector_per_registry() -> None:
    registry = CollectorRegistry()
    first = RedisMPXCollector(registry)
    with pytest.raises(InvalidArgument, match="one RedisMPXCollector per registry"):
        RedisMPXCollector(registry)
    first.unregister()
    first.unregister()  # idempotent
    RedisMPXCollector(registry)  # the place is free again


# -- membership ---------------------------------------------------------------------------------


def test_names_are_unique_among_open_multiplexers() -> None:
    collector = RedisMPXCollector(registry=None)
    a, b = Multiplexer(URL), Multiplexer(URL)
    collector.add(a)
    collector.add(a)  # the same one under its own name: nothing to do
    with pytest.raises(InvalidArgument, match="'default'"):
        collector.add(b)
    with pytest.raises(InvalidArgument, match="already exported as 'default'"):
        collector.add(a, "other")
    collector.add(b, "second")
    assert collector.multiplexers() == {"default": a, "second": b}
    a.close()
    c = Multiplexer(URL)
    collector.add(c)  # a closed multiplexer's name is free
    assert collector.multiplexers() == {"default": c, "second": b}
    collector.remove("second")
    collector.remove(c)
    assert collector.multiplexers() == {}
    with pytest.raises(InvalidArgument):
        collector.remove("second")
    with pytest.raises(InvalidArgument):
        collector.remove(b)


def test_a_forgotten_multiplexer_leaves_the_metrics() -> None:
    collector = RedisMPXCollector(registry=None)
    mpx = Multiplexer(URL)
    collector.add(mpx, "gone")
    assert one("redismpx_up", multiplexer="gone") in samples(collector)
    del mpx
    gc.collect()
    assert collector.multiplexers() == {}
    assert not any(labels for _, labels in samples(collector))


def test_max_multiplexers() -> None:
    collector = RedisMPXCollector(registry=None, max_multiplexers=2)
    kept = [Multiplexer(URL), Multiplexer(URL)]
    collector.add(kept[0], "a")
    collector.add(kept[1], "b")
    third = Multiplexer(URL)
    with pytest.raises(InvalidArgument, match="max_multiplexers"):
        collector.add(third, "c")
    kept[0].close()
    collector.add(third, "c")  # a closed one makes room
    assert set(collector.multiplexers()) == {"b", "c"}


def test_without_a_name_label_one_multiplexer() -> None:
    collector = RedisMPXCollector(registry=None, name_label=None)
    first = Multiplexer(URL)
    collector.add(first, "x")
    with pytest.raises(InvalidArgument, match="one multiplexer"):
        collector.add(Multiplexer(URL), "y")
    got = samples(collector)
    assert got[("redismpx_subscriptions", ())] == 0
    assert got[("redismpx_connection_state", (("state", "connecting"),))] == 1


def test_another_label_name() -> None:
    collector = RedisMPXCollector(registry=None, name_label="client")
    mpx = Multiplexer(URL)
    collector.add(mpx, "chat")
    assert ("redismpx_up", (("client", "chat"),)) in samples(collector)


# -- values of every shape ------------------------------------------------------------------------


def test_known_keys_become_counters_and_gauges() -> None:
    collector = RedisMPXCollector(registry=None)
    mpx = Fixed(dict(BASE))
    collector.add(mpx)
    got = samples(collector)
    for key in COUNTERS:
        assert got[one(f"redismpx_{key}_total")] == 3
    for key in GAUGES:
        assert got[one(f"redismpx_{key}")] == 2
    assert got[one("redismpx_up")] == 1
    assert got[one("redismpx_collector_errors_total")] == 0


@pytest.mark.parametrize(
    "value", ["many", None, True, math.nan, math.inf, -1, 10**400, [1], {"a": 1}]
)
def test_a_value_of_an_unexpected_type_is_left_out_and_counted(value: Any) -> None:
    collector = RedisMPXCollector(registry=None)
    mpx = Fixed({**BASE, "connects": value, "channels": value})
    collector.add(mpx)
    got = samples(collector)
    assert one("redismpx_connects_total") not in got
    if value == -1:  # a gauge may be negative, a counter not
        assert got[one("redismpx_channels")] == -1
    else:
        assert one("redismpx_channels") not in got
    assert got[one("redismpx_reconnects_total")] == 3  # the rest is exported
    assert got[one("redismpx_collector_errors_total")] == 1
    assert samples(collector)[one("redismpx_collector_errors_total")] == 2  # once per scrape


def test_unknown_keys_are_ignored_and_last_error_never_exported() -> None:
    collector = RedisMPXCollector(registry=None)
    mpx = Fixed({**BASE, "future_counter": 5, "last_error": "boom"})
    collector.add(mpx)
    text = generate_latest(_registry(collector)).decode()
    assert "future_counter" not in text
    assert "boom" not in text


def _registry(collector: RedisMPXCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


@pytest.mark.parametrize(
    "stats",
    [
        RuntimeError("dictionary changed size during iteration"),
        ValueError("broken"),
        "not a dict",
        None,
        {"state": 3},
        {"state": "connected", "sentinels": 3, "primary": "x" * 400},
        {"state": "connected", "node_stats": [1, 2]},
        {"state": "connected", "node_stats": {"a:1": 5, 7: {}}},
    ],
    ids=repr,
)
def test_a_scrape_never_raises(stats: Any) -> None:
    collector = RedisMPXCollector(registry=None)
    odd = Fixed(stats)  # the collector holds it weakly: keep it alive
    collector.add(odd, "odd")
    healthy = Fixed(dict(BASE))
    collector.add(healthy, "fine")
    got = samples(collector)
    assert got[one("redismpx_collector_errors_total", multiplexer="odd")] >= 1
    assert got[one("redismpx_collector_errors_total", multiplexer="fine")] == 0
    assert got[one("redismpx_connects_total", multiplexer="fine")] == 3


def test_a_concurrent_change_is_read_again() -> None:
    class Flaky(Fixed):
        calls = 0

        def stats(self) -> Any:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("dictionary changed size during iteration")
            return super().stats()

    collector = RedisMPXCollector(registry=None)
    mpx = Flaky(dict(BASE))
    collector.add(mpx)
    got = samples(collector)
    assert got[one("redismpx_connects_total")] == 3
    assert got[one("redismpx_collector_errors_total")] == 0
    assert mpx.calls == 2


def test_sentinel_and_node_keys() -> None:
    node = {
        "state": "connected",
        "channels": 1,
        "patterns": 2,
        "shard_channels": 3,
        "messages_received": 4,
        "connects": 5,
        "reconnects": 6,
    }
    stats = {
        **BASE,
        "primary": "127.0.0.1:7001",
        "sentinels": ["127.0.0.1:1", "127.0.0.1:2"],
        "node_stats": {"127.0.0.1:7000": node, "[::1]:7001": {**node, "state": "connecting"}},
    }
    collector = RedisMPXCollector(registry=None, max_nodes=1)
    mpx = Fixed(stats)
    collector.add(mpx)
    got = samples(collector)
    assert got[one("redismpx_sentinel_primary", primary="127.0.0.1:7001")] == 1
    assert got[one("redismpx_sentinels")] == 2
    at = {"node": "127.0.0.1:7000"}
    assert got[one("redismpx_node_up", **at)] == 1
    assert got[one("redismpx_node_shard_channels", **at)] == 3
    assert got[one("redismpx_node_reconnects_total", **at)] == 6
    # max_nodes=1: the second node is left out, and that is counted.
    assert not any(dict(labels).get("node") == "[::1]:7001" for _, labels in got)
    assert got[one("redismpx_collector_errors_total")] == 1

    wide = RedisMPXCollector(registry=None)
    wide.add(mpx)
    assert samples(wide)[one("redismpx_node_up", node="[::1]:7001")] == 0


def test_describe_names_every_family_collect_yields() -> None:
    collector = RedisMPXCollector(registry=None)
    mpx = Fixed(
        {
            **BASE,
            "primary": "h:1",
            "sentinels": [],
            "node_stats": {"h:2": {"state": "connected", "channels": 1, "connects": 1}},
        }
    )
    collector.add(mpx)
    described = {m.name for m in collector.describe()}
    collected = {m.name for m in collector.collect()}
    assert "redismpx_node_up" in collected
    assert collected <= described
    assert all(name.startswith("redismpx_") for name in described)


def test_every_stats_key_has_a_metric_type() -> None:
    """A key added to stats() must be given a metric type (or be exported otherwise, or be
    declared free text): this fails until it is."""
    known = {"state", "last_error", "primary", "sentinels", "node_stats", *COUNTERS, *GAUGES}
    plain = Multiplexer(URL)
    cluster = ClusterMultiplexer(URL)
    sentinel = Multiplexer("redis+sentinel://127.0.0.1:1/service")
    for mpx in (plain, cluster, sentinel):
        assert set(mpx.stats()) <= known, set(mpx.stats()) - known
        mpx.close()
        assert set(mpx.stats()) <= known


# -- the optional dependency --------------------------------------------------------------------


def run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_importing_redismpx_does_not_import_prometheus_client() -> None:
    done = run(
        "import sys, redismpx, redismpx.cluster, redismpx.asgi\n"
        "assert 'prometheus_client' not in sys.modules, 'imported'\n"
        "print('ok')"
    )
    assert done.stdout.strip() == "ok", done.stderr


def test_without_prometheus_client_the_error_names_the_extra() -> None:
    done = run(
        "import sys\n"
        "sys.modules['prometheus_client'] = None  # as if not installed\n"
        "try:\n"
        "    import redismpx.prometheus\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert "pip install 'redismpx[prometheus]'" in done.stdout, (done.stdout, done.stderr)
