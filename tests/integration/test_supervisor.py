"""The supervisor keeps its promise: nothing ends it, and no option value stops it reconnecting.

Also: once the reader declares a connection dead, nothing more read from it is dispatched.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import pytest

import redismpx._link
from redismpx import ClusterMultiplexer, ConnectError, ConnectionLost, Multiplexer, State
from redismpx._protocol import encode_command
from redismpx.errors import InvalidArgument
from support.internals import link_of
from support.logwatch import LogWatch, watch_log
from support.recorder import Recorder

PASSWORD = "Sup3rvisor-s3cret"


def _no_secret(m: Multiplexer, log: LogWatch) -> None:
    texts = [log.text, repr(m), str(m.stats())]
    e = m.last_error
    while e is not None:
        texts += [str(e), repr(e), repr(vars(e))]
        e = e.__cause__ or e.__context__
    for text in texts:
        assert PASSWORD[:8] not in text, text


async def test_an_unencodable_option_slipped_past_validation_is_reported(
    server_factory: Any,
) -> None:
    """The reviewer's case: the handshake's UnicodeEncodeError ended the supervisor silently
    (state stuck at connecting, no error, nothing logged) and ``aclose()`` raised it."""
    srv = server_factory(password=PASSWORD)
    with watch_log() as log:
        m = Multiplexer(srv.url, backoff_cap=0.05)
        good = link_of(m).options
        link_of(m).options = dataclasses.replace(good, password=PASSWORD + "\udc80")
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await log.wait_until(lambda: log.count("cannot be encoded") >= 2)
        assert isinstance(m.last_error, ConnectError)
        assert "password cannot be encoded as UTF-8" in str(m.last_error)
        assert m.state in (State.CONNECTING, State.DISCONNECTED)  # never up
        assert log.count("cannot be encoded", logging.WARNING) == 1  # then at DEBUG level
        # Still retrying: with the options mended, it connects.
        link_of(m).options = good
        await rec.activated("x")
        await m.aclose()  # raises nothing
    _no_secret(m, log)


async def test_a_bug_while_connecting_does_not_end_the_supervisor(
    server_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = server_factory(password=PASSWORD)
    real_connect = redismpx._link.connect
    broken = True

    async def connect(opts: Any) -> Any:
        if broken:
            raise RuntimeError(f"a bug that quotes {opts.password}")
        return await real_connect(opts)

    monkeypatch.setattr(redismpx._link, "connect", connect)
    with watch_log() as log:
        async with Multiplexer(srv.url, backoff_cap=0.05) as m:
            rec = Recorder()
            m.new_channel_subscription(*rec.callbacks).add("x")
            await log.wait_until(lambda: log.count("unexpected RuntimeError") >= 3)
            assert isinstance(m.last_error, ConnectError)
            assert "unexpected RuntimeError while connecting" in str(m.last_error)
            assert m.state in (State.CONNECTING, State.DISCONNECTED)  # never up
            # One ERROR with the traceback (password redacted), then DEBUG lines.
            assert log.count("unexpected RuntimeError", logging.ERROR) == 1
            assert "Traceback" in log.text and "a bug that quotes (redacted)" in log.text
            _no_secret(m, log)
            broken = False
            await rec.activated("x")
            await srv.acommand("PUBLISH", "x", "after")
            await rec.received(1)


async def test_a_bug_while_serving_is_an_outage_not_the_end(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with watch_log() as log:
        async with Multiplexer(redis_server.url, backoff_cap=0.05) as m:
            rec = Recorder()
            m.new_channel_subscription(*rec.callbacks).add("x")
            await rec.activated("x")
            registry = link_of(m).registry
            real = registry.on_connected
            broken = True

            def on_connected() -> Any:
                if broken:
                    raise RuntimeError("a bug in the registry")
                return real()

            monkeypatch.setattr(registry, "on_connected", on_connected)
            await redis_server.acommand("CLIENT", "KILL", "TYPE", "pubsub")
            await rec.disconnected(1)  # the real outage
            await rec.disconnected(2)  # the bug, reported to subscriptions as an outage
            error = rec.disconnects[1]
            assert isinstance(error, ConnectionLost) and "unexpected RuntimeError" in str(error)
            assert error.__cause__ is None and error.__context__ is None
            await log.wait_until(lambda: log.count("unexpected RuntimeError while serving") >= 2)
            # Logged once (the ERROR with its traceback), not once per attempt.
            assert log.count("unexpected RuntimeError", logging.ERROR) == 1
            assert log.count("unexpected RuntimeError", logging.WARNING) == 0
            broken = False
            await rec.activated("x", count=2)
            await redis_server.acommand("PUBLISH", "x", "after")
            await rec.received(1)


# -- durations that would stop the supervisor --------------------------------------------------

DURATIONS = [
    "connect_timeout",
    "health_check_interval",
    "health_check_timeout",
    "backoff_base",
    "backoff_cap",
]
ABSURD = [float("inf"), 1e300, 86400.5, float("nan"), 0, -1.0, 1e-9, float("-inf")]


@pytest.mark.parametrize("value", ABSURD, ids=repr)
@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("cls", [Multiplexer, ClusterMultiplexer])
def test_absurd_durations_are_refused(cls: type[Multiplexer], name: str, value: float) -> None:
    kwargs: dict[str, Any] = {name: value}
    if name == "backoff_base" and value == value and value > 0:
        kwargs["backoff_cap"] = min(value, 86400)  # fail on backoff_base, not on the cap
    with pytest.raises(InvalidArgument) as info:
        cls("redis://127.0.0.1:1", **kwargs)  # refused before any I/O
    assert name in str(info.value)
    assert "0.001" in str(info.value) and "86400" in str(info.value)


async def test_the_largest_durations_still_work(redis_server: Any) -> None:
    async with Multiplexer(
        redis_server.url,
        connect_timeout=86400,
        health_check_interval=86400,
        health_check_timeout=86400,
        backoff_base=86400,
        backoff_cap=86400,
    ) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        await redis_server.acommand("PUBLISH", "x", "ok")
        await rec.received(1)


# -- the reader after an abort -------------------------------------------------------------------


def _message(protocol: int, channel: bytes, data: bytes) -> bytes:
    head = b">3\r\n" if protocol == 3 else b"*3\r\n"
    return head + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in (b"message", channel, data))


@pytest.mark.parametrize("protocol", [3, 2], ids=["resp3", "resp2"])
async def test_nothing_is_dispatched_from_a_connection_declared_dead(
    redis_server: Any, protocol: int
) -> None:
    async with Multiplexer(redis_server.url, protocol=protocol, backoff_cap=0.05) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        conn = link_of(m).conn
        assert conn is not None
        # One chunk: an error reply to no command we sent (the protocol is out of step: the
        # connection is aborted), then a message that must not be believed any more.
        conn.data_received(b"-ERR out of step\r\n" + _message(protocol, b"x", b"stale"))
        assert rec.messages == []  # dispatch is inline: it would be there already
        await rec.disconnected(1)
        assert "error reply with no command pending" in str(rec.disconnects[0])
        await rec.activated("x", count=2)
        await redis_server.acommand("PUBLISH", "x", "fresh")
        await rec.received(1)
        assert rec.messages == [(b"x", b"fresh")]


async def test_nothing_is_dispatched_after_a_real_out_of_step_error(redis_server: Any) -> None:
    # The server itself sends the chunk: over RESP3 a subscribed connection may run any
    # command, so an unknown one and a PUBLISH pipelined on it answer "-ERR unknown
    # command", then the message, in one write.
    async with Multiplexer(redis_server.url, protocol=3, backoff_cap=0.05) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        conn = link_of(m).conn
        assert conn is not None
        conn.write(encode_command(b"NO-SUCH-COMMAND") + encode_command(b"PUBLISH", b"x", b"stale"))
        await rec.disconnected(1)
        assert "error reply with no command pending" in str(rec.disconnects[0])
        await rec.activated("x", count=2)
        await redis_server.acommand("PUBLISH", "x", "fresh")
        await rec.received(1)
        assert rec.messages == [(b"x", b"fresh")]
