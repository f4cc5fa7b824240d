"""``redismpx.channels.RedisMPXChannelLayer`` on real servers: the Django Channels layer API,
its configuration, its bounds and its event loops, beside channels_redis's
``RedisPubSubChannelLayer`` where the comparison says something.

The fault scenarios, measured against the stock layer, are in ``test_django_channels_faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

pytest.importorskip("channels")
channels_redis_pubsub = pytest.importorskip("channels_redis.pubsub")

from asgiref.sync import async_to_sync  # noqa: E402

from redismpx import InvalidArgument, InvalidArgumentType, SubscriptionClosed  # noqa: E402
from redismpx.channels import RedisMPXChannelLayer  # noqa: E402
from redismpx.server import RedisSentinel, RedisServer  # noqa: E402

pytestmark = pytest.mark.timeout(120)

KINDS = ("redismpx", "stock")
Stock = channels_redis_pubsub.RedisPubSubChannelLayer


def make_layer(kind: str, hosts: list[Any], **config: Any) -> Any:
    if kind == "redismpx":
        return RedisMPXChannelLayer(hosts=hosts, **config)
    return Stock(hosts=hosts, **config)


@pytest.fixture
async def layers() -> AsyncIterator[Callable[..., Any]]:
    """``layers(kind, hosts, **config)``: a layer, flushed after the test (in its loop)."""
    made: list[Any] = []

    def factory(kind: str, hosts: list[Any], **config: Any) -> Any:
        layer = make_layer(kind, hosts, **config)
        made.append(layer)
        return layer

    yield factory
    for layer in made:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await layer.flush()


async def receive(layer: Any, channel: str, timeout: float = 5.0) -> Any:
    async with asyncio.timeout(timeout):
        return await layer.receive(channel)


async def nothing_for(layer: Any, channel: str, seconds: float) -> None:
    """Assert that ``receive`` gets nothing within ``seconds`` (the receive is cancelled)."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(seconds):
            got = await layer.receive(channel)
            pytest.fail(f"unexpected message {got!r}")


async def numsub(server: RedisServer, name: str) -> int:
    reply = await server.acommand("PUBSUB", "NUMSUB", name)
    return int(reply[1])


async def until_numsub(server: RedisServer, name: str, count: int, timeout: float = 10.0) -> None:
    """Poll the server (no event exists for it) until ``count`` connections hold ``name``."""
    async with asyncio.timeout(timeout):
        while await numsub(server, name) != count:
            await asyncio.sleep(0.01)


# -- the layer API, on both layers -------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_send_receive_in_order(kind: str, redis_server: RedisServer, layers: Any) -> None:
    layer = layers(kind, [redis_server.url], capacity=1000)  # 200 wait before the reads
    other = layers(kind, [redis_server.url])  # another process, as far as Redis can tell
    channel = await layer.new_channel()
    assert channel.startswith("asgispecific.")
    for i in range(200):
        await other.send(channel, {"type": "chat.message", "n": i, "blob": b"\x00\xff"})
    got = [await receive(layer, channel) for _ in range(200)]
    assert [m["n"] for m in got] == list(range(200))
    assert got[0] == {"type": "chat.message", "n": 0, "blob": b"\x00\xff"}


@pytest.mark.parametrize("kind", KINDS)
async def test_groups(kind: str, redis_server: RedisServer, layers: Any) -> None:
    layer = layers(kind, [redis_server.url])
    sender = layers(kind, [redis_server.url])
    a, b, c = [await layer.new_channel() for _ in range(3)]
    for channel in (a, b, c):
        await layer.group_add("room", channel)
    await layer.group_add("room", a)  # twice: still one delivery
    await layer.group_discard("room", b)
    await layer.group_discard("room", "asgispecific.unknown")  # not a member: nothing
    await sender.group_send("room", {"type": "m", "n": 1})
    assert await receive(layer, a) == {"type": "m", "n": 1}
    assert await receive(layer, c) == {"type": "m", "n": 1}
    await nothing_for(layer, a, 0.3)
    await nothing_for(layer, b, 0.3)
    with pytest.raises(RuntimeError, match="in-process"):
        await layer.group_add("room", "asgispecific.not-made-here")


async def test_one_subscription_per_consumer_holds_its_groups(
    redis_server: RedisServer, layers: Any
) -> None:
    """A consumer's channel and groups are one subscription; Redis sees one SUBSCRIBE per
    name per process, whatever the number of members."""
    layer = layers("redismpx", [redis_server.url])
    consumers = [await layer.new_channel() for _ in range(50)]
    for channel in consumers:
        await layer.group_add("lobby", channel)
        await layer.group_add(f"own-{channel}", channel)
    stats = layer.stats()
    assert stats["consumers"] == 50
    (mpx,) = stats["multiplexers"]
    assert mpx["subscriptions"] == 50
    assert mpx["channels"] == 50 + 1 + 50  # own channels, the lobby, the own groups
    assert await numsub(redis_server, "asgi__group__lobby") == 1
    await layer.group_send("lobby", {"type": "hello"})
    for channel in consumers:
        assert await receive(layer, channel) == {"type": "hello"}


@pytest.mark.parametrize("direction", ["stock to redismpx", "redismpx to stock"])
@pytest.mark.parametrize(
    "config",
    [{}, {"serializer_format": "json"}, {"symmetric_encryption_keys": ["k2" * 16, "k1" * 16]}],
    ids=["msgpack", "json", "encrypted"],
)
async def test_wire_format_shared_with_channels_redis(
    direction: str, config: dict[str, Any], redis_server: RedisServer, layers: Any
) -> None:
    """A fleet can mix both layers: the same names, serialization and encryption."""
    kinds = ("stock", "redismpx") if direction == "stock to redismpx" else ("redismpx", "stock")
    sender = layers(kinds[0], [redis_server.url], **config)
    receiver = layers(kinds[1], [redis_server.url], **config)
    channel = await receiver.new_channel()
    await receiver.group_add("mixed", channel)
    await until_numsub(redis_server, "asgi__group__mixed", 1)  # the stock one may lag
    await sender.send(channel, {"type": "direct", "x": [1, 2.5, None, "é"]})
    await sender.group_send("mixed", {"type": "group"})
    assert await receive(receiver, channel) == {"type": "direct", "x": [1, 2.5, None, "é"]}
    assert await receive(receiver, channel) == {"type": "group"}
    ours = sender if kinds[0] == "redismpx" else receiver
    stock = receiver if ours is sender else sender
    message = {"a": True, "b": None, "c": {"d": []}}
    if "symmetric_encryption_keys" not in config:  # Fernet tokens are randomised
        assert ours.serialize(message) == stock.serialize(message)
    assert stock.deserialize(ours.serialize(message)) == message


async def test_key_rotation(redis_server: RedisServer, layers: Any) -> None:
    """The first key encrypts, every key decrypts (rotation without downtime)."""
    old = layers("redismpx", [redis_server.url], symmetric_encryption_keys=["old" * 11])
    new = layers("redismpx", [redis_server.url], symmetric_encryption_keys=["new" * 11, "old" * 11])
    channel = await new.new_channel()
    await old.send(channel, {"type": "from-old"})
    assert await receive(new, channel) == {"type": "from-old"}


async def test_a_bad_payload_is_skipped_and_logged(
    redis_server: RedisServer, layers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    layer = layers("redismpx", [redis_server.url], symmetric_encryption_keys=["k" * 32])
    channel = await layer.new_channel()
    await redis_server.acommand("PUBLISH", channel, b"not a Fernet token")
    await layer.send(channel, {"type": "fine"})
    with caplog.at_level(logging.ERROR, "redismpx.channels"):
        assert await receive(layer, channel) == {"type": "fine"}
    assert "cannot be deserialized" in caplog.text


# -- receive cancellation, and consumers that leave ----------------------------------------------


async def test_a_cancelled_receive_loses_nothing(redis_server: RedisServer, layers: Any) -> None:
    """A receive cancelled at the worst moment, after its message arrived and woke it but
    before it ran, leaves the message for the next receive."""
    layer = layers("redismpx", [redis_server.url])
    channel = await layer.new_channel()
    got = []
    for n in range(20):
        await nothing_for(layer, channel, 0.01)  # cancelled while waiting: nothing lost
        task = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0)  # it waits
        await redis_server.acommand("PUBLISH", channel, layer.serialize({"n": n}))
        await until_received(layer, n + 1)  # delivered to the inbox: the task is woken
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            got.append(await task)  # (it may have run first: then it returned it)
        if len(got) == n:
            got.append(await receive(layer, channel))
    assert [m["n"] for m in got] == list(range(20))


async def test_the_stock_layer_loses_what_follows_a_cancelled_receive(
    redis_server: RedisServer, layers: Any
) -> None:
    """channels_redis unsubscribes a channel when its receive is cancelled (and drops its
    queue): what is sent to it next is lost, although the channel is still the consumer's."""
    layer = layers("stock", [redis_server.url])
    channel = await layer.new_channel()
    await nothing_for(layer, channel, 0.05)
    await layer.send(channel, {"type": "lost"})
    await nothing_for(layer, channel, 0.5)


async def test_a_consumer_that_left_is_released_with_its_groups(
    redis_server: RedisServer, layers: Any
) -> None:
    """Django Channels cancels ``receive`` when a consumer ends: after ``receive_linger``
    the channel is unsubscribed, and so is every group it had not left (the stock layer
    keeps those subscribed for the life of the process)."""
    ours = layers("redismpx", [redis_server.url], receive_linger=0.2)
    stock = layers("stock", [redis_server.url], prefix="stock")
    for layer, prefix in ((ours, "asgi"), (stock, "stock")):
        channel = await layer.new_channel()
        await layer.group_add("left-behind", channel)
        await until_numsub(redis_server, f"{prefix}__group__left-behind", 1)
        await nothing_for(layer, channel, 0.05)  # the consumer ends
    await until_numsub(redis_server, "asgi__group__left-behind", 0)
    await until_numsub(redis_server, "asgispecific.", 0)
    assert ours.stats()["consumers"] == 0
    assert await numsub(redis_server, "stock__group__left-behind") == 1


async def test_a_receive_within_the_linger_keeps_the_channel(
    redis_server: RedisServer, layers: Any
) -> None:
    """``wait_for(receive(), t)`` in a loop: each timeout cancels a receive, and the next
    one, within ``receive_linger``, finds the channel and what arrived meanwhile."""
    # A linger long enough for a loaded machine to send and receive within it.
    layer = layers("redismpx", [redis_server.url], receive_linger=2.0)
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await nothing_for(layer, channel, 0.05)
    await layer.group_send("g", {"type": "kept"})
    assert await receive(layer, channel) == {"type": "kept"}
    await nothing_for(layer, channel, 2.5)  # longer than the linger: not released meanwhile
    await layer.group_send("g", {"type": "still"})
    assert await receive(layer, channel) == {"type": "still"}
    assert layer.stats()["consumers"] == 1


async def test_receive_on_a_channel_of_another_process(
    redis_server: RedisServer, layers: Any
) -> None:
    """A name not made by ``new_channel`` here is subscribed at its first ``receive``."""
    layer = layers("redismpx", [redis_server.url])
    task = asyncio.create_task(layer.receive("worker.jobs"))
    await until_numsub(redis_server, "worker.jobs", 1)
    await redis_server.acommand("PUBLISH", "worker.jobs", layer.serialize({"type": "job"}))
    async with asyncio.timeout(5):
        assert await task == {"type": "job"}


async def test_flush_wakes_receivers_and_the_layer_goes_on(
    redis_server: RedisServer, layers: Any
) -> None:
    layer = layers("redismpx", [redis_server.url])
    channel = await layer.new_channel()
    task = asyncio.create_task(layer.receive(channel))
    await asyncio.sleep(0)
    await layer.flush()
    with pytest.raises(SubscriptionClosed, match="flushed"):
        async with asyncio.timeout(5):
            await task
    assert await numsub(redis_server, channel) == 0
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "again"})
    assert await receive(layer, channel) == {"type": "again"}


# -- capacity ------------------------------------------------------------------------------------


async def until_received(layer: RedisMPXChannelLayer, count: int) -> None:
    async with asyncio.timeout(10):
        while layer.stats()["multiplexers"][0]["messages_received"] < count:
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("overflow", ["drop_oldest", "drop_newest"])
async def test_capacity_and_overflow(
    overflow: str, redis_server: RedisServer, layers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    layer = layers(
        "redismpx",
        [redis_server.url],
        capacity=10,
        channel_capacity={"asgibig.*": 1000},
        overflow=overflow,
        on_overflow="layer.overflow",
    )
    small = await layer.new_channel()
    big = await layer.new_channel("big.")
    with caplog.at_level(logging.WARNING, "redismpx.channels"):
        for n in range(50):
            await layer.send(small, {"type": "m", "n": n})
            await layer.send(big, {"type": "m", "n": n})
        await until_received(layer, 100)
    assert "dropped" in caplog.text
    got = [await receive(layer, small) for _ in range(11)]
    kept = list(range(40, 50)) if overflow == "drop_oldest" else list(range(10))
    messages = [m["n"] for m in got if m["type"] == "m"]
    hooks = [m for m in got if m["type"] == "layer.overflow"]
    assert messages == kept
    assert hooks == [{"type": "layer.overflow", "dropped": 40}]
    # the hook comes where the first drop happened: after the 10 kept by drop_newest, and
    # before the survivors of drop_oldest
    assert got.index(hooks[0]) == 0 if overflow == "drop_oldest" else 10
    await nothing_for(layer, small, 0.1)
    assert [(await receive(layer, big))["n"] for _ in range(50)] == list(range(50))
    assert layer.stats()["dropped"] == 40


async def test_the_stock_queues_grow_without_bound(
    redis_server: RedisServer, layers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """channels_redis #276/#384: a consumer that does not keep up holds everything."""
    stock = layers("stock", [redis_server.url], capacity=10)
    ours = layers("redismpx", [redis_server.url], capacity=10)
    queues = {}
    for layer in (stock, ours):
        channel = await layer.new_channel()
        await until_numsub(redis_server, channel, 1)
        for n in range(2000):
            await redis_server.acommand("PUBLISH", channel, layer.serialize({"n": n}))
        queues[layer] = channel
    await until_received(ours, 2000)
    stock_queue = stock._get_layer().channels[queues[stock]]
    async with asyncio.timeout(10):
        while stock_queue.qsize() < 2000:
            await asyncio.sleep(0.01)
    assert stock_queue.qsize() == 2000
    assert ours.stats()["dropped"] == 1990
    with capsys.disabled():
        print(
            "\n[channels] 2,000 messages to a consumer that does not read, capacity 10: "
            f"stock holds {stock_queue.qsize()}, redismpx holds 10 (dropped 1,990)"
        )


# -- hosts and configuration ----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["url", "tuple", "dict", "address dict", "unix"])
async def test_host_forms(form: str, server_factory: Any, layers: Any) -> None:
    server = server_factory(password="s3cret", unix_socket=True)
    host: Any = {
        "url": server.tcp_url + "/2",
        "tuple": None,
        "dict": {"host": server.host, "port": server.port, "password": "s3cret", "db": 2},
        "address dict": {
            "address": f"redis://{server.host}:{server.port}/2",
            "password": "s3cret",
            "socket_timeout": 5,  # redis-py tuning: ignored
            "retry_on_timeout": True,
        },
        "unix": server.url,
    }[form]
    if form == "tuple":
        server = server_factory()  # no password: a pair has nowhere to put one
        host = (server.host, server.port)
    layer = layers("redismpx", [host])
    channel = await layer.new_channel()
    await layer.send(channel, {"type": form})
    assert await receive(layer, channel) == {"type": form}


async def test_sentinel_forms(sentinel_factory: Callable[..., RedisSentinel], layers: Any) -> None:
    """channels_redis's Sentinel dict (sentinels, master_name, sentinel_kwargs, and the data
    nodes' password), and a ``redis+sentinel://`` URL."""
    deployment = sentinel_factory(password="data-pw", sentinel_password="sentinel-pw")
    as_dict = {
        "sentinels": deployment.sentinel_addresses,
        "master_name": deployment.service_name,
        "sentinel_kwargs": {"password": "sentinel-pw", "socket_timeout": 1},
        "password": "data-pw",
    }
    as_url = {
        "address": deployment.url.replace("://", "://:data-pw@"),
        "sentinel_password": "sentinel-pw",
    }
    ours = layers("redismpx", [as_dict])
    by_url = layers("redismpx", [as_url])
    stock = layers("stock", [as_dict])
    channel = await ours.new_channel()
    await by_url.send(channel, {"type": "by-url"})
    await stock.send(channel, {"type": "by-stock"})
    assert await receive(ours, channel) == {"type": "by-url"}
    assert await receive(ours, channel) == {"type": "by-stock"}


async def test_several_hosts_shard_as_channels_redis(server_factory: Any, layers: Any) -> None:
    """Names are spread over the hosts by channels_redis's hash: a consumer's channel and
    its groups may live on different servers, and both layers agree on where."""
    servers = [server_factory(), server_factory()]
    hosts = [s.url for s in servers]
    ours = layers("redismpx", hosts)
    stock = layers("stock", hosts)
    channels = [await ours.new_channel() for _ in range(16)]
    groups = [f"g{i}" for i in range(16)]
    for channel, group in zip(channels, groups, strict=True):
        await ours.group_add(group, channel)
    counts = [len(await s.acommand("PUBSUB", "CHANNELS")) for s in servers]
    assert sum(counts) == 32 and min(counts) > 0, counts  # spread over both
    for channel, group in zip(channels, groups, strict=True):
        await stock.send(channel, {"type": "direct"})
        await stock.group_send(group, {"type": "group"})
    for channel in channels:
        assert await receive(ours, channel) == {"type": "direct"}
        assert await receive(ours, channel) == {"type": "group"}


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ({"hosts": "redis://localhost"}, InvalidArgument, "list of Redis hosts"),
        ({"hosts": [42]}, InvalidArgumentType, "entry of hosts"),
        ({"hosts": ["http://localhost"]}, InvalidArgument, "scheme"),
        ({"hosts": [{"host": "h", "sockettimeout": 1}]}, InvalidArgumentType, "sockettimeout"),
        ({"hosts": [{"master_name": "m"}]}, InvalidArgument, "needs sentinels"),
        (
            {"hosts": [{"sentinels": [("h", 1)], "master_name": "m", "db": "x"}]},
            InvalidArgumentType,
            "db",
        ),
        ({"capacity": 0}, InvalidArgument, "capacity"),
        ({"channel_capacity": {"x*": "big"}}, InvalidArgumentType, "capacity"),
        ({"overflow": "close"}, InvalidArgument, "overflow"),
        ({"serializer_format": "xml"}, InvalidArgument, "serializer_format"),
        ({"symmetric_encryption_keys": "one-key"}, InvalidArgumentType, "list of keys"),
        ({"on_disconnect": 1}, InvalidArgumentType, "on_disconnect"),
        ({"receive_linger": 0}, InvalidArgument, "receive_linger"),
        ({"publish_timeout": -1}, InvalidArgument, "publish_timeout"),
        ({"capacityy": 10}, TypeError, "capacityy"),
    ],
)
def test_bad_config_is_refused_at_construction(
    config: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        RedisMPXChannelLayer(**config)


def test_no_password_in_errors_or_repr() -> None:
    layer = RedisMPXChannelLayer(hosts=["redis://:hunter2@localhost:6379/0"])
    assert "hunter2" not in repr(layer)
    for bad in (
        ["redis://:hunter2@localhost:notaport"],
        [{"address": "redis://:hunter2@localhost", "port": "x"}],
        [{"sentinels": [("h", 1)], "master_name": "m", "password": "hunter2", "db": "x"}],
    ):
        with pytest.raises(Exception) as info:
            RedisMPXChannelLayer(hosts=bad)
        assert "hunter2" not in str(info.value) and "hunter2" not in repr(info.value)


# -- event loops ---------------------------------------------------------------------------------


def connected_clients(server: RedisServer) -> int:
    return len(server.command("CLIENT", "LIST", decode=True).strip().splitlines()) - 1


def test_async_to_sync_from_sync_code(redis_server: RedisServer) -> None:
    """Sync code (a view, a Celery task) calls the layer through ``async_to_sync``: each call
    runs in a new event loop in a new thread. Each loop gets its own multiplexer, closed with
    the loop: no state, connection, thread or task is left behind."""
    layer = RedisMPXChannelLayer(hosts=[redis_server.url])
    baseline, threads = connected_clients(redis_server), threading.active_count()
    loop = asyncio.new_event_loop()
    try:
        channel = loop.run_until_complete(layer.new_channel())
        loop.run_until_complete(layer.group_add("sync", channel))
        for n in range(5):
            async_to_sync(layer.group_send)("sync", {"type": "m", "n": n})
            async_to_sync(layer.send, force_new_loop=True)(channel, {"type": "d", "n": n})
        assert list(layer._layers) == [loop]  # only the loop still open holds state
        got = [loop.run_until_complete(layer.receive(channel)) for _ in range(10)]
        assert sorted((m["type"], m["n"]) for m in got) == sorted(
            [("m", n) for n in range(5)] + [("d", n) for n in range(5)]
        )
        assert connected_clients(redis_server) == baseline + 1  # Pub/Sub (no publish here)
    finally:
        loop.close()
    assert layer._layers == {}
    assert connected_clients(redis_server) == baseline
    # asgiref's and the loops' executor threads end on their own, shortly after: bounded wait.
    deadline = time.monotonic() + 5
    while threading.active_count() > threads and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= threads, threading.enumerate()


def test_each_loop_gets_its_own_multiplexer_closed_with_it(redis_server: RedisServer) -> None:
    layer = RedisMPXChannelLayer(hosts=[redis_server.url])
    seen: list[Any] = []

    async def use() -> None:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "x"})
        assert await receive(layer, channel) == {"type": "x"}
        assert len(layer._layers) == 1
        seen.extend(m for m in layer._get_layer()._mpx if m is not None)

    baseline = connected_clients(redis_server)
    for _ in range(3):
        asyncio.run(use())
        assert layer._layers == {}
    assert len(set(map(id, seen))) == 3
    assert all(m.closed for m in seen)
    assert connected_clients(redis_server) == baseline
    gc.collect()
    # type(), not isinstance(): Django's lazy settings object would configure itself
    assert [t for t in gc.get_objects() if type(t) is asyncio.Task and not t.done()] == []


def test_no_error_is_logged_when_a_loop_ends(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """``asyncio.run`` cancels every task still running, the layer's multiplexer's too,
    before it closes the loop (when the layer closes that loop's multiplexer)."""
    layer = RedisMPXChannelLayer(hosts=[redis_server.url])

    async def use() -> None:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "x"})
        assert await receive(layer, channel) == {"type": "x"}

    with caplog.at_level(logging.ERROR):
        asyncio.run(use())
    assert [r.getMessage() for r in caplog.records] == []


async def test_close_releases_the_running_loops_state(
    redis_server: RedisServer, layers: Any
) -> None:
    layer = layers("redismpx", [redis_server.url])
    channel = await layer.new_channel()
    await layer.close_pools()
    assert layer._layers == {}
    assert await numsub(redis_server, channel) == 0
    channel = await layer.new_channel()  # usable again
    await layer.send(channel, {"type": "x"})
    assert await receive(layer, channel) == {"type": "x"}
    await layer.close()


def test_subclass_of_channels_base_layer() -> None:
    from channels.layers import BaseChannelLayer

    layer = RedisMPXChannelLayer()
    assert isinstance(layer, BaseChannelLayer)
    assert layer.extensions == ["groups", "flush"]
    assert layer.get_capacity("anything") == 100
