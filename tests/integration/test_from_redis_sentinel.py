"""``Multiplexer.from_redis`` on a redis-py Sentinel client follows the Sentinel set-up
(it used to read the pool's empty address and connect to localhost)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
import redis.asyncio.sentinel as aiosentinel

from redismpx import InvalidArgument, Multiplexer
from redismpx.server import RedisSentinel
from support.recorder import Recorder


async def test_from_redis_on_a_sentinel_client_subscribes_on_the_primary(
    sentinel: RedisSentinel,
) -> None:
    await sentinel.await_ready()
    manager = aiosentinel.Sentinel(sentinel.sentinel_addresses, db=1)
    client = manager.master_for(sentinel.service_name)
    async with Multiplexer.from_redis(client) as mpx:
        rec = Recorder()
        await asyncio.wait_for(mpx.new_channel_subscription(*rec.callbacks).add("x"), 10)
        primary = sentinel.primary
        assert mpx.stats()["primary"] == f"127.0.0.1:{primary.port}"
        clients = await primary.acommand("CLIENT", "LIST", "TYPE", "pubsub", decode=True)
        assert "db=1" in clients
        assert await client.publish("x", b"via redis-py") == 1
        await rec.received(1)
        assert rec.messages == [(b"x", b"via redis-py")]
    await client.aclose()


async def test_from_redis_passes_the_sentinels_credentials(
    sentinel_factory: Callable[..., RedisSentinel],
) -> None:
    deployment = sentinel_factory(password="data-secret", sentinel_password="sentinel-secret")
    manager = aiosentinel.Sentinel(
        deployment.sentinel_addresses,
        sentinel_kwargs={"password": "sentinel-secret"},
        password="data-secret",
    )
    client = manager.master_for(deployment.service_name)
    async with Multiplexer.from_redis(client) as mpx:
        await mpx.wait_connected(10)
        assert await mpx.publish("y", "z") == 0
        assert "secret" not in repr(mpx) and "secret" not in str(mpx.stats())
    await client.aclose()


def test_from_redis_refuses_a_replica_client() -> None:
    manager = aiosentinel.Sentinel([("127.0.0.1", 26379)])
    with pytest.raises(InvalidArgument, match="replica"):
        Multiplexer.from_redis(manager.slave_for("mymaster"))
