"""redismpx: many Redis Pub/Sub subscriptions multiplexed over one connection, for asyncio."""

from ._activation import Subscribing
from .cluster import ClusterMultiplexer
from .errors import (
    ConnectError,
    ConnectionLost,
    EventLoopMismatch,
    HeartbeatTimeout,
    InactiveSubscription,
    InvalidArgument,
    InvalidArgumentType,
    PromiseTimeout,
    PublishTimeout,
    RedisMPXError,
    ServerError,
    SubscribeRefused,
    SubscriptionClosed,
    SubscriptionInterrupted,
)
from .history import Gap, History, HistoryEntry, Position
from .iterators import Activated, ChannelIterator, Disconnected, Dropped, Message, PatternIterator
from .multiplexer import Multiplexer
from .promises import Promise, PromiseSubscription
from .state import State
from .subscriptions import ChannelSubscription, PatternSubscription

__all__ = [
    "Activated",
    "ChannelIterator",
    "ChannelSubscription",
    "ClusterMultiplexer",
    "ConnectError",
    "ConnectionLost",
    "Disconnected",
    "Dropped",
    "EventLoopMismatch",
    "Gap",
    "HeartbeatTimeout",
    "History",
    "HistoryEntry",
    "InactiveSubscription",
    "InvalidArgument",
    "InvalidArgumentType",
    "Message",
    "Multiplexer",
    "PatternIterator",
    "PatternSubscription",
    "Position",
    "Promise",
    "PromiseSubscription",
    "PromiseTimeout",
    "PublishTimeout",
    "RedisMPXError",
    "ServerError",
    "State",
    "SubscribeRefused",
    "Subscribing",
    "SubscriptionClosed",
    "SubscriptionInterrupted",
]
__version__ = "1.0.0.dev0"
