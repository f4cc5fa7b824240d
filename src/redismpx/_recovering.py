"""The recovering side of a channel subscription made with ``recover=True``.

A :class:`RecoveryTap` keeps one :class:`~redismpx._recovery.Track` per channel of a
recovering subscription; each track is the link's listener of its channel and envelope
channel (:mod:`redismpx._envelope`), and hands the subscription's delivery what it decides.
The tap answers what the tracks ask (reads, gaps, "caught up", whether a name is active) and
what the link tells them beyond frames. The subscription stays a hub member (it hears
outages as any other); the tap is not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._envelope import envelope_channel
from ._recovery import Track
from .errors import ServerError, SubscribeRefused
from .history import GapReason, Position

logger = logging.getLogger("redismpx.history")


class TapHost(Protocol):
    """What a tap needs of the multiplexer."""

    def add(self, kind: int, names: Sequence[bytes], listener: Any) -> None: ...
    def remove(self, kind: int, names: Sequence[bytes], listener: Any) -> None: ...
    def phase(self, kind: int, name: bytes) -> bool | None: ...
    def read_history(self, track: Track) -> None: ...


class TapOwner(Protocol):
    """What a tap needs of its subscription (the link's ``Listener`` calls, and gaps)."""

    deliver: Any

    def notify_activated(self, name: bytes) -> None: ...
    def notify_disconnected(self, error: BaseException) -> None: ...
    def notify_refused(self, error: BaseException) -> None: ...
    def report_callback_error(self, exc: Exception) -> None: ...
    def await_result(self, result: Any) -> None: ...
    def notify_gap(self, channel: bytes, reason: GapReason, since: Position | None) -> None: ...


class RecoveryTap:
    """The tracks of a recovering subscription (see the module docstring)."""

    __slots__ = ("_envs", "_host", "_kind", "_last_outage", "_owner", "_tracks", "on_gap")

    def __init__(self, owner: TapOwner, host: TapHost, kind: int, on_gap: Any) -> None:
        self._owner = owner
        self.on_gap = on_gap  # the subscription's on_gap (it calls it, in its order)
        self._host = host
        self._kind = kind
        self._tracks: dict[bytes, Track] = {}  # by channel
        self._envs: dict[bytes, Track] = {}  # by envelope channel
        self._last_outage: BaseException | None = None

    def __repr__(self) -> str:
        return f"<RecoveryTap of {self._owner!r}: {len(self._tracks)} channel(s)>"

    # -- names -------------------------------------------------------------------------------

    def add(self, channels: Sequence[bytes], since: Mapping[bytes, Position | None]) -> None:
        host, kind, owner = self._host, self._kind, self._owner
        for channel in channels:
            track = Track(self, channel, since.get(channel), owner)
            env = envelope_channel(channel)
            self._tracks[channel] = track
            self._envs[env] = track
            # Each track is the link's listener of its two names (its frames reach it with
            # no lookup); the envelope channel first: it is the one that counts.
            host.add(kind, (env, channel), track)

    def remove(self, channels: Sequence[bytes]) -> None:
        for channel in channels:
            track = self._tracks.pop(channel, None)
            if track is None:
                continue
            env = envelope_channel(channel)
            del self._envs[env]
            track.generation += 1  # a read in flight for it is void
            track.live = False
            self._host.remove(self._kind, (env, channel), track)

    def delivery_changed(self) -> None:
        """The subscription's ``deliver`` changed (it became queued): the tracks call the
        new one from now on."""
        deliver = self._owner.deliver
        for track in self._tracks.values():
            track.emit = deliver

    def position(self, channel: bytes) -> Position | None:
        track = self._tracks.get(channel)
        return None if track is None else track.position

    def phase(self, channel: bytes) -> bool | None:
        """True once ``channel`` is caught up (live); None if Redis refused one of its names."""
        track = self._tracks.get(channel)
        if track is None:
            return False
        if track.live:
            return True
        if track.refused:
            return None
        host, kind = self._host, self._kind
        if host.phase(kind, channel) is None or host.phase(kind, envelope_channel(channel)) is None:
            return None
        return False

    # -- what the link tells the tracks (through ``TrackSink``) --------------------------------

    def name_activated(self, track: Track) -> None:
        channel, host, kind = track.channel, self._host, self._kind
        both = host.phase(kind, channel) and host.phase(kind, envelope_channel(channel))
        track.activated(bool(both))

    def outage(self, error: BaseException) -> None:
        # Every track on a lost node hears it (a cluster): the subscription, once.
        if error is not self._last_outage:
            self._last_outage = error
            self._owner.notify_disconnected(error)

    def name_refused(self, track: Track, error: BaseException) -> None:
        if isinstance(error, SubscribeRefused) and getattr(error, "name", None) != track.channel:
            # The subscription knows the channel, not its envelope channel.
            error = SubscribeRefused(error.reply, error.command or "SUBSCRIBE", track.channel)
        self._owner.notify_refused(error)

    def unreadable(self, name: bytes) -> None:
        logger.warning("not an envelope we can read on %r: skipped", name)

    # -- what the tracks decide (``TrackSink``) -----------------------------------------------

    def deliver_to(self, channel: bytes, payload: bytes) -> None:
        owner = self._owner
        try:
            result = owner.deliver(channel, payload)
        except Exception as exc:
            owner.report_callback_error(exc)
        else:
            if result is not None:
                owner.await_result(result)

    def gap(self, channel: bytes, reason: GapReason, since: Position | None) -> None:
        self._owner.notify_gap(channel, reason, since)

    def caught_up(self, channel: bytes) -> None:
        self._owner.notify_activated(channel)

    def read(self, track: Track) -> None:
        self._host.read_history(track)

    def refused(self, channel: bytes, error: BaseException) -> None:
        reply = error.reply if isinstance(error, ServerError) else str(error)
        message = f"reading its history was refused: {reply}"
        self._owner.notify_refused(SubscribeRefused(message, "EVALSHA", channel))

    def channel_active(self, channel: bytes) -> bool:
        return self._host.phase(self._kind, channel) is True

    def envelope_active(self, channel: bytes) -> bool:
        return self._host.phase(self._kind, envelope_channel(channel)) is True
