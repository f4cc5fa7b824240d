"""TLS against a real TLS server with a test CA, and ACL channel restrictions."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from redismpx import ConnectError, Multiplexer, SubscribeRefused
from support.internals import link_of
from support.recorder import Recorder


async def test_tls_verifies_the_server_certificate(tls_server, tls_certs) -> None:
    url = f"rediss://localhost:{tls_server.port}"
    # Certificate verification is on by default: our test CA is unknown to the system store.
    async with Multiplexer(url, backoff_cap=0.05) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        async with asyncio.timeout(5):
            while m.last_error is None:
                await asyncio.sleep(0.01)
        assert isinstance(m.last_error, ConnectError)
        assert "CERTIFICATE_VERIFY_FAILED" in str(m.last_error)
        assert rec.activations == []
    # Trusting the CA (and presenting a client certificate) works, with hostname checks.
    async with Multiplexer(
        url,
        ssl_ca_certs=tls_certs.ca_file,
        ssl_certfile=tls_certs.client_cert_file,
        ssl_keyfile=tls_certs.client_key_file,
    ) as m:
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
        await tls_server.acommand("PUBLISH", "x", "secure")
        await rec.received(1)


async def test_tls_hostname_mismatch_is_refused(tls_server, tls_certs) -> None:
    ctx = tls_certs.client_context()
    async with Multiplexer(host="127.0.0.1", port=tls_server.port, ssl=ctx, backoff_cap=0.05) as m:
        # the certificate names localhost and 127.0.0.1; claim another name
        link_of(m).options = dataclasses.replace(link_of(m).options, server_hostname="example.com")
        async with asyncio.timeout(5):
            while m.last_error is None:
                await asyncio.sleep(0.01)
        assert "match" in str(m.last_error) or "CERTIFICATE" in str(m.last_error)


async def test_acl_denied_channel_reaches_only_the_asker(server_factory, caplog) -> None:
    srv = server_factory()
    await srv.acommand("ACL", "SETUSER", "chat", "on", ">pw", "resetchannels", "&chat:*", "+@all")
    async with Multiplexer(f"redis://chat:pw@127.0.0.1:{srv.port}") as m:
        ok, denied = Recorder("ok"), Recorder("denied")
        m.new_channel_subscription(*ok.callbacks).add("chat:1")
        await ok.activated("chat:1")
        with caplog.at_level(logging.WARNING, logger="redismpx"):
            bad = m.new_channel_subscription(*denied.callbacks)
            bad.add("admin:1")
            await denied.disconnected(1)
        error = denied.disconnects[0]
        assert isinstance(error, SubscribeRefused) and error.code == "NOPERM"
        assert error.name == b"admin:1"
        # not retried in a loop; the others are untouched
        probe = Recorder("probe")
        m.new_channel_subscription(*probe.callbacks).add("chat:2")
        await probe.activated("chat:2")
        assert len(denied.disconnects) == 1 and ok.disconnects == []
        await srv.acommand("PUBLISH", "chat:1", "still here")
        await ok.received(1)
        assert "pw" not in caplog.text.replace("NOPERM", "")


async def test_one_denied_channel_does_not_sink_its_neighbours(server_factory) -> None:
    srv = server_factory()
    await srv.acommand("ACL", "SETUSER", "chat", "on", ">pw", "resetchannels", "&chat:*", "+@all")
    async with Multiplexer(f"redis://chat:pw@127.0.0.1:{srv.port}") as m:
        rec = Recorder()
        s = m.new_channel_subscription(*rec.callbacks)
        await m.wait_connected(5)
        s.add("chat:1", "admin:1", "chat:2")  # one SUBSCRIBE, refused as a whole by Redis
        await rec.activated("chat:1", "chat:2")
        await rec.disconnected(1)
        assert [e.name for e in rec.disconnects] == [b"admin:1"]  # type: ignore[attr-defined]
        await srv.acommand("PUBLISH", "chat:2", "ok")
        await rec.received(1)


async def test_from_redis_keeps_tls(tls_server, tls_certs) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis(
        host="localhost",
        port=tls_server.port,
        ssl=True,
        ssl_ca_certs=tls_certs.ca_file,
        ssl_certfile=tls_certs.client_cert_file,
        ssl_keyfile=tls_certs.client_key_file,
    )
    async with Multiplexer.from_redis(client) as m:
        assert link_of(m).options.ssl is not None  # never silently plain text
        rec = Recorder()
        m.new_channel_subscription(*rec.callbacks).add("x")
        await rec.activated("x")
    await client.aclose()
