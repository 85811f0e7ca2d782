"""Operators and what they may do: C{/oper}, then kick, ban, wall, stats.

An operator is a session that logged in with C{/oper NAME PASSWORD}
against the C{--operators} file.  Operator commands are ordinary table
entries marked C{operator_only}; L{chatservice.commands.dispatch} refuses
them to everyone else.  Everything an operator does is logged with the
operator's name (never with a password).
"""

import re
from ipaddress import ip_network

from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events, wire
from .bans import Ban, format_duration, parse_duration, parse_target
from .commands import Result, command
from .errors import ChatError, NoSuchNickname
from .interfaces import IChatSession, UserInfo
from .logs import gate, shown
from .paging import page_number, paged
from .reasons import CloseReason
from .throttle import TooManyAttempts, address_key

log = Logger(observer=gate)

#: The answer to every failed /oper, whatever was wrong.
LOGIN_FAILED = "operator login failed"
#: The answer to an /oper while its address has as many under way as it may.
TOO_MANY_LOGINS = (
    "too many /oper attempts under way from your address; "
    "try again when they are answered"
)


@command("/oper NAME PASSWORD", "log in as a server operator", 2)
def oper_command(session: IChatSession, args: str) -> Result:
    name, password = args.split(None, 1)
    server = session.server
    host = session.host
    # One check at a time per address, after its failures' delay, whatever
    # the number of its connections (see SerialChecks).
    try:
        d = server.oper_checks.check(
            address_key(host),
            lambda: server.operators.check(name, password),  # the file now
        )
    except TooManyAttempts:
        raise ChatError(TOO_MANY_LOGINS) from None

    def checked(ok: object) -> None:
        if not ok:
            log.warn(
                "failed /oper as {operator} by connection {connection_id} "
                "({nickname}) from {host}",
                # A name that is no operator's may be a mistyped password.
                operator=shown(name) if name in server.operators else "(unknown name)",
                connection_id=session.connection_id,
                nickname=shown(session.nickname),
                host=host,
            )
            raise ChatError(LOGIN_FAILED)
        session.operator = name
        log.info(
            "connection {connection_id} ({nickname}) from {host} is now "
            "operator {operator}",
            operator=shown(name),
            connection_id=session.connection_id,
            nickname=shown(session.nickname),
            host=host,
        )
        session.answer(
            events.notice(
                f"You are now an operator ({name}); /help lists your commands."
            )
        )

    return d.addCallback(checked)


def _audit(session: IChatSession, action: str, **fields: object) -> None:
    """Log what an operator did, with the operator's name."""
    log.info(
        "operator {operator} ({nickname}) " + action,
        operator=shown(session.operator),
        nickname=shown(session.nickname),
        **fields,
    )


@command(
    "/kick NICK [REASON]",
    "disconnect NICK, telling everyone why",
    1,
    operator_only=True,
)
def kick_command(session: IChatSession, args: str) -> Result:
    target, _, why = args.partition(" ")
    why = why.strip()
    reason = CloseReason.kicked(session.nickname, why)

    def kicked(user: UserInfo) -> None:
        _audit(
            session,
            "kicked {target}{why}",
            target=shown(user.nickname),
            why=_colon(shown(why)),
        )
        session.answer(events.notice(f"{user.nickname} was kicked."))

    return session.registry.kick(target, reason).addCallback(kicked)


@command(
    "/ban NICK|IP|CIDR [DURATION] [REASON]",
    "refuse an address (NICK's, an IP or a network) for DURATION "
    "(30m, 2h, 7d; default: until /unban), closing its connections",
    1,
    operator_only=True,
)
def ban_command(session: IChatSession, args: str) -> Result:
    words = args.split(None, 1)
    target, rest = words[0], (words[1] if len(words) > 1 else "")
    duration, why = _duration_and_reason(rest)
    try:
        network = parse_target(target)
    except ValueError as error:
        # Not an address: a nickname, banned by the address it comes from.
        not_an_address = str(error)

        def no_such_user(failure: Failure) -> None:
            failure.trap(NoSuchNickname)
            if any(c in target for c in "./:"):
                raise ChatError(not_an_address)  # a mistyped address, surely
            failure.raiseException()

        d = session.registry.find(target)
        d.addCallbacks(
            lambda user: _ban_user(session, user, duration, why), no_such_user
        )
        return d
    _ban(session, network, duration, why, target)
    return None


def _duration_and_reason(rest: str) -> tuple[float | None, str]:
    """Split C{[DURATION] [REASON]}: a first word that is a duration is one."""
    first, _, after = rest.partition(" ")
    if re.fullmatch(r"[\d.]+", first) and first.strip("0."):
        # "/ban bob 3 strikes": seconds are surely not what was meant.
        raise ChatError(
            f"a duration needs a unit: {first}m, {first}h or {first}d (or forever)"
        )
    try:
        return parse_duration(first), after.strip()
    except ValueError as error:
        if first[:1].isdigit():  # a mistyped duration, not a reason
            raise ChatError(str(error)) from None
    return None, rest.strip()


def _ban_user(
    session: IChatSession, user: UserInfo, duration: float | None, why: str
) -> None:
    if user.host is None:
        raise ChatError(f"{user.nickname} has no address to ban")
    _ban(session, ip_network(user.host), duration, why, user.nickname)


def _ban(
    session: IChatSession, network: object, duration: float | None, why: str, what: str
) -> None:
    if session.host is not None and Ban(network, "", "", 0, None).matches(session.host):
        raise ChatError(f"{network} is your own address; you would be banned too")
    ban = session.server.ban(network, duration, why, session.operator)
    _audit(
        session,
        "banned {network} ({what}) {duration}{why}",
        network=shown(ban.network),
        what=shown(what),
        duration=_for(duration),
        why=_colon(shown(why)),
    )
    session.answer(
        events.notice(
            f"Banned {ban.network} ({what}) {_for(duration)}"
            + (f": {why}" if why else "")
            + "."
        )
    )


def _colon(text: str) -> str:
    """C{": TEXT"}, or nothing when there is no text."""
    return f": {text}" if text else ""


def _for(duration: float | None) -> str:
    return "permanently" if duration is None else f"for {format_duration(duration)}"


@command("/unban IP|CIDR", "lift a ban", 1, operator_only=True)
def unban_command(session: IChatSession, args: str) -> Result:
    try:
        network = parse_target(args.split()[0])
    except ValueError as error:
        raise ChatError(str(error)) from None
    ban = session.server.unban(network)
    if ban is None:
        raise ChatError(f"{network} is not banned; /bans lists the bans")
    _audit(session, "lifted the ban of {network}", network=shown(network))
    session.answer(events.notice(f"Unbanned {network}."))
    return None


#: Bans per page of /bans.  A ban's reason is at most one input line, so a
#: page is at most about 62 KB, and usually a few: /who's page size.
BANS_PAGE = 30


@command(
    "/bans [PAGE]", f"list the bans in force, {BANS_PAGE} to a page", operator_only=True
)
def bans_command(session: IChatSession, args: str) -> Result:
    page = page_number(args.split(), "/bans [PAGE]")
    _audit(session, "listed the bans")
    bans = session.server.bans.active()
    now = session.server.clock.seconds()
    shown, label, note = paged(bans, page, BANS_PAGE, "/bans")
    session.answer(
        events.notices(
            [
                f"Bans ({len(bans)}){label}:",
                *(describe_ban(ban, now) for ban in shown),
                *note,
            ]
        )
    )
    return None


def describe_ban(ban: Ban, now: float) -> str:
    """One ban as C{/bans} shows it."""
    if ban.expires is None:
        until = "permanent"
    else:
        left = format_duration(max(ban.expires - now, 0))
        until = f"until {wire.utc(ban.expires)} ({left} left)"
    return f"{ban.network} {until}, by {ban.by}" + (
        f": {ban.reason}" if ban.reason else ""
    )


@command("/wall TEXT", "send a notice to everyone online", 1, operator_only=True)
def wall_command(session: IChatSession, args: str) -> Result:
    _audit(session, "sent a wall notice")
    session.registry.announce(events.notice(f"NOTICE from {session.nickname}: {args}"))
    return None


@command("/stats", "show the server's counters", operator_only=True)
def stats_command(session: IChatSession, args: str) -> Result:
    _audit(session, "looked at the stats")
    server = session.server
    stats = server.stats
    registry = session.registry
    uptime = format_duration(server.clock.seconds() - stats.started)

    def show(counts: tuple[list[UserInfo], list[object]]) -> None:
        users, rooms = counts
        session.answer(
            events.notices(
                [
                    f"Server stats, up {uptime}:",
                    f"connections {len(server.connections)} (peak "
                    f"{stats.peak_connections}), users {len(users)}, "
                    f"rooms {len(rooms)}",
                    f"lines received {stats.lines_in}; chat lines said "
                    f"{registry.said}, delivered {registry.delivered}",
                    f"disconnects: {_counts(stats.closed)}",
                    f"refused: {_counts(stats.refused)}",
                ]
            )
        )

    d = registry.users().addCallback(
        lambda users: registry.rooms().addCallback(lambda rooms: (users, rooms))
    )
    return d.addCallback(show)


def _counts(counter: dict[str, int]) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counter.items()))
