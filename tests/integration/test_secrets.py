"""Credentials never leak: not through refused handshakes, URL errors or unsendable options.

A refused command's error reply echoes its arguments ("ERR unknown command 'HELLO', with
args beginning with: '3' 'AUTH' 'default' '<password>'"); errors about a malformed URL or
option must say what is wrong without quoting the password.
"""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

import pytest

from redismpx import ConnectError, Multiplexer
from redismpx._options import parse_options
from redismpx.errors import InvalidArgument, RedisMPXError, ServerError
from support.internals import link_of
from support.logwatch import LogWatch, watch_log
from support.recorder import Recorder
from support.secrecy import error_chain

# A short one, and one longer than the 128 characters a server echoes (it cuts it off).
PASSWORDS = [secrets.token_hex(6), secrets.token_hex(80)]


def _texts(m: Multiplexer, log: LogWatch) -> list[str]:
    """Everything a user or an operator may see of the last error."""
    texts = [log.text, repr(m), str(m.stats())]
    for e in error_chain(m.last_error):
        texts += [str(e), repr(e), repr(e.args), repr(vars(e))]
    return texts


def assert_no_secret(m: Multiplexer, log: LogWatch, password: str) -> None:
    # A prefix as well: a truncated echo shows the start of a long password.
    for text in _texts(m, log):
        assert password[:8] not in text, text


def _refused(log: LogWatch, command: str) -> int:
    return log.count(f"{command}: ERR unknown command")


@pytest.mark.parametrize("password", PASSWORDS, ids=["short", "long"])
@pytest.mark.parametrize(
    ("renamed", "protocol", "command"),
    [
        (("HELLO",), 3, "HELLO"),  # RESP3 required: the refused HELLO is the error
        (("AUTH",), 2, "AUTH"),
        (("HELLO", "AUTH"), None, "AUTH"),  # HELLO refused, falls back to AUTH, refused too
    ],
    ids=["hello-resp3", "auth-resp2", "hello-and-auth"],
)
@pytest.mark.parametrize("username", [None, "default"])
async def test_a_refused_handshake_never_shows_the_password(
    server_factory: Any,
    password: str,
    renamed: tuple[str, ...],
    protocol: int | None,
    command: str,
    username: str | None,
) -> None:
    args = ["--requirepass", password]
    for name in renamed:
        args += ["--rename-command", name, ""]
    srv = server_factory(args=args)
    with watch_log() as log:
        async with Multiplexer(
            host=srv.host,
            port=srv.port,
            username=username,
            password=password,
            protocol=protocol,
            backoff_cap=0.05,
        ) as m:
            m.new_channel_subscription(*Recorder().callbacks).add("x")
            # Twice: the first refusal is logged as a warning, the repeats at DEBUG level.
            await log.wait_until(lambda: _refused(log, command) >= 2)
            assert isinstance(m.last_error, ConnectError)
            # Still says what went wrong.
            assert f"{command}: ERR unknown command" in str(m.last_error)
            assert_no_secret(m, log, password)
    assert_no_secret(m, log, password)


async def test_hello_refused_but_auth_works_falls_back_to_resp2(server_factory: Any) -> None:
    password = PASSWORDS[0]
    srv = server_factory(args=["--rename-command", "HELLO", ""], password=password)
    with watch_log() as log:
        async with Multiplexer(srv.url) as m:
            rec = Recorder()
            m.new_channel_subscription(*rec.callbacks).add("x")
            await rec.activated("x")
            assert link_of(m).conn is not None and link_of(m).conn.resp == 2
            await srv.acommand("PUBLISH", "x", "hello")
            await rec.received(1)
            assert m.last_error is None
    assert password not in log.text


# -- URLs ----------------------------------------------------------------------------------------

# Passwords with an unencoded special character: the URL parser splits them into the port,
# the path, the query or the fragment (or an IPv6 host), where errors used to quote them.
BAD_URLS = [
    "redis://:Tr0ub4dor#3xyz@host:6379/0",
    "redis://user:Tr0ub4dor/3xyz@host:6379/0",
    "redis://:Tr0ub4dor?3xyz@host:6379/0",
    "redis://:12345/Tr0ub4dor@host",  # the part before '/' happens to be a valid port
    "redis://:12345?Tr0ub4dor@host",
    "redis://:12345#Tr0ub4dor@host",
    "redis://:Tr0ub[4dor]@host",
    "redis://:Tr0ub[4dor@host",
    "rediss://:Tr0ub4dor%@host:port/0",
    "unix:///tmp/redis.sock?password=Tr0ub4dor#3xyz",
    "Tr0ub4dor:3xyz@host:6379",  # no scheme: the part before ':' is taken for one
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_errors_do_not_quote_the_password(url: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Multiplexer(url)
    for e in error_chain(info.value):
        assert isinstance(e, RedisMPXError), repr(e)  # nothing raw chained
        for text in (str(e), repr(e)):
            assert "Tr0ub" not in text and "4dor" not in text and "3xyz" not in text, text
    if url.startswith("Tr0ub"):
        assert "scheme" in str(info.value)
    else:  # says what to do about it
        assert "percent-encode" in str(info.value)


def test_an_encoded_password_is_fine() -> None:
    m = Multiplexer("redis://:Tr0ub4dor%233%2F%3F%40@host:1/0")
    assert link_of(m).options.password == "Tr0ub4dor#3/?@"
    assert "Tr0ub" not in repr(m) and "Tr0ub" not in repr(link_of(m).options)


# -- credentials and names that cannot be sent ---------------------------------------------------


@pytest.mark.parametrize("key", ["username", "password"])
def test_credentials_utf8_cannot_encode_are_refused_unquoted(key: str) -> None:
    value = "Tr0ub4dor\udc80xyz"  # a lone surrogate, as os.environ yields for stray bytes
    kwargs = {"username": "u", "password": "p", key: value}
    with pytest.raises(InvalidArgument, match=f"{key} cannot be encoded as UTF-8") as info:
        Multiplexer(**kwargs)
    for e in error_chain(info.value):
        assert isinstance(e, RedisMPXError), repr(e)
        assert "Tr0ub" not in str(e) and "Tr0ub" not in repr(e)


@pytest.mark.parametrize("name", ["app\udc80", "café", "a\tb", "a b", "a\nb", "", "\x7f"], ids=repr)
def test_client_names_redis_refuses_are_refused_at_once(name: str) -> None:
    with pytest.raises(InvalidArgument, match="client_name"):
        Multiplexer(client_name=name)
    if (name and name.isprintable()) or name.isspace():  # what a URL can carry
        with pytest.raises(InvalidArgument, match="client_name"):
            Multiplexer("redis://host/0?client_name=" + quote(name))


async def test_client_name_rule_matches_the_server(redis_server: Any) -> None:
    # Accepted by the constructor's validation exactly when the server accepts it.
    for code in range(1, 256):
        name = f"a{chr(code)}b"
        try:
            parse_options(redis_server.url, client_name=name)  # a Multiplexer would connect
        except InvalidArgument:
            ours = False
        else:
            ours = True
        try:
            await redis_server.acommand("CLIENT", "SETNAME", name.encode())
        except ServerError:
            theirs = False
        else:
            theirs = True
        assert ours == theirs, (code, ours, theirs)
