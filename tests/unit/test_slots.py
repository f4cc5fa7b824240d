"""Cluster routing, pure: hash slots, slot maps from both reply shapes, single-slot chunks."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given

from redismpx._protocol import CHANNEL, SHARD
from redismpx.cluster._slots import SLOTS, SlotMap, SlotRegistry, key_slot, parse_redirect
from redismpx.server import key_slot as reference_slot


class L:
    def __init__(self) -> None:
        self.deliver = lambda channel, data: None


def test_key_slot_known_values() -> None:
    # Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
    assert key_slot(b"123456789") == 0x31C3 % SLOTS == 12739
    assert key_slot(b"foo") == 12182
    assert key_slot(b"") == 0


def test_hash_tags() -> None:
    assert key_slot(b"{user1000}.following") == key_slot(b"{user1000}.followers")
    assert key_slot(b"{user1000}.following") == key_slot(b"user1000")
    assert key_slot(b"a{}b") == key_slot(b"a{}b")  # an empty tag hashes the whole name
    assert key_slot(b"foo{}{bar}") != key_slot(b"bar")  # only the first "{" counts
    assert key_slot(b"foo{{bar}}zap") == key_slot(b"{bar")
    assert key_slot(b"foo{bar}{zap}") == key_slot(b"bar")
    assert key_slot(b"no-close{tag") != key_slot(b"tag")


@given(st.binary(max_size=40))
def test_matches_the_reference_implementation(name: bytes) -> None:
    assert key_slot(name) == reference_slot(name)


def test_parse_redirect() -> None:
    assert parse_redirect("MOVED 448 127.0.0.1:7010") == (448, "127.0.0.1", 7010)
    assert parse_redirect("ASK 1 h:1") == (1, "h", 1)
    assert parse_redirect("MOVED 5 :7000") == (5, "", 7000)
    assert parse_redirect("MOVED 5 [::1]:7000") == (5, "::1", 7000)
    assert parse_redirect("ERR nope") is None
    assert parse_redirect("MOVED x 1.2.3.4:5") is None


def _shards_resp3() -> list[dict[bytes, object]]:
    def node(port: int, role: bytes, health: bytes, endpoint: bytes = b"127.0.0.1") -> dict:
        return {b"id": b"x%d" % port, b"port": port, b"ip": b"127.0.0.1",
                b"endpoint": endpoint, b"role": role, b"health": health}  # fmt: skip

    return [
        {b"slots": [0, 99, 200, 16383], b"nodes": [node(1, b"master", b"online"),
                                                   node(2, b"replica", b"online")]},
        # after a failover: the old primary is still listed, failed, next to the new one
        {b"slots": [100, 199], b"nodes": [node(3, b"master", b"fail"),
                                          node(4, b"master", b"online"),
                                          node(5, b"replica", b"loading", b"")]},
    ]  # fmt: skip


def _flatten(value: object) -> object:
    """The RESP2 shape of a RESP3 reply: maps become flat key/value arrays."""
    if isinstance(value, dict):
        return [x for k, v in value.items() for x in (k, _flatten(v))]
    if isinstance(value, list):
        return [_flatten(v) for v in value]
    return value


def test_slot_map_from_shards_both_shapes() -> None:
    for reply in (_shards_resp3(), _flatten(_shards_resp3())):
        m = SlotMap.from_shards(reply, "seed")
        assert m.owner(0) == m.owner(99) == m.owner(16383) == ("127.0.0.1", 1)
        assert m.owner(100) == m.owner(199) == ("127.0.0.1", 4)  # the healthy primary
        assert m.primaries == [("127.0.0.1", 1), ("127.0.0.1", 4)]
        assert m.covered() == SLOTS
        # the failed old primary and the replicas belong to their shard
        assert m.same_shard(("127.0.0.1", 3), ("127.0.0.1", 4))
        assert m.same_shard(("127.0.0.1", 5), ("127.0.0.1", 4))  # empty endpoint: the ip
        assert not m.same_shard(("127.0.0.1", 2), ("127.0.0.1", 4))
        assert set(m.nodes) >= {("127.0.0.1", 2), ("127.0.0.1", 3), ("127.0.0.1", 5)}


def test_slot_map_skips_unknown_endpoints_and_uses_tls_port() -> None:
    reply = [{b"slots": [0, 16383], b"nodes": [
        {b"port": 7000, b"tls-port": 7443, b"endpoint": b"h", b"role": b"master"},
        {b"port": 7001, b"endpoint": b"?", b"role": b"replica"},
        {b"port": 7002, b"endpoint": b"", b"role": b"replica"},  # no address: the node asked
    ]}]  # fmt: skip
    assert SlotMap.from_shards(reply, "s").owner(5) == ("h", 7000)
    tls = SlotMap.from_shards(reply, "s", tls=True)
    assert tls.owner(5) == ("h", 7443)
    assert tls.nodes == [("h", 7443), ("s", 7002)]


def test_slot_map_from_slots() -> None:
    reply = [
        [0, 5460, [b"127.0.0.1", 7000, b"id0", []], [b"127.0.0.1", 7003, b"id3", []]],
        [5461, 16383, [b"", 7001, b"id1", {}]],
        [7000, 7000, [b"?", 7002, b"id2"]],  # unknown endpoint: ignored
    ]
    m = SlotMap.from_slots(reply, "seed")
    assert m.owner(0) == ("127.0.0.1", 7000)
    assert m.owner(7000) == ("seed", 7001)
    assert m.same_shard(("127.0.0.1", 7003), ("127.0.0.1", 7000))
    assert m.primaries == [("127.0.0.1", 7000), ("seed", 7001)]


def test_partial_coverage_and_assign() -> None:
    m = SlotMap.from_slots([[0, 9, [b"a", 1, b"i"]]], "s")
    assert m.covered() == 10
    assert m.owner(10) is None
    m.assign(10, ("b", 2))
    assert m.owner(10) == ("b", 2)
    assert ("b", 2) in m.primaries and ("b", 2) in m.nodes
    other = SlotMap.from_slots([[0, 9, [b"a", 1, b"i"]]], "s")
    assert not m.same_owners(other)


def _tag_in_slot(slot: int, start: int = 0) -> bytes:
    i = start
    while key_slot(b"%d" % i) != slot:
        i += 1
    return b"%d" % i


def test_shard_commands_never_mix_slots() -> None:
    reg = SlotRegistry(chunk_size=2)
    reg.on_connected()
    listener = L()
    names = [b"a{x}", b"b{y}", b"c{x}", b"d{x}", b"e{y}"]
    for name in names:
        reg.add(SHARD, name, listener)
    reg.add(CHANNEL, b"p", listener)
    reg.add(CHANNEL, b"q", listener)
    cmds = reg.commands()
    shard = [c for c in cmds if c.kind == SHARD]
    for c in shard:
        assert len({key_slot(n) for n in c.names}) == 1
        assert len(c.names) <= 2
    assert sorted(n for c in shard for n in c.names) == sorted(names)
    assert [c.names for c in shard][:2] == [[b"a{x}", b"c{x}"], [b"d{x}"]]  # order kept
    # classic names are chunked by count only
    assert [c.names for c in cmds if c.kind == CHANNEL] == [[b"p", b"q"]]
    # unsubscribes too (SUNSUBSCRIBE across slots is CROSSSLOT as well)
    for c in cmds:
        for name in c.names:
            reg.on_ack(c.kind, True, name)
    for name in names:
        reg.remove(SHARD, name, listener)
    for c in reg.commands():
        assert not c.subscribe
        assert len({key_slot(n) for n in c.names}) == 1


def test_retry_resubscribes_only_wanted_unsubscribed_names() -> None:
    reg = SlotRegistry()
    reg.on_connected()
    listener = L()
    reg.add(SHARD, b"s", listener)
    (_,) = reg.commands()
    reg.on_ack(SHARD, True, b"s")
    assert not reg.retry(SHARD, b"s")  # still subscribed
    result = reg.on_ack(SHARD, False, b"s")  # unasked: the slot moved away
    assert result is not None and result.lost == [listener]
    assert reg.retry(SHARD, b"s")
    (again,) = reg.commands()
    assert again.subscribe and again.names == [b"s"]
    assert not reg.retry(SHARD, b"unknown")
    assert reg.holds_wanted()
    reg.remove(SHARD, b"s", listener)
    assert not reg.holds_wanted()
