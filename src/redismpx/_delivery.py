"""Compatibility re-exports: delivery now lives in ``_buffer``, ``_subscriber`` and
``subscriptions``. Removed at the architecture merge, once multiplexer.py, cluster.py and
_link.py import from those modules."""

from ._buffer import DEFAULT_MAX_BUFFER, OVERFLOW_POLICIES, OverflowPolicy, check_buffer
from ._subscriber import OnActivation, OnDisconnect, OnDrop, OnMessage, Subscriber

__all__ = [
    "DEFAULT_MAX_BUFFER",
    "OVERFLOW_POLICIES",
    "OnActivation",
    "OnDisconnect",
    "OnDrop",
    "OnMessage",
    "OverflowPolicy",
    "Subscriber",
    "check_buffer",
]
