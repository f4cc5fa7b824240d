"""S13-S15: what history and recovery (issue 14) cost; redismpx against itself.

S13 *publish with history*: a fresh server and one client process. The client starts a
``Multiplexer`` (its Pub/Sub connection is up, as in S11) and ``publishers`` tasks, task *i*
publishing 64-byte messages on its own channel ``hp:<i>`` one after the other, nobody
subscribed. Two modes in the same process and server: ``await mpx.publish(ch, data)``
(*plain*) and ``await mpx.publish(ch, data, history_size=N)`` (*history*). Warm-up: every task
publishes once plainly and ``warm`` times with history (enough to fill each history past the
first stream node, so the measured publishes trim as a long-running app's do). Then
``reps`` repetitions of both modes (ABBA order), each ``secs`` seconds: publishes/s wall,
the client's CPU per publish, the server process's CPU per publish (``/proc/PID/stat``,
10 ms ticks) and the server's own command time per publish (``CONFIG RESETSTAT`` before each,
``INFO commandstats`` after: ``cmdstat_publish`` in plain mode, ``cmdstat_evalsha`` in history
mode, whose time includes the commands the script calls). Checked: the server ran exactly as
many ``PUBLISH`` / ``EVALSHA`` as the client completed (no ``NOSCRIPT`` fallback), and no reply
counted a receiver. Memory, on a second fresh server: ``used_memory`` before and after
``mem_msgs`` publishes with ``history_size=mem_msgs`` on each of ``mem_channels`` channels
(100-byte payloads, one task per channel): bytes per 1,000 retained messages; and
``MEMORY USAGE`` of one channel's two keys for the same figure per key.

S14 *recovery after a restart with persistence*: a server with ``--appendonly yes
--appendfsync always``. The subscriber process holds ``channels`` recovering subscriptions,
one channel each (``new_channel_subscription(..., recover=True, on_gap=...)``), and publishes
``before`` numbered messages per channel with history, all delivered. The outage: the server
is SIGKILLed; it is started again from its AOF on *another* port, which the subscriber does
not know, and ``during`` more numbered messages per channel are published there with history
(through a ``Multiplexer`` in the orchestrator); SIGKILL again; then the restart proper: on
the original port, from the AOF (*ready* = it answers PING). Figures, from *ready*: *all
active* = the server counts every name again (a recovering channel is two names: the channel
and its envelope channel); *caught up* = the last ``on_activation`` (a recovering
subscription's fires after its catch-up), and the spread of those times; the commands the
restarted server ran for the recovery (``EVALSHA``, the ``NOSCRIPT`` errors, the ``EVAL``
fallbacks: its script cache starts empty) and the history reads the library made. Checked:
every channel got exactly its messages ``1..before+during``, in order, with no gap notice.

S15 *the hot path with recovery*: the pre-buffered drain of S1/S3
(:mod:`bench.scenarios.throughput`), sync counting callback, six variants, each with a fresh
server and subscriber process: *plain* (plain subscription, ``PUBLISH``), *recover*
(``recover=True``, publications with history: two frames per message, the envelope and the
plain copy, which the subscription skips), *plain-sub+history* (a plain subscription fed with
history: it only holds the channel, so one frame), *recover+plain-pub* (``recover=True`` fed
with ``PUBLISH``: one frame, delivered as it is), and the limit of the first two:
*limit-plain* (S1/S3's :class:`~bench.contenders.limit.Limit`) and *limit-recover*
(:class:`~bench.contenders.limit.RecoveringLimit` on each channel and its envelope channel:
per envelope the least a correct recovering reader does, and the plain copy skipped).
Publications with history are written by the orchestrator as pre-encoded pipelined
``EVALSHA`` of the library's own script and key names (a publish per call through the
library could not pre-buffer 500,000 messages in reasonable time); the ``recover`` variant
delivering every message, and the limit's every offset following the last, prove the
envelopes are the library's. Figures: deliveries per CPU-second per variant; redismpx/limit
for plain and for recovering subscriptions and the ratio of the two, the issue's hot-path
ratio with recovery (the bar: >= 0.95); the limit's own recover/plain cost; each redismpx
variant's ratio to *plain* measured in the same round (information).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import select
import socket
import time
from typing import Any

import hiredis

from bench.procs import ScenarioError, Worker
from bench.publisher import now_ns
from bench.resp import Admin, encode
from bench.scenarios.common import CLK_TCK, Counter, Env, cpu_ticks, median, spread, summary
from bench.server import Server, free_port
from bench.worker import Ctl

PUB_PREFIX = b"hp:"
MEM_PREFIX = b"hm:"
REC_PREFIX = b"hr:"
HOT_PREFIX = b"c:"
MEM_PAYLOAD = 100
PERSIST = ("--appendonly", "yes", "--appendfsync", "always")
HISTORY_TTL_MS = 3_600_000
CHUNK = 1000


def _ratio(a: float, b: float) -> float:
    """a / b; NaN when b is 0 (a server's CPU in 10 ms ticks over a --quick repetition)."""
    return a / b if b else float("nan")


def _info(admin: Admin, section: str) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    for line in admin.command("INFO", section).split(b"\r\n"):
        if b":" in line and not line.startswith(b"#"):
            k, v = line.split(b":", 1)
            out[k] = v
    return out


def _cmdstats(admin: Admin) -> dict[str, dict[str, float]]:
    """``INFO commandstats`` as {command: {calls, usec, failed_calls, ...}}."""
    out: dict[str, dict[str, float]] = {}
    for key, value in _info(admin, "commandstats").items():
        if key.startswith(b"cmdstat_"):
            fields = dict(kv.split(b"=", 1) for kv in value.split(b","))
            out[key[8:].decode()] = {k.decode(): float(v) for k, v in fields.items()}
    return out


# --------------------------------------------------------------------------------------------
# S13: publish with history vs plain publish


class Running:
    __slots__ = ("on",)

    def __init__(self) -> None:
        self.on = False

    def stop(self) -> None:
        self.on = False


async def publisher(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Client process of S13: warm up, then one timed burst per ``go``; ``fill`` for memory."""
    from redismpx import Multiplexer

    mpx = Multiplexer(p["url"])
    await mpx.__aenter__()
    await mpx.wait_connected(10)
    publish = mpx.publish
    size = p["history_size"]
    payload = b"m" * p["payload"]
    channels = [PUB_PREFIX + b"%d" % i for i in range(p["publishers"])]
    running = Running()

    async def plain(channel: bytes) -> tuple[int, int]:
        done = receivers = 0
        while running.on:
            receivers += await publish(channel, payload)
            done += 1
        return done, receivers

    async def history(channel: bytes) -> tuple[int, int]:
        done = receivers = 0
        while running.on:
            receivers += await publish(channel, payload, history_size=size)
            done += 1
        return done, receivers

    async def warm_up() -> int:
        n = sum(await asyncio.gather(*(publish(c, payload) for c in channels)))
        for _ in range(p["warm"]):
            found = await asyncio.gather(
                *(publish(c, payload, history_size=size) for c in channels)
            )
            n += sum(found)
        return n

    receivers = await asyncio.wait_for(warm_up(), p["setup_timeout"])
    if receivers:
        raise ScenarioError(f"{receivers} receivers on channels nobody subscribes to")
    ctl.send("ready", {"plain": len(channels), "history": len(channels) * p["warm"]})
    loop = asyncio.get_running_loop()
    while True:
        msg = await ctl.recv(p["block_timeout"])
        if msg[0] == "go":
            body = plain if msg[1] == "plain" else history
            secs = msg[2]
            running.on = True
            timer = loop.call_later(secs, running.stop)
            c0 = time.process_time()
            w0 = time.perf_counter()
            counts = await asyncio.wait_for(
                asyncio.gather(*map(body, channels)), secs + p["drain_timeout"]
            )
            wall = time.perf_counter() - w0
            cpu = time.process_time() - c0
            timer.cancel()
            ctl.send("rep", {"cpu": cpu, "wall": wall,
                             "publishes": sum(c[0] for c in counts),
                             "receivers": sum(c[1] for c in counts)})  # fmt: skip
        elif msg[0] == "fill":
            _, url, count, per_channel, step = msg
            async with Multiplexer(url) as other:
                if step == "prime":  # the script loaded, the connection open
                    await other.publish(MEM_PREFIX + b"warm", b"x", history_size=1)
                else:
                    names = [MEM_PREFIX + b"%d" % i for i in range(count)]
                    fills = (_fill(other, c, per_channel) for c in names)
                    await asyncio.wait_for(asyncio.gather(*fills), p["setup_timeout"])
            ctl.send("filled", None)
        else:
            break
    await asyncio.wait_for(mpx.aclose(), 10)
    return {}


async def _fill(mpx: Any, channel: bytes, count: int) -> None:
    """``count`` 100-byte publications on ``channel``, all retained (``history_size=count``)."""
    data = b"d" * MEM_PAYLOAD
    for _ in range(count):
        await mpx.publish(channel, data, history_size=count)


def run_publish(env: Env, contender: str) -> dict[str, Any]:
    """Orchestrator side of one S13 run (redismpx only)."""
    sizes = env.sizes
    secs = sizes.s13_secs
    params: dict[str, Any] = {
        "publishers": sizes.s13_publishers,
        "payload": sizes.payload,
        "history_size": sizes.s13_history_size,
        "warm": sizes.s13_warm,
        "setup_timeout": env.timeout(300.0),
        "block_timeout": env.timeout(300.0),
        "drain_timeout": env.timeout(60.0),
    }
    reps: dict[str, list[dict[str, Any]]] = {"plain": [], "history": []}
    with env.server() as srv, env.server() as mem_srv:
        assert srv.proc is not None
        pid = srv.proc.pid
        params["url"] = srv.url
        admin = Admin(srv.port)
        mem_admin = Admin(mem_srv.port)
        try:
            with Worker("bench.scenarios.history:publisher", contender, params) as w:
                w.expect("ready", env.timeout(600.0))
                for i in range(sizes.reps):
                    order = ("plain", "history") if i % 2 == 0 else ("history", "plain")
                    for mode in order:
                        admin.command("CONFIG", "RESETSTAT")
                        before = cpu_ticks(pid)
                        w.send("go", mode, secs)
                        rep = w.expect("rep", secs + env.timeout(120.0))[1]
                        rep["server_cpu"] = (cpu_ticks(pid) - before) / CLK_TCK
                        rep["stats"] = _cmdstats(admin)
                        reps[mode].append(rep)
                memory = _measure_memory(w, mem_srv.url, mem_admin, env)
                w.send("stop")
                w.result(env.timeout(60.0))
        finally:
            admin.close()
            mem_admin.close()
    out: dict[str, Any] = {"publishers": sizes.s13_publishers,
                           "history_size": sizes.s13_history_size}  # fmt: skip
    for mode, command in (("plain", "publish"), ("history", "evalsha")):
        rs = reps[mode]
        for r in rs:
            stat = r["stats"].get(command, {})
            if stat.get("calls") != r["publishes"]:
                raise ScenarioError(
                    f"{mode}: the server ran {stat.get('calls')} {command.upper()}, "
                    f"the client completed {r['publishes']}: {sorted(r['stats'])}"
                )
            if r["receivers"]:
                raise ScenarioError(f"{mode}: a publish reached a receiver")
        rates = [r["publishes"] / r["wall"] for r in rs]
        out[f"{mode}_rate"] = median(rates)
        out[f"{mode}_cpu_us"] = median([r["cpu"] / r["publishes"] * 1e6 for r in rs])
        out[f"{mode}_server_cpu_us"] = median([r["server_cpu"] / r["publishes"] * 1e6 for r in rs])
        out[f"{mode}_cmd_us"] = median([r["stats"][command]["usec_per_call"] for r in rs])
        out[f"{mode}_spread"] = spread(rates)
    for figure in ("rate", "cpu_us", "server_cpu_us", "cmd_us"):
        out[f"ratio_{figure}"] = _ratio(out[f"history_{figure}"], out[f"plain_{figure}"])
    out.update(memory)
    return out


def _measure_memory(w: Worker, url: str, admin: Admin, env: Env) -> dict[str, Any]:
    from redismpx._envelope import history_keys

    sizes = env.sizes
    count, per_channel = sizes.s13_mem_channels, sizes.s13_mem_msgs
    w.send("fill", url, count, per_channel, "prime")
    w.expect("filled", env.timeout(60.0))
    before = int(_info(admin, "memory")[b"used_memory"])
    w.send("fill", url, count, per_channel, "fill")
    w.expect("filled", env.timeout(600.0))
    after = int(_info(admin, "memory")[b"used_memory"])
    retained = count * per_channel
    meta, log = history_keys(MEM_PREFIX + b"0")
    length = int(admin.command("XLEN", log))
    if length != per_channel:
        raise ScenarioError(f"a history holds {length} entries, expected {per_channel}")
    keys = int(admin.command("MEMORY", "USAGE", meta)) + int(
        admin.command("MEMORY", "USAGE", log, "SAMPLES", "0")
    )
    return {
        "mem_retained": retained,
        "mem_per_1000": (after - before) / retained * 1000,
        "mem_keys_per_1000": keys / per_channel * 1000,
    }


# --------------------------------------------------------------------------------------------
# S14: recovery of many channels after a restart with persistence


class Tally:
    """What the recovering subscriptions of S14 report, shared by all of them."""

    __slots__ = ("activations", "armed", "disconnects", "gaps", "times")

    def __init__(self) -> None:
        self.activations = 0
        self.armed = False
        self.gaps = 0
        self.disconnects = 0
        self.times: list[int] = []  # on_activation times after arming (CLOCK_MONOTONIC ns)


class Channel:
    """One recovering subscription's callbacks: the numbers it got, in order."""

    __slots__ = ("got", "tally")

    def __init__(self, tally: Tally) -> None:
        self.tally = tally
        self.got: list[int] = []

    def on_message(self, channel: bytes, data: bytes) -> None:
        self.got.append(int(data))

    def on_activation(self, name: bytes) -> None:
        tally = self.tally
        tally.activations += 1
        if tally.armed:
            tally.times.append(time.clock_gettime_ns(time.CLOCK_MONOTONIC))

    def on_disconnect(self, error: BaseException) -> None:
        self.tally.disconnects += 1

    def on_gap(self, gap: Any) -> None:
        self.tally.gaps += 1


async def _until(predicate: Any, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 (counters set by callbacks)
                await asyncio.sleep(0.005)
    except TimeoutError:
        raise ScenarioError(f"timed out after {timeout:.0f}s waiting for {what}") from None


async def _publish_numbered(
    mpx: Any, channels: list[bytes], first: int, count: int, size: int
) -> None:
    """Messages ``first..first+count-1`` on every channel, with history, in order per channel."""
    for k in range(first, first + count):
        data = b"%d" % k
        await asyncio.gather(*(mpx.publish(c, data, history_size=size) for c in channels))


async def recovering(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Subscriber process of S14."""
    from redismpx import Multiplexer
    from redismpx._connection import Connection

    # Round trips: count the command connection's writes (every command of one loop turn
    # goes out in one ``Connection.send``) and the commands in them, once armed.
    writes = [0, 0]
    send = Connection.send

    def counting_send(self: Connection, data: bytes, replies: list[Any]) -> None:
        writes[0] += 1
        writes[1] += len(replies)
        send(self, data, replies)

    Connection.send = counting_send  # type: ignore[method-assign]
    n, before, size = p["channels"], p["before"], p["history_size"]
    mpx = Multiplexer(p["url"])
    await mpx.__aenter__()
    tally = Tally()
    names = [REC_PREFIX + b"%d" % i for i in range(n)]
    chans = []
    recover = p["recover"]
    for channel in names:
        c = Channel(tally)
        sub = mpx.new_channel_subscription(
            c.on_message,
            c.on_disconnect,
            c.on_activation,
            recover=recover,
            on_gap=c.on_gap if recover else None,
        )
        sub.add(channel)
        chans.append(c)
    await _until(lambda: tally.activations >= n, p["timeout"], f"{n} recovering channels")
    await _publish_numbered(mpx, names, 1, before, size)
    await _until(lambda: all(len(c.got) == before for c in chans), p["timeout"], "the messages")
    ctl.send("ready", None)
    reads0 = 0
    cpu0 = 0.0
    while True:
        msg = await ctl.recv(p["timeout"] * 3)  # the loop keeps running: mpx reconnects
        if msg[0] == "arm":
            tally.armed = True
            tally.times.clear()
            reads0 = mpx._hub.history.reads
            writes[:] = [0, 0]
            cpu0 = time.process_time()
            ctl.send("armed", None)
        elif msg[0] == "caught":
            times = tally.times  # all of them only once complete
            if len(times) >= n:
                ctl.send("caught", len(times), sorted(times), time.process_time() - cpu0,
                         tuple(writes))  # fmt: skip
            else:
                ctl.send("caught", len(times), [], 0.0, (0, 0))
        elif msg[0] == "check":
            want = list(range(1, msg[1] + 1))
            missing = dups = disorder = 0
            for c in chans:
                got = c.got
                if got != want:
                    missing += len(set(want) - set(got))
                    dups += len(got) - len(set(got))
                    disorder += sum(1 for a, b in itertools.pairwise(got) if b <= a)
            ctl.send("checked", {"missing": missing, "duplicates": dups, "disorder": disorder,
                                 "gaps": tally.gaps, "disconnects": tally.disconnects,
                                 "history_reads": mpx._hub.history.reads - reads0})  # fmt: skip
        else:
            break
    await asyncio.wait_for(mpx.aclose(), 30)
    return {"dropped": mpx.stats()["dropped"]}


async def _outage_publish(url: str, names: list[bytes], first: int, count: int, size: int) -> None:
    from redismpx import Multiplexer

    async with Multiplexer(url) as mpx:
        await _publish_numbered(mpx, names, first, count, size)


def _wait_active(port: int, total: int, timeout: float) -> int:
    admin = Admin(port)
    try:
        deadline = time.monotonic() + timeout
        while admin.counts()[0] != total:
            if time.monotonic() > deadline:
                raise ScenarioError(f"not all {total} names back after {timeout}s")
            time.sleep(0.002)
        return now_ns()
    finally:
        admin.close()


def _wait_caught_up(w: Worker, n: int, timeout: float) -> tuple[list[int], float, Any]:
    """The subscriber's activation times once all ``n`` caught up, its CPU time since it was
    armed, and (writes, commands) of its command connection since."""
    deadline = time.monotonic() + timeout
    while True:
        w.send("caught")
        _, count, times, cpu, writes = w.expect("caught", timeout)
        if count >= n:
            return [int(t) for t in times], cpu, writes
        if time.monotonic() > deadline:
            raise ScenarioError(f"{count} of {n} channels caught up after {timeout}s")
        time.sleep(0.02)


def run_recovery(env: Env, contender: str) -> dict[str, Any]:
    """Orchestrator side of one S14 round (redismpx only): plain subscriptions through the
    same restart (the baseline: they only resubscribe, and lose what the outage missed),
    then recovering ones."""
    plain = _recovery_variant(env, contender, recover=False)
    out = _recovery_variant(env, contender, recover=True)
    if out["lost"] or out["gaps"]:
        raise ScenarioError(f"recovery was not exact: lost {out['lost']}, gaps {out['gaps']}")
    for key in ("ready_ms", "all_active_ms", "caught_up_ms", "client_cpu_ms", "lost"):
        out[f"plain_{key}"] = plain[key]
    out["ratio_caught_up"] = _ratio(out["caught_up_ms"], plain["caught_up_ms"])
    return out


def _recovery_variant(env: Env, contender: str, *, recover: bool) -> dict[str, Any]:
    sizes = env.sizes
    n, before, during = sizes.s14_channels, sizes.s14_before, sizes.s14_during
    size = before + during + 100
    timeout = env.timeout(120.0)
    names = [REC_PREFIX + b"%d" % i for i in range(n)]
    with Server(env.binary, PERSIST) as srv:
        params = {"url": srv.url, "channels": n, "before": before, "history_size": size,
                  "timeout": timeout, "recover": recover}  # fmt: skip
        with Worker("bench.scenarios.history:recovering", contender, params) as w:
            w.expect("ready", timeout * 2)
            w.send("arm")
            w.expect("armed", timeout)
            port = srv.port
            srv.kill()
            # The outage: the server is back on a port the subscriber does not know, and the
            # publishers go on there (the history lands in the AOF).
            srv.port = free_port()
            srv.start()
            t0 = time.monotonic()
            asyncio.run(_outage_publish(srv.url, names, before + 1, during, size))
            outage_publish_s = time.monotonic() - t0
            srv.kill()
            srv.port = port
            t_restart = now_ns()
            srv.start()  # returns once it answers PING: the AOF is loaded
            t_ready = now_ns()
            assert srv.proc is not None
            pid = srv.proc.pid
            # A recovering channel is two names: the channel and its envelope channel.
            t_active = _wait_active(port, 2 * n if recover else n, timeout)
            times, client_cpu, (writes, commands) = _wait_caught_up(w, n, timeout)
            server_cpu = cpu_ticks(pid) / CLK_TCK  # since it started: the restart's own cost
            admin = Admin(port)
            try:
                stats = _cmdstats(admin)
            finally:
                admin.close()
            w.send("check", before + during)
            check = w.expect("checked", timeout)[1]
            w.send("stop")
            final = w.result(timeout)
    if check["duplicates"] or check["disorder"]:
        raise ScenarioError(f"duplicates or disorder: {check}")
    if final["dropped"]:
        raise ScenarioError(f"redismpx dropped {final['dropped']} messages")
    evalsha = stats.get("evalsha", {})
    ms = [(t - t_restart) / 1e6 for t in times]
    return {
        "channels": n,
        "missed_per_channel": during,
        "outage_publish_s": outage_publish_s,
        "ready_ms": (t_ready - t_restart) / 1e6,
        "all_active_ms": (t_active - t_restart) / 1e6,
        "first_caught_up_ms": ms[0],
        "median_caught_up_ms": median(ms),
        "caught_up_ms": ms[-1],
        "active_to_caught_up_ms": (times[-1] - t_active) / 1e6,
        "evalsha": evalsha.get("calls", 0.0),
        "evalsha_failed": evalsha.get("failed_calls", 0.0) + evalsha.get("rejected_calls", 0.0),
        "eval": stats.get("eval", {}).get("calls", 0.0),
        "history_reads": check["history_reads"],
        "command_writes": writes,
        "commands": commands,
        "client_cpu_ms": client_cpu * 1e3,
        "server_cpu_ms": server_cpu * 1e3,
        "lost": check["missing"],
        "gaps": check["gaps"],
    }


# --------------------------------------------------------------------------------------------
# S15: the hot path of recovering subscriptions

# name: (subscriber, recovering subscriptions, published with history). Each limit variant
# runs next to its redismpx one (their ratio is the figure); the last two are information.
HOT_VARIANTS = {
    "limit-plain": ("limit", False, False),
    "plain": ("mpx", False, False),
    "recover": ("mpx", True, True),
    "limit-recover": ("limit", True, True),
    "plain-sub+history": ("mpx", False, True),
    "recover+plain-pub": ("mpx", True, False),
}


async def hot_subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Subscriber process of S15: set up, then one measured drain per ``go`` (see S1)."""
    from redismpx import Multiplexer

    mpx = Multiplexer(p["url"])
    await mpx.__aenter__()
    await mpx.wait_connected(10)
    counter = Counter()
    active = [0]

    def on_activation(name: bytes) -> None:
        active[0] += 1

    subs = []
    for i in range(p["channels"]):
        sub = mpx.new_channel_subscription(
            counter.on_message, on_activation=on_activation, recover=p["recover"]
        )
        sub.add(HOT_PREFIX + b"%d" % i)
        subs.append(sub)
    await _until(lambda: active[0] >= p["channels"], p["setup_timeout"], "the subscriptions")
    ctl.send("ready", None)
    received0 = mpx.stats()["messages_received"]
    while True:
        msg = ctl.block(p["block_timeout"])  # event loop blocked: the publisher fills the socket
        if msg[0] != "go":
            break
        done = counter.arm(msg[1])
        c0 = time.process_time()
        w0 = time.perf_counter()
        await asyncio.wait_for(done, p["drain_timeout"])
        wall = time.perf_counter() - w0
        cpu = time.process_time() - c0
        ctl.send("rep", {"cpu": cpu, "wall": wall})
    stats = mpx.stats()
    await asyncio.wait_for(mpx.aclose(), 10)
    return {"frames": stats["messages_received"] - received0, "dropped": stats["dropped"],
            "errors": stats["callback_errors"]}  # fmt: skip


async def hot_limit_subscriber(ctl: Ctl, name: str, p: dict[str, Any]) -> dict[str, Any]:
    """Subscriber process of S15's limit variants: S1/S3's limit reader for plain
    subscriptions (the same calls as S1/S3 make), :class:`RecoveringLimit` for recovering
    ones (each channel and its envelope channel); then the drains of :func:`hot_subscriber`."""
    from bench.contenders.limit import Limit, RecoveringLimit
    from redismpx._envelope import envelope_channel

    counter = Counter()
    names = [HOT_PREFIX + b"%d" % i for i in range(p["channels"])]
    limit: Limit
    if p["recover"]:
        limit = recovering = RecoveringLimit(p["url"])
        await limit.start()
        for channel in names:
            sub = limit.subscription(counter.on_message)
            await recovering.add_recovering(sub, channel, envelope_channel(channel))
    else:
        limit = Limit(p["url"])
        await limit.start()
        for channel in names:
            sub = limit.subscription(counter.on_message)
            await limit.add(sub, [channel])
    await limit.wait_ready(p["setup_timeout"])
    ctl.send("ready", None)
    while True:
        msg = ctl.block(p["block_timeout"])  # event loop blocked: the publisher fills the socket
        if msg[0] != "go":
            break
        done = counter.arm(msg[1])
        c0 = time.process_time()
        w0 = time.perf_counter()
        await asyncio.wait_for(done, p["drain_timeout"])
        wall = time.perf_counter() - w0
        cpu = time.process_time() - c0
        ctl.send("rep", {"cpu": cpu, "wall": wall})
    out: dict[str, Any] = {"dropped": 0, "errors": 0}
    if p["recover"]:
        tracks = recovering.tracks()
        # Every envelope delivered in order (offsets 1.. on a fresh server), none missed.
        out["delivered"] = sum(t.offset for t in tracks)
        out["missed"] = sum(t.missed for t in tracks)
    await asyncio.wait_for(limit.aclose(), 10)
    return out


def history_bulk(
    port: int, channels: list[bytes], n: int, payload_size: int, history_size: int
) -> dict[str, Any]:
    """Publish ``n`` messages with history round-robin over ``channels``: pipelined
    ``EVALSHA`` of the library's publish script, as ``publish(..., history_size=...)`` sends
    it; waits for every reply. Returns how many replies counted no receiver."""
    from redismpx._envelope import envelope_channel, history_keys
    from redismpx._scripts import PUBLISH

    admin = Admin(port)
    try:
        if admin.command("SCRIPT", "LOAD", PUBLISH.source) != PUBLISH.sha:
            raise ScenarioError("SCRIPT LOAD gave another SHA1")
    finally:
        admin.close()
    payload = b"m" * payload_size
    epoch = os.urandom(8).hex().encode()
    tag = b"%d" % int.from_bytes(os.urandom(6), "big")  # one per channel will do: ids grow
    cmds = []
    for channel in channels:
        meta, log = history_keys(channel)
        cmds.append(encode(b"EVALSHA", PUBLISH.sha, b"2", meta, log, channel,
                           envelope_channel(channel), payload, b"%d" % history_size,
                           b"%d" % HISTORY_TTL_MS, epoch, b"PUBLISH", tag))  # fmt: skip
    reader = hiredis.Reader()
    got = zero = 0

    def take(data: bytes) -> None:
        nonlocal got, zero
        reader.feed(data)
        while (reply := reader.gets()) is not False:
            if isinstance(reply, hiredis.ReplyError):
                raise ScenarioError(f"EVALSHA failed: {reply}")
            got += 1
            zero += reply[0] == 0

    with socket.create_connection(("127.0.0.1", port), timeout=60.0) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cycle = itertools.cycle(cmds)
        left = n
        while left > 0:
            k = min(CHUNK, left)
            sock.sendall(b"".join(itertools.islice(cycle, k)))
            left -= k
            while select.select([sock], [], [], 0)[0]:
                data = sock.recv(1 << 20)
                if not data:
                    raise ScenarioError("the server closed the publishing connection")
                take(data)
        while got < n:
            data = sock.recv(1 << 20)
            if not data:
                raise ScenarioError("the server closed the publishing connection")
            take(data)
    return {"zero": zero}


def _hot_variant(env: Env, variant: str, channels: int) -> dict[str, Any]:
    sizes = env.sizes
    subscriber, recover, with_history = HOT_VARIANTS[variant]
    body = "hot_subscriber" if subscriber == "mpx" else "hot_limit_subscriber"
    msgs = sizes.s15_msgs
    params: dict[str, Any] = {
        "channels": channels,
        "recover": recover,
        "setup_timeout": env.timeout(120.0),
        "block_timeout": env.timeout(300.0),
        "drain_timeout": env.timeout(120.0),
    }
    names = [HOT_PREFIX + b"%d" % i for i in range(channels)]
    results = []
    with env.server() as srv:
        params["url"] = srv.url
        with Worker(f"bench.scenarios.history:{body}", subscriber, params) as w:
            w.expect("ready", env.timeout(180.0))
            admin = Admin(srv.port)
            try:
                # A recovering channel is two names (the channel and its envelope channel).
                admin.wait_counts(channels * (2 if recover else 1), None, timeout=10)
            finally:
                admin.close()
            for _ in range(sizes.reps):
                if with_history:
                    done = history_bulk(srv.port, names, msgs, sizes.payload, 1000)
                    if done["zero"]:
                        raise ScenarioError(f"{done['zero']} publications had no receiver")
                else:
                    env.publisher.bulk(srv.port, HOT_PREFIX, channels, msgs, sizes.payload)
                w.send("go", msgs)
                results.append(w.expect("rep", env.timeout(180.0))[1])
            w.send("stop")
            final = w.result(env.timeout(60.0))
    if final["dropped"] or final["errors"]:
        raise ScenarioError(f"{variant}: dropped {final['dropped']}, errors {final['errors']}")
    out = summary(results, msgs)
    if "frames" in final:
        out["frames_per_msg"] = final["frames"] / (msgs * sizes.reps)
    if "missed" in final and (final["missed"] or final["delivered"] != msgs * sizes.reps):
        raise ScenarioError(f"{variant}: {final['delivered']} envelopes delivered of "
                            f"{msgs * sizes.reps}, {final['missed']} missed")  # fmt: skip
    return out


def run_hot(env: Env, contender: str, *, channels: int) -> dict[str, Any]:
    """Orchestrator side of one S15 round: every variant (redismpx's and the limit's), then
    the ratios: redismpx/limit for plain and for recovering subscriptions and the ratio of
    those two (the issue's hot-path ratio with recovery), and each redismpx variant to
    *plain*."""
    out: dict[str, Any] = {"channels": channels, "messages": env.sizes.s15_msgs}
    for variant in HOT_VARIANTS:
        figures = _hot_variant(env, variant, channels)
        for key in ("rate_cpu", "cpu_per_m", "rate_wall", "spread", "frames_per_msg"):
            if key in figures:
                out[f"{variant}_{key}"] = figures[key]
    for variant, (subscriber, _, _) in HOT_VARIANTS.items():
        if subscriber == "mpx":
            out[f"{variant}_ratio"] = _ratio(out[f"{variant}_rate_cpu"], out["plain_rate_cpu"])
    out["plain_vs_limit"] = _ratio(out["plain_rate_cpu"], out["limit-plain_rate_cpu"])
    out["recover_vs_limit"] = _ratio(out["recover_rate_cpu"], out["limit-recover_rate_cpu"])
    out["hot_path_ratio"] = _ratio(out["recover_vs_limit"], out["plain_vs_limit"])
    # The limit's own price of recovery: its CPU per delivery, recovering / plain (the wire
    # carries two frames per message instead of one).
    out["limit_recover_cost"] = _ratio(out["limit-plain_rate_cpu"], out["limit-recover_rate_cpu"])
    return out
