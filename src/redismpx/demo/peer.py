"""Sending to one WebSocket from many tasks: serialized, time-bounded, failure-tolerant."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from starlette.websockets import WebSocket

logger = logging.getLogger("redismpx.demo")

SEND_TIMEOUT = 10.0


class Peer:
    """One WebSocket's sending side.

    Subscription workers, the status ticker and the command loop all send; a lock keeps their
    frames whole and in order. A socket that cannot take a frame within ``send_timeout``
    seconds is closed: until then the sending subscription's worker waits and the library's
    bounded buffer drops the oldest pending messages. After the socket is gone every send is
    a no-op returning False.
    """

    def __init__(self, websocket: WebSocket, send_timeout: float = SEND_TIMEOUT) -> None:
        self.websocket = websocket
        self.closed = False
        self._timeout = send_timeout
        self._lock = asyncio.Lock()

    async def send_text(self, text: str) -> bool:
        """Send one text frame; False if the socket is (now) closed."""
        if self.closed:
            return False
        async with self._lock:
            if self.closed:
                return False
            try:
                async with asyncio.timeout(self._timeout):
                    await self.websocket.send_text(text)
                return True
            except TimeoutError:
                logger.warning("closing a WebSocket that took no frame for %.0f s", self._timeout)
                self.closed = True
                with contextlib.suppress(Exception):
                    await self.websocket.close(code=1008, reason="too slow")
            except Exception:  # the client went away: its receive loop will see it
                self.closed = True
            return False

    async def send_json(self, obj: dict[str, Any]) -> bool:
        """Send ``obj`` as one compact JSON text frame."""
        return await self.send_text(json.dumps(obj, separators=(",", ":")))

    def mark_closed(self) -> None:
        """The receive loop saw the disconnect: stop sending."""
        self.closed = True
