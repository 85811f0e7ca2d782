"""What every part of a cluster's node shares: its name, Redis, its users.

A L{Node} holds this node's index of its own users (L{chatservice.rooms}),
its link to Redis, and the few ways its parts talk to Redis: a script
(L{Node.call}), a plain command (L{Node.command}), an event for the others
(L{Node.publish}).  It also remembers what happened while Redis was out of
reach, for L{chatservice.cluster.liveness} to tell the others later.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..errors import ChatError
from ..events import Event
from ..logs import gate
from ..rooms import Rooms
from .events import EVENT_MAX, AccountChange, Ban, ToEveryone, ToRooms, Unban
from .link import RedisLink, Unreachable, kept_in
from .scripts import STREAM_EVENTS

log = Logger(observer=gate)

#: What a user is told when Redis did not answer for something only it knows.
CUT_OFF = "the other servers did not answer; try again in a moment"
RENAME_CUT_OFF = (
    "nicknames cannot change while the other servers are unreachable; "
    "try again in a moment"
)

#: Seconds an answer of /users, /who or /rooms is shared (see L{Node.shared}).
LIST_CACHE = 1.0

#: Lists shared at most (one per room asked about): past it, all are forgotten.
_LISTS_MAX = 64

#: The scripts that change no user or room: the lists stay good.
_UNCHANGING = frozenset(
    {"users", "rooms", "say", "keep", "heartbeat", "to_user", "take_missed", "handed"}
)


def node_name() -> str:
    """A name for this node that no other node has: host, pid, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Node:
    """One node of a cluster: its own users, and its calls to Redis.

    @param cluster: the cluster's name: the prefix of every key in Redis.
    @param name: this node's name in the cluster.
    @param announce_max: as for L{chatservice.registry.Registry}.
    @param missed_bytes: the most bytes of missed events kept for one held
        session (as JSON), handed over, or collected (C{--resume-buffer-bytes}).

    @ivar index: this node's users and their rooms.
    @ivar link: the connections to Redis; see L{connect}.
    @ivar amax: C{announce_max} as the scripts take it: -1 for no limit.
    @ivar tokens: the digests of this node's users' resume tokens, by
        folded nickname: claimed again after an outage, with the users.
    @ivar joined_while_down: the users (folded) who registered while Redis
        was out of reach.
    @ivar left_while_down: the users who left meanwhile: by folded nickname,
        their nickname, rooms and leave event.
    @ivar parted_while_down: the events telling of rooms users left
        meanwhile (as JSON, see L{events.dumped}), by user and room.
    """

    def __init__(
        self,
        cluster: str,
        name: str,
        clock: IReactorTime,
        history: int,
        announce_max: int | None,
        missed_bytes: int,
    ) -> None:
        self.cluster = cluster
        self.name = name
        self.clock = clock
        self.prefix = f"chatservice:{cluster}:"
        self.history = history
        self.amax = -1 if announce_max is None else announce_max
        self.missed_bytes = missed_bytes
        self.index = Rooms(history, announce_max)
        self.link: RedisLink
        self.stopping = False
        self.closing = False
        #: Whether the node is claiming its users again (see L{up}).
        self.resyncing = False
        self.tokens: dict[str, str] = {}
        self.joined_while_down: set[str] = set()
        self.left_while_down: dict[str, tuple[str, tuple[str, ...], Event]] = {}
        self.parted_while_down: dict[str, dict[str, str]] = {}
        #: The calls to Redis under way.
        self.pending: set[Deferred[Any]] = set()
        #: Answers of /users, /who and /rooms, shared (see L{shared}): by
        #: room ("" for everyone, "/rooms"), when, the list, and those
        #: waiting for it while it is fetched.
        self._lists: dict[str, tuple[float, list[Any], list[Any] | None]] = {}
        #: Counts this node's changes: an answer fetched before one is stale.
        self._generation = 0

    def connect(
        self,
        url: str,
        received: Callable[[str, str], None],
        up: Callable[[], None],
        down: Callable[[], None],
    ) -> None:
        """Make the link to Redis at C{url}, which calls back as it goes."""
        self.link = RedisLink(url, self.prefix + "events", received, up, down)

    @property
    def up(self) -> bool:
        """Whether this node is part of the cluster now."""
        return self.link.up and not self.resyncing

    def call(self, script: str, *args: object) -> Deferred[Any]:
        """Run one of the L{scripts} on this cluster's keys."""
        if script not in _UNCHANGING:  # the users or rooms change
            self._generation += 1
            self._lists.clear()
        return self.track(self.link.call(script, self.prefix, *args))

    def command(self, name: str, *args: object) -> Deferred[Any]:
        """Send Redis the command C{name} (a txredisapi method's name)."""
        return self.track(self.link.command(name, *args))

    def track(self, d: Deferred[Any]) -> Deferred[Any]:
        """Count C{d} as under way until it fires (see L{pending})."""
        return kept_in(d, self.pending)

    def publish(
        self, event: Ban | Unban | AccountChange | ToEveryone | ToRooms, what: str
    ) -> None:
        """Add C{event} to the stream the other nodes read; never fails.

        If Redis refuses it, the log says C{what} failed.
        """
        fields = {"o": self.name, **event.fields()}
        text = json.dumps(fields, ensure_ascii=False)  # U+FFFD: 3 bytes, not 6
        if len(text.encode("utf-8")) > EVENT_MAX:  # never: events are cut to fit
            d: Deferred[Any] = fail(ValueError("an event too large for the stream"))
        else:
            d = self.command(
                "execute_command",
                "XADD",
                self.prefix + "events",
                "MAXLEN",
                "~",
                str(STREAM_EVENTS),
                "*",
                "o",
                self.name,
                "e",
                text,
            )
        quietly(d, what)

    def shared(self, name: str, fetch: Callable[[], Deferred[list[Any]]]) -> Any:
        """The list C{fetch()} fires with, fetched once for many askers.

        Those who ask while it is under way, and for L{LIST_CACHE} seconds
        after, get the same answer: a flood of C{/users}, C{/who} or
        C{/rooms} costs Redis one answer a second, however many ask.  A
        change this node makes to the users or rooms forgets the answers
        (L{call}); the other nodes' changes show within the second.
        """
        now = self.clock.seconds()
        found = self._lists.get(name)
        if found is not None:
            when, value, waiting = found
            if waiting is not None:
                d: Deferred[list[Any]] = Deferred()
                waiting.append(d)
                return d
            if now - when < LIST_CACHE:
                return succeed(list(value))
        if len(self._lists) >= _LISTS_MAX:
            self._lists.clear()
        waiters: list[Deferred[list[Any]]] = []
        generation = self._generation
        self._lists[name] = (now, [], waiters)

        def done(value: list[Any]) -> list[Any]:
            if self._generation == generation:
                self._lists[name] = (self.clock.seconds(), value, None)
            elif self._lists.get(name, (0, [], None))[2] is waiters:
                del self._lists[name]
            for d in waiters:
                d.callback(list(value))
            return value

        return fetch().addCallback(done)


def quietly(d: Deferred[Any], what: str) -> None:
    """Log a failed fire-and-forget call; Redis being down is no news."""

    def failed(failure: Failure) -> None:
        if not failure.check(Unreachable):
            log.warn(
                "cluster: {what} failed: {error}",
                what=what,
                error=failure.getErrorMessage() or failure.type.__name__,
            )

    d.addErrback(failed)


def cut_off(message: str) -> Callable[[Failure], object]:
    """An errback: Redis did not answer, so the user is told C{message}."""

    def errback(failure: Failure) -> object:
        trap_unreachable(failure)
        raise ChatError(message)

    return errback


def trap_unreachable(failure: Failure) -> None:
    """Let through a failure that means Redis did not answer; raise others.

    Redis's own errors (a script that failed) are bugs, not outages.
    """
    import txredisapi

    if failure.check(txredisapi.ResponseError):
        failure.raiseException()
