"""Sentinel settings: the ``redis+sentinel://`` URL and the keywords (no server needed).

``parse_sentinel`` is tested directly, and ``Multiplexer(...)`` is constructed outside any
event loop (it connects only at the first use inside one) to check what the constructor
accepts and refuses. The secrecy rules are those of ``tests/integration/test_secrets.py``:
errors about a URL never quote it, and no password shows in an error or a repr.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import replace
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from redismpx import ClusterMultiplexer, Multiplexer
from redismpx.errors import InvalidArgument, InvalidArgumentType, RedisMPXError
from redismpx.sentinel import SentinelConfig, SentinelRouter, is_sentinel_url, parse_sentinel
from support.internals import router_of
from support.secrecy import error_chain

DATA_PW = "Dat4Passw0rdQXZ"
SENT_PW = "S3ntPassw0rdQXZ"


def parse(url: str | None = None, **options: Any) -> SentinelConfig:
    return parse_sentinel(url, options)


def _error_texts(error: BaseException) -> list[str]:
    texts: list[str] = []
    for e in error_chain(error):
        texts += [str(e), repr(e), repr(e.args)]
    return texts


def _assert_typed(error: BaseException) -> None:
    """Every error in the chain is one of ours (nothing raw, which may quote the input)."""
    for e in error_chain(error):
        assert isinstance(e, RedisMPXError), repr(e)


def _sentinel_mpx(*args: Any, **kwargs: Any) -> Multiplexer:
    m = Multiplexer(*args, **kwargs)
    assert isinstance(router_of(m), SentinelRouter)
    return m


# -- the URL -------------------------------------------------------------------------------------


def test_the_default_port_is_26379() -> None:
    config = parse("redis+sentinel://sentinel-1/mymaster")
    assert config.sentinels == (("sentinel-1", 26379),)
    assert config.service_name == "mymaster"


@pytest.mark.parametrize(
    ("part", "address"),
    [
        ("[::1]:26380", ("::1", 26380)),
        ("[::1]", ("::1", 26379)),
        ("[2001:db8::7]:1", ("2001:db8::7", 1)),
        ("127.0.0.1:65535", ("127.0.0.1", 65535)),
    ],
)
def test_addresses(part: str, address: tuple[str, int]) -> None:
    assert parse(f"redis+sentinel://{part}/s").sentinels == (address,)


def test_several_sentinels_keep_their_order_and_ports() -> None:
    config = parse("redis+sentinel://h1:26380,[::1]:26381,h3,10.0.0.4:7/svc")
    assert config.sentinels == (("h1", 26380), ("::1", 26381), ("h3", 26379), ("10.0.0.4", 7))


def test_service_and_db_from_the_path() -> None:
    config = parse("redis+sentinel://h1/mymaster/5")
    assert (config.service_name, config.data.db) == ("mymaster", 5)
    # A trailing slash is no db; the service name is percent-decoded.
    assert parse("redis+sentinel://h1/mymaster/").data.db == 0
    assert parse("redis+sentinel://h1/my%2Fmaster%20x").service_name == "my/master x"


def test_the_query_sets_db_protocol_and_client_name() -> None:
    config = parse("redis+sentinel://h1/svc?db=3&protocol=2&client_name=worker-1")
    assert (config.data.db, config.data.protocol, config.data.client_name) == (3, 2, "worker-1")
    assert parse("redis+sentinel://h1/svc/4?protocol=3").data.db == 4
    assert parse("redis+sentinel://h1/svc").data.protocol is None  # RESP3 where spoken


def test_an_unknown_query_key_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown URL parameter"):
        parse("redis+sentinel://h1/svc?dbx=1")
    # The plain URL's password= does not apply: credentials go in the userinfo.
    with pytest.raises(InvalidArgument, match="unknown URL parameter"):
        parse("redis+sentinel://h1/svc?password=x")


@pytest.mark.parametrize("query", ["db=x", "db=-1", "protocol=three"])
def test_query_numbers_must_be_numbers(query: str) -> None:
    key = query.split("=")[0]
    with pytest.raises(InvalidArgument, match=f"{key} in the URL must be a number"):
        parse(f"redis+sentinel://h1/svc?{query}")


def test_query_values_are_validated_like_the_plain_url() -> None:
    with pytest.raises(InvalidArgument, match="protocol must be 2 or 3"):
        parse("redis+sentinel://h1/svc?protocol=4")
    with pytest.raises(InvalidArgument, match="client_name"):
        parse("redis+sentinel://h1/svc?client_name=a%20b")


@pytest.mark.parametrize(
    ("scheme", "tls"),
    [
        ("redis+sentinel", False),
        ("valkey+sentinel", False),
        ("rediss+sentinel", True),
        ("valkeys+sentinel", True),
        ("REDIS+Sentinel", False),
        ("RedisS+SENTINEL", True),
    ],
)
def test_schemes(scheme: str, tls: bool) -> None:
    url = f"{scheme}://h1/svc"
    assert is_sentinel_url(url)
    config = parse(url)
    side = config.sentinel_options(("h1", 26379))
    if tls:
        # Both sides speak TLS, with the same (verifying) context.
        assert isinstance(config.data.ssl, ssl.SSLContext)
        assert side.ssl is config.data.ssl
        assert config.data.ssl.verify_mode == ssl.CERT_REQUIRED
        assert config.data.ssl.check_hostname
    else:
        assert config.data.ssl is None and side.ssl is None


@pytest.mark.parametrize(
    "url", ["redis://h1/0", "rediss://h1", "unix:///tmp/s", "sentinel://h1/s", "", None, b"x"]
)
def test_other_urls_are_not_sentinel_urls(url: Any) -> None:
    assert not is_sentinel_url(url)


def test_ssl_keywords_apply_to_both_sides() -> None:
    context = ssl.create_default_context()
    config = parse("redis+sentinel://h1/svc", ssl=context)
    assert config.data.ssl is context
    assert config.sentinel_options(("h1", 1)).ssl is context
    config = parse("redis+sentinel://h1/svc", ssl=True, ssl_check_hostname=False)
    assert isinstance(config.data.ssl, ssl.SSLContext) and not config.data.ssl.check_hostname
    assert config.sentinel_options(("h1", 1)).ssl is config.data.ssl
    # ssl=False turns the TLS scheme's default off, for both.
    config = parse("rediss+sentinel://h1/svc", ssl=False)
    assert config.data.ssl is None and config.sentinel_options(("h1", 1)).ssl is None


# -- credentials: the URL's are the data nodes', sentinel_* the sentinels' -----------------------


def test_url_credentials_apply_to_the_data_nodes_only() -> None:
    config = parse(f"redis+sentinel://app:{DATA_PW}@h1,h2/svc/2")
    assert (config.data.username, config.data.password, config.data.db) == ("app", DATA_PW, 2)
    assert config.username is None and config.password is None
    for address in config.sentinels:
        side = config.sentinel_options(address)
        assert (side.host, side.port) == address
        assert side.username is None and side.password is None
        assert side.db == 0  # a sentinel has no databases


def test_a_password_without_user() -> None:
    config = parse(f"redis+sentinel://:{DATA_PW}@h1/svc")
    assert (config.data.username, config.data.password) == (None, DATA_PW)
    config = parse("redis+sentinel://app@h1/svc")
    assert (config.data.username, config.data.password) == ("app", None)


def test_sentinel_credentials_apply_to_the_sentinels_only() -> None:
    config = parse(
        "redis+sentinel://h1:1,h2:2/svc", sentinel_username="watcher", sentinel_password=SENT_PW
    )
    assert (config.username, config.password) == ("watcher", SENT_PW)
    assert config.data.username is None and config.data.password is None
    side = config.sentinel_options(("h2", 2))
    assert (side.host, side.port, side.username, side.password) == ("h2", 2, "watcher", SENT_PW)


def test_both_sides_with_their_own_credentials() -> None:
    config = parse(
        f"redis+sentinel://app:{DATA_PW}@h1/svc/3?protocol=3&client_name=me",
        sentinel_password=SENT_PW,
        connect_timeout=2,
    )
    assert (config.data.username, config.data.password) == ("app", DATA_PW)
    side = config.sentinel_options(("h1", 26379))
    assert (side.username, side.password) == (None, SENT_PW)
    # The sentinel side: db 0, RESP2 (the replies parsed are RESP2 shapes), the same timeout
    # and client name; the data side keeps what the URL said.
    assert (side.db, side.protocol, side.connect_timeout, side.client_name) == (0, 2, 2.0, "me")
    assert (config.data.db, config.data.protocol, config.data.connect_timeout) == (3, 3, 2.0)
    # A primary's settings: its address filled in, the data credentials kept.
    node = config.data.with_address("10.0.0.9", 6380)
    assert (node.host, node.port, node.password, node.db) == ("10.0.0.9", 6380, DATA_PW, 3)


def test_keywords_override_the_url() -> None:
    config = parse(
        f"redis+sentinel://app:{DATA_PW}@h1/svc/3?protocol=2&client_name=a",
        sentinels=[("k1", 5), ["k2", 6]],
        service_name="other",
        username="admin",
        password="from-keyword",
        db=7,
        protocol=3,
        client_name="b",
    )
    assert config.sentinels == (("k1", 5), ("k2", 6))
    assert config.service_name == "other"
    assert (config.data.username, config.data.password) == ("admin", "from-keyword")
    assert (config.data.db, config.data.protocol, config.data.client_name) == (7, 3, "b")


def test_none_keywords_leave_the_url_alone() -> None:
    config = parse(
        f"redis+sentinel://app:{DATA_PW}@h1/svc/3",
        service_name=None,
        username=None,
        password=None,
        db=None,
        port=None,
        host=None,
    )
    assert (config.service_name, config.data.password, config.data.db) == ("svc", DATA_PW, 3)


def test_keywords_alone() -> None:
    config = parse(sentinels=[("h1", 26379), ("::1", 26380)], service_name="svc", db=1)
    assert config.sentinels == (("h1", 26379), ("::1", 26380))
    assert (config.service_name, config.data.db) == ("svc", 1)
    assert config.data.ssl is None


# -- errors --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis+sentinel:///svc", {}),
        ("redis+sentinel://,/svc", {}),
        ("redis+sentinel://h1/svc", {"sentinels": []}),  # the keyword wins, even empty
        (None, {"service_name": "svc"}),
        (None, {"sentinels": (), "service_name": "svc"}),
    ],
)
def test_no_sentinels(url: str | None, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="at least one sentinel address"):
        parse(url, **options)


@pytest.mark.parametrize(
    ("url", "options"),
    [
        ("redis+sentinel://h1", {}),
        ("redis+sentinel://h1/", {}),
        ("redis+sentinel://h1?db=1", {}),
        ("redis+sentinel://h1", {"service_name": ""}),
        (None, {"sentinels": [("h1", 1)]}),
    ],
)
def test_no_service(url: str | None, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgument, match="needs a service_name"):
        parse(url, **options)


@pytest.mark.parametrize("port", ["0", "65536", "99999999", "abc", "-1", "1.5", " 1", "0x10"])
def test_bad_ports_in_the_url(port: str) -> None:
    url = f"redis+sentinel://h1:26379,h2:{port}/svc"
    with pytest.raises(InvalidArgument, match="sentinel address #2 in the URL has a bad port"):
        parse(url)
    with pytest.raises(InvalidArgument, match="#1 in the URL has a bad port"):
        parse(f"redis+sentinel://[::1]:{port}/svc")


@pytest.mark.parametrize("path", ["/svc/x", "/svc/1/2", "/svc/-1", "/a/b/c"])
def test_bad_paths(path: str) -> None:
    with pytest.raises(InvalidArgument, match="path must be /service_name or /service_name/db"):
        parse(f"redis+sentinel://h1{path}")


def test_a_sentinel_without_host() -> None:
    with pytest.raises(InvalidArgument, match="sentinel address #2 in the URL has no host"):
        parse("redis+sentinel://h1,:26379/svc")


@pytest.mark.parametrize(
    "value",
    [
        "h1:26379",  # a str is a sequence, of characters
        b"h1:26379",
        None,
        26379,
        {("h1", 26379)},  # a set has no order
        iter([("h1", 26379)]),
    ],
    ids=repr,
)
def test_sentinels_of_the_wrong_type(value: Any) -> None:
    with pytest.raises(
        InvalidArgumentType, match=r"sentinels must be a sequence of \(host, port\)"
    ):
        parse(sentinels=value, service_name="svc")


@pytest.mark.parametrize(
    "item",
    [("h1", "26379"), ("h1", True), ("h1", 1.0), ("h1",), ("h1", 1, 2), (1, 2), "h1", None],
    ids=repr,
)
def test_sentinel_pairs_of_the_wrong_type(item: Any) -> None:
    with pytest.raises(InvalidArgumentType, match=r"each sentinel must be a \(host, port\) pair"):
        parse(sentinels=[("ok", 1), item], service_name="svc")


@pytest.mark.parametrize("item", [("", 1), ("h1", 0), ("h1", -1), ("h1", 65536)], ids=repr)
def test_sentinel_pairs_out_of_range(item: tuple[str, int]) -> None:
    with pytest.raises(InvalidArgument, match="bad sentinel address"):
        parse(sentinels=[item], service_name="svc")


@pytest.mark.parametrize("key", ["service_name", "sentinel_username", "sentinel_password"])
@pytest.mark.parametrize("value", [1, b"x", ["x"]], ids=repr)
def test_str_keywords_of_the_wrong_type(key: str, value: Any) -> None:
    with pytest.raises(InvalidArgumentType, match=f"{key} must be a str"):
        parse("redis+sentinel://h1/svc", **{key: value})


@pytest.mark.parametrize("key", ["sentinel_username", "sentinel_password"])
def test_sentinel_credentials_utf8_cannot_encode_are_refused_unquoted(key: str) -> None:
    value = "Tr0ub4dor\udc80xyz"
    with pytest.raises(InvalidArgument, match="cannot be encoded as UTF-8") as info:
        parse("redis+sentinel://h1/svc", **{key: value})
    _assert_typed(info.value)
    assert not any("Tr0ub" in text for text in _error_texts(info.value))


@pytest.mark.parametrize(
    ("key", "value"), [("host", "10.0.0.1"), ("port", 6379), ("unix_socket_path", "/tmp/s")]
)
@pytest.mark.parametrize("how", ["url", "keywords"])
def test_an_address_does_not_apply_with_sentinel(key: str, value: Any, how: str) -> None:
    kwargs: dict[str, Any] = {key: value}
    if how == "url":
        args: tuple[Any, ...] = ("redis+sentinel://h1/svc",)
    else:
        args = ()
        kwargs.update(sentinels=[("h1", 1)], service_name="svc")
    with pytest.raises(InvalidArgument, match=f"{key} does not apply with Sentinel"):
        Multiplexer(*args, **kwargs)


def test_connection_keywords_are_validated_as_usual() -> None:
    with pytest.raises(InvalidArgument, match="connect_timeout"):
        Multiplexer("redis+sentinel://h1/svc", connect_timeout=0)
    with pytest.raises(InvalidArgumentType, match="ssl must be"):
        Multiplexer("redis+sentinel://h1/svc", ssl="yes")  # type: ignore[typeddict-item]
    with pytest.raises(InvalidArgumentType, match="unknown option 'sentinel'"):
        Multiplexer("redis+sentinel://h1/svc", sentinel=[("h1", 1)])  # type: ignore[call-arg]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"sentinels": [("h1", 26379)], "service_name": "svc"},
        {"service_name": "svc"},
        {"sentinel_password": SENT_PW},
        {"sentinel_username": "watcher"},
    ],
)
def test_cluster_multiplexer_refuses_sentinel_keywords(kwargs: dict[str, Any]) -> None:
    with pytest.raises(InvalidArgumentType, match="unknown option") as info:
        ClusterMultiplexer("redis://127.0.0.1:7000", **kwargs)
    assert repr(next(iter(kwargs))) in str(info.value)  # names the keyword
    assert SENT_PW not in str(info.value)


def test_cluster_multiplexer_refuses_a_sentinel_url() -> None:
    with pytest.raises(InvalidArgument, match="unsupported URL scheme") as info:
        ClusterMultiplexer(f"redis+sentinel://:{DATA_PW}@h1/svc")
    assert DATA_PW not in str(info.value)


# -- errors found by these tests (see the final report) -----------------------------------------


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:6379/0", "rediss://h1", "unix:///tmp/redis.sock", "h1:26379"]
)
def test_sentinel_keywords_with_a_plain_url_are_a_typed_error(url: str) -> None:
    # BUG: KeyError('redis') from _parse_url's SCHEMES lookup.
    with pytest.raises(InvalidArgument) as info:
        Multiplexer(url, sentinels=[("h1", 26379)], service_name="svc")
    _assert_typed(info.value)
    assert "sentinel" in str(info.value).lower()


def test_a_url_of_the_wrong_type_with_sentinel_keywords() -> None:
    # BUG: AttributeError ('int' object has no attribute 'partition').
    with pytest.raises(InvalidArgumentType, match="url must be a str"):
        Multiplexer(123, sentinels=[("h1", 26379)], service_name="svc")  # type: ignore[arg-type]


def test_sentinel_keywords_set_to_none_are_unset() -> None:
    # None means "unset" for every connection keyword (typedefs.ConnectionOptions): a
    # configuration passing sentinel_password=os.environ.get(...) to a plain URL must not
    # select Sentinel. BUG: any sentinel key, even None, selects it (then KeyError('redis')).
    m = Multiplexer("redis://127.0.0.1:6379/0", sentinel_username=None, sentinel_password=None)
    assert not isinstance(router_of(m), SentinelRouter)
    assert "redis://127.0.0.1:6379" in repr(m)
    m.close()


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h1:\u00b2/svc",  # superscript two: str.isdigit() says yes, int() no
        "redis+sentinel://h1/svc/\u00b2",
        "redis+sentinel://h1/svc?db=\u00b2",
        "redis+sentinel://h1/svc?protocol=\u00b3",
    ],
)
def test_non_ascii_digits_are_a_typed_error(url: str) -> None:
    # BUG: a raw ValueError ("invalid literal for int() with base 10: '²'") quoting the URL.
    with pytest.raises(InvalidArgument) as info:
        parse(url)
    _assert_typed(info.value)


def test_an_unbalanced_ipv6_bracket_is_refused() -> None:
    # The plain URL refuses it ("malformed URL: unbalanced or invalid [IPv6] host").
    # BUG: "[::1" is taken for the host ::1.
    with pytest.raises(InvalidArgument):
        parse("redis+sentinel://h1,[::1/svc")


def test_ipv6_sentinels_are_bracketed_in_the_repr() -> None:
    # BUG: repr shows "redis+sentinel://h1:1,::1:2/svc": "::1:2" reads as the IPv6 address
    # ::1:2 on the default port, and the text does not parse back to the same sentinels.
    m = _sentinel_mpx("redis+sentinel://h1:1,[::1]:2/svc")
    try:
        assert repr(m) == "<Multiplexer redis+sentinel://h1:1,[::1]:2/svc connecting>"
        assert parse(repr(m)[13:].split()[0]).sentinels == (("h1", 1), ("::1", 2))
    finally:
        m.close()


# -- secrecy ---------------------------------------------------------------------------------

# Passwords with an unencoded special character, which splits them into the wrong parts of
# the URL (a port, the path, the query, the fragment). Each must be refused without quoting
# any of it, or (when the misparse happens to be valid) never show in a repr.
BAD_URLS = [
    "redis+sentinel://:Tr0ub4dor#3xyz@h1/svc",
    "redis+sentinel://user:Tr0ub4dor/3xyz@h1/svc",
    "redis+sentinel://:Tr0ub4dor/3xyz@h1/svc",
    "redis+sentinel://:Tr0ub4dor?3xyz@h1/svc",
    "redis+sentinel://user:Tr0ub4dor?3xyz@h1/svc",
    "redis+sentinel://user:12345#Tr0ub4dor@h1/svc",
    "redis+sentinel://:12345/Tr0ub4dor@h1/svc",
    "redis+sentinel://user:12345/Tr0ub4dor@h1/svc",
    "redis+sentinel://user:12345/Tr0ub4dor@h1/svc/0",
    "redis+sentinel://user:12345?Tr0ub4dor@h1/svc",
    "redis+sentinel://:Tr0ub4dor%@h1:port/svc",
]
# Refused without quoting it, but with no hint (as the plain URL: "db ... must be a number").
UNHINTED_URLS = ["redis+sentinel://user:12345?db=Tr0ub4dor@h1/svc"]
# BUGS: accepted, with the password's tail as the service name (shown by repr) and its head
# as a sentinel address; and an unknown query key quoted in the error.
LEAKING_URLS = [
    "redis+sentinel://user:12345/Tr0ub4dor@h1",
    "redis+sentinel://user:12345/Tr0ub4dor@h1/0",
    "redis+sentinel://user:12345?Tr0ub4dor=3xyz@h1/svc",
]
SECRET_PARTS = ("Tr0ub", "4dor", "3xyz", "12345")


def _assert_refused_unquoted_or_hidden(url: str, parts: tuple[str, ...]) -> None:
    try:
        m = Multiplexer(url)
    except InvalidArgument as exc:
        _assert_typed(exc)
        for text in _error_texts(exc):
            for part in parts:
                assert part not in text, text
        return
    try:
        texts = [repr(m), str(m.stats()), repr(router_of(m).config)]
        for text in texts:
            for part in parts:
                assert part not in text, f"{url} was accepted and shows {part!r}: {text}"
    finally:
        m.close()


@pytest.mark.parametrize("url", BAD_URLS)
def test_url_errors_do_not_quote_the_password(url: str) -> None:
    _assert_refused_unquoted_or_hidden(url, SECRET_PARTS)
    with pytest.raises(InvalidArgument, match="percent-encode"):
        Multiplexer(url)


@pytest.mark.parametrize("url", UNHINTED_URLS)
def test_url_errors_without_hint_do_not_quote_the_password(url: str) -> None:
    with pytest.raises(InvalidArgument):
        Multiplexer(url)
    _assert_refused_unquoted_or_hidden(url, SECRET_PARTS)


@pytest.mark.parametrize(
    ("userinfo", "password"),
    [(":Tr0ub[4dor", "Tr0ub[4dor"), ("u:p@ss", "p@ss"), (":a,b:c%zz", "a,b:c%zz")],
)
def test_unencoded_characters_the_parser_reads_right(userinfo: str, password: str) -> None:
    # The userinfo ends at the last '@', so '@', ',', ':', '[' and a stray '%' need no
    # encoding (a stray '%' is kept, as unquote does).
    m = _sentinel_mpx(f"rediss+sentinel://{userinfo}@h1,h2/svc")
    try:
        config = router_of(m).config
        assert config.data.password == password
        assert config.sentinels == (("h1", 26379), ("h2", 26379))
        assert password not in repr(m) and password not in repr(config)
    finally:
        m.close()


@pytest.mark.parametrize("url", LEAKING_URLS)
def test_misparsed_passwords_do_not_leak(url: str) -> None:
    _assert_refused_unquoted_or_hidden(url, SECRET_PARTS)


def test_reprs_never_show_a_password() -> None:
    url = f"rediss+sentinel://app:{DATA_PW}@h1:1,[::1]:2/svc/3?client_name=me"
    m = _sentinel_mpx(url, sentinel_username="watcher", sentinel_password=SENT_PW)
    try:
        config: SentinelConfig = router_of(m).config
        assert config.data.password == DATA_PW and config.password == SENT_PW
        texts = [repr(m), str(m), str(m.stats()), repr(config), str(config)]
        texts += [repr(config.data), repr(config.sentinel_options(("h1", 1)))]
        for text in texts:
            assert DATA_PW not in text and SENT_PW not in text, text
        assert repr(m).startswith("<Multiplexer redis+sentinel://h1:1,")
        assert "username='watcher'" in repr(config)  # only the passwords are hidden
    finally:
        m.close()


def test_a_password_only_in_keywords_never_shows() -> None:
    m = _sentinel_mpx(
        sentinels=[("h1", 26379)], service_name="svc", password=DATA_PW, sentinel_password=SENT_PW
    )
    try:
        for text in (repr(m), str(m.stats()), repr(router_of(m).config)):
            assert DATA_PW not in text and SENT_PW not in text, text
    finally:
        m.close()


# -- the constructor (no event loop) ---------------------------------------------------------


def test_the_constructor_picks_sentinel_for_the_url_or_the_keywords() -> None:
    for m in (
        _sentinel_mpx("redis+sentinel://h1:1/svc"),
        _sentinel_mpx(sentinels=[("h1", 1)], service_name="svc"),
        _sentinel_mpx("valkeys+sentinel://h1:1/svc", ssl_check_hostname=False),
    ):
        try:
            config = router_of(m).config
            assert (config.sentinels, config.service_name) == ((("h1", 1),), "svc")
            assert m.state.value == "connecting" and m.last_error is None
            stats = m.stats()
            assert stats["sentinels"] == ["h1:1"] and stats["primary"] is None
            assert stats["failovers"] == 0
        finally:
            m.close()
    m = Multiplexer("redis://127.0.0.1:6379/0")
    assert not isinstance(router_of(m), SentinelRouter)
    m.close()


def test_the_constructor_passes_everything_through() -> None:
    m = _sentinel_mpx(
        f"redis+sentinel://app:{DATA_PW}@h1,h2:2/svc/2",
        sentinel_password=SENT_PW,
        client_name="worker",
        health_check_interval=2,
        backoff_cap=1,
    )
    try:
        config: SentinelConfig = router_of(m).config
        assert config.sentinels == (("h1", 26379), ("h2", 2))
        assert (config.data.username, config.data.password, config.data.db) == ("app", DATA_PW, 2)
        assert config.password == SENT_PW and config.data.client_name == "worker"
        assert m._hub.tuning.health_check_interval == 2.0
    finally:
        m.close()


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        (("redis+sentinel://h1",), {}, InvalidArgument, "service_name"),
        (("redis+sentinel:///svc",), {}, InvalidArgument, "at least one sentinel"),
        (("redis+sentinel://h1:0/svc",), {}, InvalidArgument, "bad port"),
        (("redis+sentinel://h1/svc?x=1",), {}, InvalidArgument, "unknown URL parameter"),
        ((), {"sentinels": "h1:1", "service_name": "s"}, InvalidArgumentType, "sentinels"),
        ((), {"sentinels": [("h1", "1")], "service_name": "s"}, InvalidArgumentType, "pair"),
        ((), {"sentinels": [("h1", 1)], "service_name": 5}, InvalidArgumentType, "service_name"),
        ((), {"sentinels": [("h1", 1)]}, InvalidArgument, "service_name"),
        (("redis+sentinel://h1/svc",), {"host": "h"}, InvalidArgument, "host does not apply"),
        (("redis+sentinel://h1/svc",), {"port": 1}, InvalidArgument, "port does not apply"),
        (
            ("redis+sentinel://h1/svc",),
            {"sentinel_password": 1},
            InvalidArgumentType,
            "sentinel_password must be a str",
        ),
    ],
)
def test_the_constructor_refuses(
    args: tuple[Any, ...], kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match) as info:
        Multiplexer(*args, **kwargs)
    _assert_typed(info.value)


# -- properties (hypothesis) -------------------------------------------------------------------

_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
_HOSTNAMES = st.lists(_LABEL, min_size=1, max_size=3).map(".".join)
_IPV4 = st.ip_addresses(v=4).map(str)
_IPV6 = st.ip_addresses(v=6).map(lambda a: ipaddress.IPv6Address(a).compressed)
_PORTS = st.none() | st.integers(1, 65535)
# Any text UTF-8 can encode (no lone surrogates).
_TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


def _assert_repr_hides_passwords(config: SentinelConfig) -> None:
    """repr is the same with the passwords erased: it shows nothing of them."""
    erased = replace(config, password=None, data=replace(config.data, password=None))
    assert repr(config) == repr(erased)


@st.composite
def _sentinels(draw: st.DrawFn) -> list[tuple[str, str, int]]:
    """``(url part, host, port)`` for 1 to 4 sentinels."""
    result = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["name", "v4", "v6"]))
        port = draw(_PORTS)
        host = draw({"name": _HOSTNAMES, "v4": _IPV4, "v6": _IPV6}[kind])
        part = f"[{host}]" if kind == "v6" else host
        if port is not None:
            part += f":{port}"
        result.append((part, host, 26379 if port is None else port))
    return result


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    scheme=st.sampled_from(
        ["redis+sentinel", "rediss+sentinel", "valkey+sentinel", "valkeys+sentinel"]
    ),
    sentinels=_sentinels(),
    service=_TEXT.filter(bool),
    username=st.none() | _TEXT,
    password=st.none() | _TEXT,
    db=st.none() | st.integers(0, 10**6),
)
@example(
    scheme="redis+sentinel",
    sentinels=[("[::1]:26380", "::1", 26380)],
    service="my/ma?st#er@,x",
    username="u:@",
    password="p@ss:w/o?r#d,%,[]",
    db=0,
)
def test_url_round_trip(
    scheme: str,
    sentinels: list[tuple[str, str, int]],
    service: str,
    username: str | None,
    password: str | None,
    db: int | None,
) -> None:
    userinfo = ""
    if username is not None or password is not None:
        userinfo = quote(username or "", safe="")
        if password is not None:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    hosts = ",".join(part for part, _, _ in sentinels)
    url = f"{scheme}://{userinfo}{hosts}/{quote(service, safe='')}"
    if db is not None:
        url += f"/{db}"
    config = parse_sentinel(url, {})
    assert config.sentinels == tuple((host, port) for _, host, port in sentinels)
    assert config.service_name == service
    assert config.data.username == (username or None)
    assert config.data.password == password
    assert config.data.db == (db or 0)
    assert config.username is None and config.password is None
    assert (config.data.ssl is not None) == scheme.startswith(("rediss", "valkeys"))
    _assert_repr_hides_passwords(config)


@settings(max_examples=200)
@given(
    sentinels=st.lists(
        st.tuples(_HOSTNAMES | _IPV4 | _IPV6, st.integers(1, 65535)), min_size=1, max_size=5
    ),
    service=_TEXT.filter(bool),
    sentinel_password=st.none() | _TEXT,
)
def test_keyword_round_trip(
    sentinels: list[tuple[str, int]], service: str, sentinel_password: str | None
) -> None:
    config = parse_sentinel(
        None,
        {"sentinels": sentinels, "service_name": service, "sentinel_password": sentinel_password},
    )
    assert config.sentinels == tuple(sentinels)
    assert config.service_name == service
    assert config.password == sentinel_password
    for address in sentinels:
        side = config.sentinel_options(address)
        assert (side.host, side.port, side.password) == (*address, sentinel_password)
        assert config.data.password is None
    _assert_repr_hides_passwords(config)


# Password pieces no error or repr text contains by chance (no message has Q, X, Z, J, K
# or V runs), joined by the characters that split a URL.
_PIECES = st.text("QXZJKV", min_size=4, max_size=8)
_SEPARATORS = st.text("#/?@,:=&[]% ", min_size=1, max_size=2)


@st.composite
def _unencoded_password(draw: st.DrawFn) -> tuple[str, list[str]]:
    pieces = draw(st.lists(_PIECES, min_size=1, max_size=4))
    separators = draw(st.lists(_SEPARATORS, min_size=len(pieces), max_size=len(pieces)))
    lead = draw(st.sampled_from(["", "12345", "6379"]))  # a head that looks like a port
    password = lead + "".join(s + p for s, p in zip(separators, pieces, strict=True))
    return password, pieces


@settings(max_examples=500)
@given(
    secret=_unencoded_password(),
    user=st.sampled_from(["", "app"]),
    tail=st.sampled_from(["h1:26379,h2/svc", "h1/svc/0", "h1", "[::1]:1/svc?db=1", "h1/0"]),
)
@example(secret=("12345?QXZJ=KVKV", ["QXZJ", "KVKV"]), user="app", tail="h1/svc")
@example(secret=("12345/QXZJ", ["QXZJ"]), user="app", tail="h1")
def test_unencoded_passwords_never_show(
    secret: tuple[str, list[str]], user: str, tail: str
) -> None:
    password, pieces = secret
    url = f"redis+sentinel://{user}:{password}@{tail}"
    try:
        m = Multiplexer(url)
    except RedisMPXError as exc:
        assert isinstance(exc, InvalidArgument), repr(exc)
        _assert_typed(exc)
        texts = _error_texts(exc)
    else:
        m.close()
        texts = [repr(m), str(m.stats()), repr(router_of(m).config)]
    for text in texts:
        for piece in pieces:
            assert piece not in text, (url, text)
