"""Framing of the line protocol: bytes in, lines out, in any chunking.

Lines end in LF, with or without CR before it.  A line longer than
C{MAX_LENGTH} gets L{lineLengthExceeded}, is discarded up to its newline,
and the connection goes on; the buffer never holds more than one read
beyond that limit.  Telnet commands are read and answered in the same pass
(L{chatservice.telnet}), only for input with a 0xFF.  Reading stops while
C{paused} (flood control, a command still running, a client behind in
reading its answers) and goes on where it stopped.

L{LineFraming} is a mixin inherited by L{chatservice.frontends.lines.LineProtocol}
before C{LineReceiver} (whose C{dataReceived} it replaces), its attributes
among the protocol's slots: it costs no object of its own per connection
and no call more per line.  The class that inherits it provides
C{MAX_LENGTH}, C{paused}, C{_close_reason}, C{lineReceived(line)},
C{lineLengthExceeded(line)}, C{answer(data)}, C{_take_token()} (may this
line be read now?), C{_first_bytes(data)} (may a connection that starts
with these bytes go on?) and C{_read_more()} (told of every read but the
first).
"""

from typing import TYPE_CHECKING

from . import events
from .events import Event
from .telnet import (
    COMPLETE,
    INTERRUPTED,
    MAX_COMMANDS,
    MORE,
    TOO_MANY,
    TelnetReader,
)

if TYPE_CHECKING:
    from .reasons import CloseReason


#: The attributes of L{LineFraming}, for the C{__slots__} of the class that
#: inherits it (only one base of a class may have slots of its own).
FRAMING_SLOTS = ("_buffer", "_busyReceiving", "_discarding", "_first_data", "_telnet")


class LineFraming:
    """Frames input into lines for C{lineReceived}; see the module docstring.

    Call L{_init_framing} from C{__init__}; put L{FRAMING_SLOTS} in the
    inheriting class's C{__slots__}.
    """

    __slots__ = ()

    # Provided by the class that inherits this (see the module docstring).
    MAX_LENGTH: int
    paused: bool
    _close_reason: "CloseReason | None"

    if TYPE_CHECKING:  # not at run time: they would hide LineReceiver's

        def lineReceived(self, line: bytes) -> None: ...  # noqa: D102
        def lineLengthExceeded(self, line: bytes) -> None: ...  # noqa: D102
        def answer(self, event: Event) -> None: ...  # noqa: D102
        def _answer_raw(self, data: bytes) -> None: ...
        def _take_token(self) -> bool: ...
        def _first_bytes(self, data: bytes) -> bool: ...
        def _read_more(self) -> None: ...

    def _init_framing(self) -> None:
        """Start with nothing read."""
        self._buffer = b""
        self._busyReceiving = False
        self._discarding = False
        # Whether the first bytes are still to come.
        self._first_data = True
        # Telnet state, made when the client first sends 0xFF (see _frame).
        self._telnet: TelnetReader | None = None

    def dataReceived(self, data: bytes) -> None:
        """Frame C{data} into lines.

        This replaces C{LineReceiver.dataReceived}, whose re-splitting of the
        remaining buffer for every line costs time quadratic in the lines per
        read (a cheap flood), and whose C{lineLengthExceeded} hands over the
        rest of the buffer, good lines included.  Pausing (C{self.paused})
        and re-entrancy work as in C{LineReceiver}.
        """
        if self._first_data:
            if data:
                self._first_data = False
                if not self._first_bytes(data):
                    return
        elif data:
            self._read_more()
        self._buffer += data
        if self._busyReceiving:
            return
        self._busyReceiving = True
        try:
            self._frame()
        finally:
            self._busyReceiving = False

    def _frame(self) -> None:
        buffer, self._buffer = self._buffer, b""
        telnet = self._telnet
        if (telnet is not None and telnet.started) or b"\xff" in buffer:
            # Telnet commands (or a stray 0xFF): the slower path.  Lines
            # without 0xFF, almost all, never pay for it.
            self._frame_telnet(buffer)
            return
        limit = self.MAX_LENGTH
        start = 0
        # Whether to go on is asked only when there is a line to act on:
        # the close reason is a property (the session's), and reads end
        # with a whole line, as a rule (two fewer of its calls a read).
        end = buffer.find(b"\n")
        while end >= 0:
            if self.paused or self._close_reason is not None:
                break
            if self._discarding:
                self._discarding = False
            elif not self._take_token():
                break  # this line waits for reading to resume
            else:
                stop = end - 1 if end > start and buffer[end - 1] == 13 else end
                if stop - start > limit:
                    self.lineLengthExceeded(buffer[start:stop])
                else:
                    self.lineReceived(buffer[start:stop])
            start = end + 1
            end = buffer.find(b"\n", start)
        if start == len(buffer):
            return  # all of it acted on: what arrived meanwhile stays as it is
        rest = buffer[start:]
        if self._close_reason is not None or self._discarding:
            rest = b""
        elif not self.paused and len(rest) > limit + 1:  # + 1 for a CR
            self.lineLengthExceeded(rest)
            self._discarding = True
            rest = b""
        # Whatever arrived while a line was being handled comes after.
        self._buffer = rest + self._buffer

    def _frame_telnet(self, buffer: bytes) -> None:
        """Frame C{buffer} as L{_frame} does, reading telnet commands too.

        A line takes its flood token when its first byte is read (not at its
        LF), so that the commands in it are answered only once it may be
        read; see L{chatservice.telnet}.
        """
        telnet = self._telnet
        if telnet is None:
            telnet = self._telnet = TelnetReader()
        limit = self.MAX_LENGTH
        start, size = 0, len(buffer)
        while start < size and not self.paused and self._close_reason is None:
            if self._discarding:
                end = buffer.find(b"\n", start)
                if end < 0:
                    start = size
                    break
                self._discarding = False
                start = end + 1
                continue
            if not telnet.started:
                if not self._take_token():
                    break  # this line waits for reading to resume
                telnet.started = True
            # Answers are the client's own: like a command's, they never
            # count toward --max-sendq, and a client behind in reading is
            # not read further until it catches up (see answer()).
            start, status = telnet.read(buffer, start, limit, self._answer_raw)
            if status is MORE:
                break
            if status is INTERRUPTED:
                telnet.reset()  # Ctrl-C dropped the line; a new one follows
                continue
            if status is COMPLETE:
                start += 1  # the LF
                line = telnet.take_line(limit)
                if line is None:
                    self.lineLengthExceeded(b"")
                else:
                    self.lineReceived(line)
            else:  # too long, or too many commands
                telnet.reset()
                if status is TOO_MANY:
                    self.answer(
                        events.error(
                            f"line refused: more than {MAX_COMMANDS} telnet "
                            "commands in it"
                        )
                    )
                else:
                    self.lineLengthExceeded(b"")
                self._discarding = True
        rest = buffer[start:]
        if self._close_reason is not None:
            rest = b""
        # Whatever arrived while a line was being handled comes after.
        self._buffer = rest + self._buffer

    def _end_of_input(self) -> None:
        """The client finished sending: a last line without LF still counts."""
        telnet = self._telnet
        if (self._buffer or (telnet and telnet.started)) and not self._discarding:
            self.dataReceived(b"\n")
        self._discarding = False
