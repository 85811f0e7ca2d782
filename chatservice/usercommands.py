"""The commands every user has: C{/nick}, C{/join}, C{/who}, C{/msg}...

Each is a L{chatservice.commands.Command} made with
L{chatservice.commands.command}, found by the plugin scan through
C{chatservice/plugins/builtin.py}; the checks every command gets (a
nickname first, enough arguments) happen in
L{chatservice.commands.dispatch}, not here.  The operators' commands are in
L{chatservice.moderation}, C{/resume} in L{chatservice.resume}.
"""

from math import ceil

from twisted.internet.defer import Deferred

from . import events
from .accountcommands import SERVICES, leave_for, nickserv, regain
from .commands import Result, command, say
from .errors import ChatError, NoSuchNickname, NoSuchRoom, UnknownCommand
from .interfaces import IChatSession, RoomInfo, Scrollback, UserInfo
from .paging import is_page_number, page_number, paged
from .reasons import CloseReason
from .text import check_nickname, check_room, fold
from .welcome import choose_nickname, names, show_scrollback


@command(
    "/nick NAME [PASSWORD]",
    "choose or change your nickname (with its password if it is registered)",
    1,
    before_registration=True,
)
def nick_command(session: IChatSession, args: str) -> Result:
    name, _, password = args.partition(" ")
    password = password.strip()
    if password and name == session.nickname:
        return session.server.commands["identify"](session, password)
    if session.nickname is not None and name == session.nickname:
        raise ChatError(f"you are already {name}")
    accounts = session.server.accounts
    if password and not accounts.is_registered(name) and accounts.ready:
        # Not quoted, and nothing changed: NAME may be the password, typed
        # first (/nick PASSWORD NAME), which a rename would show everyone.
        raise ChatError(
            "the nickname you gave with a password is not registered: nothing "
            "was changed, and the password was not used (/nick NAME alone "
            "takes a nickname)",
            "not_registered_nickname",
        )
    if password:
        check_nickname(name)  # before the password is kept for it
        # Checked once the nickname is this session's (see Accounts).
        accounts.expect(session, password)
    if session.nickname is None:
        d = choose_nickname(session, name)  # which checks it
    else:
        d = session.registry.rename(session, check_nickname(name))
        d.addCallback(session.renamed)
    if password and d is not None:  # None: registered and welcomed already
        d.addErrback(lambda failure: accounts.expect_nothing(session) or failure)
        # Held by someone who has not identified: the owner takes it back.
        d.addErrback(regain, session, name, password)
    return d


@command("/join #ROOM", "move to ROOM, creating it if it does not exist", 1)
def join_command(session: IChatSession, args: str) -> Result:
    room = check_room(args)
    old = session.room
    if room == old:
        raise ChatError(f"you are already in {room}")
    registry = session.registry
    history = session.server.history

    def joined(live: list[Scrollback]) -> Deferred[list[Scrollback]]:
        # Out of the old room as soon as in the new one: if what follows
        # (the scrollback, the topic) is slow and the command times out,
        # the user is still in one room, the one they are told of.
        registry.part(session, old, f"joined {room}")
        session.room = room
        hooks = session.server.hooks
        hooks.joined(session, room)
        hooks.left(session, old, f"joined {room}")
        return history.scrollback(room, live)

    d = registry.join(session, room).addCallback(joined)
    return d.addCallback(lambda lines: _describe_room(session, room, lines))


def _describe_room(
    session: IChatSession, room: str, history: list[Scrollback]
) -> Deferred[None]:
    registry = session.registry

    def show(topic: str) -> Deferred[None]:
        session.answer(events.now_in(room, topic))
        return who_command(session, "")

    d = registry.topic(room).addCallback(show)
    return d.addCallback(lambda _: show_scrollback(session, room, history))


#: Users per page of /who.  An away message is at most AWAY_MAX characters
#: (1.2 KB of UTF-8 at worst), so a page is at most about 37 KB: an answer
#: always far below --max-sendq, read in a tenth of a second on a slow link.
WHO_PAGE = 30
#: Users per page of /users, which shows no away messages: at most 7 KB.
USERS_PAGE = 200
#: Rooms per page of /rooms; a topic is at most TOPIC_MAX characters: 37 KB.
ROOMS_PAGE = 30


@command(
    "/who [#ROOM] [PAGE]",
    f"list who is in your room, or in ROOM, {WHO_PAGE} to a page",
)
def who_command(session: IChatSession, args: str) -> Deferred[None]:
    words = args.split()
    room = session.room
    if words and not is_page_number(words[0]):
        room = check_room(words.pop(0))
    page = page_number(words, "/who [#ROOM] [PAGE]")

    def show(users: list[UserInfo]) -> None:
        if not users and room != session.registry.lobby:
            raise NoSuchRoom(room)
        shown, label, note = paged(users, page, WHO_PAGE, f"/who {room}")
        listed = names(shown, away_messages=True)
        session.answer(
            events.notices([f"In {room} ({len(users)}){label}: {listed}", *note])
        )

    return session.registry.users(room).addCallback(show)


@command(
    "/users [PAGE]", f"list everyone online, in every room, {USERS_PAGE} to a page"
)
def users_command(session: IChatSession, args: str) -> Result:
    page = page_number(args.split(), "/users [PAGE]")

    def show(users: list[UserInfo]) -> None:
        shown, label, note = paged(users, page, USERS_PAGE, "/users")
        listed = names(shown)
        session.answer(
            events.notices([f"Online ({len(users)}){label}: {listed}", *note])
        )

    return session.registry.users().addCallback(show)


@command(
    "/rooms [PAGE]",
    f"list the rooms, with their members and topics, {ROOMS_PAGE} to a page",
)
def rooms_command(session: IChatSession, args: str) -> Result:
    page = page_number(args.split(), "/rooms [PAGE]")

    def show(rooms: list[RoomInfo]) -> None:
        shown, label, note = paged(rooms, page, ROOMS_PAGE, "/rooms")
        session.answer(
            events.notices(
                [
                    f"Rooms ({len(rooms)}){label}:",
                    *(
                        f"{room.name} ({room.members})"
                        + (f": {room.topic}" if room.topic else "")
                        for room in shown
                    ),
                    *note,
                ]
            )
        )

    return session.registry.rooms().addCallback(show)


#: The longest topic, in characters.  Every /rooms line and every /join
#: shows one: 300 is a long paragraph, and keeps a page of /rooms small.
TOPIC_MAX = 300
#: The longest away message, in characters: /who shows one per user.
AWAY_MAX = 300


def _check_length(text: str, limit: int, what: str) -> str:
    """Refuse C{text} if it is longer than C{limit} characters.

    Refused, not cut: the user sees exactly what the others will see, or an
    error that says why not.
    """
    if len(text) > limit:
        raise ChatError(
            f"{what} is at most {limit} characters, and yours has {len(text)}; "
            "nothing was changed"
        )
    return text


@command(
    "/topic [TEXT]",
    "show your room's topic, or set it to TEXT",
)
def topic_command(session: IChatSession, args: str) -> Result:
    room = session.room
    if args:
        session.registry.set_topic(
            session, room, _check_length(args, TOPIC_MAX, "a topic")
        )
        return None

    def show(topic: str) -> None:
        if topic:
            session.answer(events.notice(f"Topic of {room}: {topic}"))
        else:
            session.answer(
                events.notice(f"{room} has no topic; set one with /topic TEXT")
            )

    return session.registry.topic(room).addCallback(show)


@command(
    "/away [TEXT]",
    "mark yourself away with TEXT, or back without it",
)
def away_command(session: IChatSession, args: str) -> Result:
    session.registry.set_away(
        session, _check_length(args, AWAY_MAX, "an away message") or None
    )
    if args:
        session.answer(events.notice(f"You are marked as away: {args}"))
    else:
        session.answer(events.notice("You are no longer marked as away."))
    return None


@command("/me ACTION", "act, shown as * yourname ACTION", 1, multi_line=True)
def me_command(session: IChatSession, args: str) -> Result:
    return say(session, args, events.action)


@command(
    "/msg NICK TEXT", "send TEXT privately to NICK, in any room", 2, multi_line=True
)
def msg_command(session: IChatSession, args: str) -> Result:
    target, text = args.split(None, 1)
    if fold(target) in SERVICES:
        # IRC clients send passwords there: never to a user of that name.
        return nickserv(session, text)
    try:
        check_nickname(target)
    except ChatError:
        raise NoSuchNickname(target) from None
    data = events.private(session.nickname, text)
    # What others send one user is limited, whoever sends it, so that no
    # number of senders can fill a reader's send queue faster than a slow
    # link empties it (they could get it disconnected): the excess is
    # refused here, to its sender, before it is queued anywhere.
    server = session.server
    wait = server.private_allowance.spend(
        fold(target), len(data.line), server.clock.seconds()
    )
    if wait:
        rate = server.settings.private_rate / 1024
        raise ChatError(
            f"{target} is being sent too many private messages (at most "
            f"{rate:g} KiB a second from everyone together); yours was not "
            f"sent: try again in {ceil(wait)} second{'s' if ceil(wait) != 1 else ''}"
        )
    d = session.registry.send_private(target, data)

    def sent(user: UserInfo) -> None:
        session.answer(events.private_echo(user.nickname, text))
        if user.away is not None:
            session.answer(events.notice(f"{user.nickname} is away: {user.away}"))

    # To a registered user who is offline, it is kept for them.
    return d.addCallbacks(sent, leave_for, errbackArgs=(session, target, text))


@command(
    "/ping [TOKEN]",
    "check the connection: the server answers *** PONG TOKEN",
    before_registration=True,
)
def ping_command(session: IChatSession, args: str) -> Result:
    session.answer(events.pong(args))
    return None


@command(
    "/quit [REASON]", "leave the chat, telling the others why", before_registration=True
)
def quit_command(session: IChatSession, args: str) -> Result:
    session.quit(CloseReason.quit(args))
    return None


@command(
    "/help [COMMAND]",
    "list the commands, or show how to use one",
    before_registration=True,
)
def help_command(session: IChatSession, args: str) -> Result:
    table = session.server.commands
    if args:
        entry = table.get(args.lstrip("/").lower())
        if entry is None:
            raise UnknownCommand(args.lstrip("/"))
        session.answer(events.notices([f"usage: {entry.usage}", entry.help]))
        return None
    # Operator commands are listed to operators only.
    shown = [
        entry
        for entry in table.values()
        if session.operator is not None or not entry.operator_only
    ]
    width = max(len(entry.usage) for entry in shown)
    session.answer(
        events.notices(
            [
                "Commands (a line without / is chat; // sends a line starting with /):",
                *(f"{entry.usage:<{width}}  {entry.help}" for entry in shown),
            ]
        )
    )
    return None
