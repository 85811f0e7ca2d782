"""The immutable events the registry fans out, encoded once per wire format.

An L{Event} is what happened (a chat line, a join, a notice), as fields, not
bytes: C{kind} and the fields that kind has.  The registry hands the same
event object to every recipient; each front end turns it into its own bytes
with L{Event.encoded}, which encodes it once per format and keeps the result
on the event, so a broadcast to a thousand users costs one encoding per wire
format, not one per user.

The line format is the one every server has: it is encoded when the event is
made, in L{Event.line}, with the builders of L{chatservice.wire} (which stay
the only place that knows C{*** }, C{!!! } and C{<nick>}).  Text may hold
newlines (a frame client may send several lines as one message): the line
format makes one line of each, each with the prefix.

The builders below are the only way the server makes events; their names
follow L{chatservice.wire}.  L{Event.as_dict} and L{from_dict} turn an event
into plain JSON values and back (other wire formats, and the cluster, carry
those).
"""

import time as _time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from math import modf
from typing import Any

from . import wire
from .reasons import CloseReason

#: The kinds of event, and the fields (besides C{kind} and C{time}) each has.
KINDS: dict[str, tuple[str, ...]] = {
    # Room talk.
    "chat": ("room", "nick", "text"),
    "action": ("room", "nick", "text"),
    # Private messages: to the recipient, and the echo to the sender.
    "private": ("nick", "text"),
    "private_sent": ("nick", "text"),
    # Who comes and goes.
    "join": ("room", "nick"),
    "part": ("room", "nick", "reason"),
    "quit": ("nick", "reason"),
    "lost": ("nick",),
    "back": ("nick",),
    "nick": ("nick", "new_nick"),
    "topic": ("room", "nick", "text"),
    # About this session.
    "welcome": ("nick", "text"),
    "room": ("room", "text"),
    "resumed": ("nick", "room", "count"),
    "resume_token": ("nick", "token"),
    "pong": ("text",),
    "disconnected": ("reason",),
    # Anything else the server says, and what the user did wrong.
    "notice": ("text",),
    "error": ("code", "text"),
}

#: An encoder: an event to the bytes of one wire format.
Encoder = Callable[["Event"], bytes]


def _lines(text: str, render: Callable[[str], bytes]) -> bytes:
    """C{render} each line of C{text}: one wire line per line of text."""
    if "\n" not in text:
        return render(text)
    return b"".join([render(line) for line in text.split("\n")])


def _one(text: str) -> str:
    """C{text}, shown inside one line, on one line: a newline is a space.

    Commands make such text one line already (L{chatservice.commands});
    this holds for events from elsewhere too (a plugin, another node), so
    that no one's topic or reason can start a line of its own.
    """
    return text.replace("\n", " ") if "\n" in text else text


def _line_of(event: "Event") -> bytes:
    """The line format of C{event}: see L{chatservice.wire}."""
    if event.kind == "chat":
        # The line said, almost every event: no look-up, no closure when
        # it is one line.
        text = event.text
        if "\n" not in text:
            return wire.chat(event.nick or "", text)
        nick = event.nick or ""
        return _lines(text, lambda line: wire.chat(nick, line))
    line_of = _LINE_OF.get(event.kind)
    if line_of is None:
        raise ValueError(f"unknown event kind {event.kind!r}")
    return line_of(event)


def _chat_line(event: "Event") -> bytes:
    nick = event.nick or ""
    return _lines(event.text, lambda line: wire.chat(nick, line))


def _action_line(event: "Event") -> bytes:
    nick = event.nick or ""
    return _lines(event.text, lambda line: wire.action(nick, line))


def _private_line(event: "Event") -> bytes:
    nick = event.nick or ""
    return _lines(event.text, lambda line: wire.private(nick, line))


def _private_sent_line(event: "Event") -> bytes:
    nick = event.nick or ""
    return _lines(event.text, lambda line: wire.private_echo(nick, line))


#: By kind, the line format of an event (L{_line_of}): one look-up, where
#: a chain of comparisons took up to 19 (a welcome's events are late in it).
_LINE_OF: dict[str, Callable[["Event"], bytes]] = {
    "chat": _chat_line,
    "action": _action_line,
    "private": _private_line,
    "private_sent": _private_sent_line,
    "notice": lambda event: _lines(event.text, wire.notice),
    "error": lambda event: _lines(event.text, wire.error),
    "join": lambda event: wire.joined(event.nick or "", event.room or ""),
    "part": lambda event: wire.parted(
        event.nick or "", event.room or "", _one(event.reason or "")
    ),
    "quit": lambda event: wire.left(event.nick or "", _one(event.reason or "")),
    "lost": lambda event: wire.lost(event.nick or ""),
    "back": lambda event: wire.back(event.nick or ""),
    "nick": lambda event: wire.renamed(event.nick or "", event.new_nick or ""),
    "topic": lambda event: wire.topic_set(
        event.nick or "", event.room or "", _one(event.text)
    ),
    "welcome": lambda event: wire.welcome(event.nick or "", event.text),
    "room": lambda event: wire.now_in(event.room or "", _one(event.text)),
    "resumed": lambda event: wire.resumed(
        event.nick or "", event.room or "", event.count or 0
    ),
    "resume_token": lambda event: wire.resume_token(
        event.nick or "", event.token or ""
    ),
    "pong": lambda event: wire.pong(event.text),
    "disconnected": lambda event: wire.notice(f"disconnected: {event.reason}"),
}


class _Fields:
    """An event's fields: the slots L{Event} and L{_Making} share."""

    __slots__ = (
        "kind",
        "time",
        "text",
        "nick",
        "room",
        "reason",
        "new_nick",
        "token",
        "count",
        "code",
        "history",
        "line",
        "_encoded",
    )

    kind: str
    #: When it happened, in seconds since the epoch (UTC).
    time: float
    text: str
    nick: str | None
    room: str | None
    reason: str | None
    new_nick: str | None
    token: str | None
    count: int | None
    code: str | None
    #: True for a line of a room's scrollback, shown again to a newcomer.
    history: bool
    #: The event in the line format, CRLF-terminated UTF-8, made once.
    line: bytes
    _encoded: dict[Encoder, bytes] | None


class _Making(_Fields):
    """An event being made: its slots take plain assignments (L{Event.__new__})."""

    __slots__ = ()


class Event(_Fields):
    """One thing that happened, as every recipient's front end sees it.

    Immutable once made; C{line} is its line-format bytes, made once.  An
    event said before (a room's scrollback) is made again with L{history}:
    its line is stamped with the time it was said.
    """

    __slots__ = ()

    def __new__(
        cls,
        kind: str,
        text: str = "",
        *,
        nick: str | None = None,
        room: str | None = None,
        reason: str | None = None,
        new_nick: str | None = None,
        token: str | None = None,
        count: int | None = None,
        code: str | None = None,
        when: float | None = None,
        history: bool = False,
    ) -> "Event":
        """Make the event; see the class docstring for the fields."""
        return _made(
            kind, text, nick, room, reason, new_nick, token, count, code, when, history
        )

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"an Event is immutable (setting {name!r})")

    def __repr__(self) -> str:
        return f"<Event {self.kind} {self.as_dict()!r}>"

    def encoded(self, encoder: Encoder) -> bytes:
        """The event in the format of C{encoder}, encoded once and kept.

        The first recipient of a format pays for the encoding; the others
        get the same bytes.
        """
        cache = self._encoded
        if cache is None:
            cache = {}
            object.__setattr__(self, "_encoded", cache)
        else:
            data = cache.get(encoder)
            if data is not None:
                return data
        data = cache[encoder] = encoder(self)
        return data

    def as_dict(self) -> dict[str, Any]:
        """The event as JSON values: C{type}, C{time} (ISO 8601 UTC), fields.

        Only the fields of its kind (L{KINDS}) are present; C{history} only
        when true.
        """
        out: dict[str, Any] = {"type": self.kind, "time": iso_time(self.time)}
        for name in KINDS[self.kind]:
            value = getattr(self, name)
            out[name] = "" if value is None and name != "count" else value
        if self.history:
            out["history"] = True
        return out

    def stamped(self, when: float | None = None, dated: bool = False) -> "Event":
        """The event as a line of scrollback: the same, marked as history.

        C{when} is when it was said, if not the event's own time.  With
        C{dated}, its line shows the date too (L{wire.dated}): a line said
        before today.
        """
        when = self.time if when is None else when
        # From the line the event has (not made again, then split): 0.6
        # against 1.8 us a line, made for each line said in a room that
        # newcomers are shown.
        line = self.line if not self.history else _line_of(self)
        stamp = wire.dated if dated else wire.stamped
        if line.count(b"\n") == 1:
            line = stamp(when, line)
        else:
            parts = line.split(b"\n")[:-1]
            line = b"".join([stamp(when, part + b"\n") for part in parts])
        return _copy(self, when, True, line)


def _made(
    kind: str,
    text: str = "",
    nick: str | None = None,
    room: str | None = None,
    reason: str | None = None,
    new_nick: str | None = None,
    token: str | None = None,
    count: int | None = None,
    code: str | None = None,
    when: float | None = None,
    history: bool = False,
    line: bytes | None = None,
) -> Event:
    """L{Event}C{(...)}, its fields given by position: what the builders call.

    Made as a _Making, whose slots take plain assignments, then turned into
    an Event, whose __setattr__ refuses them: 0.65 us an event, where
    setting each slot through object.__setattr__ (as a frozen dataclass
    does) took 1.25, and an event is made for every line said (a twentieth
    of a line's fan-out to 100 users).  Called by position, not through
    C{Event}'s keywords: 0.63 against 0.96 us a join (a welcome makes six
    events).  A builder that knows its event's line (one line of a kind it
    makes) gives it, not found by kind (L{_line_of}): two calls less.
    """
    self = object.__new__(_Making)
    self.kind = kind
    self.time = _time.time() if when is None else when
    self.text = text
    self.nick = nick
    self.room = room
    self.reason = reason
    self.new_nick = new_nick
    self.token = token
    self.count = count
    self.code = code
    self.history = history
    if line is None:
        line = _line_of(self)  # type: ignore[arg-type]
    if history:
        parts = line.split(b"\n")[:-1]
        line = b"".join([wire.stamped(self.time, part + b"\n") for part in parts])
    self.line = line
    self._encoded = None
    self.__class__ = Event  # type: ignore[assignment]
    return self  # type: ignore[return-value]


class SharedEncoding:
    """A wire format whose bytes for an event are the same for every user.

    Called with an event (or anything with an C{encoded} method), it gives
    C{event.encoded(encoder)}: encoded once and kept on the event.  It also
    remembers the last event it was asked for and its bytes: a broadcast's
    recipients of one format come one after another in the fan-out, and
    the send queue's C{deliver} for such a format
    (L{chatservice.output.OutputMixin}) reads them here with two slot reads
    and an identity test, where C{Event.encoded} is a Python call and a
    dictionary look-up per recipient (fan-out to 1,000 frame users: 150 ns
    a recipient less, measured with C{scripts/fanout.py --frames}).
    """

    __slots__ = ("encoder", "event", "data")

    def __init__(self, encoder: Encoder) -> None:
        #: The format's encoder (for L{Event.encoded}).
        self.encoder = encoder
        #: The last event encoded here, and its bytes.
        self.event: object = None
        self.data = b""

    def __call__(self, event: "Event") -> bytes:
        """C{event}'s bytes in this format, made once."""
        if event is self.event:
            return self.data
        data = event.encoded(self.encoder)
        # The event is kept alive here, so no other can have its identity.
        self.event = event
        self.data = data
        return data

    def __repr__(self) -> str:
        return f"<SharedEncoding {self.encoder.__qualname__}>"


class Batch:
    """Events answered together, whose bytes in each format are made once.

    A room's stamped scrollback, shown to each newcomer
    (L{chatservice.welcome.ShownScrollback}): the send queue's
    C{answer_all} takes a batch's bytes in its format with one list copy,
    and their length in bytes at once (L{encoded_sized}), where each event
    is otherwise checked, encoded and measured for each newcomer.  The
    events are checked once, here.
    """

    __slots__ = ("events", "_encoded")

    #: The most formats whose bytes a batch keeps.
    FORMATS = 8

    def __init__(self, events: Iterable[Event]) -> None:
        self.events = tuple(events)
        for event in self.events:
            if event.__class__ is not Event:
                raise not_an_event(event)
        # By format: the bytes of the events encoded so far, their length,
        # and their LFs.
        self._encoded: dict[Encoder, tuple[list[bytes], int, int]] = {}

    def __len__(self) -> int:
        return len(self.events)

    def __iter__(self) -> "Iterator[Event]":
        return iter(self.events)

    def __getitem__(self, index: int) -> Event:
        return self.events[index]

    def __repr__(self) -> str:
        return f"<Batch of {len(self.events)} events>"

    def encoded(self, encoder: Encoder) -> list[bytes]:
        """The events' bytes in the format of C{encoder}: a new list each time.

        C{encoder} is a format's, shared by all its connections (the line
        format's, a L{SharedEncoding}): the bytes are kept for it, and so
        is it.  A connection's own (a bound method) is for L{map}.
        """
        return self.encoded_sized(encoder)[0]

    def encoded_sized(self, encoder: Encoder) -> tuple[list[bytes], int]:
        """L{encoded}, and the length of those bytes, kept with them.

        The send queue counts what it is answered: measuring a 50-line
        scrollback took 0.77 us a newcomer (C{sum(map(len, ...))}).
        """
        data, size, _ = self.encoded_counted(encoder)
        return data, size

    def encoded_counted(self, encoder: Encoder) -> tuple[list[bytes], int, int]:
        """L{encoded_sized}, and the LFs in those bytes, kept with them.

        The send queue counts the lines it sends where they are queued
        (C{chatservice_lines_sent}): a 50-line scrollback's once, not for
        each newcomer.
        """
        kept = self._encoded.get(encoder)
        data, size, lines = ([], 0, 0) if kept is None else kept
        if len(data) < len(self.events):
            more = list(map(encoder, self.events[len(data) :]))
            data = data + more
            size += sum(map(len, more))
            lines += b"".join(more).count(b"\n")
            if kept is not None or len(self._encoded) < self.FORMATS:
                self._encoded[encoder] = (data, size, lines)
        return data[:], size, lines

    def shifted(self, drop: int, more: Sequence[Event]) -> "Batch":
        """The batch without its first C{drop} events, and with C{more}.

        The bytes kept for each format are kept for the events that stay;
        C{more} are encoded in a format when first asked for in it.
        """
        batch = Batch(more)
        batch.events = self.events[drop:] + batch.events
        batch._encoded = {
            encoder: (
                data[drop:],
                size - sum(map(len, data[:drop])),
                lines - b"".join(data[:drop]).count(b"\n"),
            )
            for encoder, (data, size, lines) in self._encoded.items()
        }
        return batch


def again(event: Event) -> Event:
    """C{event} said again now: its fields and its line, with the time now.

    For what the server says alike to each newcomer (the help and MOTD, a
    room's scrollback's first and last lines): a copy of one made once,
    0.25 us, where making it anew formats its line again (0.8 us a notice,
    1.5 the help and MOTD).  Its bytes in other formats are made for it,
    with its own time.
    """
    return _copy(event, _time.time(), event.history, event.line)


def _copy(event: Event, when: float, history: bool, line: bytes) -> Event:
    """C{event}'s fields with another time, history mark and line.

    Made as L{_made} makes an event (a _Making turned into an Event), for
    L{Event.stamped} and L{again}; a field added to the event is added
    here and in L{_made}.
    """
    copy = object.__new__(_Making)
    copy.kind = event.kind
    copy.time = when
    copy.text = event.text
    copy.nick = event.nick
    copy.room = event.room
    copy.reason = event.reason
    copy.new_nick = event.new_nick
    copy.token = event.token
    copy.count = event.count
    copy.code = event.code
    copy.history = history
    copy.line = line
    copy._encoded = None
    copy.__class__ = Event  # type: ignore[assignment]
    return copy  # type: ignore[return-value]


#: The last whole second L{iso_time} wrote, and its text up to the
#: seconds (C{2026-12-06T17:55:03}): one tuple, replaced whole.
_last_second: tuple[float, str] = (float("nan"), "")
#: C{.000Z} to C{.999Z}: a tuple index, where an f-string took 0.18 us.
_MILLISECONDS = tuple(f".{milli:03d}Z" for milli in range(1000))


def iso_time(when: float) -> str:
    """C{when} as ISO 8601 UTC with milliseconds: C{2026-12-06T17:55:03.123Z}."""
    # What datetime.fromtimestamp(when, UTC).isoformat(timespec=
    # "milliseconds") writes, its date and time to the second kept for the
    # second (0.2 against 1.3 us; an event's JSON and IRC's server-time
    # tags are made once per broadcast).  fromtimestamp splits a float as
    # modf does, rounds the microseconds half to even (as round does), and
    # carries a rounding to 1,000,000, or a negative fraction, into the
    # second: those, other seconds and other types are made by datetime.
    global _last_second
    if when.__class__ is float:
        fraction, second = modf(when)
        last, text = _last_second
        if second == last:  # never for a NaN
            micro = round(fraction * 1e6)
            if 0 <= micro < 1000000:
                return text + _MILLISECONDS[micro // 1000]
    moment = datetime.fromtimestamp(when, UTC)
    text = moment.isoformat(timespec="milliseconds")[:-6] + "Z"
    if when.__class__ is float:
        fraction, second = modf(when)
        if 0 <= round(fraction * 1e6) < 1000000:
            _last_second = (second, text[:-5])
    return text


def from_dict(values: Mapping[str, Any], when: float | None = None) -> Event:
    """The event that L{Event.as_dict} gave C{values}, trusting its fields.

    Whoever reads C{values} from outside the process checks them first (see
    L{chatservice.cluster.events}).  C{when} replaces the ISO time.
    """
    kind = values["type"]
    fields = {name: values.get(name) for name in KINDS[kind]}
    text = fields.pop("text", None) or ""
    return Event(kind, text, when=when, history=bool(values.get("history")), **fields)


# The builders: the same names and arguments as chatservice.wire's, plus the
# room where a line in a room has one.


def notice(text: str) -> Event:
    """Information from the server (C{*** }): one line per line of C{text}."""
    if "\n" in text:
        return _made("notice", text)
    return _made("notice", text, line=wire.notice(text))


def notices(lines: Iterable[str]) -> Event:
    """Several lines of information as one notice (one wire line each)."""
    return _made("notice", "\n".join(lines))


def error(text: str, code: str = "error") -> Event:
    """What the user did wrong (C{!!! }), with a machine-readable C{code}."""
    return _made("error", text, code=code)


def chat(nickname: str, text: str, room: str | None = None) -> Event:
    """A chat line (or several) from C{nickname} in C{room}."""
    if "\n" in text:
        return _made("chat", text, nickname, room)
    return _made("chat", text, nickname, room, line=wire.chat(nickname, text))


def action(nickname: str, text: str, room: str | None = None) -> Event:
    """An action (C{/me}) by C{nickname} in C{room}."""
    return _made("action", text, nickname, room)


def private(sender: str, text: str) -> Event:
    """A private message from C{sender}, as its recipient sees it."""
    return _made("private", text, sender)


def private_echo(recipient: str, text: str) -> Event:
    """A private message to C{recipient}, as its sender sees it."""
    return _made("private_sent", text, recipient)


def joined(nickname: str, room: str) -> Event:
    """Someone arrived in C{room}."""
    return _made("join", "", nickname, room, line=wire.joined(nickname, room))


def parted(nickname: str, room: str, reason: str) -> Event:
    """Someone left one room (for another, or by choice)."""
    return _made("part", "", nickname, room, reason)


def left(nickname: str, reason: CloseReason | str) -> Event:
    """Someone left the server, and why."""
    text = str(reason)
    line = wire.left(nickname, _one(text))
    return _made("quit", "", nickname, None, text, line=line)


def lost(nickname: str) -> Event:
    """Someone's connection dropped; they may come back (resume)."""
    return Event("lost", nick=nickname)


def back(nickname: str) -> Event:
    """Someone whose connection dropped resumed their session."""
    return Event("back", nick=nickname)


def renamed(old: str, new: str) -> Event:
    """Someone changed nickname."""
    return Event("nick", nick=old, new_nick=new)


def topic_set(nickname: str, room: str, topic: str) -> Event:
    """Someone set a room's topic."""
    return Event("topic", topic, nick=nickname, room=room)


def welcome(nickname: str, online: str) -> Event:
    """The first event after registration: C{nickname} is ours, who is online."""
    return _made("welcome", online, nickname, line=wire.welcome(nickname, online))


def now_in(room: str, topic: str) -> Event:
    """The answer to C{/join}: the session is in C{room} now, and its topic."""
    return Event("room", topic, room=room)


def resumed(nickname: str, room: str, missed: int) -> Event:
    """The answer to C{/resume}: back as C{nickname}, C{missed} lines follow."""
    return Event("resumed", nick=nickname, room=room, count=missed)


def resume_token(nickname: str, token: str) -> Event:
    """A user's (new) resume token."""
    return Event("resume_token", nick=nickname, token=token)


def pong(token: str) -> Event:
    """The answer to C{/ping TOKEN}."""
    return Event("pong", token)


def disconnected(reason: CloseReason | str) -> Event:
    """The user is being disconnected, and why."""
    return Event("disconnected", reason=str(reason))


def not_an_event(data: object) -> TypeError:
    """The error for output that is not an L{Event}: a plugin's mistake."""
    return TypeError(
        f"a client's output must be a chatservice.events.Event (made with "
        f"chatservice.events.notice() and the like), not "
        f"{type(data).__name__}: {data!r:.60}"
    )
