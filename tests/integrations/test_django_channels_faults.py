"""``RedisMPXChannelLayer`` and channels_redis's ``RedisPubSubChannelLayer`` side by side
through the same faults, on real servers: how long each stays deaf, whether the documented
``on_disconnect``/``on_reconnect`` hooks fire, and whether a message sent right after
``group_add`` arrives.

Each kind runs one consumer: a channel from ``new_channel``, in a group, with a task that
loops on ``receive`` as Django Channels' consumers do. Recovery is measured with probes
published on the group's Redis channel over a fresh connection every ``PROBE_EVERY``
seconds from the end of the fault; a consumer is back when it receives one. Both times are
printed (``[channels] ...`` lines); only redismpx's are asserted, the stock ones are recorded
("never within N s" when nothing came back in N s).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

pytest.importorskip("channels")
channels_redis_pubsub = pytest.importorskip("channels_redis.pubsub")

from redismpx.channels import RedisMPXChannelLayer  # noqa: E402
from redismpx.server import RedisSentinel, RedisServer  # noqa: E402

pytestmark = pytest.mark.timeout(180)

KINDS = ("redismpx", "stock")
PREFIX = {"redismpx": "mpx", "stock": "stock"}  # one Redis namespace per kind
GROUP = "room"
HOOKS = {"on_disconnect": "redis.disconnect", "on_reconnect": "redis.reconnect"}
PROBE_EVERY = 0.01  # seconds between recovery probes
LIMITS = {"redismpx": 10.0, "stock": 20.0}  # how long each kind is given to come back
REDISMPX_BOUND = 5.0  # seconds: backoff cap 0.512 s, plus jitter and a loaded machine


def make_layer(kind: str, hosts: list[Any], **config: Any) -> Any:
    config = {"prefix": PREFIX[kind], **HOOKS, **config}
    if kind == "redismpx":
        return RedisMPXChannelLayer(hosts=hosts, **config)
    return channels_redis_pubsub.RedisPubSubChannelLayer(hosts=hosts, **config)


class Consumer:
    """A consumer channel in ``GROUP``, received from in a loop, recording what arrives."""

    def __init__(self, kind: str, layer: Any) -> None:
        self.kind = kind
        self.layer = layer
        self.channel = ""
        self.received: list[tuple[dict[str, Any], float]] = []
        self.changed = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> Consumer:
        self.channel = await self.layer.new_channel()
        await self.layer.group_add(GROUP, self.channel)
        self.task = asyncio.create_task(self._receive())
        return self

    async def _receive(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            self.received.append((message, time.monotonic()))
            self.changed.set()

    @property
    def group_channel(self) -> str:
        return f"{PREFIX[self.kind]}__group__{GROUP}"

    def types(self) -> list[str]:
        return [m["type"] for m, _ in self.received]

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.wait([self.task])
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await self.layer.flush()


@pytest.fixture
async def consumers() -> AsyncIterator[Callable[..., Any]]:
    """``await consumers(hosts, kinds=KINDS, **config)``: one started Consumer per kind."""
    made: list[Consumer] = []

    async def factory(hosts: list[Any], kinds: tuple[str, ...] = KINDS, **config: Any) -> Any:
        started = []
        for kind in kinds:
            consumer = Consumer(kind, make_layer(kind, hosts, **config))
            made.append(consumer)
            started.append(await consumer.start())
        return started

    yield factory
    for consumer in made:
        await consumer.stop()


Server = Callable[[], RedisServer]


async def time_until_delivery(
    group: list[Consumer], server: Server, limits: dict[str, float] = LIMITS
) -> dict[str, float | None]:
    """Per kind: seconds from now until its consumer received a probe (published every
    PROBE_EVERY s on its group over a fresh connection to ``server()``), None if not
    within its limit."""
    start = time.monotonic()

    async def one(consumer: Consumer) -> float | None:
        mark = len(consumer.received)
        n = 0
        while True:
            arrived = [t for m, t in consumer.received[mark:] if m["type"] == "probe"]
            if arrived:
                return arrived[0] - start
            remaining = limits[consumer.kind] - (time.monotonic() - start)
            if remaining <= 0:
                return None
            n += 1
            data = consumer.layer.serialize({"type": "probe", "n": n})
            with contextlib.suppress(Exception):  # down, refused, timed out
                async with asyncio.timeout(min(remaining, 1.0)):
                    await server().acommand("PUBLISH", consumer.group_channel, data)
            consumer.changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(PROBE_EVERY):
                    await consumer.changed.wait()

    times = await asyncio.gather(*(one(c) for c in group))
    return {c.kind: t for c, t in zip(group, times, strict=True)}


def describe(kind: str, seconds: float | None) -> str:
    return f"never within {LIMITS[kind]:g} s" if seconds is None else f"{seconds:.3f} s"


def report(capsys: pytest.CaptureFixture[str], title: str, lines: dict[str, str]) -> None:
    with capsys.disabled():
        print(f"\n[channels] {title}: " + "; ".join(f"{k}: {v}" for k, v in lines.items()))


def conclude(
    capsys: pytest.CaptureFixture[str],
    title: str,
    result: dict[str, float | None],
    group: list[Consumer],
) -> None:
    """Print both times and which hooks each consumer received; assert redismpx's."""
    lines = {}
    for consumer in group:
        hooks = [t for t in consumer.types() if t.startswith("redis.")]
        lines[consumer.kind] = f"{describe(consumer.kind, result[consumer.kind])}, hooks {hooks}"
    report(capsys, title, lines)
    ours = result["redismpx"]
    assert ours is not None and ours < REDISMPX_BOUND, lines


async def expect_delivery(group: list[Consumer], server: Server) -> None:
    result = await time_until_delivery(group, server, dict.fromkeys(KINDS, 10.0))
    assert all(v is not None for v in result.values()), result


def check_hooks(group: list[Consumer]) -> None:
    """redismpx: one on_disconnect, then one on_reconnect before the first probe after
    the fault. channels_redis 4.x: never (its hooks are dead since 4.0, #406)."""
    for consumer in group:
        types = consumer.types()
        hooks = [t for t in types if t.startswith("redis.")]
        if consumer.kind == "redismpx":
            assert hooks == ["redis.disconnect", "redis.reconnect"], types
            reconnect = types.index("redis.reconnect")
            assert "probe" in types[reconnect:], types
        else:
            assert hooks == [], types


# -- faults -------------------------------------------------------------------------------------


async def test_pubsub_connections_killed(
    redis_server: RedisServer, consumers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """``CLIENT KILL TYPE pubsub``: the server drops every Pub/Sub connection at once."""
    group = await consumers([redis_server.url])
    await expect_delivery(group, lambda: redis_server)
    killed = await redis_server.acommand("CLIENT", "KILL", "TYPE", "pubsub")
    assert killed >= len(group)
    result = await time_until_delivery(group, lambda: redis_server)
    conclude(capsys, "CLIENT KILL TYPE pubsub, time until delivery", result, group)
    check_hooks(group)


async def test_server_restart(
    redis_server: RedisServer, consumers: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The server is killed, stays down 2 s, and restarts on the same port: the time from
    the restart until delivery is back."""
    group = await consumers([redis_server.url])
    await expect_delivery(group, lambda: redis_server)
    await redis_server.akill()
    await asyncio.sleep(2.0)  # the outage itself
    await redis_server.astart()
    result = await time_until_delivery(group, lambda: redis_server)
    conclude(capsys, "server restarted after a 2 s outage, time until delivery", result, group)
    check_hooks(group)


async def test_sentinel_failover(
    sentinel_factory: Callable[..., RedisSentinel],
    consumers: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``SENTINEL FAILOVER`` under both layers, configured with channels_redis's Sentinel
    dict: the time from the new primary's confirmation until delivery is back there."""
    deployment = sentinel_factory()
    host = {"sentinels": deployment.sentinel_addresses, "master_name": deployment.service_name}
    group = await consumers([host])
    primary = deployment.primary
    await expect_delivery(group, lambda: primary)
    primary = await deployment.afailover()
    result = await time_until_delivery(group, lambda: primary)
    conclude(capsys, "Sentinel failover, time until delivery", result, group)
    check_hooks(group)


async def test_publish_right_after_group_add(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """100 rounds: a consumer joins a new group and another process sends to that group at
    once (what a consumer that announces itself to its room does). redismpx's ``group_add``
    returns once Redis confirmed the subscription: never a lost first message."""
    lost: dict[str, int] = {}
    for kind in KINDS:
        layer = make_layer(kind, [redis_server.url])
        sender = make_layer(kind, [redis_server.url])
        channel = await layer.new_channel()
        lost[kind] = 0
        try:
            for n in range(100):
                await layer.group_add(f"new-{n}", channel)
                await sender.group_send(f"new-{n}", {"type": "first", "n": n})
                # The message, or it was lost: 0.5 s is plenty to tell the stock layer's
                # losses; redismpx's bar (no loss) gets room for a loaded machine.
                try:
                    async with asyncio.timeout(5.0 if kind == "redismpx" else 0.5):
                        assert (await layer.receive(channel))["n"] == n
                except TimeoutError:
                    lost[kind] += 1
                    channel = await layer.new_channel()  # the stock one dropped it
        finally:
            await layer.flush()
            await sender.flush()
    report(
        capsys,
        "first message sent right after group_add, lost in 100 rounds",
        {kind: str(n) for kind, n in lost.items()},
    )
    assert lost["redismpx"] == 0


def count_wakeups(kind: str, url: str, seconds: float) -> int:
    """Event-loop wakeups (selector polls) of a process whose only work is one consumer
    waiting in ``receive``, over ``seconds`` of silence."""

    async def run() -> int:
        layer = make_layer(kind, [url])
        channel = await layer.new_channel()
        waiting = asyncio.create_task(layer.receive(channel))
        await asyncio.sleep(0.5)  # settle: connections made, subscriptions confirmed
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        polls = 0
        original = selector.select

        def select(timeout: float | None = None) -> list[Any]:
            nonlocal polls
            polls += 1
            return original(timeout)

        selector.select = select
        try:
            await asyncio.sleep(seconds)  # the silence being measured
        finally:
            selector.select = original
        waiting.cancel()
        await asyncio.wait([waiting])
        await layer.flush()
        return polls

    return asyncio.run(run())


def test_idle_wakeups(redis_server: RedisServer, capsys: pytest.CaptureFixture[str]) -> None:
    """The stock layer polls its Pub/Sub connection every 0.1 s while idle; redismpx
    waits on the socket (and sends a heartbeat PING every ``health_check_interval``)."""
    polls = {kind: count_wakeups(kind, redis_server.url, 3.0) for kind in KINDS}
    lines = {kind: str(n) for kind, n in polls.items()}
    report(capsys, "event-loop wakeups of an idle consumer in 3 s", lines)
    assert polls["redismpx"] <= 4, polls  # the sleep's own, and a heartbeat or two


# -- a Django Channels consumer --------------------------------------------------------------


async def test_a_django_consumer_hears_the_hooks(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """An ``AsyncWebsocketConsumer`` in a room, driven as an ASGI server drives it (asgiref's
    ``ApplicationCommunicator``), with the layer installed as the default: group messages
    reach its WebSocket, a dropped connection reaches its ``redis_disconnect`` and
    ``redis_reconnect`` handlers (the names channels_redis's README shows), and when it
    disconnects its channel and group are released."""
    from asgiref.testing import ApplicationCommunicator
    from channels.generic.websocket import AsyncWebsocketConsumer
    from channels.layers import channel_layers
    from django.conf import settings

    if not settings.configured:  # consumers close Django's old DB connections on each event
        settings.configure(DATABASES={}, INSTALLED_APPS=[])

    class Room(AsyncWebsocketConsumer):  # type: ignore[misc]
        groups = ["lobby"]  # noqa: RUF012 - Channels' attribute: joined on connect

        async def chat_message(self, event: dict[str, Any]) -> None:
            await self.send(text_data=event["text"])

        async def redis_disconnect(self, event: dict[str, Any]) -> None:
            await self.send(text_data="[disconnected]")

        async def redis_reconnect(self, event: dict[str, Any]) -> None:
            await self.send(text_data="[reconnected]")

    layer = RedisMPXChannelLayer(hosts=[redis_server.url], receive_linger=0.1, **HOOKS)
    previous = channel_layers.set("default", layer)
    try:
        scope = {"type": "websocket", "path": "/ws/", "headers": [], "subprotocols": []}
        client = ApplicationCommunicator(Room.as_asgi(), scope)

        async def text() -> str:
            event = await client.receive_output(timeout=5)
            assert event["type"] == "websocket.send", event
            return str(event["text"])

        await client.send_input({"type": "websocket.connect"})
        assert (await client.receive_output(timeout=5))["type"] == "websocket.accept"
        await layer.group_send("lobby", {"type": "chat.message", "text": "hello"})
        assert await text() == "hello"
        await redis_server.acommand("CLIENT", "KILL", "TYPE", "pubsub")
        assert await text() == "[disconnected]"
        assert await text() == "[reconnected]"
        await layer.group_send("lobby", {"type": "chat.message", "text": "again"})
        assert await text() == "again"
        await client.send_input({"type": "websocket.disconnect", "code": 1000})
        await client.wait(timeout=5)  # the consumer has ended
        async with asyncio.timeout(10):  # released after the linger
            while (
                layer.stats()["consumers"]
                or (await redis_server.acommand("PUBSUB", "NUMSUB", "asgi__group__lobby"))[1]
            ):
                await asyncio.sleep(0.01)
    finally:
        channel_layers.set("default", previous)
        await layer.close()
