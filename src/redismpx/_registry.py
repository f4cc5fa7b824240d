"""The sans-I/O registry: who wants which name, and what Redis must be told.

No sockets, tasks or clocks in here. The registry takes calls (``add``, ``remove``) and
server events (``on_ack``, ``on_error``, ``on_connected``, ``on_disconnected``) and answers
with commands to send and with the listeners to activate or notify. It alone decides what
Redis should hold (R2 in docs/spec.md); each name's state and its transitions are
:class:`~redismpx._names.NameState`'s. The reader reads the per-name ``snapshot`` (one
listener's ``deliver``, or a list of them) directly: that is the dispatch table of the hot
path.

The registry keeps the FIFO of commands whose replies are due. Redis answers in order, so
an acknowledgement that does not match the head of the FIFO was pushed unasked (a shard
channel moved to another node: ``sunsubscribe``), and an error reply belongs to the head,
save one case on a cluster: a push that completed an unsubscribe of ours, whose own reply
(``MOVED``) still follows (see ``SlotRegistry``, which is told of each completed command).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Final

from ._names import (
    ACTIVE,
    AFTER_SENT,
    AFTER_SETTLED,
    AFTER_WANTED,
    CONTAINERS,
    DROPPED,
    FAILED,
    OFF,
    REFUSED,
    SUBSCRIBING,
    WANTED,
    Listener,
    NameState,
)
from ._protocol import KINDS, SUBSCRIBE_COMMANDS, UNSUBSCRIBE_COMMANDS

__all__ = ["PING", "AckResult", "Command", "Listener", "NameState", "Registry"]

PING: Final = -1  # the kind of a PING's entry in the FIFO
_SUBSCRIBED: Final = (SUBSCRIBING, ACTIVE)  # phases in which Redis holds (or will) the name
RESUBSCRIBE_CHUNKS: Final = 4  # chunks per batch of a resubscription


class Command:
    """A (un)subscribe command sent and not yet fully acknowledged, or a PING."""

    __slots__ = ("acked", "kind", "names", "subscribe")

    def __init__(self, kind: int, subscribe: bool, names: list[bytes]) -> None:
        self.kind = kind  # CHANNEL, PATTERN, SHARD, or PING
        self.subscribe = subscribe
        self.names = names
        self.acked = 0

    def encode_name(self) -> bytes:
        if self.kind == PING:
            return b"PING"
        return (SUBSCRIBE_COMMANDS if self.subscribe else UNSUBSCRIBE_COMMANDS)[self.kind]

    def __repr__(self) -> str:
        return f"<Command {self.encode_name().decode()} {len(self.names)} names>"


class AckResult:
    """An unsolicited unsubscribe: the server dropped a name (a slot moved)."""

    __slots__ = ("lost",)

    def __init__(self, lost: list[Listener]) -> None:
        self.lost = lost  # the listeners to tell


class Registry:
    """Reference counts and per-name server state for one Redis connection.

    ``chunk_size`` bounds the names in one command, ``chunk_bytes`` their total size.
    """

    def __init__(self, chunk_size: int = 1000, chunk_bytes: int = 1 << 20) -> None:
        # One table per kind (CHANNEL, PATTERN, SHARD): name -> state.
        self.tables: tuple[dict[bytes, NameState], ...] = tuple({} for _ in KINDS)
        # Names to look at in the next ``commands``; a name forgotten meanwhile is skipped.
        self._dirty: tuple[dict[bytes, None], ...] = tuple({} for _ in KINDS)
        # Names to retry one per command (their shared command was refused).
        self._solo: tuple[dict[bytes, None], ...] = tuple({} for _ in KINDS)
        self.pending: deque[Command] = deque()
        # What a fresh connection still has to resubscribe: (kind, names, next index).
        self._plan: deque[tuple[int, list[bytes], int]] = deque()
        self.connected = False
        self.chunk_size = chunk_size
        self.chunk_bytes = chunk_bytes

    def _settle(self, table: dict[bytes, NameState], name: bytes, st: NameState) -> None:
        """Forget the name if the one rule allows it (``NameState.deletable``)."""
        if st.deletable:
            del table[name]
            if not table:
                table.clear()  # a dict never shrinks on deletion; clear() gives its memory back

    # -- calls from subscriptions ------------------------------------------------------------

    def add(self, kind: int, name: bytes, listener: Listener) -> bool:
        """Register ``listener`` for ``name``; True if the name is already active.

        The caller then reports the activation to this joiner alone (B29); otherwise the
        joiner is activated with everyone else when the acknowledgement arrives (B30).
        """
        # Hot during churn: the table's WANTED row and the phases are read directly here.
        table = self.tables[kind]
        st = table.get(name)
        if st is None:
            st = table[name] = NameState()
        if not st.attach(listener):
            return False
        # A new request for a refused name earns one more try (not a retry loop).
        phase = st.phase = AFTER_WANTED[st.phase]
        if phase == OFF:  # needs_subscribe: it is held now
            self._dirty[kind][name] = None
        return phase == ACTIVE

    def remove(self, kind: int, name: bytes, listener: Listener) -> None:
        """Unregister ``listener``; the last one out makes the name dirty."""
        table = self.tables[kind]
        st = table.get(name)
        if st is None or not st.detach(listener) or st.ls is not None:
            return
        if st.phase in _SUBSCRIBED:  # needs_unsubscribe: nobody holds it now
            self._dirty[kind][name] = None
        else:
            # Never sent (or refused): nothing is owed to Redis for it any more.
            self._dirty[kind].pop(name, None)
            self._settle(table, name, st)

    def refresh(self, kind: int, name: bytes) -> None:
        """A listener changed its ``deliver`` callable: rebuild the dispatch entry."""
        st = self.tables[kind].get(name)
        if st is not None:
            st.snapshot = None

    def retry(self, kind: int, name: bytes) -> bool:
        """Subscribe ``name`` again at the next flush if it is wanted and not subscribed.

        For a name the server dropped (a slot moved) or refused for a transient reason
        (redirect, ``TRYAGAIN``, ``CLUSTERDOWN``); False if there is nothing to do.
        """
        st = self.tables[kind].get(name)
        if st is None or not st.held or st.subscribed:
            return False
        st.to(WANTED)
        self._dirty[kind][name] = None
        return True

    def has_dirty(self) -> bool:
        return any(self._dirty) or any(self._solo)

    # -- commands out ------------------------------------------------------------------------

    def commands(self) -> list[Command]:
        """Turn the names changed since the last call into (un)subscribe commands.

        Call it once per event-loop turn (B23: coalesced). While disconnected the dirty set is
        just dropped: ``on_connected`` resubscribes whatever is wanted then.
        """
        out: list[Command] = []
        for kind in KINDS:
            table = self.tables[kind]
            solo, dirty = self._solo[kind], self._dirty[kind]
            if not self.connected:
                solo.clear()
                dirty.clear()
                continue
            for name in solo:
                st = table.get(name)
                if st is not None and st.needs_subscribe:
                    self._emit(kind, True, [name], out)
            solo.clear()
            if not dirty:
                continue
            subs: list[bytes] = []
            unsubs: list[bytes] = []
            # Hot during churn (a loop over every name changed this turn): ``needs_subscribe``
            # and ``needs_unsubscribe`` read inline.
            for name in dirty:
                st = table.get(name)
                if st is None:
                    continue
                phase = st.phase
                if st.ls is not None:
                    if phase == OFF:
                        subs.append(name)
                elif phase in _SUBSCRIBED:
                    unsubs.append(name)
                else:
                    self._settle(table, name, st)
            dirty.clear()
            # Unsubscribes first: they free server memory before new names take it.
            self._emit(kind, False, unsubs, out)
            self._emit(kind, True, subs, out)
        return out

    def _emit(self, kind: int, subscribe: bool, names: list[bytes], out: list[Command]) -> None:
        if not names:
            return
        table = self.tables[kind]
        after = AFTER_SENT[subscribe]  # SENT_(UN)SUBSCRIBE, inlined: once per name
        for chunk in self._chunks(names):
            for name in chunk:
                st = table[name]
                st.inflight += 1
                st.phase = after[st.phase]
            cmd = Command(kind, subscribe, chunk)
            self.pending.append(cmd)
            out.append(cmd)

    def _chunks(self, names: list[bytes]) -> Iterator[list[bytes]]:
        size, limit = self.chunk_size, self.chunk_bytes
        for i in range(0, len(names), size):
            chunk = names[i : i + size]
            if sum(map(len, chunk)) <= limit:
                yield chunk
                continue
            # Rare: long names. Split this slice by bytes too.
            part: list[bytes] = []
            budget = 0
            for name in chunk:
                if part and budget + len(name) > limit:
                    yield part
                    part, budget = [], 0
                part.append(name)
                budget += len(name)
            if part:
                yield part

    def ping(self) -> Command:
        """Record a PING whose reply is due (it is answered in order with the rest)."""
        cmd = Command(PING, False, [])
        self.pending.append(cmd)
        return cmd

    # -- connection events -------------------------------------------------------------------

    def on_connected(self) -> list[Command]:
        """A fresh connection: plan to subscribe everything wanted, busiest names first (B32).

        Returns the first batch of commands; ``resubscribe_more`` gives the next ones. Sending
        100,000 names in batches lets the first ones be confirmed (and their messages flow)
        while the rest are still being encoded.
        """
        self.connected = True
        self._plan.clear()
        for kind in KINDS:
            self._dirty[kind].clear()
            table = self.tables[kind]
            wanted = [name for name, st in table.items() if st.ls is not None]
            # Busiest first; names held by one subscription only (the usual case) need no sort.
            busy = [name for name in wanted if table[name].ls.__class__ in CONTAINERS]
            if busy:
                busy.sort(key=lambda n: len(table[n].ls), reverse=True)
                busy_set = set(busy)
                wanted = busy + [name for name in wanted if name not in busy_set]
            if wanted:
                self._plan.append((kind, wanted, 0))
        return self.resubscribe_more()

    def resubscribing(self) -> bool:
        """True while ``on_connected``'s plan has names not yet sent."""
        return bool(self._plan)

    def resubscribe_more(self) -> list[Command]:
        """The next batch of the resubscribe plan (a few chunks).

        Names removed meanwhile are skipped, and so are names a flush already subscribed.
        """
        out: list[Command] = []
        budget = self.chunk_size * RESUBSCRIBE_CHUNKS
        plan = self._plan
        while plan and budget > 0:
            kind, names, start = plan[0]
            stop = min(start + budget, len(names))
            if stop == len(names):
                plan.popleft()
            else:
                plan[0] = (kind, names, stop)
            budget -= stop - start
            table = self.tables[kind]
            todo = []
            for name in names[start:stop]:
                st = table.get(name)
                if st is not None and st.phase == OFF and st.ls is not None:  # needs_subscribe
                    todo.append(name)
            self._emit(kind, True, todo, out)
        return out

    def on_disconnected(self) -> None:
        """The connection is gone: Redis holds nothing of ours any more."""
        self.connected = False
        self.pending.clear()
        self._plan.clear()
        for kind in KINDS:
            self._dirty[kind].clear()
            self._solo[kind].clear()
            table = self.tables[kind]
            for st in table.values():
                st.reset()
            for name in [n for n, st in table.items() if st.deletable]:
                self._settle(table, name, table[name])

    def on_ack(self, kind: int, subscribe: bool, name: bytes) -> list[Listener] | AckResult | None:
        """An acknowledgement frame ``(p|s)(un)subscribe name count`` arrived.

        Returns the listeners to activate (a list), an :class:`AckResult` whose ``lost`` lists
        the listeners of a name the server dropped by itself, or None.
        """
        # Hot during churn and resubscription: keep it to a few lookups.
        pending = self.pending
        if not pending:
            return self._unsolicited(kind, subscribe, name)
        head = pending[0]
        acked = head.acked
        # Kind first: a PING at the head (a heartbeat) has no names to compare with.
        if head.kind != kind or head.subscribe is not subscribe or head.names[acked] != name:
            return self._unsolicited(kind, subscribe, name)
        head.acked = acked = acked + 1
        if acked == len(head.names):
            pending.popleft()
            self._completed(head)
        table = self.tables[kind]
        st = table[name]  # every name in flight has a state
        st.inflight -= 1
        if st.inflight:
            return None
        phase = st.phase = AFTER_SETTLED[st.phase]  # SETTLED, inlined
        if phase == ACTIVE:
            ls = st.ls
            if ls is None:
                return None
            return list(ls) if ls.__class__ in CONTAINERS else [ls]
        self._settle(table, name, st)
        return None

    def _completed(self, cmd: Command) -> None:
        """Every name of ``cmd`` was acknowledged (once per command, not per name)."""

    def _unsolicited(self, kind: int, subscribe: bool, name: bytes) -> AckResult | None:
        if subscribe:
            return None  # nothing asks for this; ignore rather than guess
        # The server dropped the name by itself (a shard channel's slot moved away).
        table = self.tables[kind]
        st = table.get(name)
        if st is None or not st.subscribed:
            return None
        st.to(DROPPED)
        lost = st.listeners
        self._settle(table, name, st)
        return AckResult(lost=lost)

    def on_pong(self) -> bool:
        """A PING reply arrived; False if none was due (a protocol error)."""
        if self.pending and self.pending[0].kind == PING:
            self.pending.popleft()
            return True
        return False

    def on_error(
        self, split: bool = False
    ) -> tuple[Command, list[tuple[bytes, list[Listener]]]] | None:
        """An error reply arrived: the head command failed as a whole.

        Returns the command and, for a refused subscribe, each refused name with the
        listeners to tell. Refused names are not retried until a listener joins again.
        With ``split`` a subscribe of several names is not refused but retried one name per
        command (an ACL denial names no channel: one denied name must not sink the others).
        """
        if not self.pending:
            return None
        cmd = self.pending.popleft()
        refused: list[tuple[bytes, list[Listener]]] = []
        if cmd.kind == PING:
            return cmd, refused
        table = self.tables[cmd.kind]
        rest = cmd.names[cmd.acked :]
        solo = split and cmd.subscribe and len(rest) > 1
        for name in rest:
            st = table[name]  # every name in flight has a state
            st.inflight -= 1
            if cmd.subscribe and st.subscribed:  # still the last command sent for the name
                st.to(FAILED)
                if solo:
                    st.to(WANTED)
                    self._solo[cmd.kind][name] = None
                    continue
                refused.append((name, st.listeners))
            self._settle(table, name, st)
        return cmd, refused

    def clear(self) -> None:
        """Forget everything (the multiplexer closed); in-flight dispatch sees no listener."""
        for table in self.tables:
            for st in table.values():
                st.silence()
            table.clear()
        for dirty in (*self._dirty, *self._solo):
            dirty.clear()
        self.pending.clear()
        self._plan.clear()
        self.connected = False

    # -- questions ---------------------------------------------------------------------------

    def is_active(self, kind: int, name: bytes) -> bool:
        st = self.tables[kind].get(name)
        return st is not None and st.active

    def is_refused(self, kind: int, name: bytes) -> bool:
        """Redis refused ``name`` (an ACL denial): not asked again until wanted again."""
        st = self.tables[kind].get(name)
        return st is not None and st.phase == REFUSED

    def holds(self, kind: int, name: bytes, listener: Listener) -> bool:
        st = self.tables[kind].get(name)
        return st is not None and st.has(listener)

    def counts(self) -> tuple[int, int, int]:
        """Names wanted per kind (channels, patterns, shard channels)."""
        channels, patterns, shards = (sum(st.held for st in t.values()) for t in self.tables)
        return channels, patterns, shards
