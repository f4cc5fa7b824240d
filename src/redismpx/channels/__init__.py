"""A Django Channels layer on redismpx: ``RedisMPXChannelLayer``.

In ``settings.py``, in place of ``channels_redis.pubsub.RedisPubSubChannelLayer`` (the same
``CONFIG``)::

    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "redismpx.channels.RedisMPXChannelLayer",
            "CONFIG": {
                "hosts": ["redis://localhost:6379/0"],
                "on_disconnect": "redis.disconnect",  # optional: the consumers' handler types
                "on_reconnect": "redis.reconnect",
            },
        },
    }

What it changes compared with channels_redis's Pub/Sub layer:

* ``new_channel`` and ``group_add`` return once Redis has confirmed the subscription, so a
  message sent right after them arrives (the stock layer returns once ``SUBSCRIBE`` is
  written, which Redis may process after a ``PUBLISH`` sent meanwhile on another connection).
* A lost connection (a server restart, ``CLIENT KILL``, a Sentinel failover) is reconnected
  within milliseconds, with jittered backoff, and every channel and group subscribed again;
  ``on_disconnect`` and ``on_reconnect`` reach the consumers (dead in channels_redis since
  4.0).
* Each consumer channel holds at most ``capacity`` messages (the stock queues grow without
  bound), with an overflow policy; nothing polls while idle.
* A consumer that ends leaves its groups with its channel (one subscription holds both).

See docs/integrations/channels.md.
"""

from __future__ import annotations

try:
    from ._layer import RedisMPXChannelLayer
except ImportError as exc:  # pragma: no cover - depends on the environment
    if exc.name not in ("channels", "channels.layers", "msgpack", "django"):
        raise
    raise ImportError(
        "redismpx.channels needs Django Channels and msgpack: pip install 'redismpx[channels]'"
    ) from exc

__all__ = ["RedisMPXChannelLayer"]
