"""``ClusterMultiplexer``: the :class:`~redismpx.Multiplexer` API over a Redis Cluster.

The facade is the standalone one over a :class:`~redismpx.cluster._router.ClusterRouter`;
the parts: ``_router`` (links, routing, moves, redirects), ``_topology`` (reading the slot
map), ``_publish`` (publishing) and ``_slots`` (hash slots, the slot map, slot-safe chunks).

Routing. Channel subscriptions are *shard channels* (``SSUBSCRIBE``): each name belongs to a
hash slot (CRC16 of the name or of its ``{hash tag}``, mod 16384), each slot to one primary,
and every primary that holds wanted names gets one Pub/Sub :class:`ClusterLink` (its own
supervisor, registry and connection), created at the first name routed to it. A link is
kept while its node is a serving primary (so add/remove churn never reconnects) and closed
once its node is not (a failover, a removal) and it holds no wanted name: at most one
Pub/Sub connection per primary. Commands never mix slots (:class:`SlotRegistry`).

Patterns, promises and ``sharded=False`` channels use classic ``PSUBSCRIBE``/``SUBSCRIBE``
on one *home* node (a primary, sharing its link with that node's shard channels). This
works because a classic ``PUBLISH`` is broadcast to every node of the cluster; that is also
its cost: every classic message crosses the cluster bus to every node, whatever the number
of subscribers, so it does not scale with the cluster the way ``SPUBLISH`` does.

Topology. The slot map is read (``CLUSTER SHARDS``, else ``CLUSTER SLOTS``) over a
short-lived plain connection to a seed or a known node: at start, every
``topology_refresh_interval`` seconds, and soon after anything suspicious (a lost link, a
shard channel dropped by its node, a ``MOVED`` reply); while something is wrong (a link
holding names is down, names wait for an owner) it is re-read with the reconnect backoff
(``backoff_base`` .. ``backoff_cap``, full jitter). After each read, names whose owner
changed move to the new owner's link.

Slot moves. When a slot leaves a node, the node sends ``sunsubscribe`` for each of its shard
channels there; their subscriptions hear ``on_disconnect`` (once per subscription and
event-loop turn) and the names are subscribed again at once: the old node answers ``MOVED
<slot> <host:port>``, and the names move to that node's link, which confirms them with
``on_activation``. Other names and subscriptions see nothing.

Failures. A lost link tells only the subscriptions holding names on that node, once; its
classic names move to another primary at once (any node serves them); its shard channels
come back when the node does (the link reconnects by itself) or, after a failover, when a
topology read shows the promoted replica (they then move to its link).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Unpack

from .._hub import Hub
from .._options import check_seconds, parse_options, split_options
from .._router import RouterHost
from ..errors import InvalidArgument, InvalidArgumentType
from ..multiplexer import Multiplexer
from ..typedefs import MultiplexerOptions
from ._router import ClusterLink, ClusterRouter
from ._slots import MAX_REDIRECTS, SlotRegistry, key_slot

__all__ = [
    "MAX_REDIRECTS",
    "ClusterLink",
    "ClusterMultiplexer",
    "ClusterOptions",
    "SlotRegistry",
    "key_slot",
]


class ClusterOptions(MultiplexerOptions, total=False):
    """Every keyword option of :class:`ClusterMultiplexer`."""

    topology_refresh_interval: float


_EXTRA = frozenset({"topology_refresh_interval"})


class ClusterMultiplexer(Multiplexer):
    """Many subscriptions over a Redis Cluster: one Pub/Sub connection per primary in use.

    The API is the :class:`~redismpx.Multiplexer` one, with these differences:

    * ``urls``: one seed URL or several (``redis://host:port``, ``rediss://``); any reachable
      seed is enough to discover the cluster. Keyword connection settings apply to every
      node. ``db`` must be 0 (a cluster has only database 0).
    * :meth:`new_channel_subscription` makes shard-channel subscriptions (``sharded=True``
      is the default): publish to them with ``SPUBLISH`` (see :meth:`publish`).
      ``sharded=False`` gives classic channels on the home node, like patterns.
    * Patterns and promises use classic ``PSUBSCRIBE`` on one node, fed by classic
      ``PUBLISH``, which the cluster broadcasts to every node (a cost paid per message).
    * ``topology_refresh_interval`` (seconds, default 30): how often the slot map is re-read
      when nothing prompts it sooner. Every read opens and closes one plain connection.
    * :meth:`publish` sends ``SPUBLISH`` to the slot's owner (following ``MOVED``) or a
      classic ``PUBLISH``.

    ``on_disconnect`` reaches only the subscriptions with names on the node concerned, once
    per outage; ``on_activation`` then follows for each of their names once it is served
    again (by the same node, or by the new owner after a slot move or failover).
    ``state`` is ``connected`` when the topology is known and every node holding wanted names
    is connected. ``stats()`` adds ``nodes`` (Pub/Sub connections), ``topology_refreshes``,
    ``slot_moves`` (names moved between nodes), ``redirects`` (``MOVED`` replies seen) and
    ``node_stats``: per primary in use (``"host:port"``), its ``state``, ``channels``,
    ``patterns``, ``shard_channels``, ``messages_received``, ``connects`` and ``reconnects``.
    """

    def __init__(
        self, urls: str | Sequence[str] | None = None, **options: Unpack[ClusterOptions]
    ) -> None:
        connection, tuning, extra = split_options(options, _EXTRA)
        seeds = [parse_options(u, **connection) for u in _url_list(urls)]
        for opts in seeds:
            if opts.unix_path is not None:
                raise InvalidArgument("cluster seeds must be TCP addresses, not unix sockets")
            if opts.db:
                raise InvalidArgument("a Redis Cluster has only database 0 (db must be 0)")
        interval = check_seconds(
            "topology_refresh_interval", extra.get("topology_refresh_interval", 30.0)
        )
        assert interval is not None
        routers: list[ClusterRouter] = []

        def make_router(host: RouterHost) -> ClusterRouter:
            routers.append(ClusterRouter(host, seeds, interval))
            return routers[0]

        self._setup(Hub(tuning, make_router))
        self._cluster = routers[0]

    async def publish(
        self,
        channel: str | bytes,
        data: str | bytes,
        *,
        sharded: bool = True,
        timeout: float | None = 5.0,
        history_size: int | None = None,
        history_ttl: float = 3600.0,
    ) -> int:
        """Publish ``data`` on ``channel``; returns the number of receivers Redis reports.

        ``sharded=True`` (the default here, as for channel subscriptions): ``SPUBLISH`` on
        the primary owning the channel's slot (``MOVED`` followed, up to
        :data:`MAX_REDIRECTS` times). ``sharded=False``: classic ``PUBLISH`` (for patterns,
        promises and ``sharded=False`` channels); the cluster broadcasts it, and the count
        covers the receiving node only.

        One command connection per node, opened at the first publish to it and kept; the
        rest (pipelining, waiting up to ``timeout``, errors) is as for
        :meth:`Multiplexer.publish <redismpx.Multiplexer.publish>`, and so is
        ``history_size``: the history lives in the channel's slot, on its owner.
        """
        return await super().publish(
            channel,
            data,
            sharded=sharded,
            timeout=timeout,
            history_size=history_size,
            history_ttl=history_ttl,
        )


def _url_list(urls: str | Sequence[str] | None) -> list[str | None]:
    if urls is None:
        return [None]
    if isinstance(urls, str):
        return [urls]
    if isinstance(urls, Sequence) and all(isinstance(u, str) for u in urls):
        if not urls:
            raise InvalidArgument("urls must name at least one seed node")
        return list(urls)
    raise InvalidArgumentType("urls must be a str or a sequence of str")
