"""What a node does with the other nodes' events: a handler for each kind.

Every event read from the stream is checked (L{events.checked}) into a
typed event, then given to the handler its kind has in L{Inbox}'s table.
A node's own events it acted on already, but for the hand-over of a
session arriving here (see L{chatservice.cluster.sessions}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..interfaces import Scrollback
from ..rooms import deliver, in_rooms
from .bans import ClusterBans
from .events import (
    Ban,
    Event,
    Handed,
    HandOver,
    Malformed,
    MalformedLog,
    ToEveryone,
    ToRooms,
    ToUser,
    Unban,
    checked,
)
from .node import Node
from .sessions import ClusterSessions


class Inbox:
    """Acts on the events of the other nodes, as they are read."""

    def __init__(
        self, node: Node, sessions: ClusterSessions, bans: ClusterBans
    ) -> None:
        self._node = node
        self._sessions = sessions
        #: Events from Redis that were not of any known shape, logged.
        self._malformed = MalformedLog(node.clock.seconds, node.name)
        #: The handler of each kind of event.
        self._handlers: dict[type[Any], Callable[[Any], None]] = {
            HandOver: sessions.moved_away,
            Handed: sessions.handed,
            Ban: bans.banned,
            Unban: bans.unbanned,
            ToUser: self.to_user,
            ToEveryone: self.to_everyone,
            ToRooms: self.to_rooms,
        }

    def received(self, origin: str, message: str) -> None:
        """Act on C{message}, an event from the node called C{origin}."""
        if origin == self._node.name:
            self._sessions.own_event(message)
            return  # this node acted on it already
        try:
            event = checked(message)
        except Malformed as malformed:
            self._malformed.skipped(malformed)
            return
        self.act(event)

    def act(self, event: Event) -> None:
        """Act on C{event}, unless the server is stopping."""
        if not self._node.stopping:
            self._handlers[type(event)](event)

    def to_user(self, event: ToUser) -> None:
        """Deliver lines to a user of this node, or kick them."""
        client = self._node.index.by_fold.get(event.key)
        if client is None:
            return
        if event.kick is not None:
            client.disconnect(event.kick)
        elif event.data is not None:
            client.deliver(event.data)

    def to_everyone(self, event: ToEveryone) -> None:
        """Deliver lines to every user of this node."""
        deliver(tuple(self._node.index.users), event.data, None)

    def to_rooms(self, event: ToRooms) -> None:
        """Deliver lines to this node's members of the rooms (the fan-out).

        A line said is kept in each room's scrollback, for newcomers.
        """
        index = self._node.index
        if event.sender in index.by_fold:
            # About a user of this node, from another that had it wrong (it
            # took this node for dead), or from before the user came here.
            return
        rooms = [index.rooms[name] for name in event.rooms if name in index.rooms]
        if event.said is not None and index.history:
            for room in rooms:
                room.history.append(Scrollback(event.said, event.data))
        deliver(in_rooms(rooms), event.data, None)
