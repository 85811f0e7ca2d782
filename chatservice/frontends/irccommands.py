"""What an IRC client's messages mean: the IRC command table.

Like the line commands (L{chatservice.commands}), commands are data: each
entry says whether it works before registration and how many parameters
it needs, and those checks (C{451}, C{461}) and the unknown command
(C{421}) happen once, in L{dispatch}.  A handler answers with numerics
(raising L{Numeric} for an error), and acts through the session and the
registry like any line command: the same rooms, nicknames, filters and
limits.  A command the IRC table lacks but a plugin provides (C{ROLL 2d6},
sent by C{/quote roll 2d6}) runs as that plugin's line command; its
answers come as notices.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols import irc

from .. import __version__, events
from ..commands import say
from ..errors import ChatError, InvalidName, NicknameInUse, NoSuchNickname
from ..interfaces import RoomInfo, Scrollback, UserInfo
from ..logs import gate
from ..reasons import CloseReason
from ..text import NICKNAME_MAX, check_nickname, check_room, fold, sanitise
from ..usercommands import AWAY_MAX, TOPIC_MAX, msg_command
from ..welcome import scrollback
from .ircformat import (
    LINE_MAX,
    SERVER,
    mask,
    message,
    notices,
    shared,
    shared_timed,
    tagged,
)

log = Logger(observer=gate)

#: An IRC connection (L{chatservice.frontends.irc.IRCProtocol}); not
#: imported, as that module imports this one.
Connection = Any
Handler = Callable[[Connection, list[str]], "Deferred[object] | None"]

#: The most channels one IRC user may be in at once (ISUPPORT's CHANLIMIT).
CHANNELS_MAX = 50
#: The most targets of one PRIVMSG or NOTICE (ISUPPORT's TARGMAX).
TARGETS_MAX = 4
#: The capabilities offered to CAP LS.
CAPABILITIES = ("server-time",)
#: The formatting codes of IRC clients (bold, colour, reset, reverse,
#: italic, underline, ...): stripped from what reaches the chat core.
_FORMATTING = frozenset("\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f")


class Numeric(Exception):
    """An error answered with an IRC numeric: C{code} and its parameters."""

    def __init__(self, code: str, *params: str) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params = params


@dataclass(frozen=True, slots=True)
class Entry:
    """One IRC command: its handler, and the checks every call gets."""

    run: Handler
    min_params: int = 0
    before_registration: bool = False


COMMANDS: dict[str, Entry] = {}


def _command(
    name: str, min_params: int = 0, before_registration: bool = False
) -> Callable[[Handler], Handler]:
    def add(run: Handler) -> Handler:
        COMMANDS[name] = Entry(run, min_params, before_registration)
        return run

    return add


def dispatch(conn: Connection, command: str, params: list[str]) -> None:
    """Act on one parsed message from C{conn}'s client; see the module."""
    session = conn.session
    # What is echoed in numerics, and every parameter but a message's text
    # (whose CTCP quoting is read first), is clean text from here on.
    command = sanitise(command)
    if not command:
        return
    cut = 1 if command in ("PRIVMSG", "NOTICE") else len(params)
    params[:cut] = [clean(param) for param in params[:cut]]
    entry = COMMANDS.get(command)
    if entry is None:
        _plugin_command(conn, command, params)
        return
    if session.nickname is None and not entry.before_registration:
        conn.numeric(irc.ERR_NOTREGISTERED, "You have not registered")
        return
    if len(params) < entry.min_params:
        conn.numeric(irc.ERR_NEEDMOREPARAMS, command, "Not enough parameters")
        return
    try:
        result = entry.run(conn, params)
    except Exception:
        _failed(Failure(), conn)
        return
    if result is not None:
        _wait(conn, result)


def _plugin_command(conn: Connection, command: str, params: list[str]) -> None:
    """A plugin's (or a line-only) command, run as its line command."""
    session = conn.session
    name = command.lower()
    if name not in session.server.commands or not name.isalnum():
        conn.numeric(irc.ERR_UNKNOWNCOMMAND, command, "Unknown command")
    elif session.nickname is None:
        conn.numeric(irc.ERR_NOTREGISTERED, "You have not registered")
    else:
        session.received(" ".join([f"/{name}", *params]))


def _wait(conn: Connection, d: "Deferred[object]") -> None:
    """Read no further message until C{d} fires: messages keep their order."""
    d.addErrback(_failed, conn)
    fired: list[object] = []
    d.addBoth(fired.append)
    if not fired:
        conn.pause_input("command")
        d.addBoth(lambda _: conn.resume_input("command"))


def _failed(failure: Failure, conn: Connection) -> None:
    if failure.check(Numeric):
        conn.numeric(failure.value.code, *failure.value.params)
    elif failure.check(ChatError):
        conn.session.answer(events.error(failure.getErrorMessage(), "error"))
    else:
        log.failure(
            "connection {connection_id}: an IRC command failed",
            failure,
            connection_id=conn.connection_id,
        )
        conn.session.answer(
            events.error("that failed because of a server error; it was logged")
        )


def clean(text: str) -> str:
    """Text from an IRC client as the chat core takes it: no formatting."""
    if not _FORMATTING.isdisjoint(text):
        text = irc.stripFormatting(text)
    return sanitise(text)


# Registration --------------------------------------------------------------


@_command("CAP", 1, before_registration=True)
def cap(conn: Connection, params: list[str]) -> None:
    """IRCv3 capability negotiation: C{server-time} is offered."""
    who = conn.session.nickname or "*"
    sub = params[0].upper()
    if sub == "LS":
        if conn.session.nickname is None:
            conn.cap_negotiating = True
        conn.send("CAP", who, "LS", " ".join(CAPABILITIES))
    elif sub == "LIST":
        conn.send("CAP", who, "LIST", "server-time" if conn.server_time else "")
    elif sub == "REQ":
        asked = params[1] if len(params) > 1 else ""
        if asked.split() and all(cap in CAPABILITIES for cap in asked.split()):
            conn.server_time = True
            conn._encoder = shared_timed
            conn.send("CAP", who, "ACK", asked)
        else:
            conn.send("CAP", who, "NAK", asked)
    elif sub == "END":
        conn.cap_negotiating = False
        return _register(conn)
    else:
        conn.numeric("410", params[0], "Invalid CAP command")
    return None


@_command("PASS", 1, before_registration=True)
def pass_(conn: Connection, params: list[str]) -> None:
    """No password is needed: PASS is ignored (but only before registration)."""
    if conn.session.nickname is not None:
        raise Numeric(irc.ERR_ALREADYREGISTRED, "You may not reregister")


@_command("USER", 4, before_registration=True)
def user(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """USER's fields are not used: every user's mask is nick!nick@chatservice."""
    if conn.session.nickname is not None:
        raise Numeric(irc.ERR_ALREADYREGISTRED, "You may not reregister")
    conn.user_given = True
    return _register(conn)


@_command("NICK", before_registration=True)
def nick(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Choose a nickname, or change it; the same namespace as every front end."""
    if not params or not params[0]:
        raise Numeric("431", "No nickname given")
    name = params[0]
    try:
        check_nickname(name)
    except InvalidName:
        raise Numeric(irc.ERR_ERRONEUSNICKNAME, name, "Erroneous nickname") from None
    session = conn.session
    if session.nickname is None:
        conn.nick_wanted = name
        return _register(conn)
    if name == session.nickname:
        return None
    old = session.nickname

    def renamed(new: str) -> None:
        session.renamed(new)
        if not conn.channels:  # else the registry tells it with its rooms
            conn._answer_raw(message(mask(old), "NICK", new, trailing=False))

    def taken(failure: Failure) -> None:
        failure.trap(NicknameInUse)
        raise Numeric(irc.ERR_NICKNAMEINUSE, name, "Nickname is already in use")

    return session.registry.rename(session, name).addCallbacks(renamed, taken)


def _register(conn: Connection) -> "Deferred[object] | None":
    """Register once NICK and USER are given and CAP negotiation is over."""
    session = conn.session
    name = conn.nick_wanted
    if (
        session.nickname is not None
        or name is None
        or not conn.user_given
        or conn.cap_negotiating
    ):
        return None
    registry = session.registry

    def taken(failure: Failure) -> None:
        failure.trap(NicknameInUse)
        conn.nick_wanted = None
        raise Numeric(irc.ERR_NICKNAMEINUSE, name, "Nickname is already in use")

    def registered(nickname: str) -> "Deferred[object] | None":
        session.registered(nickname)
        if session.closing:
            return None  # it went while the registry was deciding
        _welcome(conn, nickname)
        # Every user starts in the lobby, on every front end.
        d = registry.join(session, registry.lobby).addCallback(
            lambda history: _show_join(conn, registry.lobby, history)
        )
        # The hooks plugins hear of it (and of the lobby) once it is queued.
        return d.addBoth(_hooks_registered, session)

    return registry.register(session, name).addCallbacks(registered, taken)


def _hooks_registered(result: object, session: Any) -> object:
    session.server.hooks.registered(session)
    return result


def _welcome(conn: Connection, nickname: str) -> None:
    settings = conn.factory.settings
    conn.numeric(irc.RPL_WELCOME, f"Welcome to chatservice, {nickname}")
    conn.numeric(irc.RPL_YOURHOST, f"Your host is {SERVER}, running {__version__}")
    conn.numeric(irc.RPL_CREATED, "This server speaks chatservice's chat over IRC")
    conn.numeric(irc.RPL_MYINFO, SERVER, __version__, "o", "")
    conn.numeric(
        irc.RPL_ISUPPORT,
        "CASEMAPPING=ascii",
        "CHANTYPES=#",
        "CHANMODES=,,,",
        "PREFIX=",
        f"CHANLIMIT=#:{CHANNELS_MAX}",
        "CHANNELLEN=33",
        f"NICKLEN={NICKNAME_MAX}",
        f"TOPICLEN={TOPIC_MAX}",
        f"AWAYLEN={AWAY_MAX}",
        f"LINELEN={max(settings.max_line, LINE_MAX) + 2}",
        f"TARGMAX=PRIVMSG:{TARGETS_MAX},NOTICE:{TARGETS_MAX}",
        "NETWORK=chatservice",
        "are supported by this server",
    )
    motd(conn, [])


@_command("MOTD", before_registration=False)
def motd(conn: Connection, params: list[str]) -> None:
    """The message of the day (C{--motd}), or 422 without one."""
    lines = conn.factory.motd
    if not lines:
        conn.numeric(irc.ERR_NOMOTD, "MOTD File is missing")
        return
    conn.numeric(irc.RPL_MOTDSTART, f"- {SERVER} Message of the day - ")
    for line in lines:
        conn.numeric(irc.RPL_MOTD, f"- {line}")
    conn.numeric(irc.RPL_ENDOFMOTD, "End of /MOTD command.")


# Connection --------------------------------------------------------------


@_command("PING", before_registration=True)
def ping(conn: Connection, params: list[str]) -> None:
    """Answer with PONG and the same token."""
    if not params:
        raise Numeric("409", "No origin specified")
    conn.send("PONG", SERVER, params[-1])


@_command("PONG", before_registration=True)
def pong(conn: Connection, params: list[str]) -> None:
    """An answer to the server's PING: any input counts as one."""


@_command("QUIT", before_registration=True)
def quit_(conn: Connection, params: list[str]) -> None:
    """Leave; the others are told the message."""
    text = clean(params[0]) if params else ""
    who = conn.session.nickname or "*"
    conn.send("ERROR", f"Closing link: {who} (quit: {text})", prefix=None)
    conn.session.close(CloseReason.quit(text))


# Channels --------------------------------------------------------------------


@_command("JOIN", 1)
def join(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Join each channel of a comma-separated list (C{0}: part them all)."""
    if params[0] == "0":
        return part(conn, [",".join(sorted(conn.channels))])
    d: Deferred[object] = succeed(None)
    for name in params[0].split(","):
        d.addCallback(lambda _, name=name: _join_one(conn, name))
    return d


def _join_one(conn: Connection, name: str) -> "Deferred[object] | None":
    try:
        room = check_room(name)
    except InvalidName:
        conn.numeric(irc.ERR_NOSUCHCHANNEL, name, "No such channel")
        return None
    if room in conn.channels:
        return None
    if len(conn.channels) >= CHANNELS_MAX:
        conn.numeric("405", name, "You have joined too many channels")
        return None
    session = conn.session
    d = session.registry.join(session, room).addCallback(
        lambda history: _show_join(conn, room, history)
    )
    return d.addCallback(lambda _: session.server.hooks.joined(session, room))


def _show_join(
    conn: Connection, room: str, history: list[Scrollback]
) -> "Deferred[object]":
    """Tell the client it joined C{room}: JOIN, topic, names, scrollback."""
    session = conn.session
    conn.channels.add(room)
    session.room = room
    conn._answer_raw(message(mask(session.nickname), "JOIN", room, trailing=False))

    def show_topic(topic: str) -> "Deferred[object]":
        if topic:
            conn.numeric(irc.RPL_TOPIC, room, topic)
        return _names(conn, room)

    d = session.registry.topic(room).addCallback(show_topic)
    return d.addCallback(lambda _: _scrollback(conn, room, history))


def _scrollback(conn: Connection, room: str, history: list[Scrollback]) -> None:
    """The room's last lines: with their time, or as a block of notices."""
    if conn.server_time:
        for line in history:
            conn._answer_raw(tagged(line.when, shared(line.event)))
        return
    for event in scrollback(room, history):
        conn._answer_raw(notices(room, event.line.decode("utf-8").split("\r\n")[:-1]))


@_command("PART", 1)
def part(conn: Connection, params: list[str]) -> None:
    """Leave each channel of a comma-separated list."""
    session = conn.session
    reason = clean(params[1]) if len(params) > 1 else ""
    for name in filter(None, params[0].split(",")):
        room = name.lower()
        if room not in conn.channels:
            conn.numeric(irc.ERR_NOTONCHANNEL, name, "You're not on that channel")
            continue
        session.registry.part(session, room, reason)
        session.server.hooks.left(session, room, reason)
        conn.channels.discard(room)
        conn._answer_raw(message(mask(session.nickname), "PART", room, reason))
        if session.room == room:
            session.room = min(conn.channels, default=session.registry.lobby)


def _member(conn: Connection, name: str) -> str:
    room = name.lower()
    if room not in conn.channels:
        raise Numeric(irc.ERR_NOTONCHANNEL, name, "You're not on that channel")
    return room


@_command("TOPIC", 1)
def topic(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Show a channel's topic, or set it (every member is told)."""
    session = conn.session
    room = _member(conn, params[0])
    if len(params) > 1:
        text = clean(params[1])
        if len(text) > TOPIC_MAX:
            raise ChatError(f"a topic is at most {TOPIC_MAX} characters")
        session.registry.set_topic(session, room, text)
        return None

    def show(text: str) -> None:
        if text:
            conn.numeric(irc.RPL_TOPIC, room, text)
        else:
            conn.numeric(irc.RPL_NOTOPIC, room, "No topic is set")

    return session.registry.topic(room).addCallback(show)


@_command("NAMES")
def names(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Who is in each channel named (none named: nothing but the end)."""
    if not params:
        conn.numeric(irc.RPL_ENDOFNAMES, "*", "End of /NAMES list.")
        return None
    d: Deferred[object] = succeed(None)
    for room in [name.lower() for name in params[0].split(",")]:
        d.addCallback(lambda _, room=room: _names(conn, room))
    return d


def _names(conn: Connection, room: str) -> "Deferred[object]":
    def show(users: list[UserInfo]) -> None:
        me = conn.session.nickname
        head = len(f":{SERVER} 353 {me} = {room} :".encode())
        line: list[str] = []
        size = head
        for user in users:
            if line and size + len(user.nickname) + 1 > LINE_MAX:
                conn.numeric(irc.RPL_NAMREPLY, "=", room, " ".join(line))
                line, size = [], head
            line.append(user.nickname)
            size += len(user.nickname) + 1
        if line:
            conn.numeric(irc.RPL_NAMREPLY, "=", room, " ".join(line))
        conn.numeric(irc.RPL_ENDOFNAMES, room, "End of /NAMES list.")

    return conn.session.registry.users(room).addCallback(show)


@_command("LIST")
def list_(conn: Connection, params: list[str]) -> "Deferred[object]":
    """Every room, with its members and topic."""
    wanted = {name.lower() for name in params[0].split(",")} if params else None

    def show(rooms: list[RoomInfo]) -> None:
        conn.numeric("321", "Channel", "Users  Name")
        for room in rooms:
            if wanted is None or room.name in wanted:
                conn.numeric(irc.RPL_LIST, room.name, str(room.members), room.topic)
        conn.numeric(irc.RPL_LISTEND, "End of /LIST")

    return conn.session.registry.rooms().addCallback(show)


# Messages --------------------------------------------------------------------


@_command("PRIVMSG")
def privmsg(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Say something in channels, or to nicknames (CTCP ACTION is /me)."""
    return _message(conn, params, loud=True)


@_command("NOTICE")
def notice(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Like PRIVMSG, but no error is ever answered (RFC 2812 3.3.2)."""
    return _message(conn, params, loud=False)


def _message(
    conn: Connection, params: list[str], loud: bool
) -> "Deferred[object] | None":
    if not params or not params[0]:
        if loud:
            conn.numeric(irc.ERR_NORECIPIENT, "No recipient given (PRIVMSG)")
        return None
    if len(params) < 2 or not params[1]:
        if loud:
            conn.numeric(irc.ERR_NOTEXTTOSEND, "No text to send")
        return None
    text = params[1]
    actions: list[str] = []
    if "\x01" in text:
        parts = irc.ctcpExtract(text)
        actions = [
            clean(data or "") for tag, data in parts["extended"] if tag == "ACTION"
        ]
        text = " ".join(parts["normal"])
    text = clean(text)
    targets = list(filter(None, params[0].split(",")))
    if len(targets) > TARGETS_MAX:
        # One message (one flood token) must not buy a line to many.
        if loud:
            conn.numeric("407", params[0], f"Too many targets (at most {TARGETS_MAX})")
        return None
    d: Deferred[object] = succeed(None)
    for target in targets:
        for action in filter(None, actions):
            d.addCallback(lambda _, t=target, a=action: _send(conn, t, a, True, loud))
        if text.strip():
            d.addCallback(lambda _, t=target: _send(conn, t, text, False, loud))
    if not loud:
        d.addErrback(lambda failure: failure.trap(Numeric, ChatError) and None)
    return d


def _send(
    conn: Connection, target: str, text: str, action: bool, loud: bool
) -> "Deferred[object] | None":
    session = conn.session
    if target[0] == "#":
        room = target.lower()
        if room not in conn.channels:
            raise Numeric(irc.ERR_CANNOTSENDTOCHAN, target, "Cannot send to channel")
        session.room = room
        return say(session, text, events.action if action else events.chat, room)
    if action:
        text = f"* {session.nickname} {text}"

    def missing(failure: Failure) -> None:
        failure.trap(NoSuchNickname)
        raise Numeric(irc.ERR_NOSUCHNICK, target, "No such nick/channel")

    d = maybeDeferred(msg_command, session, f"{target} {text}")
    return d.addErrback(missing)


# Users -----------------------------------------------------------------------


@_command("AWAY")
def away(conn: Connection, params: list[str]) -> None:
    """Mark yourself away with a message, or back without one."""
    session = conn.session
    text = clean(params[0]) if params else ""
    if len(text) > AWAY_MAX:
        raise ChatError(f"an away message is at most {AWAY_MAX} characters")
    session.registry.set_away(session, text or None)
    if text:
        conn.numeric(irc.RPL_NOWAWAY, "You have been marked as being away")
    else:
        conn.numeric(irc.RPL_UNAWAY, "You are no longer marked as being away")


def _who_line(conn: Connection, channel: str, user: UserInfo) -> None:
    here = "H" if user.away is None else "G"
    conn.numeric(
        irc.RPL_WHOREPLY,
        channel,
        user.nickname,
        SERVER,
        SERVER,
        user.nickname,
        here,
        f"0 {user.nickname}",
    )


@_command("WHO")
def who(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Who is in a channel, or who a nickname is."""
    registry = conn.session.registry
    target = params[0] if params else "*"

    def end(_: object = None) -> None:
        conn.numeric(irc.RPL_ENDOFWHO, target, "End of /WHO list.")

    if target[0] == "#":
        room = target.lower()

        def show(users: list[UserInfo]) -> None:
            for each in users:
                _who_line(conn, room, each)
            end()

        return registry.users(room).addCallback(show)
    if target == "*":
        end()
        return None
    d = registry.find(target).addCallback(lambda found: _who_line(conn, "*", found))
    return d.addErrback(lambda failure: failure.trap(NoSuchNickname)).addCallback(end)


@_command("WHOIS", 1)
def whois(conn: Connection, params: list[str]) -> "Deferred[object]":
    """Who a nickname is: its name and whether it is away."""
    target = params[-1]

    def show(found: UserInfo) -> None:
        name = found.nickname
        conn.numeric(irc.RPL_WHOISUSER, name, name, SERVER, "*", name)
        conn.numeric(irc.RPL_WHOISSERVER, name, SERVER, "chatservice")
        if found.away is not None:
            conn.numeric(irc.RPL_AWAY, name, found.away)

    def missing(failure: Failure) -> None:
        failure.trap(NoSuchNickname)
        conn.numeric(irc.ERR_NOSUCHNICK, target, "No such nick/channel")

    d = conn.session.registry.find(target).addCallbacks(show, missing)
    return d.addCallback(
        lambda _: conn.numeric(irc.RPL_ENDOFWHOIS, target, "End of /WHOIS list.")
    )


@_command("MODE", 1)
def mode(conn: Connection, params: list[str]) -> None:
    """Modes are answered, never changed: there are none but operators (+o)."""
    target = params[0]
    session = conn.session
    if target[0] == "#":
        room = target.lower()
        if len(params) == 1:
            conn.numeric(irc.RPL_CHANNELMODEIS, room, "+")
        elif params[1].lstrip("+") == "b":
            conn.numeric(irc.RPL_ENDOFBANLIST, room, "End of channel ban list")
        else:
            conn.numeric(
                irc.ERR_CHANOPRIVSNEEDED, room, "Channel modes are not supported"
            )
        return
    if target.lower() != session.nickname.lower():
        raise Numeric(irc.ERR_USERSDONTMATCH, "Cant change mode for other users")
    if len(params) == 1:
        conn.numeric(irc.RPL_UMODEIS, "+o" if session.operator is not None else "+")
    else:
        conn.numeric(irc.ERR_UMODEUNKNOWNFLAG, "Unknown MODE flag")


# Operators ---------------------------------------------------------------------


@_command("OPER", 2)
def oper(conn: Connection, params: list[str]) -> "Deferred[object]":
    """Log in as a server operator (C{--operators}), as C{/oper} does."""
    session = conn.session
    entry = session.server.commands.get("oper")
    if entry is None:
        raise Numeric("491", "No O-lines for your host")

    def done(_: object) -> None:
        conn.numeric(irc.RPL_YOUREOPER, "You are now an IRC operator")

    def refused(failure: Failure) -> None:
        failure.trap(ChatError)
        raise Numeric(irc.ERR_PASSWDMISMATCH, failure.getErrorMessage())

    d = maybeDeferred(entry, session, f"{params[0]} {params[1]}")
    return d.addCallbacks(done, refused)


def _operator_command(conn: Connection, name: str) -> Any:
    entry = conn.session.server.commands.get(name)
    if conn.session.operator is None or entry is None:
        raise Numeric(
            irc.ERR_NOPRIVILEGES, "Permission Denied- You're not an IRC operator"
        )
    return entry


@_command("KILL", 1)
def kill(conn: Connection, params: list[str]) -> "Deferred[object]":
    """Disconnect a user, wherever connected: C{/kick} for operators."""
    entry = _operator_command(conn, "kick")
    target = params[0]
    reason = params[1] if len(params) > 1 else ""

    def missing(failure: Failure) -> None:
        failure.trap(NoSuchNickname)
        raise Numeric(irc.ERR_NOSUCHNICK, target, "No such nick/channel")

    d = maybeDeferred(entry, conn.session, f"{target} {reason}".strip())
    return d.addErrback(missing)


@_command("KICK", 2)
def kick(conn: Connection, params: list[str]) -> None:
    """Take a user (of this server) out of a channel: for operators.

    An IRC user leaves the channel; a user of a front end with one room at
    a time (a line user) is moved to the lobby.  The others in the channel
    see the user leave, with the kick as the reason.
    """
    session = conn.session
    if session.operator is None:
        raise Numeric(
            irc.ERR_CHANOPRIVSNEEDED, params[0], "You're not channel operator"
        )
    room = params[0].lower()
    name = params[1]
    why = params[2] if len(params) > 2 else ""
    reason = f"kicked by {session.nickname}" + (f": {why}" if why else "")
    key = fold(name)
    found = [
        each
        for each in session.server.connections.values()
        if each.nickname is not None and fold(each.nickname) == key
    ]
    target = found[0] if found else None
    channels = getattr(getattr(target, "connection", None), "channels", None)
    member = target is not None and (
        room in channels if channels is not None else target.room == room
    )
    if not member:
        raise Numeric(
            irc.ERR_USERNOTINCHANNEL, name, room, "They aren't on that channel"
        )
    registry = session.registry
    if channels is not None:
        registry.part(target, room, reason)
        target.server.hooks.left(target, room, reason)
        channels.discard(room)
        target.connection._answer_raw(
            message(mask(session.nickname), "KICK", room, target.nickname, reason)
        )
        if target.room == room:
            target.room = min(channels, default=registry.lobby)
        return
    if room == registry.lobby:
        raise ChatError(f"{target.nickname} has no other room to go to; KILL instead")
    registry.join(target, registry.lobby)
    registry.part(target, room, reason)
    target.room = registry.lobby
    target.server.hooks.joined(target, registry.lobby)
    target.server.hooks.left(target, room, reason)
    target.deliver(events.notice(f"you were {reason}; you are in {registry.lobby} now"))
