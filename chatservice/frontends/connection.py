"""What every front end's connection does the same way for its session.

A front end's connection is an L{IConnection}: its session decides, the
connection does it on its own wire.  L{SessionConnection} is the part every
front end shares (the send queue of L{chatservice.output}, the session's
close reason, an overflow handed to the session); L{StreamConnection} adds
what a connection read as a byte stream in order does (the line and frame
front ends): stopping and resuming reading for the session's reasons, the
half-close, the close and the abort.  A front end says how to act on input
it has already read (L{StreamConnection._read_buffered}).
"""

import socket
import sys
from socket import IPPROTO_TCP
from typing import TYPE_CHECKING

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..logs import gate
from ..output import OutputMixin
from ..reasons import CONNECTION_LOST, CloseReason

if TYPE_CHECKING:
    from ..session import Session

log = Logger(observer=gate)

#: Linux's TCP_INFO (its first byte: the connection's state), and the state
#: once the peer's FIN has been received (TCP_CLOSE_WAIT); elsewhere, no
#: end of input is looked for (see StreamConnection._read_end).
_TCP_INFO = getattr(socket, "TCP_INFO", -1) if sys.platform.startswith("linux") else -1
_CLOSE_WAIT = b"\x08"


class _Ended:
    """What a lost connection keeps of its session: why it ended."""

    __slots__ = ("_close_reason",)

    def __init__(self, reason: CloseReason | None) -> None:
        self._close_reason = reason

    def __repr__(self) -> str:
        return f"<ended: {self._close_reason}>"


class SessionConnection(OutputMixin):
    """The send queue, bound to a session: see the module docstring.

    The inheriting class has a C{session} (a L{Session}).
    """

    __slots__ = ()

    session: "Session"

    @property
    def _close_reason(self) -> CloseReason | None:
        """Why the session is ending (what output.py reads)."""
        return self.session._close_reason

    #: See L{IConnection.take_rescued}: the send queue's own, not a method
    #: calling it (every registered session's end asks).
    take_rescued = OutputMixin._take_rescued

    def _let_go_of_session(self) -> None:
        """The connection is lost and its session told: keep only the reason.

        A session refers to its connection and the connection to its
        session: a reference cycle, which only Python's cyclic garbage
        collector frees, with the transport, the flood bucket and their
        lists (eight objects a connection, all of its garbage collected so
        in C{scripts/churn.py}), collections that cost a churn session
        about 8 us.  Once lost, nothing reaches the connection but late
        output, dropped for the reason the session ended, and what the
        framing reads of that reason; so that is what it keeps, and the
        session and all it holds are freed as soon as the last reference
        to the session goes.
        """
        self.session = _Ended(self.session._close_reason)  # type: ignore[assignment]

    def _overflowed(self) -> None:
        """The send queue overflowed (see L{OutputMixin._overflow})."""
        self.session.overflowed()


class StreamConnection(SessionConnection):
    """A session's connection read as one stream of bytes, in order.

    The inheriting class has C{paused} (true while input waits), C{_pauses}
    (the reasons) and C{_eof} (the client half-closed), and defines
    L{_read_buffered} and C{readConnectionLost} (it is an
    L{IHalfCloseableProtocol}).
    """

    __slots__ = ()

    paused: bool
    _pauses: frozenset[str]
    _eof: bool

    def _read_buffered(self) -> None:
        """Act on the input already read, in order, until paused again."""
        raise NotImplementedError

    def readConnectionLost(self) -> None:
        """See L{IHalfCloseableProtocol}: the client finished sending."""
        raise NotImplementedError

    def _read_waiting(self) -> None:
        """Read what the client sent before its greeting was sent.

        Called by the flusher (L{chatservice.output.Flusher.read_first})
        at the start of the first flush after the connection was accepted,
        before the greeting goes out.  A client that speaks first (a
        program, an IRC client, C{churn}'s) has often sent its first line
        by the time a busy server accepts it; read by the reactor, in the
        iteration after the greeting was sent, that line's answer (the
        welcome) went out in a second C{send} and a second packet, each
        waking the client.  Read here, they go out together, in the same
        order and bytes, and the reactor has one event fewer to report.
        Not in C{connectionMade}: a registration between two accepts made
        every step of the accept loop slower (about 1 us each), which took
        back all it saved.  Measured with C{scripts/churn.py}, the server
        on one core and the client on the other, the change switched on
        and off every other round: 7-11 us less server CPU a session
        (three runs, 7 of 8 to 8 of 10 pairs lower), 14.5 to 12.7 TCP
        segments.  A client that sends nothing first (a person at telnet)
        costs one C{recv} that finds nothing (1.5 us).

        Only on a C{tcp.Server} (as for the direct send): C{doRead} is
        what the reactor calls when the socket is readable.  What it
        returns, the reactor would act on: an end of input is found again
        in the next iteration, as Twisted would find it; an error, which a
        second C{recv} would not report again, loses the connection now, as
        the reactor does (and so does an exception, which it logs).
        """
        if not self._direct or self.session._close_reason is not None:
            return
        why = self._read_now("first input")
        if why is not None and not isinstance(why, ConnectionDone):
            self._lost_reading(why)

    def _read_more(self) -> None:
        """Input was read: look for its end at the flush (L{_read_end})."""
        if self._direct and not self._eof and _TCP_INFO >= 0:
            self._flusher.read_end(self)

    def _read_end(self) -> None:
        """Act on an end of input that came with the input just read.

        Called by the flusher (L{chatservice.output.Flusher.read_end}) at
        the start of the flush after a read (not a connection's first).  A
        client that says its last line and half-closes (a program, the
        C{churn} cell's) sends its end of input with, or just after, that
        line: read by the reactor, in the next iteration, its close (its
        output sent, its departure told) took a reactor event and a second
        send to it and to everyone who heard its line.  Found here, the
        line, the departure and the close go in the same flush, in the
        same order.  One C{getsockopt} (C{TCP_INFO}'s state: the peer's FIN
        has been received) tells, 0.3 us, where a C{recv} finding nothing
        costs 0.75 and an exception.  Only on a C{tcp.Server} (as for the
        direct send) on Linux, and only while reading (not paused): what
        came before the end is read first, then the end, as the reactor
        would read them; anything else is left for the reactor.
        """
        if (
            self.paused
            or self._eof
            or not self._direct
            or self.session._close_reason is not None
            or _TCP_INFO < 0
        ):
            return
        transport = self.transport
        try:
            state = transport.socket.getsockopt(  # type: ignore[attr-defined]
                IPPROTO_TCP, _TCP_INFO, 1
            )
        except (AttributeError, OSError):
            return
        if state != _CLOSE_WAIT:
            return
        why = self._read_now("input")
        if why is None and not self.paused and self.session._close_reason is None:
            why = self._read_now("input")  # input before the end, then the end
        if why is None:
            return
        if isinstance(why, ConnectionDone):
            # What the reactor does at an end of input (_disconnectSelectable,
            # then tcp.Connection.readConnectionLost), but for adapting this
            # connection to IHalfCloseableProtocol, which it provides: 0.5 us.
            transport.stopReading()
            try:
                self.readConnectionLost()
            except Exception:
                failure = Failure()
                log.failure(
                    "connection {connection_id}: its end of input failed",
                    failure,
                    connection_id=self.connection_id,
                )
                transport.connectionLost(failure)  # type: ignore[attr-defined]
        else:
            self._lost_reading(why)

    def _read_now(self, what: str) -> object:
        """Read what is waiting, as the reactor would; what C{doRead} says."""
        try:
            return self.transport.doRead()  # type: ignore[attr-defined]
        except Exception:
            why = Failure()
            log.failure(
                "connection {connection_id}: reading its {what} failed",
                why,
                connection_id=self.connection_id,
                what=what,
            )
            return why

    def _lost_reading(self, why: object) -> None:
        """A read failed: lose the connection, as the reactor would."""
        if not isinstance(why, Failure):
            # The reactor's own: ConnectionLost() says "non-clean fashion."
            why = Failure(ConnectionLost() if isinstance(why, ConnectionLost) else why)
        self.transport.connectionLost(why)  # type: ignore[attr-defined]

    def pause_input(self, why: str) -> None:
        """See L{IConnection.pause_input}."""
        if not self._pauses:
            self.paused = True
            if not self._eof:  # else the transport has stopped reading
                self.transport.pauseProducing()
        self._pauses |= {why}

    def resume_input(self, why: str) -> None:
        """See L{IConnection.resume_input}."""
        self._pauses -= {why}
        if self._pauses or not self.paused:
            return
        self.paused = False
        if self.session._close_reason is None:
            if not self._eof:  # else the transport has stopped reading
                self.transport.resumeProducing()
            self._read_buffered()
            self._close_after_eof()

    # What output.py calls its pauses.
    def _pause(self, why: str) -> None:
        self.pause_input(why)

    def _resume(self, why: str) -> None:
        self.resume_input(why)

    def close(self, flush: bool) -> None:
        """See L{IConnection.close}.

        A client that has finished sending, and has been sent everything,
        is closed at once (see L{OutputMixin._close_at_once}): the session
        hears of it (C{connection_lost}) before this returns.
        """
        if flush:
            self._send_rest()  # from now on deliver() drops everything
            if self._eof and self._close_at_once():
                return
        self.transport.loseConnection()

    def abort(self) -> None:
        """See L{IConnection.abort}."""
        self.transport.abortConnection()

    def writeConnectionLost(self) -> None:
        """Not used: the server never half-closes."""

    def _close_after_eof(self) -> None:
        """The client has half-closed and all it sent was acted on: close."""
        if self._eof and not self.paused:
            self.session.close(CONNECTION_LOST)
