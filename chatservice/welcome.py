"""Registration: choosing a nickname, and the welcome that follows.

Before registration a plain line is a nickname (see
L{chatservice.commands.dispatch}), and so is the argument of C{/nick}: both
come to L{choose_nickname}.  The welcome names who is online (or counts them, in a
crowd), then the lobby's scrollback and the resume token.  L{names} and
L{scrollback} are shared with C{/who}, C{/users} and C{/join}.
"""

from collections.abc import Sequence

from twisted.internet.defer import Deferred, fail

from . import events
from .events import Event
from .fired import succeeded, then
from .interfaces import IChatSession, IRegistry, Scrollback, UserInfo
from .text import check_nickname

Result = Deferred[object] | None


def choose_nickname(session: IChatSession, name: str) -> Result:
    """Ask the registry for C{name}; welcome the user once it is theirs.

    With a registry that answers at once (the in-memory one), the whole
    welcome is queued before this returns, and it returns None: see
    L{chatservice.fired}.  Otherwise it returns the Deferred of the
    registration and the welcome; a failure of either is that Deferred's.
    """
    d = session.registry.register(session, check_nickname(name))
    if not succeeded(d):
        return d.addCallback(session.registered).addCallback(_welcome, session)
    try:
        nickname = session.registered(d.result)
    except Exception:
        return fail()
    return _welcome(nickname, session)


#: The most users the welcome lists by name; beyond it, it gives the count.
WELCOME_NAMES = 20


def _welcome(nickname: str, session: IChatSession) -> Result:
    """Queue the welcome, then tell the hooks (L{_registered}).

    Each step runs as soon as the registry's answer for it is there: at
    once, or as a callback when it has to be waited for.
    """
    if session.closing:
        return None  # it went while the registry was deciding
    try:
        online = then(session.registry.count(), _online, session.registry)
        joined = then(online, _greet, session, nickname)
        result = then(joined, _finish, session, nickname)
    except Exception:
        result = fail()
    if isinstance(result, Deferred):
        return result.addBoth(_registered, session)
    _registered(None, session)
    return None


def _online(count: int, registry: IRegistry) -> "str | Deferred[str]":
    """The welcome's list of who is online."""
    # Listing (and sorting) everyone for every arrival would make a
    # crowd's arrival cost time quadratic in its size.
    if count > WELCOME_NAMES:
        return f"Online ({count}): /users lists them"
    return then(registry.users(), _listed)


def _listed(users: list[UserInfo]) -> str:
    return f"Online ({len(users)}): {names(users)}"


def _greet(
    who: str, session: IChatSession, nickname: str
) -> "list[Scrollback] | Deferred[list[Scrollback]]":
    """The welcome's first lines; then the lobby's scrollback, when fetched."""
    session.answer(events.welcome(nickname, who))
    session.answer(
        events.notices(["Type /help for the commands.", *session.server.motd])
    )
    # Already in the lobby: this only fetches its scrollback.
    return join_room(session, session.registry.lobby)


def _finish(history: list[Scrollback], session: IChatSession, nickname: str) -> None:
    """The welcome's last lines: the scrollback, and the resume token."""
    show_scrollback(session, session.room, history)
    token = session.server.sessions.issue(session)
    if token is not None:
        session.answer(events.resume_token(nickname, token))


def _registered(result: object, session: IChatSession) -> object:
    """Tell the hooks plugins, once the welcome is queued (or has failed)."""
    session.server.hooks.registered(session)
    return result


def names(users: Sequence[UserInfo], away_messages: bool = False) -> str:
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


def join_room(session: IChatSession, room: str) -> Deferred[list[Scrollback]]:
    """Put C{session} in C{room} (see L{IRegistry.join}); fire with its scrollback.

    The registry's scrollback, preceded by older lines from the store when
    it has fewer than C{--history} (L{chatservice.store.history}).
    """
    return then(session.registry.join(session, room), _with_older, session, room)


def _with_older(
    live: list[Scrollback], session: IChatSession, room: str
) -> Deferred[list[Scrollback]]:
    return session.server.history.scrollback(room, live)


def show_scrollback(
    session: IChatSession, room: str, history: list[Scrollback]
) -> None:
    """Answer C{session} with C{room}'s scrollback (see L{scrollback})."""
    session.answer_all(scrollback(room, history, session.server.clock.seconds()))


def scrollback(
    room: str, history: list[Scrollback], now: float | None = None
) -> list[Event]:
    """The lines said in C{room} before, stamped and framed as not live.

    Those said before the day of C{now} (UTC) show their date (see
    L{stamped}).
    """
    if not history:
        return []
    return [
        events.notice(
            f"Scrollback of {room}, {len(history)} "
            f"line{'s' if len(history) != 1 else ''}, times in UTC:"
        ),
        *stamped(history, now),
        events.notice(f"End of scrollback of {room}."),
    ]


def stamped(history: list[Scrollback], now: float | None) -> list[Event]:
    """C{history}'s lines as shown again, stamped with when they were said.

    C{[HH:MM] } if said on the day of C{now} (UTC), else C{[YYYY-MM-DD
    HH:MM] }; all C{[HH:MM] } if C{now} is None.
    """
    if now is None:
        return [line.stamped for line in history]
    today = now - now % 86400
    return [line.stamped if line.when >= today else line.dated for line in history]
