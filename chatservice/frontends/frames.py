"""The frame front end: length-prefixed JSON frames to a session and back.

L{FrameProtocol} reads frames (L{frameformat}: docs/frames.md) and hands
the text of each INPUT to its L{chatservice.session.Session}, as the line
front end hands a line: every command, plugin and filter works the same.
It turns the events the session is delivered into EVENT and ERROR frames,
encoded once per event for every frame user (L{Event.encoded}).  What it
owns:

  - The HELLO, sent first; the frame decoder; the answers to PINGs.
  - Input checks: a bad body gets an ERROR C{bad_frame} and the connection
    goes on; a bad header (wrong magic, another version, a body over
    C{--max-frame}) gets an ERROR and a close, as a length cannot be
    resynchronised; text typed at the port gets one plain line and a close.
  - Flood control, through the session: an INPUT takes one token per line
    of its text (see L{Session.take_token}), a PING or a bad frame one.
  - Each line of an INPUT's text is sanitised and held to C{--max-line}, as
    a line user's line is (L{clean_input}).
  - The heartbeat (L{Heartbeat}): a PING after C{--heartbeat} seconds
    without input, and a close with C{heartbeat timeout} if nothing comes
    within as long again.
  - Output, through the send queue it inherits from
    L{chatservice.output.OutputMixin}, as the line front end's.
"""

import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.interfaces import (
    IAddress,
    IDelayedCall,
    IHalfCloseableProtocol,
    IReactorTime,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from .. import __version__, events
from ..events import SharedEncoding
from ..interfaces import IConnection, IFrontEnd
from ..logs import format_peer, gate
from ..output import OUTPUT_SLOTS
from ..reasons import (
    HEARTBEAT_TIMEOUT,
    NOT_FRAMES,
    CloseKind,
    CloseReason,
)
from ..session import Session
from ..system import set_socket_options
from ..text import sanitise
from .connection import StreamConnection
from .frameformat import (
    TEXT_REFUSAL,
    BadFrame,
    BadMagic,
    Code,
    Frame,
    FrameDecoder,
    FrameError,
    FrameType,
    UnsupportedVersion,
    encode_error,
    encode_event,
    encode_frame,
    encode_hello,
    parse_client_frame,
)

if TYPE_CHECKING:
    from ..interfaces import IChatServer

log = Logger(observer=gate)

#: The greeting of a frame client: how to choose a nickname with frames.
GREETING = events.notices(
    [
        "Welcome to chatservice.",
        'Choose a nickname: send it as the text of an INPUT frame ({"text": '
        '"alice"}), or /nick NAME.',
    ]
)

#: Why a connection is not being read: no reason, as almost always.
_NO_PAUSES: frozenset[str] = frozenset()

#: Lone surrogates: JSON can carry them (C{"\\ud800"}), UTF-8 cannot.
_SURROGATES = re.compile("[\ud800-\udfff]")


class LineTooLong(ValueError):
    """A line of an INPUT's text is longer than the limit."""

    code = Code.LINE_TOO_LONG


def clean_input(text: str, max_line: int) -> tuple[str, int]:
    """C{text} of an INPUT frame, each line sanitised; and how many lines.

    Lines end in LF (a CR before it is dropped by the sanitiser, as every
    control character).  Blank lines at the start and the end are dropped;
    blank lines between others are kept.  The count is of the lines once
    line ends at the start and the end are dropped: a blank line of spaces
    there counts, though it is dropped.  Each line's UTF-8 must fit in
    C{max_line} bytes, as a line user's must, else L{LineTooLong}.  A lone
    surrogate becomes U+FFFD, as an invalid byte in a line does.
    """
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    # Line ends around the text go at C speed; every line left costs a
    # token (blank ones too), as each costs Python-level work here and as a
    # line user's blank line costs a token: a 64 KiB run of "\n \n"...
    # must not cost the server milliseconds for one token.
    lines = text.strip("\r\n").split("\n")
    for line in lines:
        if len(line) * 4 > max_line and len(line.encode("utf-8")) > max_line:
            raise LineTooLong(f"line too long (max {max_line} bytes)")
    cleaned = [sanitise(line) for line in lines]
    start, end = 0, len(cleaned)
    while start < end and not cleaned[start].strip():
        start += 1
    while end > start and not cleaned[end - 1].strip():
        end -= 1
    if start == end:
        return "", len(lines)
    return "\n".join(cleaned[start:end]), len(lines)


class Heartbeat:
    """Pings a quiet peer, and gives up on one that stays quiet.

    When C{interval} seconds go by with no L{heard}, C{ping(token)} is
    called; if nothing is heard in the C{interval} seconds after that,
    C{expired()}, which returns whether it gave the peer up: if not (its
    answer may be unread, input being paused), counting starts again.
    Hearing is one clock read and two stores (it happens for every frame):
    the one timer is not moved, but when it fires it looks at when the
    peer was last heard and waits for the rest.
    """

    __slots__ = (
        "_clock",
        "_interval",
        "_ping",
        "_expired",
        "_call",
        "_last",
        "_pinged",
        "_pings",
    )

    def __init__(
        self,
        clock: IReactorTime,
        interval: float,
        ping: Callable[[str], None],
        expired: Callable[[], bool],
    ) -> None:
        self._clock = clock
        self._interval = interval
        self._ping = ping
        self._expired = expired
        self._call: IDelayedCall | None = None
        self._last = clock.seconds()
        # When the unanswered PING was sent, or None.
        self._pinged: float | None = None
        self._pings = 0

    def start(self) -> None:
        """Start counting from now."""
        self._last = self._clock.seconds()
        self._call = self._clock.callLater(self._interval, self._check)

    def heard(self) -> None:
        """The peer sent something: it is there."""
        self._last = self._clock.seconds()
        self._pinged = None

    def stop(self) -> None:
        """No more pings, no expiry."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None

    def _check(self) -> None:
        now = self._clock.seconds()
        pinged = self._pinged
        if pinged is not None:
            # Nothing heard since the ping (heard() clears it).
            if now - pinged >= self._interval:
                self._call = None
                if self._expired():
                    return
                self._pinged = None
                self._last = now
                self._call = self._clock.callLater(self._interval, self._check)
                return
            self._call = self._clock.callLater(
                pinged + self._interval - now, self._check
            )
            return
        quiet = now - self._last
        if quiet >= self._interval:
            self._pings += 1
            self._pinged = now
            self._call = self._clock.callLater(self._interval, self._check)
            self._ping(str(self._pings))
            return
        self._call = self._clock.callLater(self._interval - quiet, self._check)


@implementer(IConnection, IHalfCloseableProtocol)
class FrameProtocol(StreamConnection, Protocol):
    """The frame protocol of one chat connection; see the module docstring."""

    __slots__ = (
        *OUTPUT_SLOTS,
        # Protocol
        "transport",
        "connected",
        # FrameProtocol
        "factory",
        "connection_id",
        "session",
        "paused",
        "_pauses",
        "_decoder",
        "_waiting",
        "_reading",
        "_heartbeat",
        "_max_line",
        "_burst",
        "_eof",
    )

    #: An event's frame, made once for every frame user (or a L{Raw}'s bytes).
    _encode = SharedEncoding(encode_event)

    _counts_events = True  # one frame per event: see OutputMixin

    def __init__(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> None:
        self.transport = None
        self.connected = 0
        #: The chat core (what output.py reads as C{factory}: its stats).
        self.factory = server
        self.connection_id = connection_id
        settings = server.settings
        self._init_output(server.flusher, settings.max_sendq)
        self.paused = False
        # Why input is not being read now ("command", "flood", "output").
        self._pauses = _NO_PAUSES
        self._decoder = FrameDecoder(settings.max_frame)
        # A frame read and checked, waiting for its flood tokens: how many,
        # and what to do for it.
        self._waiting: tuple[int, Callable[[], None]] | None = None
        # Whether frames are being acted on (a command may resume input).
        self._reading = False
        self._heartbeat: Heartbeat | None = None
        self._max_line = settings.max_line
        self._burst = settings.flood_burst
        # Whether the client has finished sending (a half-close).
        self._eof = False
        host: str | None = getattr(address, "host", None)
        #: The user's session: all that is not bytes.
        self.session = Session(
            server, self, connection_id, host, format_peer(host, address)
        )

    def __repr__(self) -> str:
        return f"<FrameProtocol {self.session!r}>"

    # Connection life -----------------------------------------------------

    def connectionMade(self) -> None:
        """Send the HELLO, start the heartbeat, and let the session greet."""
        settings = self.factory.settings
        set_socket_options(self.transport, settings.keepalive)
        self._start_output()
        self._answer_raw(
            encode_hello(__version__, settings.max_frame, settings.heartbeat)
        )
        if settings.heartbeat:
            self._heartbeat = Heartbeat(
                self.factory.clock, settings.heartbeat, self._ping, self._expired
            )
            self._heartbeat.start()
        self.session.connected(GREETING)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the heartbeat, drop what is unsent, let the session leave."""
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None
        dropped = self._decoder.close()
        if dropped:
            log.info(
                "connection {connection_id}: {dropped} bytes of an unfinished "
                "frame dropped at the close",
                connection_id=self.connection_id,
                dropped=dropped,
            )
        self._drop_output()
        self.session.connection_lost(reason)
        self._let_go_of_session()

    def readConnectionLost(self) -> None:
        """The client finished sending: act on what it sent, then close."""
        self._eof = True
        self._close_after_eof()

    def _read_buffered(self) -> None:
        """Act on the frames already read (see L{StreamConnection})."""
        self._read()

    # Heartbeat ---------------------------------------------------------------

    def _ping(self, token: str) -> None:
        self._answer_raw(encode_frame(FrameType.PING, {"token": token}))

    def _expired(self) -> bool:
        """Nothing came after the PING: close, unless input is paused."""
        if self.paused or self.session._close_reason is not None:
            return False  # its answer may be there, unread
        seconds = self.factory.settings.heartbeat
        self.deliver(
            events.notice(
                f"{HEARTBEAT_TIMEOUT}: no answer to a PING within {seconds:g} "
                "seconds; disconnecting"
            )
        )
        self.session.close(HEARTBEAT_TIMEOUT)
        return True

    # Input -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Keep C{data}, and act on the complete frames, unless paused."""
        self._decoder.feed(data)
        self._read()

    def _read(self) -> None:
        """Act on the frames read, in order, until paused or closing."""
        if self._reading:
            return  # a command resumed input while a frame was acted on
        self._reading = True
        session = self.session
        try:
            while not self.paused and session._close_reason is None:
                waiting = self._waiting
                if waiting is None:
                    try:
                        frame = self._decoder.next_frame()
                    except FrameError as error:
                        self._broken(error)
                        break
                    if frame is None:
                        break
                    # Only whole frames are signs of life: a client stalled
                    # in the middle of one (holding up to --max-frame of
                    # buffer) cannot answer a PING, and is closed.
                    if self._heartbeat is not None:
                        self._heartbeat.heard()
                    waiting = self._checked(frame)
                tokens, act = waiting
                # Paid before it is acted on, in bucketfuls: a frame of
                # more lines than the burst waits as long as the lines
                # typed one by one would.
                while tokens > 0:
                    step = min(tokens, self._burst)
                    if not session.take_token(step):
                        break
                    tokens -= step
                if tokens > 0:
                    self._waiting = (tokens, act)  # until reading resumes
                    break
                self._waiting = None
                act()
        finally:
            self._reading = False

    def _checked(self, frame: Frame) -> tuple[int, Callable[[], None]]:
        """What C{frame} costs in flood tokens, and what to do for it."""
        try:
            parsed = parse_client_frame(frame)
            if parsed.type is FrameType.INPUT:
                text, lines = clean_input(parsed.value, self._max_line)
                return lines, lambda: self._input(text)
        except (BadFrame, LineTooLong) as error:
            text, code = str(error), error.code
            return 1, lambda: self._refuse(text, code)
        if parsed.type is FrameType.PING:
            pong = encode_frame(FrameType.PONG, {"token": parsed.value})
            return 1, lambda: self._answer_raw(pong)
        return 1, _nothing  # a PONG: only a sign of life

    def _refuse(self, text: str, code: str) -> None:
        """Answer a frame that cannot be acted on; the connection goes on."""
        self.session.resetTimeout()
        self.answer(events.error(text, code))

    def _input(self, text: str) -> None:
        """Hand an INPUT's text to the session: what a line user would type."""
        self.session.resetTimeout()
        self.factory.stats.lines_in += 1
        self.session.received(text)

    def _broken(self, error: FrameError) -> None:
        """A header the stream cannot go on from: say so if we can, close."""
        log.info(
            "connection {connection_id}: {code} ({error})",
            connection_id=self.connection_id,
            code=error.code,
            error=str(error),
        )
        if isinstance(error, BadMagic) and error.first:
            # Not a frame client: a frame would be noise to it.
            if error.looks_like_text:
                self._answer_raw(TEXT_REFUSAL)
            self.session.close(NOT_FRAMES)
            return
        fields = {}
        if isinstance(error, UnsupportedVersion):
            fields["versions"] = list(error.versions)
        self._answer_raw(encode_error(error.code, str(error), **fields))
        self.session.close(CloseReason(CloseKind.FRAME_ERROR, detail=error.code))


def _nothing() -> None:
    """What a PONG asks for."""


class _Refusal(Protocol):
    """Says why a connection is refused, in one ERROR frame, and closes."""

    def __init__(self, why: str) -> None:
        self.why = why

    def connectionMade(self) -> None:
        self.transport.write(encode_error("refused", self.why))
        self.transport.loseConnection()


@implementer(IPlugin, IFrontEnd)
class FrameFrontEnd:
    """The frame front end, on C{--frames}: see L{FrameProtocol}."""

    name = "frames"
    option = "frames"
    help = (
        "where the frame front end (length-prefixed JSON, docs/frames.md) "
        "listens: a Twisted endpoint as for --port; repeatable"
    )
    default = ()

    def build_protocol(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> FrameProtocol:
        """See L{IFrontEnd.build_protocol}."""
        return FrameProtocol(server, connection_id, address)

    def build_refusal(self, why: str) -> Protocol:
        """See L{IFrontEnd.build_refusal}."""
        return _Refusal(why)


#: The frame front end, found as a plugin (see chatservice.plugins.builtin).
frames = FrameFrontEnd()
