"""The client's link to the server: its framing, its pings, its reconnection delays.

L{ClientProtocol} frames the server's lines for the L{Session}; L{Heartbeat}
pings a quiet link and says when it is dead; L{Backoff} spaces the attempts
to reconnect.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable
from typing import Protocol

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from ...wireparse import Line, Pong

#: The prefix of the heartbeat's ping tokens.
HEARTBEAT_PREFIX = "hb-"


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


class Receiver(Protocol):
    """What a L{ClientProtocol} tells: the L{session.Session}."""

    def connection_made(self, protocol: ClientProtocol) -> None:
        """A connection is up."""

    def line_received(self, raw: bytes) -> None:
        """One line from the server, without its CR LF."""

    def connection_lost(self, protocol: ClientProtocol, reason: Failure) -> None:
        """The connection is gone, for C{reason}."""


class ClientProtocol(LineReceiver):
    """One connection to the server: frames its lines for the L{Session}."""

    delimiter = b"\n"
    #: Far above anything the server sends (its lines are a few kB at most).
    MAX_LENGTH = 1 << 20

    def __init__(self, session: Receiver) -> None:
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
