"""Telnet commands in a client's input: read, answered, never passed on.

A telnet client mixes commands into the text it sends (RFC 854): the byte
0xFF (IAC) and a command byte, and for option negotiation (RFC 855) an
option byte too.  chatservice enables no option, so it answers as RFC 1143
says a side that wants none of them does:

  - C{DO x} is refused with C{WONT x}, and C{WILL x} with C{DONT x}, each
    time it is asked: a client that asks again (Linux C{telnet} does at its
    second C{mode character}) waits for an answer, and without one it
    stays in character mode, where Enter sends CR NUL and no line ends.
    C{WONT} and C{DONT} agree with what is already the case and are never
    answered, which is what keeps two sides from looping; a client that
    asks again at every refusal is stopped by L{MAX_COMMANDS}.
  - C{DO TIMING-MARK} (RFC 860) is refused like that too: Linux C{telnet}
    sends it after C{IAC IP} when the user presses Ctrl-C, and shows nothing
    more until it is answered.  The refusal ends the client's wait as
    C{WILL} would; and because commands are read in order with the lines
    around them, it comes after the replies to every line sent before it.
  - C{AYT} (are you there) is answered with one notice, each time.
  - C{IP} (interrupt, Ctrl-C) ends the line under way, dropped, as at a
    shell prompt: what follows is a new line, with a flood-control token
    and a count of commands of its own, so that Ctrl-C pressed again and
    again never reaches L{MAX_COMMANDS} (past which timing marks would go
    unanswered, and C{telnet} would show nothing more).
  - Every other command (C{AO}, C{BRK}, C{NOP}, C{GA}, C{DM}, ...,
    and RFC 1184's C{EOF}, C{SUSP} and C{ABORT}, which C{telnet} sends with
    C{send eof} at its prompt) and every subnegotiation (C{SB ... IAC SE})
    is read and dropped.  C{telnet}'s Synch (C{send synch}) sends its C{DM}
    as TCP urgent data, which the socket keeps in line (C{SO_OOBINLINE},
    set by L{chatservice.system.set_socket_options}): otherwise the kernel
    takes that byte out of the stream and the C{IAC} before it would be
    data.  No client sends a subnegotiation for an option that was
    refused, so one that reaches an LF is garbage (a stray 0xFF 0xFA from
    C{nc}): it ends there, with the line, rather than swallowing the lines
    after it.
  - C{IAC IAC} is the data byte 0xFF (invalid UTF-8, so U+FFFD once decoded);
    0xFF before a byte that is no command is that data byte too, as a client
    that is not telnet (C{nc}) sending a stray 0xFF means it.

Commands count towards the length of the line they are in, so a line is at
most C{max_line + 1} bytes before its LF whatever it holds: a stream of
commands or of subnegotiation without a newline is refused as too long like
any other long line, and its bytes are skipped without being looked at
until the next LF.  A line may also hold at most L{MAX_COMMANDS} commands.
So reading costs time linear in the input (a few times a plain line's at
worst), no more memory than one line, and (since each line takes a
flood-control token when it starts) no more than flood control allows.

C{twisted.conch.telnet.Telnet} is not used for the parsing: it walks every
byte in Python once a connection sends any command, raises on 0xFF before a
byte that is no command, closes the connection on a long subnegotiation,
and keeps an object per option.  Its constants are used.
"""

import re
from collections.abc import Callable
from typing import Final

from twisted.conch.telnet import (
    AYT,
    DO,
    DONT,
    GA,
    IAC,
    IP,
    LINEMODE_EOF,
    SB,
    SE,
    WILL,
    WONT,
)

from . import wire

_IAC: Final = IAC[0]
_SB: Final = SB[0]
_SE: Final = SE[0]
_AYT: Final = AYT[0]
_IP: Final = IP[0]
_WILL: Final = WILL[0]
_DO: Final = DO[0]
#: The commands of two bytes (with their IAC): EOF, SUSP and ABORT (RFC
#: 1184), EOR (RFC 885), then RFC 854's SE to GA.
_SHORT: Final = range(LINEMODE_EOF[0], GA[0] + 1)

#: The answer to C{AYT}: one short line.
AYT_ANSWER: Final = wire.notice("Yes, still here.")

#: Telnet commands one line may hold (C{IAC IAC} counts).  A client sends
#: a few (two for Ctrl-C; a dozen options when it starts); each costs a
#: little Python, so a line of nothing else is refused, like a long one.
MAX_COMMANDS = 64

#: The next 0xFF that is a command, C{IAC IAC}, or not known yet (the last
#: byte): any other 0xFF is data, and is skipped here at C speed.
_NEXT = re.compile(rb"\xff(?:[\xec-\xff]|\Z)")

#: What L{TelnetReader.read} found.
COMPLETE: Final = "complete"  # the line's LF: take it with take_line()
MORE: Final = "more"  # the data ended first: call again with more
TOO_LONG: Final = "too long"  # the line cannot fit: skip to its LF
TOO_MANY: Final = "too many"  # more than MAX_COMMANDS: skip to its LF
INTERRUPTED: Final = "interrupted"  # after IAC IP (Ctrl-C): reset(), a new line


class TelnetReader:
    """One connection's input lines, with telnet commands taken out.

    It holds the state that must outlive one read: the line read so far (as
    its data bytes, and its length in input bytes), whether a subnegotiation
    is open, and the commands the line holds.  Made only for a connection
    that sends 0xFF; a line without it never comes here (see
    L{chatservice.framing.LineFraming._frame}).
    """

    __slots__ = ("started", "_pieces", "_raw", "_sb", "_commands")

    def __init__(self) -> None:
        #: Whether a line is under way (and has had its flood token).
        self.started = False
        self._pieces: list[bytes] = []
        # Input bytes of the line so far, commands included, LF excluded.
        self._raw = 0
        self._sb = False
        self._commands = 0

    def read(
        self, data: bytes, pos: int, limit: int, answer: Callable[[bytes], None]
    ) -> tuple[int, str]:
        """Read the current line on from C{data[pos:]}.

        Commands are answered through C{answer} as they are read.  Returns
        where reading stopped and why: at the line's LF (L{COMPLETE}, the LF
        not consumed); at the end of C{data}, or before a command whose end
        has not arrived (L{MORE}); where the line has become longer than
        C{limit + 1} bytes (L{TOO_LONG}); at its command number
        C{MAX_COMMANDS + 1} (L{TOO_MANY}); or just after an C{IAC IP}
        (L{INTERRUPTED}), which ends the line, dropped: call L{reset}.
        """
        n = len(data)
        pieces = self._pieces
        start = pos
        # The line may consume input up to (not including) this index; its LF
        # may be there.  raw + (stop - pos) stays limit + 1 as pos advances.
        stop = pos + limit + 1 - self._raw
        lf = data.find(b"\n", pos, stop + 1)
        status = MORE
        while True:
            if 0 <= lf < pos:
                # A command consumed that LF (an option byte of 10).
                lf = data.find(b"\n", pos, stop + 1)
            end = lf if lf >= 0 else min(n, stop)
            if self._sb:
                # Subnegotiation: skip to its IAC SE, or to an LF, which ends
                # it and the line (no option was agreed, so no client sends
                # one that holds an LF; one that is garbage ends there).
                i = data.find(b"\xff", pos, end)
                if i < 0:
                    pos = end
                    if end == lf:
                        self._sb = False
                        status = COMPLETE
                    elif end < n:
                        status = TOO_LONG
                    break
                pos = i
                if i + 1 >= n:
                    break
                if data[i + 1] == _SE or data[i + 1] == _IAC:
                    if i + 2 > stop:
                        status = TOO_LONG
                        break
                    if self._commands == MAX_COMMANDS:
                        status = TOO_MANY
                        break
                    self._commands += 1
                    pos = i + 2
                    self._sb = data[i + 1] == _IAC
                    continue
                # IAC and a command: the subnegotiation never ended; read the
                # command as one.
                self._sb = False
            else:
                found = _NEXT.search(data, pos, end)
                if found is None:
                    pieces.append(data[pos:end])
                    pos = end
                    if end == lf:
                        status = COMPLETE
                    elif end < n:
                        status = TOO_LONG
                    break
                i = found.start()
                if i > pos:
                    pieces.append(data[pos:i])
                pos = i
            # A command at pos.
            if pos + 1 >= n:
                break  # which one is not known yet
            command = data[pos + 1]
            if command == _IAC:
                size = 2
            elif command >= _WILL:
                size = 3
            elif command == _SB or command in _SHORT:
                size = 2
            else:
                # 0xFF before a byte that is no command: that is data.
                pieces.append(b"\xff")
                pos += 1
                continue
            if pos + size > stop:
                status = TOO_LONG
                break
            if pos + size > n:
                break
            if command == _IP:
                # Ctrl-C: the line under way is dropped, as at a shell
                # prompt, and what follows is a new line, with a flood
                # token and a count of commands of its own.
                return pos + size, INTERRUPTED
            if self._commands == MAX_COMMANDS:
                status = TOO_MANY
                break
            self._commands += 1
            if command == _IAC:
                pieces.append(b"\xff")
            elif command >= _WILL:
                self._negotiate(command, data[pos + 2], answer)
            elif command == _SB:
                self._sb = True
            elif command == _AYT:
                answer(AYT_ANSWER)
            pos += size
        self._raw += pos - start
        return pos, status

    @staticmethod
    def _negotiate(command: int, option: int, answer: Callable[[bytes], None]) -> None:
        """Answer C{IAC command option}: refuse a request (see the module)."""
        if command == _DO:
            answer(IAC + WONT + bytes((option,)))
        elif command == _WILL:
            answer(IAC + DONT + bytes((option,)))
        # WONT and DONT: already so, never answered.

    def take_line(self, limit: int) -> bytes | None:
        """The line whose LF L{read} stopped at, less a CR before the LF.

        C{None} if it is longer than C{limit} bytes, commands included.
        """
        line = b"".join(self._pieces)
        raw = self._raw
        if line.endswith(b"\r"):
            line = line[:-1]
            raw -= 1
        self.reset()
        return None if raw > limit else line

    def reset(self) -> None:
        """Forget the line under way (read, or refused as too long)."""
        self.started = False
        self._pieces = []
        self._raw = 0
        self._sb = False
        self._commands = 0
