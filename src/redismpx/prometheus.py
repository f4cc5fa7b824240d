"""Prometheus metrics for multiplexers: a collector any app registers.

Needs ``prometheus-client`` (``pip install 'redismpx[prometheus]'``)::

    from redismpx.prometheus import RedisMPXCollector

    collector = RedisMPXCollector()      # registered on prometheus_client.REGISTRY
    collector.add(mpx)                   # exported as multiplexer="default"
    collector.add(other, name="events")  # a second one needs a name of its own

The collector reads :meth:`~redismpx.Multiplexer.stats` of each multiplexer once per scrape
(one consistent snapshot each) and keeps no series of its own: what a scrape shows is what
``stats()`` said at that moment. It holds each multiplexer by a weak reference, so a
multiplexer the app forgot (closed and dropped) leaves the metrics by itself; a closed one
still referenced is exported with ``state="closed"`` and its final counters until it is
removed or a new multiplexer takes its name.

Cardinality is bounded: the labels are ``multiplexer`` (the names given to
:meth:`RedisMPXCollector.add`, at most ``max_multiplexers``), ``state`` (the four
:class:`~redismpx.State` values), ``primary`` (the one primary a Sentinel multiplexer is
connected to) and ``node`` (a cluster's primaries in use, at most ``max_nodes``). No label
ever names a channel or a pattern, and none is taken from a URL, so no password can appear.
A scrape never raises: a multiplexer whose ``stats()`` fails, or a value of an unexpected
type, is skipped and counted in ``redismpx_collector_errors_total``.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
    from prometheus_client.registry import REGISTRY, CollectorRegistry
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "redismpx.prometheus needs prometheus-client: pip install 'redismpx[prometheus]'",
        name=exc.name,
    ) from exc

from .errors import InvalidArgument, InvalidArgumentType
from .multiplexer import Multiplexer
from .state import State

__all__ = ["COUNTERS", "GAUGES", "NODE_COUNTERS", "NODE_GAUGES", "RedisMPXCollector"]

logger = logging.getLogger("redismpx.prometheus")

#: ``stats()`` keys exported as counters: ``redismpx_<key>_total``.
COUNTERS: Final[Mapping[str, str]] = {
    "messages_received": "Pub/Sub messages read from Redis",
    "messages_dispatched": "Deliveries handed to subscriptions",
    "connects": "Pub/Sub connections established",
    "reconnects": "Pub/Sub connections lost (each followed by reconnecting)",
    "dropped": "Messages dropped by overflow policies",
    "callback_errors": "Exceptions raised by subscription callbacks",
    "publish_connects": "Connections opened for publishing",
    "published": "Publishes Redis answered",
    "history_reads": "History reads sent by recovering subscriptions",
    "topology_refreshes": "Cluster topology reads",
    "slot_moves": "Names moved between cluster nodes",
    "redirects": "MOVED replies seen",
    "failovers": "Sentinel failovers followed",
}
#: ``stats()`` keys exported as gauges: ``redismpx_<key>``.
GAUGES: Final[Mapping[str, str]] = {
    "subscriptions": "Open subscriptions",
    "channels": "Distinct channels wanted",
    "patterns": "Distinct patterns wanted",
    "shard_channels": "Distinct shard channels wanted",
    "nodes": "Cluster nodes with a Pub/Sub connection up",
}
#: Keys of a cluster's per-node stats (``stats()["node_stats"][node]``), by metric kind.
NODE_COUNTERS: Final[Mapping[str, str]] = {
    "messages_received": "Pub/Sub messages read from this cluster node",
    "connects": "Pub/Sub connections established to this cluster node",
    "reconnects": "Pub/Sub connections to this cluster node lost",
}
NODE_GAUGES: Final[Mapping[str, str]] = {
    "channels": "Distinct channels wanted on this cluster node",
    "patterns": "Distinct patterns wanted on this cluster node",
    "shard_channels": "Distinct shard channels wanted on this cluster node",
}

# Exported otherwise (state, primary, sentinels, node_stats) or never: last_error is free text.
_SPECIAL: Final = frozenset({"state", "last_error", "primary", "sentinels", "node_stats"})
_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_LABEL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RESERVED_LABELS: Final = frozenset({"state", "node", "primary"})
_MAX_ADDRESS = 300  # a host name (253) and a port: longer is not an address
_READ_ATTEMPTS = 3  # stats() read from another thread may meet a dict changing size

_Family = GaugeMetricFamily | CounterMetricFamily


@dataclass
class _Entry:
    ref: weakref.ref[Multiplexer]
    errors: int = 0  # stats() failures and values of an unexpected type
    logged: set[str] = field(default_factory=set)


class RedisMPXCollector:
    """Exports the :meth:`~redismpx.Multiplexer.stats` of multiplexers as ``redismpx_*``
    metrics (see the module documentation for the metric list and labels).

    ``registry``: where to register (``prometheus_client.REGISTRY`` by default; ``None``
    registers nowhere, for a registry of your own: ``registry.register(collector)``). One
    collector per registry: a second raises :class:`~redismpx.InvalidArgument`.
    ``name_label``: the label carrying each multiplexer's name (``"multiplexer"``); ``None``
    exports one multiplexer without it. ``max_multiplexers`` and ``max_nodes`` (per cluster
    multiplexer) bound the series; nodes beyond ``max_nodes`` are left out (and counted in
    ``redismpx_collector_errors_total``).

    Thread-safe: a scrape may run in prometheus_client's HTTP server thread while the
    multiplexers run in an event loop.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = REGISTRY,
        *,
        name_label: str | None = "multiplexer",
        max_multiplexers: int = 100,
        max_nodes: int = 1000,
    ) -> None:
        if name_label is not None and (
            not isinstance(name_label, str)
            or not _LABEL.fullmatch(name_label)
            or name_label.startswith("__")
            or name_label in _RESERVED_LABELS
        ):
            raise InvalidArgument(
                "name_label must be a Prometheus label name (letters, digits and '_', not "
                "starting with a digit or '__') other than state, node and primary, or None"
            )
        for key, bound in (("max_multiplexers", max_multiplexers), ("max_nodes", max_nodes)):
            if isinstance(bound, bool) or not isinstance(bound, int):
                raise InvalidArgumentType(f"{key} must be an int")
            if not 1 <= bound <= 100_000:
                raise InvalidArgument(f"{key} must be from 1 to 100000")
        self._label = name_label
        self._max_multiplexers = 1 if name_label is None else max_multiplexers
        self._max_nodes = max_nodes
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}
        self._registry: CollectorRegistry | None = None
        if registry is not None:
            if not isinstance(registry, CollectorRegistry):
                raise InvalidArgumentType("registry must be a prometheus_client CollectorRegistry")
            try:
                registry.register(self)
            except ValueError as exc:  # DuplicateTimeseries
                raise InvalidArgument(
                    "this registry already has a collector exporting redismpx_* metrics; use "
                    "one RedisMPXCollector per registry and add every multiplexer to it"
                ) from exc
            self._registry = registry

    # -- membership ----------------------------------------------------------------------------

    def add(self, mpx: Multiplexer, name: str = "default") -> None:
        """Export ``mpx`` as ``name`` (1 to 64 letters, digits, ``_ . : -``).

        A name held by another open multiplexer raises :class:`~redismpx.InvalidArgument`;
        one held by a closed (or garbage-collected) multiplexer is taken over. Adding the same
        multiplexer under its own name again does nothing; under another name it raises.
        More than ``max_multiplexers`` open ones raise :class:`~redismpx.InvalidArgument`.
        """
        if not isinstance(mpx, Multiplexer):
            raise InvalidArgumentType("add() takes a Multiplexer or a ClusterMultiplexer")
        if not isinstance(name, str):
            raise InvalidArgumentType("the multiplexer's name must be a str")
        if not _NAME.fullmatch(name):
            # The name is not repeated: it could be a URL with a password.
            raise InvalidArgument(
                "a multiplexer's name must be 1 to 64 characters from letters, digits, "
                "'_', '.', ':' and '-'"
            )
        with self._lock:
            self._prune()
            for other, entry in self._entries.items():
                if entry.ref() is mpx:
                    if other == name:
                        return
                    raise InvalidArgument(f"this multiplexer is already exported as {other!r}")
            held = self._entries.get(name)
            if held is not None:
                holder = held.ref()
                if holder is not None and not holder.closed:
                    raise InvalidArgument(
                        f"another open multiplexer is exported as {name!r}: give each a "
                        "name of its own"
                        + ("" if self._label is not None else " (or use a name_label)")
                    )
                del self._entries[name]
            if len(self._entries) >= self._max_multiplexers:
                for closed in [n for n, e in self._entries.items() if _closed(e)]:
                    del self._entries[closed]
            if len(self._entries) >= self._max_multiplexers:
                raise InvalidArgument(
                    f"already exporting {len(self._entries)} multiplexers (max_multiplexers); "
                    "remove some first"
                    if self._label is not None
                    else "without a name_label the collector exports one multiplexer"
                )
            self._entries[name] = _Entry(weakref.ref(mpx))

    def remove(self, mpx_or_name: Multiplexer | str) -> None:
        """Stop exporting a multiplexer (given itself or its name); its series disappear.

        An unknown name or multiplexer raises :class:`~redismpx.InvalidArgument`."""
        with self._lock:
            for name, entry in self._entries.items():
                if name == mpx_or_name or entry.ref() is mpx_or_name:
                    del self._entries[name]
                    return
        raise InvalidArgument("remove(): that multiplexer is not exported by this collector")

    def multiplexers(self) -> dict[str, Multiplexer]:
        """The multiplexers exported now, by name (closed ones included)."""
        with self._lock:
            self._prune()
            alive = {name: entry.ref() for name, entry in self._entries.items()}
        return {name: mpx for name, mpx in alive.items() if mpx is not None}

    def unregister(self) -> None:
        """Leave the registry given to the constructor (idempotent)."""
        registry, self._registry = self._registry, None
        if registry is not None:
            registry.unregister(self)

    def _prune(self) -> None:
        # Under the lock: forget the multiplexers that were garbage-collected.
        for name in [n for n, e in self._entries.items() if e.ref() is None]:
            del self._entries[name]

    # -- the Collector protocol ------------------------------------------------------------------

    def describe(self) -> list[Metric]:
        """Every family this collector may export (lets a registry refuse duplicates)."""
        return list(self._empty_families().values())

    def collect(self) -> Iterator[Metric]:
        """One scrape: a ``stats()`` snapshot per multiplexer, as metric families.

        Never raises: whatever goes wrong is logged and counted instead."""
        try:
            families = self._collect()
        except Exception:  # a bug of ours must not break the app's whole /metrics
            logger.exception("redismpx metrics: the scrape failed")
            return
        yield from families

    def _collect(self) -> list[Metric]:
        with self._lock:
            self._prune()
            entries = list(self._entries.items())
        snapshots: list[tuple[str, _Entry, Mapping[str, Any] | None]] = []
        for name, entry in entries:
            mpx = entry.ref()
            if mpx is not None:
                snapshots.append((name, entry, self._read(name, entry, mpx)))
        families = self._empty_families()
        for name, entry, stats in snapshots:
            if stats is not None:
                bad = _add_samples(families, self._labels(name), stats, self._max_nodes)
                if bad:
                    self._error(name, entry, f"left out: {', '.join(bad)}")
        errors = families["collector_errors"]
        for name, entry, _ in snapshots:
            errors.add_metric(self._labels(name), entry.errors)
        return [family for family in families.values() if family.samples]

    def _labels(self, name: str) -> list[str]:
        return [] if self._label is None else [name]

    def _read(self, name: str, entry: _Entry, mpx: Multiplexer) -> Mapping[str, Any] | None:
        """``mpx.stats()``, or None (counted and logged) when it cannot be had."""
        problem = ""
        for _ in range(_READ_ATTEMPTS):
            try:
                stats = mpx.stats()
            except RuntimeError as exc:
                # Read from a thread other than the multiplexer's loop, a dict may change
                # size under the iteration: a fresh read sees a consistent state.
                problem = f"stats() raised {type(exc).__name__}: {exc}"
                continue
            except Exception as exc:
                problem = f"stats() raised {type(exc).__name__}: {exc}"
                break
            if isinstance(stats, Mapping):
                return stats
            problem = f"stats() returned a {type(stats).__name__}, not a dict"
            break
        self._error(name, entry, problem)
        return None

    def _error(self, name: str, entry: _Entry, problem: str) -> None:
        entry.errors += 1
        # Once per distinct problem at WARNING (a broken stats() fails on every scrape).
        level = logging.DEBUG if problem in entry.logged else logging.WARNING
        if len(entry.logged) < 100:
            entry.logged.add(problem)
        logger.log(level, "redismpx metrics for multiplexer %r: %s", name, problem)

    def _empty_families(self) -> dict[str, _Family]:
        base = [] if self._label is None else [self._label]
        families: dict[str, _Family] = {
            "up": GaugeMetricFamily("redismpx_up", "1 while connected to Redis", labels=base),
            "state": GaugeMetricFamily(
                "redismpx_connection_state",
                "1 for the multiplexer's current state, 0 for the others",
                labels=[*base, "state"],
            ),
        }
        for key, doc in COUNTERS.items():
            families[key] = CounterMetricFamily(f"redismpx_{key}", doc, labels=base)
        for key, doc in GAUGES.items():
            families[key] = GaugeMetricFamily(f"redismpx_{key}", doc, labels=base)
        families["sentinels"] = GaugeMetricFamily(
            "redismpx_sentinels", "Sentinels known", labels=base
        )
        families["primary"] = GaugeMetricFamily(
            "redismpx_sentinel_primary",
            "1 for the primary the Sentinel multiplexer is connected to",
            labels=[*base, "primary"],
        )
        node = [*base, "node"]
        families["node:up"] = GaugeMetricFamily(
            "redismpx_node_up",
            "1 while the Pub/Sub connection to this cluster node is up",
            labels=node,
        )
        for key, doc in NODE_COUNTERS.items():
            families[f"node:{key}"] = CounterMetricFamily(f"redismpx_node_{key}", doc, labels=node)
        for key, doc in NODE_GAUGES.items():
            families[f"node:{key}"] = GaugeMetricFamily(f"redismpx_node_{key}", doc, labels=node)
        families["collector_errors"] = CounterMetricFamily(
            "redismpx_collector_errors",
            "stats() reads that failed and values left out for an unexpected type",
            labels=base,
        )
        return families


def _closed(entry: _Entry) -> bool:
    mpx = entry.ref()
    return mpx is None or mpx.closed


def _number(value: object, *, counter: bool) -> float | None:
    """``value`` as a sample value, or None if it is not a finite number (a counter: >= 0)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    if not math.isfinite(number) or (counter and number < 0):
        return None
    return number


def _address(value: object) -> str | None:
    return value if isinstance(value, str) and 0 < len(value) <= _MAX_ADDRESS else None


def _add_samples(
    families: dict[str, _Family], labels: list[str], stats: Mapping[str, Any], max_nodes: int
) -> list[str]:
    """Add one multiplexer's samples; returns the keys left out for their type."""
    bad: list[str] = []
    state = stats.get("state")
    if isinstance(state, str):
        families["up"].add_metric(labels, float(state == State.CONNECTED.value))
        for candidate in State:
            families["state"].add_metric(
                [*labels, candidate.value], float(state == candidate.value)
            )
    else:
        bad.append("state")
    for key, value in stats.items():
        family = families.get(key) if key in COUNTERS or key in GAUGES else None
        if family is None:
            continue  # the special keys below, or a key this version does not know
        number = _number(value, counter=key in COUNTERS)
        if number is None:
            bad.append(key)
        else:
            family.add_metric(labels, number)
    if "sentinels" in stats:
        known = stats["sentinels"]
        if isinstance(known, list | tuple):
            families["sentinels"].add_metric(labels, len(known))
        else:
            bad.append("sentinels")
    primary = stats.get("primary")
    if primary is not None:
        address = _address(primary)
        if address is None:
            bad.append("primary")
        else:
            families["primary"].add_metric([*labels, address], 1.0)
    if "node_stats" in stats:
        bad += _add_node_samples(families, labels, stats["node_stats"], max_nodes)
    return bad


def _add_node_samples(
    families: dict[str, _Family], labels: list[str], nodes: object, max_nodes: int
) -> list[str]:
    if not isinstance(nodes, Mapping):
        return ["node_stats"]
    bad: list[str] = []
    for i, (node, values) in enumerate(nodes.items()):
        if i >= max_nodes:
            bad.append(f"node_stats beyond max_nodes={max_nodes}")
            break
        address = _address(node)
        if address is None or not isinstance(values, Mapping):
            bad.append("node_stats")
            continue
        node_labels = [*labels, address]
        if isinstance(values.get("state"), str):
            up = float(values["state"] == State.CONNECTED.value)
            families["node:up"].add_metric(node_labels, up)
        for kinds, counter in ((NODE_COUNTERS, True), (NODE_GAUGES, False)):
            for key in kinds:
                if key in values:
                    number = _number(values[key], counter=counter)
                    if number is None:
                        bad.append(f"node_stats.{key}")
                    else:
                        families[f"node:{key}"].add_metric(node_labels, number)
    return bad
