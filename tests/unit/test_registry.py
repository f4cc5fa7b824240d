"""The sans-I/O registry against a simple model of a Redis server (hypothesis, stateful)."""

from __future__ import annotations

from collections import deque

import hypothesis.strategies as st
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from redismpx._protocol import CHANNEL, PATTERN
from redismpx._registry import Registry


class L:
    """A listener: what the registry needs is a hashable object with ``deliver``."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.deliver = lambda channel, data: None

    def __repr__(self) -> str:
        return f"L{self.n}"


NAMES = [b"a", b"b", b"c", b"d"]
LISTENERS = [L(i) for i in range(3)]
KIND = st.sampled_from([CHANNEL, PATTERN])


class RegistryMachine(RuleBasedStateMachine):
    """Commands travel to a model server in order; acks come back in order, later."""

    def __init__(self) -> None:
        super().__init__()
        self.reg = Registry(chunk_size=2)
        self.held: set[tuple[int, bytes, L]] = set()
        self.server: set[tuple[int, bytes]] = set()
        self.wire: deque[tuple[int, bool, list[bytes]]] = deque()  # sent, not processed
        self.acks: deque[tuple[int, bool, bytes]] = deque()  # processed, not yet read
        self.connected = False
        self.activations: dict[tuple[int, bytes, L], int] = {}

    def _send(self, commands: list) -> None:  # type: ignore[type-arg]
        for c in commands:
            self.wire.append((c.kind, c.subscribe, list(c.names)))

    @rule(kind=KIND, name=st.sampled_from(NAMES), listener=st.sampled_from(LISTENERS))
    def add(self, kind: int, name: bytes, listener: L) -> None:
        key = (kind, name, listener)
        if key in self.held:
            assert self.reg.add(kind, name, listener) is False
            return
        self.held.add(key)
        self.activations[key] = 0
        if self.reg.add(kind, name, listener):  # already active: the multiplexer tells it
            assert (kind, name) in self.server
            self.activations[key] += 1

    @rule(kind=KIND, name=st.sampled_from(NAMES), listener=st.sampled_from(LISTENERS))
    def remove(self, kind: int, name: bytes, listener: L) -> None:
        self.held.discard((kind, name, listener))
        self.activations.pop((kind, name, listener), None)
        self.reg.remove(kind, name, listener)

    @rule()
    def flush(self) -> None:
        self._send(self.reg.commands())

    @precondition(lambda self: self.wire)
    @rule()
    def server_processes_one_command(self) -> None:
        kind, subscribe, names = self.wire.popleft()
        for name in names:
            if subscribe:
                self.server.add((kind, name))
            else:
                self.server.discard((kind, name))
            self.acks.append((kind, subscribe, name))

    @precondition(lambda self: self.acks)
    @rule()
    def client_reads_one_ack(self) -> None:
        kind, subscribe, name = self.acks.popleft()
        result = self.reg.on_ack(kind, subscribe, name)
        if isinstance(result, list):
            # B31: reported only when Redis really holds the name
            assert (kind, name) in self.server
            for listener in result:
                key = (kind, name, listener)
                assert key in self.held
                self.activations[key] += 1

    @precondition(lambda self: not self.connected)
    @rule()
    def connect(self) -> None:
        self.connected = True
        self._send(self.reg.on_connected())

    @precondition(lambda self: self.connected and self.reg.resubscribing())
    @rule()
    def resubscribe_more(self) -> None:
        self._send(self.reg.resubscribe_more())

    @precondition(lambda self: self.connected)
    @rule()
    def disconnect(self) -> None:
        self.connected = False
        self.reg.on_disconnected()
        self.server.clear()
        self.wire.clear()
        self.acks.clear()
        for key in self.activations:
            self.activations[key] = 0

    @invariant()
    def at_quiescence_server_matches_wants(self) -> None:
        if (
            not self.connected
            or self.wire
            or self.acks
            or self.reg.has_dirty()
            or self.reg.resubscribing()
        ):
            return
        wanted = {(k, n) for k, n, _ in self.held}
        assert self.server == wanted
        for key, count in self.activations.items():
            assert count == 1, (key, count)
        # nothing is kept for names nobody wants
        for kind in (CHANNEL, PATTERN):
            assert set(self.reg.tables[kind]) == {n for k, n in wanted if k == kind}
        assert not self.reg.pending


def test_resubscription_goes_out_in_batches_skipping_removed_names() -> None:
    reg = Registry(chunk_size=10)
    listener = L(0)
    names = [b"n%d" % i for i in range(100)]
    for name in names:
        reg.add(CHANNEL, name, listener)
    first = reg.on_connected()
    assert sum(len(c.names) for c in first) == 40 and reg.resubscribing()
    reg.remove(CHANNEL, b"n50", listener)  # removed before its batch went out
    rest = []
    while reg.resubscribing():
        rest += reg.resubscribe_more()
    sent = [n for c in first + rest for n in c.names]
    assert sent == [n for n in names if n != b"n50"]


TestRegistry = RegistryMachine.TestCase
TestRegistry.settings = settings(max_examples=300, stateful_step_count=60, deadline=None)


def test_chunks_respect_count_and_size() -> None:
    reg = Registry(chunk_size=3, chunk_bytes=10)
    listener = L(0)
    reg.on_connected()
    for name in [b"aaaa", b"bbbb", b"cccc", b"d", b"e", b"f", b"g"]:
        reg.add(CHANNEL, name, listener)
    chunks = [c.names for c in reg.commands()]
    assert [n for c in chunks for n in c] == [b"aaaa", b"bbbb", b"cccc", b"d", b"e", b"f", b"g"]
    assert all(len(c) <= 3 and sum(map(len, c)) <= 10 for c in chunks)
    assert chunks[0] == [b"aaaa", b"bbbb"]  # the third long name would pass 10 bytes


def test_resubscribe_puts_busiest_names_first() -> None:
    reg = Registry()
    for i, name in enumerate([b"quiet", b"busy", b"middle"]):
        for n in range({b"quiet": 1, b"busy": 5, b"middle": 3}[name]):
            reg.add(CHANNEL, name, L(i * 10 + n))
    assert reg.on_connected()[0].names == [b"busy", b"middle", b"quiet"]


def test_error_reply_refuses_the_head_command_once() -> None:
    reg = Registry()
    reg.on_connected()
    listener = L(0)
    reg.add(CHANNEL, b"secret", listener)
    reg.commands()
    failed = reg.on_error()
    assert failed is not None
    assert failed[1] == [(b"secret", [listener])]
    assert reg.commands() == []  # not retried in a loop
    other = L(1)
    reg.add(CHANNEL, b"secret", other)  # a new request earns one more try
    assert [c.names for c in reg.commands()] == [[b"secret"]]


def test_unsolicited_unsubscribe_reports_lost_listeners() -> None:
    reg = Registry()
    reg.on_connected()
    listener = L(0)
    reg.add(2, b"s", listener)
    reg.commands()
    assert reg.on_ack(2, True, b"s") == [listener]
    result = reg.on_ack(2, False, b"s")  # pushed by the server: the slot moved
    assert result is not None and result.lost == [listener]
    assert not reg.is_active(2, b"s")


def test_a_name_added_and_removed_while_disconnected_leaves_nothing_behind() -> None:
    # Churn during an outage must not grow the registry: nothing is owed to Redis for it.
    reg = Registry()
    listener = L(0)
    for i in range(100):
        name = b"c%d" % i
        reg.add(CHANNEL, name, listener)
        reg.remove(CHANNEL, name, listener)
    assert not reg.has_dirty()
    assert reg.tables[CHANNEL] == {}
