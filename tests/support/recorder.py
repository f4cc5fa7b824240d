"""Callbacks that record what a subscription heard, and waits on it with timeouts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from support.waiting import wait_for


class Recorder:
    """``on_message``/``on_disconnect``/``on_activation`` that record, plus ``wait_until``."""

    def __init__(self, name: str = "rec") -> None:
        self.name = name
        self.messages: list[tuple[bytes, bytes]] = []
        self.activations: list[bytes] = []
        self.disconnects: list[BaseException] = []
        self.events: list[tuple[str, Any]] = []
        self._changed = asyncio.Event()

    def _note(self, kind: str, value: Any) -> None:
        self.events.append((kind, value))
        self._changed.set()

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.messages.append((channel, data))
        self._note("message", (channel, data))

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects.append(error)
        self._note("disconnect", error)

    def on_activation(self, name: bytes) -> None:
        self.activations.append(name)
        self._note("activation", name)

    @property
    def callbacks(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        return self.on_message, self.on_disconnect, self.on_activation

    async def wait_until(
        self, predicate: Callable[[], bool], timeout: float = 5.0, what: str = ""
    ) -> None:
        """Wait until ``predicate()`` holds, re-checking after every recorded event."""
        await wait_for(
            self._changed,
            predicate,
            timeout,
            lambda: (
                f"{self.name}: timed out after {timeout} s waiting for {what or predicate}; "
                f"events: {repr(self.events[-10:])[:2000]}"
            ),
        )

    async def activated(self, *names: bytes | str, count: int = 1, timeout: float = 5.0) -> None:
        want = [n.encode() if isinstance(n, str) else n for n in names]
        await self.wait_until(
            lambda: all(self.activations.count(n) >= count for n in want),
            timeout,
            f"activation of {want} x{count}",
        )

    async def received(self, n: int, timeout: float = 5.0) -> None:
        await self.wait_until(lambda: len(self.messages) >= n, timeout, f"{n} messages")

    async def disconnected(self, n: int = 1, timeout: float = 10.0) -> None:
        await self.wait_until(lambda: len(self.disconnects) >= n, timeout, f"{n} disconnects")


class AsyncRecorder(Recorder):
    """The same with ``async def`` callbacks (queued delivery)."""

    async def on_message(self, channel: bytes, data: bytes) -> None:  # type: ignore[override]
        Recorder.on_message(self, channel, data)

    async def on_disconnect(self, error: BaseException) -> None:  # type: ignore[override]
        Recorder.on_disconnect(self, error)

    async def on_activation(self, name: bytes) -> None:  # type: ignore[override]
        Recorder.on_activation(self, name)


_probes = 0


async def settle(mpx: Any, timeout: float = 5.0) -> bytes:
    """A barrier, not a sleep: subscribe a fresh probe channel and wait for its activation.

    Redis answers in order on the one connection, so once the probe is confirmed every
    command the multiplexer sent before it has been processed. Returns the probe's name
    (it stays subscribed: tests that inspect the server's channels account for it).
    """
    global _probes
    _probes += 1
    name = f"__settle:{_probes}".encode()
    rec = Recorder("settle")
    mpx.new_channel_subscription(rec.on_message, None, rec.on_activation).add(name)
    await rec.activated(name, timeout=timeout)
    return name
