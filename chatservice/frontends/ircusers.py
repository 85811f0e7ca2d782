"""The IRC commands about users: AWAY, WHO, WHOIS, MODE, and the operators'.

Each joins the table of L{chatservice.frontends.irctable} with
C{@irc_command}; see there for the checks every command gets.
"""

from typing import Any

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.python.failure import Failure
from twisted.words.protocols import irc

from .. import events
from ..errors import ChatError, NoSuchNickname
from ..interfaces import UserInfo
from ..text import fold
from ..usercommands import AWAY_MAX
from .ircformat import (
    SERVER,
    mask,
    message,
)
from .irctable import Connection, Numeric, clean, irc_command, log

# Users -----------------------------------------------------------------------


@irc_command("AWAY")
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


@irc_command("WHO")
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


@irc_command("WHOIS", 1)
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


@irc_command("MODE", 1)
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


@irc_command("OPER", 2)
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


@irc_command("KILL", 1)
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


@irc_command("KICK", 2)
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
    registry.join(target, registry.lobby).addErrback(
        lambda failure: log.failure("KICK could not move a user", failure)
    )
    registry.part(target, room, reason)
    target.room = registry.lobby
    target.server.hooks.joined(target, registry.lobby)
    target.server.hooks.left(target, room, reason)
    target.deliver(events.notice(f"you were {reason}; you are in {registry.lobby} now"))


#: The most nicknames one ISON or USERHOST asks about (RFC 2812 says 5 for
#: USERHOST): one message, one flood token, bounded work.
ASKED_MAX = 16


def _online(conn: Connection, names: list[str]) -> "Deferred[list[UserInfo]]":
    """The users among C{names} who are online, in the order asked."""
    registry = conn.session.registry
    finds = [
        registry.find(name).addErrback(
            lambda failure: failure.trap(NoSuchNickname) and None
        )
        for name in names[:ASKED_MAX]
    ]
    d = gatherResults(finds)
    return d.addCallback(lambda found: [user for user in found if user is not None])


@irc_command("ISON", 1)
def ison(conn: Connection, params: list[str]) -> "Deferred[object]":
    """Which of the nicknames asked are online (303), as notify lists ask."""
    names = " ".join(params).split()

    def show(users: list[UserInfo]) -> None:
        conn.numeric("303", " ".join(user.nickname for user in users))

    return _online(conn, names).addCallback(show)


@irc_command("USERHOST", 1)
def userhost(conn: Connection, params: list[str]) -> "Deferred[object]":
    """C{nick=+nick@chatservice} (C{-} when away) for each online nickname (302)."""

    def show(users: list[UserInfo]) -> None:
        conn.numeric(
            "302",
            " ".join(
                f"{user.nickname}={'+' if user.away is None else '-'}"
                f"{user.nickname}@{SERVER}"
                for user in users
            ),
        )

    return _online(conn, params[:5]).addCallback(show)
