"""Redis Sentinel: the :class:`~redismpx.Multiplexer` API on whichever node the sentinels
name primary, following failovers.

``Multiplexer("redis+sentinel://[[user]:password@]host1:26379,host2:26379/service_name[/db]")``
(``rediss+sentinel://`` for TLS to sentinels and data nodes), or the keywords ``sentinels``,
``service_name``, ``sentinel_username`` and ``sentinel_password``. The parts: ``_config``
(the URL and keywords), ``_resolve`` (asking the sentinels, confirming with ``ROLE``) and
``_router`` (the link, the command side and the ``+switch-master`` watcher).

Resolution. Before every connection (the Pub/Sub link's and ``publish``'s), the sentinels
are asked in turn, the last one that answered first: ``SENTINEL GET-PRIMARY-ADDR-BY-NAME``
(``GET-MASTER-ADDR-BY-NAME`` on servers without it); ``SENTINEL SENTINELS`` adds the
sentinels they know to the list. The named node is used only if ``ROLE`` says it is a
primary; otherwise the next sentinel is asked. When no sentinel names a usable primary
the attempt fails with a :class:`~redismpx.ConnectError` saying why, and the link retries
with its backoff, logging each distinct error once.

Failover. A watcher keeps one Pub/Sub connection to a sentinel, subscribed to
``+switch-master``. When the service's primary moves, the link and the command connection
leave the old node at once, without waiting for it to time out; the subscriptions hear one
``on_disconnect``, then one ``on_activation`` per name once the new primary confirms it.
When the watcher (re)connects it asks for the primary, so a failover it missed is caught.
"""

from ._config import SENTINEL_KEYS, SentinelConfig, is_sentinel_url, parse_sentinel
from ._router import SentinelRouter

__all__ = ["SENTINEL_KEYS", "SentinelConfig", "SentinelRouter", "is_sentinel_url", "parse_sentinel"]
