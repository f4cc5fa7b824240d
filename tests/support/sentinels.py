"""Sentinel test helpers: what a failover must look like to every subscription, and
questions to a deployment (who holds the watcher, where names are subscribed).

A :class:`Subscribers` is one channel subscription (``names``) and one pattern subscription
(``pat:*``) on a multiplexer, each with a :class:`Story`: what it heard, cut into rounds at
each ``on_disconnect``. After ``k`` failovers every story must be ``k + 1`` rounds, each
holding exactly one activation per name (:meth:`Subscribers.check_rounds`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis

from redismpx import Multiplexer
from redismpx.errors import ServerError
from redismpx.server import RedisSentinel, RedisServer, SentinelNode

PATTERN = b"pat:*"
_labels = itertools.count()


# -- what a subscription heard ------------------------------------------------------------------


class Story:
    """A subscription's callbacks, recording in rounds: ``rounds[0]`` counts the activations
    per name before the first ``on_disconnect``, ``rounds[k]`` those after the k-th.

    Cheap enough for 10,000 names: every check is O(1) per event."""

    def __init__(self, name: str, expected: int) -> None:
        self.name = name
        self.expected = expected  # names per complete round
        self.rounds: list[collections.Counter[bytes]] = [collections.Counter()]
        self.complete_at: list[float] = []  # loop time each round got every name
        self.disconnects: list[tuple[float, BaseException]] = []
        self.messages: list[tuple[bytes, bytes]] = []
        self.changed = asyncio.Event()
        self._loop = asyncio.get_running_loop()

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.messages.append((channel, data))
        self.changed.set()

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects.append((self._loop.time(), error))
        self.rounds.append(collections.Counter())
        self.changed.set()

    def on_activation(self, name: bytes) -> None:
        current = self.rounds[-1]
        current[name] += 1
        if len(current) == self.expected and current[name] == 1:
            self.complete_at.append(self._loop.time())
        self.changed.set()

    @property
    def callbacks(self) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
        return self.on_message, self.on_disconnect, self.on_activation

    def summary(self) -> str:
        rounds = [f"{len(r)} names/{sum(r.values())} activations" for r in self.rounds]
        errors = [str(e) for _, e in self.disconnects]
        return f"{self.name}: rounds {rounds}, disconnects {errors}"

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not predicate():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"timed out after {timeout:g} s waiting for {what}; {self.summary()}"
            ) from None

    async def round_complete(self, k: int, timeout: float) -> None:
        """Wait until round ``k`` holds every name (k disconnects heard)."""
        await self.wait(
            lambda: len(self.rounds) > k and len(self.rounds[k]) >= self.expected,
            timeout,
            f"every name active in round {k}",
        )


class Subscribers:
    """A channel subscription on ``names`` and a pattern subscription on ``pat:*``."""

    def __init__(self, mpx: Multiplexer, names: Sequence[str | bytes]) -> None:
        self.mpx = mpx
        self.names = [n.encode() if isinstance(n, str) else n for n in names]
        self.channels = Story("channels", len(self.names))
        self.pattern = Story("pattern", 1)
        self.channel_sub = mpx.new_channel_subscription(*self.channels.callbacks)
        self.channel_sub.add(*self.names)
        self.pattern_sub = mpx.new_pattern_subscription(PATTERN, *self.pattern.callbacks)

    @property
    def stories(self) -> tuple[Story, Story]:
        return self.channels, self.pattern

    async def active(self, k: int = 0, timeout: float = 10.0) -> None:
        """Wait until every name of both subscriptions is active in round ``k``."""
        for story in self.stories:
            await story.round_complete(k, timeout)

    def check_rounds(self, failovers: int) -> None:
        """Exactly ``failovers`` disconnects, each followed by exactly one activation per
        name (and one per name before the first)."""
        for story, names in ((self.channels, self.names), (self.pattern, [PATTERN])):
            want = collections.Counter(names)
            assert len(story.disconnects) == failovers, story.summary()
            assert len(story.rounds) == failovers + 1, story.summary()
            for k, round_ in enumerate(story.rounds):
                if round_ != want:
                    extra = {n: c for n, c in round_.items() if c != 1 or n not in want}
                    missing = len(set(want) - set(round_))
                    raise AssertionError(
                        f"{story.name} round {k}: {missing} names missing, wrong counts "
                        f"{dict(itertools.islice(extra.items(), 5))}; {story.summary()}"
                    )

    def disconnect_errors(self) -> list[str]:
        return [str(e) for story in self.stories for _, e in story.disconnects]


# -- the deployment -----------------------------------------------------------------------------


def address(node: RedisServer) -> str:
    return f"{node.host}:{node.port}"


def role(node: RedisServer) -> str:
    return str(node.command("ROLE")[0].decode())


def sentinel_events(deployment: RedisSentinel, since: list[int] | None = None) -> list[str]:
    """The ``+event`` lines (``+try-failover``, ``+sdown``, ``+switch-master`` ...) the
    sentinels logged, each prefixed with its sentinel's port; only those after ``since``
    (a former :func:`sentinel_log_sizes`) if given."""
    found = []
    for i, node in enumerate(deployment.sentinels):
        with open(node.log_path, "rb") as f:
            if since is not None:
                f.seek(since[i])
            text = f.read().decode(errors="replace")
        found += [f"{node.port}: {line}" for line in text.splitlines() if " +" in line]
    return found


def sentinel_log_sizes(deployment: RedisSentinel) -> list[int]:
    """Where each sentinel's log ends now (see :func:`sentinel_events`)."""
    sizes = []
    for node in deployment.sentinels:
        with open(node.log_path, "rb") as f:
            sizes.append(f.seek(0, 2))
    return sizes


@contextlib.asynccontextmanager
async def unless_the_sentinels_fail_over(
    deployment: RedisSentinel, end_state: Callable[[], Awaitable[None]]
) -> AsyncIterator[None]:
    """The strict checks of a test that fails over by plan, or not at all, unless the
    sentinels started a failover of their own meanwhile; then only ``end_state()`` is
    checked.

    On a loaded machine a primary can miss the sentinels' pings for down-after-milliseconds
    (1 s here), and following the failover they then start is right. Their decision shows in
    their logs as ``+odown`` (a planned ``SENTINEL FAILOVER`` logs none).
    """
    logs = sentinel_log_sizes(deployment)
    try:
        yield
    except (AssertionError, TimeoutError):
        events = sentinel_events(deployment, logs)
        if not any("+odown" in line for line in events):
            raise
        print("\nthe sentinels failed over by themselves; the end state is checked:")
        print("\n".join(events))
        await deployment.await_ready(timeout=30)
        await end_state()


async def everything_delivered(
    mpx: Multiplexer, deployment: RedisSentinel, subs: Subscribers
) -> None:
    """The usual end state: every name active again, delivery working on the primary."""
    await subs.active(len(subs.channels.disconnects), timeout=30)
    await check_delivery(mpx, deployment.primary, subs)


async def until(
    predicate: Callable[[], Awaitable[bool]], timeout: float, what: str, poll: float = 0.02
) -> None:
    """Poll server state (no event exists for it) until ``predicate()`` holds."""
    try:
        async with asyncio.timeout(timeout):
            while not await predicate():
                await asyncio.sleep(poll)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None


async def watchers(deployment: RedisSentinel) -> list[int]:
    """The indexes of the sentinels holding a Pub/Sub client (the multiplexer's watcher:
    nothing else subscribes on a sentinel here)."""
    found = []
    for i, node in enumerate(deployment.sentinels):
        if not node.running or node.paused:
            continue
        with contextlib.suppress(OSError, ServerError):
            if await node.acommand("CLIENT", "LIST", "TYPE", "pubsub"):
                found.append(i)
    return found


async def wait_watching(deployment: RedisSentinel, timeout: float = 10.0) -> int:
    """Wait until exactly one sentinel holds the watcher; return its index."""
    seen: list[int] = []

    async def one() -> bool:
        seen[:] = await watchers(deployment)
        return len(seen) == 1

    await until(one, timeout, "the watcher subscribed on exactly one sentinel")
    return seen[0]


async def failover_via(
    deployment: RedisSentinel, node: SentinelNode, timeout: float = 30.0
) -> RedisServer:
    """``SENTINEL FAILOVER`` on ``node`` (retried while it has no good replica yet); returns
    the new primary once a sentinel names it and it says ROLE master."""
    old = deployment.primary_address()
    async with asyncio.timeout(timeout):
        while True:
            try:
                await node.acommand("SENTINEL", "FAILOVER", deployment.service_name)
                break
            except ServerError as exc:
                if "NOGOODSLAVE" not in str(exc):
                    raise
            await asyncio.sleep(0.02)
    return await asyncio.to_thread(deployment.wait_primary_changed, old, timeout)


async def subscribers_on(node: RedisServer, channel: bytes) -> int:
    reply = await node.acommand("PUBSUB", "NUMSUB", channel)
    return int(reply[1])


async def check_primary(
    mpx: Multiplexer, deployment: RedisSentinel, primary: RedisServer, subs: Subscribers
) -> None:
    """``stats()``/``repr`` name ``primary``; the names are subscribed there and nowhere else."""
    stats = mpx.stats()
    assert stats["state"] == "connected"
    assert stats["primary"] == address(primary), stats
    assert f"(primary {address(primary)})" in repr(mpx), repr(mpx)
    for node in deployment.data_nodes:
        if not node.running:
            continue
        want = 1 if node is primary else 0
        assert await subscribers_on(node, subs.names[0]) == want, (address(node), want)
        numpat = int(await node.acommand("PUBSUB", "NUMPAT"))
        assert numpat == want, (address(node), "NUMPAT", numpat)


async def check_delivery(
    mpx: Multiplexer,
    primary: RedisServer,
    subs: Subscribers,
    password: str | None = None,
) -> None:
    """Messages published now, with ``mpx.publish`` and with a plain redis-py client on
    ``primary``, arrive exactly once on both subscriptions.

    Exactly once, not at least once: each publish is awaited before the next, and a last
    marker is published after them all; the subscriber reads one connection in order, so
    once the markers are in, a duplicate of an earlier message would be too. (That the
    names are subscribed on ``primary`` alone is :func:`check_primary`'s part.)
    """
    label = next(_labels)
    channel, pattern_channel = subs.names[0], b"pat:%d" % label
    plain = aioredis.Redis(host=primary.host, port=primary.port, password=password)
    sent: list[tuple[bytes, bytes]] = []
    try:
        for target in (channel, pattern_channel):
            for via in ("mpx", "plain"):
                data = f"{via}-{label}".encode()
                if via == "mpx":
                    receivers = await mpx.publish(target, data, timeout=10)
                else:
                    receivers = await plain.publish(target, data)
                assert receivers == 1, (target, via, receivers)  # our one subscription there
                sent.append((target, data))
            marker = b"end-%d" % label
            assert await mpx.publish(target, marker, timeout=10) == 1
            sent.append((target, marker))
    finally:
        await plain.aclose()
    await subs.channels.wait(
        lambda: (channel, b"end-%d" % label) in subs.channels.messages, 10, "the channel marker"
    )
    await subs.pattern.wait(
        lambda: (pattern_channel, b"end-%d" % label) in subs.pattern.messages,
        10,
        "the pattern marker",
    )
    for story, target in ((subs.channels, channel), (subs.pattern, pattern_channel)):
        for message in [m for m in sent if m[0] == target]:
            assert story.messages.count(message) == 1, (story.name, message, story.messages)


async def check_failover(
    mpx: Multiplexer,
    deployment: RedisSentinel,
    primary: RedisServer,
    subs: Subscribers,
    failovers: int = 1,
    password: str | None = None,
) -> None:
    """The whole contract after ``failovers`` failovers ending on ``primary``."""
    await subs.active(failovers, timeout=30)
    await check_primary(mpx, deployment, primary, subs)
    await check_delivery(mpx, primary, subs, password)
    subs.check_rounds(failovers)


@contextlib.contextmanager
def extra_sentinel(node: SentinelNode) -> Iterator[SentinelNode]:
    """Start ``node`` for the block and stop it afterwards."""
    try:
        yield node.start()
    finally:
        node.stop()
