"""A logging handler that keeps the formatted records of a logger and can wait for them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from support.waiting import wait_for


class LogWatch(logging.Handler):
    """Every record of ``logger`` (DEBUG and up), formatted with its traceback, in ``lines``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.records: list[logging.LogRecord] = []
        self.lines: list[str] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))
        self._changed.set()  # records come from the event loop's thread

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def count(self, needle: str, level: int | None = None) -> int:
        """Records whose message contains ``needle`` (at ``level`` only, if given)."""
        return sum(
            1
            for r in self.records
            if needle in r.getMessage() and (level is None or r.levelno == level)
        )

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds, re-checking after every record."""
        await wait_for(
            self._changed,
            predicate,
            timeout,
            lambda: (
                f"timed out after {timeout} s waiting for {predicate}; log:\n{self.text[-3000:]}"
            ),
        )


@contextmanager
def watch_log(name: str = "redismpx") -> Iterator[LogWatch]:
    """Attach a :class:`LogWatch` to logger ``name`` at DEBUG level for the block."""
    logger = logging.getLogger(name)
    watch = LogWatch()
    old_level = logger.level
    logger.addHandler(watch)
    logger.setLevel(logging.DEBUG)
    try:
        yield watch
    finally:
        logger.removeHandler(watch)
        logger.setLevel(old_level)
