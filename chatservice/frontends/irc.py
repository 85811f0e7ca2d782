"""The IRC front end: irssi, WeeChat, HexChat and IRC bots, in the same rooms.

L{IRCProtocol} speaks the client side of RFC 1459/2812 as modern clients
expect it, over the same chat core as every other front end: a channel is
a room (C{#lobby} is the room C{#lobby}), and nicknames are one namespace.
It is a L{chatservice.frontends.lines.LineProtocol} whose lines are IRC
messages: the connection's life, its send queue, flood control and
pausing are the line front end's; only what a line means and how an event
is shown differ.  The commands are a table, like the line commands'
(L{chatservice.frontends.irctable}); the encoding of events is in
L{chatservice.frontends.ircformat}.

Parsing is twisted.words' (C{irc.parsemsg}, its numerics, C{ctcpExtract};
formatting codes are removed by one regular expression, see
L{chatservice.frontends.irctable}); its C{IRC.dataReceived} is not used.
It decodes each read as strict UTF-8 (invalid bytes, or a character split between two
reads, raise and drop the connection), joins and re-splits the whole buffer
at every read (quadratic in a long line's reads), drops the connection
for a line over C{MAX_LENGTH}, and lets C{parsemsg}'s errors on malformed
lines (C{:prefix} alone) escape.  Here the line front end's framing
(L{chatservice.framing}: linear, bounded, in any chunking) cuts the lines;
each is decoded with U+FFFD for invalid bytes, and a line that does not
parse is ignored, as RFC 2812 asks.
"""

from typing import TYPE_CHECKING

from twisted.internet.interfaces import IAddress, IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.words.protocols import irc
from zope.interface import implementer

from .. import events
from ..events import not_an_event
from ..interfaces import IFrontEnd
from ..output import COUNTED, Raw, deliver_all_shared
from ..reasons import CloseKind, CloseReason
from ..session import GREETING
from ..text import decode
from . import (  # noqa: F401 - their commands join the table
    irccommands,
    ircformat,
    ircsasl,
    ircusers,
)
from .ircformat import SERVER, is_shared, message, own
from .irctable import dispatch, extra_cost
from .lines import LineProtocol

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..interfaces import IChatServer


#: By server, how many of its IRC users asked for server-time tags, while
#: any do (see L{IRCProtocol.deliver_all}).
_TIMED: "dict[IChatServer, int]" = {}

#: L{IRCProtocol.deliver_all} when no receiver asked for server-time tags.
_deliver_all_plain = deliver_all_shared(ircformat.SHARED, count_lines=True)


class IRCProtocol(LineProtocol):
    """One IRC client's connection; see the module docstring."""

    __slots__ = (
        "nick_wanted",
        "user_given",
        "cap_negotiating",
        "server_time",
        "caps",
        "sasl",
        "channels",
        "_last_input",
        "_ping_sent",
        "_ping_call",
        "_encoder",
        "_waiting",
        "_kept",
    )

    def __init__(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> None:
        super().__init__(server, connection_id, address)
        # IRC's own limit, or the server's longer one (ISUPPORT's LINELEN).
        self.MAX_LENGTH = max(server.settings.max_line, ircformat.LINE_MAX)
        #: The nickname given with NICK before registration, if any.
        self.nick_wanted: str | None = None
        #: Whether USER was given (its contents are not used).
        self.user_given = False
        #: Whether CAP LS started a negotiation that CAP END has not ended.
        self.cap_negotiating = False
        #: Whether the client asked for IRCv3 server-time tags.
        self.server_time = False
        #: The capabilities the client asked for and was granted.
        self.caps: set[str] = set()
        #: A SASL exchange under way (see L{chatservice.frontends.ircsasl}).
        self.sasl: object = None
        #: The channels the user is in, as this connection knows them.
        self.channels: set[str] = set()
        self._last_input = server.clock.seconds()
        self._ping_sent = False
        self._ping_call: IDelayedCall | None = None
        # This user's variant of the shared encoding (server-time tags or
        # not), which remembers the last broadcast it encoded.
        self._encoder = ircformat.SHARED
        # A message whose channels or targets the flood bucket could not
        # pay for yet: acted on first once reading resumes.
        self._waiting: tuple[str, list[str]] | None = None
        # Lost while a command waited: the session is let go of at its end.
        self._kept = False

    def __repr__(self) -> str:
        return f"<IRCProtocol {self.session!r}>"

    # Output ------------------------------------------------------------------

    def _encode(self, data: "events.Event | Raw") -> bytes:  # type: ignore[override]
        """An event (or L{Raw} bytes) in IRC's format, for this user.

        Broadcasts are encoded once for every IRC user (see
        L{chatservice.frontends.ircformat}); what is meant for this user
        alone names them.
        """
        encoding = self._encoder
        if data is encoding.event:
            return encoding.data  # a broadcast's, encoded for another user
        if data.__class__ is Raw:
            return data.line
        if is_shared(data):  # type: ignore[arg-type]
            return encoding(data)  # type: ignore[arg-type]
        if data is GREETING:
            return b""  # its advice is for telnet users
        encoded = own(data, self.session.nickname or "*")  # type: ignore[arg-type]
        if self.server_time and data.kind == "private":  # type: ignore[union-attr]
            return ircformat.tagged(data.time, encoded)  # type: ignore[union-attr]
        return encoded

    def deliver(self, event: "events.Event") -> None:
        """See L{IChatClient.deliver}: L{OutputMixin.deliver}, for IRC.

        A broadcast's recipients after the first find its bytes in this
        user's shared encoding (L{ircformat.SHARED}), which remembers the
        last broadcast, without a call to L{_encode} (a Python-level call
        per recipient is a third of a line's fan-out to 1,000 IRC users).
        """
        if event.__class__ is not events.Event:
            raise not_an_event(event)
        if self._held is None:
            encoding = self._encoder
            data = encoding.data if event is encoding.event else self._encode(event)
            out = self._out
            if not out:
                self._flusher.add(self)
            out.append(data)
            # The lines beyond one (see OutputMixin._counts_events): counted
            # once for a broadcast told to each member.
            counted = COUNTED
            if data is not counted.data:
                counted.data = data
                counted.extra = data.count(b"\n") - 1
            if counted.extra:
                self._extra += counted.extra
        else:
            self._queue(event)

    @staticmethod
    def deliver_all(
        receivers: "Sequence[IRCProtocol]", event: "events.Event", skip: object
    ) -> None:
        """See L{OutputMixin.deliver_all}: L{deliver} to each, in one loop.

        A broadcast (L{is_shared}) is encoded once per variant of the shared
        encoding (server-time tags or not); anything else, by each
        recipient's own L{deliver}.  While no IRC user of the receivers'
        server (a room's members are one server's) asked for server-time
        tags, as most do not, every one of them is sent the same bytes, in
        the shared formats' loop: no recipient's variant is read (a line to
        1,000 IRC users, C{scripts/fanout.py --irc --batch 60}: 82 to 73 us).
        """
        if not is_shared(event):
            for receiver in receivers:
                if receiver is not skip:
                    receiver.deliver(event)
            return
        if not _TIMED or (receivers and receivers[0].factory not in _TIMED):
            _deliver_all_plain(receivers, event, skip)
            return
        last = None
        data = b""
        extra = 0
        for receiver in receivers:
            if receiver is skip:
                continue
            if receiver._held is None:
                encoding = receiver._encoder
                if encoding is not last:
                    data = encoding(event)
                    # Its lines beyond one, counted once a variant.
                    extra = data.count(b"\n") - 1
                    last = encoding
                out = receiver._out
                if not out:
                    receiver._flusher.add(receiver)
                out.append(data)
                if extra:
                    receiver._extra += extra
            else:
                receiver._queue(event)

    def use_server_time(self) -> None:
        """From now on, tag this user's lines with their time (IRCv3 server-time)."""
        if self.server_time:
            return
        self.server_time = True
        self._encoder = ircformat.SHARED_TIMED
        _TIMED[self.factory] = _TIMED.get(self.factory, 0) + 1

    def send(self, command: str, *params: str, prefix: str | None = SERVER) -> None:
        """Answer with one IRC message (from the server, by default)."""
        self._answer_raw(message(prefix, command, *params))

    def numeric(self, code: str, *params: str) -> None:
        """Answer with the numeric C{code}, addressed to this user."""
        self._answer_raw(message(SERVER, code, self.session.nickname or "*", *params))

    # Connection life -----------------------------------------------------

    def connectionMade(self) -> None:
        """Start as the line front end does, and the ping timer."""
        super().connectionMade()
        self._schedule_ping(self.factory.settings.irc_ping)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Stop the ping timer, and let the session leave."""
        if self._ping_call is not None and self._ping_call.active():
            self._ping_call.cancel()
        self._ping_call = None
        super().connectionLost(reason)
        if self.server_time:  # no longer one of _TIMED's
            left = _TIMED[self.factory] - 1
            if left:
                _TIMED[self.factory] = left
            else:
                del _TIMED[self.factory]

    def _let_go_of_session(self) -> None:
        """Keep only the close reason, but not while a command waits.

        A command waiting on a Deferred (a WHOIS on the registry, a JOIN on
        the store's older lines) finishes in callbacks that read the
        session (its nickname, its room) and answer on this connection,
        where late output is dropped for the reason the session ended.  So
        the session, and the cycle, are kept until the command has ended
        (L{command_ended}), and are let go of then.
        """
        if "command" in self._pauses:
            self._kept = True
        else:
            super()._let_go_of_session()

    def command_ended(self) -> None:
        """The command that stopped reading has ended: read, or let go."""
        self.resume_input("command")
        if self._kept:
            self._kept = False
            super()._let_go_of_session()

    def _schedule_ping(self, delay: float) -> None:
        if self.factory.settings.irc_ping > 0:
            self._ping_call = self.factory.clock.callLater(delay, self._check_ping)

    def _check_ping(self) -> None:
        """PING a client quiet for C{--irc-ping}; drop it if it stays quiet."""
        self._ping_call = None
        interval = self.factory.settings.irc_ping
        quiet = self.factory.clock.seconds() - self._last_input
        if quiet < interval:
            self._schedule_ping(interval - quiet)
            return
        if self._ping_sent:
            self.session.deliver(
                events.notice(f"no answer to PING for {interval:g} seconds")
            )
            self.session.close(
                CloseReason(CloseKind.IDLE_TIMEOUT, detail="no answer to PING")
            )
            return
        self._ping_sent = True
        self._answer_raw(message(None, "PING", SERVER))
        self._schedule_ping(interval)

    # Input -----------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        """Frame C{data}; a 0xFF is invalid UTF-8 here, never telnet.

        A message waiting for the flood bucket (see L{_act}) comes first.
        """
        waiting = self._waiting
        if (
            waiting is not None
            and not self.paused
            and not self._busyReceiving
            and self.session.close_reason is None
        ):
            self._act(*waiting)
        if b"\xff" in data:
            data = data.replace(b"\xff", "\ufffd".encode())
        super().dataReceived(data)

    def lineLengthExceeded(self, line: bytes) -> None:
        """Refuse a line longer than the limit (417); the rest is dropped."""
        self._heard()
        self.numeric("417", f"Input line was too long (max {self.MAX_LENGTH} bytes)")

    def _heard(self) -> None:
        self.session.resetTimeout()
        self._last_input = self.factory.clock.seconds()
        self._ping_sent = False

    def lineReceived(self, line: bytes) -> None:
        """Act on one IRC message; one that does not parse is ignored."""
        self._heard()
        self.factory.stats.lines_in += 1
        text = decode(line)
        if text[:1] == "@":  # IRCv3 tags: none is read
            text = text.partition(" ")[2]
        try:
            _, command, params = irc.parsemsg(text.strip(" "))
        except (ValueError, IndexError, irc.IRCBadMessage):
            return  # RFC 2812 2.3.1: a server ignores what it cannot parse
        self._act(command.upper(), params)

    def _act(self, command: str, params: list[str]) -> None:
        """Dispatch a message once the flood bucket has paid for all of it.

        Its line took one token; each further channel of a JOIN or PART,
        or target of a PRIVMSG, takes one more, so that one line does not
        buy the work of many.  Without them, reading stops until the bucket
        has refilled, and the message is acted on first then.
        """
        extra = extra_cost(command, params)
        if extra and not self.session.take_token(extra):
            self._waiting = (command, params)
            return
        self._waiting = None
        dispatch(self, command, params)


class _Refusal(Protocol):
    """Says why a connection is refused, as IRC's C{ERROR}, and closes."""

    def __init__(self, why: str) -> None:
        self.why = why

    def connectionMade(self) -> None:
        self.transport.write(message(None, "ERROR", f"Closing link: {self.why}"))
        self.transport.loseConnection()


@implementer(IPlugin, IFrontEnd)
class IRCFrontEnd:
    """The IRC front end, on C{--irc}: see L{IRCProtocol}."""

    name = "irc"
    option = "irc"
    help = (
        "where the IRC front end listens (irssi, WeeChat, HexChat, bots): a "
        "Twisted endpoint such as tcp:6667 or ssl:6697:privateKey=key.pem; "
        "repeatable"
    )
    default = ()

    def build_protocol(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> IRCProtocol:
        """See L{IFrontEnd.build_protocol}."""
        return IRCProtocol(server, connection_id, address)

    def build_refusal(self, why: str) -> Protocol:
        """See L{IFrontEnd.build_refusal}."""
        return _Refusal(why)


#: The IRC front end, found as a plugin (see chatservice.plugins.builtin).
irc_front_end = IRCFrontEnd()
