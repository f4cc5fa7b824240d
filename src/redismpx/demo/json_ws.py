"""The browser protocol on ``/ws/json``: one JSON object per frame, both ways.

Client to server (``op``):

* ``{"op": "join", "channel": C}`` / ``{"op": "leave", "channel": C}``
* ``{"op": "psubscribe", "pattern": P}`` / ``{"op": "punsubscribe", "pattern": P}``
* ``{"op": "publish", "channel": C, "message": M}``
* ``{"op": "ask", "suffix": S, "question": Q, "timeout": T}``: a promise on ``promise:S``
* ``{"op": "answer", "suffix": S, "message": M}``: publish ``M`` on ``promise:S``
* ``{"op": "numbers", "action": "start" | "stop"}``: the process' numbered run across a
  restart (see :mod:`redismpx.demo.recovery`)

Server to client (``type``): ``welcome`` (``name``: this socket's short name, e.g.
``tab-3``), ``message`` (``channel``, ``message``, ``from``: the name of the socket of this
process that published it, or null, and, for a pattern, ``pattern``), ``sub`` (``kind``:
channel, pattern or promise; ``name``; ``state``: activating, active, disconnected or left),
``promise`` (``id``, ``suffix``, ``state``: activating, pending, resolved, timeout,
interrupted or failed), ``published`` (``channel``; ``tabs``: the sockets of this process the
message reached; ``redis``: the subscriber connections Redis counted, which is 1 for all the
tabs of one process), ``dropped``, ``stats`` (every second, and at once when a tab comes or
goes or the link changes: see :meth:`DemoContext.snapshot`, with ``numbers``, plus this
socket's subscriptions) and ``error`` (a refused input; the socket stays open).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket

from redismpx import (
    PatternSubscription,
    PromiseSubscription,
    PromiseTimeout,
    SubscriptionClosed,
    SubscriptionInterrupted,
)

from .board import PROMISE_PREFIX, QUESTIONS_CHANNEL
from .context import DemoContext
from .limits import (
    BadInput,
    check_channel,
    check_message,
    check_pattern,
    check_question,
    check_timeout,
)
from .session import Session

logger = logging.getLogger("redismpx.demo")

TICK = 0.5  # seconds between status checks
ACTIVATION_WAIT = 5.0  # seconds an ask waits for the promise subscription

Command = dict[str, Any]


def _text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


class JsonSession(Session):
    """One browser's subscriptions, promises and command loop."""

    def __init__(self, websocket: WebSocket, ctx: DemoContext) -> None:
        super().__init__(websocket, ctx)
        self.patterns: dict[str, PatternSubscription] = {}
        self.pattern_states: dict[str, str] = {}
        self.promises: PromiseSubscription | None = None
        self._promise_state: str | None = None
        self._stats_due = asyncio.Event()  # set on link events: push stats at once
        self._asks: dict[int, asyncio.Task[None]] = {}
        self._waiting: dict[int, tuple[str, float]] = {}  # announced: id -> (suffix, expires)
        self._ids = itertools.count(1)
        self._ops: dict[str, Callable[[Command], Awaitable[None]]] = {
            "join": self._join,
            "leave": self._leave,
            "psubscribe": self._psubscribe,
            "punsubscribe": self._punsubscribe,
            "publish": self._publish,
            "ask": self._ask,
            "answer": self._answer,
            "numbers": self._numbers,
        }

    # -- lifecycle ---------------------------------------------------------------------------

    async def on_open(self) -> None:
        limits = self.ctx.limits
        await self.peer.send_json(
            {
                "type": "welcome",
                "name": self.name,
                "prefix": PROMISE_PREFIX,
                "questions_channel": QUESTIONS_CHANNEL,
                "limits": {"max_name": limits.max_name, "max_message": limits.max_message},
            }
        )
        self.spawn(self._ticker())

    def on_close(self) -> None:
        for sub in self.patterns.values():
            sub.close()
        if self.promises is not None:
            self.promises.close()  # pending promises fail with SubscriptionClosed
        for ask_id in list(self._waiting):  # nobody will hear the answers
            self._withdraw(ask_id)

    def poke(self) -> None:
        self._stats_due.set()

    def hears(self, channel: str) -> bool:
        if super().hears(channel):
            return True
        for pattern, state in self.pattern_states.items():
            # The demo's patterns have no backslash or '!': Redis' [^...] is fnmatch's [!...].
            if state == "active" and fnmatch.fnmatchcase(channel, pattern.replace("[^", "[!")):
                return True
        if channel.startswith(PROMISE_PREFIX) and self._promises_state() == "active":
            suffix = channel[len(PROMISE_PREFIX) :]
            return any(waiting == suffix for waiting, _ in self._waiting.values())
        return False

    async def refuse(self, message: str) -> None:
        await self.peer.send_json({"type": "error", "error": message})

    async def handle(self, text: str) -> None:
        try:
            cmd = json.loads(text)
        except ValueError:
            raise BadInput("not JSON") from None
        if not isinstance(cmd, dict):
            raise BadInput("a command is a JSON object with an 'op'")
        op = self._ops.get(cmd.get("op"))  # type: ignore[arg-type]
        if op is None:
            raise BadInput(f"unknown op {cmd.get('op')!r}; known: {', '.join(self._ops)}")
        await op(cmd)

    # -- subscription events (async: the library queues them per subscription) --------------

    async def _sub_event(self, kind: str, name: str, state: str, error: str | None = None) -> None:
        if kind == "pattern" and name in self.pattern_states:
            self.pattern_states[name] = state
        event: Command = {"type": "sub", "kind": kind, "name": name, "state": state}
        if error is not None:
            event["error"] = error
        await self.peer.send_json(event)

    def _message(self, channel: bytes, data: bytes) -> Command:
        name, text = _text(channel), _text(data)
        sender = self.ctx.senders.sender_of(name, text)
        return {"type": "message", "channel": name, "message": text, "from": sender}

    async def on_message(self, channel: bytes, data: bytes) -> None:
        await self.peer.send_json(self._message(channel, data))

    async def on_activation(self, channel: bytes) -> None:
        self._stats_due.set()
        name = _text(channel)
        if name in self.states:  # a queued activation may arrive after a leave
            self.states[name] = "active"
            await self._sub_event("channel", name, "active")

    async def on_disconnect(self, error: BaseException) -> None:
        self._stats_due.set()
        for name in list(self.states):  # joins may run while we await
            self.states[name] = "disconnected"
            await self._sub_event("channel", name, "disconnected", str(error))

    async def on_drop(self, count: int) -> None:
        await self.peer.send_json({"type": "dropped", "count": count})

    # -- commands ----------------------------------------------------------------------------

    async def _join(self, cmd: Command) -> None:
        name = check_channel(cmd.get("channel"), self.ctx.limits)
        if name not in self.states:
            if len(self.states) >= self.ctx.limits.max_channels:
                raise BadInput(f"at most {self.ctx.limits.max_channels} channels per socket")
            self.states[name] = "activating"
            await self._sub_event("channel", name, "activating")
            self.channels.add(name)
        else:
            await self._sub_event("channel", name, self.states[name])

    async def _leave(self, cmd: Command) -> None:
        name = check_channel(cmd.get("channel"), self.ctx.limits)
        self.channels.remove(name)
        self.states.pop(name, None)
        await self._sub_event("channel", name, "left")

    async def _psubscribe(self, cmd: Command) -> None:
        pattern = check_pattern(cmd.get("pattern"), self.ctx.limits)
        if pattern in self.patterns:
            return
        if len(self.patterns) >= self.ctx.limits.max_patterns:
            raise BadInput(f"at most {self.ctx.limits.max_patterns} patterns per socket")
        self.pattern_states[pattern] = "activating"
        await self._sub_event("pattern", pattern, "activating")

        async def message(channel: bytes, data: bytes) -> None:
            await self.peer.send_json({**self._message(channel, data), "pattern": pattern})

        async def activation(_: bytes) -> None:
            await self._sub_event("pattern", pattern, "active")

        async def disconnect(error: BaseException) -> None:
            await self._sub_event("pattern", pattern, "disconnected", str(error))

        self.patterns[pattern] = self.ctx.mpx.new_pattern_subscription(
            pattern,
            message,
            disconnect,
            activation,
            max_buffer=self.BUFFER,
            on_drop=self.on_drop,
        )

    async def _punsubscribe(self, cmd: Command) -> None:
        pattern = check_pattern(cmd.get("pattern"), self.ctx.limits)
        sub = self.patterns.pop(pattern, None)
        self.pattern_states.pop(pattern, None)
        if sub is not None:
            sub.close()
        await self._sub_event("pattern", pattern, "left")

    async def _publish(self, cmd: Command) -> None:
        channel = check_channel(cmd.get("channel"), self.ctx.limits)
        await self._do_publish(channel, check_message(cmd.get("message"), self.ctx.limits))

    async def _answer(self, cmd: Command) -> None:
        suffix = check_channel(cmd.get("suffix"), self.ctx.limits, "suffix")
        message = check_message(cmd.get("message"), self.ctx.limits)
        await self._do_publish(PROMISE_PREFIX + suffix, message)

    async def _do_publish(self, channel: str, message: str) -> None:
        receivers = await self.publish(channel, message)
        if receivers is not None:
            await self.peer.send_json(
                {
                    "type": "published",
                    "channel": channel,
                    "tabs": self.ctx.tabs_reached(channel),
                    "redis": receivers,
                }
            )

    async def _numbers(self, cmd: Command) -> None:
        action = cmd.get("action")
        if action == "start":
            await self.ctx.numbers.start()
        elif action == "stop":
            await self.ctx.numbers.stop()
        else:
            raise BadInput("numbers: action must be 'start' or 'stop'")

    async def _ask(self, cmd: Command) -> None:
        limits = self.ctx.limits
        suffix = check_channel(cmd.get("suffix"), limits, "suffix")
        question = check_question(cmd.get("question"), limits)
        timeout = check_timeout(cmd.get("timeout", 30), limits)
        if len(self._asks) >= limits.max_promises:
            raise BadInput(f"at most {limits.max_promises} pending promises per socket")
        if self.promises is None:
            # Its state changes wake the status ticker at once (no waiting for the next tick).
            self.promises = self.ctx.mpx.new_promise_subscription(
                PROMISE_PREFIX,
                on_disconnect=lambda _error: self._stats_due.set(),
                on_activation=lambda _name: self._stats_due.set(),
            )
        ask_id = next(self._ids)
        task = self.spawn(self._wait_answer(ask_id, suffix, question, timeout))
        self._asks[ask_id] = task
        task.add_done_callback(lambda _: self._asks.pop(ask_id, None))

    async def _wait_answer(self, ask_id: int, suffix: str, question: str, seconds: float) -> None:
        psub = self.promises
        assert psub is not None
        event: Command = {
            "type": "promise",
            "id": ask_id,
            "suffix": suffix,
            "question": question,
            "timeout": seconds,
        }

        async def tell(state: str, **extra: Any) -> None:
            await self.peer.send_json({**event, "state": state, **extra})

        await tell("activating")
        try:
            async with asyncio.timeout(ACTIVATION_WAIT):
                promise = await psub.wait_for_new_promise(suffix, seconds)
        except TimeoutError:
            await tell("failed", error="the promise subscription is not active: is Redis up?")
            return
        expires = time.time() + seconds
        await tell("pending", deadline=expires)
        self._waiting[ask_id] = (suffix, expires)
        try:  # announce only now: an answer can no longer be missed
            await self.ctx.board.ask(suffix, question, expires)
        except Exception as exc:
            logger.info("could not announce a question: %s", exc)
        try:
            answer = await promise
        except PromiseTimeout:
            self._withdraw(ask_id)
            await tell("timeout", error=f"no answer within {seconds:g} s")
        except SubscriptionInterrupted as exc:
            self._withdraw(ask_id)
            await tell("interrupted", error=str(exc))
        except SubscriptionClosed:
            return  # the socket is closing: on_close withdraws the question
        else:
            self._waiting.pop(ask_id, None)
            self.ctx.board.answered(suffix, expires)  # every board forgets it by itself
            await tell("resolved", message=_text(answer))

    def _withdraw(self, ask_id: int) -> None:
        """Take an announced question off the boards: no answer can reach its asker now."""
        waiting = self._waiting.pop(ask_id, None)
        if waiting is not None:
            self.ctx.board.withdraw_mine(*waiting)

    # -- status ------------------------------------------------------------------------------

    def _promises_state(self) -> str | None:
        if self.promises is None:
            return None
        if self.promises.active:
            return "active"
        return "activating" if self._promise_state in (None, "activating") else "disconnected"

    async def _ticker(self) -> None:
        for tick in itertools.count():
            state = self._promises_state()
            if state != self._promise_state:
                self._promise_state = state
                if state is not None:
                    await self._sub_event("promise", PROMISE_PREFIX, state)
            if tick % 2 == 0 or self._stats_due.is_set():
                self._stats_due.clear()
                snapshot = self.ctx.snapshot()
                snapshot["mine"] = {
                    "channels": dict(self.states),
                    "patterns": dict(self.pattern_states),
                    "promises": state,
                    "pending": len(self._asks),
                }
                if not await self.peer.send_json(snapshot):
                    return
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(TICK):
                    await self._stats_due.wait()
