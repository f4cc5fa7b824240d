"""One name's state, sans-I/O: who holds it, and what Redis holds of it.

What Redis holds of a name is a *phase*, moved by *events*; the whole state machine is
``TRANSITIONS`` below, read like h11's ``_state.py``. Beside the phase a name keeps
``inflight``, how many of the commands sent for it still await their reply: a name is
active only when the last command sent for it was a subscribe and every one has been
answered (B31 in docs/spec.md), so a stale acknowledgement never activates anything.

What the registry does on each event (its method in brackets):

==================  =======================================================  ==============
listener joins      WANTED; marked dirty if it ``needs_subscribe``           [add, retry]
last listener goes  marked dirty if it ``needs_unsubscribe``                 [remove]
command sent        ``inflight += 1``; SENT_SUBSCRIBE or SENT_UNSUBSCRIBE    [_emit]
acknowledgement     ``inflight -= 1``; at 0 SETTLED, and if ACTIVE activate  [on_ack]
error reply         ``inflight -= 1``; FAILED (an ACL denial of several      [on_error]
                    names: WANTED again, retried one name per command)
unasked unsubscribe DROPPED; its listeners are told                          [_unsolicited]
disconnect          DISCONNECTED; ``inflight = 0``                           [on_disconnected]
==================  =======================================================  ==============

After each, ``deletable`` is the one rule for forgetting a name: nobody holds it, nothing
sent for it awaits a reply, and Redis does not hold it (``Registry._settle``).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Final, Protocol

Deliver = Callable[[bytes, bytes], Any]


class Listener(Hashable, Protocol):
    """What the link needs of a subscription holding names."""

    deliver: Deliver  # the hot path: called per message

    @property
    def hears_activations(self) -> bool:
        """False: the activation calls are skipped entirely (100,000 per reconnect)."""

    def notify_activated(self, name: bytes) -> None: ...
    def notify_disconnected(self, error: BaseException) -> None: ...
    def notify_refused(self, error: BaseException) -> None: ...
    def report_callback_error(self, exc: Exception) -> None: ...  # a sync deliver raised
    def await_result(self, result: Any) -> None: ...  # a sync deliver returned non-None


# -- the state machine -------------------------------------------------------------------------

# Phases: what Redis holds of the name, as far as the commands sent for it tell.
OFF: Final = 0  # nothing; or, while ``inflight``, an unsubscribe is the last command sent
SUBSCRIBING: Final = 1  # the last command sent is a subscribe, not every reply is in yet
ACTIVE: Final = 2  # the last command sent is a subscribe and every reply is in
REFUSED: Final = 3  # Redis refused the subscribe: not sent again until wanted again
PHASES: Final = ("OFF", "SUBSCRIBING", "ACTIVE", "REFUSED")

# Events.
SENT_SUBSCRIBE: Final = 0  # a command carrying the name went out...
SENT_UNSUBSCRIBE: Final = 1
SETTLED: Final = 2  # the reply to the last command in flight arrived (``inflight`` hit 0)
FAILED: Final = 3  # an error reply to a subscribe that is still the last command sent
DROPPED: Final = 4  # Redis unsubscribed the name by itself (a cluster slot moved away)
WANTED: Final = 5  # a listener joined, or a transient failure is to be retried
DISCONNECTED: Final = 6  # the connection is gone: Redis holds nothing of ours any more
EVENTS: Final = (
    "SENT_SUBSCRIBE",
    "SENT_UNSUBSCRIBE",
    "SETTLED",
    "FAILED",
    "DROPPED",
    "WANTED",
    "DISCONNECTED",
)

# phase -> {event: next phase}. An event a phase does not list leaves it unchanged; the
# registry sends a subscribe only in OFF and an unsubscribe only in SUBSCRIBING or ACTIVE.
TRANSITIONS: Final[dict[int, dict[int, int]]] = {
    OFF: {SENT_SUBSCRIBE: SUBSCRIBING, DISCONNECTED: OFF},
    SUBSCRIBING: {
        SENT_UNSUBSCRIBE: OFF,
        SETTLED: ACTIVE,
        FAILED: REFUSED,
        DROPPED: OFF,
        DISCONNECTED: OFF,
    },
    ACTIVE: {SENT_UNSUBSCRIBE: OFF, DROPPED: OFF, DISCONNECTED: OFF},
    REFUSED: {WANTED: OFF, DISCONNECTED: OFF},
}


def _row(event: int) -> tuple[int, ...]:
    """The table's column for ``event``, indexed by phase (the hot paths index it)."""
    return tuple(TRANSITIONS[phase].get(event, phase) for phase in range(len(PHASES)))


NEXT: Final = tuple(_row(event) for event in range(len(EVENTS)))
AFTER_SENT: Final = (NEXT[SENT_UNSUBSCRIBE], NEXT[SENT_SUBSCRIBE])  # indexed by ``subscribe``
AFTER_SETTLED: Final = NEXT[SETTLED]
AFTER_WANTED: Final = NEXT[WANTED]
CONTAINERS: Final = (list, dict)  # how several listeners are stored


# -- one name ----------------------------------------------------------------------------------

SMALL: Final = 32
_MISSING: Final = object()


def _noop(channel: bytes, data: bytes) -> None:
    """Stands in for a listener removed while its name is being dispatched."""


class NameState:
    """Everything known about one name (channel, pattern or shard channel).

    Its listeners are held the cheapest way for their number (a name is usually wanted by
    one subscription, so a process with 100,000 names saves a container per name): nothing,
    the listener itself, a list up to SMALL, then a dict (O(1) removal).
    """

    __slots__ = ("inflight", "ls", "phase", "snapshot")

    def __init__(self) -> None:
        # The listeners as stored: None, one listener, a list or a dict. Read ``held`` and
        # ``listeners``; the registry's loops over 100,000 names read it directly.
        self.ls: Any = None
        # What the reader calls, built lazily by ``build`` and dropped when listeners change:
        # the one listener's ``deliver`` (the usual case: no list to walk), or a list of them.
        self.snapshot: Deliver | list[Deliver] | None = None
        self.phase = OFF
        self.inflight = 0

    def __repr__(self) -> str:
        return f"<NameState {PHASES[self.phase]} inflight={self.inflight} held={self.held}>"

    # -- the phase ---------------------------------------------------------------------------

    def to(self, event: int) -> int:
        """Apply ``event`` (see ``TRANSITIONS``); returns the new phase."""
        phase = self.phase = NEXT[event][self.phase]
        return phase

    def reset(self) -> None:
        """The connection is gone: nothing is in flight any more."""
        self.to(DISCONNECTED)
        self.inflight = 0

    @property
    def subscribed(self) -> bool:
        """Whether the last command sent for the name is a subscribe."""
        return self.phase in (SUBSCRIBING, ACTIVE)

    @property
    def active(self) -> bool:
        return self.phase == ACTIVE

    @property
    def needs_subscribe(self) -> bool:
        """Wanted, and neither subscribed nor refused."""
        return self.ls is not None and self.phase == OFF

    @property
    def needs_unsubscribe(self) -> bool:
        return self.ls is None and self.phase in (SUBSCRIBING, ACTIVE)

    @property
    def deletable(self) -> bool:
        """Nobody holds it, no reply for it is due and Redis does not hold it."""
        phase = self.phase
        return self.ls is None and self.inflight == 0 and phase in (OFF, REFUSED)

    # -- listeners ---------------------------------------------------------------------------

    @property
    def held(self) -> bool:
        """Whether any listener wants the name (no list is built)."""
        return self.ls is not None

    @property
    def listeners(self) -> list[Listener]:
        """The listeners, as a new list."""
        ls = self.ls
        if ls is None:
            return []
        if ls.__class__ in CONTAINERS:
            return list(ls)
        return [ls]

    def has(self, listener: Listener) -> bool:
        ls = self.ls
        if ls is None:
            return False
        if ls.__class__ in CONTAINERS:
            return listener in ls
        return ls is listener

    def attach(self, listener: Listener) -> bool:
        """Add a listener; False if it was already there."""
        ls = self.ls
        if ls is None:
            self.ls = listener
        elif ls.__class__ is dict:
            if listener in ls:
                return False
            ls[listener] = None
        elif ls.__class__ is list:
            if listener in ls:
                return False
            if len(ls) < SMALL:
                ls.append(listener)
            else:
                self.ls = dict.fromkeys(ls)
                self.ls[listener] = None
        elif ls is listener:
            return False
        else:
            self.ls = [ls, listener]
        self.snapshot = None
        return True

    def detach(self, listener: Listener) -> bool:
        """Remove a listener; False if it was not there."""
        ls = self.ls
        if ls is None:
            return False
        if ls.__class__ is list:
            try:
                ls.remove(listener)
            except ValueError:
                return False
            if not ls:
                self.ls = None
        elif ls.__class__ is dict:
            if ls.pop(listener, _MISSING) is _MISSING:
                return False
            if not ls:
                self.ls = None
        elif ls is listener:
            self.ls = None
        else:
            return False
        self._unhook(listener.deliver)
        return True

    # -- the dispatch entry ------------------------------------------------------------------

    def build(self) -> Deliver | list[Deliver]:
        ls = self.ls
        snap: Deliver | list[Deliver]
        if ls is not None and ls.__class__ not in CONTAINERS:
            snap = ls.deliver
        else:
            snap = [listener.deliver for listener in self.listeners]
            if len(snap) == 1:  # a container left with one listener
                snap = snap[0]
        self.snapshot = snap
        return snap

    def _unhook(self, deliver: Deliver) -> None:
        snap = self.snapshot
        self.snapshot = None
        if not isinstance(snap, list):
            return  # none, or the one listener's: no dispatch can reach another after this
        # The reader may be iterating this very list (a callback removed a listener of the
        # message being dispatched): neutralise the entry in place so that nothing reaches
        # the listener after ``remove`` returned (B17).
        try:
            snap[snap.index(deliver)] = _noop
        except ValueError:
            pass

    def silence(self) -> None:
        """Nothing more reaches any listener, not even from a dispatch in progress."""
        snap = self.snapshot
        if isinstance(snap, list):
            snap[:] = [_noop] * len(snap)
        self.snapshot = None
