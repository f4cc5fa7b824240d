"""The exception hierarchy: every error redismpx raises derives from :class:`RedisMPXError`.

Where Python already has a fitting built-in type, our class derives from it too, so that the
usual ``except`` clauses keep working (``except TypeError``, ``except asyncio.TimeoutError``,
``except asyncio.CancelledError``).
"""

from __future__ import annotations

import asyncio


class RedisMPXError(Exception):
    """Base class of every error raised by redismpx."""


class SubscriptionClosed(RedisMPXError):
    """The subscription (or its multiplexer) is closed; it can no longer be used.

    ``reason`` says why when the library closed it (for example a buffer overflow under the
    ``close`` policy); it is ``None`` after an ordinary ``close()``.
    """

    def __init__(self, message: str = "subscription is closed", reason: str | None = None):
        super().__init__(message if reason is None else f"{message}: {reason}")
        self.reason = reason


class InactiveSubscription(RedisMPXError):
    """A promise was asked of a :class:`PromiseSubscription` that Redis has not confirmed yet."""


class PromiseTimeout(RedisMPXError, TimeoutError):
    """A promise was not fulfilled within its timeout (counted from its creation).

    ``except asyncio.TimeoutError`` (an alias of :class:`TimeoutError`) catches it.
    """


class SubscriptionInterrupted(asyncio.CancelledError):
    """A pending promise was failed because the connection to Redis was lost.

    It derives from :class:`asyncio.CancelledError`, as the original library documented, and
    is its own class so that it can be told apart from the cancellation of the awaiting task.
    (It cannot also derive from :class:`RedisMPXError`: ``CancelledError`` is a
    ``BaseException`` and must stay out of ``except Exception`` clauses.)
    """


class InvalidArgument(RedisMPXError, ValueError):
    """An argument has the right type but a value redismpx cannot accept."""


class InvalidArgumentType(RedisMPXError, TypeError):
    """An argument has a type redismpx cannot accept."""


class ConnectionLost(RedisMPXError, ConnectionError):
    """The link to Redis broke; passed to ``on_disconnect`` with the cause chained."""


class HeartbeatTimeout(ConnectionLost):
    """Redis did not answer the idle PING within the configured deadline."""


class ServerError(RedisMPXError):
    """Redis answered with an error reply (``-ERR``, ``-NOPERM``, ``-WRONGPASS`` ...)."""

    def __init__(self, message: str, command: str | None = None):
        super().__init__(message if command is None else f"{command}: {message}")
        self.reply = message
        self.command = command

    @property
    def code(self) -> str:
        """The error code, the first word of the reply (``NOPERM``, ``WRONGPASS``...)."""
        return self.reply.split(" ", 1)[0]


class SubscribeRefused(ServerError):
    """Redis refused to subscribe a name (an ACL denial: ``NOPERM``).

    Delivered to the ``on_disconnect`` of every subscription that wants ``name``; the name is
    not retried until another subscription adds it (or this one removes and adds it again),
    or the connection is re-established.
    """

    def __init__(self, message: str, command: str, name: bytes):
        super().__init__(message, command)
        self.name = name


class PublishTimeout(RedisMPXError, TimeoutError):
    """A publish did not complete within its ``timeout``.

    ``sent`` is False when no connection came up in time (nothing was published) and True
    when the command was written but not answered in time (it may have been published).
    ``except TimeoutError`` catches it.
    """

    def __init__(self, message: str, *, sent: bool):
        super().__init__(message)
        self.sent = sent


class ConnectError(ConnectionLost):
    """A connection attempt failed (refused, timed out, TLS or authentication failure)."""


class EventLoopMismatch(RedisMPXError, RuntimeError):
    """A multiplexer was used in an event loop while the loop it runs in is still open.

    A multiplexer follows its user into a new event loop once the previous one is closed
    (``asyncio.run`` closes it; so do per-test loops), but it cannot serve two open loops.
    """
