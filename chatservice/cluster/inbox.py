"""What a node does with the other nodes' messages: a handler for each kind.

Every message read from the stream is checked (L{events.checked}) into a
typed message, then given to the handler its kind has in L{Inbox}'s
table.  A node's own messages it acted on already, but for the hand-over
of a session arriving here (see L{chatservice.cluster.sessions}).  The
chat event a message carries is delivered to this node's clients as it
is: one object for all of them, each front end encoding it once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..interfaces import Scrollback
from ..rooms import deliver, in_rooms
from .accounts import ClusterAccounts
from .bans import ClusterBans
from .events import (
    AccountChange,
    Ban,
    Handed,
    HandOver,
    Malformed,
    MalformedLog,
    Message,
    ToEveryone,
    ToRooms,
    ToUser,
    Unban,
    checked,
)
from .node import Node
from .sessions import ClusterSessions


class Inbox:
    """Acts on the messages of the other nodes, as they are read."""

    def __init__(
        self,
        node: Node,
        sessions: ClusterSessions,
        bans: ClusterBans,
        accounts: ClusterAccounts,
    ) -> None:
        self._node = node
        self._sessions = sessions
        #: Messages from Redis that were not of any known shape, logged.
        self._malformed = MalformedLog(node.clock.seconds, node.name)
        #: The handler of each kind of message.
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            HandOver: sessions.moved_away,
            Handed: sessions.handed,
            Ban: bans.banned,
            Unban: bans.unbanned,
            AccountChange: accounts.changed,
            ToUser: self.to_user,
            ToEveryone: self.to_everyone,
            ToRooms: self.to_rooms,
        }

    def received(self, origin: str, message: str) -> None:
        """Act on C{message}, from the node called C{origin}."""
        if origin == self._node.name:
            self._sessions.own_event(message)
            return  # this node acted on it already
        try:
            typed = checked(message)
        except Malformed as malformed:
            self._malformed.skipped(malformed)
            return
        self.act(typed)

    def act(self, message: Message) -> None:
        """Act on C{message}, unless the server is stopping."""
        if not self._node.stopping:
            self._handlers[type(message)](message)

    def to_user(self, message: ToUser) -> None:
        """Deliver an event to a user of this node, or kick them."""
        client = self._node.index.by_fold.get(message.key)
        if client is None:
            return
        if message.kick is not None:
            client.disconnect(message.kick)
        elif message.event is not None:
            client.deliver(message.event)

    def to_everyone(self, message: ToEveryone) -> None:
        """Deliver an event to every user of this node."""
        deliver(tuple(self._node.index.users), message.event, None)

    def to_rooms(self, message: ToRooms) -> None:
        """Deliver an event to this node's members of the rooms (the fan-out).

        A line said is kept in each room's scrollback, for newcomers.
        """
        index = self._node.index
        if message.sender in index.by_fold:
            # About a user of this node, from another that had it wrong (it
            # took this node for dead), or from before the user came here.
            return
        rooms = [index.rooms[name] for name in message.rooms if name in index.rooms]
        if message.said and index.history:
            said = Scrollback(message.event.time, message.event)
            for room in rooms:
                room.history.append(said)
        deliver(in_rooms(rooms), message.event, None)
