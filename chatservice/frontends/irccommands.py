"""The IRC commands of registration, channels and messages.

Each joins the table of L{chatservice.frontends.irctable} with
C{@irc_command}; see there for the checks every command gets.
"""

from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.python.failure import Failure
from twisted.words.protocols import irc

from .. import __version__, events
from ..commands import say
from ..errors import ChatError, InvalidName, NicknameInUse, NoSuchNickname
from ..interfaces import RoomInfo, Scrollback, UserInfo
from ..reasons import CloseReason
from ..text import NICKNAME_MAX, check_nickname, check_room
from ..usercommands import AWAY_MAX, TOPIC_MAX, msg_command
from ..welcome import join_room, scrollback
from .ircformat import (
    LINE_MAX,
    SERVER,
    mask,
    message,
    notices,
    shared,
    tagged,
)
from .irctable import (
    CHANNELS_MAX,
    TARGETS_MAX,
    Connection,
    Numeric,
    clean,
    irc_command,
    offered_capabilities,
)

# Registration --------------------------------------------------------------


@irc_command("CAP", 1, before_registration=True)
def cap(conn: Connection, params: list[str]) -> None:
    """IRCv3 capability negotiation: C{server-time}, and C{sasl} over TLS."""
    who = conn.session.nickname or "*"
    sub = params[0].upper()
    offered = offered_capabilities(conn)
    if sub == "LS":
        if conn.session.nickname is None:
            conn.cap_negotiating = True
        version = params[1] if len(params) > 1 else ""
        # CAP LS 302 clients read capabilities' values: SASL's mechanisms.
        values = version.isdigit() and int(version) >= 302
        shown = ["sasl=PLAIN" if cap == "sasl" and values else cap for cap in offered]
        conn.send("CAP", who, "LS", " ".join(shown))
    elif sub == "LIST":
        enabled = [name for name in ("server-time", "sasl") if name in conn.caps]
        conn.send("CAP", who, "LIST", " ".join(enabled))
    elif sub == "REQ":
        asked = params[1] if len(params) > 1 else ""
        if asked.split() and all(cap in offered for cap in asked.split()):
            for name in asked.split():
                conn.caps.add(name)
            if "server-time" in asked.split():
                conn.use_server_time()
            conn.send("CAP", who, "ACK", asked)
        else:
            conn.send("CAP", who, "NAK", asked)
    elif sub == "END":
        conn.cap_negotiating = False
        return _register(conn)
    else:
        conn.numeric("410", params[0], "Invalid CAP command")
    return None


@irc_command("PASS", 1, before_registration=True)
def pass_(conn: Connection, params: list[str]) -> None:
    """The password of the nickname being registered, if it is registered.

    Checked once the nickname is the user's (see L{chatservice.accounts});
    for a nickname nobody registered it is not used.
    """
    if conn.session.nickname is not None:
        raise Numeric(irc.ERR_ALREADYREGISTRED, "You may not reregister")
    conn.session.server.accounts.expect(conn.session, params[0])


@irc_command("USER", 4, before_registration=True)
def user(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """USER's fields are not used: every user's mask is nick!nick@chatservice."""
    if conn.session.nickname is not None:
        raise Numeric(irc.ERR_ALREADYREGISTRED, "You may not reregister")
    conn.user_given = True
    return _register(conn)


@irc_command("NICK", before_registration=True)
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
        d = join_room(session, registry.lobby).addCallback(
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


@irc_command("MOTD", before_registration=False)
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


@irc_command("PING", before_registration=True)
def ping(conn: Connection, params: list[str]) -> None:
    """Answer with PONG and the same token."""
    if not params:
        raise Numeric("409", "No origin specified")
    conn.send("PONG", SERVER, params[-1])


@irc_command("PONG", before_registration=True)
def pong(conn: Connection, params: list[str]) -> None:
    """An answer to the server's PING: any input counts as one."""


@irc_command("QUIT", before_registration=True)
def quit_(conn: Connection, params: list[str]) -> None:
    """Leave; the others are told the message."""
    text = clean(params[0]) if params else ""
    who = conn.session.nickname or "*"
    conn.send("ERROR", f"Closing link: {who} (quit: {text})", prefix=None)
    conn.session.close(CloseReason.quit(text))


# Channels --------------------------------------------------------------------


@irc_command("JOIN", 1)
def join(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Join each channel of a comma-separated list (C{0}: part them all)."""
    if params[0] == "0":
        return part(conn, [",".join(sorted(conn.channels))])
    d: Deferred[object] = succeed(None)
    for name in params[0].split(","):
        d.addCallback(lambda _, name=name: _join_one(conn, name))
    return d


def _join_one(conn: Connection, name: str) -> "Deferred[object] | None":
    if conn._close_reason is not None:
        return None  # the session ended while an earlier channel was joined
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
    d = join_room(session, room).addCallback(
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
    for event in scrollback(room, history, conn.session.server.clock.seconds()):
        conn._answer_raw(notices(room, event.line.decode("utf-8").split("\r\n")[:-1]))


@irc_command("PART", 1)
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


@irc_command("TOPIC", 1)
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


@irc_command("NAMES")
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


@irc_command("LIST")
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


@irc_command("PRIVMSG")
def privmsg(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """Say something in channels, or to nicknames (CTCP ACTION is /me)."""
    return _message(conn, params, loud=True)


@irc_command("NOTICE")
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
