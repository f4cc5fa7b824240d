"""The original examples' text protocol on ``/ws``, for command-line WebSocket clients.

* ``+chan`` joins ``chan``; ``-chan`` leaves it;
* ``!chan`` makes the *next* text frame a message published to ``chan``.

The server sends ``ch: [chan] msg: [message]`` for every message, and short status lines:
``ok: ...`` for each command, ``active: [chan]`` when Redis confirmed a channel (publish after
it to be sure to hear yourself), ``disconnected: [reason]`` when the link to Redis broke, and
``error: ...`` for a refused input (the socket stays open).
"""

from __future__ import annotations

from .limits import BadInput, check_channel, check_message
from .session import Session

HELP = "use +chan to join, -chan to leave, !chan to publish your next message to chan"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class TextSession(Session):
    """One command-line client (named ``cli-N`` as a sender on the page)."""

    NAME_PREFIX = "cli"
    _target: str | None = None  # set by !chan: where the next frame goes

    async def refuse(self, message: str) -> None:
        await self.peer.send_text(f"error: {message}")

    async def on_message(self, channel: bytes, data: bytes) -> None:
        await self.peer.send_text(f"ch: [{_text(channel)}] msg: [{_text(data)}]")

    async def on_activation(self, channel: bytes) -> None:
        if channel in self.channels.channels:  # a queued activation may arrive after -chan
            self.states[_text(channel)] = "active"
            await self.peer.send_text(f"active: [{_text(channel)}]")

    async def on_disconnect(self, error: BaseException) -> None:
        for name in self.states:
            self.states[name] = "disconnected"
        await self.peer.send_text(f"disconnected: [{error}]")

    async def on_drop(self, count: int) -> None:
        await self.peer.send_text(f"dropped: [{count}] messages (reading too slowly)")

    async def handle(self, text: str) -> None:
        limits = self.ctx.limits
        if self._target is not None:
            target, self._target = self._target, None
            receivers = await self.publish(target, check_message(text, limits))
            if receivers is not None:
                await self.peer.send_text(f"ok: published to [{target}] ({receivers} receivers)")
            return
        op, name = text[:1], text[1:].strip()
        if op not in ("+", "-", "!"):
            raise BadInput(f"unknown command {text[:20]!r}: {HELP}")
        name = check_channel(name, limits)
        if op == "+":
            if name.encode() not in self.channels.channels and (
                len(self.channels.channels) >= limits.max_channels
            ):
                raise BadInput(f"at most {limits.max_channels} channels per socket")
            self.states.setdefault(name, "activating")
            self.channels.add(name)
            await self.peer.send_text(f"ok: joined [{name}]")
        elif op == "-":
            self.states.pop(name, None)
            self.channels.remove(name)
            await self.peer.send_text(f"ok: left [{name}]")
        else:
            self._target = name
            await self.peer.send_text(f"ok: your next message goes to [{name}]")
