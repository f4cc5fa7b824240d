import asyncio
import time
from collections.abc import Iterator

import pytest
from chatroom import create_app
from starlette.testclient import TestClient

from redismpx import Multiplexer
from redismpx.server import RedisServer


@pytest.fixture
def client(redismpx_url: str) -> Iterator[TestClient]:
    # The app runs in TestClient's own thread and event loop, with its own multiplexer.
    with TestClient(create_app(redismpx_url)) as client:
        yield client


@pytest.mark.asyncio
async def test_a_client_receives_what_is_published(
    client: TestClient, redismpx_multiplexer: Multiplexer
) -> None:
    with client.websocket_connect("/rooms/lobby") as ws:
        assert ws.receive_text() == "joined"  # the app's subscription is in place
        # another instance of the app, as far as the room is concerned
        assert await redismpx_multiplexer.publish("room:lobby", "hello") == 1
        assert ws.receive_text() == "hello"


@pytest.mark.asyncio
async def test_what_a_client_says_is_published(
    client: TestClient, redismpx_multiplexer: Multiplexer
) -> None:
    async with redismpx_multiplexer.subscribe("room:lobby") as sub:
        with client.websocket_connect("/rooms/lobby") as ws:
            assert ws.receive_text() == "joined"
            ws.send_text("hi all")
            assert ws.receive_text() == "hi all"  # the room includes its sender
        async with asyncio.timeout(5):
            message = await anext(sub)
    assert (message.channel, message.data) == (b"room:lobby", b"hi all")


def test_leaving_unsubscribes(client: TestClient, redismpx_server: RedisServer) -> None:
    with client.websocket_connect("/rooms/quiet") as ws:
        assert ws.receive_text() == "joined"
        assert subscribers(redismpx_server, "room:quiet") == 1
    # The app sees the client leave in its own thread: wait for that, at most 5 s.
    deadline = time.monotonic() + 5
    while subscribers(redismpx_server, "room:quiet") != 0:
        assert time.monotonic() < deadline, "the app is still subscribed to room:quiet"
        time.sleep(0.01)


def subscribers(server: RedisServer, channel: str) -> int:
    _, count = server.command("PUBSUB", "NUMSUB", channel)
    return int(count)
