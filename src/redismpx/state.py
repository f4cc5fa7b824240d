"""The connection state a multiplexer reports (``mpx.state``)."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """The life of a connection (and of a multiplexer), in order.

    ``connecting`` -> ``connected`` -> ``disconnected`` -> ``connecting`` ... -> ``closed``.
    A value compares equal to its string (``mpx.state == "connected"``).
    """

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"
