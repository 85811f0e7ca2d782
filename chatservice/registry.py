"""The in-memory registry: who is connected, under which name, in which room.

It is the one place that knows where a line must go.  Fan-out hands the same
bytes object to every recipient and never waits for any of them, iterating
the tuple of a room's members that the index (L{chatservice.rooms}) keeps.

Joins and leaves are announced only in rooms of at most C{announce_max}
members: in a room of thousands they would be most of its traffic, and
each one costs a delivery to every member, so a crowd arriving would cost
time quadratic in its size.
"""

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from . import events
from .errors import NicknameInUse, NoSuchNickname
from .events import Event
from .interfaces import (
    IChatClient,
    IRegistry,
    IRegistryAtOnce,
    RoomInfo,
    Scrollback,
    UserInfo,
)
from .reasons import CloseReason
from .rooms import LOBBY, Room, Rooms, deliver, say_in, tell
from .text import fold


@implementer(IRegistry, IRegistryAtOnce)
class Registry:
    """An L{IRegistry} for one process, holding everything in memory.

    @param history: how many lines each room's scrollback keeps.
    @param clock: what stamps the scrollback.
    @param announce_max: the most members a room may have for joins and
        leaves in it to be announced; None announces them in every room.
    """

    lobby = LOBBY

    def __init__(
        self,
        history: int = 50,
        clock: IReactorTime | None = None,
        announce_max: int | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self._history = history
        self._index = Rooms(history, announce_max)
        # The index's own maps, under short names for the hot paths.
        self._users = self._index.users
        self._by_fold = self._index.by_fold
        self._rooms = self._index.rooms
        self._stopping = False
        self.said = 0
        self.delivered = 0

    def register(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.register}."""
        if fold(nickname) in self._by_fold:
            return fail(NicknameInUse(nickname))
        return succeed(self.register_now(client, nickname))

    def register_now(self, client: IChatClient, nickname: str) -> str:
        """See L{IRegistryAtOnce.register_now}."""
        key = fold(nickname)
        if key in self._by_fold:
            raise NicknameInUse(nickname)
        self._index.add(client, nickname, key)
        self._enter(client, LOBBY, nickname)
        return nickname

    def rename(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.rename}."""
        holder = self._by_fold.get(fold(nickname))
        if holder is not None and holder is not client:
            return fail(NicknameInUse(nickname))
        old = self._index.rename(client, nickname)
        neighbours = self._index.neighbours(self._users[client])
        deliver(neighbours, events.renamed(old, nickname), None)
        return succeed(nickname)

    def unregister(self, client: IChatClient, reason: CloseReason) -> None:
        """See L{IRegistry.unregister}."""
        user = self._index.remove(client)
        if user is None:
            return
        if len(user.rooms) == 1:
            # In one room, as almost everyone: told through the room's
            # groups of receivers, as a line is (L{say_in}), before leaving
            # it: 8.1 against 10.1 us a departure from a room of 20 line
            # users (tell(), one deliver each; the best of 7 runs of 3,000).
            (name,) = user.rooms
            room = self._rooms[name]
            if not self._stopping and self._index.announces(len(room)):
                say_in(room, events.left(user.nickname, reason), client)
            self._index.leave(client, name)
            return
        neighbours = self._index.neighbour_receivers(user, quiet=True)
        for name in user.rooms:
            self._index.leave(client, name)
        if not self._stopping:
            tell(neighbours, events.left(user.nickname, reason), client)

    def join(self, client: IChatClient, room: str) -> Deferred[list[Scrollback]]:
        """See L{IRegistry.join}."""
        return succeed(self.join_now(client, room))

    def join_now(self, client: IChatClient, room: str) -> list[Scrollback]:
        """See L{IRegistryAtOnce.join_now}."""
        if room not in self._users[client].rooms:
            self._enter(client, room)
        return list(self._rooms[room].history)

    def part(self, client: IChatClient, room: str, reason: str) -> None:
        """See L{IRegistry.part}."""
        user = self._users[client]
        if room not in user.rooms:
            return
        announced = self._index.announces(len(self._rooms[room]))
        user.rooms = tuple(name for name in user.rooms if name != room)
        self._index.leave(client, room)
        if announced and room in self._rooms:
            self.broadcast(room, events.parted(user.nickname, room, reason), client)

    def broadcast(self, room: str, event: Event, sender: IChatClient | None) -> None:
        """See L{IRegistry.broadcast}."""
        say_in(self._rooms[room], event, sender)

    def say(self, room: str, event: Event, sender: IChatClient) -> None:
        """See L{IRegistry.say}."""
        found = self._rooms[room]
        if self._history:
            found.history.append(Scrollback(self._clock.seconds(), event))
        self.said += 1
        self.delivered += len(found) - (sender in found)
        say_in(found, event, sender)

    def send_private(self, nickname: str, event: Event) -> Deferred[UserInfo]:
        """See L{IRegistry.send_private}."""
        client = self._by_fold.get(fold(nickname))
        if client is None:
            return fail(NoSuchNickname(nickname))
        client.deliver(event)
        return succeed(self._users[client].info())

    def find(self, nickname: str) -> Deferred[UserInfo]:
        """See L{IRegistry.find}."""
        client = self._by_fold.get(fold(nickname))
        if client is None:
            return fail(NoSuchNickname(nickname))
        return succeed(self._users[client].info())

    def kick(self, nickname: str, reason: CloseReason) -> Deferred[UserInfo]:
        """See L{IRegistry.kick}."""
        client = self._by_fold.get(fold(nickname))
        if client is None:
            return fail(NoSuchNickname(nickname))
        info = self._users[client].info()
        client.disconnect(reason)
        return succeed(info)

    def replace(self, old: IChatClient, new: IChatClient, event: Event | None) -> None:
        """See L{IRegistry.replace}."""
        user = self._index.swap(old, new)
        if event is not None:
            deliver(self._index.neighbours(user, quiet=True), event, new)

    def announce(self, event: Event) -> None:
        """See L{IRegistry.announce}."""
        deliver(tuple(self._users), event, None)

    def count(self) -> Deferred[int]:
        """See L{IRegistry.count}."""
        return succeed(len(self._users))

    def count_now(self) -> int:
        """See L{IRegistryAtOnce.count_now}."""
        return len(self._users)

    def local_sizes(self) -> tuple[int, int]:
        """See L{IRegistry.local_sizes}."""
        return len(self._users), len(self._rooms)

    def users(self, room: str | None = None) -> Deferred[list[UserInfo]]:
        """See L{IRegistry.users}."""
        return succeed(self._index.user_infos(room))

    def users_now(self, room: str | None = None) -> list[UserInfo]:
        """See L{IRegistryAtOnce.users_now}."""
        return self._index.user_infos(room)

    def rooms(self) -> Deferred[list[RoomInfo]]:
        """See L{IRegistry.rooms}."""
        return succeed(self._index.room_infos())

    def topic(self, room: str) -> Deferred[str]:
        """See L{IRegistry.topic}."""
        found = self._rooms.get(room)
        return succeed(found.topic if found is not None else "")

    def set_topic(self, client: IChatClient, room: str, topic: str) -> None:
        """See L{IRegistry.set_topic}."""
        self._rooms[room].topic = topic
        nickname = self._users[client].nickname
        self.broadcast(room, events.topic_set(nickname, room, topic), None)

    def set_away(self, client: IChatClient, message: str | None) -> None:
        """See L{IRegistry.set_away}."""
        self._users[client].away = message

    def start(self) -> None:
        """See L{IRegistry.start}: nothing to connect to."""

    def close(self) -> Deferred[object]:
        """See L{IRegistry.close}: nothing to let go of."""
        return succeed(None)

    def stop(self) -> None:
        """See L{IRegistry.stop}."""
        self._stopping = True

    def _enter(self, client: IChatClient, name: str, nickname: str = "") -> None:
        """Put C{client} (C{nickname}, if known) in room C{name}; tell the others.

        A room it is alone in (a new one, an empty lobby) tells nobody, and
        makes no event for nobody.
        """
        room: Room = self._index.enter(client, name)
        size = len(room)
        if size > 1 and self._index.announces(size):
            nickname = nickname or self._users[client].nickname
            say_in(room, events.joined(nickname, name), client)
