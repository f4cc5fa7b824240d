"""redis-py's asyncio PubSub, used the way its documentation shows.

``r = redis.asyncio.Redis.from_url(url); pubsub = r.pubsub(); await pubsub.subscribe(...)`` and
one reader task looping on ``await pubsub.get_message(timeout=None)``. The per-subscription
dispatch is what a user writes on top: a dict channel -> list of callbacks (awaiting the result
when the callback is ``async``), reference counts so that ``SUBSCRIBE``/``UNSUBSCRIBE`` are sent
only for the first/last subscriber of a name, and a ``try`` around each callback. Reconnects
are redis-py's own (its retry object reconnects and replays the subscriptions); the loop only
sleeps 5 ms if ``get_message`` gives up and raises.

Publishing (S11) is ``await r.publish(channel, data)`` on the same ``Redis`` object: its
connection pool lends each concurrent call a connection of its own. The default pool holds at
most 100 connections and raises ``MaxConnectionsError("Too many connections")`` beyond that, so
S11 sizes it with ``max_connections`` (what a user does when 1,000 tasks publish at once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, cast

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bench.contenders.base import Contender, OnMessage

log = logging.getLogger(__name__)


class RedisPySub:
    """Per subscription: the callback and its channel set (or pattern)."""

    __slots__ = ("cb", "names", "pattern")

    def __init__(self, cb: OnMessage, pattern: bytes | None = None) -> None:
        self.cb = cb
        self.names: set[bytes] = set()
        self.pattern = pattern


class RedisPy(Contender):
    name = "redispy"

    def __init__(
        self, url: str, track_activation: bool = True, max_connections: int | None = None
    ) -> None:
        super().__init__(url, track_activation)
        self.options: dict[str, Any] = (
            {} if max_connections is None else {"max_connections": max_connections}
        )
        self.channels: dict[bytes, list[OnMessage]] = {}
        self.patterns: dict[bytes, list[OnMessage]] = {}
        self.sent = 0
        self.acked = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.redis: Any = aioredis.Redis.from_url(self.url, **self.options)
        self.pubsub: Any = cast(Any, self.redis.pubsub())
        await self.pubsub.connect()
        self._task = asyncio.create_task(self._reader())

    async def _reader(self) -> None:
        pubsub = self.pubsub
        channels = self.channels
        patterns = self.patterns
        while True:
            try:
                message = await pubsub.get_message(timeout=None)
            except (RedisConnectionError, RedisTimeoutError, OSError):
                await asyncio.sleep(0.005)
                continue
            if message is None:
                continue
            kind = message["type"]
            if kind == "message":
                targets = channels.get(message["channel"])
            elif kind == "pmessage":
                targets = patterns.get(message["pattern"])
            else:
                if kind == "subscribe" or kind == "psubscribe":
                    self.acked += 1
                continue
            if targets:
                channel = message["channel"]
                data = message["data"]
                for cb in targets:
                    try:
                        result = cb(channel, data)
                        if result is not None:
                            await result
                    except Exception:
                        log.exception("callback failed")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self.pubsub.aclose()
        await self.redis.aclose()

    def subscription(self, on_message: OnMessage) -> RedisPySub:
        return RedisPySub(on_message)

    async def add(self, sub: RedisPySub, names: Sequence[bytes]) -> None:
        new: list[bytes] = []
        for name in names:
            if name in sub.names:
                continue
            sub.names.add(name)
            targets = self.channels.get(name)
            if targets is None:
                self.channels[name] = [sub.cb]
                new.append(name)
            else:
                targets.append(sub.cb)
        if new:
            self.sent += len(new)
            await self.pubsub.subscribe(*new)

    async def remove(self, sub: RedisPySub, names: Sequence[bytes]) -> None:
        gone = [name for name in names if name in sub.names and self._drop(sub, name)]
        if gone:
            await self.pubsub.unsubscribe(*gone)

    def _drop(self, sub: RedisPySub, name: bytes) -> bool:
        """Forget ``name`` for ``sub``; True if nobody wants it any more."""
        sub.names.discard(name)
        targets = self.channels[name]
        for i, cb in enumerate(targets):
            if cb is sub.cb:
                del targets[i]
                break
        if targets:
            return False
        del self.channels[name]
        return True

    async def close(self, sub: RedisPySub) -> None:
        if sub.pattern is not None:
            pattern, sub.pattern = sub.pattern, None
            targets = self.patterns[pattern]
            targets.remove(sub.cb)
            if not targets:
                del self.patterns[pattern]
                await self.pubsub.punsubscribe(pattern)
        else:
            await self.remove(sub, list(sub.names))

    async def psubscription(self, pattern: bytes, on_message: OnMessage) -> Any:
        sub = RedisPySub(on_message, pattern)
        targets = self.patterns.get(pattern)
        if targets is None:
            self.patterns[pattern] = [on_message]
            self.sent += 1
            await self.pubsub.psubscribe(pattern)
        else:
            targets.append(on_message)
        return sub

    async def publish(self, channel: bytes, data: bytes) -> int:
        count: int = await self.redis.publish(channel, data)
        return count

    def pending(self) -> int:
        return self.sent - self.acked
