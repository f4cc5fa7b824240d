"""Failovers against real sentinels: planned (``SENTINEL FAILOVER``), the primary SIGKILLed,
the old primary coming back, and 10,000 names moving at once (``pytest -s`` prints the
measured times).

Each checks the contract of :func:`support.sentinels.check_failover`: one ``on_disconnect``
then one ``on_activation`` per name per failover, ``stats()["primary"]`` and ``repr`` naming the new
primary, and messages published afterwards (``mpx.publish`` and a plain client) arriving
exactly once.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import pytest

from redismpx import Multiplexer
from redismpx.server import RedisSentinel, RedisServer, server_version
from support.logwatch import watch_log
from support.sentinels import (
    Subscribers,
    address,
    check_delivery,
    check_failover,
    check_primary,
    everything_delivered,
    failover_via,
    role,
    sentinel_events,
    sentinel_log_sizes,
    unless_the_sentinels_fail_over,
    wait_watching,
)

pytestmark = pytest.mark.timeout(90)

MpxFactory = Callable[..., Multiplexer]
SentinelFactory = Callable[..., RedisSentinel]
# Large enough that only the +switch-master path can explain a move within seconds.
SLOW_HEALTH = {"health_check_interval": 30.0, "health_check_timeout": 30.0}
#: A planned failover must be followed within this many seconds of SENTINEL FAILOVER (the
#: health check alone would take 2 * 30 + 30 s; the sentinels demote the old primary and
#: kill its clients after about 2-3 s).
PLANNED_BOUND = 5.0
NAMES = [f"ch:{i}" for i in range(5)]


def _label(binary: str) -> str:
    name, version = server_version(binary)
    return f"{name} {'.'.join(map(str, version))}"


def _moved(old: str, new: str) -> str:
    return f"failover: the primary of 'mymaster' moved from {old} to {new}"


async def test_planned_failover_moves_at_once(
    shared: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    mpx = mpx_factory(shared.url, **SLOW_HEALTH)
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    end_state = functools.partial(everything_delivered, mpx, shared, subs)
    async with unless_the_sentinels_fail_over(shared, end_state):
        old = shared.primary
        await check_primary(mpx, shared, old, subs)
        await mpx.publish("warm-up", "x")  # the command connection is open on the old primary
        loop = asyncio.get_running_loop()
        issued = loop.time()
        new = await shared.afailover()
        await check_failover(mpx, shared, new, subs)
        moved = max(story.complete_at[1] for story in subs.stories) - issued
        assert moved < PLANNED_BOUND, f"reactivated {moved:.2f} s after SENTINEL FAILOVER"
        # The +switch-master path, not the old primary dropping its clients when demoted.
        assert set(subs.disconnect_errors()) == {_moved(address(old), address(new))}
        assert mpx.stats()["failovers"] == 1
        assert mpx.stats()["publish_connects"] == 2  # publish followed it too
        await shared.await_ready(timeout=30)  # the old primary is a replica now
        assert role(old) == "slave"
        await check_delivery(mpx, new, subs)  # and nothing moved again meanwhile
        subs.check_rounds(1)


async def test_failover_announced_by_a_sentinel_asked_later(
    sentinel_factory: SentinelFactory, mpx_factory: MpxFactory
) -> None:
    """The watcher's sentinel announces the failover before the sentinel asked first has
    heard of it (that one still names the old primary, which says ROLE master until the
    sentinels demote it): the multiplexer must still land on the new primary, once.

    A fresh deployment: on its first failover the leader announces +switch-master about
    0.2 s after the promotion, before the others learn of it (later failovers of the same
    deployment announce it ~0.75 s after, when every sentinel knows)."""
    deployment = sentinel_factory()
    mpx = mpx_factory(deployment.url, **SLOW_HEALTH)
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    # The watcher starts on the first sentinel; restart it so the watcher moves on, while
    # the first sentinel stays the one asked first.
    assert await wait_watching(deployment) == 0
    first = deployment.sentinels[0]
    await first.akill()
    await first.arestart()
    watching = await wait_watching(deployment)
    assert watching != 0
    await deployment.await_ready(timeout=30)
    end_state = functools.partial(everything_delivered, mpx, deployment, subs)
    async with unless_the_sentinels_fail_over(deployment, end_state):
        old = deployment.primary
        new = await failover_via(deployment, deployment.sentinels[watching])
        await check_failover(mpx, deployment, new, subs)
        await deployment.await_ready(timeout=30)  # the old primary demoted (its clients killed)
        await check_delivery(mpx, new, subs)
        await check_primary(mpx, deployment, new, subs)
        subs.check_rounds(1)
        assert set(subs.disconnect_errors()) == {_moved(address(old), address(new))}


async def test_sigkill_of_the_primary(
    sentinel_factory: SentinelFactory, mpx_factory: MpxFactory
) -> None:
    deployment = sentinel_factory()
    mpx = mpx_factory(deployment.url, **SLOW_HEALTH, backoff_cap=0.2)
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    old, replica = deployment.primary, deployment.replicas[0]
    await old.akill()
    await subs.channels.wait(lambda: len(subs.channels.disconnects) == 1, 5, "the disconnect")
    assert mpx.state.value in ("connecting", "disconnected")
    new = await asyncio.to_thread(deployment.wait_primary_changed, ("127.0.0.1", old.port))
    assert new is replica
    await check_failover(mpx, deployment, new, subs)
    assert mpx.stats()["primary"] == address(replica)


async def test_the_old_primary_comes_back_as_a_replica(
    sentinel_factory: SentinelFactory, mpx_factory: MpxFactory
) -> None:
    deployment = sentinel_factory()
    mpx = mpx_factory(deployment.url, **SLOW_HEALTH, backoff_cap=0.2)
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    old = deployment.primary
    await old.akill()
    new = await asyncio.to_thread(deployment.wait_primary_changed, ("127.0.0.1", old.port))
    await check_failover(mpx, deployment, new, subs)
    connects = mpx.stats()["connects"]
    logs = sentinel_log_sizes(deployment)
    with watch_log() as log:
        # Back with its first role, primary, until the sentinels make it a replica of the
        # new one (killing its clients then): nothing of ours may go to it meanwhile.
        await old.arestart()
        await check_delivery(mpx, new, subs)  # two primaries for a while: still the new one
        await deployment.await_ready(timeout=30)
        assert role(old) == "slave"
        await check_delivery(mpx, new, subs)
    events = sentinel_events(deployment, logs)
    if any("+try-failover" in line for line in events):
        # The sentinels started a failover of their own meanwhile (on a loaded machine the
        # new primary can miss their pings for down-after-milliseconds): following it is
        # right, so only the end state can be checked. Seen once in CI in about 60 runs.
        await everything_delivered(mpx, deployment, subs)
        return
    await check_primary(mpx, deployment, new, subs)
    try:
        subs.check_rounds(1)  # no extra disconnect, nothing moved back
    except AssertionError as exc:
        raise AssertionError(f"{exc}; the sentinels logged {events}") from None
    assert mpx.stats()["connects"] == connects, events
    assert "moved" not in log.text and "lost" not in log.text, (log.text, events)


N_MANY = 10_000


async def test_ten_thousand_names_follow_a_failover(
    shared: RedisSentinel, mpx_factory: MpxFactory, server_binary: str
) -> None:
    mpx = mpx_factory(shared.url, **SLOW_HEALTH)
    names = [f"many:{i}" for i in range(N_MANY)]
    subs = Subscribers(mpx, names)
    await subs.active(timeout=30)
    assert await subscribed_many(shared.primary) == N_MANY
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    issued = loop.time()
    new = await shared.afailover()
    returned = loop.time()
    await subs.active(1, timeout=60)
    switch = subs.channels.disconnects[0][0]
    done = max(story.complete_at[1] for story in subs.stories)
    await check_failover(mpx, shared, new, subs)
    assert await subscribed_many(new) == N_MANY
    assert time.monotonic() - t0 < 60  # generous: correctness, not timing
    print(
        f"\n[{_label(server_binary)}] {N_MANY} names + 1 pattern: SENTINEL FAILOVER -> "
        f"disconnect {switch - issued:.3f} s; disconnect -> all active {done - switch:.3f} s; "
        f"failover() returned -> all active {done - returned:+.3f} s"
    )


async def subscribed_many(node: RedisServer) -> int:
    """How many ``many:*`` channels ``node`` has a subscriber for."""
    return len(await node.acommand("PUBSUB", "CHANNELS", "many:*"))
