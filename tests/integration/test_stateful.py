"""Random add/remove/close/new-subscription/kill-server steps against a real server.

After each step the test waits for quiescence and checks that Redis holds exactly what the
live subscriptions want (``PUBSUB CHANNELS``, ``PUBSUB NUMPAT``), and that a message published
on every channel reaches each live subscription exactly once.
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, settings
from hypothesis.stateful import RuleBasedStateMachine, precondition, rule

from redismpx import Multiplexer
from redismpx.server import RedisServer, find_server_binary
from support.admin import Admin
from support.internals import link_of
from support.recorder import Recorder

CHANNELS = ["a", "b", "p:1", "p:2", "q:1"]
PATTERNS = ["p:*", "*:1"]
_payloads = itertools.count()


class MultiplexerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.server = RedisServer(find_server_binary())
        self.server.start()
        self.mpx = Multiplexer(self.server.url)
        self.admin = Admin(self.server.url)
        # live subscriptions: (subscription, recorder, channels held or pattern)
        self.channel_subs: list[tuple[Any, Recorder, set[str]]] = []
        self.pattern_subs: list[tuple[Any, Recorder, str]] = []
        self.probe = Recorder("probe")
        self._run(self._start())

    def _run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(asyncio.wait_for(coro, 30))

    async def _start(self) -> None:
        self.mpx.new_channel_subscription(*self.probe.callbacks).add("__sentinel")
        await self.probe.activated("__sentinel")

    @rule()
    def new_channel_subscription(self) -> None:
        rec = Recorder(f"c{len(self.channel_subs)}")
        sub = self.mpx.new_channel_subscription(*rec.callbacks)
        self.channel_subs.append((sub, rec, set()))

    @rule(pattern=st.sampled_from(PATTERNS))
    def new_pattern_subscription(self, pattern: str) -> None:
        async def make() -> None:
            rec = Recorder(f"p{len(self.pattern_subs)}")
            sub = self.mpx.new_pattern_subscription(pattern, *rec.callbacks)
            self.pattern_subs.append((sub, rec, pattern))

        self._run(make())

    @precondition(lambda self: self.channel_subs)
    @rule(data=st.data(), names=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3))
    def add(self, data: st.DataObject, names: list[str]) -> None:
        sub, _, held = data.draw(st.sampled_from(self.channel_subs))

        async def go() -> None:
            sub.add(*names)

        self._run(go())
        held.update(names)

    @precondition(lambda self: self.channel_subs)
    @rule(data=st.data(), names=st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=3))
    def remove(self, data: st.DataObject, names: list[str]) -> None:
        sub, _, held = data.draw(st.sampled_from(self.channel_subs))

        async def go() -> None:
            sub.remove(*names)

        self._run(go())
        held.difference_update(names)

    @precondition(lambda self: self.channel_subs or self.pattern_subs)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        pool: list[Any] = [*self.channel_subs, *self.pattern_subs]
        entry = data.draw(st.sampled_from(pool))
        entry[0].close()
        if entry in self.channel_subs:
            self.channel_subs.remove(entry)
        else:
            self.pattern_subs.remove(entry)

    @rule()
    def kill_and_restart_server(self) -> None:
        async def go() -> None:
            await self.server.akill()
            await self.server.arestart()

        self._run(go())

    @rule()
    def check_quiescent_state(self) -> None:
        self._run(self._check())

    async def _check(self) -> None:
        link = link_of(self.mpx)
        async with asyncio.timeout(10):
            while not (
                link.conn is not None
                and not link.registry.pending
                and not link.registry.has_dirty()
                and not link.registry.resubscribing()
                and link._flush_handle is None
            ):
                await asyncio.sleep(0.005)
        wanted = {c for _, _, held in self.channel_subs for c in held} | {"__sentinel"}
        assert {c.decode() for c in await self.admin.channels()} == wanted
        assert await self.admin.numpat() == len({p for _, _, p in self.pattern_subs})
        for _, rec, _ in [*self.channel_subs, *self.pattern_subs]:
            rec.messages.clear()
        payload = str(next(_payloads))
        pipe = self.admin.client.pipeline(transaction=False)
        for channel in CHANNELS:
            pipe.publish(channel, payload)
        pipe.publish("__sentinel", payload)
        await pipe.execute()
        # One connection, Redis order: once the sentinel is here, everything before it is.
        await self.probe.wait_until(
            lambda: (b"__sentinel", payload.encode()) in self.probe.messages, 10
        )
        for _, rec, held in self.channel_subs:
            got = sorted(c.decode() for c, d in rec.messages if d == payload.encode())
            assert got == sorted(held), (rec.name, rec.messages, held)
        for _, rec, pattern in self.pattern_subs:
            got = sorted(c.decode() for c, d in rec.messages if d == payload.encode())
            assert got == sorted(c for c in CHANNELS if fnmatch.fnmatchcase(c, pattern))

    def teardown(self) -> None:
        async def stop() -> None:
            await self.mpx.aclose()
            await self.admin.close()

        try:
            self._run(stop())
        finally:
            self.server.stop()
            self.loop.close()


TestMultiplexerAgainstRedis = MultiplexerMachine.TestCase
TestMultiplexerAgainstRedis.settings = settings(
    max_examples=25,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
