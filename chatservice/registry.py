"""The in-memory registry: who is connected, under which name, in which room.

It is the one place that knows where a line must go.  Fan-out hands the same
bytes object to every recipient and never waits for any of them; a room's
recipients are kept as an immutable tuple, rebuilt only when membership
changes, so a broadcast neither copies the member list nor trips over a
member that leaves while it is under way.
"""

from collections.abc import Iterable

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from . import wire
from .errors import NicknameInUse, NoSuchNickname
from .interfaces import IChatClient, IRegistry
from .text import fold

LOBBY = "#lobby"


class _Room:
    """The members of one room, and the tuple that fan-out iterates."""

    __slots__ = ("name", "_members", "_recipients")

    def __init__(self, name: str) -> None:
        self.name = name
        self._members: dict[IChatClient, None] = {}
        self._recipients: tuple[IChatClient, ...] | None = ()

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

    __slots__ = ("nickname", "rooms")

    def __init__(self, nickname: str, rooms: set[str]) -> None:
        self.nickname = nickname
        self.rooms = rooms


@implementer(IRegistry)
class Registry:
    """An L{IRegistry} for one process, holding everything in memory."""

    lobby = LOBBY

    def __init__(self) -> None:
        self._users: dict[IChatClient, _User] = {}
        self._by_fold: dict[str, IChatClient] = {}
        self._rooms: dict[str, _Room] = {LOBBY: _Room(LOBBY)}
        self._stopping = False

    def register(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.register}."""
        key = fold(nickname)
        if key in self._by_fold:
            return fail(NicknameInUse(nickname))
        self._by_fold[key] = client
        self._users[client] = _User(nickname, {LOBBY})
        lobby = self._rooms[LOBBY]
        lobby.add(client)
        self._deliver(lobby.recipients, wire.joined(nickname, LOBBY), client)
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

    def unregister(self, client: IChatClient, reason: str) -> None:
        """See L{IRegistry.unregister}."""
        user = self._users.pop(client, None)
        if user is None:
            return
        del self._by_fold[fold(user.nickname)]
        neighbours = self._neighbours(user)
        for name in user.rooms:
            room = self._rooms[name]
            room.discard(client)
            if name != LOBBY and not room.recipients:
                del self._rooms[name]
        if not self._stopping:
            self._deliver(neighbours, wire.left(user.nickname, reason), client)

    def broadcast(self, room: str, data: bytes, sender: IChatClient) -> None:
        """See L{IRegistry.broadcast}."""
        self._deliver(self._rooms[room].recipients, data, sender)

    def send_private(self, nickname: str, data: bytes) -> Deferred[str]:
        """See L{IRegistry.send_private}."""
        client = self._by_fold.get(fold(nickname))
        if client is None:
            return fail(NoSuchNickname(nickname))
        client.deliver(data)
        return succeed(self._users[client].nickname)

    def nicknames(self, room: str | None = None) -> Deferred[list[str]]:
        """See L{IRegistry.nicknames}."""
        if room is None:
            clients: Iterable[IChatClient] = self._users
        else:
            found = self._rooms.get(room)
            clients = found.recipients if found is not None else ()
        names = [self._users[client].nickname for client in clients]
        return succeed(sorted(names, key=fold))

    def stop(self) -> None:
        """See L{IRegistry.stop}."""
        self._stopping = True

    def _neighbours(self, user: _User) -> Iterable[IChatClient]:
        """Everyone who shares a room with C{user}, once each."""
        if len(user.rooms) == 1:
            (name,) = user.rooms
            return self._rooms[name].recipients
        return dict.fromkeys(
            client for name in user.rooms for client in self._rooms[name].recipients
        )

    @staticmethod
    def _deliver(
        recipients: Iterable[IChatClient], data: bytes, skip: IChatClient | None
    ) -> None:
        """The fan-out loop: the same bytes to each recipient but C{skip}."""
        for client in recipients:
            if client is not skip:
                client.deliver(data)
