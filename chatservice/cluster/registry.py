"""The clustered registry: this node's users in memory, the rest in Redis."""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import wire
from ..errors import ChatError, InvalidName, NicknameInUse, NoSuchNickname
from ..interfaces import (
    IChatClient,
    IRegistry,
    ISharedBans,
    ISharedSessions,
    RoomInfo,
    Scrollback,
    UserInfo,
)
from ..logs import gate, shown
from ..reasons import CONNECTION_LOST, CloseKind, CloseReason
from ..rooms import LOBBY, Rooms, User, deliver, in_rooms
from ..text import check_room, fold, sanitise
from .events import (
    EVENT_MAX,
    REASON_MAX,
    TEXT_MAX,
    Malformed,
    MalformedLog,
    checked,
    clean_lines,
    clean_nickname,
    clean_rooms,
    clean_text,
    cut,
    reason_event,
)
from .link import CALL_TIMEOUT, RedisLink, Unreachable
from .scripts import STREAM_EVENTS

log = Logger(observer=gate)


def node_name() -> str:
    """A name for this node that no other node has: host, pid, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@implementer(IRegistry, ISharedSessions, ISharedBans)
class ClusterRegistry:
    """An L{IRegistry} shared by every node of a cluster, through Redis.

    @param url: C{redis://HOST:PORT/DB}.
    @param cluster: the cluster's name; nodes with the same name (and
        Redis database) are one server.
    @param node_ttl: seconds after which a silent node's users are gone.
    @param history: how many lines each room's scrollback keeps.
    @param announce_max: as for L{chatservice.registry.Registry}.
    @param node: this node's name in the cluster (by default, one of its
        own: see L{node_name}).
    """

    lobby = LOBBY

    def __init__(
        self,
        url: str,
        cluster: str = "chat",
        node_ttl: float = 15.0,
        history: int = 50,
        clock: IReactorTime | None = None,
        announce_max: int | None = None,
        node: str | None = None,
        missed_bytes: int | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self.cluster = cluster
        self.node = node if node is not None else node_name()
        self._prefix = f"chatservice:{cluster}:"
        self._node_ttl = node_ttl
        self._history = history
        #: --announce-max as the scripts take it: -1 for no limit.
        self._amax = -1 if announce_max is None else announce_max
        #: --resume-buffer-bytes: the most bytes of missed lines kept in
        #: Redis for one held session, handed over, or collected.
        self._missed_bytes = MISSED_BYTES if missed_bytes is None else missed_bytes
        self._stopping = False
        #: This node's users and their rooms (its maps under short names).
        self._index = index = Rooms(history, announce_max)
        self._users, self._by_fold = index.users, index.by_fold
        self._rooms = index.rooms
        self._pending: set[Deferred[Any]] = set()
        self._told_down = False
        self._resyncing = False
        #: Users who registered, and who left, while Redis was out of reach
        #: (folded nickname; and the rooms of those who left).
        self._joined_while_down: set[str] = set()
        self._left_while_down: dict[str, tuple[str, tuple[str, ...], bytes]] = {}
        #: The lines telling of rooms users left meanwhile, by user and room.
        self._parted_while_down: dict[str, dict[str, str]] = {}
        #: Lines for held sessions, sent to Redis at the iteration's end.
        self._keeping: dict[str, tuple[list[bytes], int]] = {}
        #: The digests of this node's users' resume tokens, by folded
        #: nickname: claimed again after an outage, with the users.
        self._tokens: dict[str, str] = {}
        #: Answers of /users, /who and /rooms, shared (see L{_shared}): by
        #: room ("" for everyone, "/rooms"), when, the list, and those
        #: waiting for it while it is fetched.
        self._lists: dict[str, tuple[float, list[Any], list[Any] | None]] = {}
        #: Counts this node's changes: an answer fetched before one is stale.
        self._generation = 0
        #: Sessions being resumed here from another node, by folded nickname.
        self._arriving: dict[str, _Arrival] = {}
        self._keep_call: IDelayedCall | None = None
        #: The check that Redis answered soon after the start.
        self._first_check: IDelayedCall | None = None
        #: The next try of claiming the users again, after one failed.
        self._retry: IDelayedCall | None = None
        #: Whether the last heartbeat found this node taken for dead.
        self._reaped = False
        self._closing = False
        #: Told of a local session that was resumed on another node (after
        #: it left this node's index, silently): the factory's session keeper.
        self.on_moved: Callable[[IChatClient], None] | None = None
        #: Told of a ban made, or lifted, on another node: the factory's.
        self.on_ban: Callable[[str, float | None, str, str], None] | None = None
        self.on_unban: Callable[[str], None] | None = None
        #: The sessions and bans shared between nodes, for the factory.
        self.shared_sessions: ISharedSessions = self
        self.shared_bans: ISharedBans = self
        self.said = 0
        self.delivered = 0
        #: Events from Redis that were not of any known shape, logged.
        self._malformed = MalformedLog(clock.seconds, self.node)
        self.link = RedisLink(
            url,
            self._prefix + "events",
            self._event,
            self._link_up,
            self._link_down,
        )
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock

    # Life ---------------------------------------------------------------

    def start(self) -> None:
        """Connect to Redis; the node serves its own users until it is up."""
        self.link.start()
        self._first_check = self._clock.callLater(CALL_TIMEOUT, self._not_yet_up)

    def _not_yet_up(self) -> None:
        self._first_check = None
        if not self.link.up:
            log.warn(
                "cluster {cluster}: cannot reach Redis at {host}:{port} yet; "
                "serving this node's users alone until it can",
                cluster=self.cluster,
                host=self.link.host,
                port=self.link.port,
            )

    @property
    def up(self) -> bool:
        """Whether this node is part of the cluster now."""
        return self.link.up and not self._resyncing

    def close(self) -> Deferred[object]:
        """Leave the cluster (the node's users must have gone) and disconnect."""
        self._closing = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        for call in (self._first_check, self._retry, self._keep_call):
            if call is not None and call.active():
                call.cancel()
        d = self.idle()

        def retire(_: object) -> Deferred[Any] | None:
            if not self.link.up:
                return None
            retired = self.link.call(
                "retire", self._prefix, self.node, self._amax, LOBBY
            )
            # Users still here (a registration under way at the stop): gone.
            return retired.addCallback(self._announce_gone)

        d.addCallback(retire)
        d.addErrback(lambda failure: None)
        d.addCallback(lambda _: self.idle())
        d.addCallback(lambda _: self.link.stop())
        return d

    def idle(self) -> Deferred[None]:
        """Fire once no call to Redis is under way."""
        if self._keep_call is not None and self._keep_call.active():
            self._keep_call.cancel()
            self._keep_now()  # what waits for the iteration's end goes now
        if not self._pending:
            return succeed(None)
        d = DeferredList(list(self._pending), consumeErrors=True)
        return d.addCallback(lambda _: self.idle())

    def _call(self, script: str, *args: object) -> Deferred[Any]:
        if script not in _UNCHANGING:  # the users or rooms change
            self._generation += 1
            self._lists.clear()
        return self._track(self.link.call(script, self._prefix, *args))

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        """Count C{d} as under way until it fires (see L{idle})."""
        self._pending.add(d)

        def done(result: object) -> object:
            self._pending.discard(d)
            return result

        return d.addBoth(done)

    def _quietly(self, d: Deferred[Any], what: str) -> None:
        """Log a failed fire-and-forget call; Redis being down is no news."""

        def failed(failure: Failure) -> None:
            if not failure.check(Unreachable):
                log.warn(
                    "cluster: {what} failed: {error}",
                    what=what,
                    error=failure.getErrorMessage() or failure.type.__name__,
                )

        d.addErrback(failed)

    def _link_up(self) -> None:
        if self._closing:
            return
        log.info("cluster {cluster}: connected to Redis", cluster=self.cluster)
        self._resyncing = True
        self._beat().addBoth(self._resync)
        if not self._heartbeat.running:
            self._heartbeat.start(self._node_ttl / 4, now=False)

    def _link_down(self) -> None:
        log.warn(
            "cluster {cluster}: Redis is out of reach; serving this node's "
            "users alone until it is back",
            cluster=self.cluster,
        )
        if self._users and not self._stopping:
            self._told_down = True
            deliver(
                tuple(self._users),
                wire.notice(
                    "the other servers are unreachable: you see only the users "
                    "of this one until they are back"
                ),
                None,
            )

    def _beat(self) -> Deferred[Any]:
        """Renew the heartbeat, and reap the nodes that stopped renewing."""
        d = self.link.call(
            # Renewed every quarter of --node-ttl, it lasts three quarters:
            # a node is reaped within --node-ttl of its last heartbeat, by
            # another that reaps as often, and may miss two heartbeats.
            "heartbeat",
            self._prefix,
            self.node,
            int(self._node_ttl * 750),
        )

        def reap(reaped: int) -> Deferred[Any]:
            self._reaped = bool(int(reaped))
            if self._reaped and not self._resyncing and self.link.up:
                # The others took this node for dead (a pause longer than
                # --node-ttl): its users are gone from Redis; claim them.
                log.warn(
                    "cluster {cluster}: this node was taken for dead; claiming "
                    "its users again",
                    cluster=self.cluster,
                )
                self._resyncing = True
                self._resync(None)
            return self.link.call(
                "reap", self._prefix, self._amax, LOBBY, self.node, *_LOST_AROUND
            )

        d.addCallback(reap).addCallback(self._announce_reaped)
        self._quietly(d, "the heartbeat")
        return d

    def _announce_reaped(self, gone: list[list[Any]]) -> None:
        for _key, nickname, rooms in gone:
            if not rooms:
                continue
            log.info(
                "cluster: {nickname}, of a node that stopped, has gone",
                nickname=shown(nickname),
            )
            # The script told the other nodes; this one tells its users.
            line = wire.left(nickname, "connection lost")
            self._on_event({"r": list(rooms), "d": line})

    def _publish(self, event: dict[str, object]) -> Deferred[Any]:
        text = json.dumps(event, ensure_ascii=False)  # U+FFFD: 3 bytes, not 6
        if len(text.encode("utf-8")) > EVENT_MAX:  # never: texts are cut to fit
            return fail(ValueError("an event too large for the stream"))
        return self._command(
            "execute_command",
            "XADD",
            self._prefix + "events",
            "MAXLEN",
            "~",
            str(STREAM_EVENTS),
            "*",
            "o",
            event.get("o", ""),
            "e",
            text,
        )

    def _resync(self, _: object) -> Deferred[None]:
        """Claim this node's users again, after Redis was out of reach.

        Until that has worked the node serves its users alone (L{up} is
        false); if it fails it is tried again a little later.  The others
        are told, once, of the users who came and went meanwhile; if the
        others took this node for dead (C{reaped}), of all its users.
        """
        reaped = self._reaped
        done: set[IChatClient] = set()
        failures: list[Failure] = []

        def next_batch(_: object = None) -> Deferred[None] | None:
            batch = [client for client in self._users if client not in done]
            if not batch:
                return None
            calls = []
            for client in batch:
                done.add(client)
                user = self._users[client]
                key = fold(user.nickname)
                record = {
                    "nick": user.nickname,
                    "node": self.node,
                    "host": user.host or "",
                    "away": user.away,
                    "rooms": list(user.rooms),
                }
                joined = {
                    room: _text(wire.joined(user.nickname, room)) for room in user.rooms
                }
                announce = reaped or key in self._joined_while_down
                d = self._call(
                    "reclaim",
                    self.node,
                    key,
                    json.dumps(record),
                    self._amax,
                    "1" if announce else "0",
                    json.dumps(joined),
                    json.dumps(self._parted_while_down.get(key, {})),
                    LOBBY,
                    self._tokens.get(key, ""),
                )
                d.addCallbacks(self._reclaimed, failures.append, callbackArgs=(client,))
                calls.append(d)
            return DeferredList(calls).addCallback(next_batch)

        def prune(_: object) -> Deferred[None]:
            if failures:
                failures[0].raiseException()
            keep = json.dumps([fold(user.nickname) for user in self._users.values()])
            d = self._call("prune", self.node, keep, self._amax, LOBBY)
            return d.addCallback(self._announce_left, reaped)

        def finished(result: object) -> None:
            if isinstance(result, Failure):
                log.warn(
                    "cluster: claiming this node's users again failed ({error}); "
                    "trying again",
                    error=result.getErrorMessage() or result.type.__name__,
                )
                self._resyncing = self.link.up
                if self.link.up and not self._closing:
                    if self._retry is not None and self._retry.active():
                        self._retry.cancel()
                    self._retry = self._clock.callLater(
                        RedisLink.RETRY, self._resync_again
                    )
                return
            self._resyncing = False
            log.info(
                "cluster {cluster}: in touch with the other nodes; {count} user(s) "
                "of this node claimed",
                cluster=self.cluster,
                count=len(self._users),
            )
            self._joined_while_down.clear()
            self._left_while_down.clear()
            self._parted_while_down.clear()
            if reaped:
                # Announced once: the next heartbeat must not see it again.
                self._quietly(
                    self._command("delete", self._prefix + "reaped:" + self.node),
                    "a heartbeat",
                )
            if self._told_down:
                self._told_down = False
                deliver(
                    tuple(self._users),
                    wire.notice("the other servers are reachable again"),
                    None,
                )

        d: Deferred[None] = Deferred()
        d.addCallback(next_batch)
        d.addCallback(prune)
        d.addBoth(finished)
        d.callback(None)
        return d

    def _resync_again(self) -> None:
        self._retry = None
        if self.link.up and self._resyncing and not self._closing:
            self._resync(None)

    def _announce_gone(self, gone: list[list[Any]]) -> None:
        """Tell the others that these users, C{[nickname, rooms]}, are gone."""
        for nickname, rooms in gone:
            if rooms:
                line = wire.left(nickname, "connection lost")
                event = {"o": self.node, "r": list(rooms), "d": _text(line)}
                self._quietly(self._publish(event), "announcing a leave")

    def _announce_left(self, pruned: list[list[Any]], reaped: bool) -> None:
        """Tell the others of the users who left while Redis was away.

        Those whose records Redis still had were just removed (C{pruned});
        if Redis lost its data, the node remembers the others.  If the node
        was taken for dead, their leaves were told then.
        """
        lost = {
            nickname: (rooms, wire.left(nickname, CONNECTION_LOST))
            for nickname, rooms in pruned
        }
        if not reaped:
            for nickname, rooms, line in self._left_while_down.values():
                told = lost.get(nickname, (rooms, line))[0]
                lost[nickname] = (told, line)  # with the reason they left for
        for rooms, line in lost.values():
            if rooms:
                d = self._call(
                    "told_left",
                    self.node,
                    self._amax,
                    json.dumps(list(rooms)),
                    _text(line),
                )
                self._quietly(d, "announcing a leave")

    def _reclaimed(self, reply: list[Any], client: IChatClient) -> None:
        if int(reply[0]) == 1:
            dead, told = reply[1], reply[2]
            if dead:  # the nickname was left behind by a node that died
                self._announce_gone([[dead, told]])
            return
        user = self._users.get(client)
        if user is None:
            return
        log.info(
            "cluster: {nickname} was taken on another node while this one was "
            "cut off; its user here is disconnected",
            nickname=shown(user.nickname),
        )
        # The nickname is in the detail: the counts of why connections
        # ended see only the kind.
        client.disconnect(
            CloseReason(
                CloseKind.NICKNAME_TAKEN,
                detail=f"another server gave {user.nickname} to someone else "
                "while the servers were cut off; reconnect and choose a nickname",
            )
        )

    # Events from the other nodes -----------------------------------------

    def _event(self, origin: str, message: str) -> None:
        if origin == self.node:
            if self._arriving and '"ho"' in message:
                self._own_hand_over(message)
            return  # this node acted on it already
        try:
            event = checked(message)
        except Malformed as malformed:
            self._malformed.skipped(malformed)
            return
        self._on_event(event)

    def _on_event(self, event: dict[str, Any]) -> None:
        """Act on C{event}, as L{checked} returns it (its lines as bytes)."""
        if self._stopping:
            return
        if "ho" in event:
            self._moved(event["ho"], event.get("n"))
            return
        if "handed" in event:
            arrival = self._arriving.get(event["handed"])
            if arrival is not None and not arrival.handed.called:
                arrival.handed.callback(None)
            return
        if "ban" in event:
            if self.on_ban is not None:
                self.on_ban(*event["ban"])
            return
        if "unban" in event:
            if self.on_unban is not None:
                self.on_unban(event["unban"])
            return
        data = event.get("d")
        target = event.get("to")
        if target is not None:
            client = self._by_fold.get(target)
            if client is None:
                return
            if "k" in event:
                client.disconnect(event["k"])  # a CloseReason (events.py)
            elif data is not None:
                client.deliver(data)
            return
        if data is None:
            return
        if event.get("a"):
            deliver(tuple(self._users), data, None)
            return
        if event.get("s") in self._by_fold:
            # About a user of this node, from another that had it wrong (it
            # took this node for dead), or from before the user came here.
            return
        rooms = [
            self._rooms[name] for name in event.get("r", ()) if name in self._rooms
        ]
        if "h" in event and self._history:  # a line said: kept for newcomers
            for room in rooms:
                room.history.append(Scrollback(event["h"], data))
        deliver(in_rooms(rooms), data, None)

    # Resuming on another node -------------------------------------------

    def share_ban(
        self, network: str, expires: float | None, reason: str, by: str
    ) -> None:
        """Tell the other nodes of a ban made here."""
        event = {"o": self.node, "ban": [network, expires, reason[:REASON_MAX], by]}
        self._quietly(self._publish(event), "sharing a ban")

    def share_unban(self, network: str) -> None:
        """Tell the other nodes of a ban lifted here."""
        self._quietly(self._publish({"o": self.node, "unban": network}), "an unban")

    def store_token(self, nickname: str, token_digest: str) -> None:
        """Keep the digest of C{nickname}'s resume token where nodes see it.

        Only for a new user's first token: a resume replaces the token in
        the same script that checks it.  Kept here too, and claimed again
        after an outage with the user.
        """
        key = fold(nickname)
        self._tokens[key] = token_digest
        if self.up:
            d = self._command("set", self._prefix + "token:" + key, token_digest)
            self._quietly(d, "storing a resume token")
            # A new token: the lines kept for the last drop have been seen.
            d = self._command(
                "delete",
                self._missed_keys(key),
            )
            self._quietly(d, "forgetting missed lines")

    def _missed_keys(self, key: str) -> list[str]:
        """The Redis keys of the lines kept for the held session of C{key}."""
        return [self._prefix + "missed:" + key, self._prefix + "missed-bytes:" + key]

    def keep_for(self, nickname: str, data: bytes, limit: int) -> None:
        """Keep a line for a held session, for a resume on another node.

        What a held session is sent in one reactor iteration goes to Redis
        in one call at its end.
        """
        if not self.up:
            return
        key = fold(nickname)
        kept = self._keeping.get(key)
        if kept is not None:
            kept[0].append(data)
            return
        self._keeping[key] = ([data], limit)
        if self._keep_call is None:
            self._keep_call = self._clock.callLater(0, self._keep_now)

    def _keep_now(self) -> None:
        self._keep_call = None
        keeping, self._keeping = self._keeping, {}
        for key, (chunks, limit) in keeping.items():
            d = self._call(
                "keep", key, _chunks(chunks), limit, self._missed_bytes, _KEEP_TTL
            )
            self._quietly(d, "keeping lines for a held session")

    def watch_moves(self, moved: Callable[[IChatClient], None]) -> None:
        """See L{ISharedSessions.watch_moves}."""
        self.on_moved = moved

    def watch_bans(
        self,
        banned: Callable[[str, float | None, str, str], None],
        unbanned: Callable[[str], None],
    ) -> None:
        """See L{ISharedBans.watch_bans}."""
        self.on_ban, self.on_unban = banned, unbanned

    def resume(
        self,
        client: IChatClient,
        nickname: str,
        token_digest: str,
        new_digest: str,
    ) -> Deferred[tuple[str, str, bytes, int] | bool | None]:
        """Resume C{nickname}'s session for C{client}, if the token is right.

        The token is checked and replaced by C{new_digest} in one script: it
        works once in the whole cluster.  Fires with True if the session is
        this node's (the caller resumes it here), with (nickname, room,
        missed lines, their count) once it has moved here from another node,
        or with None if there is no such session or the token is wrong.

        A session moves at a point of the event stream (the hand-over event,
        C{ho}): its old node keeps what it is sent before that point, and
        hands it over (C{handed}) after it; this node collects what comes
        after.  The missed lines are both, with no gap and no line twice.
        """
        key = fold(nickname)
        if not self.up:  # the session may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        if key in self._arriving:
            return succeed(None)  # another resume of it is under way here
        arrival = self._arriving[key] = _Arrival(client, self._missed_bytes)
        back = _text(wire.back(nickname))
        d = self._call(
            "resume", self.node, key, token_digest, new_digest, self._amax, back
        )

        def answered(reply: list[Any] | None) -> Any:
            if not reply:
                return None
            self._tokens[key] = new_digest
            if not int(reply[1]):
                # This node's session, resumed here: what was kept in Redis
                # for it has been seen (after the calls still under way).
                self._keeping.pop(key, None)
                d = self._command(
                    "delete",
                    self._missed_keys(key),
                )
                self._quietly(d, "forgetting missed lines")
                return True
            raw, _, told, _, wait = reply
            record = json.loads(raw)
            if not int(wait):  # its node is dead: what it stored is all there is
                arrival.handed.callback(None)
            waits = [
                _at_most(arrival.installed, self._clock),
                _at_most(arrival.handed, self._clock),
            ]
            d = DeferredList(waits)
            d.addCallback(lambda _: self._call("take_missed", key))
            d.addErrback(lambda failure: [])  # Redis gone meanwhile: none
            return d.addCallback(self._arrived, key, arrival, record, told)

        def done(result: object) -> object:
            if self._arriving.get(key) is arrival:
                del self._arriving[key]
            return result

        return d.addCallback(answered).addBoth(done)

    def _own_hand_over(self, message: str) -> None:
        """Act on the hand-over event this node made: the session starts here."""
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
        """Index the arriving session, its lines collected until it is in.

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
        self._index.add(collector, str(nickname))
        for name in names:
            self._index.enter(collector, name)
        arrival.installed.callback(None)

    def _arrived(
        self,
        missed: list[str],
        key: str,
        arrival: _Arrival,
        record: dict[str, Any],
        told: list[str],
    ) -> tuple[str, str, bytes, int]:
        """The session has moved here: C{arrival}'s client takes it."""
        collector, client = arrival.collector, arrival.client
        self._install(key, arrival, record.get("nick"), record.get("rooms"))
        user = self._index.swap(collector, client)
        away = record.get("away")
        user.away = _topic(away) if away is not None else None
        rooms = [self._rooms[name] for name in told if name in self._rooms]
        deliver(in_rooms(rooms), wire.back(user.nickname), client)
        data = b"".join(_lines_or_nothing(chunk) for chunk in missed)
        data += b"".join(collector.received)
        if collector.kicked is not None:
            self._clock.callLater(0, client.disconnect, collector.kicked)
        return user.nickname, user.rooms[-1], data, data.count(b"\n")

    def _moved(self, key: str, old_node: str | None) -> None:
        """The user C{key} resumed on another node: forget them here.

        If this node had them, it hands over what it kept for them; if it
        should have had them, it says it has nothing more.
        """
        client = self._by_fold.get(key)
        if client is None or client in (a.collector for a in self._arriving.values()):
            if old_node == self.node:
                self._hand_over(key, None)
            return
        user = self._index.remove(client)
        assert user is not None  # indexed by its key
        self._tokens.pop(key, None)
        for name in user.rooms:
            self._index.leave(client, name)
        log.info(
            "cluster: {nickname} resumed the session on another node",
            nickname=shown(user.nickname),
        )
        missed = getattr(client, "missed", None)  # a held session's lines
        self._hand_over(
            key,
            _last_lines(missed()[0], self._missed_bytes) if missed is not None else [],
        )
        if self.on_moved is not None:
            self.on_moved(client)

    def _hand_over(self, key: str, chunks: list[bytes] | None) -> None:
        """Give the new node of C{key} the lines kept for them here."""
        self._keeping.pop(key, None)  # in chunks already, or gone with the user
        d = self._call(
            "handed",
            self.node,
            key,
            "" if chunks is None else _chunks([c for c in chunks if c]),
            _MISSED_LINES,
            self._missed_bytes,
            _KEEP_TTL,
        )
        self._quietly(d, "handing over a resumed session's lines")

    # IRegistry -----------------------------------------------------------

    def register(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.register}."""
        key = fold(nickname)
        if key in self._by_fold:
            return fail(NicknameInUse(nickname))
        if not self.up:
            return succeed(self._register_here(client, nickname))
        host = client.host or ""
        d = self._call(
            "register",
            self.node,
            key,
            nickname,
            host,
            LOBBY,
            self._amax,
            _text(wire.joined(nickname, LOBBY)),
        )

        def claimed(reply: list[Any]) -> Deferred[str]:
            if int(reply[0]) != 1:
                raise NicknameInUse(nickname)
            waited = self.link.caught_up(reply[2])
            return waited.addCallback(lambda _: enter(int(reply[1])))

        def enter(size: int) -> str:
            if key in self._by_fold:  # taken here while Redis answered
                self._quietly(
                    self._call("unregister", self.node, key, self._amax, LOBBY, ""),
                    "a release",
                )
                raise NicknameInUse(nickname)
            self._index.add(client, nickname)
            self._enter_local(client, LOBBY, announce=self._index.announces(size))
            return nickname

        def unreachable(failure: Failure) -> str:
            _trap_unreachable(failure)
            return self._register_here(client, nickname)

        return d.addCallbacks(claimed, unreachable)

    def _register_here(self, client: IChatClient, nickname: str) -> str:
        """Register C{client} on this node alone; claimed in Redis later."""
        key = fold(nickname)
        if key in self._by_fold:
            raise NicknameInUse(nickname)
        self._joined_while_down.add(key)
        size = len(self._rooms[LOBBY]) + 1
        self._index.add(client, nickname)
        self._enter_local(client, LOBBY, announce=self._index.announces(size))
        return nickname

    def rename(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.rename}."""
        user = self._users[client]
        old, key = user.nickname, fold(nickname)
        holder = self._by_fold.get(key)
        if holder is not None and holder is not client:
            return fail(NicknameInUse(nickname))
        if not self.up:
            # The new nickname could not be claimed, nor the old one freed.
            return fail(ChatError(RENAME_CUT_OFF))
        d = self._call(
            "rename",
            self.node,
            fold(old),
            key,
            nickname,
            _text(wire.renamed(old, nickname)),
        )

        def renamed(result: int) -> str:
            if int(result) == 0:
                raise NicknameInUse(nickname)
            if client in self._users:
                self._rename_local(client, user, nickname)
            return nickname

        return d.addCallbacks(renamed, _cut_off(RENAME_CUT_OFF))

    def unregister(self, client: IChatClient, reason: CloseReason) -> None:
        """See L{IRegistry.unregister}."""
        user = self._index.remove(client)
        if user is None:
            return
        key = fold(user.nickname)
        self._tokens.pop(key, None)
        line = wire.left(user.nickname, reason)
        rooms = user.rooms
        for name in rooms:
            self._rooms[name].discard(client)
        before = {name: self._rooms[name].recipients for name in rooms}

        def told(announced: Iterable[str]) -> None:
            if not self._stopping:
                neighbours = dict.fromkeys(
                    c
                    for name in announced
                    for c in self._index.still_in(name, before[name])
                )
                deliver(neighbours, line, client)
            for name in rooms:
                self._index.forget_if_empty(name)

        def here() -> None:
            """Told here by the local room sizes; the others later, if at all."""
            if key in self._joined_while_down:
                self._joined_while_down.discard(key)  # nobody else saw them
            else:
                self._left_while_down[key] = (user.nickname, rooms, line)
            told(name for name in rooms if self._index.announces(len(before[name]) + 1))

        if self.up:
            d = self._call("unregister", self.node, key, self._amax, LOBBY, _text(line))

            def unanswered(failure: Failure) -> None:
                _trap_unreachable(failure)
                here()

            d.addCallbacks(told, unanswered)
            self._quietly(d, "a leave")
        elif self.link.up:
            # Claiming the users again: this one must not stay, and its
            # leave goes out with the script.
            d = self._call("unregister", self.node, key, self._amax, LOBBY, _text(line))
            self._quietly(d, "a leave")
            told(name for name in rooms if self._index.announces(len(before[name]) + 1))
        else:
            here()

    def join(self, client: IChatClient, room: str) -> Deferred[list[Scrollback]]:
        """See L{IRegistry.join}."""
        user = self._users[client]
        if not self.up:
            if room not in user.rooms:
                size = len(self._rooms[room]) + 1 if room in self._rooms else 1
                self._enter_local(client, room, self._index.announces(size))
            return succeed(list(self._rooms[room].history))
        entered = room not in user.rooms
        before = self._rooms[room].recipients if room in self._rooms else ()
        if entered:
            # At once, so that what the user does next reaches the room; the
            # others here are told once Redis says how big the room is.
            self._enter_local(client, room, announce=False)
        d = self._call(
            "join",
            self.node,
            fold(user.nickname),
            room,
            self._amax,
            _text(wire.joined(user.nickname, room)),
            self._history,
        )

        def joined(reply: list[Any]) -> list[Scrollback]:
            size = int(reply[0])
            if entered and self._index.announces(size) and size > 0:
                line = wire.joined(user.nickname, room)
                deliver(self._index.still_in(room, before), line, client)
            if size < 0:
                return list(self._rooms[room].history) if room in self._rooms else []
            return _scrollback(reversed(reply[1]))

        def here(failure: Failure) -> list[Scrollback]:
            # Redis did not answer: joined on this node, claimed later.
            _trap_unreachable(failure)
            size = len(before) + 1
            return joined([size if entered else -1, []])

        return d.addCallbacks(joined, here)

    def part(self, client: IChatClient, room: str, reason: str) -> None:
        """See L{IRegistry.part}."""
        user = self._users[client]
        if room not in user.rooms:
            return
        size = len(self._rooms[room])
        user.rooms = tuple(name for name in user.rooms if name != room)
        self._rooms[room].discard(client)
        line = wire.parted(user.nickname, room, reason)
        if not self.up:
            if self._index.announces(size):
                deliver(self._rooms[room].recipients, line, client)
            self._index.forget_if_empty(room)
            parted = self._parted_while_down.setdefault(fold(user.nickname), {})
            parted[room] = _text(line)
            return
        d = self._call(
            "part", self.node, fold(user.nickname), room, self._amax, LOBBY, _text(line)
        )

        before = self._rooms[room].recipients

        def told(announced: int) -> None:
            if int(announced):
                deliver(self._index.still_in(room, before), line, client)
            self._index.forget_if_empty(room)

        def here(failure: Failure) -> None:
            _trap_unreachable(failure)
            parted = self._parted_while_down.setdefault(fold(user.nickname), {})
            parted[room] = _text(line)
            told(self._index.announces(size))

        d.addCallbacks(told, here)
        self._quietly(d, "a part")

    def broadcast(self, room: str, data: bytes, sender: IChatClient | None) -> None:
        """See L{IRegistry.broadcast}."""
        deliver(self._rooms[room].recipients, data, sender)
        if self.up:
            event: dict[str, object] = {"o": self.node, "r": [room], "d": _text(data)}
            if sender is not None and sender in self._users:
                event["s"] = fold(self._users[sender].nickname)
            self._quietly(self._publish(event), "a broadcast")

    def say(self, room: str, data: bytes, sender: IChatClient) -> None:
        """See L{IRegistry.say}."""
        found = self._rooms[room]
        now = self._clock.seconds()
        if self._history:
            found.history.append(Scrollback(now, data))
        recipients = found.recipients
        self.said += 1
        self.delivered += len(recipients) - (sender in found)
        deliver(recipients, data, sender)
        if self.up:
            key = fold(self._users[sender].nickname) if sender in self._users else ""
            self._quietly(
                self._call(
                    "say", self.node, room, key, _text(data), repr(now), self._history
                ),
                "a line for the other nodes",
            )

    def send_private(self, nickname: str, data: bytes) -> Deferred[UserInfo]:
        """See L{IRegistry.send_private}."""
        return self._to_user(nickname, {"d": _text(data)}, lambda c: c.deliver(data))

    def find(self, nickname: str) -> Deferred[UserInfo]:
        """See L{IRegistry.find}."""
        client = self._by_fold.get(fold(nickname))
        if client is not None:
            return succeed(self._users[client].info())
        if not self.up:  # they may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        d = self._command("hget", self._prefix + "users", fold(nickname))

        def found(raw: str | None) -> UserInfo:
            if not raw:
                raise NoSuchNickname(nickname)
            return _info(raw)

        return d.addCallbacks(found, _cut_off(CUT_OFF))

    def kick(self, nickname: str, reason: CloseReason) -> Deferred[UserInfo]:
        """See L{IRegistry.kick}."""
        return self._to_user(
            nickname, {"k": reason_event(reason)}, lambda c: c.disconnect(reason)
        )

    def _to_user(
        self, nickname: str, event: dict[str, str], act: Callable[[IChatClient], None]
    ) -> Deferred[UserInfo]:
        key = fold(nickname)
        client = self._by_fold.get(key)
        if client is not None:
            info = self._users[client].info()
            act(client)
            return succeed(info)
        if not self.up:  # they may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        d = self._call("to_user", self.node, key, json.dumps(event, ensure_ascii=False))

        def found(raw: str | None) -> UserInfo:
            if not raw:
                raise NoSuchNickname(nickname)
            return _info(raw)

        return d.addCallbacks(found, _cut_off(CUT_OFF))

    def replace(self, old: IChatClient, new: IChatClient, data: bytes | None) -> None:
        """See L{IRegistry.replace}."""
        user = self._index.swap(old, new)
        if data is not None:
            deliver(self._index.neighbours(user, quiet=True), data, new)
            rooms = [
                name
                for name in user.rooms
                if self._index.announces(len(self._rooms[name]))
            ]
            if self.up and rooms:
                event = {
                    "o": self.node,
                    "r": rooms,
                    "s": fold(user.nickname),
                    "d": _text(data),
                }
                self._quietly(self._publish(event), "a notice")

    def announce(self, data: bytes) -> None:
        """See L{IRegistry.announce}."""
        deliver(tuple(self._users), data, None)
        if self.up:
            self._quietly(
                self._publish({"o": self.node, "a": 1, "d": _text(data)}), "a notice"
            )

    def count(self) -> Deferred[int]:
        """See L{IRegistry.count}."""
        if not self.up:
            return succeed(len(self._users))
        d = self._command("hlen", self._prefix + "users")
        return d.addCallbacks(int, lambda failure: len(self._users))

    def _command(self, name: str, *args: object) -> Deferred[Any]:
        return self._track(self.link.command(name, *args))

    def users(self, room: str | None = None) -> Deferred[list[UserInfo]]:
        """See L{IRegistry.users}.

        Shared (see L{_shared}): however many ask, Redis sends the list once
        a second at most.
        """
        if not self.up:
            return succeed(self._index.user_infos(room))

        def fetch() -> Deferred[list[UserInfo]]:
            d = self._call("users", room or "")

            def infos(raws: list[str]) -> list[UserInfo]:
                found = [info for info in map(_maybe_info, raws) if info is not None]
                return sorted(found, key=lambda info: fold(info.nickname))

            return d.addCallbacks(infos, lambda failure: self._index.user_infos(room))

        return self._shared(room or "", fetch)

    def _shared(self, name: str, fetch: Callable[[], Deferred[list[Any]]]) -> Any:
        """The list C{fetch()} fires with, fetched once for many askers.

        Those who ask while it is under way, and for L{LIST_CACHE} seconds
        after, get the same answer: a flood of C{/users}, C{/who} or
        C{/rooms} costs Redis one answer a second, however many ask.  A
        change this node makes to the users or rooms forgets the answers
        (L{_call}); the other nodes' changes show within the second.
        """
        now = self._clock.seconds()
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
                self._lists[name] = (self._clock.seconds(), value, None)
            elif self._lists.get(name, (0, [], None))[2] is waiters:
                del self._lists[name]
            for d in waiters:
                d.callback(list(value))
            return value

        return fetch().addCallback(done)

    def local_users(self) -> list[UserInfo]:
        """The users of this node (for metrics, which must not wait on Redis)."""
        return self._index.user_infos(None)

    def local_sizes(self) -> tuple[int, int]:
        """See L{IRegistry.local_sizes}: this node's users and their rooms."""
        return len(self._users), len(self._rooms)

    def local_rooms(self) -> list[RoomInfo]:
        """The rooms this node's users are in, with this node's members."""
        return self._index.room_infos()

    def rooms(self) -> Deferred[list[RoomInfo]]:
        """See L{IRegistry.rooms}; shared like L{users}."""
        local = self.local_rooms()
        if not self.up:
            return succeed(local)

        def fetch() -> Deferred[list[RoomInfo]]:
            d = self._call("rooms")

            def infos(rows: list[list[Any]]) -> list[RoomInfo]:
                found = {
                    room.name: room
                    for room in map(_room_info, rows)
                    if room is not None
                }
                found.setdefault(LOBBY, RoomInfo(LOBBY, 0, ""))
                return [found[name] for name in sorted(found)]

            return d.addCallbacks(infos, lambda failure: local)

        return self._shared("/rooms", fetch)

    def topic(self, room: str) -> Deferred[str]:
        """See L{IRegistry.topic}."""
        found = self._rooms.get(room)
        local = found.topic if found is not None else ""
        if not self.up:
            return succeed(local)
        d = self._command("get", self._prefix + "topic:" + room)
        return d.addCallbacks(_topic, lambda failure: local)

    def set_topic(self, client: IChatClient, room: str, topic: str) -> None:
        """See L{IRegistry.set_topic}."""
        self._rooms[room].topic = topic
        nickname = self._users[client].nickname
        line = wire.topic_set(nickname, room, topic)
        deliver(self._rooms[room].recipients, line, None)
        if self.up:
            self._quietly(
                self._call("topic", self.node, room, topic, _text(line)), "a topic"
            )

    def set_away(self, client: IChatClient, message: str | None) -> None:
        """See L{IRegistry.set_away}."""
        user = self._users[client]
        user.away = message
        if self.up:
            self._quietly(
                self._call(
                    "update",
                    self.node,
                    fold(user.nickname),
                    "away",
                    json.dumps(message),
                ),
                "an away message",
            )

    def stop(self) -> None:
        """See L{IRegistry.stop}."""
        self._stopping = True

    # The local index -----------------------------------------------------

    def _enter_local(self, client: IChatClient, name: str, announce: bool) -> None:
        room = self._index.enter(client, name)
        if announce:
            nickname = self._users[client].nickname
            deliver(room.recipients, wire.joined(nickname, name), client)

    def _rename_local(self, client: IChatClient, user: User, nickname: str) -> None:
        old = self._index.rename(client, nickname)
        token = self._tokens.pop(fold(old), None)  # renamed in Redis too
        if token is not None:
            self._tokens[fold(nickname)] = token
        deliver(self._index.neighbours(user), wire.renamed(old, nickname), None)


#: A leave for connection lost, before and after the nickname: the reaping
#: script makes the lines of the users it removes.
_LOST_AROUND = wire.left("\0", "connection lost").decode("utf-8").split("\0")

#: What a user is told when Redis did not answer for something only it knows.
CUT_OFF = "the other servers did not answer; try again in a moment"
RENAME_CUT_OFF = (
    "nicknames cannot change while the other servers are unreachable; "
    "try again in a moment"
)


def _cut_off(message: str) -> Callable[[Failure], object]:
    """An errback: Redis did not answer, so the user is told C{message}."""

    def errback(failure: Failure) -> object:
        _trap_unreachable(failure)
        raise ChatError(message)

    return errback


def _trap_unreachable(failure: Failure) -> None:
    """Let through a failure that means Redis did not answer; raise others.

    Redis's own errors (a script that failed) are bugs, not outages.
    """
    import txredisapi

    if failure.check(txredisapi.ResponseError):
        failure.raiseException()


#: Seconds an answer of /users, /who or /rooms is shared (see
#: L{ClusterRegistry._shared}).
LIST_CACHE = 1.0

#: Lists shared at most (one per room asked about): past it, all are forgotten.
_LISTS_MAX = 64

#: The scripts that change no user or room: the lists stay good.
_UNCHANGING = frozenset(
    {"users", "rooms", "say", "keep", "heartbeat", "to_user", "take_missed", "handed"}
)

#: The most bytes of missed lines kept in Redis for one held session (and
#: handed over to the node it resumes on), unless told otherwise (the
#: server passes --resume-buffer-bytes): 64 KiB, a few hundred lines.
MISSED_BYTES = 64 * 1024

#: The most chunks handed over (a held session keeps --resume-buffer lines).
_MISSED_LINES = 10_000

#: Seconds the lines kept for a held session stay in Redis, unless taken.
_KEEP_TTL = 3600


class _Collector:
    """Stands for a session arriving from another node, until it is in."""

    def __init__(self, host: str | None, max_bytes: int) -> None:
        self.host = host
        self._max_bytes = max_bytes
        self.received: deque[bytes] = deque()
        self._bytes = 0
        self.kicked: CloseReason | None = None

    def deliver(self, data: bytes) -> None:
        """Keep C{data}, and no more than C{max_bytes} in all."""
        self.received.append(data)
        self._bytes += len(data)
        while self._bytes > self._max_bytes and len(self.received) > 1:
            self._bytes -= len(self.received.popleft())

    def disconnect(self, reason: CloseReason) -> None:
        self.kicked = reason


class _Arrival:
    """A session being resumed here from another node."""

    def __init__(self, client: IChatClient, max_bytes: int) -> None:
        self.client = client
        self.collector = _Collector(getattr(client, "host", None), max_bytes)
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


def _chunks(chunks: list[bytes]) -> str:
    """Lines for Redis, as a JSON list of text (cut to what an event may carry)."""
    return json.dumps([_text(c) for c in chunks], ensure_ascii=False)


def _last_lines(data: bytes, max_bytes: int) -> list[bytes]:
    """The last lines of C{data} that fit in C{max_bytes}, one by one."""
    lines = [line + b"\r\n" for line in data.split(b"\r\n")[:-1]]
    kept, size = [], 0
    for line in reversed(lines):
        size += len(line)
        if size > max_bytes:
            break
        kept.append(line)
    kept.reverse()
    return kept


def _lines_or_nothing(chunk: object) -> bytes:
    try:
        return clean_lines(chunk, "missed lines")
    except Malformed:
        return b""


def _text(data: bytes) -> str:
    """Wire bytes as text for JSON, cut to what an event may carry.

    They are UTF-8, sanitised on the way in; L{events.TEXT_MAX} bytes at most.
    """
    text = data.decode("utf-8", "replace")
    return cut(text) if len(data) > TEXT_MAX else text


# What the nodes read from Redis is checked and sanitised as events are
# (see L{events}): a bad writer to Redis cannot reach a terminal through it.


def _info(raw: str) -> UserInfo:
    """A user record from Redis; L{Malformed} if it is not one."""
    try:
        user = json.loads(raw)
    except ValueError:
        raise Malformed("user", "not JSON") from None
    if not isinstance(user, dict):
        raise Malformed("user", "not an object")
    away, host = user.get("away"), user.get("host")
    return UserInfo(
        clean_nickname(user.get("nick"), "user"),
        None if away is None else clean_text(away, "user", 8192),
        clean_text(host, "user") or None if host is not None else None,
    )


def _maybe_info(raw: str) -> UserInfo | None:
    try:
        return _info(raw)
    except Malformed:
        return None


def _scrollback(raws: Iterable[str]) -> list[Scrollback]:
    """A room's scrollback as Redis keeps it, the malformed lines skipped."""
    lines = []
    for raw in raws:
        try:
            when, data = json.loads(raw)
            lines.append(Scrollback(float(when), clean_lines(data, "scrollback")))
        except (ValueError, TypeError, Malformed):
            continue
    return lines


def _room_info(row: list[Any]) -> RoomInfo | None:
    try:
        name, members, topic = row
        if check_room(str(name)) != name:
            return None
        return RoomInfo(name, int(members), _topic(topic))
    except (ValueError, TypeError, InvalidName):
        return None


def _topic(topic: object) -> str:
    return sanitise(topic) if isinstance(topic, str) else ""
