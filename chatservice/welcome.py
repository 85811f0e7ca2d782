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
from .interfaces import (
    IChatSession,
    IRegistry,
    IRegistryAtOnce,
    Scrollback,
    UserInfo,
)
from .text import check_nickname

Result = Deferred[object] | None


def choose_nickname(session: IChatSession, name: str) -> Result:
    """Ask the registry for C{name}; welcome the user once it is theirs.

    With a registry that answers at once (the in-memory one), the whole
    welcome is queued before this returns, and it returns None: see
    L{chatservice.fired}.  Otherwise it returns the Deferred of the
    registration and the welcome; a failure of either is that Deferred's.
    """
    registry = session.registry
    nickname = check_nickname(name)
    if IRegistryAtOnce.providedBy(registry) and answers_at_once(type(registry)):
        # Its answers themselves, not Deferreds fired with them.
        try:
            nickname = session.registered(registry.register_now(session, nickname))
        except Exception:
            return fail()
        return _welcome(nickname, session, True)
    d = registry.register(session, nickname)
    if not succeeded(d):
        return d.addCallback(session.registered).addCallback(_welcome, session)
    try:
        nickname = session.registered(d.result)
    except Exception:
        return fail()
    return _welcome(nickname, session)


#: The IRegistry methods the welcome asks, each with its IRegistryAtOnce twin.
_ASKED = ("register", "count", "users", "join")

#: answers_at_once's verdict on each registry class seen.
_AT_ONCE: dict[type, bool] = {}


def answers_at_once(cls: type) -> bool:
    """Whether the welcome may ask a registry of class C{cls} its C{_now} twins.

    Not if a subclass overrides one of the L{IRegistry} methods the welcome
    asks (C{register}, C{count}, C{users}, C{join}) below where its C{_now}
    twin is defined: the override (a registry whose answers wait, over a
    network or in a test) is what the welcome must hear, and the inherited
    C{_now} twin knows nothing of it.  Decided once per class.
    """
    known = _AT_ONCE.get(cls)
    if known is None:
        known = _AT_ONCE[cls] = all(
            _defined_in(cls, name) >= _defined_in(cls, name + "_now") for name in _ASKED
        )
    return known


def _defined_in(cls: type, name: str) -> int:
    """How far down C{cls}'s method resolution order C{name} is defined."""
    for depth, klass in enumerate(cls.__mro__):
        if name in vars(klass):
            return depth
    return len(cls.__mro__)


#: The most users the welcome lists by name; beyond it, it gives the count.
WELCOME_NAMES = 20


def _welcome(nickname: str, session: IChatSession, at_once: bool = False) -> Result:
    """Queue the welcome, then tell the hooks (L{_registered}).

    Each step runs as soon as the registry's answer for it is there: at
    once, or as a callback when it has to be waited for.  C{at_once}: the
    registry is an L{IRegistryAtOnce}, asked for its answers themselves.
    """
    if session.closing:
        return None  # it went while the registry was deciding
    registry = session.registry
    try:
        if at_once:
            # Values, called at once; the scrollback may still be a
            # Deferred (the store's older lines read).
            count = registry.count_now()  # type: ignore[attr-defined]
            joined = _greet(_online(count, registry, True), session, nickname, True)
        else:
            online = then(registry.count(), _online, registry, False)
            joined = then(online, _greet, session, nickname, False)
        result = then(joined, _finish, session, nickname)
    except Exception:
        result = fail()
    # None (all done) told apart first: isinstance(None, Deferred) goes
    # through ABCMeta.__instancecheck__ (a Deferred is an Awaitable).
    if result is not None and isinstance(result, Deferred):
        return result.addBoth(_registered, session)
    _registered(None, session)
    return None


def _online(count: int, registry: IRegistry, at_once: bool) -> "str | Deferred[str]":
    """The welcome's list of who is online."""
    # Listing (and sorting) everyone for every arrival would make a
    # crowd's arrival cost time quadratic in its size.
    if count > WELCOME_NAMES:
        return f"Online ({count}): /users lists them"
    if at_once:
        return _listed(registry.users_now())  # type: ignore[attr-defined]
    return then(registry.users(), _listed)


def _listed(users: list[UserInfo]) -> str:
    return f"Online ({len(users)}): {names(users)}"


def _greet(
    who: str, session: IChatSession, nickname: str, at_once: bool
) -> "list[Scrollback] | Deferred[list[Scrollback]]":
    """The welcome's first lines; then the lobby's scrollback, when fetched."""
    session.answer(events.welcome(nickname, who))
    server = session.server
    session.answer(server.shown_scrollback.help_and_motd(server.motd))
    # Already in the lobby: this only fetches its scrollback (join_room's).
    registry = session.registry
    lobby = registry.lobby
    if at_once:
        live = registry.join_now(session, lobby)  # type: ignore[attr-defined]
        # Without a Deferred too when the store need not be read (most).
        shown = server.history.scrollback_now(lobby, live)
        return shown if shown is not None else _with_older(live, session, lobby)
    return join_room(session, lobby)


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
    # One expression, no call per user: every welcome lists up to 20.
    return ", ".join(
        [
            user.nickname
            if user.away is None
            else f"{user.nickname} (away: {user.away})"
            if away_messages
            else f"{user.nickname} (away)"
            for user in users
        ]
    )


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
    """Answer C{session} with C{room}'s scrollback (see L{scrollback}).

    The same lines as L{scrollback}'s; the stamped ones are the batch
    L{ShownScrollback} keeps for the room, encoded once for each format.
    """
    if not history:
        return
    server = session.server
    shown = server.shown_scrollback
    starts, ends = shown.notices(room, len(history))
    session.answer(starts)
    session.answer_all(shown.batch(room, history, server.clock.seconds()))
    session.answer(ends)


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
        _scrollback_starts(room, len(history)),
        *stamped(history, now),
        _scrollback_ends(room),
    ]


def _scrollback_starts(room: str, count: int) -> Event:
    return events.notice(
        f"Scrollback of {room}, {count} line{'s' if count != 1 else ''}, times in UTC:"
    )


def _scrollback_ends(room: str) -> Event:
    return events.notice(f"End of scrollback of {room}.")


def stamped(history: list[Scrollback], now: float | None) -> list[Event]:
    """C{history}'s lines as shown again, stamped with when they were said.

    C{[HH:MM] } if said on the day of C{now} (UTC), else C{[YYYY-MM-DD
    HH:MM] }; all C{[HH:MM] } if C{now} is None.
    """
    if now is None:
        return [line.stamped for line in history]
    today = now - now % 86400
    return [line.stamped if line.when >= today else line.dated for line in history]


#: The welcome's help line, with no MOTD.
_HELP = events.notices(["Type /help for the commands."])


class ShownScrollback:
    """Each room's stamped scrollback as last shown, for the next newcomer.

    Every newcomer to a room is shown the same stamped lines (L{stamped}),
    until a line is said there or the day changes (a line said before
    today shows its date).  The batch of them (L{events.Batch}) is kept
    for each room, with its bytes in each format, made once: a newcomer
    costs a list copy, not a stamped event and an encoding per line (~10
    us a welcome of 50 lines, lines front end; more for frames and
    WebSocket).  When lines were said since, the batch is shifted: the
    lines that scrolled out are dropped and only the new ones are stamped
    and encoded.  Lines are told apart by identity (the registry's
    L{Scrollback} objects, which the batch keeps alive), so any other
    list (the store's older lines, another registry's) is a new batch.

    It keeps the welcome's help and MOTD notice too (L{help_and_motd}).

    @ivar rooms: the most rooms kept, the least recently shown forgotten.
    """

    def __init__(self, rooms: int = 64) -> None:
        self.rooms = rooms
        # By room: the day (the start of it, UTC), the lines, their batch.
        self._kept: dict[str, tuple[float, list[Scrollback], events.Batch]] = {}
        # By room: the number of lines, and the scrollback's first and last
        # notices for it, made again for each newcomer (L{notices}).
        self._notices: dict[str, tuple[int, Event, Event]] = {}
        # The help and MOTD notice last made, and the MOTD it was made of.
        self._help: tuple[tuple[str, ...], Event] = ((), _HELP)

    def notices(self, room: str, count: int) -> tuple[Event, Event]:
        """The first and last lines around C{count} lines of C{room}'s scrollback.

        Made again (L{events.again}, with the time now) from those made
        for the last newcomer shown as many lines.
        """
        kept = self._notices.pop(room, None)  # now the most recently shown
        if kept is None or kept[0] != count:
            kept = (count, _scrollback_starts(room, count), _scrollback_ends(room))
        self._notices[room] = kept
        if len(self._notices) > self.rooms:
            del self._notices[next(iter(self._notices))]
        return events.again(kept[1]), events.again(kept[2])

    def help_and_motd(self, motd: Sequence[str]) -> Event:
        """The welcome's help line and C{motd}, as one notice.

        Made again (L{events.again}) from the one last made for the same
        lines of MOTD.
        """
        # The same tuple (the factory's, until read again) at once; anything
        # else (a list changed in place) compared line by line.
        lines = motd if motd.__class__ is tuple else tuple(motd)
        made_for, notice = self._help
        if lines is not made_for and lines != made_for:
            notice = events.notices(["Type /help for the commands.", *lines])
            self._help = (lines, notice)
        return events.again(notice)

    def batch(self, room: str, history: list[Scrollback], now: float) -> events.Batch:
        """C{history}'s lines of C{room}, stamped as on the day of C{now}.

        C{history} is kept as it is, not copied: the caller gives it up
        (a registry's answer, made for this newcomer).
        """
        today = now - now % 86400
        kept = self._kept.pop(room, None)
        batch = None
        if kept is not None and kept[0] == today:
            batch = _shifted(kept[1], kept[2], history, now)
        if batch is None:
            batch = events.Batch(stamped(history, now))
        self._kept[room] = (today, history, batch)
        if len(self._kept) > self.rooms:
            del self._kept[next(iter(self._kept))]
        return batch


#: The most lines said since a room's scrollback was last shown for which
#: the batch kept is shifted, not made anew.
_SHIFT_MOST = 16


def _shifted(
    old: list[Scrollback], batch: events.Batch, history: list[Scrollback], now: float
) -> events.Batch | None:
    """C{batch} (of C{old}) made C{history}'s, if C{history} is C{old} scrolled on.

    That is: C{old} without its first lines, then new lines.  None if not.
    """
    if not history or not old:
        return None
    first = history[0]
    if old[0] is first and len(old) == len(history):
        # Nothing said since (most newcomers: they come in bursts), told
        # without copying both lists to compare them.
        return batch if old == history else None
    # A few lines said since: more, and making the batch anew costs about
    # what shifting it would; another registry's lines (Redis: new objects
    # each time) are never found, and are not looked for long.
    for drop in range(min(len(old), _SHIFT_MOST)):
        if old[drop] is first:
            break
    else:
        return None
    stay = len(old) - drop
    # The same objects, compared by identity, in C.
    if stay > len(history) or old[drop:] != history[:stay]:
        return None
    if stay == len(history) and not drop:
        return batch
    return batch.shifted(drop, stamped(history[stay:], now))
