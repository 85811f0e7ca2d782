"""C{chatservice-client HOST[:PORT]}: a console client for chatservice.

It reads what the user types from standard input and writes what the server
sends to standard output, with no threads: through Twisted's L{StandardIO}
when either is a pipe or a file, and at a terminal through a prompt kept
below the incoming lines, with line editing and history (L{console}, on
Twisted's asyncio reactor).  On top of what C{nc} does it:

  - connects over TLS with C{--tls}, checking the certificate and the host
    name (L{optionsForClientTLS}, that is service-identity);
  - says in one line why the first connection failed, and exits with 1;
  - sends C{/ping hb-N} when the server has been quiet, or the client has
    sent nothing, for C{--ping-interval} seconds, and treats a missing
    C{*** PONG hb-N} after C{--ping-timeout} seconds as a dead link;
  - on a dead or lost link, reconnects with exponential backoff and full
    jitter, and resumes the session with the server's resume token
    (C{/resume NICK TOKEN}), so that the user sees the lines said meanwhile
    and keeps the nickname; when the resume is refused, registers the
    nickname again and rejoins the room the session was in;
  - when standard output is a terminal, removes control characters and
    colours nicknames (not with C{NO_COLOR}), and otherwise writes the
    server's lines unchanged, for scripts.

The pieces, each testable on its own with L{twisted.internet.task.Clock} and
L{twisted.internet.testing.StringTransport}: L{Backoff} (the reconnection
delays), L{Heartbeat} (the pings), L{ClientProtocol} (framing of the
server's lines), L{Session} (what survives reconnections: nickname, token,
what the user typed while disconnected, how it ends), L{PlainOutput} and
L{TerminalOutput}.  L{main} parses the command line and runs the reactor.
"""

from __future__ import annotations

import argparse
import math
import os
import random as _random
import re
import sys
import zlib
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from OpenSSL import SSL
from service_identity import VerificationError

from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    ReactorNotRunning,
    TimeoutError,
)
from twisted.internet.interfaces import (
    IDelayedCall,
    IHalfCloseableProtocol,
    IOpenSSLClientConnectionCreator,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
    ITransport,
)
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as _Protocol
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ..text import InvalidName, check_nickname
from ..wireparse import (
    Action,
    Chat,
    Error,
    Line,
    Notice,
    NowIn,
    Pong,
    Private,
    PrivateEcho,
    Renamed,
    Resumed,
    ResumeToken,
    Stamped,
    Welcome,
    parse,
)

if TYPE_CHECKING:
    from .console import Console

PROG = "chatservice-client"

#: The server's default plain port, and the usual port for TLS.
DEFAULT_PORT = 8000
DEFAULT_TLS_PORT = 6697

#: The room every user starts in, on registration.
LOBBY = "#lobby"
#: The notice after which the server closes the connection on purpose, and
#: holds no session to resume: a kick, the session taken over by another
#: connection.  Reconnecting after it would be wrong, or futile.
KICKED_OUT = "disconnected: "
#: The same, as an error: a ban.
BANNED = "you are banned"
#: The server's refusals of a C{/resume}: the token is of no more use.
RESUME_REFUSED = re.compile(
    r"resume (?:failed: unknown nickname or wrong token"
    r"|is turned off on this server)"
)
#: The server's answer to a C{/resume} it cannot check now (a cluster's
#: server cut off from the others): the token may still be good, later.
RESUME_LATER = re.compile(r".*; try again in a moment")
#: The server's errors that mean a nickname cannot be had (L{NicknameInUse},
#: and L{check_nickname}'s L{InvalidName} messages).
NICKNAME_REFUSED = re.compile(
    r"the nickname \S+ is taken; choose another one"
    r"|a nickname cannot be empty|a nickname is at most .*|invalid nickname .*"
)
#: A typed line that ends the session.
QUIT = re.compile(rb"^/quit(?:[ \t]|$)", re.IGNORECASE)
#: The prefix of the heartbeat's ping tokens.
HEARTBEAT_PREFIX = "hb-"


class Output(Protocol):
    """Where the server's lines are written (standard output)."""

    def line(self, raw: bytes) -> None:
        """Write one line from the server, C{raw} without its CR LF."""


class Backoff:
    """Delays between reconnection attempts: exponential, with full jitter.

    The I{n}th delay (from 0) is uniformly random between 0 and
    C{min(maximum, initial * factor ** n)}: many clients cut off at once by
    the same fault do not all come back at the same moment.
    """

    def __init__(
        self,
        initial: float = 1.0,
        factor: float = 2.0,
        maximum: float = 60.0,
        random: Callable[[], float] = _random.random,
    ) -> None:
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self._random = random
        self._cap = initial

    def next(self) -> float:
        """The delay before the next attempt, in seconds."""
        delay = self._cap * self._random()
        # Stop growing at the maximum: factor ** n would overflow a float.
        self._cap = min(self.maximum, self._cap * self.factor)
        return delay

    def reset(self) -> None:
        """Start again from C{initial}: the session is back."""
        self._cap = self.initial


class Heartbeat:
    """Pings the server on a quiet link, and calls C{dead} when no answer comes.

    It sends C{/ping hb-N} after C{interval} seconds without a line from the
    server, and also after C{interval} seconds in which the client sent
    nothing: the server's idle timeout counts the client's silence, so a
    user who only reads a busy room would otherwise be cut off.  If no line
    at all arrives within C{timeout} seconds after a ping, the link is dead.
    Any line from the server proves the link alive and starts the quiet
    interval again; any line sent (L{sent}) starts the silent one again.
    Its own C{*** PONG hb-N} answers are recognised (even late ones) so that
    they can be hidden from the user.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        timeout: float,
        send: Callable[[bytes], None],
        dead: Callable[[], None],
    ) -> None:
        self._clock = clock
        self.interval = interval
        self.timeout = timeout
        self._send = send
        self._dead = dead
        self._count = 0
        self._unanswered: set[str] = set()
        self._quiet: IDelayedCall | None = None  # the server's silence
        self._silent: IDelayedCall | None = None  # the client's silence
        self._deadline: IDelayedCall | None = None

    def start(self) -> None:
        """Start watching a new connection."""
        self.stop()
        self._quiet = self._clock.callLater(self.interval, self._ping)
        self._silent = self._clock.callLater(self.interval, self._ping)

    def stop(self) -> None:
        """Stop every timer (the connection is gone, or closing)."""
        for call in (self._quiet, self._silent, self._deadline):
            if call is not None and call.active():
                call.cancel()
        self._quiet = self._silent = self._deadline = None

    def received(self, line: Line) -> bool:
        """Note a line from the server; whether it is our own PONG, to hide."""
        ours = False
        if isinstance(line, Pong) and line.token.startswith(HEARTBEAT_PREFIX):
            ours = line.token in self._unanswered
            self._unanswered.discard(line.token)
        if self._silent is not None:  # watching
            if self._deadline is not None and self._deadline.active():
                self._deadline.cancel()
            self._deadline = None
            self._restart_quiet()
        return ours

    def sent(self) -> None:
        """Note a line sent to the server: the client is not silent."""
        if self._silent is not None:
            if self._silent.active():
                self._silent.cancel()
            self._silent = self._clock.callLater(self.interval, self._ping)

    def _restart_quiet(self) -> None:
        if self._quiet is not None and self._quiet.active():
            self._quiet.cancel()
        self._quiet = self._clock.callLater(self.interval, self._ping)

    def _ping(self) -> None:
        if self._quiet is not None and self._quiet.active():
            self._quiet.cancel()
        self._quiet = None
        if self._deadline is not None:
            # A ping already waits for its answer; one is enough.
            self._silent = self._clock.callLater(self.interval, self._ping)
            return
        self._count += 1
        token = f"{HEARTBEAT_PREFIX}{self._count}"
        self._unanswered.add(token)
        self._deadline = self._clock.callLater(self.timeout, self._expired)
        if self._silent is not None and self._silent.active():
            self._silent.cancel()
        self._silent = self._clock.callLater(self.interval, self._ping)
        self._send(b"/ping " + token.encode("ascii"))

    def _expired(self) -> None:
        self._deadline = None
        self.stop()  # no more pings on a dead link
        self._dead()


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
        stamp = len("[HH:MM] ")
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


class ClientProtocol(LineReceiver):
    """One connection to the server: frames its lines for the L{Session}."""

    delimiter = b"\n"
    #: Far above anything the server sends (its lines are a few kB at most).
    MAX_LENGTH = 1 << 20

    def __init__(self, session: Session) -> None:
        self.session = session

    def connectionMade(self) -> None:
        """Tell the session, which sends the first line (nickname, /resume)."""
        self.session.connection_made(self)

    def lineReceived(self, line: bytes) -> None:
        """Hand the session one line, without its CR."""
        if line.endswith(b"\r"):
            line = line[:-1]
        self.session.line_received(line)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Tell the session, which decides whether to reconnect."""
        self.session.connection_lost(self, reason)

    def send(self, line: bytes) -> None:
        """Send one line to the server."""
        self.sendLine(line)

    def abort(self) -> None:
        """Drop the connection at once: it is dead, or will not close."""
        self.transport.abortConnection()  # type: ignore[attr-defined]


@implementer(IHalfCloseableProtocol)
class InputProtocol(_Protocol):
    """What the user types (standard input), in lines, for the L{Session}.

    The end of the input (Ctrl-D, or the end of a file) ends the session with
    C{/quit}; standard output stays open until then, which is why this is a
    half-closeable protocol.  A last line without LF counts.  Lines longer
    than L{MAX_LENGTH} are dropped, with a status line.
    """

    MAX_LENGTH = 1 << 20

    def __init__(self, session: Session) -> None:
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


#: The states of a L{Session}'s current connection.
DISCONNECTED = "disconnected"  # no connection: connecting, or waiting to retry
GREETING_WAIT = "greeting"  # connected, nothing sent until the server's first line
RESUMING = "resuming"  # sent /resume, waiting for the answer
REGISTERING = "registering"  # sent our nickname again, waiting for the welcome
OPEN = "open"  # typed lines go straight to the server
CLOSING = "closing"  # sent /quit, waiting for the server to close

#: The server's greeting, hidden when it comes again on a reconnection.
GREETING = ("Welcome to ", "Choose a nickname")


class Session:
    """A chat session that outlives its connections.

    It knows the nickname the server registered, the latest resume token,
    and what the user typed while there was no usable connection.  It
    connects with C{connect} (an endpoint's C{connect}).  When a link is lost
    after a nickname was registered, it reconnects after a L{Backoff} delay
    and sends C{/resume NICK TOKEN}; without a token, or when the server
    refuses it, it sends the nickname to register it again.

    L{done} fires with the exit status: 0 after C{/quit} (typed, or at the
    end of the input); 1 when the first connection fails, when the server
    closes it before a nickname is registered, or when the server ends the
    session on purpose (a kick, a ban, the session taken over elsewhere).

    @ivar nickname: The nickname the server last said is ours, or C{None}.
    @ivar token: The latest resume token, or C{None}.
    @ivar room: The room the server last said the session is in, or C{None}.
    @ivar state: One of L{DISCONNECTED}, L{RESUMING}, L{REGISTERING},
        L{OPEN}, L{CLOSING}.
    """

    #: Typed lines kept while there is no usable connection; more are dropped.
    MAX_PENDING = 1000

    def __init__(
        self,
        reactor: IReactorTime,
        connect: Callable[[IProtocolFactory], Deferred[IProtocol]],
        address: str,
        output: Output,
        status: Callable[[str], None],
        *,
        nickname: str | None = None,
        connect_timeout: float = 10.0,
        ping_interval: float = 30.0,
        ping_timeout: float = 15.0,
        quit_timeout: float = 5.0,
        backoff: Backoff | None = None,
    ) -> None:
        self._reactor = reactor
        self._connect = connect
        self.address = address
        self.output = output
        self.status = status
        self._requested = nickname
        self.connect_timeout = connect_timeout
        self.quit_timeout = quit_timeout
        self.backoff = backoff if backoff is not None else Backoff()
        self.heartbeat = Heartbeat(
            reactor, ping_interval, ping_timeout, self._send, self._dead
        )
        self.nickname: str | None = None
        self.token: str | None = None
        self.room: str | None = None
        self.state = DISCONNECTED
        self.done: Deferred[int] = Deferred()
        self._protocol: ClientProtocol | None = None
        self._pending: list[bytes] = []
        self._quitting = False
        self._established = False  # the server sent a line on this connection
        self._refusal: str | None = None  # why this connection is given up, to retry
        self._timed_out = False
        self._dead_link = False
        self._final = False
        self._connecting: Deferred[IProtocol] | None = None
        self._deadline: IDelayedCall | None = None
        self._retry: IDelayedCall | None = None
        self._closing: IDelayedCall | None = None
        self._stopping: IDelayedCall | None = None
        self._finishing = False
        self._rejoin: str | None = None  # the room to go back to once registered

    @property
    def registered(self) -> bool:
        """Whether the server has registered a nickname for this session."""
        return self.nickname is not None

    @property
    def quitting(self) -> bool:
        """Whether the session is ending: typed lines are no longer sent."""
        return self._quitting or self.done.called

    # Connecting.

    def start(self) -> None:
        """Make the first connection."""
        self._attempt()

    def _attempt(self) -> None:
        self._retry = None
        self._timed_out = self._dead_link = self._final = False
        self._established = False
        self._refusal = None
        self._deadline = self._reactor.callLater(
            self.connect_timeout, self._connect_timed_out
        )
        factory = Factory.forProtocol(lambda: ClientProtocol(self))
        self._connecting = self._connect(factory)
        self._connecting.addCallbacks(self._connected, self._not_connected)

    def _connected(self, protocol: IProtocol) -> None:
        self._connecting = None

    def _not_connected(self, reason: Failure) -> None:
        self._connecting = None
        self._cancel(self._deadline)
        self._failed(reason)

    def _connect_timed_out(self) -> None:
        """Nothing from the server within C{connect_timeout}: give up on it."""
        self._deadline = None
        self._timed_out = True
        if self._connecting is not None:
            self._connecting.cancel()
        elif self._protocol is not None:
            self._protocol.abort()

    def connection_made(self, protocol: ClientProtocol) -> None:
        """A connection is up (TLS may still be negotiating): wait for the greeting.

        Nothing is sent before the server's first line: an attempt abandoned
        before then (L{connect_timeout}) must not have carried the token to
        a server that reads it later, resumes on that dead connection and
        gives the session a token this client never sees.
        """
        if self.done.called:
            protocol.abort()
            return
        self._protocol = protocol
        self.state = GREETING_WAIT

    def _greeted(self) -> None:
        """The server greeted this connection: send the first line.

        A new session sends C{--nick}, if given, then whatever was typed; a
        registered one resumes with its token, or registers its nickname
        again when it has none.
        """
        assert self._protocol is not None
        if self.nickname is None:
            if self._requested is not None:
                self._protocol.send(self._requested.encode("ascii"))
            self._open()
        elif self.token is not None:
            self.state = RESUMING
            self._protocol.send(f"/resume {self.nickname} {self.token}".encode("ascii"))
        else:
            self.status(
                "*** the server gave no resume token; lines may have been "
                f"missed; registering as {self.nickname} again"
            )
            self._register_again()

    def _register_again(self) -> None:
        """Send the nickname again; the room is joined again once registered.

        A new registration starts in L{LOBBY}: a session that was in another
        room goes back there (L{_registered}), as a resume would have done.
        """
        assert self._protocol is not None and self.nickname is not None
        if self.room is not None and self.room != LOBBY:
            self._rejoin = self.room
        self.state = REGISTERING
        self._protocol.send(self.nickname.encode("ascii"))

    def _open(self) -> None:
        """Typed lines may go to the server now: first those that waited."""
        assert self._protocol is not None
        self.state = OPEN
        pending, self._pending = self._pending, []
        for line in pending:
            if QUIT.match(line):
                self._send_quit(line)
                break
            self._protocol.send(line)
            self.heartbeat.sent()

    # Lines from the server.

    def line_received(self, raw: bytes) -> None:
        """One line from the server: note what matters, show the rest."""
        line = parse(raw)
        if not self._established:
            self._established = True
            self._cancel(self._deadline)
            if isinstance(line, Error) and self.state == GREETING_WAIT:
                # One "!!! " line instead of the greeting: the server refused
                # the connection (full, too many from this address, shutting
                # down, banned) and closes it.
                if self.registered and not _final(line):
                    # Transient: keep the token and the nickname, and retry.
                    self._refusal = f"cannot connect to {self.address}: {line.text}"
                    assert self._protocol is not None
                    self._protocol.abort()
                    return
            elif self.state == GREETING_WAIT:
                self._greeted()
            if self.registered and self.state != CLOSING:
                self.heartbeat.start()
        if self.heartbeat.received(line):
            return
        if isinstance(line, ResumeToken):
            # A secret for this client, not news for the user.
            self.token = line.token
            return
        if (
            self.state in (RESUMING, REGISTERING)
            and isinstance(line, Notice)
            and line.text.startswith(GREETING)
        ):
            return  # the user saw it on the first connection
        self._final = _final(line)
        # Shown first: a status line about it (a refused resume, a room
        # rejoined) comes after it on a terminal.
        self.output.line(raw)
        self._note(line)

    def _note(self, line: Line) -> None:
        """Follow the nickname and the state of a resume or re-registration."""
        error = line.text if isinstance(line, Error) else None
        if isinstance(line, Welcome):
            self.room = LOBBY
            self._registered(line.nick, REGISTERING)
        elif isinstance(line, Resumed):
            self.room = line.room
            self._registered(line.nick, RESUMING)
        elif isinstance(line, NowIn):
            self.room = line.room
        elif isinstance(line, Renamed):
            if self.nickname is not None and line.old.lower() == self.nickname.lower():
                self.nickname = line.new
        elif error is None:
            pass
        elif self.state == RESUMING and RESUME_REFUSED.fullmatch(error):
            # The grace period is over, or the server does not resume.
            self.token = None
            self.status(
                "*** the session could not be resumed; lines may have been "
                f"missed; registering as {self.nickname} again"
            )
            self._register_again()
        elif self.state == RESUMING and RESUME_LATER.fullmatch(error):
            # Keep the token: a new connection tries again after the backoff
            # (this one would only wait for the registration timeout).
            assert self._protocol is not None
            self._refusal = f"cannot resume yet: {error}"
            self._protocol.abort()
        elif self.state == REGISTERING and NICKNAME_REFUSED.fullmatch(error):
            # Someone else has the nickname now: the user chooses another,
            # and what was typed meanwhile must not be taken for a nickname.
            kept = [line for line in self._pending if QUIT.match(line)]
            dropped = len(self._pending) - len(kept)
            self._pending = kept
            self.status(
                f"*** could not register as {self.nickname} again; choose "
                "another nickname"
                + (f" ({dropped} typed line(s) were not sent)" if dropped else "")
            )
            self.nickname = None
            self.heartbeat.stop()
            self._open()

    def _registered(self, nickname: str, waiting: str) -> None:
        """The server registered (or gave back) C{nickname}."""
        self.nickname = nickname
        self.backoff.reset()
        rejoin, self._rejoin = self._rejoin, None
        if rejoin is not None and self.state in (REGISTERING, OPEN):
            # Before the lines typed meanwhile: they were meant for that room.
            assert self._protocol is not None
            self.status(f"*** registered as {nickname} again; rejoining {rejoin}")
            self._protocol.send(f"/join {rejoin}".encode("ascii"))
        if self.state == waiting:
            self._open()
        if self.state != CLOSING:
            self.heartbeat.start()

    # Lines from the user.

    def user_line(self, line: bytes) -> None:
        """One typed line: send it, or keep it until the session is back."""
        if self._quitting:
            return  # the server would ignore it too
        if QUIT.match(line):
            self._quit(line)
        elif self.state == OPEN and self._protocol is not None:
            self._protocol.send(line)
            self.heartbeat.sent()
        elif len(self._pending) < self.MAX_PENDING:
            self._pending.append(line)
            if len(self._pending) == self.MAX_PENDING:
                self.status(
                    f"*** not connected, and {self.MAX_PENDING} typed lines "
                    "wait; more are dropped"
                )

    def user_eof(self) -> None:
        """The input ended (Ctrl-D): quit."""
        self._quit(b"/quit")

    def _quit(self, line: bytes) -> None:
        """End the session with C{line} (a C{/quit}); exit with 0.

        Connected, or while the first connection is being made, C{/quit} is
        sent after whatever was typed before it, and the server closes the
        connection (or it is dropped after L{quit_timeout} seconds).  Waiting
        to reconnect, the session just ends.
        """
        if self._quitting or self.done.called:
            return
        self._quitting = True
        if self.state == OPEN and self._protocol is not None:
            self._send_quit(line)
        elif self._protocol is not None or not self.registered:
            self._pending.append(line)  # sent once the session is usable
        else:
            if self._pending:
                self.status(f"*** {len(self._pending)} typed line(s) were not sent")
            self._finish(0)

    def _send_quit(self, line: bytes) -> None:
        assert self._protocol is not None
        self.state = CLOSING
        self.heartbeat.stop()
        self._protocol.send(line)
        self._closing = self._reactor.callLater(self.quit_timeout, self._protocol.abort)

    def _send(self, line: bytes) -> None:
        if self._protocol is not None:
            self._protocol.send(line)

    def _dead(self) -> None:
        """The heartbeat got no answer: drop the link, as if it were lost."""
        self._dead_link = True
        if self._protocol is not None:
            self._protocol.abort()

    # The end of a connection.

    def connection_lost(self, protocol: ClientProtocol, reason: Failure) -> None:
        """The connection is gone: end the session, or reconnect."""
        if protocol is not self._protocol:
            return
        self._protocol = None
        self.state = DISCONNECTED
        self.heartbeat.stop()
        self._cancel(self._deadline)
        self._cancel(self._closing)
        if self.done.called:
            return
        if self._final:
            self._finish(1, f"{PROG}: disconnected by the server")
        elif not self._established:
            # TLS failures end here too: the TCP connection had been made.
            self._failed(reason)
        elif self._quitting:
            self._finish(0)
        elif self._refusal is not None:
            self._retry_later(self._refusal)
        elif self._dead_link:
            self._lost(f"no answer from the server in {self.heartbeat.timeout:g} s")
        else:
            self._lost(f"connection lost ({describe(reason)})")

    def _failed(self, reason: Failure) -> None:
        """A connection attempt failed before the server said anything."""
        if self._timed_out or reason.check(TimeoutError):
            why = f"timed out after {self.connect_timeout:g} s"
        else:
            why = describe(reason)
        if not self.registered:
            self._finish(1, f"{PROG}: cannot connect to {self.address}: {why}")
        elif self._quitting:
            self._finish(0)
        else:
            self._retry_later(f"cannot connect to {self.address}: {why}")

    def _lost(self, what: str) -> None:
        """A link that worked is gone."""
        if self.registered:
            self._retry_later(what)
        else:
            self._finish(1, f"{PROG}: {what}")

    def _retry_later(self, what: str) -> None:
        delay = self.backoff.next()
        self.status(f"*** {what}")
        self.status(f"*** reconnecting in {delay:.1f} s...")
        self._retry = self._reactor.callLater(delay, self._attempt)

    def _finish(self, code: int, message: str | None = None) -> None:
        if self._finishing:
            return  # cancelling the connection attempt below calls back here
        self._finishing = True
        if message is not None:
            self.status(message)
        self.heartbeat.stop()
        for call in (self._deadline, self._retry, self._closing, self._stopping):
            self._cancel(call)
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.abort()
        self.done.callback(code)

    def shutdown(self) -> Deferred[int]:
        """The process is told to stop (Ctrl-C): quit within L{quit_timeout}."""
        if not self.done.called:
            self._quit(b"/quit")
        if not self.done.called and self._stopping is None:
            # Lines waiting for a connection have no other bound.
            self._stopping = self._reactor.callLater(self.quit_timeout, self._finish, 0)
        return self.done

    @staticmethod
    def _cancel(call: IDelayedCall | None) -> None:
        if call is not None and call.active():
            call.cancel()


def _final(line: Line) -> bool:
    """Whether the server ends the session on purpose after C{line}."""
    if isinstance(line, Notice):
        return line.text.startswith(KICKED_OUT)
    return isinstance(line, Error) and line.text.startswith(BANNED)


def describe(reason: Failure) -> str:
    """Why a connection failed or ended, in a few words for the user."""
    if reason.check(ConnectionRefusedError):
        return "connection refused"
    if reason.check(DNSLookupError):
        return "name not resolved"
    if reason.check(TimeoutError):
        return "timed out"
    if reason.check(VerificationError):
        return "hostname mismatch (the server's certificate is for another name)"
    if reason.check(SSL.Error):
        reasons = _ssl_reasons(reason.value)
        if "certificate verify failed" in reasons:
            return "certificate not trusted (certificate verify failed)"
        return f"TLS failed ({'; '.join(reasons) or reason.value})"
    if reason.check(ConnectionDone):
        return "closed by the server"
    if reason.check(ConnectionAborted):
        return "aborted"
    if reason.check(ConnectionLost):
        return "connection reset"
    return str(reason.value) or reason.type.__name__  # type: ignore[union-attr]


def _ssl_reasons(error: BaseException) -> list[str]:
    """The reasons in an OpenSSL error: the last of each C{(lib, func, reason)}."""
    try:
        return [str(entry[-1]) for entry in error.args[0]]
    except (IndexError, TypeError):
        return []


# The command line.


@dataclass(frozen=True)
class Options:
    """The command line, checked."""

    host: str
    port: int
    nick: str | None = None
    tls: bool = False
    cafile: str | None = None
    insecure: bool = False
    connect_timeout: float = 10.0
    ping_interval: float = 30.0
    ping_timeout: float = 15.0

    @property
    def address(self) -> str:
        """C{HOST:PORT} for messages, with brackets around an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def split_address(text: str, default_port: int) -> tuple[str, int]:
    """C{HOST}, C{HOST:PORT}, C{[IPV6]:PORT} or C{IPV6} to a host and a port.

    @raise ValueError: With the reason, when C{text} is none of those.
    """
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("use [IPV6]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, or an IPv6 address without a port
    if not host:
        raise ValueError("no host given")
    if port_text is None:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"the port must be a number, not {port_text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port must be 1 to 65535, not {port}")
    return host, port


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, finite and above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text!r}")
    return value


def _nickname(text: str) -> str:
    """An argparse type: a valid nickname."""
    try:
        return check_nickname(text)
    except InvalidName as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> Options:
    """The checked command line; exits with status 2 and a usage line if wrong."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Connect to a chatservice server: what you type goes to the "
            "server, what it sends is printed. Reconnects and resumes the "
            "session when the link drops. /quit or Ctrl-D ends."
        ),
    )
    parser.add_argument(
        "address",
        metavar="HOST[:PORT]",
        help=f"the server; PORT is {DEFAULT_PORT} by default, "
        f"{DEFAULT_TLS_PORT} with --tls",
    )
    parser.add_argument("--nick", metavar="NAME", type=_nickname, help="the nickname")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="use TLS, checking the certificate and the host name",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust the CA certificates in FILE (PEM) instead of the system's",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="with --tls, do not check the certificate (unsafe)",
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="S",
        type=_seconds,
        default=10.0,
        help="give up a connection attempt after S seconds (default: 10)",
    )
    parser.add_argument(
        "--ping-interval",
        metavar="S",
        type=_seconds,
        default=30.0,
        help="ping the server after S seconds without a line from it, or "
        "without one sent to it (default: 30)",
    )
    parser.add_argument(
        "--ping-timeout",
        metavar="S",
        type=_seconds,
        default=15.0,
        help="reconnect when a ping gets no answer in S seconds (default: 15)",
    )
    args = parser.parse_args(argv)
    if args.cafile is not None and not args.tls:
        parser.error("--cafile needs --tls")
    if args.insecure and not args.tls:
        parser.error("--insecure needs --tls")
    if args.insecure and args.cafile is not None:
        parser.error("--insecure and --cafile contradict each other")
    try:
        host, port = split_address(
            args.address, DEFAULT_TLS_PORT if args.tls else DEFAULT_PORT
        )
    except ValueError as e:
        parser.error(f"invalid HOST[:PORT] {args.address!r}: {e}")
    return Options(
        host=host,
        port=port,
        nick=args.nick,
        tls=args.tls,
        cafile=args.cafile,
        insecure=args.insecure,
        connect_timeout=args.connect_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
    )


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def load_trust_root(path: str) -> Any:
    """The CA certificates in the PEM file C{path}, as a trust root.

    @raise ValueError: With a message for the user, when the file cannot be
        read or holds no certificate.
    """
    from OpenSSL.crypto import Error as CryptoError

    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read --cafile {path}: {e.strerror}") from None
    try:
        certificates = [
            Certificate.loadPEM(m[0]) for m in _PEM_CERTIFICATE.finditer(data)
        ]
    except CryptoError:
        raise ValueError(f"--cafile {path} holds a damaged certificate") from None
    if not certificates:
        raise ValueError(f"--cafile {path} holds no PEM certificate")
    return trustRootFromCertificates(certificates)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS without any check of the server's certificate (C{--insecure})."""

    def __init__(self, hostname: str) -> None:
        from twisted.internet.abstract import isIPAddress, isIPv6Address
        from twisted.internet.ssl import CertificateOptions

        self._options = CertificateOptions()
        ip = isIPAddress(hostname) or isIPv6Address(hostname)
        # Server Name Indication for names only, as RFC 6066 says.
        self._sni = None if ip else hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: object) -> Any:
        """A client TLS connection that checks nothing, with SNI."""
        from OpenSSL import SSL

        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


def endpoint_for(reactor: Any, options: Options, trust_root: Any = None) -> Any:
    """The client endpoint for C{options}: TCP, or TLS over TCP."""
    endpoint = HostnameEndpoint(
        reactor, options.host, options.port, timeout=options.connect_timeout
    )
    if not options.tls:
        return endpoint
    if options.insecure:
        creator: Any = _Unverified(options.host)
    else:
        from twisted.internet.ssl import optionsForClientTLS

        creator = optionsForClientTLS(options.host, trustRoot=trust_root)
    return wrapClientTLS(creator, endpoint)


def _status(line: str) -> None:
    """Write a status line to standard error."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # nowhere left to say it


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


def _session(
    reactor: Any,
    options: Options,
    trust_root: Any,
    output: Output,
    status: Callable[[str], None],
) -> Session:
    """The session the command line asks for, showing its lines on C{output}."""
    return Session(
        reactor,
        endpoint_for(reactor, options, trust_root).connect,
        options.address,
        output,
        status,
        nickname=options.nick,
        connect_timeout=options.connect_timeout,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
    )


def run(
    reactor: Any,
    options: Options,
    trust_root: Any = None,
    *,
    stdin: int = 0,
    stdout: int = 1,
    status: Callable[[str], None] = _status,
    console: Console | None = None,
) -> tuple[Session, Deferred[int]]:
    """Start a session on standard input and output; the exit status to come.

    The returned Deferred fires once the session has ended and standard
    output has been flushed (or L{Session.quit_timeout} seconds later).
    With a C{console} (at a terminal), the console reads and writes
    instead of L{StandardIO}, and it is stopped first, restoring the
    terminal.
    """
    if console is not None:
        return _run_at_terminal(reactor, options, trust_root, console)
    from twisted.internet.stdio import StandardIO

    stdio: list[ITransport] = []

    def write(data: bytes) -> None:
        stdio[0].write(data)

    output = output_for(write, os.isatty(stdout), os.environ)
    session = _session(reactor, options, trust_root, output, status)
    user = InputProtocol(session)
    stdio.append(StandardIO(user, stdin=stdin, stdout=stdout, reactor=reactor))
    session.start()

    def flushed(code: int) -> int | Deferred[int]:
        if user.output_closed:
            return code
        # Written lines may still wait for standard output to take them.
        stdio[0].loseConnection()
        if not user.closed.called:
            user.closed.addTimeout(session.quit_timeout, reactor)
        return user.closed.addBoth(lambda _: code)

    return session, session.done.addCallback(flushed)


def _run_at_terminal(
    reactor: Any, options: Options, trust_root: Any, console: Console
) -> tuple[Session, Deferred[int]]:
    """L{run} with the prompt of a L{Console}, on Twisted's asyncio reactor."""
    output = output_for(console.write, True, os.environ)
    session = _session(reactor, options, trust_root, output, console.status)
    session.start()
    console.start(session)

    def stopped(code: int) -> Deferred[int]:
        return Deferred.fromFuture(console.stop()).addCallback(lambda _: code)

    return session, session.done.addCallback(stopped)


def _use_asyncio_reactor() -> bool:
    """Install Twisted's asyncio reactor, for the console's prompt; whether done.

    prompt_toolkit runs on asyncio: with this reactor both share one event
    loop in one thread.  Not when a reactor is already installed (the client
    run inside another program): the client then reads lines as in a pipe.
    """
    if "twisted.internet.reactor" in sys.modules:
        return False
    import asyncio

    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    # The prompt's tasks are created before the loop runs: they must find
    # this loop, not make another one.
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the client with C{argv} (default: C{sys.argv[1:]}); the exit status.

    0 after C{/quit} or the end of the input, 1 when the first connection
    fails or the server ends the session, 2 for a mistake on the command
    line, 130 when stopped by a signal (Ctrl-C), after a C{/quit}.
    """
    options = parse_args(argv)
    trust_root = None
    if options.cafile is not None:
        try:
            trust_root = load_trust_root(options.cafile)
        except ValueError as e:
            _status(f"{PROG}: {e}")
            return 2
    if options.insecure:
        _status(
            f"{PROG}: warning: --insecure: the server's certificate is not "
            "checked; anyone between you and the server can read and change "
            "this session"
        )
    # Both a terminal: a prompt (see chatservice.tools.console).  Otherwise lines
    # are read and written as they come, for scripts, with the default reactor.
    at_terminal = os.isatty(0) and os.isatty(1) and _use_asyncio_reactor()
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Errors only (a bug): Twisted's own informational lines are not for
    # the user.
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)],
            )
        ],
        redirectStandardIO=False,
    )
    blocking = _blocking_modes()
    codes: list[int] = []
    interrupted: list[bool] = []

    def interrupt() -> None:
        """Ctrl-C at the prompt: leave as on SIGINT."""
        if not interrupted:
            with suppress(ReactorNotRunning):  # already stopping
                reactor.stop()

    def start() -> None:
        try:
            console = None
            if at_terminal:
                from .console import Console

                console = Console(sys.stdout.buffer, sys.stderr.buffer, interrupt)
            session, done = run(reactor, options, trust_root, console=console)
        except Exception:
            Failure().printTraceback(sys.stderr)
            codes.append(1)
            reactor.stop()
            return
        ended: Deferred[None] = Deferred()

        def stop(code: int | Failure) -> None:
            if isinstance(code, Failure):
                code.printTraceback(sys.stderr)
                code = 1
            codes.append(code)
            ended.callback(None)
            if not interrupted:
                reactor.stop()

        def before_shutdown() -> Deferred[None] | None:
            if ended.called:
                return None
            # Stopped by a signal: leave the chat properly first.
            interrupted.append(True)
            session.shutdown()
            return ended

        done.addBoth(stop)
        reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)

    reactor.callWhenRunning(start)
    try:
        reactor.run()
    finally:
        _restore_blocking_modes(blocking)
    if interrupted or not codes:
        return 130
    return codes[0]


def _blocking_modes() -> dict[int, bool]:
    """Whether standard input, output and error block (StandardIO changes it)."""
    modes = {}
    for fd in (0, 1, 2):
        try:
            modes[fd] = os.get_blocking(fd)
        except OSError:
            pass
    return modes


def _restore_blocking_modes(modes: dict[int, bool]) -> None:
    """Leave the terminal as it was: a non-blocking tty breaks the shell."""
    for fd, mode in modes.items():
        try:
            os.set_blocking(fd, mode)
        except OSError:
            pass


__all__ = [
    "Backoff",
    "ClientProtocol",
    "Heartbeat",
    "InputProtocol",
    "PlainOutput",
    "Session",
    "TerminalOutput",
    "main",
    "output_for",
    "parse_args",
]

if __name__ == "__main__":
    raise SystemExit(main())
