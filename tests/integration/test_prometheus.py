"""redismpx.prometheus against real servers: a standalone server, a cluster and Sentinel.

Every scrape is parsed with prometheus_client's own parsers (text and OpenMetrics), and its
samples are compared with ``stats()`` read around it.
"""

from __future__ import annotations

import asyncio
import gc
import secrets
import threading
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families

from redismpx import ClusterMultiplexer, InvalidArgument, Multiplexer, State
from redismpx.prometheus import COUNTERS, GAUGES, NODE_COUNTERS, NODE_GAUGES, RedisMPXCollector
from redismpx.server import RedisCluster, RedisSentinel
from support.clusters import names_on, slot_owners
from support.recorder import Recorder

pytestmark = pytest.mark.timeout(60)

Key = tuple[str, tuple[tuple[str, str], ...]]
LABELS = {"multiplexer", "state", "primary", "node"}  # every label the collector may use


def parse(text: str) -> dict[Key, float]:
    """The samples of a text exposition, by (sample name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def scrape(registry: CollectorRegistry) -> dict[Key, float]:
    text = generate_latest(registry).decode()
    # The OpenMetrics exposition parses too, and says the same.
    om = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in parse_om(generate_openmetrics(registry).decode())
        for s in family.samples
        if not s.name.endswith("_created")
    }
    samples = parse(text)
    assert om == samples
    return samples


def of(samples: dict[Key, float], name: str) -> dict[Key, float]:
    """The samples of the multiplexer exported as ``name``."""
    return {k: v for k, v in samples.items() if ("multiplexer", name) in k[1]}


def expected(stats: dict[str, Any], name: str) -> dict[Key, float]:
    """What the collector must export for one multiplexer with these stats, exactly."""
    me = ("multiplexer", name)
    want: dict[Key, float] = {
        ("redismpx_up", (me,)): float(stats["state"] == "connected"),
        ("redismpx_collector_errors_total", (me,)): 0.0,
    }
    for state in State:
        labels = (me, ("state", state.value))
        want["redismpx_connection_state", labels] = float(stats["state"] == state.value)
    for key, value in stats.items():
        if key in COUNTERS:
            want[f"redismpx_{key}_total", (me,)] = float(value)
        elif key in GAUGES:
            want[f"redismpx_{key}", (me,)] = float(value)
    if "sentinels" in stats:
        want["redismpx_sentinels", (me,)] = float(len(stats["sentinels"]))
    if stats.get("primary") is not None:
        want["redismpx_sentinel_primary", (me, ("primary", stats["primary"]))] = 1.0
    for node, values in stats.get("node_stats", {}).items():
        labels = (me, ("node", node))
        want["redismpx_node_up", labels] = float(values["state"] == "connected")
        for key in NODE_COUNTERS:
            want[f"redismpx_node_{key}_total", labels] = float(values[key])
        for key in NODE_GAUGES:
            want[f"redismpx_node_{key}", labels] = float(values[key])
    return want


async def matching_scrape(
    registry: CollectorRegistry, mpxs: dict[str, Multiplexer]
) -> dict[Key, float]:
    """A scrape taken while ``stats()`` stayed the same around it (a health-check PING or a
    topology read may land in between: then again), checked against those stats."""
    for _ in range(20):
        before = {name: m.stats() for name, m in mpxs.items()}
        samples = scrape(registry)
        if before == {name: m.stats() for name, m in mpxs.items()}:
            for name, stats in before.items():
                assert of(samples, name) == expected(stats, name)
            return samples
        await asyncio.sleep(0.05)  # something moved: let it settle, then read again
    raise AssertionError("stats() kept changing during 20 scrapes")


def label_names(samples: dict[Key, float]) -> set[str]:
    return {name for _, labels in samples for name, _ in labels}


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


async def traffic(mpx: Multiplexer, *, sharded: bool = False) -> Recorder:
    """Channels, a pattern and a promise subscription, messages through each, and a ping."""
    rec = Recorder()
    sub = mpx.new_channel_subscription(*rec.callbacks)
    await sub.add("a", "b", "c")
    mpx.new_pattern_subscription("p:*", *rec.callbacks)
    await rec.activated("p:*")
    prom = mpx.new_promise_subscription("answer:")
    await prom.wait_for_activation()
    for channel in ("a", "b", "c"):
        await mpx.publish(channel, "x", sharded=sharded)
    await mpx.publish("p:1", "y", sharded=False)
    await rec.received(4)
    await mpx.ping()
    return rec


# -- a standalone server ------------------------------------------------------------------------


async def test_the_values_are_those_of_stats(
    redis_server: Any, registry: CollectorRegistry
) -> None:
    collector = RedisMPXCollector(registry)
    async with Multiplexer(redis_server.url) as mpx:
        collector.add(mpx)
        await traffic(mpx)
        samples = await matching_scrape(registry, {"default": mpx})
        key = ("multiplexer", "default")
        assert samples["redismpx_messages_received_total", (key,)] >= 4
        assert samples["redismpx_channels", (key,)] == 3
        assert samples["redismpx_up", (key,)] == 1
        assert label_names(samples) == {"multiplexer", "state"}
        types = {
            f.name: f.type
            for f in text_string_to_metric_families(generate_latest(registry).decode())
        }
        assert types["redismpx_connects"] == "counter"
        assert types["redismpx_subscriptions"] == "gauge"
        assert types["redismpx_connection_state"] == "gauge"


async def test_the_series_do_not_grow_with_names(
    redis_server: Any, registry: CollectorRegistry
) -> None:
    collector = RedisMPXCollector(registry)
    async with Multiplexer(redis_server.url) as mpx:
        collector.add(mpx)
        sub = mpx.new_channel_subscription(*Recorder().callbacks)
        await sub.add("one")
        few = set(scrape(registry))
        await sub.add(*(f"room:{i}" for i in range(500)))
        rec = Recorder()
        for i in range(20):
            mpx.new_pattern_subscription(f"p{i}:*", *rec.callbacks)
        await rec.activated(*(f"p{i}:*" for i in range(20)))
        many = scrape(registry)
        assert set(many) == few
        assert len(many) == 19  # as docs/observability.md says
        assert many["redismpx_channels", (("multiplexer", "default"),)] == 501
        assert label_names(many) == {"multiplexer", "state"}


async def test_a_scrape_after_close(redis_server: Any, registry: CollectorRegistry) -> None:
    collector = RedisMPXCollector(registry)
    mpx = Multiplexer(redis_server.url)
    collector.add(mpx)
    await traffic(mpx)
    await mpx.aclose()
    samples = await matching_scrape(registry, {"default": mpx})
    me = ("multiplexer", "default")
    assert samples["redismpx_connection_state", (me, ("state", "closed"))] == 1
    assert samples["redismpx_up", (me,)] == 0
    assert samples["redismpx_messages_received_total", (me,)] >= 4  # final counts stay
    # A new multiplexer takes the closed one's name.
    async with Multiplexer(redis_server.url) as again:
        collector.add(again)
        await again.wait_connected(5)
        samples = await matching_scrape(registry, {"default": again})
        assert samples["redismpx_messages_received_total", (me,)] == 0
        collector.remove(again)
    assert of(scrape(registry), "default") == {}
    # Dropped by the app without remove(): gone from the metrics once collected.
    collector.add(mpx, "forgotten")
    assert of(scrape(registry), "forgotten")
    del mpx
    gc.collect()
    assert of(scrape(registry), "forgotten") == {}


async def test_two_multiplexers(redis_server: Any, registry: CollectorRegistry) -> None:
    collector = RedisMPXCollector(registry)
    async with Multiplexer(redis_server.url) as a, Multiplexer(redis_server.url) as b:
        collector.add(a)
        with pytest.raises(InvalidArgument, match="'default'"):
            collector.add(b)
        collector.add(b, "events")
        await traffic(a)
        await b.wait_connected(5)
        samples = await matching_scrape(registry, {"default": a, "events": b})
        assert samples["redismpx_channels", (("multiplexer", "default"),)] == 3
        assert samples["redismpx_channels", (("multiplexer", "events"),)] == 0
        assert set(collector.multiplexers()) == {"default", "events"}


async def test_no_secret_in_any_label_or_help_text(
    server_factory: Any, registry: CollectorRegistry
) -> None:
    password, wrong = secrets.token_hex(12), secrets.token_hex(12)
    srv = server_factory(password=password)
    assert password in srv.url
    collector = RedisMPXCollector(registry)
    bad_url = f"redis://:{wrong}@{srv.host}:{srv.port}"
    async with Multiplexer(srv.url) as good, Multiplexer(bad_url, backoff_cap=0.05) as bad:
        collector.add(good)
        collector.add(bad, "refused")
        await traffic(good)
        bad.new_channel_subscription(*Recorder().callbacks).add("x")
        async with asyncio.timeout(10):
            while bad.last_error is None:
                await asyncio.sleep(0.02)  # polls a property: no event exists for it
        texts = [generate_latest(registry).decode(), generate_openmetrics(registry).decode()]
        texts += [f"{m.name} {m.documentation}" for m in collector.describe()]
        for text in texts:
            for secret in (password, wrong):
                assert secret[:8] not in text
        assert scrape(registry)["redismpx_up", (("multiplexer", "refused"),)] == 0


# -- never raising into prometheus_client --------------------------------------------------------


async def test_scrapes_from_the_http_thread_while_the_loop_churns(
    redis_server: Any, registry: CollectorRegistry
) -> None:
    """prometheus_client's own HTTP server scrapes in its thread while the multiplexer, in
    the test's loop, subscribes, unsubscribes and receives."""
    collector = RedisMPXCollector(registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        async with Multiplexer(redis_server.url) as mpx:
            collector.add(mpx)
            rec = Recorder()
            sub = mpx.new_channel_subscription(*rec.callbacks)
            stop = asyncio.Event()

            async def churn() -> None:
                i = 0
                while not stop.is_set():
                    names = [f"c{i}:{j}" for j in range(50)]
                    sub.add(*names)
                    await mpx.publish("c0:0", "m")
                    sub.remove(*names[1:])
                    i += 1

            task = asyncio.create_task(churn())
            url = f"http://127.0.0.1:{server.server_port}/metrics"
            received: list[float] = []
            async with httpx.AsyncClient() as http:
                for _ in range(100):
                    reply = await http.get(url)
                    assert reply.status_code == 200
                    samples = parse(reply.text)
                    me = (("multiplexer", "default"),)
                    received.append(samples["redismpx_messages_received_total", me])
                    assert samples["redismpx_collector_errors_total", me] == 0
            stop.set()
            await task
            assert received == sorted(received) and received[-1] > 0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


async def test_a_multiplexer_of_another_loop(
    redis_server: Any, registry: CollectorRegistry
) -> None:
    """Scraped while its loop runs in another thread, and after that loop has ended."""
    collector = RedisMPXCollector(registry)
    made: list[Multiplexer] = []  # the multiplexer, made in the other loop; held strongly
    ready, done = threading.Event(), threading.Event()
    failures: list[BaseException] = []

    async def serve() -> None:
        mpx = Multiplexer(redis_server.url)
        made.append(mpx)
        collector.add(mpx, "threaded")
        rec = Recorder()
        await mpx.new_channel_subscription(*rec.callbacks).add("t")
        await mpx.publish("t", "hello")
        await rec.received(1)
        ready.set()
        await asyncio.to_thread(done.wait, 30)  # the loop stays alive meanwhile

    def run() -> None:
        try:
            asyncio.run(serve())  # ends without closing the multiplexer
        except BaseException as exc:
            failures.append(exc)
            ready.set()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert await asyncio.to_thread(ready.wait, 30)
        assert not failures
        me = ("multiplexer", "threaded")
        while_running = scrape(registry)
        assert while_running["redismpx_up", (me,)] == 1
        assert while_running["redismpx_messages_received_total", (me,)] == 1
    finally:
        done.set()
        await asyncio.to_thread(worker.join, 30)
    assert not failures
    mpx = made[0]
    after = await matching_scrape(registry, {"threaded": mpx})
    assert after["redismpx_connection_state", (me, ("state", "disconnected"))] == 1
    assert after["redismpx_messages_received_total", (me,)] == 1
    mpx.close()


# -- a cluster and Sentinel ------------------------------------------------------------------------


async def test_a_cluster(cluster: RedisCluster, registry: CollectorRegistry) -> None:
    collector = RedisMPXCollector(registry)
    owners = slot_owners(cluster)
    primaries = sorted({node for node in owners.values()}, key=lambda n: n.port)
    async with ClusterMultiplexer(cluster.url) as mpx:
        collector.add(mpx, "cluster")
        rec = Recorder()
        sub = mpx.new_channel_subscription(*rec.callbacks)
        names = [name for node in primaries for name in names_on(owners, node, "prom", 2)]
        await sub.add(*names)
        mpx.new_pattern_subscription("p:*", *rec.callbacks)
        await rec.activated("p:*")
        for name in names:
            await mpx.publish(name, "x")
        await mpx.publish("p:1", "y", sharded=False)
        await rec.received(len(names) + 1)
        samples = await matching_scrape(registry, {"cluster": mpx})
        me = (("multiplexer", "cluster"),)
        assert samples["redismpx_nodes", me] == len(primaries)
        assert samples["redismpx_shard_channels", me] == len(names)
        assert samples["redismpx_topology_refreshes_total", me] >= 1
        assert label_names(samples) <= {"multiplexer", "state", "node"}
        nodes = {dict(labels)["node"] for _, labels in samples if "node" in dict(labels)}
        if "node_stats" in mpx.stats():  # per-node series, one per primary in use
            assert nodes == {f"{n.host}:{n.port}" for n in primaries}
        else:
            assert nodes == set()
        assert len(samples) == 23 + 7 * len(nodes)  # as docs/observability.md says


async def test_sentinel(sentinel: RedisSentinel, registry: CollectorRegistry) -> None:
    await sentinel.await_ready(timeout=30)  # settled: an earlier test may have failed it over
    collector = RedisMPXCollector(registry)
    async with Multiplexer(sentinel.url) as mpx:
        collector.add(mpx, "ha")
        await traffic(mpx)
        samples = await matching_scrape(registry, {"ha": mpx})
        primary = sentinel.primary
        me = ("multiplexer", "ha")
        assert (
            samples[
                "redismpx_sentinel_primary", (me, ("primary", f"{primary.host}:{primary.port}"))
            ]
            == 1
        )
        assert samples["redismpx_sentinels", (me,)] == 3
        assert samples["redismpx_failovers_total", (me,)] == 0
        assert label_names(samples) == {"multiplexer", "state", "primary"}
        assert len(samples) == 22  # as docs/observability.md says
