"""The clustered registry: this node's users in memory, the rest in Redis.

L{ClusterRegistry} is the L{IRegistry} of a node, and puts the node
together from its parts: L{node.Node} (its own users, its calls to Redis),
L{liveness.Liveness} (heartbeat, reaping, outages), L{inbox.Inbox} (the
other nodes' events), L{sessions.ClusterSessions} and L{bans.ClusterBans}
(what the server shares between nodes) and L{lookups.Lookups} (questions
about users who may be elsewhere).  Its own methods change who is where.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import events
from ..errors import ChatError, NicknameInUse
from ..events import Event
from ..interfaces import IChatClient, IRegistry, RoomInfo, Scrollback, UserInfo
from ..reasons import CloseReason
from ..rooms import LOBBY, User, deliver, say_in
from ..text import fold
from .accounts import ClusterAccounts
from .bans import ClusterBans
from .events import ToEveryone, ToRooms, dumped
from .inbox import Inbox
from .liveness import Liveness
from .lookups import Lookups
from .membership import Membership
from .node import RENAME_CUT_OFF, Node, cut_off, node_name, quietly, trap_unreachable
from .sessions import MISSED_BYTES, ClusterSessions

__all__ = ["MISSED_BYTES", "ClusterRegistry", "node_name"]


@implementer(IRegistry)
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
    @param missed_bytes: the most bytes of missed events (their JSON) kept
        in Redis for one held session (C{--resume-buffer-bytes}), handed over, or
        collected; L{MISSED_BYTES} by default.

    @ivar shared_sessions: the node's L{ISharedSessions}, for the server.
    @ivar shared_bans: the node's L{ISharedBans}, for the server.
    @ivar shared_accounts: the node's L{ISharedAccounts}, for the server.
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
        self.core = Node(
            cluster,
            node if node is not None else node_name(),
            clock,
            history,
            announce_max,
            MISSED_BYTES if missed_bytes is None else missed_bytes,
        )
        self.cluster, self.node = cluster, self.core.name
        self._index = index = self.core.index
        # The index's maps, under short names for the hot paths.
        self._users, self._by_fold, self._rooms = (
            index.users,
            index.by_fold,
            index.rooms,
        )
        self.shared_sessions = ClusterSessions(self.core)
        self.shared_bans = ClusterBans(self.core)
        self.shared_accounts = ClusterAccounts(self.core)
        self._lookups = Lookups(self.core)
        self._rooms_here = Membership(self.core)
        self.inbox = Inbox(
            self.core, self.shared_sessions, self.shared_bans, self.shared_accounts
        )
        self.liveness = Liveness(self.core, node_ttl, self.inbox.act)
        self.core.connect(
            url, self.inbox.received, self.liveness.link_up, self.liveness.link_down
        )
        self.link = self.core.link
        self._clock, self._history = clock, history
        self.said = 0
        self.delivered = 0

    def start(self) -> None:
        """See L{IRegistry.start}: connect to Redis.

        The node serves its own users alone until it is up.
        """
        self.liveness.start()

    @property
    def up(self) -> bool:
        """Whether this node is part of the cluster now (see L{Node.up})."""
        return self.link.up and not self.core.resyncing

    def close(self) -> Deferred[object]:
        """See L{IRegistry.close}: leave the cluster, and disconnect."""
        self.core.closing = True
        self.liveness.stop()
        self.shared_sessions.cancel()
        d = self.idle()
        d.addCallback(lambda _: self.liveness.retire())
        d.addErrback(lambda failure: None)
        d.addCallback(lambda _: self.idle())
        d.addCallback(lambda _: self.link.stop())
        return d

    def idle(self) -> Deferred[None]:
        """Fire once no call to Redis is under way."""
        self.shared_sessions.flush()  # what waits for the iteration's end goes now
        if not self.core.pending:
            return succeed(None)
        d = DeferredList(list(self.core.pending), consumeErrors=True)
        return d.addCallback(lambda _: self.idle())

    def register(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.register}."""
        key = fold(nickname)
        if key in self._by_fold:
            return fail(NicknameInUse(nickname))
        if not self.up:
            return succeed(self._register_here(client, nickname))
        host = client.host or ""
        d = self.core.call(
            "register",
            self.core.name,
            key,
            nickname,
            host,
            LOBBY,
            self.core.amax,
            dumped(events.joined(nickname, LOBBY)),
        )

        def claimed(reply: list[Any]) -> Deferred[str]:
            if int(reply[0]) != 1:
                raise NicknameInUse(nickname)
            waited = self.core.link.caught_up(reply[2])
            return waited.addCallback(lambda _: enter(int(reply[1])))

        def enter(size: int) -> str:
            if key in self._by_fold:  # taken here while Redis answered
                quietly(
                    self.core.call(
                        "unregister", self.core.name, key, self.core.amax, LOBBY, ""
                    ),
                    "a release",
                )
                raise NicknameInUse(nickname)
            self._index.add(client, nickname)
            self._rooms_here.enter(client, LOBBY, announce=self._index.announces(size))
            return nickname

        def unreachable(failure: Failure) -> str:
            trap_unreachable(failure)
            return self._register_here(client, nickname)

        return d.addCallbacks(claimed, unreachable)

    def _register_here(self, client: IChatClient, nickname: str) -> str:
        """Register C{client} on this node alone; claimed in Redis later."""
        key = fold(nickname)
        if key in self._by_fold:
            raise NicknameInUse(nickname)
        self.core.joined_while_down.add(key)
        size = len(self._rooms[LOBBY]) + 1
        self._index.add(client, nickname)
        self._rooms_here.enter(client, LOBBY, announce=self._index.announces(size))
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
        d = self.core.call(
            "rename",
            self.core.name,
            fold(old),
            key,
            nickname,
            dumped(events.renamed(old, nickname)),
        )

        def renamed(result: int) -> str:
            if int(result) == 0:
                raise NicknameInUse(nickname)
            if client in self._users:
                self._rename_local(client, user, nickname)
            return nickname

        return d.addCallbacks(renamed, cut_off(RENAME_CUT_OFF))

    def unregister(self, client: IChatClient, reason: CloseReason) -> None:
        """See L{IRegistry.unregister}."""
        user = self._index.remove(client)
        if user is None:
            return
        key = fold(user.nickname)
        self.core.tokens.pop(key, None)
        leave = events.left(user.nickname, reason)
        rooms = user.rooms
        for name in rooms:
            self._rooms[name].discard(client)
        before = {name: self._rooms[name].recipients for name in rooms}

        def told(announced: Iterable[str]) -> None:
            if not self.core.stopping:
                neighbours = dict.fromkeys(
                    c
                    for name in announced
                    for c in self._index.still_in(name, before[name])
                )
                deliver(neighbours, leave, client)
            for name in rooms:
                self._index.forget_if_empty(name)

        def here() -> None:
            """Told here by the local room sizes; the others later, if at all."""
            if key in self.core.joined_while_down:
                self.core.joined_while_down.discard(key)  # nobody else saw them
            else:
                self.core.left_while_down[key] = (user.nickname, rooms, leave)
            told(name for name in rooms if self._index.announces(len(before[name]) + 1))

        if self.up:
            d = self.core.call(
                "unregister", self.core.name, key, self.core.amax, LOBBY, dumped(leave)
            )

            def unanswered(failure: Failure) -> None:
                trap_unreachable(failure)
                here()

            d.addCallbacks(told, unanswered)
            quietly(d, "a leave")
        elif self.core.link.up:
            # Claiming the users again: this one must not stay, and its
            # leave goes out with the script.
            d = self.core.call(
                "unregister", self.core.name, key, self.core.amax, LOBBY, dumped(leave)
            )
            quietly(d, "a leave")
            told(name for name in rooms if self._index.announces(len(before[name]) + 1))
        else:
            here()

    def join(self, client: IChatClient, room: str) -> Deferred[list[Scrollback]]:
        """See L{IRegistry.join}."""
        return self._rooms_here.join(client, room)

    def part(self, client: IChatClient, room: str, reason: str) -> None:
        """See L{IRegistry.part}."""
        self._rooms_here.part(client, room, reason)

    def broadcast(self, room: str, event: Event, sender: IChatClient | None) -> None:
        """See L{IRegistry.broadcast}."""
        say_in(self._rooms[room], event, sender)
        if self.up:
            user = self._users.get(sender) if sender is not None else None
            key = fold(user.nickname) if user is not None else None
            self.core.publish(ToRooms([room], event, key), "a broadcast")

    def say(self, room: str, event: Event, sender: IChatClient) -> None:
        """See L{IRegistry.say}.

        The event crosses Redis once, in one script: to the other nodes,
        and into the room's scrollback there, with its time.
        """
        if event.__class__ is not Event:
            raise events.not_an_event(event)  # before anyone is told anything
        found = self._rooms[room]
        if self._history:
            found.history.append(Scrollback(self._clock.seconds(), event))
        self.said += 1
        self.delivered += len(found) - (sender in found)
        say_in(found, event, sender)
        if self.up:
            key = fold(self._users[sender].nickname) if sender in self._users else ""
            quietly(
                self.core.call(
                    "say",
                    self.core.name,
                    room,
                    key,
                    dumped(event),
                    self.core.history,
                ),
                "a line for the other nodes",
            )

    def send_private(self, nickname: str, event: Event) -> Deferred[UserInfo]:
        """See L{IRegistry.send_private}."""
        return self._lookups.send_private(nickname, event)

    def find(self, nickname: str) -> Deferred[UserInfo]:
        """See L{IRegistry.find}."""
        return self._lookups.find(nickname)

    def kick(self, nickname: str, reason: CloseReason) -> Deferred[UserInfo]:
        """See L{IRegistry.kick}."""
        return self._lookups.kick(nickname, reason)

    def replace(self, old: IChatClient, new: IChatClient, event: Event | None) -> None:
        """See L{IRegistry.replace}."""
        user = self._index.swap(old, new)
        if event is not None:
            deliver(self._index.neighbours(user, quiet=True), event, new)
            rooms = [
                name
                for name in user.rooms
                if self._index.announces(len(self._rooms[name]))
            ]
            if self.up and rooms:
                message = ToRooms(rooms, event, fold(user.nickname))
                self.core.publish(message, "a notice")

    def announce(self, event: Event) -> None:
        """See L{IRegistry.announce}."""
        deliver(tuple(self._users), event, None)
        if self.up:
            self.core.publish(ToEveryone(event), "a notice")

    def count(self) -> Deferred[int]:
        """See L{IRegistry.count}."""
        return self._lookups.count()

    def users(self, room: str | None = None) -> Deferred[list[UserInfo]]:
        """See L{IRegistry.users}: shared, see L{Node.shared}."""
        return self._lookups.users(room)

    def rooms(self) -> Deferred[list[RoomInfo]]:
        """See L{IRegistry.rooms}: shared, see L{Node.shared}."""
        return self._lookups.rooms()

    def topic(self, room: str) -> Deferred[str]:
        """See L{IRegistry.topic}."""
        return self._lookups.topic(room)

    def local_sizes(self) -> tuple[int, int]:
        """See L{IRegistry.local_sizes}: this node's users and their rooms."""
        return len(self._users), len(self._rooms)

    def local_users(self) -> list[UserInfo]:
        """The users of this node (for metrics, which must not wait on Redis)."""
        return self._index.user_infos(None)

    def set_topic(self, client: IChatClient, room: str, topic: str) -> None:
        """See L{IRegistry.set_topic}."""
        self._rooms_here.set_topic(client, room, topic)

    def set_away(self, client: IChatClient, message: str | None) -> None:
        """See L{IRegistry.set_away}."""
        self._rooms_here.set_away(client, message)

    def stop(self) -> None:
        """See L{IRegistry.stop}."""
        self.core.stopping = True

    # The local index -----------------------------------------------------

    def _rename_local(self, client: IChatClient, user: User, nickname: str) -> None:
        old = self._index.rename(client, nickname)
        token = self.core.tokens.pop(fold(old), None)  # renamed in Redis too
        if token is not None:
            self.core.tokens[fold(nickname)] = token
        deliver(self._index.neighbours(user), events.renamed(old, nickname), None)
