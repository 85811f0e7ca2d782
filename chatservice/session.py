"""One user's session: their state and behaviour, apart from any wire.

A L{Session} knows nothing of bytes.  Its front end (a line connection, a
frame connection, ...: an L{IConnection}) turns what the client sends into
the session's inputs (L{Session.received}, one line of text or one frame's
text at a time) and the events the session is delivered into its own bytes.
What the session owns:

  - Phase.  Unregistered until the registry accepts a nickname, then
    registered; closing once it has decided to go.  It leaves the registry
    exactly once, with the first reason that applied.
  - Timers.  One deadline at a time, one of the server's
    (L{chatservice.deadlines}, one timer of its clock for all): the
    registration timeout (from the connection, whatever is sent), then the
    idle timeout (restarted by every input; none with C{idle_timeout} 0,
    the default: TCP keepalive finds dead peers instead), then (while
    closing) the deadline after which a client that does not read is
    aborted.
  - Flood control.  Each input takes tokens from a bucket refilled at
    C{flood_rate} per second, holding at most C{flood_burst}.  With none
    left, the connection stops being read until one returns: what was read
    already waits in the front end, in order, and TCP slows the sender
    down.  Operators are exempt.
  - Command dispatch (L{chatservice.commands.dispatch}) and filters, which
    see only L{IChatSession}: the same on every front end.
  - Resume: holding the session when the connection drops, taking over a
    held one.

C{deliver} and C{answer} pass the event on to the front end's send queue
(see L{chatservice.output}).  A room's fan-out, the hot path, calls the
connection's C{deliver} itself: the session's C{receiver} is its
connection (L{IChatClient.receiver}, L{chatservice.rooms.say_in}).
"""

from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.python.failure import Failure
from zope.interface import implementer

from . import commands, events
from .deadlines import Deadline
from .errors import ChatError
from .interfaces import IChatSession, IConnection
from .logs import GatedLogger, shown
from .reasons import (
    CONNECTION_LOST,
    IDLE_TIMEOUT,
    REGISTRATION_TIMEOUT,
    RESUMED_ELSEWHERE,
    SEND_QUEUE,
    SHUTDOWN,
    CloseReason,
)
from .throttle import TokenBucket

if TYPE_CHECKING:
    from collections.abc import Sequence

    from .events import Event
    from .interfaces import IChatServer

log = GatedLogger()

#: How often a throttled user is reminded why their input is slow.
_FLOOD_NOTICE_INTERVAL = 60.0

GREETING = events.notices(
    [
        "Welcome to chatservice.",
        "Choose a nickname: type it and press Enter (or use /nick NAME).",
    ]
)


@implementer(IChatSession)
class Session:
    """One user's chat session over one connection; see the module docstring.

    @param server: the chat core (L{IChatServer}) this session belongs to.
    @param connection: its front end's connection (L{IConnection}).
    @param connection_id: unique to this connection in this process.
    @param host: the peer's IP address, or None (a UNIX socket).
    @param peer: the peer, as logs show it.
    """

    # Slots keep a session small (idle connections are most of a big
    # server).  A dict (empty unless a plugin or a test adds attributes)
    # and weak references, as sessions had with TimeoutMixin as a base.
    __slots__ = (
        "__dict__",
        "__weakref__",
        "_timer",
        "_timeout",
        "server",
        "connection",
        "receiver",
        "connection_id",
        "host",
        "peer",
        "registry",
        "room",
        "nickname",
        "operator",
        "_close_reason",
        "_left",
        "_lost",
        "_bucket",
        "_flood_timer",
        "_flood_noticed",
    )

    def __init__(
        self,
        server: "IChatServer",
        connection: IConnection,
        connection_id: int,
        host: str | None,
        peer: str,
    ) -> None:
        # The one timer (see the module docstring), and its period: what
        # an input restarts it with, once registered.  A deadline of the
        # server's (chatservice.deadlines), not a DelayedCall of its own as
        # twisted.protocols.policies.TimeoutMixin's was.
        self._timer: Deadline | None = None
        self._timeout: float | None = None
        #: The server, as commands and plugins see it (IChatServer).
        self.server = server
        #: The front end's connection this session speaks through.
        self.connection = connection
        #: See L{IChatClient.receiver}: the connection, whose C{deliver} is
        #: ours.  An attribute, not a property: a room's list of receivers
        #: is made anew at each arrival and departure, one read a member.
        self.receiver = connection
        self.connection_id = connection_id
        #: The peer's IP address, or None for a transport without one (UNIX).
        self.host = host
        #: The peer, for logs: an address is not an identity.
        self.peer = peer
        self.registry = server.registry
        self.room = server.registry.lobby
        self.nickname: str | None = None
        #: The operator name this session logged in as with /oper, if any.
        self.operator: str | None = None
        # Why this session is ending, once something has decided it is.
        self._close_reason: CloseReason | None = None
        self._left = False
        # Whether the connection is gone (connection_lost was called).
        self._lost = False
        settings = server.settings
        self._bucket = TokenBucket(
            settings.flood_rate, settings.flood_burst, server.clock.seconds()
        )
        self._flood_timer: IDelayedCall | None = None
        self._flood_noticed = -_FLOOD_NOTICE_INTERVAL

    def __repr__(self) -> str:
        return f"<Session #{self.connection_id} {self.nickname or '-'} {self.peer}>"

    def resetTimeout(self) -> None:
        """Restart the idle timer on an input; the registration deadline stays.

        Before a nickname is chosen the timer is the registration timeout,
        counted from the connection: inputs (a C{/ping} every few seconds)
        must not keep a connection without a nickname open for ever.
        """
        timer = self._timer
        if timer is not None and self.nickname is not None:
            # Its due time (see chatservice.deadlines): later, as the period
            # is the one it was started or last moved later with.
            timer[3] = self.server.clock.seconds() + self._timeout

    def _timed_out(self) -> None:
        self._timer = None
        self.timeoutConnection()

    def _stop_timer(self) -> None:
        timer = self._timer
        if timer is not None:
            self._timer = None
            self.server.deadlines.stop(timer)

    # What the front end tells the session ----------------------------------

    def connected(self, greeting: "Event" = GREETING) -> None:
        """The connection is there: start the registration timer, greet.

        C{greeting} says how to choose a nickname on the front end's wire
        (L{GREETING}: type it and press Enter).

        Not logged: the registration and the close are, each with the peer.
        One event fewer per connection is a sixth of the cost of a short
        session.
        """
        server = self.server
        timeout = self._timeout = server.settings.register_timeout
        self._timer = server.deadlines.start(timeout, self._timed_out)
        self.deliver(greeting)
        server.hooks.connected(self)

    def take_token(self, tokens: int = 1) -> bool:
        """Whether the next input (worth C{tokens}) may be acted on now.

        If not, the connection stops being read (the front end keeps what it
        has, in order) until the bucket has refilled enough: see the module
        docstring.
        """
        if self.operator is not None:
            return True
        clock = self.server.clock
        now = clock.seconds()
        wait = self._bucket.take(now, tokens)
        if not wait:
            return True
        self.connection.pause_input("flood")
        self._flood_timer = clock.callLater(wait, self._unthrottle)
        if now - self._flood_noticed >= _FLOOD_NOTICE_INTERVAL:
            self._flood_noticed = now
            rate = self.server.settings.flood_rate
            log.info(
                "connection {connection_id} throttled: more than {rate:g} "
                "lines per second",
                connection_id=self.connection_id,
                rate=rate,
            )
            self.deliver(
                events.notice(
                    f"flood control: you are sending more than {rate:g} "
                    f"lines per second; your lines are slowed down, none is lost"
                )
            )
        return False

    def _unthrottle(self) -> None:
        self._flood_timer = None
        self.connection.resume_input("flood")

    def received(self, text: str) -> None:
        """Act on one input: a line, or a frame's text; the only way in.

        C{text} is decoded and sanitised already (a front end may let chat
        text hold newlines: each line of it is sanitised).
        """
        try:
            result = commands.dispatch(self, text)
        except Exception:
            self._command_failed(Failure())
            return
        if result is not None:
            self._wait_for(result)

    def deliver(self, event: "Event") -> None:
        """See L{IChatClient.deliver}: queued by the front end."""
        self.connection.deliver(event)

    def answer(self, event: "Event") -> None:
        """See L{IChatSession.answer}: queued by the front end."""
        self.connection.answer(event)

    def answer_all(self, events: "Sequence[Event]") -> None:
        """See L{IChatSession.answer_all}: queued by the front end at once."""
        self.connection.answer_all(events)

    def refuse(self, text: str, code: str) -> None:
        """Answer an input the front end could not take, with an error."""
        self.answer(events.error(text, code))

    def _wait_for(self, result: Deferred[object]) -> None:
        """Handle a command's Deferred; read no further input until it fires.

        Inputs are acted on in the order they were sent, so a line after
        C{/nick NAME} must wait for the registry's answer.
        """
        result.addErrback(self._command_failed)
        fired: list[object] = []
        result.addBoth(fired.append)
        if not fired:
            self.connection.pause_input("command")
            result.addBoth(lambda _: self.connection.resume_input("command"))

    def _command_failed(self, failure: Failure) -> None:
        if failure.check(ChatError):
            self.answer(events.error(failure.getErrorMessage(), failure.value.code))
            return
        log.failure(
            "connection {connection_id}: a command failed",
            failure,
            connection_id=self.connection_id,
        )
        self.answer(
            events.error(
                "that failed because of a server error; it was logged", "server_error"
            )
        )

    def timeoutConnection(self) -> None:
        """The client was silent too long, or is too slow to let us close."""
        if self._close_reason is not None:
            self.connection.abort()
            return
        settings = self.server.settings
        if self.nickname is None:
            why = f"no nickname chosen within {settings.register_timeout:g} seconds"
            reason = REGISTRATION_TIMEOUT
        else:
            why = f"no input for {settings.idle_timeout:g} seconds"
            reason = IDLE_TIMEOUT
        self.deliver(events.notice(f"{reason}: {why}; disconnecting"))
        self.close(reason)

    def server_stopping(self) -> None:
        """Tell the user the server is going away, and close."""
        self.deliver(events.notice("server shutting down"))
        self.close(SHUTDOWN)

    def overflowed(self) -> None:
        """The client fell too far behind (see L{chatservice.output}): close.

        What the transport and the kernel already have is still sent; a
        client that reads none of it within C{shutdown_timeout} is aborted.
        The registry is left in the next reactor iteration (the overflow
        happened inside a fan-out loop), or in L{connection_lost} if that
        comes first.
        """
        reason = self._close_reason = SEND_QUEUE
        self.connection.close(flush=False)
        self._close_deadline()
        self.server.clock.callLater(0, self._leave, reason)

    def connection_lost(self, reason: Failure = connectionDone) -> None:
        """Leave the registry, if that has not happened yet, and clean up."""
        self._lost = True
        self._stop_timer()
        if self._flood_timer is not None:
            self._flood_timer.cancel()
            self._flood_timer = None
        if self._close_reason is None:
            self._close_reason = CONNECTION_LOST
        if not self._left:  # else left already, when the session closed
            self._leave(self._close_reason)
        self.server.hooks.disconnected(self, self._close_reason)
        # A quit message or a kick reason is someone's text: the log and the
        # counts get only its kind ("quit", "kicked"), from a closed set.
        self.server.session_log.closed(
            self.connection_id,
            self.peer,
            self.nickname,
            self._close_reason.kind._value_,  # (not .value: see factory.py)
            reason,
        )
        self.server.connection_closed(self, self._close_reason)

    # IChatSession ------------------------------------------------------------

    def registered(self, nickname: str) -> str:
        """See L{IChatSession.registered}."""
        if self._close_reason is not None:
            # The connection ended while the registry was deciding.
            self.registry.unregister(self, self._close_reason)
            return nickname
        self.nickname = nickname
        self._new_timer(self.server.settings.idle_timeout or None)
        self.server.session_log.registered(self.connection_id, self.peer, nickname)
        return nickname

    def renamed(self, nickname: str) -> str:
        """See L{IChatSession.renamed}."""
        log.info(
            "connection {connection_id} renamed from {old} to {nickname}",
            connection_id=self.connection_id,
            old=shown(self.nickname),
            nickname=shown(nickname),
        )
        old = self.nickname
        self.server.sessions.renamed(self, old, nickname)
        self.nickname = nickname
        self.server.hooks.nick_changed(self, old, nickname)
        return nickname

    @property
    def closing(self) -> bool:
        """Whether this session has started to close."""
        return self._close_reason is not None

    @property
    def close_reason(self) -> CloseReason | None:
        """Why this session is ending, once something has decided it is."""
        return self._close_reason

    def resumed(self, nickname: str, room: str) -> None:
        """See L{IChatSession.resumed}."""
        self.nickname = nickname
        self.room = room
        log.info(
            "connection {connection_id} resumed the session of {nickname}",
            connection_id=self.connection_id,
            nickname=shown(nickname),
        )
        if self._close_reason is not None:
            # This connection ended while the resume was under way.
            self._leave(self._close_reason)
            return
        self._new_timer(self.server.settings.idle_timeout or None)
        self.server.hooks.registered(self)

    def hand_over(self) -> None:
        """See L{IChatSession.hand_over}."""
        self._left = True  # the session lives on in the other connection
        self.deliver(
            events.notice(
                "disconnected: your session was resumed from another connection"
            )
        )
        self.close(RESUMED_ELSEWHERE)

    def quit(self, reason: CloseReason) -> None:
        """See L{IChatSession.quit}."""
        self.deliver(events.notice("Goodbye."))
        self.close(reason)

    def disconnect(self, reason: CloseReason) -> None:
        """See L{IChatClient.disconnect}."""
        self.deliver(events.disconnected(reason))
        self.close(reason)

    # Leaving ---------------------------------------------------------------

    def close(self, reason: CloseReason) -> None:
        """Leave now with C{reason}, flush, close; abort if that takes long."""
        if self._close_reason is not None:
            # Already closing; but if the registry was not left yet (an
            # overflow leaves it only when the connection is gone), a kick
            # or a shutdown now says why.
            self._leave(reason)
            return
        self._close_reason = reason
        self._leave(reason)
        self.connection.close(flush=True)  # from now on deliver() drops all
        if not self._lost:  # (_close_deadline, inline: every session's end)
            self._new_timer(self.server.settings.shutdown_timeout)

    def _close_deadline(self) -> None:
        """Abort the connection if it is not closed in C{shutdown_timeout}.

        None if it is closed already: a client that had finished sending
        and was sent everything is closed at once (L{IConnection.close}).
        """
        if not self._lost:
            self._new_timer(self.server.settings.shutdown_timeout)

    def _new_timer(self, seconds: float | None) -> None:
        """Replace the timer with one firing in C{seconds} (None: no timer).

        A new deadline, never the running one moved sooner (see
        L{chatservice.deadlines}).  Moved later (the registration deadline
        becoming the idle timeout), the running one is moved, which costs
        nothing.
        """
        timer = self._timer  # running if there (None once passed or stopped)
        self._timeout = seconds
        if seconds is not None and timer is not None:
            due = self.server.clock.seconds() + seconds
            if timer[3] <= due:
                timer[3] = due  # later: moved
                return
        self._stop_timer()
        if seconds is not None:
            self._timer = self.server.deadlines.start(seconds, self._timed_out)

    def _leave(self, reason: CloseReason) -> None:
        rescued: list[Event] | None = self.connection.take_rescued()
        if self._left or self.nickname is None:
            return
        self._left = True
        sessions = self.server.sessions
        if not sessions.hold(self, reason, rescued or ()):  # else forgotten
            self.registry.unregister(self, reason)
