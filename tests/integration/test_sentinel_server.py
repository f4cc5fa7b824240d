"""Tests of redismpx.server.RedisSentinel: real sentinel deployments started, failed over,
killed and restarted (run with ``-s`` to see the measured timings)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.sentinel

from redismpx.errors import ServerError
from redismpx.server import RedisSentinel, RedisServer, SentinelNode, server_version
from redismpx.server.standalone import _LIVE

SentinelFactory = Callable[..., RedisSentinel]
#: A SIGKILLed primary must be replaced within this many seconds (measured: about 2 s).
PROMOTION_BOUND = 10.0


def _label(binary: str) -> str:
    name, version = server_version(binary)
    return f"{name} {'.'.join(map(str, version))}"


def _role(node: RedisServer) -> str:
    return str(node.command("ROLE")[0].decode())


def _receive(pubsub: Any, timeout: float = 5.0) -> dict[str, Any]:
    """The next message (not a subscription confirmation) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.1)
        if message is not None:
            return dict(message)
    raise TimeoutError(f"no message within {timeout:g} s")


def test_the_sentinels_agree_on_the_primary(sentinel: RedisSentinel) -> None:
    primary = sentinel.primary
    assert _role(primary) == "master"
    named = {sentinel.primary_address(s) for s in sentinel.sentinels}
    assert named == {("127.0.0.1", primary.port)}
    assert [_role(r) for r in sentinel.replicas] == ["slave"]
    ports = ",".join(f"127.0.0.1:{s.port}" for s in sentinel.sentinels)
    assert sentinel.url == f"redis+sentinel://{ports}/mymaster"
    assert sentinel.sentinel_addresses == [("127.0.0.1", s.port) for s in sentinel.sentinels]
    for node in sentinel.sentinels:
        assert isinstance(node, SentinelNode)
        assert node.command("ROLE")[0] == b"sentinel"
        assert len(node.command("SENTINEL", "SENTINELS", "mymaster")) == 2
        assert len(sentinel.sentinel_command(node, "REPLICAS", "mymaster")) == 1
    # every process is registered, so kill_all_servers would reap it
    assert all(n.pid in _LIVE for n in [*sentinel.data_nodes, *sentinel.sentinels])


def test_publish_on_the_primary_reaches_subscribers(sentinel: RedisSentinel) -> None:
    primary, replica = sentinel.primary, sentinel.replicas[0]
    clients = [redis.Redis(port=n.port) for n in (primary, replica)]
    try:
        subs = [c.pubsub() for c in clients]
        for sub in subs:
            sub.subscribe("news")
            assert sub.get_message(timeout=5)["type"] == "subscribe"
        assert primary.command("PUBLISH", "news", "hello") == 1  # the primary's own subscriber
        for sub in subs:  # and PUBLISH is propagated to the replica's subscribers
            assert _receive(sub)["data"] == b"hello"
    finally:
        for client in clients:
            client.close()


def test_failover_moves_the_primary(sentinel: RedisSentinel, server_binary: str) -> None:
    old = sentinel.primary
    t0 = time.monotonic()
    new = sentinel.failover()
    t_failover = time.monotonic() - t0
    assert new is not old and _role(new) == "master"
    sentinel.wait_ready(timeout=30)  # the shared deployment is settled again
    t_settled = time.monotonic() - t0
    assert sentinel.primary is new
    assert _role(old) == "slave" and old.command("ROLE")[2] == new.port
    print(
        f"\n[{_label(server_binary)}] SENTINEL FAILOVER: new primary after {t_failover:.2f} s, "
        f"old primary a replica and all settled after {t_settled:.2f} s"
    )


def test_sigkill_of_the_primary_is_promoted_away(
    sentinel_factory: SentinelFactory, server_binary: str
) -> None:
    t0 = time.monotonic()
    deployment = sentinel_factory()
    t_start = time.monotonic() - t0
    old = deployment.primary
    old_address = deployment.primary_address()
    t0 = time.monotonic()
    old.kill()
    new = deployment.wait_primary_changed(old_address, timeout=PROMOTION_BOUND)
    t_promote = time.monotonic() - t0
    assert new is not old and _role(new) == "master"
    old.restart()  # comes back as a primary, the sentinels demote it
    deployment.wait_ready(timeout=30)
    t_back = time.monotonic() - t0
    assert deployment.primary is new  # every sentinel agrees by now
    assert _role(old) == "slave" and old.command("ROLE")[2] == new.port
    print(
        f"\n[{_label(server_binary)}] start {t_start:.2f} s; SIGKILL of the primary: "
        f"promotion after {t_promote:.2f} s (bound {PROMOTION_BOUND:g} s), old primary back "
        f"as a replica after {t_back:.2f} s"
    )


def test_a_killed_sentinel_rejoins(sentinel: RedisSentinel) -> None:
    node = sentinel.sentinels[0]
    myid = node.command("SENTINEL", "MYID")
    node.kill()
    try:
        with pytest.raises(TimeoutError, match="not running"):
            sentinel.wait_ready(timeout=0.1)
        assert sentinel.primary_address()  # the others still answer
    finally:
        node.restart()
    sentinel.wait_ready(timeout=30)  # it knows the primary, replica and sentinels again
    assert node.command("SENTINEL", "MYID") == myid  # as itself: its rewritten sentinel.conf
    with open(node.config_path) as conf:
        assert "sentinel known-sentinel mymaster" in conf.read()


@pytest.mark.parametrize(
    ("password", "sentinel_password"),
    [("data-pw", None), (None, "sentinel-pw"), ("data-pw", "sentinel-pw")],
    ids=["data", "sentinels", "both"],
)
def test_auth(
    sentinel_factory: SentinelFactory, password: str | None, sentinel_password: str | None
) -> None:
    deployment = sentinel_factory(password=password, sentinel_password=sentinel_password)
    unauthenticated = [
        RedisServer(n.binary, port=n.port, directory=n.directory)
        for n in (deployment.primary, deployment.sentinels[0])
    ]
    for plain, protected in zip(unauthenticated, (password, sentinel_password), strict=True):
        if protected is None:
            assert plain.command("PING") == b"PONG"
        else:
            with pytest.raises(ServerError, match="NOAUTH"):
                plain.command("PING")
    # a sentinel client with separate credentials for the sentinels and the data nodes
    client = redis.sentinel.Sentinel(
        deployment.sentinel_addresses,
        sentinel_kwargs={"password": sentinel_password},
        password=password,
    )
    primary = client.master_for("mymaster")
    try:
        assert primary.set("k", "v") and primary.get("k") == b"v"
        new = deployment.failover()  # the sentinels reach the data nodes with auth-pass
        deployment.wait_ready(timeout=30)  # and one another with their requirepass
        assert client.discover_master("mymaster") == ("127.0.0.1", new.port)
        assert new.command("GET", "k") == b"v"
    finally:
        primary.close()
        for s in client.sentinels:
            s.close()


async def test_async_context_manager(server_binary: str) -> None:
    async with RedisSentinel(server_binary, sentinels=1, service_name="svc") as deployment:
        assert deployment.url.endswith("/svc") and len(deployment.sentinels) == 1
        old = deployment.primary
        new = await deployment.afailover()
        assert new is not old
        await deployment.await_ready(timeout=30)
        nodes = [*deployment.data_nodes, *deployment.sentinels]
    assert not any(n.running for n in nodes)


def test_stop_reaps_everything(sentinel_factory: SentinelFactory) -> None:
    deployment = sentinel_factory(replicas=2, sentinels=1)
    assert len(deployment.replicas) == 2
    nodes = [*deployment.data_nodes, *deployment.sentinels]
    deployment.stop()
    assert not any(n.running for n in nodes)
    deployment.stop()  # idempotent
