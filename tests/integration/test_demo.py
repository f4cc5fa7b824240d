"""The demo app over real sockets: uvicorn in the test's loop, a websockets client, a real
server (the ``redis_server`` fixture, or the demo's own embedded one)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.typing import Origin

from redismpx.demo import create_app, recovery
from redismpx.demo.limits import Limits
from redismpx.server import free_port

pytestmark = pytest.mark.timeout(60)


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port; yields ``host:port``."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        async with asyncio.timeout(20):
            while not server.started:
                if task.done():
                    task.result()
                    raise RuntimeError("uvicorn exited during startup")
                await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def demo(redis_server: Any) -> AsyncIterator[str]:
    async with serve(create_app(redis_server.url)) as address:
        yield address


async def recv(ws: ClientConnection, timeout: float = 5) -> str:
    async with asyncio.timeout(timeout):
        return str(await ws.recv())


async def recv_until(ws: ClientConnection, prefix: str, timeout: float = 10) -> str:
    """The next frame starting with ``prefix`` (others are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = str(await ws.recv())
            if frame.startswith(prefix):
                return frame


async def recv_json(ws: ClientConnection, type_: str, timeout: float = 10, **match: Any) -> Any:
    """The next JSON message of type ``type_`` whose fields equal ``match``."""
    async with asyncio.timeout(timeout):
        while True:
            msg = json.loads(await ws.recv())
            if msg["type"] == type_ and all(msg.get(k) == v for k, v in match.items()):
                return msg


async def join(ws: ClientConnection, channel: str) -> None:
    await ws.send(f"+{channel}")
    assert await recv(ws) == f"ok: joined [{channel}]"
    assert await recv_until(ws, "active:") == f"active: [{channel}]"


# -- the /ws text protocol ---------------------------------------------------------------------


async def test_text_protocol_join_publish_leave(demo: str) -> None:
    async with (
        websockets.connect(f"ws://{demo}/ws") as alice,
        websockets.connect(f"ws://{demo}/ws") as bob,
    ):
        await join(alice, "room")
        await bob.send("!room")
        assert await recv(bob) == "ok: your next message goes to [room]"
        await bob.send("+not a command: the next frame is the message")
        assert await recv(alice) == (
            "ch: [room] msg: [+not a command: the next frame is the message]"
        )
        assert (await recv(bob)).startswith("ok: published to [room] (1 receivers)")

        await alice.send("-room")
        assert await recv(alice) == "ok: left [room]"
        await join(alice, "lobby")
        for channel in ("room", "lobby"):
            await bob.send(f"!{channel}")
            await recv(bob)
            await bob.send(f"to {channel}")
            await recv_until(bob, "ok: published")
        # Delivery is in order on the one connection: had "room" been delivered, it would
        # have come first.
        assert await recv(alice) == "ch: [lobby] msg: [to lobby]"


async def test_bad_input_gets_an_error_and_the_socket_stays_open(demo: str) -> None:
    async with websockets.connect(f"ws://{demo}/ws") as ws:
        bad = {
            "hello": "error: unknown command",
            "+": "error: channel name must be a non-empty string",
            "+bad name": "error: channel name 'bad name' may only contain",
            "+" + "x" * 65: "error: channel name is too long",
            "x" * 20_000: "error: frame too large",
        }
        for frame, error in bad.items():
            await ws.send(frame)
            assert (await recv(ws)).startswith(error), frame
        await ws.send(b"\x00binary")
        assert (await recv(ws)).startswith("error: binary frames are not accepted")
        await ws.send("!ok")
        await recv(ws)
        await ws.send("y" * 5000)
        assert (await recv(ws)).startswith("error: message is too large (5000 bytes")
        await join(ws, "still-fine")


async def test_rate_limit(redis_server: Any) -> None:
    app = create_app(redis_server.url, limits=Limits(rate=1.0, burst=3))
    async with serve(app) as address, websockets.connect(f"ws://{address}/ws") as ws:
        for i in range(10):
            await ws.send(f"+flood{i}")
        replies = [await recv(ws) for _ in range(4)]
        assert replies[:3] == [f"ok: joined [flood{i}]" for i in range(3)]
        assert "error: rate limit: at most 1 commands per second" in replies


async def test_closing_the_socket_closes_its_subscription(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        before = (await http.get("/healthz")).json()
        async with websockets.connect(f"ws://{demo}/ws") as ws:
            await join(ws, "short-lived")
            during = (await http.get("/healthz")).json()
            assert during["sockets"] == 1
            assert during["mpx"]["subscriptions"] == before["mpx"]["subscriptions"] + 1
            assert during["mpx"]["channels"] == before["mpx"]["channels"] + 1
        async with asyncio.timeout(5):
            while (after := (await http.get("/healthz")).json())["sockets"]:
                await asyncio.sleep(0.02)
        assert after["mpx"]["subscriptions"] == before["mpx"]["subscriptions"]
        assert after["mpx"]["channels"] == before["mpx"]["channels"]


async def test_cross_site_websocket_is_refused(demo: str) -> None:
    with pytest.raises(websockets.InvalidStatus):
        async with websockets.connect(f"ws://{demo}/ws", origin=Origin("http://evil.example")):
            pass
    async with websockets.connect(f"ws://{demo}/ws", origin=Origin(f"http://{demo}")) as ws:
        await join(ws, "same-origin")


# -- the /ws/json protocol ---------------------------------------------------------------------


async def test_json_protocol(demo: str) -> None:
    async with (
        websockets.connect(f"ws://{demo}/ws/json") as asker,
        websockets.connect(f"ws://{demo}/ws/json") as other,
    ):
        asker_name = (await recv_json(asker, "welcome"))["name"]
        other_name = (await recv_json(other, "welcome"))["name"]
        assert asker_name != other_name
        for frame, error in [
            ("nope", "not JSON"),
            ("[]", "a command is a JSON object"),
            ('{"op": "fly"}', "unknown op 'fly'"),
            ('{"op": "join", "channel": "a b"}', "may only contain"),
            ('{"op": "ask", "suffix": "s", "timeout": 0}', "timeout must be"),
            ('{"op": "numbers", "action": "fly"}', "action must be 'start' or 'stop'"),
        ]:
            await asker.send(frame)
            assert error in (await recv_json(asker, "error"))["error"]

        await other.send(json.dumps({"op": "psubscribe", "pattern": "json:*"}))
        await recv_json(other, "sub", kind="pattern", name="json:*", state="active")
        await asker.send(json.dumps({"op": "publish", "channel": "json:x", "message": "hi"}))
        msg = await recv_json(other, "message")
        assert msg == {
            "type": "message",
            "channel": "json:x",
            "message": "hi",
            "from": asker_name,
            "pattern": "json:*",
        }

        await asker.send(json.dumps({"op": "ask", "suffix": "s1", "question": "?", "timeout": 30}))
        await recv_json(asker, "promise", suffix="s1", state="pending")
        board = await recv_json(other, "stats")  # the question shows on everyone's board
        while not any(q["suffix"] == "s1" for q in board["questions"]):
            board = await recv_json(other, "stats")
        await other.send(json.dumps({"op": "answer", "suffix": "s1", "message": "yes"}))
        resolved = await recv_json(asker, "promise", suffix="s1", state="resolved")
        assert resolved["message"] == "yes"


async def test_publish_while_redis_is_down_is_refused_in_time(redis_server: Any) -> None:
    """The demo publishes with ``mpx.publish``: while Redis is down a publish waits at most
    ``publish_timeout`` and the socket is told plainly; once Redis is back it works again."""
    app = create_app(redis_server.url, limits=Limits(publish_timeout=0.5))
    async with (
        serve(app) as address,
        websockets.connect(f"ws://{address}/ws") as text,
        websockets.connect(f"ws://{address}/ws/json") as page,
    ):
        await recv_json(page, "welcome")
        await join(text, "room")
        await text.send("!room")
        await recv(text)
        await text.send("before")  # opens the command connection
        assert await recv_until(text, "ok: published") == "ok: published to [room] (1 receivers)"
        await redis_server.akill()
        await recv_until(text, "disconnected:")
        # The first publish may find the command connection not yet known dead (then it is
        # written and the break reported); either way the socket is told, in time.
        await text.send("!room")
        await recv(text)
        await text.send("maybe")
        first = await recv_until(text, "error:", timeout=5)
        assert first.startswith("error: publish to room failed: "), first
        unreachable = "Redis is unreachable (no connection within 0.5 s): not sent"
        loop = asyncio.get_running_loop()
        started = loop.time()
        await text.send("!room")
        await recv(text)
        await text.send("lost")
        assert await recv_until(text, "error:", timeout=5) == (
            f"error: publish to room failed: {unreachable}"
        )
        assert loop.time() - started < 3
        await page.send(json.dumps({"op": "publish", "channel": "room", "message": "lost"}))
        error = await recv_json(page, "error", timeout=5)
        assert error["error"] == f"publish to room failed: {unreachable}"

        await redis_server.astart()
        assert await recv_until(text, "active:", timeout=30) == "active: [room]"
        await text.send("!room")
        await recv(text)
        await text.send("back")
        assert await recv_until(text, "ch:") == "ch: [room] msg: [back]"


async def test_published_counts_the_tabs_reached_and_redis_connections(demo: str) -> None:
    """Two tabs on a channel and one on a matching pattern: the message reaches three tabs of
    this process, and Redis counts two subscriber connections (the process' one connection,
    once for the channel and once for the pattern). A tab on both is one tab."""
    async with (
        websockets.connect(f"ws://{demo}/ws/json") as alice,
        websockets.connect(f"ws://{demo}/ws/json") as bob,
        websockets.connect(f"ws://{demo}/ws/json") as carol,
        websockets.connect(f"ws://{demo}/ws/json") as writer,
        websockets.connect(f"ws://{demo}/ws") as cli,
    ):
        for ws in (alice, bob, carol, writer):
            await recv_json(ws, "welcome")
        for ws in (alice, bob):
            await ws.send(json.dumps({"op": "join", "channel": "news"}))
            await recv_json(ws, "sub", kind="channel", name="news", state="active")
        for ws in (bob, carol):
            await ws.send(json.dumps({"op": "psubscribe", "pattern": "new[^x]"}))
            await recv_json(ws, "sub", kind="pattern", name="new[^x]", state="active")

        async def publish(channel: str) -> Any:
            await writer.send(json.dumps({"op": "publish", "channel": channel, "message": "m"}))
            return await recv_json(writer, "published", channel=channel)

        assert await publish("news") == {
            "type": "published",
            "channel": "news",
            "tabs": 3,
            "redis": 2,
        }
        assert (await publish("newx"))["tabs"] == 0  # [^x] excludes it, as in Redis
        assert (await publish("other"))["tabs"] == 0
        await join(cli, "other")  # a command-line client is a socket of the process too
        assert (await publish("other")) == {
            "type": "published",
            "channel": "other",
            "tabs": 1,
            "redis": 1,
        }
        await alice.send(json.dumps({"op": "leave", "channel": "news"}))
        await recv_json(alice, "sub", name="news", state="left")
        assert (await publish("news"))["tabs"] == 2


async def test_messages_name_their_sender(demo: str) -> None:
    async with (
        websockets.connect(f"ws://{demo}/ws/json") as page,
        websockets.connect(f"ws://{demo}/ws") as cli,
    ):
        name = (await recv_json(page, "welcome"))["name"]
        await page.send(json.dumps({"op": "join", "channel": "who"}))
        await recv_json(page, "sub", name="who", state="active")
        await page.send(json.dumps({"op": "publish", "channel": "who", "message": "me"}))
        assert (await recv_json(page, "message"))["from"] == name
        await cli.send("!who")
        await recv(cli)
        await cli.send("from the command line")
        assert (await recv_json(page, "message"))["from"].startswith("cli-")


async def test_link_status_clears_the_error_once_recovered(redis_server: Any) -> None:
    """/healthz and the page's stats say the same: during an outage the link is
    ``disconnected`` throughout (``mpx.state`` says ``connecting`` between retries) and the
    error is current (503); once the link is back it is history (``last_outage``, with its
    times), 200."""
    async with (
        serve(create_app(redis_server.url)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
        websockets.connect(f"ws://{address}/ws/json") as page,
    ):
        await recv_json(page, "welcome")
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["link"]["error"] is None
        assert health.json()["link"]["last_outage"] is None
        assert "last_error" not in health.json()["mpx"]

        await redis_server.akill()
        down = await recv_json(page, "stats", timeout=10)
        while down["link"]["state"] == "connected":
            down = await recv_json(page, "stats")
        assert down["link"]["error"]
        assert down["link"]["down_since"] is not None
        async with asyncio.timeout(10):
            while (health := await http.get("/healthz")).status_code != 503:
                await asyncio.sleep(0.05)
        assert health.json()["status"] == "unavailable"
        assert health.json()["link"]["error"]
        states = set()
        loop = asyncio.get_running_loop()
        until = loop.time() + 1.0  # several retries (the backoff is at most 0.512 s)
        while loop.time() < until:
            states.add((await http.get("/healthz")).json()["link"]["state"])
            await asyncio.sleep(0.02)
        assert states == {"disconnected"}

        await redis_server.astart()
        up = await recv_json(page, "stats", timeout=30)
        while up["link"]["state"] != "connected":
            up = await recv_json(page, "stats", timeout=30)
        assert up["link"]["error"] is None
        outage = up["link"]["last_outage"]
        assert outage["error"]  # what broke the link, not the refused retries after it
        assert not outage["error"].startswith("could not connect"), outage
        assert outage["since"] <= outage["recovered_at"] <= up["link"]["since"] + 0.001
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["link"]["error"] is None
        assert health.json()["link"]["last_outage"] == outage


async def test_tabs_and_redis_connections_in_the_stats(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        assert (await http.get("/api/stats")).json()["tabs"] == 0
        async with (
            websockets.connect(f"ws://{demo}/ws/json") as one,
            websockets.connect(f"ws://{demo}/ws/json") as two,
        ):
            await recv_json(one, "welcome")
            await recv_json(two, "welcome")
            stats = await recv_json(one, "stats", tabs=2)  # pushed when a tab comes
            assert stats["pubsub_connections"] == 1
            assert (await http.get("/healthz")).json()["tabs"] == 2
        async with asyncio.timeout(5):
            while (await http.get("/api/stats")).json()["tabs"]:
                await asyncio.sleep(0.02)


async def board_of(http: httpx.AsyncClient, address: str) -> list[str]:
    """The suffixes on the question board of the demo at ``address``."""
    stats = (await http.get(f"http://{address}/api/stats")).json()
    return [q["suffix"] for q in stats["questions"]]


async def test_an_interrupted_question_leaves_every_board(redis_server: Any) -> None:
    """An asker's promise interrupted by an outage takes its question off the boards: at
    once in its own process, and in the others through Redis once the link is back (two apps
    on one Redis stand for two processes). Without that the question stayed open, with an
    Answer button nobody would hear, until its timeout."""
    async with (
        serve(create_app(redis_server.url)) as here,
        serve(create_app(redis_server.url)) as there,
        httpx.AsyncClient() as http,
        websockets.connect(f"ws://{here}/ws/json") as asker,
    ):
        await recv_json(asker, "welcome")

        async def board(address: str) -> list[str]:
            return await board_of(http, address)

        await asker.send(json.dumps({"op": "ask", "suffix": "q", "question": "?", "timeout": 120}))
        await recv_json(asker, "promise", suffix="q", state="pending")
        async with asyncio.timeout(10):
            while await board(there) != ["q"]:
                await asyncio.sleep(0.05)
        assert await board(here) == ["q"]

        await redis_server.akill()
        await recv_json(asker, "promise", suffix="q", state="interrupted")
        assert await board(here) == []  # at once, here
        await redis_server.astart()
        async with asyncio.timeout(30):  # once the link is back, there
            while await board(there):
                await asyncio.sleep(0.05)


async def test_a_new_process_learns_the_open_questions_and_a_closed_tab_withdraws_its(
    redis_server: Any,
) -> None:
    """A board that subscribes (a process starting, a link coming back) asks the others for
    their waiting questions; closing the asking tab takes its question off every board."""
    async with (
        serve(create_app(redis_server.url)) as here,
        httpx.AsyncClient() as http,
        websockets.connect(f"ws://{here}/ws/json") as asker,
    ):
        await recv_json(asker, "welcome")
        await asker.send(
            json.dumps({"op": "ask", "suffix": "bye", "question": "?", "timeout": 120})
        )
        await recv_json(asker, "promise", suffix="bye", state="pending")
        async with serve(create_app(redis_server.url)) as there:
            async with asyncio.timeout(10):  # asked before it started
                while await board_of(http, there) != ["bye"]:
                    await asyncio.sleep(0.05)
            await asker.close()
            async with asyncio.timeout(10):
                while await board_of(http, here) or await board_of(http, there):
                    await asyncio.sleep(0.05)


# -- HTTP endpoints ----------------------------------------------------------------------------


async def test_healthz_and_metrics(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        health = await http.get("/healthz")
        assert health.status_code == 200
        assert health.json()["status"] == "ok"
        assert health.json()["redis"] == {"embedded": False, "restarts": 0}

        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        lines = set(metrics.text.splitlines())
        for line in (
            "redismpx_up 1.0",
            'redismpx_connection_state{state="connected"} 1.0',
            "redismpx_connects_total 1.0",
            "redismpx_reconnects_total 0.0",
            "redismpx_subscriptions 2.0",
            "redismpx_demo_websockets 0.0",
            "# TYPE redismpx_dropped_total counter",
            "# TYPE redismpx_messages_received_total counter",
        ):
            assert line in lines, line

        assert (await http.get("/")).text.startswith("<!doctype html>")
        assert (await http.get("/static/app.js")).status_code == 200
        favicon = await http.get("/favicon.ico")
        assert favicon.status_code == 200
        assert favicon.headers["content-type"] == "image/svg+xml"


async def test_docs_links(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page links /docs/NAME.md: the checkout's Markdown, or a redirect to the docs site
    given by ``docs_url`` / $REDISMPX_DOCS_URL."""
    monkeypatch.delenv("REDISMPX_DOCS_URL", raising=False)
    async with (
        serve(create_app(redis_server.url)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        guide = await http.get("/docs/guide.md")
        assert guide.status_code == 200
        assert guide.headers["content-type"].startswith("text/plain")
        assert guide.text.startswith("# Guide")
        missing = await http.get("/docs/nothing.md")
        assert missing.status_code == 404
        assert "REDISMPX_DOCS_URL" in missing.text
        for name in ("../pyproject.toml", "..%2Fpyproject.toml"):
            assert (await http.get(f"/docs/{name}")).status_code == 404

    monkeypatch.setenv("REDISMPX_DOCS_URL", "https://docs.example/redismpx/")
    async with (
        serve(create_app(redis_server.url)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        moved = await http.get("/docs/guide.md")
        assert moved.status_code == 307
        assert moved.headers["location"] == "https://docs.example/redismpx/guide/"
        home = await http.get("/docs/index.md")
        assert home.headers["location"] == "https://docs.example/redismpx/"


async def test_restart_needs_an_embedded_server(demo: str) -> None:
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        refused = await http.post("/admin/restart-redis", headers={"x-demo-admin": "1"})
        assert refused.status_code == 409
        assert (await http.get("/admin/restart-redis")).status_code == 405


async def test_embedded_server_and_restart(
    monkeypatch: pytest.MonkeyPatch, server_binary: str
) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_SERVER", server_binary)
    app = create_app()
    async with serve(app) as address:
        backend = app.state.demo.backend
        server = backend.server
        assert server is not None and server.running
        async with (
            httpx.AsyncClient(base_url=f"http://{address}") as http,
            websockets.connect(f"ws://{address}/ws") as ws,
        ):
            await join(ws, "room")
            no_header = await http.post("/admin/restart-redis")
            assert no_header.status_code == 403
            restart = await http.post(
                "/admin/restart-redis?downtime=0.2", headers={"x-demo-admin": "1"}, timeout=30
            )
            assert restart.status_code == 200, restart.text
            assert restart.json()["pid"] == server.pid
            assert (await recv_until(ws, "disconnected:")).startswith("disconnected: [")
            assert await recv_until(ws, "active:") == "active: [room]"
            health = (await http.get("/healthz")).json()
            assert health["redis"]["restarts"] == 1
            assert health["mpx"]["reconnects"] == 1
            assert health["status"] == "ok"
            assert health["link"]["error"] is None
            await ws.send("!room")
            await recv(ws)
            await ws.send("back")  # mpx.publish re-dialled its command connection
            assert await recv_until(ws, "ch:") == "ch: [room] msg: [back]"
    assert not server.running  # stopped with the app


# -- "Nothing missed": the numbered run across a restart --------------------------------------


async def numbers_of(http: httpx.AsyncClient) -> Any:
    return (await http.get("/api/stats")).json()["numbers"]


async def numbers_until(
    http: httpx.AsyncClient, what: str, predicate: Any, timeout: float = 30
) -> Any:
    """The ``numbers`` report once ``predicate(report)`` holds."""
    try:
        async with asyncio.timeout(timeout):
            while not predicate(report := await numbers_of(http)):
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what}: {report}") from None
    return report


async def numbers_op(address: str, action: str) -> Any:
    """Send ``{"op": "numbers", "action": action}`` from a tab opened for it; returns the
    ``numbers`` report pushed back at once. (A tab left open and unread for seconds would fill
    the client's queue with stats, and its close would then wait for its timeout.)"""
    want = ("starting", "publishing") if action == "start" else ("stopped",)
    async with websockets.connect(f"ws://{address}/ws/json") as page:
        await recv_json(page, "welcome")
        await page.send(json.dumps({"op": "numbers", "action": action}))
        stats = await recv_json(page, "stats")
        while stats["numbers"]["state"] not in want:
            stats = await recv_json(page, "stats")
        return stats["numbers"]


def both_active(n: Any) -> bool:
    return bool(n["recovering"]["state"] == n["plain"]["state"] == "active")


async def test_numbers_recover_across_restarts_of_the_embedded_server(
    monkeypatch: pytest.MonkeyPatch, server_binary: str
) -> None:
    """The page's "Nothing missed" panel through the page's protocol: numbered publications
    with history, a restart of the embedded server (with persistence) from the header's
    endpoint, and the recovering subscription has every published number exactly once, in
    order, with no gap notice. The plain one beside it misses those published while its link
    was resubscribing (restarted until it has missed some: how many is a race), and those
    are exactly what the recovering one took from the history."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_SERVER", server_binary)
    app = create_app()
    async with (
        serve(app) as address,
        httpx.AsyncClient(base_url=f"http://{address}", timeout=30) as http,
    ):
        redis = (await http.get("/healthz")).json()["redis"]
        assert redis["persistence"] == "appendonly yes, appendfsync always"
        assert (await numbers_of(http))["state"] == "off"
        started = await numbers_op(address, "start")  # the run goes on when the tab closes
        assert started["channel"].startswith("mpx-demo:numbers:")
        assert started["history_size"] == 1000
        await numbers_until(http, "20 published", lambda n: n["published"] >= 20)

        restarts = 0
        while restarts < 6:
            before = await numbers_of(http)
            restart = await http.post(
                "/admin/restart-redis?downtime=1", headers={"x-demo-admin": "1"}
            )
            assert restart.status_code == 200, restart.text
            restarts += 1
            after = await numbers_until(
                http,
                "20 more published, both subscriptions active again",
                lambda n, b=before, r=restarts: (
                    n["published"] >= b["published"] + 20
                    and n["recovering"]["outages"] == n["plain"]["outages"] == r
                    and both_active(n)
                ),
            )
            assert after["recovering"]["missed"] == 0, after
            if after["plain"]["missed"]:
                break
        assert after["plain"]["missed"] > 0, f"the plain subscription never missed: {after}"

        await numbers_op(address, "stop")
        final = await numbers_until(
            http,
            "the last ones delivered",
            lambda n: n["state"] == "stopped" and n["recovering"]["pending"] == 0,
        )
        published = final["published"]
        recovering, plain = final["recovering"], final["plain"]
        assert recovering["received"] == recovering["deliveries"] == published
        for key in ("missed", "duplicates", "out_of_order", "gaps"):
            assert recovering[key] == 0, (key, final)
        assert recovering["recovered"] == plain["missed"] > 0
        assert plain["received"] + plain["missed"] + plain["pending"] == published
        assert plain["duplicates"] == plain["out_of_order"] == 0
        assert (await http.get("/healthz")).json()["redis"]["restarts"] == restarts


async def test_numbers_start_again_counts_afresh(demo: str) -> None:
    """A second start ("Start again") ends the run and starts a new count, with new
    subscriptions on the same channel: nothing of the first run is counted in the second."""
    async with httpx.AsyncClient(base_url=f"http://{demo}") as http:
        await numbers_op(demo, "start")
        first = await numbers_until(http, "10 published", lambda n: n["published"] >= 10)
        await numbers_op(demo, "start")
        second = await numbers_until(
            http,
            "10 published in the second run",
            lambda n: n["started_at"] != first["started_at"] and n["published"] >= 10,
        )
        assert second["channel"] == first["channel"]
        await numbers_op(demo, "stop")
        final = await numbers_until(
            http,
            "the last delivered to both",
            lambda n: n["recovering"]["pending"] == n["plain"]["pending"] == 0,
        )
        assert final["started_at"] == second["started_at"]
        for tally in (final["recovering"], final["plain"]):
            assert tally["received"] == tally["deliveries"] == final["published"], final
            assert tally["missed"] == tally["duplicates"] == tally["outages"] == 0, final
        stats = (await http.get("/api/stats")).json()["stats"]
        assert stats["subscriptions"] == 4  # the board's two and this run's two


async def test_numbers_across_a_restart_without_persistence_give_a_gap_notice(
    redis_server: Any,
) -> None:
    """Without persistence the history is lost with the server: the recovering subscription
    says so once (reason ``epoch`` or ``lost``), never silently, and goes on live."""
    async with (
        serve(create_app(redis_server.url)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        assert "persistence" not in (await http.get("/healthz")).json()["redis"]
        await numbers_op(address, "start")
        before = await numbers_until(http, "10 published", lambda n: n["published"] >= 10)
        await redis_server.akill()
        await redis_server.astart()
        after = await numbers_until(
            http,
            "a gap notice, then live again",
            lambda n: (
                n["recovering"]["gaps"] >= 1
                and n["published"] >= before["published"] + 10
                and both_active(n)
            ),
        )
        recovering = after["recovering"]
        assert recovering["gaps"] == 1 and recovering["gap_reasons"][0] in ("epoch", "lost")
        assert recovering["duplicates"] == recovering["out_of_order"] == 0
        assert recovering["last"] >= before["published"] + 10  # live again


async def test_numbers_stop_and_say_why_when_redis_refuses_the_history_script(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ACL without scripting: the run ends and says why, instead of showing "publishing"
    while nothing is. (The recovering subscription's first history read is refused, and the
    library retries it, so today the run ends on the wait for it; a publication refused
    later ends it with the reply.)"""
    monkeypatch.setattr(recovery, "SUBSCRIBE_WAIT", 1.0)
    await redis_server.acommand("ACL", "SETUSER", "default", "-@scripting")
    async with (
        serve(create_app(redis_server.url)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        await numbers_op(address, "start")
        stopped = await numbers_until(http, "the run to stop", lambda n: n["state"] == "stopped")
        reason = stopped["stop_reason"]
        assert "NOPERM" in reason or "is reading it refused?" in reason, stopped
        assert stopped["published"] == 0
        assert stopped["plain"]["state"] == "active"


async def test_numbers_stop_on_a_publication_refused_for_good(redis_server: Any) -> None:
    """An error reply that trying again will not cure ends the run with the reply as its
    reason (a server still loading its data is tried again instead)."""
    async with (
        serve(create_app(redis_server.url)) as address,
        httpx.AsyncClient(base_url=f"http://{address}") as http,
    ):
        await numbers_op(address, "start")
        before = await numbers_until(http, "5 published", lambda n: n["published"] >= 5)
        await redis_server.acommand("ACL", "SETUSER", "default", "-@scripting")
        stopped = await numbers_until(http, "the run to stop", lambda n: n["state"] == "stopped")
        assert stopped["stop_reason"].startswith("Redis refused the publication: "), stopped
        assert "NOPERM" in stopped["stop_reason"]
        assert stopped["published"] >= before["published"]
        assert stopped["uncertain"] == 0


# -- the command line --------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_cli_stops_its_embedded_server_on_signal(
    sig: signal.Signals, server_binary: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env["REDIS_SERVER"] = server_binary
    port = free_port()
    log = tmp_path / "demo.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "redismpx",
            "demo",
            "--port",
            str(port),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            async with asyncio.timeout(30):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        health = await http.get("/healthz")
                        if health.status_code == 200:
                            break
                    assert proc.returncode is None, log.read_text()
                    await asyncio.sleep(0.05)
            pid = health.json()["redis"]["pid"]
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await join(ws, "open-at-shutdown")  # an open socket must not block the exit
                proc.send_signal(sig)
                async with asyncio.timeout(15):
                    await proc.wait()
        assert proc.returncode in (0, -sig), log.read_text()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # the embedded server is gone too
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
