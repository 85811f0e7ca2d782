"""What nodes read from each other, checked before they are acted on.

Nodes exchange chat events (L{chatservice.events.Event}), not wire
lines: a chat line said on one node reaches a frame client on another as
its room, nickname, text and time.  On the stream, in a room's scrollback
and among a held session's missed lines, an event is its
L{Event.as_dict<chatservice.events.Event.as_dict>} as JSON, its C{time} in
seconds (see L{dumped}), at most L{VALUE_MAX} bytes: a node cuts a longer
text to fit (L{fitted}).

Each message on the stream is JSON that any writer to Redis could have
made: a node's bug, an old version, or someone who reached Redis.
L{checked} keeps only the fields a message of its kind has, of the right
types and sizes; the event it carries is checked against its kind's fields
(L{chatservice.events.KINDS}) and every text field sanitised once more
(L{chatservice.text.sanitise}), so no terminal escape, stray line break or
malformed ban reaches a user or the bans file (L{loaded}).  What does not
fit raises L{Malformed}; the reader logs it (L{MalformedLog}) and skips it.

What L{checked} returns is a typed message (L{ToRooms}, L{ToUser},
L{Ban}...) with readable field names; the node acts on it through a table
of a handler for each kind (L{chatservice.cluster.inbox}).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.logger import Logger

from ..bans import parse_target
from ..errors import InvalidName
from ..events import KINDS, Event, from_dict
from ..logs import gate, shown
from ..reasons import CloseKind, CloseReason
from ..text import check_nickname, check_room, fold, sanitise

log = Logger(observer=gate)

#: The most bytes of JSON an event takes (on the stream, in a scrollback,
#: among a held session's missed lines): a line said with the largest
#: --max-line of 2,048 bytes, each byte invalid UTF-8 (3 bytes as U+FFFD),
#: with its nickname, room and time, fits.  A node cuts a longer text (or
#: reason) to fit (see L{fitted}).
VALUE_MAX = 7 * 1024

#: The most bytes of JSON a message takes in the stream: an event and a
#: few short fields around it (rooms, nicknames, a node's name).
EVENT_MAX = 8 * 1024

#: A kick or ban reason, a node name, at most (characters).
REASON_MAX = 512

#: The kinds of event that cross nodes: all but a session's own answers.
SHARED_KINDS = frozenset(KINDS) - {
    "welcome",
    "room",
    "resumed",
    "resume_token",
    "pong",
    "disconnected",
}

#: The latest time an event may have (the end of the year 9999): a later one
#: cannot be shown as a date.
_TIME_MAX = 253_402_300_799.0

_ELLIPSIS = "\N{HORIZONTAL ELLIPSIS}"


class Malformed(ValueError):
    """A message or event that does not have the shape of its kind."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind
        self.why = why


def cut(text: str, limit: int) -> str:
    """C{text} cut to at most C{limit} bytes in a JSON string, ending in C{…}.

    The bytes are those of its UTF-8 in JSON, where a quote or a backslash
    takes two: the longest start of C{text} that fits, found by bisection.
    """
    if _json_size(text) <= limit:
        return text
    shortest, longest = 0, len(text)
    while shortest < longest:
        middle = (shortest + longest + 1) // 2
        if _json_size(text[:middle]) + len(_ELLIPSIS.encode("utf-8")) <= limit:
            shortest = middle
        else:
            longest = middle - 1
    return text[:shortest] + _ELLIPSIS


def _json_size(text: str) -> int:
    """The bytes C{text} takes in JSON, without the quotes around it."""
    return len(json.dumps(text, ensure_ascii=False).encode("utf-8")) - 2


def dumped(event: Event) -> str:
    """C{event} as JSON, as the nodes share it: see L{fitted}."""
    return fitted(event)[1]


def fitted(event: Event, limit: int = VALUE_MAX) -> tuple[dict[str, Any], str]:
    """C{event} as JSON values, and as JSON text of at most C{limit} bytes.

    The values are L{Event.as_dict}'s, but for C{time}: seconds since the
    epoch, as the event has it (the ISO text is for clients).  A text (or
    reason) too long to fit is cut, ending in C{…}: only a C{--max-line}
    above about 2,300 bytes, or a text of many quotes or backslashes (each
    two bytes in JSON), can make one that long.
    """
    value = event.as_dict()
    value["time"] = event.time
    value.pop("history", None)
    text = json.dumps(value, ensure_ascii=False)  # U+FFFD: 3 bytes, not 6
    size = len(text.encode("utf-8"))
    while size > limit:
        field = max(("text", "reason"), key=lambda name: len(value.get(name) or ""))
        long = value.get(field) or ""
        if not long:
            raise ValueError("an event too large to share, with no text to cut")
        value[field] = cut(long, _json_size(long) - (size - limit))
        text = json.dumps(value, ensure_ascii=False)
        size = len(text.encode("utf-8"))
    return value, text


def loaded(raw: object, kind: str) -> Event:
    """The event whose JSON (see L{dumped}) is C{raw}, checked (L{clean_event})."""
    if not isinstance(raw, str) or len(raw) > VALUE_MAX:
        raise Malformed(kind, "an event that is not JSON text of at most 7 KiB")
    try:
        value = json.loads(raw)
    except ValueError:
        raise Malformed(kind, "an event that is not JSON") from None
    return clean_event(value, kind)


def clean_event(value: object, kind: str) -> Event:
    """The event of JSON values C{value}, checked against its kind's fields.

    It must be of a kind nodes share (L{SHARED_KINDS}), with exactly that
    kind's fields (L{chatservice.events.KINDS}) and its C{time} in seconds;
    each field of the right type and size, its text sanitised again.
    C{kind} names what carried it, for the log.

    @raise Malformed: if it is not.
    """
    if not isinstance(value, dict):
        raise Malformed(kind, "an event that is not an object")
    what = value.get("type")
    if not isinstance(what, str) or what not in SHARED_KINDS:
        raise Malformed(kind, "an event of no kind nodes share")
    names = KINDS[what]
    if not value.keys() <= {"type", "time", *names}:
        raise Malformed(kind, "an event with fields its kind has not")
    when = _number(value.get("time"), kind)
    if not 0 <= when <= _TIME_MAX:
        raise Malformed(kind, "an event at no time that can be shown")
    clean: dict[str, Any] = {"type": what}
    for name in names:
        if name not in value:
            raise Malformed(kind, f"an event without its {name}")
        check = _FIELDS.get(name, _short)
        clean[name] = check(value[name], kind)
    try:
        return from_dict(clean, when)
    except (ValueError, TypeError) as error:  # a kind the checks above missed
        raise Malformed(kind, f"an event that cannot be made: {error}") from None


def clean_event_text(text: object, kind: str) -> str:
    """C{text}, an event's text of one or more lines, each sanitised."""
    if not isinstance(text, str) or len(text) > VALUE_MAX:
        raise Malformed(kind, "text that is not a string of at most 7 KiB")
    if text.isprintable():
        return text
    return _whole("\n".join([sanitise(line) for line in text.split("\n")]))


def _whole(text: str) -> str:
    """C{text} without lone surrogates (JSON can escape them): U+FFFD instead.

    Not UTF-8, they would fail where the event's line is encoded.
    """
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _short(value: object, kind: str) -> str:
    """A short one-line string (a nickname, a room, a code), sanitised."""
    return clean_text(value, kind, 64)


def _count(value: object, kind: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1e9:
        raise Malformed(kind, "a count that is not a number of lines")
    return value


#: How each field of an event is checked; a field not listed is L{_short}.
_FIELDS: dict[str, Callable[[object, str], Any]] = {
    "text": clean_event_text,
    "reason": lambda value, kind: clean_text(value, kind, VALUE_MAX),
    "token": lambda value, kind: clean_text(value, kind, 128),
    "count": _count,
}


def clean_text(text: object, kind: str, limit: int = REASON_MAX) -> str:
    """C{text}, a short one-line string, sanitised."""
    if not isinstance(text, str) or len(text) > limit:
        raise Malformed(kind, "not a short string")
    return text if text.isprintable() else _whole(sanitise(text))


def reason_event(reason: CloseReason) -> list[str | None]:
    """C{reason} as an event carries it: C{[kind, by, detail]}."""
    return [reason.kind.value, reason.by, reason.detail[:REASON_MAX]]


def clean_reason(value: object, kind: str) -> CloseReason:
    """The L{CloseReason} an event carries as C{[kind, by, detail]}."""
    if not isinstance(value, list) or len(value) != 3:
        raise Malformed(kind, "a reason that is not [kind, by, detail]")
    try:
        close_kind = CloseKind(value[0])
    except ValueError:
        raise Malformed(kind, "a reason of no known kind") from None
    by = None if value[1] is None else clean_text(value[1], kind, 64)
    return CloseReason(close_kind, by, clean_text(value[2], kind))


def clean_fold(key: object, kind: str) -> str:
    """C{key}, a folded nickname."""
    if not isinstance(key, str):
        raise Malformed(kind, "a nickname that is not a string")
    try:
        valid = fold(check_nickname(key)) == key
    except InvalidName:
        valid = False
    if not valid:
        raise Malformed(kind, "not a valid folded nickname")
    return key


def clean_nickname(nickname: object, kind: str) -> str:
    """C{nickname}, a valid nickname."""
    if not isinstance(nickname, str):
        raise Malformed(kind, "a nickname that is not a string")
    try:
        return check_nickname(nickname)
    except InvalidName:
        raise Malformed(kind, "not a valid nickname") from None


def clean_rooms(rooms: object, kind: str) -> list[str]:
    """C{rooms}, a short list of valid room names."""
    if not isinstance(rooms, list) or not 0 < len(rooms) <= 16:
        raise Malformed(kind, "rooms that are not a short list")
    clean = []
    for room in rooms:
        if not isinstance(room, str):
            raise Malformed(kind, "a room that is not a string")
        try:
            if check_room(room) != room:
                raise InvalidName(room)
        except InvalidName:
            raise Malformed(kind, "not a valid room name") from None
        clean.append(room)
    return clean


def _number(value: object, kind: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
    ):
        raise Malformed(kind, "not a finite number")
    return float(value)


# The kinds of message, with readable field names.  On the stream each is a
# JSON object of short keys (the Lua scripts write most of them), the event
# it carries under C{ev}; its C{fields} are what a node publishes itself.


@dataclass(frozen=True, slots=True)
class HandOver:
    """A session moves to another node (C{ho}; C{n}: the node it was on)."""

    key: str
    old_node: str | None = None


@dataclass(frozen=True, slots=True)
class Handed:
    """A session's old node has handed over what it kept (C{handed})."""

    key: str


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban made on another node (C{ban}: [network, expires, reason, by])."""

    network: str
    expires: float | None
    reason: str
    by: str

    def fields(self) -> dict[str, object]:
        """The message as the stream carries it."""
        reason = self.reason[:REASON_MAX]
        return {"ban": [self.network, self.expires, reason, self.by]}


@dataclass(frozen=True, slots=True)
class Unban:
    """A ban lifted on another node (C{unban})."""

    network: str

    def fields(self) -> dict[str, object]:
        """The message as the stream carries it."""
        return {"unban": self.network}


@dataclass(frozen=True, slots=True)
class AccountChange:
    """A nickname registered (or no longer) on another node (C{acct}: [key, 0|1])."""

    key: str
    registered: bool

    def fields(self) -> dict[str, object]:
        """The message as the stream carries it."""
        return {"acct": [self.key, int(self.registered)]}


@dataclass(frozen=True, slots=True)
class ToUser:
    """An event for one user (C{to}, C{ev}), or their kick (C{k}: the reason)."""

    key: str
    event: Event | None = None
    kick: CloseReason | None = None


@dataclass(frozen=True, slots=True)
class ToEveryone:
    """An event for every user (C{a}, C{ev})."""

    event: Event

    def fields(self) -> dict[str, object]:
        """The message as the stream carries it."""
        return {"a": 1, "ev": fitted(self.event)[0]}


@dataclass(frozen=True, slots=True)
class ToRooms:
    """An event for the members of rooms (C{r}, C{ev}).

    C{sender}: the folded nickname of the user it is about (C{s}), whose
    node tells them itself; C{said}: a line said (C{h}), which each room
    keeps in its scrollback.
    """

    rooms: list[str]
    event: Event
    sender: str | None = None
    said: bool = False

    def fields(self) -> dict[str, object]:
        """The message as the stream carries it."""
        message: dict[str, object] = {"r": self.rooms, "ev": fitted(self.event)[0]}
        if self.sender is not None:
            message["s"] = self.sender
        if self.said:
            message["h"] = 1
        return message


#: What a node reads from the stream, checked and typed.
Message = (
    HandOver | Handed | Ban | Unban | AccountChange | ToUser | ToEveryone | ToRooms
)


def _ban(event: dict[str, Any]) -> Ban:
    ban = event["ban"]
    if not isinstance(ban, list) or len(ban) != 4:
        raise Malformed("ban", "not [network, expires, reason, by]")
    network, expires, reason, by = ban
    if not isinstance(network, str) or len(network) > 64:
        raise Malformed("ban", "a network that is not a short string")
    try:
        network = str(parse_target(network))
    except ValueError:
        raise Malformed("ban", "not a network a ban may name") from None
    if expires is not None:
        expires = _number(expires, "ban")
    return Ban(network, expires, clean_text(reason, "ban"), clean_nickname(by, "ban"))


def _unban(event: dict[str, Any]) -> Unban:
    network = event["unban"]
    if not isinstance(network, str) or len(network) > 64:
        raise Malformed("unban", "a network that is not a short string")
    try:
        return Unban(str(parse_target(network)))
    except ValueError:
        raise Malformed("unban", "not a network a ban may name") from None


def _account(event: dict[str, Any]) -> AccountChange:
    value = event["acct"]
    if not isinstance(value, list) or len(value) != 2 or value[1] not in (0, 1):
        raise Malformed("account", "not [key, 0 or 1]")
    return AccountChange(clean_fold(value[0], "account"), bool(value[1]))


def _to_user(event: dict[str, Any]) -> ToUser:
    key = clean_fold(event["to"], "to a user")
    if "k" in event:
        return ToUser(key, kick=clean_reason(event["k"], "to a user"))
    if "ev" in event:
        return ToUser(key, event=clean_event(event["ev"], "to a user"))
    raise Malformed("to a user", "neither a kick nor an event")


def _everyone(event: dict[str, Any]) -> ToEveryone:
    return ToEveryone(clean_event(event.get("ev"), "to everyone"))


def _rooms(event: dict[str, Any]) -> ToRooms:
    said = event.get("h", 0)
    if said not in (0, 1):
        raise Malformed("to rooms", "said (h) neither 0 nor 1")
    return ToRooms(
        clean_rooms(event["r"], "to rooms"),
        clean_event(event.get("ev"), "to rooms"),
        clean_fold(event["s"], "to rooms") if "s" in event else None,
        bool(said),
    )


def _hand_over(event: dict[str, Any]) -> HandOver:
    key = clean_fold(event["ho"], "hand-over")
    old_node = clean_text(event["n"], "hand-over", 200) if "n" in event else None
    return HandOver(key, old_node)


def _handed(event: dict[str, Any]) -> Handed:
    return Handed(clean_fold(event["handed"], "handed"))


#: The kinds of event, by the field that tells them apart, in order.
_KINDS: list[tuple[str, Callable[[dict[str, Any]], Message]]] = [
    ("ho", _hand_over),
    ("handed", _handed),
    ("ban", _ban),
    ("unban", _unban),
    ("acct", _account),
    ("to", _to_user),
    ("a", _everyone),
    ("r", _rooms),
]


def checked(message: str) -> Message:
    """The message C{message}, its shape checked and its event's text sanitised.

    The event it carries comes back as an L{Event}, ready to deliver.

    @raise Malformed: if it is not an event of a known kind and shape.
    """
    if len(message) > EVENT_MAX:
        raise Malformed("too long", f"{len(message)} characters")
    try:
        event = json.loads(message)
    except ValueError:
        raise Malformed("not JSON", "cannot be decoded") from None
    if not isinstance(event, dict):
        raise Malformed("not an object", type(event).__name__)
    for field, clean in _KINDS:
        if field in event:
            return clean(event)
    raise Malformed("unknown kind", f"{len(event)} fields")


class MalformedLog:
    """Logs skipped events: the first of each kind, then once a minute.

    A writer that floods Redis with bad events must not flood the log too.
    """

    INTERVAL = 60.0

    def __init__(self, clock: Callable[[], float], node: str) -> None:
        self._clock = clock
        self._node = node
        #: By kind: when it was last logged, and how many skipped since.
        self._kinds: dict[str, list[float]] = {}

    def skipped(self, malformed: Malformed) -> None:
        """Count the event C{malformed} was raised for; log it if due."""
        now = self._clock()
        seen = self._kinds.get(malformed.kind)
        if seen is not None and now - seen[0] < self.INTERVAL:
            seen[1] += 1
            return
        more = int(seen[1]) if seen is not None else 0
        self._kinds[malformed.kind] = [now, 0]
        log.warn(
            "cluster: skipped a malformed event ({kind}: {why}); {more} more of "
            "this kind since the last warning",
            kind=shown(malformed.kind),
            why=shown(malformed.why),
            more=shown(more),
            node=shown(self._node),
        )
