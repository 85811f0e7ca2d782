"""The in-memory index of users and rooms, shared by both registries.

Who is here, under which nickname, in which rooms, and the tuple of each
room's members that fan-out iterates.  It announces nothing and knows no
wire format: the registries decide who is told what.  The in-memory
registry holds everyone here; a node of a cluster holds its own users here
(the rest are in Redis).

A room's recipients are kept as an immutable tuple, rebuilt only when
membership changes, so a broadcast neither copies the member list nor trips
over a member that leaves while it is under way.
"""

from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable
from operator import attrgetter

from .events import Event, not_an_event
from .interfaces import IChatClient, RoomInfo, Scrollback, UserInfo
from .output import deliver_each
from .text import fold

LOBBY = "#lobby"


class Room:
    """One room: members, the tuple that fan-out iterates, topic, history."""

    __slots__ = (
        "name",
        "topic",
        "history",
        "_members",
        "_recipients",
        "_receivers",
        "_groups",
    )

    def __init__(self, name: str, history: int) -> None:
        self.name = name
        self.topic = ""
        self.history: deque[Scrollback] = deque(maxlen=history)
        self._members: dict[IChatClient, None] = {}
        self._recipients: tuple[IChatClient, ...] | None = ()
        self._receivers: tuple[object, ...] | None = ()
        self._groups: tuple[tuple[_DeliverAll, tuple[object, ...]], ...] | None = ()

    def __contains__(self, client: IChatClient) -> bool:
        return client in self._members

    #: The most members for which an arrival or a departure changes the
    #: tuples fan-out iterates in place; in a bigger room it drops them, to
    #: be made again when next needed.  Changing them costs a copy of each
    #: (time in the room's size) at every arrival and departure, said
    #: anything or not: with 10,000 clients registering at once (the
    #: storm cell) that was 10,000 copies of up to 10,000, and the storm's
    #: server CPU went from 0.8 to 3.0 s.  Made again, they cost about the
    #: same once, at the next line.
    KEPT_MOST = 256

    def __len__(self) -> int:
        return len(self._members)

    def add(self, client: IChatClient) -> None:
        """Make C{client} a member.

        The tuples fan-out iterates get it at their end, as they would if
        made again, when its receiver's class is the last one's (or the
        room was empty) and the room has at most L{KEPT_MOST} members: a
        room where users come and go (churn) does not make them again for
        each arrival.  A member added again stays listed once.
        """
        members = self._members
        if client in members:
            return  # a member already: listed once (fan-out tells it once)
        members[client] = None
        receivers = self._receivers
        recipients = self._recipients
        if receivers is None or recipients is None or len(members) > self.KEPT_MOST:
            self._recipients = self._receivers = self._groups = None
            return
        receiver = client.receiver
        if receivers and receivers[-1].__class__ is not receiver.__class__:
            self._recipients = self._receivers = self._groups = None
            return
        self._receivers = (*receivers, receiver)
        self._recipients = (*recipients, client)
        groups = self._groups
        if groups:  # the last group is the receiver's class's
            deliver_all, last = groups[-1]
            self._groups = (*groups[:-1], (deliver_all, (*last, receiver)))
        else:
            self._groups = None

    def discard(self, client: IChatClient) -> None:
        """Make C{client} no longer a member, if it was.

        The tuples fan-out iterates lose it where it was (see L{add}).
        """
        members = self._members
        if client in members:
            del members[client]
            if len(members) >= self.KEPT_MOST:
                self._recipients = self._receivers = self._groups = None
                return
            self._recipients = _without(self._recipients, client)
            if self._recipients is None:
                self._receivers = self._groups = None
            else:
                receiver = client.receiver
                self._receivers = _without(self._receivers, receiver)
                self._groups = _groups_without(self._groups, receiver)

    @property
    def recipients(self) -> tuple[IChatClient, ...]:
        """The members, as a tuple that later changes do not touch."""
        if self._recipients is None:
            self._recipients = tuple(self._members)
        return self._recipients

    @property
    def receivers(self) -> tuple[object, ...]:
        """The members' receivers (L{IChatClient.receiver}), for L{say_in}."""
        if self._receivers is None:
            receivers = [client.receiver for client in self._members]
            # Grouped by class (front end): the fan-out's call of each
            # receiver's deliver, and the flush of each, stay on one class
            # at a time, which CPython's inline caches need; with line,
            # frame, web and IRC users in turn, a line's fan-out to 1,000
            # cost about 950 us against 750 grouped (scripts/fanout.py --mix).
            receivers.sort(key=_class_name)
            self._receivers = tuple(receivers)
        return self._receivers

    @property
    def groups(self) -> "tuple[tuple[_DeliverAll, tuple[object, ...]], ...]":
        """L{receivers} by class, each with its class's C{deliver_all}.

        For L{say_in}; a class without one (see L{IChatClient.receiver}) gets
        L{deliver_each}.
        """
        if self._groups is None:
            groups: list[tuple[_DeliverAll, tuple[object, ...]]] = []
            start = 0
            receivers = self.receivers
            for end in range(1, len(receivers) + 1):
                kind = receivers[start].__class__
                if end == len(receivers) or receivers[end].__class__ is not kind:
                    deliver_all = getattr(kind, "deliver_all", deliver_each)
                    groups.append((deliver_all, receivers[start:end]))
                    start = end
            self._groups = tuple(groups)
        return self._groups


def _without(
    members: tuple[object, ...] | None, member: object
) -> tuple[object, ...] | None:
    """C{members} without C{member}, or None (made again when next needed)."""
    if members is None:
        return None
    try:
        at = members.index(member)
    except ValueError:
        return None
    if members[at] is not member:  # equal, not the same: a class's __eq__
        return None
    return members[:at] + members[at + 1 :]


def _groups_without(
    groups: "tuple[tuple[_DeliverAll, tuple[object, ...]], ...] | None",
    receiver: object,
) -> "tuple[tuple[_DeliverAll, tuple[object, ...]], ...] | None":
    """L{Room.groups} without C{receiver}, or None (made again when next needed)."""
    if not groups:
        return None
    for at, (deliver_all, members) in enumerate(groups):
        if members[0].__class__ is receiver.__class__:
            rest = _without(members, receiver)
            if rest is None:
                return None
            if not rest:
                return groups[:at] + groups[at + 1 :]
            return (*groups[:at], (deliver_all, rest), *groups[at + 1 :])
    return None


#: The key L{Room.receivers} are grouped by: their class's name.
_class_name = attrgetter("__class__.__qualname__")

#: A receiver class's C{deliver_all}: an event to each receiver but one.
_DeliverAll = Callable[[tuple[object, ...], Event, object], None]


class User:
    """What a registry knows of one registered client.

    Setting C{away} (whoever sets it: a registry, a cluster's hand-over)
    updates the list of everyone the index keeps (L{Rooms.user_infos}).
    """

    __slots__ = ("nickname", "rooms", "_away", "host", "_info", "_listing")

    def __init__(
        self, nickname: str, host: str | None, listing: "Rooms | None" = None
    ) -> None:
        self.nickname = nickname
        # A tuple, not a set: most users are in one room, and an empty set
        # alone is 216 bytes.
        self.rooms: tuple[str, ...] = ()
        self._away: str | None = None
        self.host = host
        self._info: UserInfo | None = None
        #: The index listing this user (L{Rooms.add}), told of a new away
        #: message; None once it has forgotten the user.
        self._listing = listing

    @property
    def away(self) -> str | None:
        """The away message, or None when the user is not away."""
        return self._away

    @away.setter
    def away(self, message: str | None) -> None:
        self._away = message
        if self._listing is not None:
            self._listing.relist(self)

    def info(self) -> UserInfo:
        """The user as lists show it.

        Made once, and again only when the nickname, away message or host
        changed (whoever changed them): every welcome in a small server
        lists everyone, and a frozen dataclass costs 0.4 us to make.
        """
        info = self._info
        if (
            info is None
            or info.nickname is not self.nickname
            or info.away is not self._away
            or info.host is not self.host
        ):
            info = self._info = UserInfo(self.nickname, self._away, self.host)
        return info


class Rooms:
    """The users here and their rooms; C{#lobby} always exists.

    @param history: how many lines each room's scrollback keeps.
    @param announce_max: the most members a room may have for joins and
        leaves in it to be announced; None announces them in every room.

    @ivar users: by client, what is known of it.
    @ivar by_fold: by folded nickname, the client.
    @ivar rooms: by name, the rooms that have members here (and the lobby).
    """

    #: The most users for whom the list of everyone is kept sorted (see
    #: L{user_infos}): a welcome lists everyone only in a small server
    #: (L{chatservice.welcome.WELCOME_NAMES}); a big one keeps no
    #: C{UserInfo} for each user (80 bytes a user) and sorts for C{/users}.
    LISTED_MOST = 256

    def __init__(self, history: int, announce_max: int | None) -> None:
        self.history = history
        self.announce_max = announce_max
        self.users: dict[IChatClient, User] = {}
        self.by_fold: dict[str, IChatClient] = {}
        self.rooms: dict[str, Room] = {LOBBY: Room(LOBBY, history)}
        # Everyone, as user_infos(None) lists them: their folded nicknames,
        # sorted, and their UserInfos in the same order.  Kept up to date
        # at each arrival, departure, rename and away message (a bisection
        # and an insertion or deletion), not made and sorted for each
        # welcome: every welcome in a small server lists everyone, and
        # every arrival changes the list.  None (not kept) beyond
        # LISTED_MOST users, until listed again with no more.
        self._folds: list[str] | None = []
        self._everyone: list[UserInfo] | None = []

    def add(self, client: IChatClient, nickname: str, key: str = "") -> User:
        """Index C{client} as C{nickname} (folded: C{key}, if given), in no room yet."""
        user = self.users[client] = User(nickname, client.host, self)
        key = key or fold(nickname)
        self.by_fold[key] = client
        self._list(key, user)
        return user

    def remove(self, client: IChatClient) -> User | None:
        """Forget C{client}, but not its rooms' membership; None if unknown."""
        user = self.users.pop(client, None)
        if user is not None:
            key = fold(user.nickname)
            del self.by_fold[key]
            self._unlist(key)
            user._listing = None
        return user

    def rename(self, client: IChatClient, nickname: str) -> str:
        """Give C{client} C{nickname}; return the old one."""
        user = self.users[client]
        old = user.nickname
        key = fold(nickname)
        del self.by_fold[fold(old)]
        self._unlist(fold(old))
        self.by_fold[key] = client
        user.nickname = nickname
        self._list(key, user)
        return old

    def relist(self, user: User) -> None:
        """Show C{user} in the list of everyone as it is now (its away message)."""
        folds, everyone = self._folds, self._everyone
        if folds is None or everyone is None:
            return
        key = fold(user.nickname)
        at = bisect_left(folds, key)
        if at < len(folds) and folds[at] == key:
            everyone[at] = user.info()

    def _list(self, key: str, user: User) -> None:
        folds, everyone = self._folds, self._everyone
        if folds is None or everyone is None:
            return
        if len(folds) >= self.LISTED_MOST:
            self._folds = self._everyone = None
            return
        at = bisect_left(folds, key)
        folds.insert(at, key)
        everyone.insert(at, user.info())

    def _unlist(self, key: str) -> None:
        folds, everyone = self._folds, self._everyone
        if folds is None or everyone is None:
            return
        at = bisect_left(folds, key)
        if at < len(folds) and folds[at] == key:
            del folds[at]
            del everyone[at]

    def enter(self, client: IChatClient, name: str) -> Room:
        """Put C{client} in room C{name}, creating it."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.history)
        self.users[client].rooms += (name,)
        room.add(client)
        return room

    def leave(self, client: IChatClient, name: str) -> None:
        """Take C{client} out of room C{name}; delete the room if it empties."""
        self.rooms[name].discard(client)
        self.forget_if_empty(name)

    def forget_if_empty(self, name: str) -> None:
        """Delete room C{name} if it has no member (the lobby stays)."""
        room = self.rooms.get(name)
        if room is not None and name != LOBBY and not len(room):
            del self.rooms[name]

    def swap(self, old: IChatClient, new: IChatClient) -> User:
        """Put C{new} in C{old}'s place: nickname, rooms, away; return it."""
        user = self.users.pop(old)
        self.users[new] = user
        self.by_fold[fold(user.nickname)] = new
        user.host = new.host
        self.relist(user)
        for name in user.rooms:
            room = self.rooms[name]
            room.discard(old)
            room.add(new)
        return user

    def announces(self, size: int) -> bool:
        """Whether joins and leaves are announced in a room of C{size}."""
        limit = self.announce_max
        return limit is None or size <= limit

    def neighbours(self, user: User, quiet: bool = False) -> Iterable[IChatClient]:
        """Everyone here who shares a room with C{user}, once each.

        With C{quiet}, only the rooms where joins and leaves are announced.
        """
        rooms = [self.rooms[name] for name in user.rooms]
        if quiet:
            rooms = [room for room in rooms if self.announces(len(room))]
        return in_rooms(rooms)

    def neighbour_receivers(self, user: User, quiet: bool = False) -> Iterable[object]:
        """L{neighbours}' receivers (L{IChatClient.receiver}), for L{tell}."""
        rooms = [self.rooms[name] for name in user.rooms]
        if quiet:
            rooms = [room for room in rooms if self.announces(len(room))]
        if len(rooms) == 1:
            return rooms[0].receivers
        return dict.fromkeys(each for room in rooms for each in room.receivers)

    def still_in(self, name: str, members: Iterable[IChatClient]) -> list[IChatClient]:
        """Those of C{members} who are still in room C{name}."""
        room = self.rooms.get(name)
        if room is None:
            return []
        return [client for client in members if client in room]

    def user_infos(self, room: str | None = None) -> list[UserInfo]:
        """The users in C{room} (everyone when None), sorted ignoring case."""
        users = self.users
        if room is None:
            if self._everyone is not None:
                return self._everyone[:]  # kept sorted (see __init__)
            # by_fold's keys are the keys to sort by, made already.
            listed = sorted(self.by_fold.items())
            infos = [users[client].info() for _, client in listed]
            if len(infos) <= self.LISTED_MOST:  # kept again from now on
                self._folds = [key for key, _ in listed]
                self._everyone = infos[:]
            return infos
        found = self.rooms.get(room)
        clients = found.recipients if found is not None else ()
        infos = [users[client].info() for client in clients]
        return sorted(infos, key=_folded)

    def room_infos(self) -> list[RoomInfo]:
        """Every room here, with its members here, sorted by name."""
        return [
            RoomInfo(name, len(room), room.topic)
            for name, room in sorted(self.rooms.items())
        ]


def _folded(info: UserInfo) -> str:
    """The key lists are sorted by: the nickname, ignoring case."""
    return fold(info.nickname)


def in_rooms(rooms: list[Room]) -> Iterable[IChatClient]:
    """The members of C{rooms}, once each: one room's own tuple if just one."""
    if len(rooms) == 1:
        return rooms[0].recipients
    return dict.fromkeys(client for room in rooms for client in room.recipients)


def deliver(
    recipients: Iterable[IChatClient], event: Event, skip: IChatClient | None
) -> None:
    """The fan-out loop: the same event to each recipient but C{skip}.

    What is not an L{Event} (a plugin's mistake) is refused here, once,
    before anyone is handed anything.
    """
    if event.__class__ is not Event:
        raise not_an_event(event)
    for client in recipients:
        if client is not skip:
            client.deliver(event)


def say_in(room: Room, event: Event, skip: IChatClient | None) -> None:
    """L{deliver} to a room's members but C{skip}: the fan-out of a line.

    The same, through the members' receivers (L{IChatClient.receiver}),
    one call per class of receivers (front end): its C{deliver_all}, which
    does what each one's C{deliver} would in one loop (the send queue's,
    L{chatservice.output.OutputMixin.deliver_all}: half the cost of a
    C{deliver} per recipient), or, for a class without one, calls each
    one's C{deliver}.
    """
    if event.__class__ is not Event:
        raise not_an_event(event)
    ignored = skip.receiver if skip is not None else None
    for deliver_all, receivers in room.groups:
        deliver_all(receivers, event, ignored)


def tell(receivers: Iterable[object], event: Event, skip: IChatClient | None) -> None:
    """L{say_in} to C{receivers} (L{Rooms.neighbour_receivers}) but C{skip}'s.

    For a join or a leave, told to a room's members as a line is: through
    their receivers, one call each, not two (a session's C{deliver} calls
    its connection's).
    """
    if event.__class__ is not Event:
        raise not_an_event(event)
    ignored = skip.receiver if skip is not None else None
    for receiver in receivers:
        if receiver is not ignored:
            receiver.deliver(event)  # type: ignore[attr-defined]
