"""The subscriber process: runs one scenario body (an ``async def``) for one contender.

The body gets a :class:`Ctl` to talk to the orchestrator. ``Ctl.block`` waits for the
orchestrator *while blocking the event loop*: nothing reads the subscriber socket meanwhile, so
the publisher can pre-buffer messages that are then drained under measurement. ``Ctl.recv``
waits without blocking the loop (used while a contender must keep working, e.g. reconnecting).
"""

from __future__ import annotations

import asyncio
import importlib
import traceback
from collections.abc import Callable, Coroutine
from multiprocessing.connection import Connection
from typing import Any

Body = Callable[["Ctl", str, dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]


class Ctl:
    """The worker's end of the pipe to the orchestrator."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, *msg: Any) -> None:
        self.conn.send(msg)

    def block(self, timeout: float = 300.0) -> tuple[Any, ...]:
        """Wait for the next message, blocking the whole event loop on purpose."""
        if not self.conn.poll(timeout):
            raise TimeoutError("no word from the orchestrator")
        msg: tuple[Any, ...] = self.conn.recv()
        return msg

    async def recv(self, timeout: float = 300.0) -> tuple[Any, ...]:
        """Wait for the next message while the event loop keeps running."""
        loop = asyncio.get_running_loop()
        ready = loop.create_future()
        fd = self.conn.fileno()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            if not self.conn.poll(0):
                await asyncio.wait_for(ready, timeout)
        finally:
            loop.remove_reader(fd)
        msg: tuple[Any, ...] = self.conn.recv()
        return msg


def _load(func: str) -> Body:
    module, name = func.split(":")
    body: Body = getattr(importlib.import_module(module), name)
    return body


def worker_main(
    conn: Connection, func: str, contender: str, params: dict[str, Any], use_uvloop: bool
) -> None:
    """Process entry point."""
    ctl = Ctl(conn)
    try:
        body = _load(func)
        result: dict[str, Any]
        if use_uvloop:
            import uvloop

            result = uvloop.run(body(ctl, contender, params))
        else:
            result = asyncio.run(body(ctl, contender, params))
        ctl.send("result", result)
    except BaseException:
        try:
            ctl.send("error", traceback.format_exc())
        except OSError:
            pass
    finally:
        conn.close()
