"""The connection state a multiplexer reports (``mpx.state``)."""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """The life of a connection (and of a multiplexer), in order.

    ``connecting`` -> ``connected`` -> ``disconnected`` -> ``connecting`` ... -> ``closed``.

    ``connecting`` while an attempt is under way (the first one included);
    ``disconnected`` while waiting out the backoff after a lost connection or a failed
    attempt (Redis is down, or refuses us: ``last_error`` says why). A value compares equal to
    its string (``mpx.state == "connected"``).
    """

    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    CLOSED = "closed"
