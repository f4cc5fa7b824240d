"""The Sentinel topology: one link to whichever node the sentinels name primary, moved at
once when a sentinel announces a failover (``+switch-master``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .._backoff import Backoff
from .._connection import Connection, connect
from .._protocol import encode_command
from .._router import RouterHost, SingleRouter
from ..errors import ConnectionLost, ServerError
from ._config import Address, SentinelConfig, where
from ._resolve import Sentinels

logger = logging.getLogger("redismpx.sentinel")

_CHANNEL = b"+switch-master"
_PING = encode_command(b"PING")
STABLE_AFTER = 1.0  # a watch connection up this long starts the backoff over


class SentinelRouter(SingleRouter):
    """A :class:`SingleRouter` whose link dials the primary through the sentinels, plus a
    watcher: a Pub/Sub connection to one sentinel, subscribed to ``+switch-master``."""

    def __init__(self, host: RouterHost, config: SentinelConfig) -> None:
        self.config = config
        self.sentinels = Sentinels(config)
        # Where each side is connected (the primary it confirmed when it dialled).
        self._link_at: Address | None = None
        self._commands_at: Address | None = None
        super().__init__(host, config.data, dial=self._dial_link, commands_dial=self._dial_commands)
        self.failovers = 0  # announced failovers followed
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_conn: Connection | None = None
        self._logged: set[str] = set()  # the watcher's errors logged since it last worked

    async def _dial_link(self) -> Connection:
        conn, primary = await self.sentinels.connect_primary()
        self.link.options = self.config.data.with_address(*primary)
        self._link_at = primary
        return conn

    async def _dial_commands(self) -> Connection:
        conn, self._commands_at = await self.sentinels.connect_primary()
        return conn

    # -- the Router protocol, where it differs -----------------------------------------------

    def start(self) -> None:
        super().start()
        if self._watch_task is None:
            self._watch_task = self._host.tasks.spawn(
                self._watch(), f"redismpx sentinel watch {self.config.service_name}"
            )

    def close(self) -> None:
        super().close()
        if self._watch_conn is not None:
            self._watch_conn.abort(ConnectionLost("multiplexer closed"))
        if self._watch_task is not None:
            self._watch_task.cancel()

    def abandon(self) -> None:
        super().abandon()
        self._watch_task = None
        self._watch_conn = None

    def describe(self) -> str:
        hosts = ",".join(where(a) for a in self.config.sentinels)
        url = f"redis+sentinel://{hosts}/{self.config.service_name}"
        primary = self.sentinels.primary
        return url if primary is None else f"{url} (primary {where(primary)})"

    def add_stats(self, stats: dict[str, Any]) -> None:
        super().add_stats(stats)
        primary = self._link_at if self.link.conn is not None else None
        stats["primary"] = None if primary is None else where(primary)
        stats["sentinels"] = [where(a) for a in self.sentinels.known]
        stats["failovers"] = self.failovers

    # -- following failovers -----------------------------------------------------------------

    def switched(self, primary: Address) -> None:
        """``primary`` is the primary now: a connection to another node leaves it at once
        rather than when that node times out. Each side (Pub/Sub, commands) then dials
        ``primary`` first (confirmed with ``ROLE``), the sentinels if that fails."""
        self.sentinels.announced = primary
        # Waiting out a backoff (the old primary was unreachable): dial again now.
        self.link.wake()
        self.commands.wake()
        link_moves = self.link.conn is not None and self._link_at != primary
        commands_move = self.commands.conn is not None and self._commands_at != primary
        if not (link_moves or commands_move):
            return  # not connected (dialling again now), or already there
        old = self._link_at if link_moves else self._commands_at
        was = "?" if old is None else where(old)
        error = ConnectionLost(
            f"failover: the primary of {self.config.service_name!r} moved from {was} to "
            f"{where(primary)}"
        )
        if link_moves:
            self.failovers += 1
            logger.warning("%s; reconnecting", error)
            assert self.link.conn is not None
            self.link.conn.abort(error)
        if commands_move:
            self.commands.reconnect(error)

    def _on_event(self, frame: Any) -> None:
        # ["message", "+switch-master", "<name> <old-ip> <old-port> <new-ip> <new-port>"]
        if not (isinstance(frame, list) and len(frame) == 3 and frame[0] == b"message"):
            return  # subscribe acks, PING replies
        fields = bytes(frame[2]).split()
        service = self.config.service_name.encode()
        if len(fields) == 5 and fields[0] == service and fields[4].isdigit():
            self.switched((fields[3].decode(errors="replace"), int(fields[4])))

    async def _watch(self) -> None:
        tuning = self._host.tuning
        backoff = Backoff(tuning.backoff_base, tuning.backoff_cap, tuning.random_source)
        loop = asyncio.get_running_loop()
        while True:
            for sentinel in list(self.sentinels.known):
                started = loop.time()
                try:
                    await self._watch_one(sentinel)
                except (ConnectionLost, ServerError, TimeoutError) as exc:
                    self._watch_failed(sentinel, exc)
                except Exception:
                    # A bug of ours: the watcher must not die of it (failovers would then be
                    # noticed only when the old primary times out).
                    logger.exception("the failover watcher failed; it carries on")
                if loop.time() - started >= STABLE_AFTER:
                    backoff.reset()
            await asyncio.sleep(backoff.next_delay())

    async def _watch_one(self, sentinel: Address) -> None:
        opts = self.config.sentinel_options(sentinel)
        conn = self._watch_conn = await connect(opts)
        try:
            conn.start_events(self._on_event)
            async with asyncio.timeout(opts.connect_timeout):
                await conn.request(b"SUBSCRIBE", _CHANNEL)
            conn.start_heartbeat(_Pinger(conn), *self._heartbeat())
            if self._logged:
                logger.info("watching failovers through sentinel %s", where(sentinel))
                self._logged.clear()
            # A failover while nobody watched: ask now that events can no longer be missed
            # (and believe the answer only if the node agrees: a sentinel may lag behind).
            named = await self.sentinels.ask(sentinel)
            if (
                named is not None
                and named not in (self._link_at, self._commands_at)
                and await self.sentinels.is_primary(named)
            ):
                self.switched(named)
            error = await conn.closed
            raise error if isinstance(error, ConnectionLost) else ConnectionLost(str(error))
        finally:
            self._watch_conn = None
            conn.abort(ConnectionLost("watch ended"))

    def _heartbeat(self) -> tuple[float, float]:
        tuning = self._host.tuning
        return tuning.health_check_interval, tuning.health_check_timeout

    def _watch_failed(self, sentinel: Address, exc: BaseException) -> None:
        text = f"watching failovers through sentinel {where(sentinel)}: {exc}"
        if isinstance(exc, TimeoutError):
            text = f"sentinel {where(sentinel)} did not answer SUBSCRIBE in time"
        if text not in self._logged:  # once per distinct error, until a watch works
            self._logged.add(text)
            logger.warning("%s; trying the next sentinel", text)
        else:
            logger.debug("%s; trying the next sentinel", text)


class _Pinger:
    # In subscribed mode the PING reply is a push-like ["pong", ""]: no future waits for it.
    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def send_ping(self) -> None:
        self._conn.write(_PING)
