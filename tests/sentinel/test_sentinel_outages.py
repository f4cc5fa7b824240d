"""The sentinels themselves failing: restarted, stale (naming a replica), all unreachable,
not knowing the service. The data path must not care while the primary is up, and without a
usable answer the multiplexer keeps retrying, readably, without a hot loop."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
from collections.abc import Callable

import pytest

from redismpx import Multiplexer, PublishTimeout
from redismpx.server import RedisSentinel, SentinelNode
from support.logwatch import LogWatch, watch_log
from support.sentinels import (
    Subscribers,
    address,
    check_delivery,
    check_failover,
    check_primary,
    everything_delivered,
    extra_sentinel,
    subscribers_on,
    unless_the_sentinels_fail_over,
    wait_watching,
    watchers,
)

pytestmark = pytest.mark.timeout(90)

MpxFactory = Callable[..., Multiplexer]
SentinelFactory = Callable[..., RedisSentinel]
SLOW_HEALTH = {"health_check_interval": 30.0, "health_check_timeout": 30.0}
# Quick retries, so a window of WINDOW seconds sees several attempts: full jitter under a
# 0.1 s cap is about 20 attempts a second; a hot loop would be thousands.
FAST_BACKOFF = {"backoff_base": 0.02, "backoff_cap": 0.1}
WINDOW = 1.0
MAX_ATTEMPTS = 100  # per WINDOW
NAMES = [f"ch:{i}" for i in range(5)]


def _no_primary(log: LogWatch) -> list[logging.LogRecord]:
    """The link's reports of a failed resolution (a WARNING the first time, then DEBUG)."""
    return [
        r
        for r in log.records
        if r.name == "redismpx.connection" and "no primary for" in r.getMessage()
    ]


async def _attempts_in_window(log: LogWatch) -> int:
    """How many resolutions failed during WINDOW seconds (a measurement window, not a wait
    for something to happen)."""
    before = len(_no_primary(log))
    await asyncio.sleep(WINDOW)
    return len(_no_primary(log)) - before


# -- restarts -----------------------------------------------------------------------------------


async def test_sentinel_restarts_leave_subscriptions_alone(
    shared: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    mpx = mpx_factory(shared.url, **SLOW_HEALTH, backoff_cap=0.2)
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    end_state = functools.partial(everything_delivered, mpx, shared, subs)
    async with unless_the_sentinels_fail_over(shared, end_state):
        primary = shared.primary
        await check_delivery(mpx, primary, subs)  # opens the command connection too
        # One sentinel: the one the watcher is on.
        watched = shared.sentinels[await wait_watching(shared)]
        await watched.akill()
        await watched.arestart()
        await wait_watching(shared)  # the watcher reconnected (elsewhere or there)
        await check_delivery(mpx, primary, subs)
        # All of them: the data path does not need them while the primary is up.
        for node in shared.sentinels:
            await node.akill()
        assert await watchers(shared) == []
        await check_delivery(mpx, primary, subs)
        assert mpx.state.value == "connected"
        for node in shared.sentinels:
            await node.arestart()
        await wait_watching(shared)
        await shared.await_ready(timeout=30)
        subs.check_rounds(0)
        assert mpx.stats()["connects"] == 1
        assert mpx.stats()["publish_connects"] == 1
        # A later failover is still followed at once, through the re-established watcher.
        loop = asyncio.get_running_loop()
        issued = loop.time()
        new = await shared.afailover()
        await check_failover(mpx, shared, new, subs)
        moved = max(story.complete_at[1] for story in subs.stories) - issued
        assert moved < 5.0, f"reactivated {moved:.2f} s after SENTINEL FAILOVER"
        assert all(e.startswith("failover: the primary") for e in subs.disconnect_errors())


# -- a stale sentinel ---------------------------------------------------------------------------


async def test_a_stale_sentinel_naming_a_replica_is_skipped(
    sentinel_factory: SentinelFactory, mpx_factory: MpxFactory, server_binary: str
) -> None:
    deployment = sentinel_factory()
    primary, replica = deployment.primary, deployment.replicas[0]
    # A sentinel of its own monitoring the replica under the same name: it answers with the
    # replica. (Slow to judge anything down: it never acts during the test.)
    stale_node = SentinelNode(
        server_binary,
        config=[
            f"sentinel monitor mymaster 127.0.0.1 {replica.port} 1",
            "sentinel down-after-milliseconds mymaster 600000",
        ],
    )
    with extra_sentinel(stale_node) as stale:
        assert deployment.primary_address(stale) == ("127.0.0.1", replica.port)
        hosts = ",".join(address(n) for n in [stale, *deployment.sentinels])
        with watch_log() as log:
            mpx = mpx_factory(f"redis+sentinel://{hosts}/mymaster", **SLOW_HEALTH)
            subs = Subscribers(mpx, NAMES)
            await subs.active()
            await check_primary(mpx, deployment, primary, subs)
            await check_delivery(mpx, primary, subs)
            subs.check_rounds(0)
            assert mpx.stats()["connects"] == 1
        assert "ROLE" not in log.text  # a skipped stale answer is not worth a warning
        await mpx.aclose()

        # Given only the stale sentinel, the multiplexer learns the others from it (SENTINEL
        # SENTINELS: the stale one heard of them through the replica) and still gets there.
        learner = mpx_factory(f"redis+sentinel://{address(stale)}/mymaster", **SLOW_HEALTH)
        learner_subs = Subscribers(learner, NAMES)
        await learner_subs.active()
        await check_primary(learner, deployment, primary, learner_subs)
        assert set(learner.stats()["sentinels"]) >= {address(n) for n in deployment.sentinels}
        await learner.aclose()

        # Only stale answers (the real sentinels down): never subscribe to the replica; retry
        # and say why.
        for node in deployment.sentinels:
            await node.akill()
        with watch_log() as log:
            only = mpx_factory(
                f"redis+sentinel://{address(stale)}/mymaster",
                client_name="rmpx-stale-only",
                **FAST_BACKOFF,
            )
            only_subs = Subscribers(only, NAMES)
            await log.wait_until(lambda: bool(_no_primary(log)), timeout=10)
            roles_before = _role_calls(replica)
            attempts = await _attempts_in_window(log)
            assert 2 <= attempts <= MAX_ATTEMPTS, attempts
            assert _role_calls(replica) - roles_before >= attempts  # each one asked ROLE
        assert only.state.value in ("connecting", "disconnected")  # never up
        error = str(only.last_error)
        assert re.search(
            rf"no primary for 'mymaster': the primary the sentinels name is not usable: "
            rf"127\.0\.0\.1:{replica.port} \(ROLE says (slave|replica)\)",
            error,
        ), error
        assert only.stats()["primary"] is None
        assert f"127.0.0.1:{replica.port}" not in repr(only)
        # Once per distinct error: the first attempt, before the stale sentinel told of the
        # others, failed differently.
        warnings = [r.getMessage() for r in _no_primary(log) if r.levelno == logging.WARNING]
        assert 1 <= len(warnings) == len(set(warnings)) <= 2, log.text
        assert await subscribers_on(replica, b"ch:0") == 0
        clients = await replica.acommand("CLIENT", "LIST", "TYPE", "pubsub")
        assert b"name=rmpx-stale-only" not in clients
        with pytest.raises(PublishTimeout) as caught:
            await only.publish("ch:0", "x", timeout=0.3)
        assert caught.value.sent is False
        assert "ROLE says" in str(caught.value), caught.value
        for story in only_subs.stories:  # never active, so never disconnected either
            assert story.rounds == [{}] and story.disconnects == [], story.summary()


def _role_calls(node: object) -> int:
    stats = node.info("commandstats")  # type: ignore[attr-defined]
    line = stats.get("cmdstat_role", "calls=0")
    return int(line.split("calls=", 1)[1].split(",", 1)[0])


# -- no usable sentinel -------------------------------------------------------------------------


async def test_every_sentinel_unreachable(shared: RedisSentinel, mpx_factory: MpxFactory) -> None:
    primary = shared.primary
    for node in shared.sentinels:
        await node.akill()
    with watch_log() as log:
        mpx = mpx_factory(shared.url, **FAST_BACKOFF)
        subs = Subscribers(mpx, NAMES)
        await log.wait_until(lambda: bool(_no_primary(log)), timeout=10)
        attempts = await _attempts_in_window(log)
        assert 2 <= attempts <= MAX_ATTEMPTS, attempts
        assert mpx.state.value in ("connecting", "disconnected")  # never up
        error = str(mpx.last_error)
        assert error.startswith("no primary for 'mymaster': no answer from sentinel "), error
        for node in shared.sentinels:
            assert f"{address(node)}: could not connect" in error, error
        with pytest.raises(PublishTimeout) as caught:
            await mpx.publish("ch:0", "x", timeout=0.3)
        assert caught.value.sent is False
        assert "no answer from sentinel" in str(caught.value)
        warnings = [r for r in _no_primary(log) if r.levelno == logging.WARNING]
        assert len(warnings) == 1, log.text  # once per distinct error, not per attempt
        # One sentinel back: connected, on the primary.
        await shared.sentinels[1].arestart()
        await mpx.wait_connected(10)
        await subs.active()
        await log.wait_until(lambda: log.count("connected to", logging.INFO) >= 1)
    await check_primary(mpx, shared, primary, subs)
    await check_delivery(mpx, primary, subs)
    subs.check_rounds(0)


async def test_the_watcher_logs_each_distinct_error_once(
    shared: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    """With every sentinel down the failover watcher keeps trying them in turn; like the link,
    it must say so once per distinct error, not at every attempt."""
    mpx = mpx_factory(shared.url, **FAST_BACKOFF)
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    await wait_watching(shared)
    with watch_log("redismpx.sentinel") as log:
        for node in shared.sentinels:
            await node.akill()
        await log.wait_until(lambda: log.count("could not connect") >= 1)
        await asyncio.sleep(WINDOW)  # a measurement window: several rounds of attempts
    warnings = [r.getMessage() for r in log.records if r.levelno >= logging.WARNING]
    repeated = collections.Counter(warnings).most_common(1)[0]
    assert repeated[1] == 1, (
        f"{len(warnings)} warnings in {WINDOW:g} s, {repeated[1]} times: {repeated[0]}"
    )
    subs.check_rounds(0)  # the data path never noticed


async def test_an_unknown_service_name(shared: RedisSentinel, mpx_factory: MpxFactory) -> None:
    hosts = ",".join(address(n) for n in shared.sentinels)
    asked = ", ".join(address(n) for n in shared.sentinels)
    with watch_log() as log:
        mpx = mpx_factory(f"redis+sentinel://{hosts}/nosuch", **FAST_BACKOFF)
        subs = Subscribers(mpx, NAMES)
        await log.wait_until(lambda: bool(_no_primary(log) or "nosuch" in log.text), timeout=10)
        await log.wait_until(lambda: mpx.last_error is not None, timeout=10)
        before = _connections(shared)
        await asyncio.sleep(WINDOW)  # a measurement window
        # Less the connections INFO itself opened; a resolution asks every sentinel over a
        # connection of its own.
        connections = _connections(shared) - before - len(shared.sentinels)
        assert 2 * len(shared.sentinels) <= connections <= len(shared.sentinels) * MAX_ATTEMPTS
        assert mpx.state.value in ("connecting", "disconnected")  # never up
        assert str(mpx.last_error) == f"no sentinel knows the service 'nosuch' (asked {asked})"
        warnings = [
            r for r in log.records if r.levelno == logging.WARNING and "nosuch" in r.getMessage()
        ]
        assert len(warnings) <= 1, log.text
        # The sentinels learn the service: connected.
        first = shared.sentinels[0]
        await first.acommand("SENTINEL", "MONITOR", "nosuch", "127.0.0.1", shared.primary.port, 2)
        try:
            await mpx.wait_connected(10)
            await subs.active()
            await check_primary(mpx, shared, shared.primary, subs)
        finally:
            await first.acommand("SENTINEL", "REMOVE", "nosuch")


def _connections(deployment: RedisSentinel) -> int:
    return sum(int(n.info("stats")["total_connections_received"]) for n in deployment.sentinels)
