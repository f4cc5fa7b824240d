"""``await sub.add(...)``: what a framework adapter relies on, against real servers.

A framework's ``subscribe()`` promises that what is published after it returns arrives. These
tests hold the library to that: ``await sub.add(ch)`` (and ``async with mpx.subscribe(ch)``)
returns only once Redis confirmed the channel, so a publish right after it always counts the
subscriber; it waits through outages, gives way to removal, closing and refusal, and costs
nothing while nobody waits (``hears_activations`` stays False).

Waits are bounded: a hang fails the test within seconds (``within``) instead of at the suite's
timeout. The few fixed windows (``asyncio.timeout(0.3)``) are expected *not* to complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest

from redismpx import (
    ClusterMultiplexer,
    Multiplexer,
    SubscribeRefused,
    SubscriptionClosed,
)
from redismpx.server import RedisCluster, RedisServer
from support.admin import Admin
from support.clusters import names_on, slot_owners
from support.faultproxy import FaultProxy
from support.recorder import AsyncRecorder, Recorder

T = TypeVar("T")

_fresh = itertools.count()


def fresh(prefix: str = "aw") -> str:
    """A channel name no other test (nor an earlier round) used."""
    return f"{prefix}:{next(_fresh)}"


async def within(aw: Awaitable[T], timeout: float = 5.0, what: str = "the await") -> T:
    """``await aw``, failing the test if it does not complete within ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            return await aw
    except TimeoutError:
        raise AssertionError(f"{what} did not complete within {timeout} s") from None


async def still_pending(task: asyncio.Future[Any], window: float = 0.3) -> bool:
    """Whether ``task`` is still not done after a short window (it is expected to be)."""
    done, _ = await asyncio.wait({task}, timeout=window)
    return not done


def ignore(channel: bytes, data: bytes) -> None:
    """An ``on_message`` for subscriptions whose messages do not matter."""


def acl_server(server_factory: Any) -> RedisServer:
    server: RedisServer = server_factory()
    return server


async def chat_user(server: RedisServer) -> str:
    """A user allowed the channels ``chat:*`` only; its URL."""
    await server.acommand(
        "ACL", "SETUSER", "chat", "on", ">pw", "resetchannels", "&chat:*", "+@all"
    )
    return f"redis://chat:pw@127.0.0.1:{server.port}"


class SlowLink:
    """A TCP hop to the server that delays every chunk by ``delay`` seconds, in order.

    A multiplexer behind it has its SUBSCRIBE reach Redis well after a publish sent directly
    right after the call: an await that returned before the confirmation loses that publish.
    """

    def __init__(self, target_port: int, delay: float) -> None:
        self.target_port = target_port
        self.delay = delay
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._writers += [writer, up_writer]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pump(src, dst))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                await asyncio.sleep(self.delay)  # the latency of a slow network
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            dst.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Setup:
    """A multiplexer and how to publish so that the publish can overtake its SUBSCRIBE."""

    def __init__(
        self,
        m: Multiplexer,
        publish: Callable[[str, str], Awaitable[int]],
        spublish: Callable[[str, str], Awaitable[int]],
    ) -> None:
        self.m = m
        self.publish = publish
        self.spublish = spublish  # SPUBLISH, for shard channels


@pytest.fixture(params=["resp3", "resp2", "slow-link"])
async def setup(
    redis_server: RedisServer, admin: Admin, request: pytest.FixtureRequest
) -> AsyncIterator[Setup]:
    """Direct (RESP3, RESP2): publishing with the multiplexer's own ``publish``. Slow link:
    the multiplexer behind a 10 ms hop, publishing directly to the server."""
    if request.param == "slow-link":
        link = SlowLink(redis_server.port, 0.01)
        await link.start()
        m = Multiplexer(link.url)
        yield Setup(m, admin.publish, admin.client.spublish)
        await m.aclose()
        await link.close()
    else:
        m = Multiplexer(redis_server.url, protocol=3 if request.param == "resp3" else 2)
        yield Setup(m, m.publish, functools.partial(m.publish, sharded=True))
        await m.aclose()


# -- a publish right after the await is received ------------------------------------------------


async def test_publish_right_after_await_add_is_always_received(setup: Setup) -> None:
    # 100 rounds, each on a fresh channel: a new plain subscription, a long-lived one that
    # keeps adding, and a queued one (async callbacks). The publish goes over another
    # connection; Redis counting the subscriber proves the subscription was in place.
    mpx = setup.m
    long_lived = Recorder("long-lived")
    keeps_adding = mpx.new_channel_subscription(long_lived.on_message)
    for i in range(100):
        channel = fresh("first")
        kind = i % 3
        if kind == 0:
            rec = Recorder(f"plain {i}")
            sub = mpx.new_channel_subscription(rec.on_message)
        elif kind == 1:
            rec, sub = long_lived, keeps_adding
        else:
            rec = AsyncRecorder(f"queued {i}")
            sub = mpx.new_channel_subscription(rec.on_message)
        await within(sub.add(channel), what=f"round {i}: await add")
        receivers = await setup.publish(channel, f"m{i}")
        assert receivers == 1, f"round {i} ({channel}): the first publish was not counted"
        await rec.wait_until(
            lambda: (channel.encode(), f"m{i}".encode()) in rec.messages,  # noqa: B023
            what=f"round {i}: the first message",
        )
        assert not sub.hears_activations or kind == 2  # a queued one always hears them
    assert len(long_lived.messages) == len(range(1, 100, 3))


async def test_publish_right_after_entering_subscribe_is_always_received(
    setup: Setup,
) -> None:
    mpx = setup.m
    for i in range(100):
        channel = fresh("iter")
        async with contextlib.AsyncExitStack() as stack:
            it = await within(
                stack.enter_async_context(mpx.subscribe(channel)), what=f"round {i}: entering"
            )
            assert channel in it
            receivers = await setup.publish(channel, f"m{i}")
            assert receivers == 1, f"round {i} ({channel}): the first publish was not counted"
            message = await within(anext(it), what=f"round {i}: the first message")
            assert (message.channel, message.data) == (channel.encode(), f"m{i}".encode())


async def test_publish_right_after_entering_psubscribe_is_always_received(
    setup: Setup,
) -> None:
    mpx = setup.m
    for i in range(30):
        prefix = fresh("pat")
        async with contextlib.AsyncExitStack() as stack:
            it = await within(
                stack.enter_async_context(mpx.psubscribe(prefix + ".*")),
                what=f"round {i}: entering",
            )
            assert await setup.publish(prefix + ".x", f"m{i}") == 1, f"round {i}: not counted"
            message = await within(anext(it), what=f"round {i}: the first message")
            assert message.data == f"m{i}".encode()
            assert message.pattern == (prefix + ".*").encode()


async def test_await_add_on_a_multiplexer_not_yet_connected(redis_server: RedisServer) -> None:
    # The adapter's first subscribe often comes before the connection is up.
    for i in range(10):
        async with Multiplexer(redis_server.url) as m:
            rec = Recorder()
            sub = m.new_channel_subscription(rec.on_message)
            channel = fresh("cold")
            await within(sub.add(channel), what=f"round {i}: await add on a new multiplexer")
            assert await m.publish(channel, "first") == 1, f"round {i}: not counted"
            await rec.received(1)


async def test_await_add_of_shard_channels_on_a_standalone_server(setup: Setup) -> None:
    mpx = setup.m
    rec = Recorder()
    sub = mpx.new_channel_subscription(rec.on_message, sharded=True)
    for i in range(20):
        channel = fresh("shard")
        await within(sub.add(channel), what=f"round {i}")
        assert await setup.spublish(channel, "s") == 1, f"round {i}: not counted"
    await rec.received(20)
    assert not sub.hears_activations


async def test_await_add_of_several_channels_waits_for_every_one(setup: Setup) -> None:
    mpx = setup.m
    rec = Recorder()
    sub = mpx.new_channel_subscription(rec.on_message)
    names = [fresh("many") for _ in range(50)]
    await within(sub.add(*names))
    counts = await asyncio.gather(*(setup.publish(n, "x") for n in names))
    assert counts == [1] * 50
    await rec.received(50)


async def test_rejoining_a_channel_being_unsubscribed_waits_for_the_resubscribe(
    setup: Setup, admin: Admin
) -> None:
    mpx = setup.m
    # One client leaves a channel (its UNSUBSCRIBE is on the wire) as another joins it: the
    # join must wait for the new SUBSCRIBE, not trust the old activation. Odd rounds join
    # once Redis has processed the UNSUBSCRIBE (over the slow link its reply is still on the
    # way): a publish then is lost unless the join waited for its own SUBSCRIBE.
    channel = fresh("churn")
    leaving = mpx.new_channel_subscription(ignore)
    await within(leaving.add(channel))
    for i in range(20):
        leaving.remove(channel)
        await asyncio.sleep(0)  # the UNSUBSCRIBE is written in this loop turn
        if i % 2:
            async with asyncio.timeout(5):
                while await admin.numsub(channel):
                    pass
        rec = Recorder()
        joining = mpx.new_channel_subscription(rec.on_message)
        await within(joining.add(channel), what=f"round {i}: rejoin")
        assert await setup.publish(channel, f"m{i}") == 1, f"round {i}: not counted"
        await rec.received(1)
        joining.close()
        await within(leaving.add(channel))


# -- an already-active name ---------------------------------------------------------------------


async def test_an_already_active_channel_returns_without_a_round_trip(
    redis_server: RedisServer, fault_proxy: Any
) -> None:
    proxy = await fault_proxy(redis_server.port)
    async with Multiplexer(proxy.url) as m:
        first = m.new_channel_subscription(ignore)
        await within(first.add("shared"))
        proxy.stall()  # from now on no reply comes back: only what is known locally answers
        second_rec = Recorder("second")
        second = m.new_channel_subscription(second_rec.on_message)
        await within(second.add("shared"), 1.0, "joining an active channel")
        assert not second.hears_activations
        await within(second.add("shared"), 1.0, "awaiting a channel already held and active")
        async with contextlib.AsyncExitStack() as stack:
            it = await within(
                stack.enter_async_context(m.subscribe("shared")), 1.0, "entering subscribe"
            )
            # The control: a fresh name does need the round trip the stall holds back.
            pending = asyncio.ensure_future(second.add("fresh"))
            assert await still_pending(pending)
            proxy.resume()
            await within(pending)
            assert not second.hears_activations
            assert await m.publish("shared", "hello") == 1  # one connection for all three
            await second_rec.received(1)
            message = await within(anext(it))
            assert message.data == b"hello"


async def test_joining_an_active_channel_sends_no_subscribe(mpx: Multiplexer, admin: Admin) -> None:
    first = mpx.new_channel_subscription(ignore)
    await within(first.add("shared"))
    await admin.reset_stats()
    second = mpx.new_channel_subscription(ignore)
    await within(second.add("shared"))
    async with mpx.subscribe("shared"):
        pass
    await asyncio.sleep(0)  # a flush due from the joins runs before this task resumes
    barrier = mpx.new_channel_subscription(ignore)
    await within(barrier.add(fresh("barrier")))  # Redis answers in order: the rest is in
    assert await admin.calls("subscribe") == 1  # the barrier's only


# -- outages ------------------------------------------------------------------------------------


async def test_an_outage_holds_the_await_until_the_reconnect(redis_server: RedisServer) -> None:
    async with Multiplexer(redis_server.url, backoff_cap=0.1) as m:
        rec = Recorder()
        sub = m.new_channel_subscription(rec.on_message, rec.on_disconnect)
        await within(sub.add("before"))
        await redis_server.akill()
        await rec.disconnected(1)
        # A new name, and a name held but no longer active: neither returns while down.
        for name in ("during", "before"):
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.3):
                    await sub.add(name)
            assert not sub.hears_activations, f"{name}: still hearing after the timeout"
        assert "during" in sub and "before" in sub  # the timeouts removed nothing
        waiting = asyncio.ensure_future(sub.add("before", "during"))
        assert await still_pending(waiting)
        assert sub.hears_activations  # while a task waits
        await redis_server.arestart()
        await within(waiting, 10, "the await across the restart")
        assert not sub.hears_activations
        assert await m.publish("before", "b") == 1
        assert await m.publish("during", "d") == 1
        await rec.wait_until(lambda: {(b"before", b"b"), (b"during", b"d")} <= set(rec.messages))


async def test_after_a_timed_out_await_the_subscription_still_works(
    redis_server: RedisServer,
) -> None:
    async with Multiplexer(redis_server.url, backoff_cap=0.1) as m:
        rec = Recorder()
        sub = m.new_channel_subscription(rec.on_message, rec.on_disconnect)
        await within(sub.add("x"))
        await redis_server.akill()
        await rec.disconnected(1)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await sub.add("y")
        await redis_server.arestart()
        await within(sub.add("x", "y"), 10, "a new await after the restart")
        assert not sub.hears_activations
        assert await m.publish("y", "after") == 1
        await rec.wait_until(lambda: (b"y", b"after") in rec.messages)


async def test_entering_subscribe_during_an_outage_times_out_and_closes(
    redis_server: RedisServer,
) -> None:
    async with Multiplexer(redis_server.url, backoff_cap=0.1) as m:
        watcher = Recorder()
        m.new_channel_subscription(watcher.on_message, watcher.on_disconnect).add("w")
        await m.wait_connected(5)
        await redis_server.akill()
        await watcher.disconnected(1)
        it = m.subscribe("down")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3), it:
                raise AssertionError("entered while the server is down")
        assert it.closed
        assert m.stats()["subscriptions"] == 1  # the watcher only
        pit = m.psubscribe("down.*")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3), pit:
                raise AssertionError("entered while the server is down")
        assert pit.closed
        await redis_server.arestart()
        async with contextlib.AsyncExitStack() as stack:
            it = await within(stack.enter_async_context(m.subscribe("down")), 10)
            assert await m.publish("down", "up") == 1
            assert (await within(anext(it))).data == b"up"


# -- removal, closing, refusal ------------------------------------------------------------------


@pytest.fixture
async def stalled(
    redis_server: RedisServer, fault_proxy: Any
) -> AsyncIterator[tuple[Multiplexer, FaultProxy]]:
    """A multiplexer (connected) whose proxy is stalled: no activation comes until resumed."""
    proxy = await fault_proxy(redis_server.port)
    async with Multiplexer(proxy.url) as m:
        await m.wait_connected(5)
        proxy.stall()
        yield m, proxy


async def test_removing_the_channel_releases_the_await(
    stalled: tuple[Multiplexer, FaultProxy],
) -> None:
    m = stalled[0]
    sub = m.new_channel_subscription(ignore)
    waiting = asyncio.ensure_future(sub.add("a"))
    assert await still_pending(waiting)
    sub.remove("a")
    await within(waiting, 1.0, "the await of a removed channel")
    assert not sub.hears_activations
    assert "a" not in sub


async def test_a_removed_channel_no_longer_counts(stalled: tuple[Multiplexer, FaultProxy]) -> None:
    m, proxy = stalled
    rec = Recorder()
    sub = m.new_channel_subscription(rec.on_message)
    waiting = asyncio.ensure_future(sub.add("a", "b"))
    assert await still_pending(waiting)
    sub.remove("a")
    assert await still_pending(waiting)  # b is still awaited
    proxy.resume()
    await within(waiting)
    assert not sub.hears_activations
    assert await m.publish("b", "x") == 1
    await rec.received(1)


async def test_clearing_the_subscription_releases_the_await(
    stalled: tuple[Multiplexer, FaultProxy],
) -> None:
    m, proxy = stalled
    sub = m.new_channel_subscription(ignore)
    waiting = asyncio.ensure_future(sub.add("a", "b"))
    assert await still_pending(waiting)
    sub.clear()  # removes every channel, like remove("a", "b")
    assert "a" not in sub and "b" not in sub
    proxy.resume()  # Redis answers the SUBSCRIBE (and the UNSUBSCRIBE) now
    await within(waiting, 2.0, "the await of channels removed by clear()")
    assert not sub.hears_activations


async def test_closing_the_subscription_raises_in_the_await(
    stalled: tuple[Multiplexer, FaultProxy],
) -> None:
    m = stalled[0]
    sub = m.new_channel_subscription(ignore)
    waiting = asyncio.ensure_future(sub.add("a"))
    assert await still_pending(waiting)
    sub.close()
    with pytest.raises(SubscriptionClosed):
        await within(waiting, 1.0, "the await of a closed subscription")
    # Created before the close, awaited after it.
    other = m.new_channel_subscription(ignore)
    adding = other.add("b")
    other.close()
    with pytest.raises(SubscriptionClosed):
        await within(adding, 1.0)
    with pytest.raises(SubscriptionClosed):
        other.add("c")


@pytest.mark.parametrize("how", ["close", "aclose"])
async def test_closing_the_multiplexer_raises_in_the_await(
    stalled: tuple[Multiplexer, FaultProxy], how: str
) -> None:
    m = stalled[0]
    sub = m.new_channel_subscription(ignore)
    waiting = asyncio.ensure_future(sub.add("a"))
    entering = asyncio.ensure_future(m.subscribe("b").__aenter__())
    assert await still_pending(waiting) and await still_pending(entering)
    if how == "close":
        m.close()
    else:
        await within(m.aclose())
    for task in (waiting, entering):
        with pytest.raises(SubscriptionClosed):
            await within(task, 1.0, "the await when the multiplexer closed")


async def test_an_overflow_close_raises_in_the_await(
    redis_server: RedisServer, fault_proxy: Any, admin: Admin
) -> None:
    # The library closes a subscription itself (overflow policy "close") while a task waits
    # for another of its channels: the flood reaches us before the SUBSCRIBE's reply.
    proxy = await fault_proxy(redis_server.port)
    async with Multiplexer(proxy.url) as m:
        release = asyncio.Event()

        async def stuck(channel: bytes, data: bytes) -> None:
            await release.wait()

        sub = m.new_channel_subscription(stuck, max_buffer=2, overflow="close")
        await within(sub.add("flood"))
        proxy.stall()
        for i in range(5):
            assert await admin.publish("flood", str(i)) == 1  # held by the proxy
        waiting = asyncio.ensure_future(sub.add("later"))  # its SUBSCRIBE is held too
        assert await still_pending(waiting)
        proxy.resume()
        with pytest.raises(SubscriptionClosed):
            await within(waiting, what="the await of a subscription closed by overflow")
        assert sub.closed and "overflow" in (sub.close_reason or "")
        release.set()


async def test_a_refused_channel_raises_and_the_others_activate(server_factory: Any) -> None:
    server = acl_server(server_factory)
    url = await chat_user(server)
    async with Multiplexer(url) as m:
        rec = Recorder()
        sub = m.new_channel_subscription(rec.on_message, rec.on_disconnect)
        await m.wait_connected(5)
        with pytest.raises(SubscribeRefused) as caught:
            await within(sub.add("admin:1"), what="the await of a refused channel")
        assert caught.value.name == b"admin:1" and caught.value.code == "NOPERM"
        assert not sub.hears_activations
        await within(sub.add("chat:1"))
        assert await m.publish("chat:1", "ok") == 1
        await rec.received(1)


async def test_one_refused_channel_among_several_raises(server_factory: Any) -> None:
    # One SUBSCRIBE of three names, refused as a whole by Redis and retried one by one: the
    # await must raise for the denied one whatever order the replies come in.
    server = acl_server(server_factory)
    url = await chat_user(server)
    async with Multiplexer(url) as m:
        rec = Recorder()
        sub = m.new_channel_subscription(rec.on_message, rec.on_disconnect)
        await m.wait_connected(5)
        with pytest.raises(SubscribeRefused) as caught:
            await within(sub.add("chat:1", "admin:1", "chat:2"), what="await add of 3 names")
        assert caught.value.name == b"admin:1"
        assert not sub.hears_activations
        # The allowed names of the same add are active.
        await within(sub.add("chat:1", "chat:2"), 1.0)
        assert await m.publish("chat:1", "a") == 1
        assert await m.publish("chat:2", "b") == 1
        await rec.received(2)


async def test_awaiting_a_channel_already_refused_raises(server_factory: Any) -> None:
    # The refusal came before the await started (code that adds, then awaits later).
    server = acl_server(server_factory)
    url = await chat_user(server)
    async with Multiplexer(url) as m:
        rec = Recorder()
        sub = m.new_channel_subscription(rec.on_message, rec.on_disconnect)
        adding = sub.add("admin:1")
        await rec.disconnected(1)
        assert isinstance(rec.disconnects[0], SubscribeRefused)
        with pytest.raises(SubscribeRefused):
            await within(adding, what="awaiting an add whose channel was refused")


async def test_awaiting_a_refused_channel_again_raises(server_factory: Any) -> None:
    # The first await raised; the caller tries again with the same subscription (it still
    # holds the name). Whether the library asks Redis again or not, the answer is a refusal,
    # not an await that never ends.
    server = acl_server(server_factory)
    url = await chat_user(server)
    async with Multiplexer(url) as m:
        sub = m.new_channel_subscription(ignore)
        with pytest.raises(SubscribeRefused):
            await within(sub.add("admin:1"), what="the first await")
        assert "admin:1" in sub
        with pytest.raises(SubscribeRefused):
            await within(sub.add("admin:1"), what="adding (held) and awaiting it again")
        assert not sub.hears_activations


async def test_entering_subscribe_on_a_refused_channel_raises_and_closes(
    server_factory: Any,
) -> None:
    server = acl_server(server_factory)
    url = await chat_user(server)
    async with Multiplexer(url) as m:
        it = m.subscribe("admin:1")
        with pytest.raises(SubscribeRefused):
            await within(it.__aenter__(), what="entering subscribe on a refused channel")
        assert it.closed
        pit = m.psubscribe("admin:*")
        with pytest.raises(SubscribeRefused) as caught:
            await within(pit.__aenter__(), what="entering psubscribe on a refused pattern")
        assert caught.value.name == b"admin:*"
        assert pit.closed
        assert m.stats()["subscriptions"] == 0
        async with m.psubscribe("chat:*") as allowed:
            assert await m.publish("chat:9", "ok") == 1
            assert (await within(anext(allowed))).data == b"ok"


# -- driving the loop in short bursts ----------------------------------------------------------


def _run_in_bursts(server: RedisServer, *, first_use_in_loop: bool) -> None:
    """Code that drives its own loop in short bursts (a sync framework, a test harness): the
    loop is stopped between them. The multiplexer sits behind a slow link and the publish
    goes straight to the server, so an await that returned early loses it."""
    loop = asyncio.new_event_loop()
    try:
        link = SlowLink(server.port, 0.01)
        loop.run_until_complete(link.start())
        admin = Admin(server.url)
        m = Multiplexer(link.url)  # made outside the loop
        try:
            if first_use_in_loop:
                loop.run_until_complete(m.wait_connected(5))
            rec = Recorder()
            sub = m.new_channel_subscription(rec.on_message)
            for i in range(10):
                channel = fresh("burst")
                loop.run_until_complete(asyncio.wait_for(sub.add(channel), 5))
                # The loop is stopped here: nothing runs until the next burst.
                direct = loop.run_until_complete(admin.publish(channel, "direct"))
                assert direct == 1, f"round {i}: not counted"
                assert loop.run_until_complete(m.publish(channel, "own")) == 1, f"round {i}"
                loop.run_until_complete(rec.received(2 * (i + 1)))
                assert rec.messages[-2:] == [
                    (channel.encode(), b"direct"),
                    (channel.encode(), b"own"),
                ]
        finally:
            loop.run_until_complete(m.aclose())
            loop.run_until_complete(admin.close())
            loop.run_until_complete(link.close())
    finally:
        loop.close()


def test_run_until_complete_of_an_add_then_a_publish(redis_server: RedisServer) -> None:
    _run_in_bursts(redis_server, first_use_in_loop=True)


def test_run_until_complete_of_the_first_add(redis_server: RedisServer) -> None:
    # Nothing ran in the loop before: the await itself is the first use inside it.
    _run_in_bursts(redis_server, first_use_in_loop=False)


# -- many awaiters ------------------------------------------------------------------------------


async def test_many_awaiters_on_the_same_and_on_different_names(mpx: Multiplexer) -> None:
    shared = fresh("same")
    own = [fresh("own") for _ in range(50)]
    recs = [Recorder(f"r{i}") for i in range(50)]
    subs = [mpx.new_channel_subscription(r.on_message) for r in recs]
    one = mpx.new_channel_subscription(ignore)
    awaits: list[Awaitable[None]] = []
    for sub, name in zip(subs, own, strict=True):
        awaits += [sub.add(shared), sub.add(name), sub.add(shared, name)]
    awaits += [one.add(shared) for _ in range(20)]  # many tasks on one subscription
    await within(asyncio.gather(*awaits), 10)
    assert not any(s.hears_activations for s in [*subs, one])
    assert await mpx.publish(shared, "all") == 1  # one connection for all
    for rec in recs:
        await rec.wait_until(lambda: (shared.encode(), b"all") in rec.messages)  # noqa: B023
    counts = await asyncio.gather(*(mpx.publish(n, "own") for n in own))
    assert counts == [1] * 50


async def test_a_cancelled_await_does_not_disturb_another(
    stalled: tuple[Multiplexer, FaultProxy],
) -> None:
    m, proxy = stalled
    rec = Recorder()
    sub = m.new_channel_subscription(rec.on_message)
    other = m.new_channel_subscription(ignore)
    cancelled = asyncio.ensure_future(sub.add("a"))
    same_name = asyncio.ensure_future(sub.add("a"))
    other_name = asyncio.ensure_future(sub.add("b"))
    other_sub = asyncio.ensure_future(other.add("a"))
    timed_out = asyncio.ensure_future(within(sub.add("a", "b"), 0.2))
    for task in (cancelled, same_name, other_name, other_sub):
        assert await still_pending(task, 0.05)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    with pytest.raises(AssertionError):
        await timed_out
    assert sub.hears_activations  # the others still wait
    for task in (same_name, other_name, other_sub):
        assert not task.done()
    proxy.resume()
    await within(asyncio.gather(same_name, other_name, other_sub))
    assert not sub.hears_activations and not other.hears_activations
    assert await m.publish("a", "x") == 1
    await rec.received(1)


async def test_hears_activations_is_restored_after_every_kind_of_wait(
    stalled: tuple[Multiplexer, FaultProxy],
) -> None:
    m, proxy = stalled
    plain = m.new_channel_subscription(ignore)
    assert not plain.hears_activations
    # Timed out.
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.1):
            await plain.add("a")
    assert not plain.hears_activations
    # Cancelled.
    task = asyncio.ensure_future(plain.add("a"))
    assert await still_pending(task, 0.05)
    assert plain.hears_activations
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not plain.hears_activations
    # Released by a removal.
    task = asyncio.ensure_future(plain.add("b"))
    assert await still_pending(task, 0.05)
    plain.remove("b")
    await within(task)
    assert not plain.hears_activations
    # Completed.
    proxy.resume()
    await within(plain.add("a"))
    assert not plain.hears_activations
    # Subscriptions that hear activations anyway keep hearing them.
    rec = Recorder()
    with_cb = m.new_channel_subscription(rec.on_message, None, rec.on_activation)
    queued = m.new_channel_subscription(AsyncRecorder().on_message)
    for sub in (with_cb, queued):
        assert sub.hears_activations
        await within(sub.add(fresh("keep")))
        assert sub.hears_activations
    await rec.activated(*with_cb.channels)


# -- a cluster ----------------------------------------------------------------------------------


@pytest.mark.timeout(60)
async def test_cluster_await_add_of_shard_channels_on_several_slots(
    cluster: RedisCluster,
) -> None:
    owners = slot_owners(cluster)
    tag = fresh("sh")
    names = [n for node in cluster.primaries() for n in names_on(owners, node, f"{tag}.", 4)]
    async with ClusterMultiplexer(cluster.url) as m:
        rec = Recorder()
        sub = m.new_channel_subscription(rec.on_message)  # shard channels on a cluster
        await within(sub.add(*names), 10, "await add of shard channels on 12 slots")
        assert not sub.hears_activations
        counts = await asyncio.gather(*(m.publish(n, n) for n in names))
        assert counts == [1] * len(names)
        await rec.received(len(names))
        assert sorted(rec.messages) == sorted((n.encode(), n.encode()) for n in names)
        # Fresh names one at a time, published at once: never lost.
        for i in range(30):
            name = fresh(f"{tag}-r")
            await within(sub.add(name), 10, f"round {i}")
            assert await m.publish(name, "first") == 1, f"round {i}: {name} not counted"
        async with contextlib.AsyncExitStack() as stack:
            it = await within(stack.enter_async_context(m.subscribe(*names[:6])), 10)
            assert await m.publish(names[5], "it") == 1  # sub and it, one connection
            message = await within(anext(it))
            assert message.data == b"it"


# -- ``in`` and the plain call ------------------------------------------------------------------


async def test_in_tells_whether_the_subscription_holds_a_channel(mpx: Multiplexer) -> None:
    sub = mpx.new_channel_subscription(ignore)
    assert "a" not in sub and b"a" not in sub
    sub.add("a", b"b", "caf\u00e9")
    for held in ("a", b"a", "b", b"b", "caf\u00e9", "caf\u00e9".encode()):
        assert held in sub, held
    for other in ("c", b"c", "", b"", "A", b"ab", "ab"):
        assert other not in sub, other
    for not_a_name in (1, None, 1.5, object(), ("a",), ["a"], {"a": 1}):
        assert not_a_name not in sub, not_a_name  # no raise either
    sub.remove("a")
    assert "a" not in sub and b"a" not in sub and "b" in sub
    # Sizes beyond a tuple (a dict inside): the same answers.
    many = [f"n{i}" for i in range(10)]
    sub.add(*many)
    assert all(n in sub and n.encode() in sub for n in many)
    assert "n10" not in sub and b"n1" in sub and b"n" not in sub
    for not_a_name in (1, None, object(), ("n1",), ["n1"], {"n1": 1}, {"n1"}):
        assert not_a_name not in sub, not_a_name  # held in a dict now: unhashables too
    sub.clear()
    assert not any(n in sub for n in [*many, "b"])
    async with mpx.subscribe("it") as it:
        assert "it" in it and b"it" in it and "other" not in it and 5 not in it


async def test_add_needs_no_await(mpx: Multiplexer) -> None:
    rec = Recorder()
    sub = mpx.new_channel_subscription(rec.on_message, None, rec.on_activation)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = sub.add("plain")
        assert "1 name" in repr(result)
        del result
        gc.collect()
        await rec.activated("plain")
        gc.collect()
    assert [w for w in caught if issubclass(w.category, RuntimeWarning)] == []
    assert await mpx.publish("plain", "x") == 1
    await rec.received(1)
    await within(sub.add())  # nothing to wait for
