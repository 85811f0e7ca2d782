"""A held session: what stands in the registry while its user is away.

When a connection drops and its session is held for a resume (see
L{chatservice.resume}), a L{HeldClient} takes its place in the registry and
keeps, bounded, what the user is sent meanwhile.
"""

import heapq
from collections import deque
from collections.abc import Callable, Iterable
from typing import Protocol

from zope.interface import implementer

from .events import Event, not_an_event
from .interfaces import IChatSession, IHeldClient
from .reasons import CloseReason


class Keeper(Protocol):
    """Who holds the session: it ends it (L{chatservice.resume.SessionKeeper})."""

    def expire(self, held: "HeldClient", reason: CloseReason) -> None:
        """End the held session C{held}: the user leaves, for C{reason}."""


@implementer(IHeldClient)
class HeldClient:
    """Stands in the registry for a user whose connection dropped.

    It keeps what is delivered, up to C{limit} lines and C{max_bytes} bytes;
    beyond that the oldest lines are dropped, and counted: the oldest room
    lines first (a room's scrollback has them too), private messages only
    once no room line is left.
    """

    def __init__(
        self,
        session: IChatSession,
        keeper: Keeper,
        limit: int,
        max_bytes: int,
        mirror: Callable[[str, Event, int], object] | None = None,
    ) -> None:
        self.connection_id = session.connection_id
        self.host = session.host
        self.nickname: str = session.nickname
        self.room: str = session.room
        self._keeper = keeper
        self._limit = limit
        self._max_bytes = max_bytes
        # (order of arrival, bytes, lines): room lines and notices, and
        # private messages, each oldest first.
        self._kept: deque[tuple[int, Event, int]] = deque()
        self._private: deque[tuple[int, Event, int]] = deque()
        self._arrivals = 0
        self._lines = 0
        self._bytes = 0
        #: Lines dropped because the buffer was full.
        self.dropped = 0
        self._mirror = mirror

    @property
    def receiver(self) -> "HeldClient":
        """See L{IChatClient.receiver}: this client itself."""
        return self

    def deliver(self, event: Event) -> None:
        """Keep C{event} for the user to see when they resume.

        Its size is counted in the line format (bytes and lines).
        """
        if event.__class__ is not Event:
            raise not_an_event(event)  # a plugin's mistake, refused at the call
        if self._mirror is not None:  # where another node can read it
            self._mirror(self.nickname, event, self._limit)
        data = event.line
        lines = data.count(b"\n")
        self._arrivals += 1
        kept = self._private if event.kind == "private" else self._kept
        kept.append((self._arrivals, event, lines))
        self._lines += lines
        self._bytes += len(data)
        while self._lines > self._limit or self._bytes > self._max_bytes:
            oldest = self._kept or self._private
            if not oldest:
                break
            _, old, count = oldest.popleft()
            self._lines -= count
            self._bytes -= len(old.line)
            self.dropped += count

    def keep_unsent(self, unsent: Iterable[Event]) -> None:
        """Keep what the connection never sent, as if delivered now.

        It can be up to C{--max-sendq} bytes, far more than is kept: lines
        that would only be dropped again are counted as dropped without
        being delivered (nor copied to Redis in a cluster).  A room line is
        sure to be dropped when the newer room lines alone are over the
        limits; private messages are all delivered.
        """
        chunks = list(unsent)
        keep = [False] * len(chunks)
        lines = size = 0
        for index in range(len(chunks) - 1, -1, -1):
            event = chunks[index]
            if event.kind == "private":
                keep[index] = True
                continue
            lines += event.line.count(b"\n")
            size += len(event.line)
            keep[index] = lines <= self._limit and size <= self._max_bytes
        for event, kept in zip(chunks, keep, strict=True):
            if kept:
                self.deliver(event)
            else:
                self.dropped += event.line.count(b"\n")

    def disconnect(self, reason: CloseReason) -> None:
        """Kicked while away: the session ends now, for C{reason}."""
        self._keeper.expire(self, reason)

    def missed(self) -> tuple[list[Event], int]:
        """What was kept, in order, and how many lines that is."""
        kept = heapq.merge(self._kept, self._private)  # in order of arrival
        return [event for _, event, _ in kept], self._lines
