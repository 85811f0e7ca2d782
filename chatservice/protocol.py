"""One client's connection: framing, its state, its timers, its output.

L{ChatProtocol} turns bytes into clean lines and hands each to
L{chatservice.commands.dispatch}; it never looks at other connections (the
registry does the fan-out).  What it owns:

  - Framing, inherited from L{chatservice.framing.LineFraming}: lines end
    in LF, with or without CR before it, in any chunking; telnet commands
    are answered.  A line longer than C{max_line} gets an error, and so
    does one longer than that once decoded.
  - Phase.  Unregistered until the registry accepts a nickname, then
    registered; closing once it has decided to go.  It leaves the registry
    exactly once, with the first reason that applied.
  - Timers.  One C{TimeoutMixin} timer on the factory's clock: the
    registration timeout (from the connection, whatever is sent), then the
    idle timeout (restarted by every line; none with C{idle_timeout} 0, the
    default: TCP keepalive finds dead peers instead),
    then (while closing) the deadline after which a client that does not
    read is aborted.
  - Output, through the send queue it inherits from
    L{chatservice.output.OutputMixin}: C{deliver} and C{answer}, bounded by
    C{max_sendq}, sent once per reactor iteration (see there).
  - Flood control.  Each line takes a token from a bucket refilled at
    C{flood_rate} per second, holding at most C{flood_burst}.  With none
    left, the connection stops being read until one returns: the lines
    already read wait here, in order, and TCP slows the sender down.
    Operators are exempt.
  - Wrong protocols.  A TLS handshake on this plain port is closed at once;
    an HTTP request line as the first line gets one C{!!! } line and is
    closed.
"""

import re
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    ISSLTransport,
)
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from . import commands, wire
from .errors import ChatError
from .framing import FRAMING_SLOTS, LineFraming
from .interfaces import IChatSession
from .logs import describe_close, format_peer, gate, shown
from .output import OUTPUT_SLOTS, OutputMixin
from .reasons import (
    CONNECTION_LOST,
    HTTP,
    IDLE_TIMEOUT,
    REGISTRATION_TIMEOUT,
    RESUMED_ELSEWHERE,
    SEND_QUEUE,
    SHUTDOWN,
    TLS_ON_PLAIN,
    CloseReason,
)
from .system import set_socket_options
from .text import clean_line
from .throttle import TokenBucket

if TYPE_CHECKING:
    # The server as a connection sees it: an interface, not the factory
    # (which imports this module).
    from .interfaces import IChatServer

log = Logger(observer=gate)

#: A first line that is an HTTP request: "GET / HTTP/1.1", "PRI * HTTP/2.0".
_HTTP_REQUEST = re.compile(rb"[A-Z]{3,10} \S+ HTTP/\d(\.\d)?\r?")

#: Why a connection is not being read: no reason, as almost always.  (One
#: shared object: an empty frozenset made per connection costs 216 bytes.)
_NO_PAUSES: frozenset[str] = frozenset()

#: How often a throttled user is reminded why their lines are slow.
_FLOOD_NOTICE_INTERVAL = 60.0

GREETING = wire.notice("Welcome to chatservice.") + wire.notice(
    "Choose a nickname: type it and press Enter (or use /nick NAME)."
)


@implementer(IChatSession, IHalfCloseableProtocol)
class ChatProtocol(OutputMixin, LineFraming, LineReceiver, TimeoutMixin):
    """The line protocol of one chat connection; see the module docstring."""

    delimiter = b"\n"

    # Slots keep a connection small (idle connections are most of a big
    # server): without them its attributes, more than CPython shares between
    # instances' dicts, take a private dict of about 1.6 KB.  The base
    # classes' attributes are here too, so the instance dict stays empty;
    # subclasses (and monkeypatching tests) may still add attributes.
    __slots__ = (
        *OUTPUT_SLOTS,
        *FRAMING_SLOTS,
        # Protocol, LineReceiver and TimeoutMixin
        "transport",
        "connected",
        "paused",
        "MAX_LENGTH",
        "timeOut",
        "_TimeoutMixin__timeoutCall",
        # ChatProtocol
        "factory",
        "server",
        "connection_id",
        "host",
        "peer",
        "registry",
        "room",
        "nickname",
        "operator",
        "_close_reason",
        "_left",
        "_pauses",
        "_flood_rate",
        "_bucket",
        "_flood_timer",
        "_flood_noticed",
        "_first_line",
        "_eof",
    )

    def __init__(
        self, factory: "IChatServer", connection_id: int, address: IAddress
    ) -> None:
        self.transport = None
        self.connected = 0
        self.paused = False
        self._init_framing()
        self.timeOut = None
        self._TimeoutMixin__timeoutCall = None
        self.factory = factory
        #: The server, as commands and plugins see it (IChatServer).
        self.server = factory
        self.connection_id = connection_id
        #: The peer's IP address, or None for a transport without one (UNIX).
        self.host: str | None = getattr(address, "host", None)
        #: The peer, for logs: an address is not an identity.
        self.peer = format_peer(self.host, address)
        self.registry = factory.registry
        self.room = factory.registry.lobby
        self.nickname: str | None = None
        settings = factory.settings
        self.MAX_LENGTH = settings.max_line
        self._init_output(factory.flusher, settings.max_sendq)
        # Why this connection is ending, once something has decided it is.
        self._close_reason: CloseReason | None = None
        self._left = False
        #: The operator name this session logged in as with /oper, if any.
        self.operator: str | None = None
        # Why input is not being read now ("command", "flood"); reading
        # resumes when none is left.
        self._pauses = _NO_PAUSES
        self._flood_rate = settings.flood_rate
        self._bucket = TokenBucket(
            settings.flood_rate, settings.flood_burst, factory.clock.seconds()
        )
        self._flood_timer: IDelayedCall | None = None
        self._flood_noticed = -_FLOOD_NOTICE_INTERVAL
        # Whether the first line is still to come.
        self._first_line = True
        # Whether the client has finished sending (a half-close).
        self._eof = False

    def __repr__(self) -> str:
        return (
            f"<ChatProtocol #{self.connection_id} {self.nickname or '-'} {self.peer}>"
        )

    def callLater(self, period: float, func: object) -> IDelayedCall:
        """Run C{TimeoutMixin}'s timer on the factory's (injectable) clock."""
        return self.factory.clock.callLater(period, func)

    def resetTimeout(self) -> None:
        """Restart the idle timer on a line; the registration deadline stays.

        Before a nickname is chosen the timer is the registration timeout,
        counted from the connection: lines (a C{/ping} every few seconds)
        must not keep a connection without a nickname open for ever.
        """
        if self.nickname is not None:
            TimeoutMixin.resetTimeout(self)

    # Connection life -----------------------------------------------------

    def connectionMade(self) -> None:
        """Greet the client and start the registration timer.

        Not logged: the registration and the close are, each with the peer.
        One event fewer per connection is a sixth of the cost of a short
        session.
        """
        # Notice peers that vanished without a FIN, within --keepalive's
        # bound, quiet people staying; telnet's urgent data in line (see
        # chatservice.system).
        set_socket_options(self.transport, self.factory.settings.keepalive)
        self._start_output()
        self.setTimeout(self.factory.settings.register_timeout)
        self.deliver(GREETING)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Leave the registry, if that has not happened yet, and clean up."""
        self.setTimeout(None)
        if self._flood_timer is not None:
            self._flood_timer.cancel()
            self._flood_timer = None
        if self._close_reason is None:
            self._close_reason = CONNECTION_LOST
        # Nothing more can be sent: what comes late (a command's answer) is
        # dropped, not queued or counted as sent.
        self._drop_output()
        self._leave(self._close_reason)
        # A quit message or a kick reason is someone's text: the log and the
        # counts get only its kind ("quit", "kicked"), from a closed set.
        kind = self._close_reason.kind.value
        log.info(
            "connection {connection_id} from {peer} closed ({reason}; {detail})",
            connection_id=self.connection_id,
            peer=self.peer,
            nickname=shown(self.nickname),
            reason=shown(kind),
            detail=describe_close(reason),
        )
        self.factory.connection_closed(self, self._close_reason)

    def readConnectionLost(self) -> None:
        """The client finished sending: act on what it sent, then close.

        A last line without a newline still counts.  The client may still
        be reading, so what it is sent is flushed before the close.
        """
        self._eof = True
        self._end_of_input()
        self._close_after_eof()

    def writeConnectionLost(self) -> None:
        """Not used: the server never half-closes."""

    def _close_after_eof(self) -> None:
        if self._eof and not self.paused:
            self._close(CONNECTION_LOST)

    def timeoutConnection(self) -> None:
        """The client was silent too long, or is too slow to let us close."""
        if self._close_reason is not None:
            self.transport.abortConnection()
            return
        settings = self.factory.settings
        if self.nickname is None:
            why = f"no nickname chosen within {settings.register_timeout:g} seconds"
            reason = REGISTRATION_TIMEOUT
        else:
            why = f"no input for {settings.idle_timeout:g} seconds"
            reason = IDLE_TIMEOUT
        self.deliver(wire.notice(f"{reason}: {why}; disconnecting"))
        self._close(reason)

    def server_stopping(self) -> None:
        """Tell the user the server is going away, and close."""
        self.deliver(wire.notice("server shutting down"))
        self._close(SHUTDOWN)

    # Input -----------------------------------------------------------------

    def _first_bytes(self, data: bytes) -> bool:
        """Whether a connection whose first bytes are C{data} may go on."""
        if data[0] == 0x16 and not ISSLTransport.providedBy(self.transport):
            # A TLS handshake record on a plain port: a TLS client.
            self._close(TLS_ON_PLAIN)
            return False
        return True

    def _take_token(self) -> bool:
        """Let one more line through, or throttle: see the module docstring."""
        if self.operator is not None:
            return True
        now = self.factory.clock.seconds()
        wait = self._bucket.take(now)
        if not wait:
            return True
        self._throttle(wait, now)
        return False

    def _throttle(self, delay: float, now: float) -> None:
        """Stop reading for C{delay} seconds: the client sends too fast."""
        self._pause("flood")
        self._flood_timer = self.factory.clock.callLater(delay, self._unthrottle)
        if now - self._flood_noticed >= _FLOOD_NOTICE_INTERVAL:
            self._flood_noticed = now
            log.info(
                "connection {connection_id} throttled: more than {rate:g} "
                "lines per second",
                connection_id=self.connection_id,
                rate=self._flood_rate,
            )
            self.deliver(
                wire.notice(
                    f"flood control: you are sending more than "
                    f"{self._flood_rate:g} lines per second; your lines are "
                    f"slowed down, none is lost"
                )
            )

    def _unthrottle(self) -> None:
        self._flood_timer = None
        self._resume("flood")

    def _pause(self, why: str) -> None:
        """Stop reading input for reason C{why}, until L{_resume}."""
        if not self._pauses:
            self.paused = True
            self.transport.pauseProducing()
        self._pauses |= {why}

    def _resume(self, why: str) -> None:
        """Reason C{why} to stop reading is gone; go on if it was the last."""
        self._pauses -= {why}
        if self._pauses or not self.paused:
            return
        self.paused = False
        if self._close_reason is None:
            if not self._eof:  # else the transport has stopped reading
                self.transport.resumeProducing()
            self.dataReceived(b"")
            self._close_after_eof()

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse a line longer than C{max_line}; the rest of it is dropped."""
        self.resetTimeout()
        # The answer to the client's own line: never counted toward
        # --max-sendq (see answer()), however many long lines it sends.
        self.answer(wire.error(f"line too long (max {self.MAX_LENGTH} bytes)"))

    def lineReceived(self, line: bytes) -> None:
        """Act on one line: the only way input reaches the chat."""
        self.resetTimeout()
        self.factory.stats.lines_in += 1
        if self._first_line:
            self._first_line = False
            if _HTTP_REQUEST.fullmatch(line):
                self.deliver(wire.error("this is a chat server, not an HTTP server"))
                self._close(HTTP)
                return
        text = clean_line(line)
        if (
            len(line) * 3 > self.MAX_LENGTH  # U+FFFD: 3 bytes for 1 at most
            and not text.isascii()
            and len(text.encode("utf-8")) > self.MAX_LENGTH
        ):
            self.answer(
                wire.error(
                    f"line too long (max {self.MAX_LENGTH} bytes once decoded: "
                    "each invalid byte becomes U+FFFD, 3 bytes)"
                )
            )
            return
        try:
            result = commands.dispatch(self, text)
        except Exception:
            self._command_failed(Failure())
            return
        if result is not None:
            self._wait_for(result)

    def _wait_for(self, result: Deferred[object]) -> None:
        """Handle a command's Deferred; read no further lines until it fires.

        Lines are acted on in the order they were sent, so a line after
        C{/nick NAME} must wait for the registry's answer.
        """
        result.addErrback(self._command_failed)
        fired: list[object] = []
        result.addBoth(fired.append)
        if not fired:
            self._pause("command")
            result.addBoth(lambda _: self._resume("command"))

    def _command_failed(self, failure: Failure) -> None:
        if failure.check(ChatError):
            self.answer(wire.error(failure.getErrorMessage()))
            return
        log.failure(
            "connection {connection_id}: a command failed",
            failure,
            connection_id=self.connection_id,
        )
        self.answer(wire.error("that failed because of a server error; it was logged"))

    # IChatSession ------------------------------------------------------------

    def registered(self, nickname: str) -> str:
        """See L{IChatSession.registered}."""
        if self._close_reason is not None:
            # The connection ended while the registry was deciding.
            self.registry.unregister(self, self._close_reason)
            return nickname
        self.nickname = nickname
        self.setTimeout(self.factory.settings.idle_timeout or None)
        log.info(
            "connection {connection_id} from {peer} registered as {nickname}",
            connection_id=self.connection_id,
            peer=self.peer,
            nickname=shown(nickname),
        )
        return nickname

    def renamed(self, nickname: str) -> str:
        """See L{IChatSession.renamed}."""
        log.info(
            "connection {connection_id} renamed from {old} to {nickname}",
            connection_id=self.connection_id,
            old=shown(self.nickname),
            nickname=shown(nickname),
        )
        self.factory.sessions.renamed(self, self.nickname, nickname)
        self.nickname = nickname
        return nickname

    @property
    def closing(self) -> bool:
        """Whether this connection has started to close."""
        return self._close_reason is not None

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
        self.setTimeout(self.factory.settings.idle_timeout or None)

    def hand_over(self) -> None:
        """See L{IChatSession.hand_over}."""
        self._left = True  # the session lives on in the other connection
        self.deliver(
            wire.notice(
                "disconnected: your session was resumed from another connection"
            )
        )
        self._close(RESUMED_ELSEWHERE)

    def quit(self, reason: CloseReason) -> None:
        """See L{IChatSession.quit}."""
        self.deliver(wire.notice("Goodbye."))
        self._close(reason)

    def disconnect(self, reason: CloseReason) -> None:
        """See L{IChatClient.disconnect}."""
        self.deliver(wire.notice(f"disconnected: {reason}"))
        self._close(reason)

    # Leaving ---------------------------------------------------------------

    def _close(self, reason: CloseReason) -> None:
        """Leave now with C{reason}, flush, close; abort if that takes long."""
        if self._close_reason is not None:
            # Already closing; but if the registry was not left yet (an
            # overflow leaves it only when the connection is gone), a kick
            # or a shutdown now says why.
            self._leave(reason)
            return
        self._close_reason = reason
        self._leave(reason)
        self._send_rest()  # from now on deliver() drops everything
        self.transport.loseConnection()
        self.setTimeout(self.factory.settings.shutdown_timeout)

    def _overflowed(self) -> None:
        """Close after an overflow (see L{OutputMixin._overflow}).

        What the transport and the kernel already have is still sent; a
        client that reads none of it within C{shutdown_timeout} is aborted.
        The registry is left in the next reactor iteration (the overflow
        happened inside a fan-out loop), or in C{connectionLost} if that
        comes first.
        """
        reason = self._close_reason = SEND_QUEUE
        self.transport.loseConnection()
        self.setTimeout(self.factory.settings.shutdown_timeout)
        self.factory.clock.callLater(0, self._leave, reason)

    def _leave(self, reason: CloseReason) -> None:
        rescued = self._take_rescued()
        if self._left or self.nickname is None:
            return
        self._left = True
        sessions = self.factory.sessions
        if not sessions.hold(self, reason, rescued or ()):
            sessions.forget(self)
            self.registry.unregister(self, reason)
