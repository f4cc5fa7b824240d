"""Connection and lifecycle (B1-B11) and connection options."""

from __future__ import annotations

import asyncio
import gc

import pytest

from redismpx import (
    ConnectError,
    InvalidArgument,
    InvalidArgumentType,
    Multiplexer,
    PromiseTimeout,
    State,
    SubscriptionClosed,
)
from support.admin import Admin
from support.internals import link_of
from support.recorder import Recorder


async def test_one_connection_whatever_the_number_of_subscriptions(mpx: Multiplexer, admin) -> None:
    # B1
    rec = Recorder()
    for i in range(100):
        s = mpx.new_channel_subscription(*rec.callbacks)
        s.add(f"c{i}", "shared")
        mpx.new_pattern_subscription(f"p{i}*", *rec.callbacks)
    await rec.wait_until(lambda: len(rec.activations) == 300, 10)
    assert len(await admin.pubsub_clients()) == 1


def test_constructing_needs_no_loop_and_everything_goes_out_in_one_command(
    redis_server,
) -> None:
    # B2: built outside any event loop; subscriptions made before the link is up.
    m = Multiplexer(redis_server.url)
    rec = Recorder()
    s = m.new_channel_subscription(*rec.callbacks)
    s.add("a", "b", "c")

    async def main() -> tuple[int, int]:
        admin = Admin(redis_server.url)
        await admin.reset_stats()
        rec._changed = asyncio.Event()
        m.new_pattern_subscription("p*", *rec.callbacks)  # starts the link
        await rec.activated("a", "b", "c", "p*")
        calls = await admin.calls("subscribe"), await admin.calls("psubscribe")
        await admin.close()
        await m.aclose()
        return calls

    assert asyncio.run(main()) == (1, 1)


async def test_close_really_closes(redis_server, admin) -> None:
    # B9, B10, B11
    m = Multiplexer(redis_server.url)
    rec = Recorder()
    s = m.new_channel_subscription(*rec.callbacks)
    s.add("x")
    prom = m.new_promise_subscription("p:")
    await rec.activated("x")
    await asyncio.wait_for(prom.wait_for_activation(), 5)
    pending = prom.new_promise("k", 30)
    before = asyncio.all_tasks()
    await m.aclose()
    await m.aclose()  # idempotent
    m.close()
    assert m.state is State.CLOSED
    with pytest.raises(SubscriptionClosed):
        await pending
    async with asyncio.timeout(5):
        while await admin.numsub("x") != 0 or await admin.pubsub_clients():
            await asyncio.sleep(0.01)
    for call in (
        lambda: s.add("y"),
        lambda: m.new_channel_subscription(print),
        lambda: m.new_pattern_subscription("x*", print),
        lambda: m.new_promise_subscription("q"),
        lambda: prom.new_promise("k", 1),
    ):
        with pytest.raises(SubscriptionClosed):
            call()
    leftover = {t for t in asyncio.all_tasks() - before if not t.done()}
    assert not leftover
    assert not [t for t in asyncio.all_tasks() if "redismpx" in t.get_name()]
    await admin.publish("x", "after close")
    assert rec.messages == []


async def test_async_with_waits_for_every_task(redis_server) -> None:
    async with Multiplexer(redis_server.url) as m:
        rec = Recorder()

        async def slow(channel: bytes, data: bytes) -> None:
            await asyncio.sleep(100)

        s = m.new_channel_subscription(slow, None, rec.on_activation)
        s.add("x")
        await rec.activated("x")
    assert not [t for t in asyncio.all_tasks() if "redismpx" in t.get_name()]
    gc.collect()


async def test_password_acl_user_db_and_client_name(server_factory) -> None:
    # B3
    srv = server_factory(password="s3cret")
    await srv.acommand(
        "ACL",
        "SETUSER",
        "chat",
        "on",
        ">pw",
        "&chat:*",
        "+@pubsub",
        "+ping",
        "+hello",
        "+client",
        "+select",
    )
    for url, kwargs in [
        (f"redis://:s3cret@127.0.0.1:{srv.port}/2", {"client_name": "mpx-test"}),
        (f"redis://chat:pw@127.0.0.1:{srv.port}", {"protocol": 2, "client_name": "mpx-test"}),
    ]:
        async with Multiplexer(url, **kwargs) as m:
            rec = Recorder()
            s = m.new_channel_subscription(*rec.callbacks)
            s.add("chat:1")
            await rec.activated("chat:1")
            clients = await srv.acommand("CLIENT", "LIST", "TYPE", "pubsub", decode=True)
            assert "name=mpx-test" in clients
            await srv.acommand("PUBLISH", "chat:1", "hi")
            await rec.received(1)


async def test_wrong_password_keeps_retrying_and_reports(server_factory, caplog) -> None:
    srv = server_factory(password="right")
    async with Multiplexer(f"redis://:wrong@127.0.0.1:{srv.port}") as m:
        rec = Recorder()
        s = m.new_channel_subscription(*rec.callbacks)
        s.add("x")
        async with asyncio.timeout(5):
            while m.stats()["last_error"] is None:
                await asyncio.sleep(0.01)
        assert isinstance(m.last_error, ConnectError)
        assert "WRONGPASS" in str(m.last_error) or "invalid" in str(m.last_error)
        assert "wrong" not in str(m.last_error).replace("WRONGPASS", "")
        assert m.state in (State.CONNECTING, State.DISCONNECTED)  # never up
        await srv.acommand("CONFIG", "SET", "requirepass", "wrong")  # the operator fixes it
        await rec.activated("x", timeout=5)
    assert caplog.text.count("refused the handshake") <= 2  # once per distinct error


async def test_unix_socket_and_resp2(server_factory) -> None:
    srv = server_factory(unix_socket=True)
    for protocol in (2, 3):
        async with Multiplexer(f"unix://{srv.unix_path}", protocol=protocol) as m:
            rec = Recorder()
            m.new_channel_subscription(*rec.callbacks).add("x")
            await rec.activated("x")
            await srv.acommand("PUBLISH", "x", "m")
            await rec.received(1)


async def test_connection_refused_at_start_keeps_retrying(server_factory) -> None:
    srv = server_factory()
    port = srv.port
    srv.stop()
    async with Multiplexer(f"redis://127.0.0.1:{port}", backoff_cap=0.05) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        async with asyncio.timeout(5):
            while m.last_error is None:
                await asyncio.sleep(0.01)
        assert isinstance(m.last_error, ConnectError)
        await srv.arestart()
        await rec.activated("x")
        assert rec.disconnects == []  # never connected before: nobody was active


def test_bad_arguments_are_typed_errors() -> None:
    with pytest.raises(InvalidArgument, match="scheme"):
        Multiplexer("http://localhost")
    with pytest.raises(InvalidArgumentType):
        Multiplexer(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="health_check_interval"):
        Multiplexer(health_check_interval=-1)
    with pytest.raises(InvalidArgument):
        Multiplexer(backoff_base=float("nan"))
    with pytest.raises(InvalidArgument, match="overflow"):
        Multiplexer(overflow="explode")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="max_buffer"):
        Multiplexer(max_buffer=0)


def test_password_never_in_repr_or_errors() -> None:
    m = Multiplexer("redis://user:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(m) and "hunter2" not in repr(link_of(m).options)
    assert "hunter2" not in str(m.stats())


def test_promise_timeout_is_a_timeout_error() -> None:
    assert issubclass(PromiseTimeout, asyncio.TimeoutError)


def test_works_under_uvloop(redis_server) -> None:
    import uvloop  # a test dependency: uvloop must work when users install it

    async def main() -> list[tuple[bytes, bytes]]:
        async with Multiplexer(redis_server.url) as m:
            rec = Recorder()
            m.new_channel_subscription(*rec.callbacks).add("x")
            await rec.activated("x")
            admin = Admin(redis_server.url)
            await admin.publish("x", "over uvloop")
            await rec.received(1)
            await admin.kill_pubsub()
            await rec.activated("x", count=2)
            await admin.close()
            return rec.messages

    assert uvloop.run(main()) == [(b"x", b"over uvloop")]


async def test_end_to_end_ping(mpx: Multiplexer, admin) -> None:
    rtt = await mpx.ping(timeout=5)
    assert 0 <= rtt < 5
    assert mpx.stats()["subscriptions"] == 0  # the probe cleans up after itself
    async with asyncio.timeout(5):
        while await admin.channels():
            await asyncio.sleep(0.01)


async def test_wrong_db_keeps_retrying_and_reports(redis_server) -> None:
    async with Multiplexer(redis_server.url, db=99, backoff_cap=0.05) as m:
        async with asyncio.timeout(5):
            while m.last_error is None:
                await asyncio.sleep(0.01)
        assert isinstance(m.last_error, ConnectError)
        assert "SELECT" in str(m.last_error)
        assert m.state in (State.CONNECTING, State.DISCONNECTED)  # never up


async def test_from_redis_client_settings(redis_server) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(
        host="127.0.0.1", port=redis_server.port, db=3, client_name="from-redis-py"
    )
    async with Multiplexer.from_redis(client) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        clients = await redis_server.acommand("CLIENT", "LIST", "TYPE", "pubsub", decode=True)
        assert "name=from-redis-py" in clients and "db=3" in clients
    await client.aclose()
    with pytest.raises(InvalidArgumentType):
        Multiplexer.from_redis(object())


async def test_state_is_disconnected_while_waiting_out_the_backoff(server_factory) -> None:
    # Regression: a failed attempt left the state "connecting" for the whole backoff wait, so
    # an outage of Redis read as a connection about to come up (the demo's badge never
    # turned red). The jitter is pinned so that each wait lasts the full second.
    srv = server_factory()
    async with Multiplexer(
        srv.url, backoff_base=1.0, backoff_cap=1.0, random_source=lambda: 0.999
    ) as m:
        await m.wait_connected(5)
        await srv.astop()
        async with asyncio.timeout(5):
            while m.last_error is None or "could not connect" not in str(m.last_error):
                await asyncio.sleep(0.01)
        assert m.state is State.DISCONNECTED
        await srv.astart()
        await m.wait_connected(5)
        assert m.state is State.CONNECTED
