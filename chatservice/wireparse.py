"""The client's side of the line protocol: server lines read back.

L{parse} classifies one line from the server into a small value (L{Notice},
L{Chat}, L{ResumeToken}...) whose fields are the parts of the line, and
whose C{build()} gives the same bytes again with the builder of
L{chatservice.wire}: C{parse(x.build()) == x} for every kind.  The console
client, the benchmark and the tests read the server through it, so the
prefixes (C{*** }, C{!!! }, C{<nick>}...) are known in these two modules
only.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import ClassVar

from . import wire

#: A nickname and a room, as L{chatservice.text.check_nickname} and
#: L{chatservice.text.check_room} accept them.
_NICK = r"[A-Za-z][A-Za-z0-9_-]*"
_ROOM = r"#[a-z0-9_-]{1,32}"


@dataclass(frozen=True, slots=True)
class Line:
    """One line from the server, classified by L{parse}."""

    #: The builder in L{chatservice.wire} of this kind of line, given the fields.
    _build: ClassVar[Callable[..., bytes]]

    def build(self) -> bytes:
        """The line's bytes, CRLF included, as the server sends them."""
        return self._build(*(getattr(self, f.name) for f in fields(self)))

    def __str__(self) -> str:
        """The line as the server sent it, without its CRLF."""
        return self.build().decode("utf-8").removesuffix(wire.CRLF)


@dataclass(frozen=True, slots=True)
class Notice(Line):
    """A C{*** } line of no more specific kind below."""

    text: str

    _build = staticmethod(wire.notice)


@dataclass(frozen=True, slots=True)
class Error(Line):
    """A C{!!! } line."""

    text: str

    _build = staticmethod(wire.error)


@dataclass(frozen=True, slots=True)
class Chat(Line):
    """A chat line, C{<nick> text}."""

    nick: str
    text: str

    _build = staticmethod(wire.chat)


@dataclass(frozen=True, slots=True)
class Action(Line):
    """An action, C{* nick text}."""

    nick: str
    text: str

    _build = staticmethod(wire.action)


@dataclass(frozen=True, slots=True)
class Private(Line):
    """A private message received, C{*sender* text}."""

    sender: str
    text: str

    _build = staticmethod(wire.private)


@dataclass(frozen=True, slots=True)
class PrivateEcho(Line):
    """A private message sent, as its sender sees it: C{-> *recipient* text}."""

    recipient: str
    text: str

    _build = staticmethod(wire.private_echo)


@dataclass(frozen=True, slots=True)
class Joined(Line):
    """C{nick} arrived in C{room}."""

    nick: str
    room: str

    _build = staticmethod(wire.joined)


@dataclass(frozen=True, slots=True)
class Left(Line):
    """C{nick} left the server, for C{reason}."""

    nick: str
    reason: str

    _build = staticmethod(wire.left)


@dataclass(frozen=True, slots=True)
class Parted(Line):
    """C{nick} left C{room} (for another one, or by choice)."""

    nick: str
    room: str
    reason: str

    _build = staticmethod(wire.parted)


@dataclass(frozen=True, slots=True)
class Lost(Line):
    """C{nick}'s connection dropped; they may come back."""

    nick: str

    _build = staticmethod(wire.lost)


@dataclass(frozen=True, slots=True)
class Back(Line):
    """C{nick} resumed their session."""

    nick: str

    _build = staticmethod(wire.back)


@dataclass(frozen=True, slots=True)
class Renamed(Line):
    """C{old} is now known as C{new}."""

    old: str
    new: str

    _build = staticmethod(wire.renamed)


@dataclass(frozen=True, slots=True)
class TopicSet(Line):
    """C{nick} set the topic of C{room}."""

    nick: str
    room: str
    topic: str

    _build = staticmethod(wire.topic_set)


@dataclass(frozen=True, slots=True)
class Welcome(Line):
    """The server registered C{nick}; C{online} says who else is here."""

    nick: str
    online: str

    _build = staticmethod(wire.welcome)


@dataclass(frozen=True, slots=True)
class NowIn(Line):
    """The session is in C{room} now; its C{topic} (empty: none is set)."""

    room: str
    topic: str

    _build = staticmethod(wire.now_in)


@dataclass(frozen=True, slots=True)
class Resumed(Line):
    """The session was resumed as C{nick} in C{room}; C{missed} lines follow."""

    nick: str
    room: str
    missed: int

    _build = staticmethod(wire.resumed)


@dataclass(frozen=True, slots=True)
class ResumeToken(Line):
    """The session's (new) resume token: a secret for the client, not news."""

    nick: str
    token: str

    _build = staticmethod(wire.resume_token)


@dataclass(frozen=True, slots=True)
class Pong(Line):
    """The answer to C{/ping TOKEN} (C{token} empty for a bare C{/ping})."""

    token: str

    _build = staticmethod(wire.pong)


@dataclass(frozen=True, slots=True)
class Stamped(Line):
    """A line from the scrollback: C{[HH:MM] } (UTC) and the line itself.

    A line said before today has its date too: C{[YYYY-MM-DD HH:MM] }.
    """

    time: str
    line: Line

    def build(self) -> bytes:  # noqa: D102
        return f"[{self.time}] ".encode("ascii") + self.line.build()


@dataclass(frozen=True, slots=True)
class Unknown(Line):
    """A line of none of the kinds above (no line this server sends)."""

    text: str

    def build(self) -> bytes:  # noqa: D102
        return (self.text + wire.CRLF).encode("utf-8")


#: The notices of a known form, tried in order; the first match wins.
_NOTICES: tuple[tuple[re.Pattern[str], Callable[..., Line]], ...] = tuple(
    (re.compile(pattern), kind)
    for pattern, kind in (
        (rf"({_NICK}) has joined ({_ROOM})", Joined),
        (rf"({_NICK}) has left \((.*)\)", Left),
        (rf"({_NICK}) has left ({_ROOM}) \((.*)\)", Parted),
        (rf"({_NICK}) lost connection", Lost),
        (rf"({_NICK}) is back", Back),
        (rf"({_NICK}) is now known as ({_NICK})", Renamed),
        (rf"({_NICK}) set the topic of ({_ROOM}): (.*)", TopicSet),
        (rf"Welcome, ({_NICK})! (.*)", Welcome),
        (rf"You are now in ({_ROOM})\. (?:Topic: (.*)|No topic is set\.)", NowIn),
        (
            rf"Resumed as ({_NICK}) in ({_ROOM}); "
            r"(?:(1) missed line|(\d+) missed lines) follows?:",
            Resumed,
        ),
        (
            r"resume token: (?P<token>\S+) \(if your connection drops, reconnect "
            rf"and send /resume ({_NICK}) (?P=token) as your first line\)",
            ResumeToken,
        ),
        (r"PONG(?: (.+))?", Pong),
    )
)
_CHAT = re.compile(rf"<({_NICK})> (.*)")
_ACTION = re.compile(rf"\* ({_NICK})(?: (.*))?")
_PRIVATE = re.compile(rf"\*({_NICK})\* (.*)")
_PRIVATE_ECHO = re.compile(rf"-> \*({_NICK})\* (.*)")
_STAMPED = re.compile(r"\[((?:\d{4}-\d\d-\d\d )?\d\d:\d\d)\] (.*)")


def parse(line: bytes | str) -> Line:
    """Classify one line from the server; C{parse(x.build()) == x}.

    C{line} may end with CR LF (or LF, or CR); bytes are decoded as UTF-8,
    invalid ones replaced.  Each field is a string but L{Resumed.missed}.
    """
    if isinstance(line, bytes):
        line = line.decode("utf-8", errors="replace")
    text = line.removesuffix("\n").removesuffix("\r")
    first = text[:1]
    if first == "<":
        if m := _CHAT.fullmatch(text):
            return Chat(m[1], m[2])
    elif first == "*":
        if text.startswith("*** "):
            return _notice(text[4:])
        if m := _ACTION.fullmatch(text):
            return Action(m[1], m[2] or "")
        if m := _PRIVATE.fullmatch(text):
            return Private(m[1], m[2])
    elif first == "!":
        if text.startswith("!!! "):
            return Error(text[4:])
    elif first == "-":
        if m := _PRIVATE_ECHO.fullmatch(text):
            return PrivateEcho(m[1], m[2])
    elif first == "[":
        if m := _STAMPED.fullmatch(text):
            return Stamped(m[1], parse(m[2]))
    return Unknown(text)


def _notice(text: str) -> Line:
    """The kind of the notice whose text (after C{*** }) is C{text}."""
    for pattern, kind in _NOTICES:
        if m := pattern.fullmatch(text):
            if kind is Resumed:
                return Resumed(m[1], m[2], int(m[3] or m[4]))
            if kind is ResumeToken:
                return ResumeToken(m[2], m["token"])
            return kind(*(group or "" for group in m.groups()))
    return Notice(text)
