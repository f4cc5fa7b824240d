"""The recovering side of a channel subscription made with ``recover=True``.

A :class:`RecoveryTap` stands between the link and the subscription: through two listeners
it hears each channel and its envelope channel (:mod:`redismpx._envelope`), keeps one
:class:`~redismpx._recovery.Track` per channel, and hands the subscription what the tracks
decide (payloads in order, gaps, "caught up"), through the subscription's usual delivery.
The subscription stays a hub member (it hears outages as any other); the tap is not.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ._envelope import VERSION, envelope_channel, parse
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


class _Side:
    """The link's listener of one kind of a tap's names: the envelope channels, or the
    channels themselves. Two listeners, so that each frame finds its track in one lookup."""

    __slots__ = ("_tap", "deliver", "hears_activations", "tells_outages")

    def __init__(self, tap: RecoveryTap, deliver: Any, tells_outages: bool) -> None:
        self._tap = tap
        self.deliver = deliver
        self.hears_activations = True
        # A cluster node's outage reaches every listener of its names: told once, by one side.
        self.tells_outages = tells_outages

    def notify_activated(self, name: bytes) -> None:
        self._tap.notify_activated(name)

    def notify_disconnected(self, error: BaseException) -> None:
        if self.tells_outages:
            self._tap.notify_disconnected(error)

    def notify_refused(self, error: BaseException) -> None:
        self._tap.notify_refused(error)

    def report_callback_error(self, exc: Exception) -> None:
        self._tap.report_callback_error(exc)

    def await_result(self, result: Any) -> None:
        self._tap.await_result(result)


class RecoveryTap:
    """The listeners of a recovering subscription's names (see the module docstring)."""

    __slots__ = (
        "_env_side",
        "_envs",
        "_host",
        "_kind",
        "_owner",
        "_plain_side",
        "_tracks",
        "on_gap",
    )

    def __init__(self, owner: TapOwner, host: TapHost, kind: int, on_gap: Any) -> None:
        self._owner = owner
        self.on_gap = on_gap  # the subscription's on_gap (it calls it, in its order)
        self._host = host
        self._kind = kind
        self._tracks: dict[bytes, Track] = {}  # by channel
        self._envs: dict[bytes, Track] = {}  # by envelope channel
        self._env_side = _Side(self, self._deliver_envelope, True)
        self._plain_side = _Side(self, self._deliver_plain, False)

    def __repr__(self) -> str:
        return f"<RecoveryTap of {self._owner!r}: {len(self._tracks)} channel(s)>"

    # -- names -------------------------------------------------------------------------------

    def add(self, channels: Sequence[bytes], since: Mapping[bytes, Position | None]) -> None:
        envs: list[bytes] = []
        for channel in channels:
            track = Track(self, channel, since.get(channel))
            env = envelope_channel(channel)
            self._tracks[channel] = track
            self._envs[env] = track
            envs.append(env)
        # The envelope channels first (the ones that count): their commands go out first.
        self._host.add(self._kind, envs, self._env_side)
        self._host.add(self._kind, channels, self._plain_side)

    def remove(self, channels: Sequence[bytes]) -> None:
        envs: list[bytes] = []
        gone: list[bytes] = []
        for channel in channels:
            track = self._tracks.pop(channel, None)
            if track is None:
                continue
            env = envelope_channel(channel)
            del self._envs[env]
            track.generation += 1  # a read in flight for it is void
            track.live = False
            envs.append(env)
            gone.append(channel)
        if gone:
            self._host.remove(self._kind, envs, self._env_side)
            self._host.remove(self._kind, gone, self._plain_side)

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

    # -- the link's calls (``Listener``) -------------------------------------------------------

    # The hot path of a recovering subscription: two frames per publication (the envelope,
    # then its plain copy). The live cases are inlined here (they are Track.envelope's and
    # Track.plain's first branches); everything else goes to the track.

    def _deliver_plain(self, name: bytes, data: bytes) -> None:
        track = self._tracks.get(name)
        if track is not None:
            if track.expect_copy:
                track.expect_copy = False
            else:
                track.plain(data)

    def _deliver_envelope(self, name: bytes, data: bytes) -> None:
        track = self._envs.get(name)
        if track is None:
            return
        if track.live:
            parts = data.split(b":", 3)
            if len(parts) == 4 and parts[1] == track.epoch and parts[0] == VERSION:
                offset, _, tag = parts[2].partition(b"-")
                following = track.offset + 1
                try:
                    live = int(offset) == following
                except ValueError:
                    live = False
                if live:
                    track.offset = following
                    track.tag = tag
                    track.expect_copy = True
                    owner = self._owner
                    try:
                        result = owner.deliver(track.channel, parts[3])
                    except Exception as exc:
                        owner.report_callback_error(exc)
                    else:
                        if result is not None:
                            owner.await_result(result)
                    return
        envelope = parse(data)
        if envelope is None:
            logger.warning("not an envelope we can read on %r: skipped", name)
            return
        track.envelope(*envelope)

    def notify_activated(self, name: bytes) -> None:
        track = self._envs.get(name) or self._tracks.get(name)
        if track is not None:
            channel, host, kind = track.channel, self._host, self._kind
            both = host.phase(kind, channel) and host.phase(kind, envelope_channel(channel))
            track.activated(bool(both))

    def notify_disconnected(self, error: BaseException) -> None:
        self._owner.notify_disconnected(error)

    def notify_refused(self, error: BaseException) -> None:
        track = self._envs.get(getattr(error, "name", b""))
        if track is not None and isinstance(error, SubscribeRefused):
            # The subscription knows the channel, not its envelope channel.
            error = SubscribeRefused(error.reply, error.command or "SUBSCRIBE", track.channel)
        self._owner.notify_refused(error)

    def report_callback_error(self, exc: Exception) -> None:
        self._owner.report_callback_error(exc)

    def await_result(self, result: Any) -> None:
        self._owner.await_result(result)

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
