"""Soak test: churn, faults and a numbering publisher for N minutes; reports every loss.

    .venv/bin/python scripts/soak.py --minutes 10 [--subscriptions 200] [--channels 50]
    .venv/bin/python scripts/soak.py --recover [--history-size 10000] ...

A real server (``redismpx.server.RedisServer``) is killed and restarted every
``--fault-every`` seconds while subscriptions come and go and channels are added and removed.
A publisher numbers its messages. For every (subscription, channel) the soak knows when the
channel was confirmed (``on_activation``) and when it stopped counting (removed, closed or
disconnected), and every message whose PUBLISH started and returned inside such a window must
arrive exactly once. Report: published, delivered, lost during outages (allowed: Pub/Sub is
at-most-once), lost outside outages (must be 0), duplicates (must be 0), peak RSS.
Exit status 1 if either must-be-0 figure is not 0.

``--recover``: the server runs with persistence (``--appendonly yes --appendfsync always``,
so a SIGKILL loses nothing it acknowledged), every subscription is made with
``recover=True``, and the publisher publishes with ``history_size=--history-size`` (large
enough to cover an outage). A (subscription, channel) window then stays open across
outages: it opens at the channel's first ``on_activation`` (after its catch-up) and closes
when the channel is removed (or, if it is removed while recovering, at the outage's
``on_disconnect``). Every other fault is a ``CLIENT KILL TYPE pubsub`` instead of a restart:
the server stays up and the publisher goes on, so the outage misses messages that only the
history can give back (counted as "published during outages"). Every message published
inside a window must arrive exactly once and in order, outages included: "lost in outages",
"lost outside outages", "duplicates", "out of order" and "gaps" (``on_gap`` notices) must
all be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import resource
import sys
from dataclasses import dataclass, field
from typing import Any

from redismpx import ConnectError, ConnectionLost, Gap, Multiplexer, PublishTimeout, ServerError
from redismpx._connection import Connection, connect
from redismpx._options import parse_options
from redismpx.server import RedisServer


@dataclass
class Holder:
    """One subscription's view: open windows, and what it received per channel."""

    windows: dict[bytes, list[tuple[float, float]]] = field(default_factory=dict)
    open_since: dict[bytes, float] = field(default_factory=dict)
    received: dict[bytes, list[int]] = field(default_factory=dict)
    held: set[bytes] = field(default_factory=set)
    # --recover: the channels recovering since the last on_disconnect (at ``down_at``).
    recovering: set[bytes] = field(default_factory=set)
    down_at: float = 0.0

    def removed(self, channel: bytes, now: float, recover: bool) -> None:
        """``channel`` is no longer held: its window ends now, or (a recovering subscription
        removed while it catches up) when the outage began."""
        if recover and channel in self.recovering:
            self.recovering.discard(channel)
            now = self.down_at
        self.close_window(channel, now)

    def close_window(self, channel: bytes, now: float) -> None:
        start = self.open_since.pop(channel, None)
        if start is not None:
            self.windows.setdefault(channel, []).append((start, now))


@dataclass
class Report:
    published: int = 0
    delivered: int = 0
    lost_in_outages: int = 0
    lost_outside_outages: int = 0
    duplicates: int = 0
    out_of_order: int = 0  # --recover only (plain Pub/Sub keeps order too, but is not checked)
    gaps: int = 0  # --recover: on_gap notices
    outages: int = 0
    published_during_outages: int = 0
    unplanned_outages: int = 0
    peak_rss_mb: float = 0.0
    unexplained: list[str] = field(default_factory=list)

    recover: bool = False

    @property
    def ok(self) -> bool:
        ok = self.lost_outside_outages == 0 and self.duplicates == 0
        if self.recover:
            ok = ok and self.lost_in_outages == 0 and self.out_of_order == 0 and self.gaps == 0
        return ok


async def soak(
    seconds: float,
    subscriptions: int = 100,
    channels: int = 20,
    fault_every: float = 5.0,
    rate: float = 2000.0,
    seed: int = 1,
    recover: bool = False,
    history_size: int = 10_000,
) -> Report:
    rnd = random.Random(seed)
    loop = asyncio.get_running_loop()
    names = [f"soak:{i}".encode() for i in range(channels)]
    persist = ["--appendonly", "yes", "--appendfsync", "always"] if recover else []
    server = RedisServer(args=persist)
    await server.astart()
    outages: list[tuple[float, float]] = []
    published: list[tuple[bytes, int, float, float]] = []  # channel, seq, start, end
    holders: list[Holder] = []
    seen_at: dict[tuple[bytes, int], float] = {}
    seen_outages: list[tuple[float, float]] = []
    report = Report(recover=recover)
    try:
        async with Multiplexer(server.url, health_check_interval=1, health_check_timeout=1) as m:
            subs: list[tuple[Any, Holder]] = []

            def make() -> None:
                h = Holder()

                def on_message(channel: bytes, data: bytes) -> None:
                    h.received.setdefault(channel, []).append(int(data))

                def on_activation(name: bytes) -> None:
                    if recover:
                        h.recovering.discard(name)
                        if name in h.held and name not in h.open_since:
                            h.open_since[name] = loop.time()  # caught up: counting from here
                    elif name in h.held:
                        h.open_since[name] = loop.time()

                def on_disconnect(error: BaseException) -> None:
                    now = loop.time()
                    if recover:  # the windows stay open: what the outage misses must come
                        h.down_at = now
                        h.recovering = set(h.open_since)
                        return
                    for channel in list(h.open_since):
                        h.close_window(channel, now)

                def on_gap(gap: Gap[bytes]) -> None:
                    report.gaps += 1
                    _explain(report, f"gap on {gap.channel!r}: {gap.reason} since {gap.since}")

                sub = m.new_channel_subscription(
                    on_message,
                    on_disconnect,
                    on_activation,
                    recover=recover,
                    on_gap=on_gap if recover else None,
                )
                chosen = rnd.sample(names, k=rnd.randint(1, 3))
                h.held.update(chosen)
                sub.add(*chosen)
                subs.append((sub, h))
                holders.append(h)

            # The witness holds every channel for the whole run and is never churned: the time
            # it sees a message is when the reader dispatched it to everyone holding it then.
            # It also times every outage as the application sees it (injected or not): from its
            # on_disconnect until every channel is confirmed again.
            def witness(channel: bytes, data: bytes) -> None:
                seen_at[(channel, int(data))] = loop.time()

            ready = asyncio.Event()  # every channel confirmed: publishing may start
            live = asyncio.Event()  # every channel confirmed since the last outage
            down: list[float] = []
            back: set[bytes] = set()

            def witness_lost(error: BaseException) -> None:
                down.append(loop.time())
                back.clear()
                live.clear()

            def witness_back(name: bytes) -> None:
                back.add(name)
                if len(back) == len(names):
                    ready.set()
                    live.set()
                    if down:
                        seen_outages.append((down.pop(), loop.time()))

            def witness_gap(gap: Gap[bytes]) -> None:
                report.gaps += 1
                _explain(report, f"witness gap on {gap.channel!r}: {gap.reason}")

            m.new_channel_subscription(
                witness,
                witness_lost,
                witness_back,
                recover=recover,
                on_gap=witness_gap if recover else None,
            ).add(*names)
            for _ in range(subscriptions):
                make()

            async def churn() -> None:
                while True:
                    await asyncio.sleep(0.05)
                    sub, h = rnd.choice(subs)
                    now = loop.time()
                    action = rnd.random()
                    if action < 0.3:
                        sub.close()
                        for channel in list(h.open_since):
                            h.removed(channel, now, recover)
                        subs.remove((sub, h))
                        make()
                    elif action < 0.65:
                        channel = rnd.choice(names)
                        if channel not in h.held:
                            h.held.add(channel)
                            sub.add(channel)
                    elif h.held:
                        channel = rnd.choice(sorted(h.held))
                        sub.remove(channel)
                        h.held.discard(channel)
                        h.removed(channel, now, recover)

            async def client_kill() -> None:
                # --recover, every other fault: the server stays up and the publisher goes on
                # while the Pub/Sub connection is down, so the outage misses messages that
                # only the history can give back. It ends once the witness caught up again.
                await server.acommand("CLIENT", "KILL", "TYPE", "pubsub")
                async with asyncio.timeout(30):
                    while live.is_set():
                        await asyncio.sleep(0.001)
                    await live.wait()

            async def faults() -> None:
                for n in itertools.count():
                    await asyncio.sleep(fault_every)
                    start = loop.time()
                    if recover and n % 2 == 0:
                        await client_kill()
                        outages.append((start, loop.time()))
                        continue
                    await server.akill()
                    await server.arestart()
                    await m.wait_connected(30)
                    # The outage lasts until every wanted name is confirmed again.
                    registry = m._hub.router.link.registry
                    while registry.pending or registry.resubscribing():
                        await asyncio.sleep(0.01)
                    outages.append((start, loop.time()))

            seqs = dict.fromkeys(names, 0)
            options = parse_options(server.url)
            publishing: list[Connection] = []

            async def history_publisher() -> None:
                # --recover: the multiplexer's own publish, with history. A publish that fails
                # is not counted as published (ConnectionLost: it may have run; if it did, it
                # is delivered and nothing checks it).
                while True:
                    channel = rnd.choice(names)
                    seqs[channel] += 1
                    seq = seqs[channel]
                    start = loop.time()
                    try:
                        await m.publish(channel, str(seq), history_size=history_size, timeout=2.0)
                    except (ConnectionLost, PublishTimeout, ServerError):
                        await asyncio.sleep(0.01)  # down, or loading its AOF
                        continue
                    published.append((channel, seq, start, loop.time()))
                    await asyncio.sleep(1 / rate)

            async def publisher() -> None:
                # A plain request/response connection of our own, reopened after each fault.
                conn: Connection | None = None
                while True:
                    channel = rnd.choice(names)
                    seqs[channel] += 1
                    seq = seqs[channel]
                    start = loop.time()
                    try:
                        if conn is None or conn.closed.done():
                            conn = await connect(options)
                            publishing[:] = [conn]
                        await conn.request(b"PUBLISH", channel, str(seq).encode())
                    except (ConnectError, ConnectionLost):
                        conn = None
                        await asyncio.sleep(0.01)  # the server is down; the message is lost
                        continue
                    published.append((channel, seq, start, loop.time()))
                    await asyncio.sleep(1 / rate)

            await asyncio.wait_for(ready.wait(), 30)
            publish = history_publisher if recover else publisher
            tasks = [asyncio.ensure_future(t()) for t in (churn, faults, publish)]
            await asyncio.sleep(seconds)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not server.running:  # the faults task was stopped between a kill and a restart
                await server.arestart()
            for conn in publishing:
                conn.close()
            # Let the last published messages arrive: a private sentinel, same connection.
            await m.ping(timeout=10)
            if recover:  # and the witness's recovery (if one is under way) ends
                await asyncio.wait_for(live.wait(), 30)
            now = loop.time()
            for _, h in subs:
                for channel in list(h.open_since):
                    h.removed(channel, now, recover)
    finally:
        await server.astop()

    report.published = len(published)
    report.outages = len(outages)
    # Published while the witness was disconnected or catching up: what a subscription
    # without recovery would miss (with --recover, what the histories had to give back).
    report.published_during_outages = sum(
        1 for _, _, _, end in published if any(a <= end <= b for a, b in seen_outages)
    )
    # Outages nobody injected (a heartbeat timeout on a starved machine, say) are reported,
    # and their losses count as outage losses: they were announced through on_disconnect.
    report.unplanned_outages = sum(
        1 for a, _ in seen_outages if not any(o0 - 1.0 <= a <= o1 + 1.0 for o0, o1 in outages)
    )
    outages = outages + seen_outages
    by_channel: dict[bytes, list[tuple[int, float, float]]] = {}
    for channel, seq, start, end in published:
        by_channel.setdefault(channel, []).append((seq, start, end))

    def in_outage(start: float, end: float) -> bool:
        # In flight when the server died: still in its output buffer, or unread by a
        # reader that lags under load (generously: up to 2 s before the kill).
        return any(o0 - 2.0 <= end and start <= o1 for o0, o1 in outages)

    for channel, seq, start, end in published:
        if (channel, seq) in seen_at:
            continue
        if in_outage(start, end):
            report.lost_in_outages += 1
        else:
            report.lost_outside_outages += 1
            _explain(report, f"{channel!r} #{seq} published {start:.3f} never reached the process")
    for h in holders:
        for got in h.received.values():
            report.delivered += len(got)
            report.duplicates += len(got) - len(set(got))
            report.out_of_order += sum(1 for a, b in itertools.pairwise(got) if b < a)
        for channel, windows in h.windows.items():
            got_set = set(h.received.get(channel, ()))
            for seq, start, _end in by_channel.get(channel, ()):
                seen = seen_at.get((channel, seq))
                if seen is None or seq in got_set:
                    continue  # not dispatched at all (counted above), or delivered
                if any(w0 < start and seen < w1 for w0, w1 in windows):
                    if recover and in_outage(start, _end):
                        report.lost_in_outages += 1  # the history should have covered it
                    else:
                        report.lost_outside_outages += 1
                    _explain(
                        report,
                        f"{channel!r} #{seq} published {start:.3f}, dispatched {seen:.3f}, "
                        f"missing for a holder with windows {windows}",
                    )
    report.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _explain(report: Report, text: str) -> None:
    if len(report.unexplained) < 5:
        report.unexplained.append(text)


async def _with_watchdog(coro: Any, limit: float) -> Report:
    """Never stuck: past ``limit`` seconds, print every task's stack and fail."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait([task], timeout=limit)
    if task in done:
        return task.result()
    for t in asyncio.all_tasks():
        if t is not asyncio.current_task():
            print(f"--- stuck task {t.get_name()}", file=sys.stderr)
            t.print_stack(file=sys.stderr)
    raise SystemExit(f"soak did not finish within {limit:.0f} s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--subscriptions", type=int, default=100)
    parser.add_argument("--channels", type=int, default=20)
    parser.add_argument("--fault-every", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=2000.0, help="messages per second, at most")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--recover",
        action="store_true",
        help="recovering subscriptions, publishes with history, a server with persistence",
    )
    parser.add_argument(
        "--history-size", type=int, default=10_000, help="history_size of each publish (--recover)"
    )
    args = parser.parse_args(argv)
    seconds = args.minutes * 60
    report = asyncio.run(
        _with_watchdog(
            soak(
                seconds,
                args.subscriptions,
                args.channels,
                args.fault_every,
                args.rate,
                args.seed,
                args.recover,
                args.history_size,
            ),
            seconds + 60,
        )
    )
    print(json.dumps({**report.__dict__, "ok": report.ok}, indent=2))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
