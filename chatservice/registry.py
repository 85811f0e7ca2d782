"""The in-memory registry: who is connected, under which name, in which room.

It is the one place that knows where a line must go.  Fan-out hands the same
bytes object to every recipient and never waits for any of them; a room's
recipients are kept as an immutable tuple, rebuilt only when membership
changes, so a broadcast neither copies the member list nor trips over a
member that leaves while it is under way.

Joins and leaves are announced only in rooms of at most C{announce_max}
members: in a room of thousands they would be most of its traffic, and
each one costs a delivery to every member, so a crowd arriving would cost
time quadratic in its size.
"""

from collections import deque
from collections.abc import Callable, Iterable

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.interfaces import IReactorTime
from zope.interface import implementer

from . import wire
from .errors import NicknameInUse, NoSuchNickname
from .interfaces import (
    IChatClient,
    IRegistry,
    ISharedBans,
    ISharedSessions,
    RoomInfo,
    Scrollback,
    UserInfo,
)
from .reasons import CloseReason
from .text import fold

LOBBY = "#lobby"


class _Room:
    """One room: members, the tuple that fan-out iterates, topic, history."""

    __slots__ = ("name", "topic", "history", "_members", "_recipients")

    def __init__(self, name: str, history: int) -> None:
        self.name = name
        self.topic = ""
        self.history: deque[Scrollback] = deque(maxlen=history)
        self._members: dict[IChatClient, None] = {}
        self._recipients: tuple[IChatClient, ...] | None = ()

    def __contains__(self, client: IChatClient) -> bool:
        return client in self._members

    def __len__(self) -> int:
        return len(self._members)

    def add(self, client: IChatClient) -> None:
        self._members[client] = None
        self._recipients = None

    def discard(self, client: IChatClient) -> None:
        if client in self._members:
            del self._members[client]
            self._recipients = None

    @property
    def recipients(self) -> tuple[IChatClient, ...]:
        """The members, as a tuple that later changes do not touch."""
        if self._recipients is None:
            self._recipients = tuple(self._members)
        return self._recipients


class _User:
    """What the registry knows of one registered client."""

    __slots__ = ("nickname", "rooms", "away", "host")

    def __init__(self, nickname: str, host: str | None) -> None:
        self.nickname = nickname
        # A tuple, not a set: most users are in one room, and an empty set
        # alone is 216 bytes.
        self.rooms: tuple[str, ...] = ()
        self.away: str | None = None
        self.host = host

    def info(self) -> UserInfo:
        return UserInfo(self.nickname, self.away, self.host)


@implementer(IRegistry)
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
        self._announce_max = announce_max
        self._users: dict[IChatClient, _User] = {}
        self._by_fold: dict[str, IChatClient] = {}
        self._rooms: dict[str, _Room] = {LOBBY: _Room(LOBBY, history)}
        self._stopping = False
        self.said = 0
        self.delivered = 0

    def register(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.register}."""
        key = fold(nickname)
        if key in self._by_fold:
            return fail(NicknameInUse(nickname))
        self._by_fold[key] = client
        self._users[client] = _User(nickname, getattr(client, "host", None))
        self._enter(client, LOBBY)
        return succeed(nickname)

    def rename(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.rename}."""
        user = self._users[client]
        old, key = user.nickname, fold(nickname)
        holder = self._by_fold.get(key)
        if holder is not None and holder is not client:
            return fail(NicknameInUse(nickname))
        del self._by_fold[fold(old)]
        self._by_fold[key] = client
        user.nickname = nickname
        self._deliver(self._neighbours(user), wire.renamed(old, nickname), None)
        return succeed(nickname)

    def unregister(self, client: IChatClient, reason: CloseReason) -> None:
        """See L{IRegistry.unregister}."""
        user = self._users.pop(client, None)
        if user is None:
            return
        del self._by_fold[fold(user.nickname)]
        neighbours = self._neighbours(user, quiet=True)
        for name in user.rooms:
            self._leave_room(client, name)
        if not self._stopping:
            self._deliver(neighbours, wire.left(user.nickname, reason), client)

    def join(self, client: IChatClient, room: str) -> Deferred[list[Scrollback]]:
        """See L{IRegistry.join}."""
        if room not in self._users[client].rooms:
            self._enter(client, room)
        return succeed(list(self._rooms[room].history))

    def part(self, client: IChatClient, room: str, reason: str) -> None:
        """See L{IRegistry.part}."""
        user = self._users[client]
        if room not in user.rooms:
            return
        announced = self._announced(self._rooms[room])
        user.rooms = tuple(name for name in user.rooms if name != room)
        self._leave_room(client, room)
        if announced and room in self._rooms:
            self.broadcast(room, wire.parted(user.nickname, room, reason), client)

    def broadcast(self, room: str, data: bytes, sender: IChatClient | None) -> None:
        """See L{IRegistry.broadcast}."""
        self._deliver(self._rooms[room].recipients, data, sender)

    def say(self, room: str, data: bytes, sender: IChatClient) -> None:
        """See L{IRegistry.say}."""
        found = self._rooms[room]
        if self._history:
            found.history.append(Scrollback(self._clock.seconds(), data))
        recipients = found.recipients
        self.said += 1
        self.delivered += len(recipients) - (sender in found)
        self._deliver(recipients, data, sender)

    def send_private(self, nickname: str, data: bytes) -> Deferred[UserInfo]:
        """See L{IRegistry.send_private}."""
        client = self._by_fold.get(fold(nickname))
        if client is None:
            return fail(NoSuchNickname(nickname))
        client.deliver(data)
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

    def replace(self, old: IChatClient, new: IChatClient, data: bytes | None) -> None:
        """See L{IRegistry.replace}."""
        user = swap_client(self._users, self._by_fold, self._rooms, old, new)
        if data is not None:
            self._deliver(self._neighbours(user, quiet=True), data, new)

    def announce(self, data: bytes) -> None:
        """See L{IRegistry.announce}."""
        self._deliver(tuple(self._users), data, None)

    def count(self) -> Deferred[int]:
        """See L{IRegistry.count}."""
        return succeed(len(self._users))

    def local_sizes(self) -> tuple[int, int]:
        """See L{IRegistry.local_sizes}."""
        return len(self._users), len(self._rooms)

    def users(self, room: str | None = None) -> Deferred[list[UserInfo]]:
        """See L{IRegistry.users}."""
        if room is None:
            clients: Iterable[IChatClient] = self._users
        else:
            found = self._rooms.get(room)
            clients = found.recipients if found is not None else ()
        infos = [self._users[client].info() for client in clients]
        return succeed(sorted(infos, key=lambda info: fold(info.nickname)))

    def rooms(self) -> Deferred[list[RoomInfo]]:
        """See L{IRegistry.rooms}."""
        return succeed(
            [
                RoomInfo(name, len(room), room.topic)
                for name, room in sorted(self._rooms.items())
            ]
        )

    def topic(self, room: str) -> Deferred[str]:
        """See L{IRegistry.topic}."""
        found = self._rooms.get(room)
        return succeed(found.topic if found is not None else "")

    def set_topic(self, client: IChatClient, room: str, topic: str) -> None:
        """See L{IRegistry.set_topic}."""
        self._rooms[room].topic = topic
        nickname = self._users[client].nickname
        self.broadcast(room, wire.topic_set(nickname, room, topic), None)

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

    def _enter(self, client: IChatClient, name: str) -> None:
        """Put C{client} in room C{name}, creating it; tell the others."""
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(name, self._history)
        user = self._users[client]
        user.rooms += (name,)
        room.add(client)
        if self._announced(room):
            self._deliver(room.recipients, wire.joined(user.nickname, name), client)

    def _announced(self, room: _Room) -> bool:
        """Whether joins and leaves are announced in C{room}, as it is now."""
        limit = self._announce_max
        return limit is None or len(room) <= limit

    def _leave_room(self, client: IChatClient, name: str) -> None:
        """Take C{client} out of room C{name}; delete the room if it empties."""
        room = self._rooms[name]
        room.discard(client)
        if name != LOBBY and not len(room):
            del self._rooms[name]

    def _neighbours(self, user: _User, quiet: bool = False) -> Iterable[IChatClient]:
        """Everyone who shares a room with C{user}, once each.

        With C{quiet}, only the rooms where joins and leaves are announced.
        """
        rooms = [self._rooms[name] for name in user.rooms]
        if quiet:
            rooms = [room for room in rooms if self._announced(room)]
        if len(rooms) == 1:
            return rooms[0].recipients
        return dict.fromkeys(client for room in rooms for client in room.recipients)

    @staticmethod
    def _deliver(
        recipients: Iterable[IChatClient], data: bytes, skip: IChatClient | None
    ) -> None:
        """The fan-out loop: the same bytes to each recipient but C{skip}."""
        for client in recipients:
            if client is not skip:
                client.deliver(data)


def swap_client(
    users: dict[IChatClient, _User],
    by_fold: dict[str, IChatClient],
    rooms: dict[str, _Room],
    old: IChatClient,
    new: IChatClient,
) -> _User:
    """Put C{new} in C{old}'s place in a registry's maps; return the user."""
    user = users.pop(old)
    users[new] = user
    by_fold[fold(user.nickname)] = new
    user.host = getattr(new, "host", None)
    for name in user.rooms:
        room = rooms[name]
        room.discard(old)
        room.add(new)
    return user


@implementer(ISharedSessions)
class LocalSessions:
    """The L{ISharedSessions} of a server alone: nothing is shared."""

    def store_token(self, nickname: str, token_digest: str) -> None:
        """See L{ISharedSessions.store_token}: kept by the keeper alone."""

    def keep_for(self, nickname: str, data: bytes, limit: int) -> None:
        """See L{ISharedSessions.keep_for}: kept by the held session alone."""

    def resume(
        self,
        client: IChatClient,
        nickname: str,
        token_digest: str,
        new_digest: str,
    ) -> None:
        """See L{ISharedSessions.resume}: the keeper checks its own tokens."""
        return None

    def watch_moves(self, moved: Callable[[IChatClient], None]) -> None:
        """See L{ISharedSessions.watch_moves}: no session moves away."""


@implementer(ISharedBans)
class LocalBans:
    """The L{ISharedBans} of a server alone: there is nobody to tell."""

    def share_ban(
        self, network: str, expires: float | None, reason: str, by: str
    ) -> None:
        """See L{ISharedBans.share_ban}."""

    def share_unban(self, network: str) -> None:
        """See L{ISharedBans.share_unban}."""

    def watch_bans(
        self,
        banned: Callable[[str, float | None, str, str], None],
        unbanned: Callable[[str], None],
    ) -> None:
        """See L{ISharedBans.watch_bans}: no other node bans."""
