"""Cluster routing, sans-I/O: hash slots, the slot map, and single-slot command chunks.

* :func:`key_slot` (re-exported from :mod:`redismpx._hashslot`): a name's hash slot.
* :class:`SlotMap`: which primary serves each slot, read from ``CLUSTER SHARDS`` (Redis 7+)
  or ``CLUSTER SLOTS``, patched by ``MOVED`` redirects between two reads.
* :class:`SlotRegistry`: a :class:`~redismpx._registry.Registry` whose shard-channel commands
  never mix hash slots (``SSUBSCRIBE a{x} b{y}`` is refused with ``CROSSSLOT``, and so is
  ``SUNSUBSCRIBE``).

No sockets, tasks or clocks in here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from .._hashslot import SLOTS
from .._hashslot import key_slot as key_slot  # re-exported: the cluster's modules use it
from .._protocol import SHARD
from .._registry import Command, Registry

#: Redirects followed for one slot between two topology reads (and per publish) before the
#: names wait for the next read instead: nodes that disagree must not make us ping-pong.
MAX_REDIRECTS: Final = 5

#: ``(host, port)`` of a cluster node.
Address = tuple[str, int]


def parse_redirect(message: str) -> tuple[int, str, int] | None:
    """``(slot, host, port)`` of a ``MOVED``/``ASK`` error reply, or None if it is not one.

    ``host`` is ``""`` when the server does not know the node's address (the client then
    uses the host it already talks to).
    """
    parts = message.split()
    if len(parts) < 3 or parts[0] not in ("MOVED", "ASK"):
        return None
    host, sep, port = parts[2].rpartition(":")
    if not sep or not port.isdigit() or not parts[1].isdigit():
        return None
    return int(parts[1]), host.strip("[]"), int(port)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _as_map(value: Any) -> Mapping[Any, Any]:
    """A RESP3 map, or a RESP2 flat ``[key, value, ...]`` array, as a mapping."""
    if isinstance(value, Mapping):
        return value
    if isinstance(value, list | tuple):
        return dict(zip(value[::2], value[1::2], strict=False))
    raise ValueError(f"expected a map, got {value!r}")


# Health of a primary in CLUSTER SHARDS, best first: an ``online`` one is the owner; a
# ``fail`` one is the old primary that a promoted replica replaced (listed until forgotten).
_HEALTH_RANK: Final = {"online": 0, "loading": 1}


class SlotMap:
    """Which primary serves each of the 16384 slots, and which nodes belong to which shard.

    ``primaries`` lists the serving primaries ordered by their first slot; ``nodes`` every
    node known (primaries first); ``shard_of`` maps each known node to the primary of its
    shard (a primary maps to itself), so that a replica or a failed-over old primary can be
    recognised as part of the owner's shard.
    """

    __slots__ = ("nodes", "owners", "primaries", "shard_of")

    def __init__(self) -> None:
        self.owners: list[Address | None] = [None] * SLOTS
        self.primaries: list[Address] = []
        self.nodes: list[Address] = []
        self.shard_of: dict[Address, Address] = {}

    # -- building ----------------------------------------------------------------------------

    def _add_shard(
        self, ranges: Iterable[tuple[int, int]], primary: Address, others: Iterable[Address]
    ) -> None:
        owners = self.owners
        for lo, hi in ranges:
            if 0 <= lo <= hi < SLOTS:
                owners[lo : hi + 1] = [primary] * (hi - lo + 1)
        self.shard_of[primary] = primary
        for node in others:
            self.shard_of.setdefault(node, primary)

    def _finish(self) -> SlotMap:
        first: dict[Address, int] = {}
        for slot, owner in enumerate(self.owners):
            if owner is not None and owner not in first:
                first[owner] = slot
        self.primaries = sorted(first, key=first.__getitem__)
        rest = [n for n in self.shard_of if n not in first]
        self.nodes = [*self.primaries, *rest]
        return self

    @classmethod
    def from_shards(cls, reply: Any, default_host: str, *, tls: bool = False) -> SlotMap:
        """Build from a ``CLUSTER SHARDS`` reply (RESP2 or RESP3 shape).

        Per shard, the primary with the best health is the owner (after a failover the old,
        failed primary stays listed next to the promoted one). ``default_host`` replaces an
        empty endpoint (the node asked); an endpoint ``?`` (unknown) makes the node unusable.
        """
        smap = cls()
        for shard_raw in reply:
            shard = _as_map(shard_raw)
            flat = [int(s) for s in shard.get(b"slots") or shard.get("slots") or []]
            ranges = list(zip(flat[::2], flat[1::2], strict=False))
            primaries: list[tuple[int, Address]] = []
            others: list[Address] = []
            for node_raw in shard.get(b"nodes") or shard.get("nodes") or []:
                node = {_text(k): v for k, v in _as_map(node_raw).items()}
                addr = _shard_node_address(node, default_host, tls)
                if addr is None:
                    continue
                health = _text(node.get("health")) or "online"
                if _text(node.get("role")) == "master":
                    primaries.append((_HEALTH_RANK.get(health, 2), addr))
                else:
                    others.append(addr)
            if not primaries:
                continue
            primaries.sort(key=lambda p: p[0])
            owner = primaries[0][1]
            smap._add_shard(ranges, owner, [a for _, a in primaries[1:]] + others)
        return smap._finish()

    @classmethod
    def from_slots(cls, reply: Any, default_host: str) -> SlotMap:
        """Build from a ``CLUSTER SLOTS`` reply: ``[[lo, hi, primary, *replicas], ...]``."""
        smap = cls()
        for entry in reply:
            if len(entry) < 3:
                continue
            addrs = [_slots_node_address(node, default_host) for node in entry[2:]]
            primary = addrs[0]
            if primary is None:
                continue
            others = [a for a in addrs[1:] if a is not None]
            smap._add_shard([(int(entry[0]), int(entry[1]))], primary, others)
        return smap._finish()

    # -- questions and patches ---------------------------------------------------------------

    def owner(self, slot: int) -> Address | None:
        return self.owners[slot]

    def covered(self) -> int:
        """How many slots have an owner."""
        return SLOTS - self.owners.count(None)

    def same_shard(self, a: Address, b: Address) -> bool:
        """Whether ``a`` and ``b`` are nodes of one shard (a replica and its primary)."""
        sa = self.shard_of.get(a)
        return sa is not None and sa == self.shard_of.get(b)

    def assign(self, slot: int, owner: Address) -> None:
        """Apply a ``MOVED`` redirect: ``slot`` is served by ``owner`` now."""
        self.owners[slot] = owner
        self.shard_of.setdefault(owner, owner)
        if owner not in self.primaries:
            self.primaries.append(owner)
        if owner not in self.nodes:
            self.nodes.insert(0, owner)

    def same_owners(self, other: SlotMap) -> bool:
        return self.owners == other.owners


def _shard_node_address(
    node: Mapping[str | None, Any], default_host: str, tls: bool
) -> Address | None:
    endpoint = _text(node.get("endpoint"))
    if endpoint == "?":
        return None
    host = endpoint or _text(node.get("ip")) or default_host
    if host == "?":
        host = default_host
    port = node.get("tls-port") if tls and node.get("tls-port") else node.get("port")
    if port is None:
        return None
    return host, int(port)


def _slots_node_address(node: Sequence[Any], default_host: str) -> Address | None:
    if len(node) < 2:
        return None
    host = _text(node[0])
    if host == "?":
        return None
    return host or default_host, int(node[1])


class SlotRegistry(Registry):
    """A :class:`Registry` whose shard-channel commands each name one hash slot only.

    The base registry chunks by count and size; a cluster node refuses a ``SSUBSCRIBE`` or
    ``SUNSUBSCRIBE`` whose names hash to different slots (``CROSSSLOT``), so shard names are
    grouped by slot first (order kept: busiest names still go first after a reconnect).

    Late replies. A node that gives a slot away pushes ``sunsubscribe`` for each of our
    channels there. If our SUNSUBSCRIBE of such a channel is pending, the push is taken as
    its acknowledgement and completes it; its own reply, ``-MOVED <slot>``, still follows,
    before the replies to later commands. So the slots of completed shard unsubscribes are
    kept until a reply that only a later command can cause arrives (a subscribe's
    acknowledgement, a PONG), and :meth:`late_error` tells an error that answers one of
    them from the head command's: commands never mix slots, so the slot a ``MOVED`` names
    says whose it is.
    """

    def __init__(self, chunk_size: int = 1000, chunk_bytes: int = 1 << 20) -> None:
        super().__init__(chunk_size=chunk_size, chunk_bytes=chunk_bytes)
        # Slots of shard unsubscribes completed since the last reply known to answer a later
        # command: at most one entry per slot, however many unsubscribes.
        self._late: set[int] = set()

    def _completed(self, cmd: Command) -> None:
        if cmd.kind == SHARD and not cmd.subscribe:
            self._late.add(key_slot(cmd.names[0]))
        elif self._late:
            # Nothing else is acknowledged unasked: every earlier command was answered.
            self._late.clear()

    def late_error(self, slot: int | None) -> bool:
        """Whether a cluster error reply answers a shard unsubscribe completed already.

        ``slot`` is the one a ``MOVED``/``ASK`` names, None for other errors. True: the
        error is such an unsubscribe's (its names are gone already) and leaves the pending
        commands alone. False: it is the head command's. An error for the head's own slot
        is taken as the head's: after a move every command for the slot gets one, so if it
        was the unsubscribe's, the head's own error follows while a command of another slot
        (or none) is at the head, and is then taken as the late one.
        """
        late = self._late
        if not late:
            return False
        head = self.pending[0] if self.pending else None
        if (
            head is not None
            and head.kind == SHARD
            and (slot is None or key_slot(head.names[0]) == slot)
        ):
            return False
        # A PING or a classic command at the head gets no cluster error: not theirs either.
        return slot is None or slot in late

    def on_pong(self) -> bool:
        if not super().on_pong():
            return False
        self._late.clear()  # a PING is never answered unasked
        return True

    def on_disconnected(self) -> None:
        super().on_disconnected()
        self._late.clear()

    def clear(self) -> None:
        super().clear()
        self._late.clear()

    def _emit(self, kind: int, subscribe: bool, names: list[bytes], out: list[Command]) -> None:
        if kind != SHARD or len(names) < 2:
            super()._emit(kind, subscribe, names, out)
            return
        groups: dict[int, list[bytes]] = {}
        for name in names:
            groups.setdefault(key_slot(name), []).append(name)
        for group in groups.values():
            super()._emit(kind, subscribe, group, out)

    def holds_wanted(self) -> bool:
        """Whether any name of any kind has a listener."""
        return any(st.held for table in self.tables for st in table.values())
