"""The board of open promise questions, shared by every browser through Redis itself.

An asker's promise waits on ``PROMISE_PREFIX + suffix``. Its process' board announces the
question on :data:`QUESTIONS_CHANNEL`; every demo process keeps the open ones (one process-wide
channel subscription) and forgets a question once an answer is seen on its channel (one
process-wide pattern subscription), once its timeout has passed, or once its asker withdraws
it (the promise timed out, was interrupted by an outage, or its tab closed: nobody would
hear an answer).

The board is soft state: whenever a board's subscription to the questions channel is
(re)activated (at startup, after every reconnect) it keeps only its own process' questions
and asks every process to announce its waiting questions again, so a withdrawal it missed
while its link was down cannot leave a stale question behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Coroutine
from typing import Any

from redismpx import ChannelSubscription, Multiplexer, PatternSubscription

logger = logging.getLogger("redismpx.demo")

PROMISE_PREFIX = "promise:"
QUESTIONS_CHANNEL = "mpx-demo:questions"
WITHDRAW_WAIT = 30.0  # seconds a withdrawal waits for the link to Redis before giving up


def announcement(suffix: str, question: str, expires: float) -> str:
    """The payload announcing a question on :data:`QUESTIONS_CHANNEL`, open until
    ``expires`` (a ``time.time()``)."""
    return json.dumps({"suffix": suffix, "question": question, "expires": expires})


def withdrawal(suffix: str, expires: float) -> str:
    """The payload withdrawing the question announced with ``expires`` (a newer question with
    the same suffix is left alone)."""
    return json.dumps({"suffix": suffix, "withdrawn": expires})


SYNC = json.dumps({"sync": True})  # "every process: announce your waiting questions again"


class QuestionBoard:
    """Open questions by suffix, kept up to date from Redis."""

    def __init__(
        self, mpx: Multiplexer, prefix: str = PROMISE_PREFIX, *, publish_timeout: float = 2.0
    ) -> None:
        self._mpx = mpx
        self._timeout = publish_timeout
        self._prefix = prefix.encode()
        self._open: dict[str, dict[str, Any]] = {}
        self._mine: dict[str, dict[str, Any]] = {}  # asked here, the asker still waiting
        self._tasks: set[asyncio.Task[None]] = set()
        self._questions: ChannelSubscription = mpx.new_channel_subscription(
            self._on_question, on_activation=self._on_activation
        )
        self._questions.add(QUESTIONS_CHANNEL)
        self._answers: PatternSubscription = mpx.new_pattern_subscription(
            self._prefix + b"*", self._on_answer
        )

    # -- this process' askers ----------------------------------------------------------------

    async def ask(self, suffix: str, question: str, expires: float) -> None:
        """Announce a question whose asker waits until ``expires``; raises what
        ``mpx.publish`` raises."""
        self._mine[suffix] = {"suffix": suffix, "question": question, "expires": expires}
        await self._publish(announcement(suffix, question, expires))

    def answered(self, suffix: str, expires: float) -> None:
        """The asker got its answer (every board forgets the question when it sees it)."""
        self._forget_mine(suffix, expires)

    def withdraw_mine(self, suffix: str, expires: float) -> None:
        """The asker no longer waits: forget the question here at once, and tell the other
        processes' boards as soon as Redis can be reached."""
        self._forget_mine(suffix, expires)
        self.withdraw(suffix, expires)
        self._spawn(self._withdraw_everywhere(suffix, expires))

    def _forget_mine(self, suffix: str, expires: float) -> None:
        item = self._mine.get(suffix)
        if item is not None and item["expires"] == expires:
            del self._mine[suffix]

    async def _withdraw_everywhere(self, suffix: str, expires: float) -> None:
        try:
            await self._mpx.wait_connected(WITHDRAW_WAIT)
            await self._publish(withdrawal(suffix, expires))
        except Exception as exc:  # a board that missed it drops it at its next resync
            logger.info("could not withdraw question %s: %s", suffix, exc)

    async def _announce_mine(self) -> None:
        now = time.time()
        for item in [q for q in self._mine.values() if q["expires"] > now]:
            try:
                await self._publish(announcement(item["suffix"], item["question"], item["expires"]))
            except Exception as exc:
                logger.info("could not announce question %s again: %s", item["suffix"], exc)
                return

    # -- what Redis tells ---------------------------------------------------------------------

    def _on_activation(self, channel: bytes) -> None:
        # Subscribed (again): what was heard before may be stale. Keep our own questions and
        # ask the others for theirs.
        self._open = {suffix: q for suffix, q in self._open.items() if suffix in self._mine}
        self._spawn(self._sync())

    async def _sync(self) -> None:
        try:
            await self._publish(SYNC)
        except Exception as exc:
            logger.info("could not ask the other boards for their questions: %s", exc)

    def _on_question(self, channel: bytes, payload: bytes) -> None:
        try:
            item = json.loads(payload)
            if item.get("sync") is True:
                self._spawn(self._announce_mine())
                return
            if "withdrawn" in item:
                self.withdraw(item["suffix"], float(item["withdrawn"]))
                return
            suffix, question, expires = item["suffix"], item["question"], float(item["expires"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return  # not ours: anyone may publish on the channel
        if isinstance(suffix, str) and isinstance(question, str):
            self._open[suffix] = {"suffix": suffix, "question": question, "expires": expires}

    def _on_answer(self, channel: bytes, payload: bytes) -> None:
        suffix = channel[len(self._prefix) :].decode("utf-8", "replace")
        self._open.pop(suffix, None)
        self._mine.pop(suffix, None)  # its promise took this answer

    # -- for the page -------------------------------------------------------------------------

    def withdraw(self, suffix: object, expires: float) -> None:
        """Forget the question on ``suffix`` announced with ``expires``."""
        item = self._open.get(suffix) if isinstance(suffix, str) else None
        if item is not None and item["expires"] == expires:
            del self._open[item["suffix"]]

    def open_questions(self) -> list[dict[str, Any]]:
        """The questions not answered and not expired, oldest deadline first."""
        now = time.time()
        for suffix in [s for s, q in self._open.items() if q["expires"] <= now]:
            del self._open[suffix]
        for suffix in [s for s, q in self._mine.items() if q["expires"] <= now]:
            del self._mine[suffix]
        return sorted(self._open.values(), key=lambda q: float(q["expires"]))

    # -- plumbing -----------------------------------------------------------------------------

    async def _publish(self, payload: str) -> None:
        await self._mpx.publish(QUESTIONS_CHANNEL, payload, timeout=self._timeout)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Close both subscriptions and end the board's publishing tasks."""
        self._questions.close()
        self._answers.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
