"""C{/history} and C{/search}: a room's past lines, from the store.

Both act on the user's current room, and answer with the lines as the
scrollback shows them (C{[HH:MM] } today, C{[YYYY-MM-DD HH:MM] } before),
framed by notices.  Each answer is bounded: L{HISTORY_MAX} lines at most
(C{/history since} goes on page by page), L{SEARCH_MAX} matches at most.
C{/search} is limited per address as well (L{SEARCH_RATE}): it reads the
full-text index, which costs the database more than a line costs the
server.  See C{docs/protocol.md}.
"""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from math import ceil
from typing import NoReturn

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from . import events
from .commands import Result, command
from .errors import ChatError, UsageError
from .interfaces import IChatSession, Scrollback
from .paging import is_page_number
from .store.history import (
    HISTORIES_AT_ONCE,
    HISTORY_BURST,
    HISTORY_RATE,
    SEARCH_BURST,
    SEARCH_RATE,
    SEARCHES_AT_ONCE,
    unavailable,
)
from .text import fold
from .throttle import Allowances, address_key
from .welcome import stamped

HISTORY_USAGE = "/history [N | since YYYY-MM-DD[THH:MM] [PAGE]]"
SEARCH_USAGE = "/search WORDS"

#: Lines C{/history} shows without a number.
HISTORY_DEFAULT = 20
#: The most lines one C{/history} shows: about 50 KB at worst, far below
#: C{--max-sendq}.
HISTORY_MAX = 100
#: The most matches one C{/search} shows (the newest).
SEARCH_MAX = 20
#: The most words, and the longest word, a C{/search} takes.
SEARCH_WORDS = 8
SEARCH_WORD_MAX = 64

_DATE = re.compile(r"(\d{4})-(\d\d)-(\d\d)(?:T(\d\d):(\d\d))?", re.ASCII)


@dataclass(frozen=True, slots=True)
class Last:
    """C{/history [N]}: the last C{count} lines."""

    count: int


@dataclass(frozen=True, slots=True)
class Since:
    """C{/history since DATE [PAGE]}: lines from C{moment} (UTC) on, by page."""

    moment: float
    text: str
    page: int


def parse_history(args: str) -> Last | Since:
    """What C{/history ARGS} asks for; L{ChatError} saying what is wrong.

    A malformed request gets the usage; a number or a date that is
    well-formed but out of range says so.
    """
    words = args.split()
    if not words:
        return Last(HISTORY_DEFAULT)
    if len(words) == 1 and is_page_number(words[0]):
        count = int(words[0])
        if count == 0:
            raise UsageError(HISTORY_USAGE)
        if count > HISTORY_MAX:
            raise ChatError(
                f"/history shows at most {HISTORY_MAX} lines at a time; "
                "/history since YYYY-MM-DD shows more, page by page"
            )
        return Last(count)
    if words[0].lower() != "since" or len(words) not in (2, 3):
        raise UsageError(HISTORY_USAGE)
    page = 1
    if len(words) == 3:
        if not is_page_number(words[2]) or int(words[2]) == 0:
            raise UsageError(HISTORY_USAGE)
        page = int(words[2])
    return Since(parse_moment(words[1]), words[1], page)


def parse_moment(text: str) -> float:
    """C{YYYY-MM-DD} or C{YYYY-MM-DDTHH:MM}, in UTC, as seconds since the epoch."""
    match = _DATE.fullmatch(text)
    if match is None:
        raise UsageError(HISTORY_USAGE)
    year, month, day, hour, minute = (int(part or 0) for part in match.groups())
    try:
        moment = datetime(year, month, day, hour, minute, tzinfo=UTC)
    except ValueError:
        raise ChatError(
            f"there is no such moment as {text} (YYYY-MM-DD or YYYY-MM-DDTHH:MM, "
            "in UTC)"
        ) from None
    return moment.timestamp()


def format_moment(moment: float) -> str:
    """C{moment} as L{parse_moment} reads it, to the minute (UTC).

    Not C{strftime}'s C{%Y}, which writes the year 999 as C{999}, not
    C{0999} (glibc), which L{parse_moment} refuses.
    """
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="minutes")[:16]


def _answer(
    session: IChatSession, header: str, lines: list[Scrollback], end: str
) -> None:
    session.answer_all(
        [
            events.notice(header),
            *stamped(lines, session.server.clock.seconds()),
            events.notice(end),
        ]
    )


def _address(session: IChatSession) -> str:
    """Whose allowance a request spends: its address's.

    As /oper's guesses are: by nickname, reconnecting (or /nick) gave a
    new allowance each time.  A UNIX socket's users (no address) are told
    apart by nickname.
    """
    return address_key(session.host) or "nick:" + fold(session.nickname or "")


def _store_down(failure: Failure, room: str) -> NoReturn:
    """Say the store is down, not "a server error; it was logged".

    The history's writes log the store's failures (one traceback, then a
    line a minute): a user's /history need not add a traceback each.
    """
    if failure.check(*unavailable()):
        raise ChatError(
            f"the history of {room} cannot be read now (the store is "
            "unavailable); try again later"
        )
    failure.raiseException()


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'s' if count != 1 else ''}"


@command(
    "/history [N | since DATE]",
    f"show the last N lines of your room ({HISTORY_DEFAULT} by default, at most "
    f"{HISTORY_MAX}), or those since DATE (YYYY-MM-DD[THH:MM], UTC), "
    f"{HISTORY_MAX} to a page",
)
def history_command(session: IChatSession, args: str) -> Result:
    request = parse_history(args)
    room = session.room
    history = session.server.history
    if history.paging >= HISTORIES_AT_ONCE:
        raise ChatError(
            "the server is busy with other /history requests; try again in a "
            "few seconds"
        )
    wait = history.histories.spend(_address(session), 1, session.server.clock.seconds())
    if wait:
        raise ChatError(
            f"too many /history requests (at most {HISTORY_BURST:g} at once, then "
            f"{HISTORY_RATE:g} a second); try again in "
            f"{_plural(ceil(wait), 'second')}"
        )
    if isinstance(request, Last):

        def show_last(lines: list[Scrollback]) -> None:
            if not lines:
                session.answer(events.notice(f"{room} has no history."))
                return
            _answer(
                session,
                f"History of {room}: the last {_plural(len(lines), 'line')}, "
                "times in UTC:",
                lines,
                f"End of history of {room}; /history since YYYY-MM-DD shows the "
                "lines from a day on.",
            )

        return (
            history.last(room, request.count)
            .addErrback(_store_down, room)
            .addCallback(show_last)
        )

    page = request.page
    skip = (page - 1) * HISTORY_MAX
    since = format_moment(request.moment).replace("T00:00", "")

    def show_since(lines: list[Scrollback]) -> None:
        more = len(lines) > HISTORY_MAX
        lines = lines[:HISTORY_MAX]
        label = f", page {page}" if page > 1 else ""
        if not lines:
            session.answer(
                events.notice(
                    f"No lines in {room} since {since}{label}."
                    if page == 1
                    else f"There is no page {page} of /history since {since}."
                )
            )
            return
        _answer(
            session,
            f"History of {room} since {since}{label}: "
            f"{_plural(len(lines), 'line')}, times in UTC:",
            lines,
            f"\N{HORIZONTAL ELLIPSIS} more: /history since {since} {page + 1}"
            if more
            else f"End of history of {room}.",
        )

    d: Deferred[list[Scrollback]] = history.since(
        room, request.moment, skip, HISTORY_MAX + 1
    )
    return d.addErrback(_store_down, room).addCallback(show_since)


def search_words(args: str) -> list[str]:
    """The words of C{/search ARGS}; L{ChatError} if too many or too long."""
    words = args.split()
    if not words:
        raise UsageError(SEARCH_USAGE)
    if len(words) > SEARCH_WORDS:
        raise ChatError(f"/search takes at most {SEARCH_WORDS} words")
    if any(len(word) > SEARCH_WORD_MAX for word in words):
        raise ChatError(f"/search takes words of at most {SEARCH_WORD_MAX} characters")
    return words


@command(
    SEARCH_USAGE,
    f"find the last {SEARCH_MAX} lines of your room that have all of WORDS",
    1,
)
def search_command(session: IChatSession, args: str) -> Result:
    words = search_words(args)
    server = session.server
    history = server.history
    if history.searching >= SEARCHES_AT_ONCE:
        raise ChatError(
            "the server is busy with other searches; try again in a few seconds"
        )
    searches: Allowances = history.searches
    wait = searches.spend(_address(session), 1, server.clock.seconds())
    if wait:
        raise ChatError(
            f"too many searches (at most {SEARCH_BURST:g} at once, then one every "
            f"{1 / SEARCH_RATE:g} seconds); try again in "
            f"{_plural(ceil(wait), 'second')}"
        )
    room = session.room
    quoted = " ".join(words)

    def show(lines: list[Scrollback]) -> None:
        if not lines:
            session.answer(events.notice(f"No line in {room} has all of: {quoted}"))
            return
        newest = f"the last {SEARCH_MAX}" if len(lines) == SEARCH_MAX else "all"
        _answer(
            session,
            f"Lines of {room} with {quoted}: {_plural(len(lines), 'line')} "
            f"({newest}), times in UTC:",
            lines,
            "End of search.",
        )

    d = server.history.search(room, words, SEARCH_MAX)
    return d.addErrback(_store_down, room).addCallback(show)
