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

from . import wire
from .interfaces import IChatSession, IHeldClient
from .output import not_bytes
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
        mirror: Callable[[str, bytes, int], object] | None = None,
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
        self._kept: deque[tuple[int, bytes, int]] = deque()
        self._private: deque[tuple[int, bytes, int]] = deque()
        self._arrivals = 0
        self._lines = 0
        self._bytes = 0
        #: Lines dropped because the buffer was full.
        self.dropped = 0
        self._mirror = mirror

    def deliver(self, data: bytes) -> None:
        """Keep C{data} for the user to see when they resume."""
        if not isinstance(data, bytes):
            raise not_bytes(data)  # a plugin's mistake, refused at the call
        if self._mirror is not None:  # where another node can read it
            self._mirror(self.nickname, data, self._limit)
        lines = data.count(b"\n")
        self._arrivals += 1
        kept = self._private if wire.is_private(data) else self._kept
        kept.append((self._arrivals, data, lines))
        self._lines += lines
        self._bytes += len(data)
        while self._lines > self._limit or self._bytes > self._max_bytes:
            oldest = self._kept or self._private
            if not oldest:
                break
            _, old, count = oldest.popleft()
            self._lines -= count
            self._bytes -= len(old)
            self.dropped += count

    def keep_unsent(self, unsent: Iterable[bytes]) -> None:
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
            data = chunks[index]
            if wire.is_private(data):
                keep[index] = True
                continue
            lines += data.count(b"\n")
            size += len(data)
            keep[index] = lines <= self._limit and size <= self._max_bytes
        for data, kept in zip(chunks, keep, strict=True):
            if kept:
                self.deliver(data)
            else:
                self.dropped += data.count(b"\n")

    def disconnect(self, reason: CloseReason) -> None:
        """Kicked while away: the session ends now, for C{reason}."""
        self._keeper.expire(self, reason)

    def missed(self) -> tuple[bytes, int]:
        """What was kept, as bytes, and how many lines that is."""
        kept = heapq.merge(self._kept, self._private)  # in order of arrival
        return b"".join([data for _, data, _ in kept]), self._lines
