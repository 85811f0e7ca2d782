"""Sessions across the nodes of a cluster.

L{ClusterSessions} is the L{ISharedSessions} of a node: resume tokens, the
events a held session misses (kept in Redis as JSON, see
L{events.dumped}, bounded by C{--resume-buffer-bytes} of it), and the
move of a session resumed on another node.

A session moves at a point of the event stream (the hand-over message):
its old node keeps what it is sent before that point, and hands it over
after it; the new node collects what comes after.  The missed events are
both, with no gap and none twice.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from .. import events
from ..config import Settings
from ..errors import ChatError
from ..events import Event
from ..interfaces import IChatClient, IHeldClient, ISharedSessions
from ..logs import gate, shown
from ..reasons import CloseReason
from ..rooms import LOBBY, deliver, in_rooms
from ..text import fold
from .events import (
    Handed,
    HandOver,
    Malformed,
    clean_nickname,
    clean_rooms,
    dumped,
    loaded,
)
from .link import CALL_TIMEOUT
from .node import CUT_OFF, Node, quietly
from .records import topic_text

log = Logger(observer=gate)


@implementer(ISharedSessions)
class ClusterSessions:
    """Resume tokens and held sessions, as every node of the cluster sees them."""

    def __init__(self, node: Node) -> None:
        self._node = node
        #: Events for held sessions, sent to Redis at the iteration's end.
        self._keeping: dict[str, tuple[list[Event], int]] = {}
        self._keep_call: IDelayedCall | None = None
        #: Sessions being resumed here from another node, by folded nickname.
        self._arriving: dict[str, _Arrival] = {}
        self._on_moved: Callable[[IChatClient], None] = _nobody

    def watch_moves(self, moved: Callable[[IChatClient], None]) -> None:
        """See L{ISharedSessions.watch_moves}."""
        self._on_moved = moved

    def store_token(self, nickname: str, token_digest: str) -> None:
        """Keep the digest of C{nickname}'s resume token where nodes see it.

        Only for a new user's first token: a resume replaces the token in
        the same script that checks it.  Kept here too, and claimed again
        after an outage with the user.
        """
        key = fold(nickname)
        self._node.tokens[key] = token_digest
        if self._node.up:
            d = self._node.command(
                "set", self._node.prefix + "token:" + key, token_digest
            )
            quietly(d, "storing a resume token")
            # A new token: the events kept for the last drop have been seen.
            d = self._node.command(
                "delete",
                self._missed_keys(key),
            )
            quietly(d, "forgetting missed events")

    def _missed_keys(self, key: str) -> list[str]:
        """The Redis keys of the events kept for the held session of C{key}."""
        return [
            self._node.prefix + "missed:" + key,
            self._node.prefix + "missed-bytes:" + key,
        ]

    def keep_for(self, nickname: str, event: Event, limit: int) -> None:
        """Keep an event for a held session, for a resume on another node.

        What a held session is sent in one reactor iteration goes to Redis
        in one call at its end, each event as JSON; Redis keeps at most
        C{limit} of them, and C{--resume-buffer-bytes} of their JSON.
        """
        if not self._node.up:
            return
        key = fold(nickname)
        kept = self._keeping.get(key)
        if kept is not None:
            kept[0].append(event)
            return
        self._keeping[key] = ([event], limit)
        if self._keep_call is None:
            self._keep_call = self._node.clock.callLater(0, self._keep_now)

    def flush(self) -> None:
        """Send now what waits for the iteration's end to go to Redis."""
        if self._keep_call is not None and self._keep_call.active():
            self._keep_call.cancel()
            self._keep_now()

    def cancel(self) -> None:
        """The node leaves: what waits for the iteration's end never goes."""
        if self._keep_call is not None and self._keep_call.active():
            self._keep_call.cancel()

    def _keep_now(self) -> None:
        self._keep_call = None
        keeping, self._keeping = self._keeping, {}
        for key, (kept, limit) in keeping.items():
            d = self._node.call(
                "keep",
                key,
                _json_list([dumped(event) for event in kept]),
                limit,
                self._node.missed_bytes,
                _KEEP_TTL,
            )
            quietly(d, "keeping events for a held session")

    def resume(
        self,
        client: IChatClient,
        nickname: str,
        token_digest: str,
        new_digest: str,
    ) -> Deferred[tuple[str, str, list[Event], int] | bool | None]:
        """See L{ISharedSessions.resume}.

        The token is checked and replaced by C{new_digest} in one script: it
        works once in the whole cluster.  Fires with True if the session is
        this node's (the caller resumes it here), with (nickname, room,
        missed events, their count of lines) once it has moved here from
        another node, or with None if there is no such session or the token
        is wrong.

        A session moves at a point of the event stream (the hand-over
        message, C{ho}): its old node keeps what it is sent before that
        point, and hands it over (C{handed}) after it; this node collects
        what comes after.  The missed events are both, with no gap and none
        twice.
        """
        key = fold(nickname)
        if not self._node.up:  # the session may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        if key in self._arriving:
            return succeed(None)  # another resume of it is under way here
        arrival = self._arriving[key] = _Arrival(client, self._node.missed_bytes)
        back = dumped(events.back(nickname))
        d = self._node.call(
            "resume",
            self._node.name,
            key,
            token_digest,
            new_digest,
            self._node.amax,
            back,
        )

        def answered(reply: list[Any] | None) -> Any:
            if not reply:
                return None
            self._node.tokens[key] = new_digest
            if not int(reply[1]):
                # This node's session, resumed here: what was kept in Redis
                # for it has been seen (after the calls still under way).
                self._keeping.pop(key, None)
                d = self._node.command(
                    "delete",
                    self._missed_keys(key),
                )
                quietly(d, "forgetting missed events")
                return True
            raw, _, told, _, wait = reply
            record = json.loads(raw)
            if not int(wait):  # its node is dead: what it stored is all there is
                arrival.handed.callback(None)
            waits = [
                _at_most(arrival.installed, self._node.clock),
                _at_most(arrival.handed, self._node.clock),
            ]
            d = DeferredList(waits)
            d.addCallback(lambda _: self._node.call("take_missed", key))
            d.addErrback(lambda failure: [])  # Redis gone meanwhile: none
            return d.addCallback(self._arrived, key, arrival, record, told)

        def done(result: object) -> object:
            if self._arriving.get(key) is arrival:
                del self._arriving[key]
            return result

        return d.addCallback(answered).addBoth(done)

    def own_event(self, message: str) -> None:
        """Act on an event this node made, if it is a hand-over to here.

        The session arriving here starts here at that point of the stream.
        """
        if not self._arriving or '"ho"' not in message:
            return
        try:
            event = json.loads(message)
            arrival = self._arriving.get(event.get("ho"))
        except (ValueError, AttributeError, TypeError):
            return
        if arrival is not None:
            self._install(event["ho"], arrival, event["nick"], event["rooms"])

    def _install(
        self, key: str, arrival: _Arrival, nickname: object, rooms: object
    ) -> None:
        """Index the arriving session, its events collected until it is in.

        Its nickname and rooms come from Redis: checked like an event's.
        """
        if arrival.installed.called:
            return
        try:
            nickname = clean_nickname(nickname, "hand-over")
        except Malformed:
            nickname = key  # a folded nickname is a nickname
        try:
            names = clean_rooms(rooms, "hand-over")
        except Malformed:
            names = [LOBBY]
        collector = arrival.collector
        self._node.index.add(collector, str(nickname))
        for name in names:
            self._node.index.enter(collector, name)
        arrival.installed.callback(None)

    def _arrived(
        self,
        missed: list[str],
        key: str,
        arrival: _Arrival,
        record: dict[str, Any],
        told: list[str],
    ) -> tuple[str, str, list[Event], int]:
        """The session has moved here: C{arrival}'s client takes it.

        What it missed: what its old node kept for it (from Redis, each
        event checked; a malformed one is skipped), then what was collected
        here since the hand-over.
        """
        collector, client = arrival.collector, arrival.client
        self._install(key, arrival, record.get("nick"), record.get("rooms"))
        user = self._node.index.swap(collector, client)
        away = record.get("away")
        user.away = topic_text(away) if away is not None else None
        rooms = [
            self._node.index.rooms[name]
            for name in told
            if name in self._node.index.rooms
        ]
        deliver(in_rooms(rooms), events.back(user.nickname), client)
        kept = [event for event in map(_event_or_none, missed) if event is not None]
        kept += collector.received
        if collector.kicked is not None:
            self._node.clock.callLater(0, client.disconnect, collector.kicked)
        count = sum(event.line.count(b"\n") for event in kept)
        return user.nickname, user.rooms[-1], kept, count

    def moved_away(self, event: HandOver) -> None:
        """The user C{event.key} resumed on another node: forget them here.

        If this node had them, it hands over what it kept for them; if it
        should have had them, it says it has nothing more.
        """
        key, old_node = event.key, event.old_node
        client = self._node.index.by_fold.get(key)
        if client is None or client in (a.collector for a in self._arriving.values()):
            if old_node == self._node.name:
                self._hand_over(key, None)
            return
        user = self._node.index.remove(client)
        assert user is not None  # indexed by its key
        self._node.tokens.pop(key, None)
        for name in user.rooms:
            self._node.index.leave(client, name)
        log.info(
            "cluster: {nickname} resumed the session on another node",
            nickname=shown(user.nickname),
        )
        self._hand_over(
            key,
            _last_fitting(client.missed()[0], self._node.missed_bytes)
            if IHeldClient.providedBy(client)  # a held session's events
            else [],
        )
        self._on_moved(client)

    def handed(self, event: Handed) -> None:
        """A session's old node has handed over what it kept for it."""
        arrival = self._arriving.get(event.key)
        if arrival is not None and not arrival.handed.called:
            arrival.handed.callback(None)

    def _hand_over(self, key: str, kept: list[str] | None) -> None:
        """Give the new node of C{key} the events kept for them here (JSON)."""
        self._keeping.pop(key, None)  # in C{kept} already, or gone with the user
        d = self._node.call(
            "handed",
            self._node.name,
            key,
            "" if kept is None else _json_list(kept),
            _MISSED_EVENTS,
            self._node.missed_bytes,
            _KEEP_TTL,
        )
        quietly(d, "handing over a resumed session's events")


#: The most bytes of missed events (their JSON) kept in Redis for one held
#: session (and handed over to the node it resumes on), unless told
#: otherwise (the server passes --resume-buffer-bytes): that option's
#: default, 64 KiB.
MISSED_BYTES: int = Settings().resume_buffer_bytes

#: The most events handed over (a held session keeps --resume-buffer lines).
_MISSED_EVENTS = 10_000

#: Seconds the events kept for a held session stay in Redis, unless taken.
_KEEP_TTL = 3600


def _nobody(client: IChatClient) -> None:
    """Told of a session moved away when nobody watches."""


@implementer(IChatClient)
class _Collector:
    """Stands for a session arriving from another node, until it is in."""

    def __init__(self, client: IChatClient, max_bytes: int) -> None:
        self.connection_id, self.host = client.connection_id, client.host
        self._max_bytes = max_bytes
        self.received: deque[Event] = deque()
        self._bytes = 0
        self.kicked: CloseReason | None = None

    @property
    def receiver(self) -> IChatClient:
        """See L{IChatClient.receiver}: this client itself."""
        return self

    def deliver(self, event: Event) -> None:
        """Keep C{event}, and no more than C{max_bytes} of lines in all."""
        if not isinstance(event, Event):
            raise events.not_an_event(event)
        self.received.append(event)
        self._bytes += len(event.line)
        while self._bytes > self._max_bytes and len(self.received) > 1:
            self._bytes -= len(self.received.popleft().line)

    def disconnect(self, reason: CloseReason) -> None:
        """Remember that the session was kicked, for C{reason}."""
        self.kicked = reason


class _Arrival:
    """A session being resumed here from another node."""

    def __init__(self, client: IChatClient, max_bytes: int) -> None:
        self.client = client
        self.collector = _Collector(client, max_bytes)
        #: Fires once the session is indexed here (at its hand-over event).
        self.installed: Deferred[None] = Deferred()
        #: Fires once its old node has handed over what it kept.
        self.handed: Deferred[None] = Deferred()


def _at_most(d: Deferred[None], clock: IReactorTime) -> Deferred[None]:
    """C{d}, or nothing after L{CALL_TIMEOUT} seconds (a node cut off)."""
    waited: Deferred[None] = Deferred()

    def fire(_: object) -> None:
        if not waited.called:
            waited.callback(None)

    d.addBoth(fire)
    return waited.addTimeout(CALL_TIMEOUT, clock).addErrback(lambda _: None)


def _json_list(values: list[str]) -> str:
    """Events' JSON for Redis, as a JSON list of them."""
    return json.dumps(values, ensure_ascii=False)


def _last_fitting(kept: list[Event], max_bytes: int) -> list[str]:
    """The JSON of the last of C{kept} that fit in C{max_bytes} of it."""
    dumps, size = [], 0
    for event in reversed(kept):
        value = dumped(event)
        size += len(value.encode("utf-8"))
        if size > max_bytes:
            break
        dumps.append(value)
    dumps.reverse()
    return dumps


def _event_or_none(raw: object) -> Event | None:
    """The missed event whose JSON is C{raw}, checked; None if malformed."""
    try:
        return loaded(raw, "missed events")
    except Malformed:
        return None
