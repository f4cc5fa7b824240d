"""The board of open promise questions, shared by every browser through Redis itself.

An asker's promise waits on ``PROMISE_PREFIX + suffix``. The asker's socket announces the
question on :data:`QUESTIONS_CHANNEL`; every demo process keeps the open ones (one process-wide
channel subscription) and forgets a question once an answer is seen on its channel (one
process-wide pattern subscription), once its timeout has passed, or once its asker withdraws
it (the promise timed out, was interrupted by an outage, or its tab closed: nobody would
hear an answer).
"""

from __future__ import annotations

import json
import time
from typing import Any

from redismpx import ChannelSubscription, Multiplexer, PatternSubscription

PROMISE_PREFIX = "promise:"
QUESTIONS_CHANNEL = "mpx-demo:questions"


def announcement(suffix: str, question: str, expires: float) -> str:
    """The payload announcing a question on :data:`QUESTIONS_CHANNEL`, open until
    ``expires`` (a ``time.time()``)."""
    return json.dumps({"suffix": suffix, "question": question, "expires": expires})


def withdrawal(suffix: str, expires: float) -> str:
    """The payload withdrawing the question announced with ``expires`` (a newer question with
    the same suffix is left alone)."""
    return json.dumps({"suffix": suffix, "withdrawn": expires})


class QuestionBoard:
    """Open questions by suffix, kept up to date from Redis."""

    def __init__(self, mpx: Multiplexer, prefix: str = PROMISE_PREFIX) -> None:
        self._prefix = prefix.encode()
        self._open: dict[str, dict[str, Any]] = {}
        self._questions: ChannelSubscription = mpx.new_channel_subscription(self._on_question)
        self._questions.add(QUESTIONS_CHANNEL)
        self._answers: PatternSubscription = mpx.new_pattern_subscription(
            self._prefix + b"*", self._on_answer
        )

    def _on_question(self, channel: bytes, payload: bytes) -> None:
        try:
            item = json.loads(payload)
            if "withdrawn" in item:
                self.withdraw(item["suffix"], float(item["withdrawn"]))
                return
            suffix, question, expires = item["suffix"], item["question"], float(item["expires"])
        except (ValueError, KeyError, TypeError):
            return  # not ours: anyone may publish on the channel
        if isinstance(suffix, str) and isinstance(question, str):
            self._open[suffix] = {"suffix": suffix, "question": question, "expires": expires}

    def _on_answer(self, channel: bytes, payload: bytes) -> None:
        self._open.pop(channel[len(self._prefix) :].decode("utf-8", "replace"), None)

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
        return sorted(self._open.values(), key=lambda q: float(q["expires"]))

    def close(self) -> None:
        """Close both subscriptions."""
        self._questions.close()
        self._answers.close()
