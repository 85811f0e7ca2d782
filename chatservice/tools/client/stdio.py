"""The client's standard input and output, when not at a prompt.

L{InputProtocol} reads what the user types (a pipe, a file, or a terminal
without the console) in lines; L{PlainOutput} writes the server's lines
unchanged for scripts, L{TerminalOutput} cleaned and with nicknames in
colour for a person (L{output_for} chooses).
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Mapping
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol as _Protocol
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from ...wireparse import Action, Chat, Line, Private, PrivateEcho, Stamped, parse


class Output(Protocol):
    """Where the server's lines are written (standard output)."""

    def line(self, raw: bytes) -> None:
        """Write one line from the server, C{raw} without its CR LF."""


class PlainOutput:
    """Writes each server line as it came, ended by LF: for scripts."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write

    def line(self, raw: bytes) -> None:
        """See L{Output.line}."""
        self._write(raw + b"\n")


#: C0 and C1 controls but tab, and DEL: nothing that can drive a terminal.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")
#: Foreground colours for nicknames: the normal and the bright ones, without
#: black and white, which vanish on one background or the other.
PALETTE = (31, 32, 33, 34, 35, 36, 91, 92, 93, 94, 95, 96)


def colour_of(nickname: str) -> int:
    """The ANSI colour of C{nickname}: the same in every run, ignoring case."""
    return PALETTE[zlib.crc32(nickname.lower().encode("ascii")) % len(PALETTE)]


class TerminalOutput:
    """Writes server lines for a person at a terminal: nicknames in colour.

    The server sanitises what it relays, but this client is what writes to
    the terminal, so it removes control characters (ESC included) itself,
    with or without colours, before adding its own escape sequences.

    @param colour: Whether to colour nicknames (C{False} for C{NO_COLOR}).
    """

    def __init__(self, write: Callable[[bytes], None], colour: bool = True) -> None:
        self._write = write
        self._colour = colour

    def line(self, raw: bytes) -> None:
        """See L{Output.line}."""
        text = _CONTROLS.sub("", raw.decode("utf-8", errors="replace"))
        speaker = _speaker(parse(text)) if self._colour else None
        if speaker is not None:
            start, nick = speaker
            end = start + len(nick)
            text = f"{text[:start]}\x1b[{colour_of(nick)}m{nick}\x1b[0m{text[end:]}"
        self._write(text.encode("utf-8") + b"\n")


def _speaker(line: Line) -> tuple[int, str] | None:
    """Where the nickname starts in a line that has one, and the nickname.

    Chat lines and actions, live or from the scrollback (C{<nick> },
    C{* nick }), and private messages (C{*nick* }, C{-> *nick* }).
    """
    stamp = 0
    if isinstance(line, Stamped):
        stamp = len(f"[{line.time}] ")
        line = line.line
        if not isinstance(line, Chat | Action):
            return None
    if isinstance(line, Chat):
        return stamp + len("<"), line.nick
    if isinstance(line, Action):
        return stamp + len("* "), line.nick
    if isinstance(line, Private):
        return len("*"), line.sender
    if isinstance(line, PrivateEcho):
        return len("-> *"), line.recipient
    return None


class Typist(Protocol):
    """What an L{InputProtocol} tells: the L{session.Session}."""

    def user_line(self, line: bytes) -> None:
        """One typed line, without its LF (or CR LF)."""

    def user_eof(self) -> None:
        """The input ended, or standard output is gone."""

    def status(self, line: str) -> None:
        """Tell the user C{line} (on standard error)."""


@implementer(IHalfCloseableProtocol)
class InputProtocol(_Protocol):
    """What the user types (standard input), in lines, for the L{Session}.

    The end of the input (Ctrl-D, or the end of a file) ends the session with
    C{/quit}; standard output stays open until then, which is why this is a
    half-closeable protocol.  A last line without LF counts.  Lines longer
    than L{MAX_LENGTH} are dropped, with a status line.
    """

    MAX_LENGTH = 1 << 20

    def __init__(self, session: Typist) -> None:
        self.session = session
        self.closed: Deferred[None] = Deferred()
        self.output_closed = False
        self._buffer = bytearray()
        self._discarding = False  # the rest of a line too long to keep

    def dataReceived(self, data: bytes) -> None:
        """Split C{data} into lines, keeping an unfinished one for later."""
        *ends, tail = data.split(b"\n")
        for end in ends:
            if self._discarding:
                self._discarding = False
            else:
                self._buffer += end
                self._line(bytes(self._buffer))
            self._buffer.clear()
        if not self._discarding:
            self._buffer += tail
            if len(self._buffer) > self.MAX_LENGTH:
                self._buffer.clear()
                self._too_long()
                self._discarding = True

    def _line(self, line: bytes) -> None:
        if len(line) > self.MAX_LENGTH:
            self._too_long()
            return
        if line.endswith(b"\r"):
            line = line[:-1]
        self.session.user_line(line)

    def _too_long(self) -> None:
        self.session.status(
            f"*** a typed line was longer than {self.MAX_LENGTH} bytes; it was not sent"
        )

    def readConnectionLost(self) -> None:
        """The input ended: its last line, if any, then C{/quit}."""
        if self._buffer:
            self._line(bytes(self._buffer))
            self._buffer.clear()
        self.session.user_eof()

    def writeConnectionLost(self) -> None:
        """Standard output is gone (the reader of a pipe left): quit."""
        self.output_closed = True
        self.session.user_eof()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Both standard input and output are closed."""
        if not self.closed.called:
            self.closed.callback(None)


def output_for(
    write: Callable[[bytes], None], terminal: bool, environ: Mapping[str, str]
) -> Output:
    """Where the server's lines go: to a terminal cleaned, otherwise unchanged.

    At a terminal control characters are always removed; C{NO_COLOR} (set
    and not empty, see U{https://no-color.org}) turns off the colours only.
    """
    if not terminal:
        return PlainOutput(write)
    return TerminalOutput(write, colour=not environ.get("NO_COLOR"))
