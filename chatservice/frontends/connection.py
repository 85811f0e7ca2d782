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

from typing import TYPE_CHECKING

from ..output import OutputMixin
from ..reasons import CONNECTION_LOST, CloseReason

if TYPE_CHECKING:
    from ..events import Event
    from ..session import Session


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

    def take_rescued(self) -> "list[Event] | None":
        """See L{IConnection.take_rescued}."""
        return self._take_rescued()

    def _overflowed(self) -> None:
        """The send queue overflowed (see L{OutputMixin._overflow})."""
        self.session.overflowed()


class StreamConnection(SessionConnection):
    """A session's connection read as one stream of bytes, in order.

    The inheriting class has C{paused} (true while input waits), C{_pauses}
    (the reasons) and C{_eof} (the client half-closed), and defines
    L{_read_buffered}.
    """

    __slots__ = ()

    paused: bool
    _pauses: frozenset[str]
    _eof: bool

    def _read_buffered(self) -> None:
        """Act on the input already read, in order, until paused again."""
        raise NotImplementedError

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
