"""The client's chat session, which outlives its connections.

It follows what the server says (the nickname, the resume token, the room),
sends what the user types or keeps it while there is no usable connection,
and reconnects and resumes after a lost link.  See L{Session}.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.error import TimeoutError
from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory
from twisted.python.failure import Failure

from ...wireparse import (
    Error,
    Line,
    Notice,
    NowIn,
    Renamed,
    Resumed,
    ResumeToken,
    Welcome,
    parse,
)
from ..connect import describe
from .link import Backoff, ClientProtocol, Heartbeat

if TYPE_CHECKING:
    from .stdio import Output


PROG = "chatservice-client"

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
