"""``publish()`` across a failover, and passwords: the data nodes' (``password``) and the
sentinels' (``sentinel_password``), right, missing or wrong; never shown anywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from redismpx import Multiplexer, PublishTimeout
from redismpx.server import RedisSentinel
from support.internals import router_of
from support.logwatch import watch_log
from support.sentinels import (
    Subscribers,
    address,
    check_delivery,
    check_failover,
    check_primary,
    until,
)

pytestmark = pytest.mark.timeout(90)

MpxFactory = Callable[..., Multiplexer]
SentinelFactory = Callable[..., RedisSentinel]
SLOW_HEALTH = {"health_check_interval": 30.0, "health_check_timeout": 30.0}
NAMES = [f"ch:{i}" for i in range(5)]
WAITING = 20  # publishes waiting for the new primary
SPREAD = 500  # publishes timing out a millisecond apart


async def test_publishes_wait_for_the_new_primary(
    sentinel_factory: SentinelFactory, mpx_factory: MpxFactory
) -> None:
    deployment = sentinel_factory()
    mpx = mpx_factory(deployment.url, **SLOW_HEALTH, backoff_cap=0.2)
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    assert await mpx.publish("ch:0", "before") == 1
    old = deployment.primary
    await old.akill()
    await subs.channels.wait(lambda: len(subs.channels.disconnects) == 1, 5, "the disconnect")
    commands = router_of(mpx).commands

    async def publish_side_down() -> bool:
        return commands.conn is None

    await until(publish_side_down, 5, "the publish connection to notice")
    # No primary now (the sentinels need ~2.6 s to promote): these wait for one...
    waiting = [
        asyncio.ensure_future(mpx.publish("ch:0", f"during-{i}", timeout=20))
        for i in range(WAITING)
    ]
    # ...and these give up first, having sent nothing.
    for i in range(3):
        with pytest.raises(PublishTimeout) as caught:
            await mpx.publish("ch:0", f"short-{i}", timeout=0.2)
        assert caught.value.sent is False
        assert "PUBLISH not sent: no connection to" in str(caught.value), caught.value
    assert not any(task.done() for task in waiting)
    new = await asyncio.to_thread(deployment.wait_primary_changed, ("127.0.0.1", old.port))
    receivers = await asyncio.gather(*waiting)
    assert mpx.stats()["published"] == 1 + WAITING  # each written once, the short ones never
    assert mpx.stats()["publish_connects"] == 2
    await check_failover(mpx, deployment, new, subs)  # later publishes arrive exactly once
    # Pub/Sub is at most once: a waiting publish may reach the new primary before the
    # subscriptions do (0 receivers); each one counted arrived once, the others not at all.
    for i, n in enumerate(receivers):
        message = (b"ch:0", f"during-{i}".encode())
        assert n in (0, 1)
        assert subs.channels.messages.count(message) == n, (message, n)
    assert not any(data.startswith(b"short-") for _, data in subs.channels.messages)
    print(f"\n{sum(receivers)} of {WAITING} waiting publishes reached the resubscribed link")


async def test_publishes_timing_out_unsent_say_sent_false(
    shared: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    """No primary reachable (every sentinel down): every publish times out without having been
    written, so every PublishTimeout must say ``sent=False``. The timeouts are spread a
    millisecond apart so that some expire in the loop turn where the retry's backoff sleep
    ends (the race this guards against)."""
    for node in shared.sentinels:
        await node.akill()
    mpx = mpx_factory(shared.url, backoff_base=0.02, backoff_cap=0.05)
    results = await asyncio.gather(
        *(mpx.publish("ch:0", f"m{i}", timeout=0.2 + i / 1000) for i in range(SPREAD)),
        return_exceptions=True,
    )
    timeouts = [r for r in results if isinstance(r, PublishTimeout)]
    assert len(timeouts) == SPREAD, [r for r in results if r not in timeouts][:3]
    wrong = [r for r in timeouts if r.sent]
    assert not wrong, f"{len(wrong)} of {SPREAD} never-written publishes say sent=True: {wrong[0]}"
    assert mpx.stats()["published"] == 0  # indeed none was written


# -- passwords ----------------------------------------------------------------------------------

DATA_PW = "data-Pw-7f3a9c"
SENTINEL_PW = "sentinel-Pw-1b8e2d"
APP_PW = "app-Pw-90c4aa"
WATCH_PW = "watch-Pw-3e71f0"
SECRETS = (DATA_PW, SENTINEL_PW, "wrong-Pw-55d0e1", APP_PW, WATCH_PW)


def _assert_no_secret(*texts: object) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in str(text), f"a password shows in: {text}"


@pytest.fixture
def protected(sentinel_factory: SentinelFactory) -> RedisSentinel:
    return sentinel_factory(password=DATA_PW, sentinel_password=SENTINEL_PW)


async def test_passwords_for_the_data_nodes_and_the_sentinels(
    protected: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    deployment = protected
    hosts = ",".join(address(n) for n in deployment.sentinels)
    with watch_log() as log:
        mpx = mpx_factory(
            deployment.url, password=DATA_PW, sentinel_password=SENTINEL_PW, **SLOW_HEALTH
        )
        subs = Subscribers(mpx, NAMES)
        await subs.active()
        old = deployment.primary
        await check_primary(mpx, deployment, old, subs)
        await check_delivery(mpx, old, subs, password=DATA_PW)
        # The watcher authenticates to the sentinels too: the failover is followed at once.
        new = await deployment.afailover()
        await check_failover(mpx, deployment, new, subs, password=DATA_PW)
        assert all(e.startswith("failover: the primary") for e in subs.disconnect_errors())
        # The data password in the URL works the same.
        in_url = mpx_factory(
            f"redis+sentinel://:{DATA_PW}@{hosts}/mymaster", sentinel_password=SENTINEL_PW
        )
        await in_url.wait_connected(10)
        assert await in_url.publish("ch:0", "from-url") == 1
        _assert_no_secret(repr(in_url), in_url.stats())
    _assert_no_secret(repr(mpx), mpx.stats(), log.text, *subs.disconnect_errors())


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        ({"password": DATA_PW}, "NOAUTH"),
        ({"password": DATA_PW, "sentinel_password": "wrong-Pw-55d0e1"}, "WRONGPASS"),
        ({"sentinel_password": SENTINEL_PW}, "NOAUTH"),
        ({"password": "wrong-Pw-55d0e1", "sentinel_password": SENTINEL_PW}, "WRONGPASS"),
    ],
    ids=["no-sentinel-password", "wrong-sentinel-password", "no-password", "wrong-password"],
)
async def test_missing_or_wrong_passwords_fail_readably(
    protected: RedisSentinel,
    mpx_factory: MpxFactory,
    keywords: dict[str, str],
    expected: str,
) -> None:
    deployment = protected
    primary = deployment.primary
    with watch_log() as log:
        mpx = mpx_factory(deployment.url, backoff_cap=0.1, **keywords)
        subs = Subscribers(mpx, NAMES)
        await log.wait_until(lambda: mpx.last_error is not None, timeout=10)
        with pytest.raises(PublishTimeout) as caught:
            await mpx.publish("ch:0", "x", timeout=0.3)
    assert mpx.state.value in ("connecting", "disconnected")  # never up
    error = str(mpx.last_error)
    assert error.startswith("no primary for 'mymaster': "), error
    assert expected in error, error
    if "sentinel_password" in keywords and keywords["sentinel_password"] == SENTINEL_PW:
        # The sentinels answered: the error names the primary the data password failed on.
        assert f"the primary the sentinels name is not usable: {address(primary)}" in error
    else:
        assert "no answer from sentinel " in error and address(deployment.sentinels[0]) in error
    assert caught.value.sent is False and expected in str(caught.value)
    warnings = [r for r in log.records if r.levelno >= 30 and r.name == "redismpx.connection"]
    assert len(warnings) == 1, log.text
    _assert_no_secret(repr(mpx), mpx.stats(), error, caught.value, log.text)
    assert all(story.rounds == [{}] for story in subs.stories)


async def test_acl_users_for_the_data_nodes_and_the_sentinels(
    protected: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    """``username``/``password`` for the data nodes and ``sentinel_username``/
    ``sentinel_password`` for the sentinels, as ACL users of their own."""
    deployment = protected
    for node in deployment.data_nodes:  # ACLs are not replicated: on every data node
        await node.acommand("ACL", "SETUSER", "app", "on", f">{APP_PW}", "~*", "&*", "+@all")
    for node in deployment.sentinels:
        await node.acommand("ACL", "SETUSER", "watch", "on", f">{WATCH_PW}", "&*", "+@all")
    with watch_log() as log:
        mpx = mpx_factory(
            deployment.url,
            username="app",
            password=APP_PW,
            sentinel_username="watch",
            sentinel_password=WATCH_PW,
            **SLOW_HEALTH,
        )
        subs = Subscribers(mpx, NAMES)
        await subs.active()
        clients = await deployment.primary.acommand("CLIENT", "LIST", "TYPE", "pubsub")
        assert b"name=rmpx-sentinel" in clients and b"user=app" in clients
        new = await deployment.afailover()
        await check_failover(mpx, deployment, new, subs, password=DATA_PW)
        assert all(e.startswith("failover: the primary") for e in subs.disconnect_errors())
    _assert_no_secret(repr(mpx), mpx.stats(), log.text)
