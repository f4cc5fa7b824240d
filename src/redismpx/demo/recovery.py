"""The page's "Nothing missed" panel: numbered publications kept in a history, received by a
recovering subscription and, for contrast, by a plain one, across a restart of Redis.

One run per process, started and stopped from any tab (``{"op": "numbers", "action":
"start" | "stop"}`` on ``/ws/json``); every tab sees its counts in the ``stats`` messages
(``numbers``: :meth:`RecoveryDemo.report`).

A publisher publishes ``1``, ``2``, ``3`` ... on :attr:`RecoveryDemo.channel`, one after the
other, :data:`RATE` a second, each with ``history_size`` (so it is kept in the channel's
history). Both subscriptions are on the demo's one multiplexer, so they lose their link and
resubscribe together; the plain one loses what was published in between, the recovering
one gets it from the history. The publisher is a multiplexer of its own (standing for
another process) that redials quickly, so after a restart it is usually publishing again
before the subscriptions' link has resubscribed.

Counting is in :class:`Tally` (pure, no I/O): a number is *missed* once the subscription
has received a later one without it, so a message still on its way is not counted missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from redismpx import (
    ChannelSubscription,
    ConnectionLost,
    Gap,
    Multiplexer,
    PublishTimeout,
    RedisMPXError,
    ServerError,
)

logger = logging.getLogger("redismpx.demo")

RATE = 20.0  # publications a second
HISTORY_SIZE = 1000  # kept per channel: far more than a restart of at most 10 s misses
HISTORY_TTL = 600.0  # seconds the history outlives its last publication
MAX_RUN = 600.0  # seconds a run publishes before it stops by itself
PUBLISH_WAIT = 30.0  # seconds one publication waits for Redis (a restart takes a few)
PUBLISHER_BACKOFF_CAP = 0.05  # the publisher redials within 50 ms (the subscriber: 512 ms)
SUBSCRIBE_WAIT = 10.0  # seconds a start waits for both subscriptions to be active
MISSED_SHOWN = 10  # ranges of missed numbers listed
TRANSIENT = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN")  # error replies worth a retry


def ranges(numbers: Iterable[int], limit: int = MISSED_SHOWN) -> list[list[int]]:
    """Sorted ``numbers`` as ``[first, last]`` runs of consecutive ones, at most ``limit``."""
    found: list[list[int]] = []
    for n in sorted(numbers):
        if found and n == found[-1][1] + 1:
            found[-1][1] = n
        elif len(found) == limit:
            break
        else:
            found.append([n, n])
    return found


class Tally:
    """What one subscription received of a run's numbers (from ``first`` on)."""

    def __init__(self, first: int) -> None:
        self.first = first
        self.seen: set[int] = set()
        self.deliveries = 0
        self.duplicates = 0  # deliveries of a number already received
        self.out_of_order = 0  # deliveries of a number lower than one received before
        self.last = first - 1  # the highest number received
        self.state = "activating"  # activating, active, disconnected
        self.outages = 0
        self.gaps: list[str] = []  # the reasons of the gap notices (recovering only)

    def receive(self, number: int) -> None:
        self.deliveries += 1
        if number in self.seen:
            self.duplicates += 1
            return
        self.seen.add(number)
        if number < self.last:
            self.out_of_order += 1
        else:
            self.last = number

    def missed(self, published: Sequence[int]) -> list[int]:
        """The published numbers (ascending) this subscription went past without receiving."""
        return [n for n in published if n < self.last and n not in self.seen]

    def pending(self, published: Sequence[int]) -> int:
        """Published numbers after the last one received: on their way, or not yet known
        missed."""
        return sum(1 for n in published if n > self.last)

    def report(self, published: Sequence[int]) -> dict[str, Any]:
        missed = self.missed(published)
        return {
            "state": self.state,
            "received": len(self.seen),
            "deliveries": self.deliveries,
            "last": self.last if self.seen else None,
            "missed": len(missed),
            "missed_ranges": ranges(missed),
            "pending": self.pending(published),
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "gaps": len(self.gaps),
            "gap_reasons": list(self.gaps),
            "outages": self.outages,
        }


class RecoveryDemo:
    """The process' numbered run (``ctx.numbers``); ``on_change`` wakes the tabs."""

    def __init__(
        self, mpx: Multiplexer, url: str, on_change: Callable[[], None] | None = None
    ) -> None:
        self._mpx = mpx
        self._url = url
        self.on_change = on_change
        # One channel per process: two demos on one Redis must not count each other's numbers.
        self.channel = f"mpx-demo:numbers:{secrets.token_hex(3)}"
        self._publisher: Multiplexer | None = None
        self._task: asyncio.Task[None] | None = None
        self._subs: list[ChannelSubscription] = []
        self._next = 1  # numbers go on across runs: a late one of a past run is ignored
        self.state = "off"  # off, starting, publishing, stopped
        self.stop_reason: str | None = None
        self.started_at: float | None = None
        self.acked: list[int] = []  # Redis answered: published
        self.uncertain: list[int] = []  # the connection broke after the write: maybe
        self._waiting_since: float | None = None
        self.recovering = Tally(1)
        self.plain = Tally(1)
        self._control = asyncio.Lock()  # one start or stop at a time, whichever tab asks

    # -- control ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Start a new run (a run going on is stopped first, and its subscriptions closed)."""
        async with self._control:
            await self._stop("stopped")
            self._close_subscriptions()
            self._start()

    async def stop(self, reason: str = "stopped") -> None:
        """Stop publishing. The subscriptions stay (until the next start) and go on counting:
        what was on its way still arrives."""
        async with self._control:
            await self._stop(reason)

    def _start(self) -> None:
        first = self._next
        self.recovering, self.plain = Tally(first), Tally(first)
        self.acked, self.uncertain = [], []
        self.state, self.stop_reason, self.started_at = "starting", None, time.time()
        self._subs = [self._subscribe(self.recovering, recover=True), self._subscribe(self.plain)]
        self._task = asyncio.create_task(self._run())
        self._changed()

    async def _stop(self, reason: str) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.state in ("starting", "publishing"):
            self.state, self.stop_reason = "stopped", self.stop_reason or reason
            self._waiting_since = None
            self._changed()

    def _close_subscriptions(self) -> None:
        for sub in self._subs:
            sub.close()
        self._subs = []

    async def aclose(self) -> None:
        """At app shutdown."""
        await self.stop()
        self._close_subscriptions()
        if self._publisher is not None:
            await self._publisher.aclose()
            self._publisher = None

    # -- the subscriptions ---------------------------------------------------------------------

    def _subscribe(self, tally: Tally, *, recover: bool = False) -> ChannelSubscription:
        first = tally.first

        def on_message(channel: bytes, data: bytes) -> None:
            try:
                number = int(data)
            except ValueError:
                return  # not ours: any tab may publish on the channel
            # (the number being published may arrive before its publish returns)
            if first <= number <= self._next:
                tally.receive(number)

        def on_disconnect(error: BaseException) -> None:
            if tally.state != "disconnected":
                tally.outages += 1
            tally.state = "disconnected"
            self._changed()

        def on_activation(channel: bytes) -> None:
            tally.state = "active"  # (recovering: caught up with the history, live now)
            self._changed()

        def on_gap(gap: Gap[bytes]) -> None:
            tally.gaps.append(gap.reason)
            self._changed()

        sub = self._mpx.new_channel_subscription(
            on_message,
            on_disconnect,
            on_activation,
            recover=recover,
            on_gap=on_gap if recover else None,
            max_buffer=HISTORY_SIZE,
        )
        sub.add(self.channel)
        return sub

    # -- the publisher --------------------------------------------------------------------------

    async def _run(self) -> None:
        recovering, plain = self._subs
        name = self.channel.encode()
        try:
            async with asyncio.timeout(SUBSCRIBE_WAIT):
                await plain.wait_active([name])
        except TimeoutError:
            self._end("Redis did not confirm the subscriptions: is it up?")
            return
        except RedisMPXError as exc:  # e.g. SubscribeRefused by an ACL
            self._end(f"subscribing failed: {exc}")
            return
        try:
            # Subscribed, then reading where the history stands: a refused read is retried
            # (and logged) by the library, so it shows here as a wait that does not end.
            async with asyncio.timeout(SUBSCRIBE_WAIT):
                await recovering.wait_active([name])
        except TimeoutError:
            self._end(
                "the recovering subscription did not catch up with the history within "
                f"{SUBSCRIBE_WAIT:g} s: is reading it refused? (see the server's log)"
            )
            return
        except RedisMPXError as exc:
            self._end(f"subscribing failed: {exc}")
            return
        if self._publisher is None:
            self._publisher = Multiplexer(self._url, backoff_cap=PUBLISHER_BACKOFF_CAP)
        self.state = "publishing"
        self._changed()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + MAX_RUN
        while loop.time() < deadline:
            refused = await self._publish_next()
            if refused is not None:
                self._end(f"Redis refused the publication: {refused}")
                return
            await asyncio.sleep(1 / RATE)
        self._end(f"stopped by itself after {MAX_RUN:g} s")

    def _end(self, reason: str) -> None:
        logger.info("numbered run on %s ended: %s", self.channel, reason)
        self.state, self.stop_reason = "stopped", reason
        self._changed()

    async def _publish_next(self) -> RedisMPXError | None:
        """Publish the next number once: acknowledged, or uncertain (the link broke after it
        was written), or not sent (then the same number is tried again). Returns an error
        reply that trying again will not cure (e.g. an ACL refusal)."""
        publisher = self._publisher
        assert publisher is not None
        number = self._next
        self._waiting_since = time.monotonic()
        try:
            await publisher.publish(
                self.channel,
                str(number),
                history_size=HISTORY_SIZE,
                history_ttl=HISTORY_TTL,
                timeout=PUBLISH_WAIT,
            )
        except PublishTimeout as exc:
            if exc.sent:
                self._consume(number, self.uncertain)
        except ConnectionLost:
            self._consume(number, self.uncertain)
        except asyncio.CancelledError:  # stopped: it may have gone out; never reuse the number
            self._consume(number, self.uncertain)
            raise
        except RedisMPXError as exc:  # an error reply: the script did not run
            if not (isinstance(exc, ServerError) and exc.code in TRANSIENT):
                return exc
            await asyncio.sleep(0.1)  # a server still loading its data, say
        else:
            self._consume(number, self.acked)
        finally:
            self._waiting_since = None
        return None

    def _consume(self, number: int, into: list[int]) -> None:
        into.append(number)
        self._next = number + 1

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    # -- for the page ---------------------------------------------------------------------------

    def published(self) -> list[int]:
        """The numbers known published: acknowledged, or uncertain but received by either
        subscription (so Redis did take them)."""
        heard = self.recovering.seen | self.plain.seen
        confirmed = [n for n in self.uncertain if n in heard]
        return sorted([*self.acked, *confirmed]) if confirmed else self.acked

    def report(self) -> dict[str, Any]:
        published = self.published()
        waiting = self._waiting_since
        plain = self.plain.report(published)
        recovering = self.recovering.report(published)
        # What the plain subscription missed and the recovering one has: the history's work.
        lost = self.plain.missed(published)
        recovering["recovered"] = sum(1 for n in lost if n in self.recovering.seen)
        return {
            "channel": self.channel,
            "state": self.state,
            "stop_reason": self.stop_reason,
            "started_at": self.started_at,
            "rate": RATE,
            "history_size": HISTORY_SIZE,
            "published": len(published),
            "last_published": published[-1] if published else None,
            "uncertain": len(self.uncertain) - (len(published) - len(self.acked)),
            "waiting": waiting is not None and time.monotonic() - waiting > 0.25,
            "recovering": recovering,
            "plain": plain,
        }
