"""Every session's timeout on one timer of the clock.

A session has one deadline at a time (see L{chatservice.session}): to choose
a nickname, to say something (C{--idle-timeout}), or to be closed.  Each
was a C{DelayedCall} of its own: made at the connection (an object of a
dozen attributes, pushed on the reactor's heap with Python comparisons),
reset at the registration and at every input, cancelled at the close, and
left on the reactor's heap until its next clean-up.  Here a deadline is an
entry on one heap of L{Deadlines} (a list: its comparisons are C's), and
the clock holds one call, for the earliest of them.

An input moves a deadline later without touching the heap: the entry's
I{due} time changes, and when the entry comes up at its old time it goes
back on the heap for the new one.  A deadline moved sooner is a new entry.
So a deadline passes at the very time its C{DelayedCall} would have fired
(C{task.Clock} tests see the same times), and the reactor never moves a
timer sooner (which it does by a linear scan of its heap).
"""

from heapq import heapify, heappop, heappush
from itertools import count
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from .logs import gate

log = Logger(observer=gate)

#: An entry: [when on the heap, order, what to call (None once stopped or
#: passed), when due].  The order (unique) breaks ties: the first added
#: passes first, and callables are never compared.
Deadline = list[Any]

#: Stopped entries left on the heap before it is cleaned of them (and only
#: when they are more than half of it).
_DEAD_MOST = 64


class Deadlines:
    """Deadlines on one clock, with one C{DelayedCall} for the earliest."""

    __slots__ = ("_clock", "_heap", "_order", "_call", "_at", "_live", "_dead", "_due")

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        self._heap: list[Deadline] = []
        self._order = count()
        # The clock's call, for the time _at; None while there is none
        # (and while deadlines are passing: see _passed).
        self._call: IDelayedCall | None = None
        self._at = 0.0
        self._live = 0
        self._dead = 0
        # Whether deadlines are passing now (the call is being made).
        self._due = False

    def __len__(self) -> int:
        """How many deadlines are running."""
        return self._live

    def start(self, seconds: float, function: Any) -> Deadline:
        """Call C{function} in C{seconds}, unless L{stop}ped or moved later."""
        when = self._clock.seconds() + seconds
        entry = [when, next(self._order), function, when]
        heappush(self._heap, entry)
        self._live += 1
        if not self._due:
            call = self._call
            if call is None:
                self._schedule(when)
            elif when < self._at:
                call.cancel()
                self._schedule(when)
        return entry

    def stop(self, entry: Deadline) -> None:
        """The deadline C{entry} no longer runs (if it still did)."""
        if entry[2] is None:
            return
        entry[2] = None
        self._live -= 1
        if not self._live and not self._due:
            self._heap.clear()
            self._dead = 0
            if self._call is not None:
                self._call.cancel()
                self._call = None
            return
        self._dead += 1
        if self._dead > _DEAD_MOST and self._dead * 2 > len(self._heap):
            self._heap = [each for each in self._heap if each[2] is not None]
            heapify(self._heap)
            self._dead = 0

    def _schedule(self, when: float) -> None:
        self._at = when
        self._call = self._clock.callLater(
            max(when - self._clock.seconds(), 0.0), self._passed
        )

    def _passed(self) -> None:
        """The earliest deadline's time: call those due, wait for the next."""
        self._call = None
        self._due = True
        # Not before the time the call was for: the clock adds the delay to
        # its own time, which may round a hair below the entry's.
        now = max(self._clock.seconds(), self._at)
        try:
            while self._heap and self._heap[0][0] <= now:
                entry = heappop(self._heap)
                function = entry[2]
                if function is None:
                    self._dead -= 1
                    continue
                if entry[3] > entry[0]:
                    # Moved later since: back on the heap for then, among
                    # the others by that time (it may have come too: then
                    # it passes after those due before it, as a
                    # DelayedCall reset to then would).
                    entry[0] = entry[3]
                    heappush(self._heap, entry)
                    continue
                entry[2] = None
                self._live -= 1
                try:
                    function()
                except Exception:
                    log.failure("a session's timeout failed")
        finally:
            self._due = False
            heap = self._heap
            while heap and heap[0][2] is None:
                heappop(heap)
                self._dead -= 1
            if heap:
                self._schedule(heap[0][0])
            else:
                self._dead = 0


__all__ = ["Deadline", "Deadlines"]
