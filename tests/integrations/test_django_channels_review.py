"""Review of ``redismpx.channels.RedisMPXChannelLayer``: each test here failed on main when it
was written, and says what a user of the layer would see.

Found by driving the layer as Django Channels drives it (``await_many_dispatch`` through an
``AsyncWebsocketConsumer``), with several hosts, with the loop-close wrapper cycled, and with
``CONFIG`` forms channels_redis accepts or rejects; beside ``RedisPubSubChannelLayer`` where
the docs claim the same behaviour.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

pytest.importorskip("channels")
channels_redis_pubsub = pytest.importorskip("channels_redis.pubsub")

from redismpx import InvalidArgument, InvalidArgumentType  # noqa: E402
from redismpx.channels import RedisMPXChannelLayer  # noqa: E402
from redismpx.channels._hosts import consistent_hash  # noqa: E402
from redismpx.server import RedisServer  # noqa: E402

pytestmark = pytest.mark.timeout(60)

HOOKS: dict[str, Any] = {"on_disconnect": "redis.disconnect", "on_reconnect": "redis.reconnect"}


async def numsub(server: RedisServer, name: str) -> int:
    return int((await server.acommand("PUBSUB", "NUMSUB", name))[1])


async def ours_left_in_redis(server: RedisServer, prefix: str = "asgi") -> list[bytes]:
    names = await server.acommand("PUBSUB", "CHANNELS")
    return sorted(n for n in names if n.startswith(prefix.encode()))


async def until_released(
    layer: RedisMPXChannelLayer, server: RedisServer, timeout: float = 5.0
) -> None:
    """Poll (no event exists for it) until the layer holds no consumer and Redis no name of
    it; AssertionError with what is left after ``timeout`` (the linger is 0.1 s)."""
    try:
        async with asyncio.timeout(timeout):
            while layer.stats()["consumers"] or await ours_left_in_redis(server):
                await asyncio.sleep(0.02)
    except TimeoutError:
        left = await ours_left_in_redis(server)
        raise AssertionError(
            f"the consumer ended {timeout:g} s ago and its state is still held: "
            f"{layer.stats()['consumers']} consumer(s), subscribed in Redis: {left}"
        ) from None


@pytest.fixture
async def django_layer(redis_server: RedisServer) -> AsyncIterator[RedisMPXChannelLayer]:
    """The layer installed as Django Channels' default (``receive_linger`` 0.1 s)."""
    from channels.layers import channel_layers
    from django.conf import settings

    if not settings.configured:  # consumers close Django's old DB connections on each event
        settings.configure(DATABASES={}, INSTALLED_APPS=[])
    layer = RedisMPXChannelLayer(hosts=[redis_server.url], receive_linger=0.1)
    previous = channel_layers.set("default", layer)
    try:
        yield layer
    finally:
        channel_layers.set("default", previous)
        await layer.close()


WEBSOCKET = {"type": "websocket", "path": "/ws/", "headers": [], "subprotocols": []}


def waiting(layer: Any) -> int:
    """Messages waiting in the one consumer channel of ``layer`` (either kind)."""
    if isinstance(layer, RedisMPXChannelLayer):
        (mpx,) = layer.stats()["multiplexers"]
        return int(mpx["messages_received"]) - 1  # one is being handled
    (queue,) = layer._get_layer().channels.values()
    return int(queue.qsize())


# -- consumers that end without a cancelled receive ----------------------------------------------


async def test_a_consumer_whose_handler_raises_is_released(
    redis_server: RedisServer, django_layer: RedisMPXChannelLayer
) -> None:
    """A bug in a group-message handler ends the consumer (the exception leaves
    ``await_many_dispatch`` while no ``receive`` is pending, so none is cancelled). Its
    channel and every group it joined stay subscribed for the life of the process, and its
    inbox keeps filling up to ``capacity`` with the groups' traffic, logging a drop warning
    every 10 s, for a consumer that no longer exists. The docs: "A consumer that ends leaves
    its groups with its channel"."""
    from asgiref.testing import ApplicationCommunicator
    from channels.generic.websocket import AsyncWebsocketConsumer

    class Room(AsyncWebsocketConsumer):  # type: ignore[misc]
        groups = ["lobby"]  # noqa: RUF012 - Channels' attribute: joined on connect

        async def chat_message(self, event: dict[str, Any]) -> None:
            raise ValueError("a bug in a handler")

    client = ApplicationCommunicator(Room.as_asgi(), WEBSOCKET)
    await client.send_input({"type": "websocket.connect"})
    assert (await client.receive_output(timeout=5))["type"] == "websocket.accept"
    assert await numsub(redis_server, "asgi__group__lobby") == 1
    await django_layer.group_send("lobby", {"type": "chat.message"})
    with pytest.raises(ValueError, match="a bug in a handler"):
        await client.wait(timeout=5)  # the consumer has ended
    await until_released(django_layer, redis_server)


@pytest.mark.parametrize("kind", ["redismpx", "stock"])
async def test_a_consumer_that_disconnects_with_messages_waiting_is_released(
    kind: str, redis_server: RedisServer, django_layer: RedisMPXChannelLayer
) -> None:
    """A consumer whose handler is slow has messages waiting in its channel: the ``receive``
    that ``await_many_dispatch`` starts after each handler returns at once with the next one.
    When the client disconnects meanwhile, Channels dispatches the disconnect first, ends,
    and cancels a ``receive`` that has already returned: nothing is cancelled, so the
    channel is never released (nor the groups it joined by hand and did not leave). Under
    load (slow handlers, busy groups) every disconnect leaks a channel; the stock layer
    leaks it too (it is recorded, not asserted), the docs say this layer does not."""
    from asgiref.testing import ApplicationCommunicator
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.layers import channel_layers

    layer: Any = django_layer
    if kind == "stock":
        layer = channels_redis_pubsub.RedisPubSubChannelLayer(hosts=[redis_server.url])
        channel_layers.set("default", layer)
    entered = asyncio.Event()
    gate = asyncio.Event()

    class Room(AsyncWebsocketConsumer):  # type: ignore[misc]
        groups = ["lobby"]  # noqa: RUF012

        async def chat_message(self, event: dict[str, Any]) -> None:
            entered.set()
            await gate.wait()  # a slow handler: a query, an HTTP call
            await self.send(text_data=event["text"])

    client = ApplicationCommunicator(Room.as_asgi(), WEBSOCKET)
    await client.send_input({"type": "websocket.connect"})
    assert (await client.receive_output(timeout=5))["type"] == "websocket.accept"
    for n in range(5):
        await layer.group_send("lobby", {"type": "chat.message", "text": str(n)})
    async with asyncio.timeout(5):
        await entered.wait()  # handling the first; the other four arrive meanwhile
        while waiting(layer) < 4:
            await asyncio.sleep(0.01)
    await client.send_input({"type": "websocket.disconnect", "code": 1000})
    async with asyncio.timeout(5):
        while not client.input_queue.empty():  # the consumer's app receive has returned it
            await asyncio.sleep(0)
    gate.set()
    await client.wait(timeout=5)
    if kind == "stock":
        left = await ours_left_in_redis(redis_server)
        await layer.flush()
        print(f"\n[channels-review] stock layer, channels left after the consumer ended: {left}")
        return
    await until_released(django_layer, redis_server)


# -- hooks with several hosts --------------------------------------------------------------------


async def test_on_disconnect_is_followed_by_on_reconnect_with_several_hosts(
    server_factory: Callable[..., RedisServer],
) -> None:
    """With two hosts, a consumer joined then left a group living on the second host (its
    subscription there is now empty). When that host's connection drops, the consumer gets
    ``on_disconnect`` and never ``on_reconnect``: nothing of it is missing, but the app,
    told "messages may be lost from here until on_reconnect", waits for a reconnect that
    never comes (a stale "offline" banner, a re-sync never done)."""
    a, b = server_factory(), server_factory()
    layer = RedisMPXChannelLayer(hosts=[a.url, b.url], **HOOKS)
    try:
        group = next(g for g in map(str, range(100)) if consistent_hash(f"asgi__group__{g}", 2))
        while consistent_hash(channel := await layer.new_channel(), 2) != 0:
            pass  # a channel on the first host
        await layer.group_add(group, channel)
        await layer.group_discard(group, channel)
        async with asyncio.timeout(5):  # Redis has processed the UNSUBSCRIBE
            while await numsub(b, f"asgi__group__{group}"):
                await asyncio.sleep(0.01)
        # Drop every connection to the second host (Pub/Sub ones too: channels made before
        # ours may live there); wait until it is reconnected.
        await b.acommand("CLIENT", "KILL", "TYPE", "pubsub")
        await b.acommand("CLIENT", "KILL", "TYPE", "normal")
        async with asyncio.timeout(10):
            while (layer.stats()["multiplexers"][1] or {}).get("reconnects", 0) < 1:
                await asyncio.sleep(0.01)
        await layer.send(channel, {"type": "probe"})
        heard = []
        async with asyncio.timeout(5):
            while (message := await layer.receive(channel))["type"] != "probe":
                heard.append(message["type"])
        assert heard.count("redis.disconnect") == heard.count("redis.reconnect"), heard
    finally:
        await layer.close()
        await a.acommand("PING")  # both servers still up: the fixture stops them


# -- the loop-close wrapper ----------------------------------------------------------------------


def test_close_and_reuse_in_one_loop_does_not_stack_close_wrappers() -> None:
    """``close()`` / ``close_pools()`` forget the loop; the next use wraps ``loop.close``
    again around the previous wrapper. A long-lived loop that calls ``close_pools()`` after
    each job (a worker, a management command) stacks one wrapper per call: memory grows,
    and after about ``sys.getrecursionlimit()`` calls ``loop.close()`` raises RecursionError
    (the loop is then never closed). No Redis is needed: ``stats()`` makes the loop's state."""
    layer = RedisMPXChannelLayer(hosts=["redis://127.0.0.1:1"])  # never connected

    async def cycles() -> None:
        for _ in range(sys.getrecursionlimit() + 100):
            layer.stats()
            await layer.close_pools()
        layer.stats()

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(cycles())
    finally:
        loop.close()  # RecursionError on main
    assert loop.is_closed()
    assert layer._layers == {}


# -- CONFIG ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "channel_capacity",
    [[("asgispecific.*", 5)], {42: 5}],
    ids=["a list of pairs", "an int key"],
)
def test_a_bad_channel_capacity_is_a_typed_error(channel_capacity: Any) -> None:
    """``channel_capacity`` that is not ``{glob or regex: int}`` raises Channels' own
    ``AttributeError: 'list' object has no attribute 'items'`` or ``TypeError: object of
    type 'int' has no len()`` (from fnmatch), naming neither the key nor the setting."""
    with pytest.raises(InvalidArgumentType, match="channel_capacity"):
        RedisMPXChannelLayer(channel_capacity=channel_capacity)


def test_a_compiled_regex_capacity_still_works() -> None:
    """(The valid forms the fix must keep.)"""
    layer = RedisMPXChannelLayer(
        capacity=7, channel_capacity={re.compile(r"^asgibig\."): 1000, "asgismall.*": 2}
    )
    assert layer.get_capacity("asgibig.x") == 1000
    assert layer.get_capacity("asgismall.x") == 2
    assert layer.get_capacity("asgispecific.x") == 7


async def test_ssl_cert_reqs_on_a_plain_url_is_refused(redis_server: RedisServer) -> None:
    """``ssl_cert_reqs: None`` (channels_redis's README, for Heroku's ``rediss://``) next to
    a ``redis://`` URL: the stock layer raises ``TypeError`` at the first use; this layer
    silently turns TLS on against a plain port, retries the handshake forever and
    ``new_channel`` ends in a bare ``TimeoutError``. It should say so when it is built."""
    hosts = [{"address": redis_server.url, "ssl_cert_reqs": None}]
    stock = channels_redis_pubsub.RedisPubSubChannelLayer(hosts=hosts)
    with pytest.raises(TypeError, match="ssl_cert_reqs"):
        await stock.new_channel()
    with pytest.raises(InvalidArgument, match="ssl_cert_reqs"):
        RedisMPXChannelLayer(hosts=hosts, subscribe_timeout=1)


async def test_a_password_in_the_url_wins_as_in_channels_redis(
    server_factory: Callable[..., RedisServer],
) -> None:
    """``{"address": "redis://:right@...", "password": "stale"}``: redis-py's ``from_url``
    lets the URL win, so the stock layer connects; this layer lets the keyword win (the core
    rule) and retries ``WRONGPASS`` forever: a CONFIG that works with the stock layer hangs
    with this one, although the docs say it "works as it is"."""
    server = server_factory(password="right")
    address = f"redis://:right@{server.host}:{server.port}"
    hosts = [{"address": address, "password": "stale"}]
    stock = channels_redis_pubsub.RedisPubSubChannelLayer(hosts=hosts)
    ours = RedisMPXChannelLayer(hosts=hosts, subscribe_timeout=3)
    try:
        for layer in (stock, ours):
            channel = await layer.new_channel()
            await layer.send(channel, {"type": "x"})
            async with asyncio.timeout(5):
                assert await layer.receive(channel) == {"type": "x"}
    finally:
        await stock.flush()
        await ours.close()


async def test_a_refused_receive_name_leaves_no_consumer_behind() -> None:
    """``receive`` on a name redismpx refuses (over its 1 MiB name limit) raises
    ``InvalidArgument`` but keeps an inbox for the name, never subscribed: the next
    ``receive`` on it finds that inbox and waits forever instead of raising (a worker that
    retries hangs), and the inbox stays for the life of the loop. No Redis is needed: the
    name is refused before anything is sent."""
    layer = RedisMPXChannelLayer(hosts=["redis://127.0.0.1:1"])  # never connected
    try:
        for _ in range(2):
            with pytest.raises(InvalidArgument, match="limit"):
                async with asyncio.timeout(5):  # main: the second one waits forever
                    await layer.receive("x" * (1 << 20) + "y")
        assert layer.stats()["consumers"] == 0
    finally:
        await layer.close()
