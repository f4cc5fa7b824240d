"""Faults inflicted for real: kills, restarts, CLIENT KILL, stalls, flapping, slow consumers."""

from __future__ import annotations

import asyncio
import signal

import pytest

from redismpx import HeartbeatTimeout, Multiplexer, State
from support.internals import link_of
from support.recorder import AsyncRecorder, Recorder


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
async def test_server_restart_is_rejoined_quickly(redis_server, admin, sig) -> None:
    async with Multiplexer(redis_server.url) as m:
        rec = Recorder()
        s = m.new_channel_subscription(*rec.callbacks)
        s.add("x")
        await rec.activated("x")
        loop = asyncio.get_running_loop()
        for outage in range(1, 4):
            await redis_server.akill(sig)
            await rec.disconnected(outage)
            assert m.state in (State.DISCONNECTED, State.CONNECTING)
            await redis_server.arestart()
            restarted = loop.time()
            await rec.activated("x", count=outage + 1)
            # backoff cap 512 ms: the restarted server is rejoined within about half a second
            assert loop.time() - restarted < 2.0
        assert len(rec.disconnects) == 3
        await admin.publish("x", "back")
        await rec.received(1)
        assert m.stats()["reconnects"] == 3


async def test_stalled_link_is_detected_by_heartbeat(redis_server, fault_proxy) -> None:
    proxy = await fault_proxy(redis_server.port)
    async with Multiplexer(proxy.url, health_check_interval=0.2, health_check_timeout=0.3) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        loop = asyncio.get_running_loop()
        proxy.stall()
        stalled = loop.time()
        await rec.disconnected(1, timeout=5)
        assert isinstance(rec.disconnects[0], HeartbeatTimeout)
        # detection within 2 * interval + timeout, plus slack for a loaded machine (a missed
        # heartbeat would take forever: the stalled link never closes by itself)
        assert loop.time() - stalled < 2 * 0.2 + 0.3 + 2.0
        proxy.resume()
        await rec.activated("x", count=2)


async def test_flapping_connection_backs_off(redis_server, fault_proxy) -> None:
    # B5: a link that is accepted and reset at once must not reconnect in a hot loop.
    proxy = await fault_proxy(redis_server.port)
    async with Multiplexer(proxy.url, backoff_base=0.01, backoff_cap=0.2) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        proxy.refuse(True)
        proxy.cut()
        await rec.disconnected(1)
        before = proxy.accepted
        await asyncio.sleep(1.0)  # a bounded observation window, not a wait for an event
        attempts = proxy.accepted - before
        # Full jitter with a 0.2 s cap averages >= 0.1 s per attempt: well under 30 per second.
        assert attempts < 30
        assert len(rec.disconnects) == 1  # once per outage, not per failed attempt
        proxy.refuse(False)
        await rec.activated("x", count=2, timeout=5)


async def test_cut_with_reset(redis_server, fault_proxy) -> None:
    proxy = await fault_proxy(redis_server.port)
    async with Multiplexer(proxy.url) as m:
        rec = AsyncRecorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        proxy.cut(rst=True)
        await rec.disconnected(1)
        await rec.activated("x", count=2)


async def test_output_buffer_limit_kill_is_recovered(redis_server, admin) -> None:
    # A stuck async consumer does not stall the reader, so Redis never needs to drop us for
    # that; a blocked event loop does, which pausing the transport's reading reproduces.
    await admin.client.config_set("client-output-buffer-limit", "pubsub 64kb 32kb 1")
    async with Multiplexer(redis_server.url) as m:
        rec = Recorder()
        s = m.new_channel_subscription(*rec.callbacks)
        s.add("x")
        await rec.activated("x")
        conn = link_of(m).conn
        assert conn is not None and conn._transport is not None
        conn._transport.pause_reading()  # what a blocked event loop looks like to Redis
        payload = b"x" * 4096
        for _ in range(200):  # bounded: at most 200 x 500 x 4 KiB published
            pipe = admin.client.pipeline(transaction=False)
            for _ in range(500):
                pipe.publish("x", payload)
            if 0 in await pipe.execute():
                break  # Redis dropped the subscriber
        else:
            raise AssertionError("the server never enforced its output buffer limit")
        conn._transport.resume_reading()
        await rec.disconnected(1, timeout=10)
        await rec.activated("x", count=2, timeout=10)
        await admin.publish("x", "after")
        await rec.wait_until(lambda: rec.messages[-1] == (b"x", b"after"))
