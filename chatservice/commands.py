"""What a line means: chat, a nickname, or a command from the table.

L{dispatch} is the one entry point: the protocol hands it each clean input
line.  Commands are data: L{ICommand} plugins (the built-in ones are
L{Command}s declared here with L{command}), collected in the server's
C{commands} table by L{chatservice.extensions}.  The checks that apply to
every command (does it exist, does it need a nickname, enough arguments?),
and the handling of a command that crashes or hangs, happen once, in
L{dispatch}; C{/help} is generated from the table.  Errors are raised as
L{ChatError}s; the protocol shows them.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import ceil
from time import perf_counter

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from . import wire
from .errors import (
    ChatError,
    NoSuchNickname,
    NoSuchRoom,
    NotRegistered,
    UnknownCommand,
    UsageError,
)
from .interfaces import IChatSession, ICommand, RoomInfo, Scrollback, UserInfo
from .logs import gate
from .paging import is_page_number, page_number, paged
from .reasons import CloseReason
from .text import check_nickname, check_room, fold, sanitise

log = Logger(observer=gate)

Result = Deferred[object] | None


@implementer(IPlugin, ICommand)
@dataclass(frozen=True, slots=True)
class Command:
    """One entry of the command table; see L{ICommand}."""

    name: str
    run: Callable[[IChatSession, str], Result]
    usage: str
    help: str
    min_args: int = 0
    before_registration: bool = False
    operator_only: bool = False

    def __call__(self, session: IChatSession, args: str) -> Result:
        """Run the command; see L{ICommand.__call__}."""
        return self.run(session, args)


def command(
    usage: str,
    help: str,
    min_args: int = 0,
    before_registration: bool = False,
    operator_only: bool = False,
) -> Callable[[Callable[[IChatSession, str], Result]], Command]:
    """Make the decorated function a L{Command}, named by its C{usage}.

    Put the result at module level in a module of C{chatservice.plugins}
    and the server finds it.
    """

    def make(run: Callable[[IChatSession, str], Result]) -> Command:
        name = usage.split()[0].lstrip("/").lower()
        return Command(
            name, run, usage, help, min_args, before_registration, operator_only
        )

    return make


def dispatch(session: IChatSession, text: str) -> Result:
    """Act on one clean input line from C{session}.

    A line starting with C{/} is a command, except that C{//} escapes a
    chat line that starts with C{/}.  Before registration any other line is
    a nickname; after it, a chat line for the user's room.  Blank lines are
    ignored.  A bare C{QUIT} is L{quit_command}: see L{_is_bare_quit}.
    """
    if not text.strip():
        return None
    if _is_bare_quit(session, text):
        return _run(session, "quit", "")
    if text[0] == "/":
        if text[:2] != "//":
            name, _, args = text[1:].partition(" ")
            return _run(session, name, args.strip())
        text = text[1:]
    if session.nickname is None:
        return _choose_nickname(session, text.strip())
    return say(session, text, wire.chat)


def _is_bare_quit(session: IChatSession, text: str) -> bool:
    """Whether C{text} is the C{QUIT} line simple chat clients send to leave.

    Only upper-case C{QUIT} alone on its line, as those clients (and IRC)
    send it: C{quit} or C{Quit} may well be chat.  Before registration,
    where a line is a nickname with its surrounding spaces removed, those
    spaces are ignored here too, so C{QUIT} is never taken as a nickname.
    With the C{quit} command disabled, the line is what it would otherwise be.
    """
    if text != "QUIT" and (session.nickname is not None or text.strip() != "QUIT"):
        return False
    return "quit" in session.server.commands


def say(
    session: IChatSession, text: str, format: Callable[[str, str], bytes]
) -> Result:
    """Pass C{text} through the message filters, then say it in the room.

    C{format} makes the wire line from the nickname and the (filtered)
    text: L{wire.chat} or L{wire.action}.
    """
    room = session.room
    filters = session.server.filters
    if not filters:
        _say(session, room, format(session.nickname, text))
        return None
    d: Deferred[object] = Deferred()
    for message_filter in filters:
        d.addCallback(_apply_filter, message_filter, session, room)
    d.addCallback(
        lambda text: _say(session, room, format(session.nickname, sanitise(text)))
    )
    d.callback(text)
    return _bounded(d, session, "your line was not sent")


def _say(session: IChatSession, room: str, data: bytes) -> None:
    """Hand C{data} to the room's members, timed for the fan-out metric."""
    start = perf_counter()
    session.registry.say(room, data, session)
    session.server.stats.fanout.observe(perf_counter() - start)


def _apply_filter(
    text: str, message_filter: object, session: IChatSession, room: str
) -> Deferred[object]:
    name = message_filter.name  # type: ignore[attr-defined]
    d = maybeDeferred(message_filter.filter, session, room, text)  # type: ignore[attr-defined]
    return d.addErrback(_contain, f"your line was not sent: the {name} filter failed")


def _run(session: IChatSession, name: str, args: str) -> Result:
    entry = session.server.commands.get(name.lower())
    if entry is None:
        raise UnknownCommand(name)
    if session.nickname is None and not entry.before_registration:
        raise NotRegistered()
    if entry.operator_only and session.operator is None:
        raise ChatError(f"/{entry.name} is for operators")
    if len(args.split(None, entry.min_args)) < entry.min_args:
        raise UsageError(entry.usage)
    return _bounded(
        maybeDeferred(entry, session, args), session, f"/{entry.name} failed"
    )


def _bounded(d: Deferred[object], session: IChatSession, what: str) -> Deferred[object]:
    """Give plugin work still running the command timeout; contain failures."""
    fired: list[object] = []
    d.addBoth(lambda result: fired.append(result) or result)
    if not fired:
        d.addTimeout(session.server.settings.command_timeout, session.server.clock)
    return d.addErrback(_contain, what)


def _contain(failure: Failure, what: str) -> Failure:
    """Turn a plugin's crash or hang into a C{!!! } line; log the crash."""
    if failure.check(ChatError):
        return failure
    if failure.check(CancelledError, DeferredTimeout):
        raise ChatError(f"{what}: it took too long and was cancelled")
    log.failure("{what}", failure, what=what)
    raise ChatError(f"{what} because of a server error; it was logged")


def _choose_nickname(session: IChatSession, name: str) -> Result:
    d = session.registry.register(session, check_nickname(name))
    d.addCallback(session.registered)
    d.addCallback(_welcome, session)
    return d


#: The most users the welcome lists by name; beyond it, it gives the count.
WELCOME_NAMES = 20


def _welcome(nickname: str, session: IChatSession) -> Result:
    if session.closing:
        return None  # it went while the registry was deciding
    registry = session.registry

    def online(count: int) -> Deferred[str]:
        # Listing (and sorting) everyone for every arrival would make a
        # crowd's arrival cost time quadratic in its size.
        if count > WELCOME_NAMES:
            return succeed(f"Online ({count}): /users lists them")
        return registry.users().addCallback(
            lambda users: f"Online ({len(users)}): {_names(users)}"
        )

    def greet(who: str) -> Deferred[list[Scrollback]]:
        session.answer(
            wire.welcome(nickname, who)
            + wire.notice("Type /help for the commands.")
            + b"".join(wire.notice(line) for line in session.server.motd)
        )
        # Already in the lobby: this only fetches its scrollback.
        return registry.join(session, registry.lobby)

    def finish(history: list[Scrollback]) -> None:
        session.answer(_scrollback(session.room, history))
        token = session.server.sessions.issue(session)
        if token is not None:
            session.answer(wire.resume_token(nickname, token))

    return registry.count().addCallback(online).addCallback(greet).addCallback(finish)


def _names(users: Sequence[UserInfo], away_messages: bool = False) -> str:
    """The users' nicknames, marked when away (with why, if asked)."""

    def name(user: UserInfo) -> str:
        if user.away is None:
            return user.nickname
        return (
            f"{user.nickname} (away: {user.away})"
            if away_messages
            else (f"{user.nickname} (away)")
        )

    return ", ".join(map(name, users))


def _scrollback(room: str, history: list[Scrollback]) -> bytes:
    """The lines said in C{room} before, stamped and framed as not live."""
    if not history:
        return b""
    return (
        wire.notice(
            f"Scrollback of {room}, {len(history)} "
            f"line{'s' if len(history) != 1 else ''}, times in UTC:"
        )
        + b"".join([line.stamped for line in history])
        + wire.notice(f"End of scrollback of {room}.")
    )


@command("/nick NAME", "choose or change your nickname", 1, before_registration=True)
def nick_command(session: IChatSession, args: str) -> Result:
    if session.nickname is None:
        return _choose_nickname(session, args)
    if args == session.nickname:
        raise ChatError(f"you are already {args}")
    d = session.registry.rename(session, check_nickname(args))
    return d.addCallback(session.renamed)


@command("/join #ROOM", "move to ROOM, creating it if it does not exist", 1)
def join_command(session: IChatSession, args: str) -> Result:
    room = check_room(args)
    old = session.room
    if room == old:
        raise ChatError(f"you are already in {room}")
    registry = session.registry

    def joined(history: list[Scrollback]) -> Deferred[None]:
        registry.part(session, old, f"joined {room}")
        session.room = room
        return _describe_room(session, room, history)

    return registry.join(session, room).addCallback(joined)


def _describe_room(
    session: IChatSession, room: str, history: list[Scrollback]
) -> Deferred[None]:
    registry = session.registry

    def show(topic: str) -> Deferred[None]:
        session.answer(wire.now_in(room, topic))
        return who_command(session, "")

    d = registry.topic(room).addCallback(show)
    return d.addCallback(lambda _: session.answer(_scrollback(room, history)))


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
        names = _names(shown, away_messages=True)
        session.answer(wire.notice(f"In {room} ({len(users)}){label}: {names}") + note)

    return session.registry.users(room).addCallback(show)


@command(
    "/users [PAGE]", f"list everyone online, in every room, {USERS_PAGE} to a page"
)
def users_command(session: IChatSession, args: str) -> Result:
    page = page_number(args.split(), "/users [PAGE]")

    def show(users: list[UserInfo]) -> None:
        shown, label, note = paged(users, page, USERS_PAGE, "/users")
        names = _names(shown)
        session.answer(wire.notice(f"Online ({len(users)}){label}: {names}") + note)

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
            wire.notice(f"Rooms ({len(rooms)}){label}:")
            + b"".join(
                wire.notice(
                    f"{room.name} ({room.members})"
                    + (f": {room.topic}" if room.topic else "")
                )
                for room in shown
            )
            + note
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
            session.answer(wire.notice(f"Topic of {room}: {topic}"))
        else:
            session.answer(
                wire.notice(f"{room} has no topic; set one with /topic TEXT")
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
        session.answer(wire.notice(f"You are marked as away: {args}"))
    else:
        session.answer(wire.notice("You are no longer marked as away."))
    return None


@command("/me ACTION", "act, shown as * yourname ACTION", 1)
def me_command(session: IChatSession, args: str) -> Result:
    return say(session, args, wire.action)


@command("/msg NICK TEXT", "send TEXT privately to NICK, in any room", 2)
def msg_command(session: IChatSession, args: str) -> Result:
    target, text = args.split(None, 1)
    try:
        check_nickname(target)
    except ChatError:
        raise NoSuchNickname(target) from None
    data = wire.private(session.nickname, text)
    # What others send one user is limited, whoever sends it, so that no
    # number of senders can fill a reader's send queue faster than a slow
    # link empties it (they could get it disconnected): the excess is
    # refused here, to its sender, before it is queued anywhere.
    server = session.server
    wait = server.private_allowance.spend(
        fold(target), len(data), server.clock.seconds()
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
        echo = wire.private_echo(user.nickname, text)
        if user.away is not None:
            echo += wire.notice(f"{user.nickname} is away: {user.away}")
        session.answer(echo)

    return d.addCallback(sent)


@command(
    "/ping [TOKEN]",
    "check the connection: the server answers *** PONG TOKEN",
    before_registration=True,
)
def ping_command(session: IChatSession, args: str) -> Result:
    session.answer(wire.pong(args))
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
        session.answer(wire.notice(f"usage: {entry.usage}") + wire.notice(entry.help))
        return None
    # Operator commands are listed to operators only.
    shown = [
        entry
        for entry in table.values()
        if session.operator is not None or not entry.operator_only
    ]
    width = max(len(entry.usage) for entry in shown)
    session.answer(
        wire.notice(
            "Commands (a line without / is chat; // sends a line starting with /):"
        )
        + b"".join(
            wire.notice(f"{entry.usage:<{width}}  {entry.help}") for entry in shown
        )
    )
    return None
