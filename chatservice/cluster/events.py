"""The events nodes read from each other, checked before they are acted on.

An event is JSON that any writer to Redis could have made: a node's bug, an
old version, or someone who reached Redis.  L{checked} keeps only the fields
an event of its kind has, of the right types and sizes, and sanitises its
text once more (L{chatservice.text.sanitise}), so no terminal escape, stray
line break or malformed ban reaches a user or the bans file.  What does not
fit raises L{Malformed}; the reader logs it (L{MalformedLog}) and skips it.

What L{checked} returns is a typed event (L{ToRooms}, L{ToUser}, L{Ban}...)
with readable field names; the node acts on it through a table of a
handler for each kind (L{chatservice.cluster.inbox}).
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
from ..logs import gate, shown
from ..reasons import CloseKind, CloseReason
from ..text import check_nickname, check_room, fold, sanitise

log = Logger(observer=gate)

#: The most bytes of text (UTF-8) an event carries: a line said with the
#: largest --max-line of 2,048 bytes, each byte invalid UTF-8 (3 bytes as
#: U+FFFD), with its nickname, fits.  A node cuts longer text (see L{cut}).
TEXT_MAX = 7 * 1024

#: The most bytes of JSON an event takes in the stream: its text and a
#: few short fields (rooms, nicknames, a node's name).
EVENT_MAX = 8 * 1024

#: A kick or ban reason, a node name, at most (characters).
REASON_MAX = 512

CRLF = "\r\n"


class Malformed(ValueError):
    """An event that does not have the shape of its kind."""

    def __init__(self, kind: str, why: str) -> None:
        super().__init__(f"{kind}: {why}")
        self.kind = kind
        self.why = why


def cut(text: str, limit: int = TEXT_MAX) -> str:
    """C{text} (lines ending in CRLF) cut to at most C{limit} bytes of UTF-8.

    A line cut short ends with C{…} and CRLF; lines after it are dropped.
    """
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    head = data[: limit - 5].decode("utf-8", "ignore")
    return head.rsplit(CRLF, 1)[0] + "\N{HORIZONTAL ELLIPSIS}" + CRLF


def clean_lines(text: object, kind: str = "lines") -> bytes:
    """C{text}, one or more lines each ending in CRLF, sanitised, as bytes."""
    if not isinstance(text, str) or not text.endswith(CRLF):
        raise Malformed(kind, "lines that are not text ending in CRLF")
    if len(text) > TEXT_MAX:  # characters: at least as many bytes
        raise Malformed(kind, "text too long")
    lines = text.split(CRLF)[:-1]
    return "".join(sanitise(line) + CRLF for line in lines).encode("utf-8")


def clean_text(text: object, kind: str, limit: int = REASON_MAX) -> str:
    """C{text}, a short one-line string, sanitised."""
    if not isinstance(text, str) or len(text) > limit:
        raise Malformed(kind, "not a short string")
    return sanitise(text)


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


# The kinds of event, with readable field names.  On the stream each is a
# JSON object of one-letter keys (the Lua scripts write most of them); its
# C{fields} are what a node publishes itself.


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
        """The event as the stream carries it."""
        reason = self.reason[:REASON_MAX]
        return {"ban": [self.network, self.expires, reason, self.by]}


@dataclass(frozen=True, slots=True)
class Unban:
    """A ban lifted on another node (C{unban})."""

    network: str

    def fields(self) -> dict[str, object]:
        """The event as the stream carries it."""
        return {"unban": self.network}


@dataclass(frozen=True, slots=True)
class ToUser:
    """Lines for one user (C{to}, C{d}), or their kick (C{k}: the reason)."""

    key: str
    data: bytes | None = None
    kick: CloseReason | None = None


@dataclass(frozen=True, slots=True)
class ToEveryone:
    """Lines for every user (C{a}, C{d})."""

    data: bytes

    def fields(self) -> dict[str, object]:
        """The event as the stream carries it."""
        return {"a": 1, "d": text_of(self.data)}


@dataclass(frozen=True, slots=True)
class ToRooms:
    """Lines for the members of rooms (C{r}, C{d}).

    C{sender}: the folded nickname of the user it is about (C{s}), whose
    node tells them itself; C{said}: when it was said (C{h}), for a line
    each room keeps in its scrollback.
    """

    rooms: list[str]
    data: bytes
    sender: str | None = None
    said: float | None = None

    def fields(self) -> dict[str, object]:
        """The event as the stream carries it."""
        event: dict[str, object] = {"r": self.rooms, "d": text_of(self.data)}
        if self.sender is not None:
            event["s"] = self.sender
        return event


Event = HandOver | Handed | Ban | Unban | ToUser | ToEveryone | ToRooms


def text_of(data: bytes) -> str:
    """Wire bytes as text for JSON, cut to what an event may carry.

    They are UTF-8, sanitised on the way in; L{TEXT_MAX} bytes at most.
    """
    text = data.decode("utf-8", "replace")
    return cut(text) if len(data) > TEXT_MAX else text


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


def _to_user(event: dict[str, Any]) -> ToUser:
    key = clean_fold(event["to"], "to a user")
    if "k" in event:
        return ToUser(key, kick=clean_reason(event["k"], "to a user"))
    if "d" in event:
        return ToUser(key, data=clean_lines(event["d"], "to a user"))
    raise Malformed("to a user", "neither a kick nor lines")


def _everyone(event: dict[str, Any]) -> ToEveryone:
    return ToEveryone(clean_lines(event.get("d"), "to everyone"))


def _rooms(event: dict[str, Any]) -> ToRooms:
    return ToRooms(
        clean_rooms(event["r"], "to rooms"),
        clean_lines(event.get("d"), "to rooms"),
        clean_fold(event["s"], "to rooms") if "s" in event else None,
        _number(event["h"], "to rooms") if "h" in event else None,
    )


def _hand_over(event: dict[str, Any]) -> HandOver:
    key = clean_fold(event["ho"], "hand-over")
    old_node = clean_text(event["n"], "hand-over", 200) if "n" in event else None
    return HandOver(key, old_node)


def _handed(event: dict[str, Any]) -> Handed:
    return Handed(clean_fold(event["handed"], "handed"))


#: The kinds of event, by the field that tells them apart, in order.
_KINDS: list[tuple[str, Callable[[dict[str, Any]], Event]]] = [
    ("ho", _hand_over),
    ("handed", _handed),
    ("ban", _ban),
    ("unban", _unban),
    ("to", _to_user),
    ("a", _everyone),
    ("r", _rooms),
]


def checked(message: str) -> Event:
    """The event C{message}, its shape checked and its text sanitised.

    Its lines come back as bytes, ready to deliver.

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
