"""The IRC command table: what every IRC command gets, in one place.

Like the line commands (L{chatservice.commands}), commands are data: each
entry says whether it works before registration and how many parameters
it needs, and those checks (C{451}, C{461}) and the unknown command
(C{421}) happen once, in L{dispatch}.  A handler answers with numerics
(raising L{Numeric} for an error), and acts through the session and the
registry like any line command: the same rooms, nicknames, filters and
limits.  A command the IRC table lacks but a plugin provides (C{ROLL 2d6},
sent by C{/quote roll 2d6}) runs as that plugin's line command; its
answers come as notices.  The commands themselves are in
L{chatservice.frontends.irccommands} and L{chatservice.frontends.ircusers}.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import ISSLTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols import irc

from .. import events
from ..errors import ChatError
from ..logs import gate
from ..text import sanitise

log = Logger(observer=gate)

#: An IRC connection (L{chatservice.frontends.irc.IRCProtocol}); not
#: imported, as that module imports this one.
Connection = Any
Handler = Callable[[Connection, list[str]], "Deferred[object] | None"]

#: The most channels one IRC user may be in at once (ISUPPORT's CHANLIMIT).
CHANNELS_MAX = 50
#: The most targets of one PRIVMSG or NOTICE (ISUPPORT's TARGMAX).
TARGETS_MAX = 4
#: The capabilities offered to CAP LS: C{sasl} only on TLS connections
#: (see L{offered_capabilities}).
CAPABILITIES = ("server-time", "sasl")
#: The formatting codes of IRC clients, removed from what reaches the chat
#: core: bold, italic, underline, strike-through, monospace, reverse,
#: reset, and colours with their numbers (C{^C4,12}, C{^D} and hex RGB).
#: twisted.words' C{stripFormatting} removes the same, but through a
#: state machine in Python: 2.1 ms for a 2 KB line of colour codes, 5.9 ms
#: of bold and colours mixed, which a client may send at the flood rate on
#: each of its connections; this expression takes microseconds.
_FORMATTING = re.compile(
    "\x03(?:[0-9]{1,2}(?:,[0-9]{1,2})?)?"
    "|\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?"
    "|[\x02\x0f\x11\x16\x1d\x1e\x1f]"
)
#: Where a formatting code may start: most lines have none.
_FORMATTING_START = frozenset("\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f")


class Numeric(Exception):
    """An error answered with an IRC numeric: C{code} and its parameters."""

    def __init__(self, code: str, *params: str) -> None:
        super().__init__(code, *params)
        self.code = code
        self.params = params


@dataclass(frozen=True, slots=True)
class Entry:
    """One IRC command: its handler, and the checks every call gets."""

    run: Handler
    min_params: int = 0
    before_registration: bool = False


COMMANDS: dict[str, Entry] = {}


def irc_command(
    name: str, min_params: int = 0, before_registration: bool = False
) -> Callable[[Handler], Handler]:
    """Put the decorated handler in the table as the command C{name}."""

    def add(run: Handler) -> Handler:
        COMMANDS[name] = Entry(run, min_params, before_registration)
        return run

    return add


def dispatch(conn: Connection, command: str, params: list[str]) -> None:
    """Act on one parsed message from C{conn}'s client; see the module."""
    session = conn.session
    # What is echoed in numerics, and every parameter but a message's text
    # (whose CTCP quoting is read first), is clean text from here on.
    command = sanitise(command)
    if not command:
        return
    cut = 1 if command in ("PRIVMSG", "NOTICE") else len(params)
    params[:cut] = [clean(param) for param in params[:cut]]
    entry = COMMANDS.get(command)
    if entry is None:
        _plugin_command(conn, command, params)
        return
    if session.nickname is None and not entry.before_registration:
        conn.numeric(irc.ERR_NOTREGISTERED, "You have not registered")
        return
    if len(params) < entry.min_params:
        conn.numeric(irc.ERR_NEEDMOREPARAMS, command, "Not enough parameters")
        return
    try:
        result = entry.run(conn, params)
    except Exception:
        _failed(Failure(), conn)
        return
    if result is not None:
        _wait(conn, result)


def _plugin_command(conn: Connection, command: str, params: list[str]) -> None:
    """A plugin's (or a line-only) command, run as its line command."""
    session = conn.session
    name = command.lower()
    if name not in session.server.commands or not name.isalnum():
        conn.numeric(irc.ERR_UNKNOWNCOMMAND, command, "Unknown command")
    elif session.nickname is None:
        conn.numeric(irc.ERR_NOTREGISTERED, "You have not registered")
    else:
        session.received(" ".join([f"/{name}", *params]))


def _wait(conn: Connection, d: "Deferred[object]") -> None:
    """Read no further message until C{d} fires: messages keep their order.

    A connection lost meanwhile keeps its session until then (see
    L{IRCProtocol._let_go_of_session}): the command's callbacks read it.
    """
    d.addErrback(_failed, conn)
    fired: list[object] = []
    d.addBoth(fired.append)
    if not fired:
        conn.pause_input("command")
        d.addBoth(lambda _: conn.command_ended())


def _failed(failure: Failure, conn: Connection) -> None:
    if failure.check(Numeric):
        conn.numeric(failure.value.code, *failure.value.params)
    elif failure.check(ChatError):
        conn.session.answer(events.error(failure.getErrorMessage(), "error"))
    else:
        log.failure(
            "connection {connection_id}: an IRC command failed",
            failure,
            connection_id=conn.connection_id,
        )
        conn.session.answer(
            events.error("that failed because of a server error; it was logged")
        )


def offered_capabilities(conn: Connection) -> tuple[str, ...]:
    """The capabilities offered to C{conn}: SASL PLAIN only over TLS.

    PLAIN sends the password as it is: over a plain connection anyone on
    the path would read it.
    """
    if ISSLTransport.providedBy(conn.transport):
        return CAPABILITIES
    return tuple(cap for cap in CAPABILITIES if cap != "sasl")


def extra_cost(command: str, params: list[str]) -> int:
    """Flood tokens a message costs beyond its line's: one a further channel.

    C{JOIN #a,#b,#c} joins three channels (and answers three NAMES and
    scrollbacks): two more than one line's worth.  Likewise for PART, and
    for the targets of PRIVMSG and NOTICE.
    """
    if params and command in _PER_TARGET:
        return params[0].count(",")
    return 0


_PER_TARGET = frozenset({"JOIN", "PART", "PRIVMSG", "NOTICE"})


def clean(text: str) -> str:
    """Text from an IRC client as the chat core takes it: no formatting."""
    if not _FORMATTING_START.isdisjoint(text):
        text = _FORMATTING.sub("", text)
    return sanitise(text)
