"""Repeated outages under load: 1,000 subscriptions on 1,000 channels, a steady publisher."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from redismpx import Multiplexer
from support.admin import Admin
from support.waiting import poll_until

N = 1000


class Counting:
    """Per-subscription counters (plain callbacks: the cheapest possible consumer)."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.messages = 0
        self.disconnects = 0
        self.activations = 0

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.messages += 1

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects += 1

    def on_activation(self, name: bytes) -> None:
        self.activations += 1


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.slow
async def test_every_subscription_hears_each_outage_once(redis_server) -> None:
    fds_before = _open_fds()
    tasks_before = len(asyncio.all_tasks())
    admin = Admin(redis_server.url)
    stop = asyncio.Event()

    async def publisher() -> None:
        i = 0
        while not stop.is_set():
            try:
                pipe = admin.client.pipeline(transaction=False)
                for j in range(50):
                    pipe.publish(f"ch{(i + j) % N}", b"m")
                await pipe.execute()
            except Exception:  # the server is down: keep going, like a real app
                await asyncio.sleep(0.01)
            i += 50
            await asyncio.sleep(0.005)

    async with Multiplexer(redis_server.url) as m:
        subs = [Counting(i) for i in range(N)]
        for c in subs:
            m.new_channel_subscription(c.on_message, c.on_disconnect, c.on_activation).add(
                f"ch{c.index}"
            )
        await poll_until(lambda: all(c.activations == 1 for c in subs), "first activation")
        pub = asyncio.ensure_future(publisher())
        for outage, sig in enumerate([signal.SIGKILL, signal.SIGTERM, signal.SIGKILL], start=1):
            await redis_server.akill(sig)
            await poll_until(lambda: all(c.disconnects == outage for c in subs), "disconnects")  # noqa: B023
            await redis_server.arestart()
            await poll_until(
                lambda: all(c.activations == outage + 1 for c in subs),  # noqa: B023
                f"re-activation {outage}",
            )
        # After the last restart every channel delivers again.
        for c in subs:
            c.messages = 0
        await poll_until(lambda: all(c.messages > 0 for c in subs), "delivery on every channel", 20)
        stop.set()
        await pub
        assert all(c.disconnects == 3 and c.activations == 4 for c in subs)
        assert len(await admin.pubsub_clients()) == 1
    await admin.close()
    assert len(asyncio.all_tasks()) == tasks_before
    assert _open_fds() <= fds_before + 1  # the admin pool may keep one socket briefly
