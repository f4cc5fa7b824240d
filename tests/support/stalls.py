"""Stalling a server on purpose (``DEBUG SLEEP``), and knowing when the stall has begun."""

from __future__ import annotations

import asyncio
from typing import Any

from redismpx.server import RedisServer

# How long a PING must go unanswered before the server counts as asleep: long enough that a
# server merely slowed by a loaded machine does not pass for one asleep. A stall must last
# well beyond it.
SILENCE = 0.3


async def wait_asleep(host: str, port: int) -> None:
    """Return once the server at ``host:port`` stops answering (a PING left unanswered for
    :data:`SILENCE`)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(5):
            while True:
                writer.write(b"*1\r\n$4\r\nPING\r\n")
                try:
                    async with asyncio.timeout(SILENCE):
                        await reader.readuntil(b"\r\n")
                except TimeoutError:
                    return
    finally:
        writer.close()


async def debug_sleep(server: RedisServer, seconds: float) -> asyncio.Task[Any]:
    """Make ``server`` sleep (``DEBUG SLEEP``); return once it has stopped answering, with
    the task that ends when it wakes."""
    task = asyncio.create_task(server.acommand("DEBUG", "SLEEP", str(seconds), timeout=30))
    await wait_asleep(server.host, server.port)
    return task
