"""Rooms on a node of a cluster: joining, leaving, topics, away messages.

L{Membership} changes which rooms this node's users are in, here at once
and in Redis (whose scripts tell the other nodes); while Redis is out of
reach, here alone, remembered for when it is back (see L{liveness}).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.python.failure import Failure

from .. import events
from ..interfaces import IChatClient, Scrollback
from ..rooms import LOBBY, deliver
from ..text import fold
from .events import dumped
from .node import Node, quietly, trap_unreachable
from .records import scrollback


class Membership:
    """The rooms of a node's users, kept here and in Redis."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def enter(self, client: IChatClient, name: str, announce: bool) -> None:
        """Put C{client} in room C{name} here; with C{announce}, tell the room."""
        room = self._node.index.enter(client, name)
        if announce:
            nickname = self._node.index.users[client].nickname
            deliver(room.recipients, events.joined(nickname, name), client)

    def join(self, client: IChatClient, room: str) -> Deferred[list[Scrollback]]:
        """See L{chatservice.interfaces.IRegistry.join}."""
        user = self._node.index.users[client]
        if not self._node.up:
            if room not in user.rooms:
                size = (
                    len(self._node.index.rooms[room]) + 1
                    if room in self._node.index.rooms
                    else 1
                )
                self.enter(client, room, self._node.index.announces(size))
            return succeed(list(self._node.index.rooms[room].history))
        entered = room not in user.rooms
        before = (
            self._node.index.rooms[room].recipients
            if room in self._node.index.rooms
            else ()
        )
        if entered:
            # At once, so that what the user does next reaches the room; the
            # others here are told once Redis says how big the room is.
            self.enter(client, room, announce=False)
        d = self._node.call(
            "join",
            self._node.name,
            fold(user.nickname),
            room,
            self._node.amax,
            dumped(events.joined(user.nickname, room)),
            self._node.history,
        )

        def joined(reply: list[Any]) -> list[Scrollback]:
            size = int(reply[0])
            if entered and self._node.index.announces(size) and size > 0:
                joined = events.joined(user.nickname, room)
                deliver(self._node.index.still_in(room, before), joined, client)
            if size < 0:
                return (
                    list(self._node.index.rooms[room].history)
                    if room in self._node.index.rooms
                    else []
                )
            return scrollback(reversed(reply[1]))

        def here(failure: Failure) -> list[Scrollback]:
            # Redis did not answer: joined on this node, claimed later.
            trap_unreachable(failure)
            size = len(before) + 1
            return joined([size if entered else -1, []])

        return d.addCallbacks(joined, here)

    def part(self, client: IChatClient, room: str, reason: str) -> None:
        """See L{chatservice.interfaces.IRegistry.part}."""
        user = self._node.index.users[client]
        if room not in user.rooms:
            return
        size = len(self._node.index.rooms[room])
        user.rooms = tuple(name for name in user.rooms if name != room)
        self._node.index.rooms[room].discard(client)
        leave = events.parted(user.nickname, room, reason)
        if not self._node.up:
            if self._node.index.announces(size):
                deliver(self._node.index.rooms[room].recipients, leave, client)
            self._node.index.forget_if_empty(room)
            parted = self._node.parted_while_down.setdefault(fold(user.nickname), {})
            parted[room] = dumped(leave)
            return
        d = self._node.call(
            "part",
            self._node.name,
            fold(user.nickname),
            room,
            self._node.amax,
            LOBBY,
            dumped(leave),
        )

        before = self._node.index.rooms[room].recipients

        def told(announced: int) -> None:
            if int(announced):
                deliver(self._node.index.still_in(room, before), leave, client)
            self._node.index.forget_if_empty(room)

        def here(failure: Failure) -> None:
            trap_unreachable(failure)
            parted = self._node.parted_while_down.setdefault(fold(user.nickname), {})
            parted[room] = dumped(leave)
            told(self._node.index.announces(size))

        d.addCallbacks(told, here)
        quietly(d, "a part")

    def set_topic(self, client: IChatClient, room: str, topic: str) -> None:
        """See L{chatservice.interfaces.IRegistry.set_topic}."""
        self._node.index.rooms[room].topic = topic
        nickname = self._node.index.users[client].nickname
        event = events.topic_set(nickname, room, topic)
        deliver(self._node.index.rooms[room].recipients, event, None)
        if self._node.up:
            quietly(
                self._node.call("topic", self._node.name, room, topic, dumped(event)),
                "a topic",
            )

    def set_away(self, client: IChatClient, message: str | None) -> None:
        """See L{chatservice.interfaces.IRegistry.set_away}."""
        user = self._node.index.users[client]
        user.away = message
        if self._node.up:
            quietly(
                self._node.call(
                    "update",
                    self._node.name,
                    fold(user.nickname),
                    "away",
                    json.dumps(message),
                ),
                "an away message",
            )
