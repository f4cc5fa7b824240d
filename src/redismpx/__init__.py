"""redismpx: many Redis Pub/Sub subscriptions multiplexed over one connection, for asyncio."""

from ._link import State
from .errors import (
    ConnectError,
    ConnectionLost,
    HeartbeatTimeout,
    InactiveSubscription,
    InvalidArgument,
    InvalidArgumentType,
    PromiseTimeout,
    RedisMPXError,
    ServerError,
    SubscribeRefused,
    SubscriptionClosed,
    SubscriptionInterrupted,
)
from .multiplexer import Multiplexer
from .promises import Promise, PromiseSubscription
from .subscriptions import ChannelSubscription, PatternSubscription

__all__ = [
    "ChannelSubscription",
    "ConnectError",
    "ConnectionLost",
    "HeartbeatTimeout",
    "InactiveSubscription",
    "InvalidArgument",
    "InvalidArgumentType",
    "Multiplexer",
    "PatternSubscription",
    "Promise",
    "PromiseSubscription",
    "PromiseTimeout",
    "RedisMPXError",
    "ServerError",
    "State",
    "SubscribeRefused",
    "SubscriptionClosed",
    "SubscriptionInterrupted",
]
__version__ = "1.0.0.dev0"
