"""The line front end: telnet and netcat users, one line of text at a time.

L{LineProtocol} turns bytes into clean lines and hands each to its
L{chatservice.session.Session}; it turns the events the session is
delivered into the line format of L{chatservice.wire} (an event's C{line},
made once for every recipient).  What it owns:

  - Framing, inherited from L{chatservice.framing.LineFraming}: lines end
    in LF, with or without CR before it, in any chunking; telnet commands
    are answered.  A line longer than C{max_line} gets an error, and so
    does one longer than that once decoded.
  - Output, through the send queue it inherits from
    L{chatservice.output.OutputMixin}: C{deliver} and C{answer}, bounded by
    C{max_sendq}, sent once per reactor iteration (see there).
  - Reading, paused while the session asks (flood control, a command
    under way) or the client is behind in reading answers; lines already
    read wait, in order.
  - Wrong protocols.  A TLS handshake on this plain port is closed at once;
    an HTTP request line as the first line gets one C{!!! } line and is
    closed.
"""

import re
from typing import TYPE_CHECKING

from twisted.internet.interfaces import (
    IAddress,
    IHalfCloseableProtocol,
    ISSLTransport,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.plugin import IPlugin
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import events
from ..config import DEFAULT_PORT
from ..framing import FRAMING_SLOTS, LineFraming
from ..interfaces import IConnection, IFrontEnd
from ..logs import format_peer
from ..output import OUTPUT_SLOTS
from ..reasons import HTTP, TLS_ON_PLAIN
from ..session import Session
from ..system import set_socket_options
from ..text import clean_line
from .connection import StreamConnection

if TYPE_CHECKING:
    from ..interfaces import IChatServer

#: A first line that is an HTTP request: "GET / HTTP/1.1", "PRI * HTTP/2.0".
_HTTP_REQUEST = re.compile(rb"[A-Z]{3,10} \S+ HTTP/\d(\.\d)?\r?")

#: Why a connection is not being read: no reason, as almost always.  (One
#: shared object: an empty frozenset made per connection costs 216 bytes.)
_NO_PAUSES: frozenset[str] = frozenset()


@implementer(IConnection, IHalfCloseableProtocol)
class LineProtocol(StreamConnection, LineFraming, LineReceiver):
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
        # Protocol and LineReceiver
        "transport",
        "connected",
        "paused",
        "MAX_LENGTH",
        # LineProtocol
        "factory",
        "connection_id",
        "session",
        "_pauses",
        "_first_line",
        "_eof",
    )

    def __init__(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> None:
        self.transport = None
        self.connected = 0
        self.paused = False
        self._init_framing()
        #: The chat core (what output.py reads as C{factory}: its stats).
        self.factory = server
        self.connection_id = connection_id
        settings = server.settings
        self.MAX_LENGTH = settings.max_line
        self._init_output(server.flusher, settings.max_sendq)
        # Why input is not being read now ("command", "flood", "output");
        # reading resumes when none is left.
        self._pauses = _NO_PAUSES
        # Whether the first line is still to come.
        self._first_line = True
        # Whether the client has finished sending (a half-close).
        self._eof = False
        host: str | None = getattr(address, "host", None)
        #: The user's session: all that is not bytes.
        self.session = Session(
            server, self, connection_id, host, format_peer(host, address)
        )

    def __repr__(self) -> str:
        return f"<LineProtocol {self.session!r}>"

    # Connection life -----------------------------------------------------

    def connectionMade(self) -> None:
        """Set the socket up, start the output, let the session greet, read.

        What the client sent before it was accepted is read before the
        greeting is sent (see L{StreamConnection._read_waiting}).
        """
        # Notice peers that vanished without a FIN, within --keepalive's
        # bound, quiet people staying; telnet's urgent data in line (see
        # chatservice.system).
        set_socket_options(self.transport, self.factory.settings.keepalive)
        self._start_output()
        self.session.connected()
        if self._direct:
            self._flusher.read_first(self)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Drop what is unsent, and let the session leave."""
        # Nothing more can be sent: what comes late (a command's answer) is
        # dropped, not queued or counted as sent.
        self._drop_output()
        self.session.connection_lost(reason)
        self._let_go_of_session()

    def readConnectionLost(self) -> None:
        """The client finished sending: act on what it sent, then close.

        A last line without a newline still counts.  The client may still
        be reading, so what it is sent is flushed before the close.
        """
        self._eof = True
        self._end_of_input()
        self._close_after_eof()

    def _read_buffered(self) -> None:
        """Act on the lines already read (see L{StreamConnection})."""
        self.dataReceived(b"")

    # Input -----------------------------------------------------------------

    def _first_bytes(self, data: bytes) -> bool:
        """Whether a connection whose first bytes are C{data} may go on."""
        if data[0] == 0x16 and not ISSLTransport.providedBy(self.transport):
            # A TLS handshake record on a plain port: a TLS client.
            self.session.close(TLS_ON_PLAIN)
            return False
        return True

    def _take_token(self) -> bool:
        """Let one more line through, or throttle (see the session)."""
        return self.session.take_token()

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse a line longer than C{max_line}; the rest of it is dropped."""
        self.session.resetTimeout()
        # The answer to the client's own line: never counted toward
        # --max-sendq (see answer()), however many long lines it sends.
        self.answer(
            events.error(
                f"line too long (max {self.MAX_LENGTH} bytes)", "line_too_long"
            )
        )

    def lineReceived(self, line: bytes) -> None:
        """Act on one line: the only way input reaches the chat."""
        session = self.session
        session.resetTimeout()
        self.factory.stats.lines_in += 1
        if self._first_line:
            self._first_line = False
            if _HTTP_REQUEST.fullmatch(line):
                self.deliver(
                    events.error("this is a chat server, not an HTTP server", "http")
                )
                session.close(HTTP)
                return
        text = clean_line(line)
        if (
            len(line) * 3 > self.MAX_LENGTH  # U+FFFD: 3 bytes for 1 at most
            and not text.isascii()
            and len(text.encode("utf-8")) > self.MAX_LENGTH
        ):
            self.answer(
                events.error(
                    f"line too long (max {self.MAX_LENGTH} bytes once decoded: "
                    "each invalid byte becomes U+FFFD, 3 bytes)",
                    "line_too_long",
                )
            )
            return
        session.received(text)


class _Refusal(Protocol):
    """Says why a connection is refused, in one C{!!! } line, and closes."""

    def __init__(self, why: str) -> None:
        self.why = why

    def connectionMade(self) -> None:
        self.transport.write(events.error(self.why, "refused").line)
        self.transport.loseConnection()


@implementer(IPlugin, IFrontEnd)
class LineFrontEnd:
    """The line (telnet) front end, on C{--port}: see L{LineProtocol}."""

    name = "lines"
    option = "port"
    help = (
        "where the line (telnet) front end listens: a Twisted endpoint such as "
        "tcp:8000 or ssl:6697:privateKey=key.pem; repeatable"
    )
    default = (DEFAULT_PORT,)

    def build_protocol(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> LineProtocol:
        """See L{IFrontEnd.build_protocol}."""
        return LineProtocol(server, connection_id, address)

    def build_refusal(self, why: str) -> Protocol:
        """See L{IFrontEnd.build_refusal}."""
        return _Refusal(why)


#: The line front end, found as a plugin (see chatservice.plugins.builtin).
lines = LineFrontEnd()
