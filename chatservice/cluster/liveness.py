"""A node's liveness: its heartbeat, the reaping of dead nodes, outages.

Each node renews a heartbeat in Redis, and reaps the nodes whose heartbeat
expired (their users are gone, and told so once).  When Redis is out of
reach the node serves its own users alone, tells them so once, and once
Redis is back claims its users again, telling the others who came and went
meanwhile (L{Liveness.resync}).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from .. import events
from ..interfaces import IChatClient
from ..logs import gate, shown
from ..reasons import CONNECTION_LOST, CloseKind, CloseReason
from ..rooms import LOBBY, deliver
from ..text import fold
from .events import Malformed, Message, ToRooms, clean_rooms, clean_text, dumped
from .link import CALL_TIMEOUT, RedisLink
from .node import Node, quietly

log = Logger(observer=gate)

#: Why the users of a node that stopped have left.
_LOST = "connection lost"


class Liveness:
    """Keeps a node alive in the cluster, and its users claimed.

    @param node_ttl: seconds after which a silent node's users are gone.
    @param act: acts on a message as if another node had sent it.
    """

    def __init__(
        self, node: Node, node_ttl: float, act: Callable[[Message], None]
    ) -> None:
        self._node = node
        self._node_ttl = node_ttl
        self._act = act
        self._told_down = False
        #: The check that Redis answered soon after the start.
        self._first_check: IDelayedCall | None = None
        #: The next try of claiming the users again, after one failed.
        self._retry: IDelayedCall | None = None
        #: Whether the last heartbeat found this node taken for dead.
        self._reaped = False
        self.heartbeat = LoopingCall(self._beat)
        self.heartbeat.clock = node.clock

    def start(self) -> None:
        """Connect to Redis; the node serves its own users until it is up."""
        self._node.link.start()
        self._first_check = self._node.clock.callLater(CALL_TIMEOUT, self._not_yet_up)

    def _not_yet_up(self) -> None:
        self._first_check = None
        if not self._node.link.up:
            log.warn(
                "cluster {cluster}: cannot reach Redis at {host}:{port} yet; "
                "serving this node's users alone until it can",
                cluster=self._node.cluster,
                host=self._node.link.host,
                port=self._node.link.port,
            )

    def stop(self) -> None:
        """The node leaves: no more heartbeats, nor tries."""
        if self.heartbeat.running:
            self.heartbeat.stop()
        for call in (self._first_check, self._retry):
            if call is not None and call.active():
                call.cancel()

    def retire(self) -> Deferred[Any] | None:
        """Take this node out of the cluster, if Redis can be reached.

        Users still here (a registration under way at the stop) are gone:
        the others are told.
        """
        if not self._node.link.up:
            return None
        retired = self._node.link.call(
            "retire", self._node.prefix, self._node.name, self._node.amax, LOBBY
        )
        return retired.addCallback(self._announce_gone)

    def link_up(self) -> None:
        """Connected to Redis: claim this node's users, beat the heartbeat."""
        if self._node.closing:
            return
        log.info("cluster {cluster}: connected to Redis", cluster=self._node.cluster)
        self._node.resyncing = True
        self._beat().addBoth(self.resync)
        if not self.heartbeat.running:
            self.heartbeat.start(self._node_ttl / 4, now=False)

    def link_down(self) -> None:
        """Redis is out of reach: this node's users are told, once."""
        log.warn(
            "cluster {cluster}: Redis is out of reach; serving this node's "
            "users alone until it is back",
            cluster=self._node.cluster,
        )
        if self._node.index.users and not self._node.stopping:
            self._told_down = True
            deliver(
                tuple(self._node.index.users),
                events.notice(
                    "the other servers are unreachable: you see only the users "
                    "of this one until they are back"
                ),
                None,
            )

    def _beat(self) -> Deferred[Any]:
        """Renew the heartbeat, and reap the nodes that stopped renewing."""
        d = self._node.link.call(
            # Renewed every quarter of --node-ttl, it lasts three quarters:
            # a node is reaped within --node-ttl of its last heartbeat, by
            # another that reaps as often, and may miss two heartbeats.
            "heartbeat",
            self._node.prefix,
            self._node.name,
            int(self._node_ttl * 750),
        )

        def reap(reaped: int) -> Deferred[Any]:
            self._reaped = bool(int(reaped))
            if self._reaped and not self._node.resyncing and self._node.link.up:
                # The others took this node for dead (a pause longer than
                # --node-ttl): its users are gone from Redis; claim them.
                log.warn(
                    "cluster {cluster}: this node was taken for dead; claiming "
                    "its users again",
                    cluster=self._node.cluster,
                )
                self._node.resyncing = True
                self.resync(None)
            # The leave of each user reaped: the script puts in the nickname.
            return self._node.link.call(
                "reap",
                self._node.prefix,
                self._node.amax,
                LOBBY,
                self._node.name,
                dumped(events.left("", _LOST)),
            )

        d.addCallback(reap).addCallback(self._announce_reaped)
        quietly(d, "the heartbeat")
        return d

    def _announce_reaped(self, gone: list[list[Any]]) -> None:
        for _key, nickname, rooms in gone:
            if not rooms:
                continue
            log.info(
                "cluster: {nickname}, of a node that stopped, has gone",
                nickname=shown(nickname),
            )
            # The script told the other nodes; this one tells its users,
            # what Redis said checked as if another node had sent it.
            try:
                leave = events.left(clean_text(nickname, "reaped", 64), _LOST)
                self._act(ToRooms(clean_rooms(rooms, "reaped"), leave))
            except Malformed:
                continue

    def resync(self, _: object) -> Deferred[None]:
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
            batch = [client for client in self._node.index.users if client not in done]
            if not batch:
                return None
            calls = []
            for client in batch:
                done.add(client)
                user = self._node.index.users[client]
                key = fold(user.nickname)
                record = {
                    "nick": user.nickname,
                    "node": self._node.name,
                    "host": user.host or "",
                    "away": user.away,
                    "rooms": list(user.rooms),
                }
                joined = {
                    room: dumped(events.joined(user.nickname, room))
                    for room in user.rooms
                }
                announce = reaped or key in self._node.joined_while_down
                d = self._node.call(
                    "reclaim",
                    self._node.name,
                    key,
                    json.dumps(record),
                    self._node.amax,
                    "1" if announce else "0",
                    json.dumps(joined),
                    json.dumps(self._node.parted_while_down.get(key, {})),
                    LOBBY,
                    self._node.tokens.get(key, ""),
                )
                d.addCallbacks(self._reclaimed, failures.append, callbackArgs=(client,))
                calls.append(d)
            return DeferredList(calls).addCallback(next_batch)

        def prune(_: object) -> Deferred[None]:
            if failures:
                failures[0].raiseException()
            keep = json.dumps(
                [fold(user.nickname) for user in self._node.index.users.values()]
            )
            d = self._node.call("prune", self._node.name, keep, self._node.amax, LOBBY)
            return d.addCallback(self._announce_left, reaped)

        def finished(result: object) -> None:
            if isinstance(result, Failure):
                log.warn(
                    "cluster: claiming this node's users again failed ({error}); "
                    "trying again",
                    error=result.getErrorMessage() or result.type.__name__,
                )
                self._node.resyncing = self._node.link.up
                if self._node.link.up and not self._node.closing:
                    if self._retry is not None and self._retry.active():
                        self._retry.cancel()
                    self._retry = self._node.clock.callLater(
                        RedisLink.RETRY, self._resync_again
                    )
                return
            self._node.resyncing = False
            log.info(
                "cluster {cluster}: in touch with the other nodes; {count} user(s) "
                "of this node claimed",
                cluster=self._node.cluster,
                count=len(self._node.index.users),
            )
            self._node.joined_while_down.clear()
            self._node.left_while_down.clear()
            self._node.parted_while_down.clear()
            if reaped:
                # Announced once: the next heartbeat must not see it again.
                quietly(
                    self._node.command(
                        "delete", self._node.prefix + "reaped:" + self._node.name
                    ),
                    "a heartbeat",
                )
            if self._told_down:
                self._told_down = False
                deliver(
                    tuple(self._node.index.users),
                    events.notice("the other servers are reachable again"),
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
        if self._node.link.up and self._node.resyncing and not self._node.closing:
            self.resync(None)

    def _announce_gone(self, gone: list[list[Any]]) -> None:
        """Tell the others that these users, C{[nickname, rooms]}, are gone."""
        for nickname, rooms in gone:
            if rooms:
                leave = events.left(nickname, _LOST)
                self._node.publish(ToRooms(list(rooms), leave), "announcing a leave")

    def _announce_left(self, pruned: list[list[Any]], reaped: bool) -> None:
        """Tell the others of the users who left while Redis was away.

        Those whose records Redis still had were just removed (C{pruned});
        if Redis lost its data, the node remembers the others.  If the node
        was taken for dead, their leaves were told then.
        """
        lost = {
            nickname: (rooms, events.left(nickname, CONNECTION_LOST))
            for nickname, rooms in pruned
        }
        if not reaped:
            for nickname, rooms, leave in self._node.left_while_down.values():
                told = lost.get(nickname, (rooms, leave))[0]
                lost[nickname] = (told, leave)  # with the reason they left for
        for rooms, leave in lost.values():
            if rooms:
                d = self._node.call(
                    "told_left",
                    self._node.name,
                    self._node.amax,
                    json.dumps(list(rooms)),
                    dumped(leave),
                )
                quietly(d, "announcing a leave")

    def _reclaimed(self, reply: list[Any], client: IChatClient) -> None:
        if int(reply[0]) == 1:
            dead, told = reply[1], reply[2]
            if dead:  # the nickname was left behind by a node that died
                self._announce_gone([[dead, told]])
            return
        user = self._node.index.users.get(client)
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
