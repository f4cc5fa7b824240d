"""The part the two WebSocket protocols share: the command loop, limits, one channel
subscription per socket, and closing everything when the socket goes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from starlette.websockets import WebSocket

from redismpx import ChannelSubscription, ConnectionLost, PublishTimeout

from .context import DemoContext
from .limits import BadInput, RateLimiter
from .peer import Peer

logger = logging.getLogger("redismpx.demo")


class Session:
    """One WebSocket: subclasses implement :meth:`handle` and the subscription callbacks."""

    BUFFER = 256  # pending messages per subscription before the oldest are dropped
    NAME_PREFIX = "tab"  # names are ``tab-1``, ``tab-2``... (unique in the process)

    def __init__(self, websocket: WebSocket, ctx: DemoContext) -> None:
        self.ctx = ctx
        self.name = ctx.new_name(self.NAME_PREFIX)
        self.peer = Peer(websocket)
        self.rate = RateLimiter(ctx.limits.rate, ctx.limits.burst)
        self.states: dict[str, str] = {}  # channel -> activating / active / disconnected
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_rate_error = 0.0
        self.channels: ChannelSubscription = ctx.mpx.new_channel_subscription(
            self.on_message,
            self.on_disconnect,
            self.on_activation,
            max_buffer=self.BUFFER,
            on_drop=self.on_drop,
        )

    # -- for subclasses ----------------------------------------------------------------------

    async def on_message(self, channel: bytes, data: bytes) -> None:
        raise NotImplementedError

    async def on_activation(self, channel: bytes) -> None:
        """Redis confirmed ``channel`` (again, after a reconnect)."""

    async def on_disconnect(self, error: BaseException) -> None:
        """The connection to Redis was lost; the multiplexer is reconnecting."""

    async def on_drop(self, count: int) -> None:
        """``count`` messages were dropped because this socket is slow."""

    async def on_open(self) -> None:
        """After accept."""

    def on_close(self) -> None:
        """The socket is gone: close the subclass' own subscriptions."""

    def poke(self) -> None:
        """Something process-wide changed (a tab came or went, the link to Redis): push a
        status update soon, if this protocol has them."""

    def hears(self, channel: str) -> bool:
        """True if a message published on ``channel`` now would reach this socket: Redis
        confirmed the channel for it (subclasses add patterns and promises)."""
        return self.states.get(channel) == "active"

    async def handle(self, text: str) -> None:
        """One text frame; raise :class:`BadInput` to refuse it."""
        raise NotImplementedError

    async def refuse(self, message: str) -> None:
        """Tell the client its input was refused."""
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """A task cancelled when the socket closes."""
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def publish(self, channel: str, message: str) -> int | None:
        """PUBLISH through the multiplexer (this socket recorded as the sender); a failure is
        refused (saying whether the message may have gone out), not raised."""
        try:
            return await self.ctx.publish(channel, message, sender=self.name)
        except PublishTimeout as exc:
            seconds = self.ctx.limits.publish_timeout
            if exc.sent:
                why = f"Redis did not answer within {seconds:g} s (it may have been delivered)"
            else:
                why = f"Redis is unreachable (no connection within {seconds:g} s): not sent"
        except ConnectionLost:
            why = "the connection to Redis broke (it may have been delivered)"
        except Exception as exc:  # an error reply (ServerError), e.g. an ACL refusal
            why = str(exc)
        logger.info("publish to %s failed: %s", channel, why)
        await self.refuse(f"publish to {channel} failed: {why}")
        return None

    async def run(self) -> None:
        """Accept, serve until the client leaves, then close every subscription."""
        self.ctx.opened(self)
        try:
            await self.peer.websocket.accept()
            await self.on_open()
            await self._loop()
        finally:
            self.peer.mark_closed()
            self.ctx.closed(self)
            self.channels.close()
            self.on_close()
            for task in list(self._tasks):
                task.cancel()
            for task in list(self._tasks):
                with contextlib.suppress(BaseException):
                    await task

    async def _loop(self) -> None:
        websocket, limits = self.peer.websocket, self.ctx.limits
        while True:
            frame = await websocket.receive()
            if frame["type"] == "websocket.disconnect":
                return
            text = frame.get("text")
            if not self.rate.allow():
                now = time.monotonic()
                if now - self._last_rate_error >= 1.0:  # one notice per second, not per frame
                    self._last_rate_error = now
                    await self.refuse(f"rate limit: at most {limits.rate:g} commands per second")
                continue
            try:
                if text is None:
                    raise BadInput("binary frames are not accepted; send text")
                if len(text) > limits.max_frame:
                    raise BadInput(f"frame too large (at most {limits.max_frame} characters)")
                await self.handle(text)
            except BadInput as exc:
                await self.refuse(str(exc))
            if self.peer.closed:
                return
