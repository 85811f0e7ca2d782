"""chatservice's log: the gate its events pass, and how user text is shown.

Every module logs with C{Logger(observer=gate)}.  The gate drops events
below its level (C{--log-level}) before twistd's observer formats them,
which is most of an event's cost: on a server with many short sessions the
per-connection events at C{info} are a visible share of the CPU.  Twisted's
own events do not pass the gate.  The per-connection events use a
L{GatedLogger}, which does not even make an event the gate would drop.

Every field of a log event that someone chose (a nickname, a reason, an
operator's or a room's name, anything typed or read from another node)
passes through L{shown} first, so that no user can write a line into the
log, or make one read as something else.  L{format_peer} and
L{describe_close} write a peer and the end of a connection.

L{SessionLog} logs each session's registration and end: a short session
(one that ends before its registration's line is written, within
L{REGISTRATION_WAIT}) in one line.

How twistd's text log writes the events, faster than Twisted does, is
L{chatservice.textlog}'s; L{text_observer} and L{format_classic} are
importable from here too, by their old names
(C{twistd --logger chatservice.logs.text_observer}).
"""

import sys
from time import time
from typing import overload

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress, IDelayedCall, IReactorTime
from twisted.logger import (
    ILogObserver,
    LogEvent,
    Logger,
    LogLevel,
    globalLogPublisher,
)
from twisted.python.failure import Failure
from zope.interface import implementer

from .errors import InvalidName
from .text import check_nickname
from .textlog import format_classic as format_classic
from .textlog import text_observer as text_observer

#: The names C{--log-level} accepts, lowest first.
LEVELS = tuple(level.name for level in LogLevel.iterconstants())

#: Every log level, for L{GatedLogger}: one set lookup.
_LEVELS = frozenset(LogLevel.iterconstants())

#: The most characters of one value that are shown in the log.
SHOWN_MAX = 100

#: The length of a resume token (C{secrets.token_urlsafe(16)}), whose
#: characters are all allowed in nicknames.
TOKEN_LENGTH = 22


@overload
def shown(value: None) -> None: ...
@overload
def shown(value: object) -> str: ...
def shown(value: object) -> str | None:
    r"""C{value} as it may appear in the log: escaped, and cut if too long.

    Printable ASCII is kept as it is, but for the backslash, which is
    doubled; anything else (controls, line breaks, and every non-ASCII
    character, which could be blank or look like an ASCII one) becomes a
    Python-style escape: C{\n}, C{\x7f}, C{\u2800}.  Past L{SHOWN_MAX}
    characters the value is cut, and its length said.  C{None} stays None.
    """
    if value is None:
        return None
    if (
        value.__class__ is str
        and len(value) <= SHOWN_MAX
        and value.isascii()
        and value.isprintable()
        and "\\" not in value
    ):
        return value  # a nickname, a reason: kept as it is (3 calls a session)
    text = value if isinstance(value, str) else str(value)
    cut = text[:SHOWN_MAX]
    if not (cut.isascii() and cut.isprintable() and "\\" not in cut):
        cut = cut.encode("unicode_escape").decode("ascii")
    if len(text) > SHOWN_MAX:
        cut += f"...[{len(text)} characters]"
    return cut


def claimed_nickname(name: str) -> str:
    """What the log says of a nickname someone claimed but did not prove.

    A valid nickname is shown; anything else is described, not shown.  A
    name as long as a resume token is not shown either: it may be one,
    typed first by mistake (C{/resume TOKEN NICK}).
    """
    try:
        check_nickname(name)
    except InvalidName:
        return "(an invalid nickname)"
    if len(name) == TOKEN_LENGTH:
        return f"(a {TOKEN_LENGTH}-character name, not shown: it may be a token)"
    return name


@implementer(ILogObserver)
class LevelGate:
    """Passes events at or above L{level} on to the global log publisher."""

    def __init__(self, level: LogLevel = LogLevel.info) -> None:
        self.level = level

    @property
    def level(self) -> LogLevel:
        """The least level passed on."""
        return self._level

    @level.setter
    def level(self, level: LogLevel) -> None:
        self._level = level
        #: The levels dropped, for L{GatedLogger}: one set lookup.
        self.dropped = frozenset(
            each for each in LogLevel.iterconstants() if each < level
        )

    def __call__(self, event: LogEvent) -> None:
        """Pass C{event} on, unless it is below the level.

        An event about a connection whose registration's line waits (see
        L{SessionLog}) comes after that line: it is written first.
        """
        # (A set lookup: comparing levels is a Python call, 0.2 us.)
        if event["log_level"] not in self.dropped:
            if _waiting:
                connection_id = event.get("connection_id")
                # Most events about a connection find nothing waiting (a
                # session's close took its own line): look before taking,
                # without making a list (0.2 us of each session's close).
                if connection_id is not None:
                    for session_log in _waiting:
                        if connection_id in session_log._lines:
                            _write_waiting(connection_id)
                            break
            globalLogPublisher(event)


def _write_waiting(connection_id: int) -> None:
    """Write connection C{connection_id}'s registration, wherever it waits."""
    waiting = [
        session_log for session_log in _waiting if connection_id in session_log._lines
    ]
    # Taken from every server's log first, then written: writing one
    # passes the gate again.
    lines = [session_log.take(connection_id) for session_log in waiting]
    for line in lines:
        SessionLog.write_line(*line)  # type: ignore[misc]


#: The gate of all of chatservice's loggers.
gate = LevelGate()


class GatedLogger(Logger):
    """A C{Logger} into L{gate} that makes no event the gate would drop.

    Twisted's C{Logger.emit} makes the event (a dict of the fields and six
    more, a clock reading, a check of the level among all levels: 2 us)
    before any observer sees it; with C{--log-level warn} a short
    session's two C{info} events were made for nothing.  What passes is
    made as C{Logger.emit} makes it (see L{emit}).
    """

    def __init__(
        self,
        namespace: str | None = None,
        source: object = None,
        observer: ILogObserver | None = None,
    ) -> None:
        if namespace is None:
            # The module that made this logger, as Logger() itself finds it
            # (one frame further up, since this is a subclass).
            namespace = sys._getframe(1).f_globals.get("__name__", "<unknown>")
        # Always the gate: emit() asks it what it drops.
        super().__init__(namespace, source, observer=gate)

    def emit(
        self, level: LogLevel, format: str | None = None, **kwargs: object
    ) -> None:
        """Make and emit the event, unless the gate would drop it.

        The event is made as C{Logger.emit} makes it, the same fields
        (C{tests/test_logs.py} compares them with Twisted's), without its
        check of the level among all of C{LogLevel}'s constants (a walk
        through them, 0.6 us) and a call: an event to a file takes 4.1 us
        instead of 5.6.  A level that is not one of them goes to
        C{Logger.emit}, which logs the mistake as it always does.
        """
        if level in gate.dropped:
            return
        if level not in _LEVELS:
            super().emit(level, format, **kwargs)
            return
        event = kwargs
        event.update(
            log_logger=self,
            log_level=level,
            log_namespace=self.namespace,
            log_source=self.source,
            log_format=format,
            log_time=time(),
        )
        if "log_trace" in event:
            event["log_trace"].append((self, self.observer))  # type: ignore[attr-defined]
        self.observer(event)


#: The longest (seconds) a registration's line waits to be written: a
#: session that ends before it is logged in one line (see L{SessionLog}).
REGISTRATION_WAIT = 1.0

#: The session logs with registration lines waiting (see L{LevelGate}).
_waiting: set["SessionLog"] = set()

#: The registration and the end of a session are the session's events.
_session_log = GatedLogger("chatservice.session")


class SessionLog:
    """A server's log of each session's registration and end.

    A session is logged when it registers (who, from where) and when it
    ends (why).  The registration's line waits up to L{REGISTRATION_WAIT}
    before it is written (with every other one waiting then); a session
    that ends before that, as most do where clients come and go, is logged
    once, at its end, in one line that says both (C{connection 5 from
    203.0.113.7:39580 registered as alice, closed (quit; closed cleanly)}),
    with the fields of the end's event and C{registered} (true).  twistd's
    observer takes some 20-50 us to format and write an event (a time zone
    object for each, C{string.Formatter}, a flush): on a server of short
    sessions the second line was a sixth of a session's cost.  Any other
    event about the connection (a rename, flood control, an operator's
    login...) writes the waiting line first (L{LevelGate}), so a
    connection's lines keep their order.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self._clock = clock
        # By connection id, in the order they registered: peer, nickname.
        self._lines: dict[int, tuple[str, str]] = {}
        self._call: IDelayedCall | None = None

    def registered(self, connection_id: int, peer: str, nickname: str) -> None:
        """Connection C{connection_id} from C{peer} registered as C{nickname}.

        Nothing waits, and nothing is made for the log, if C{info} events
        are not logged (C{--log-level warn}); else C{nickname} is L{shown}.
        """
        if LogLevel.info in gate.dropped:
            return
        if not self._lines:
            _waiting.add(self)
            if self._call is None:
                self._call = self._clock.callLater(REGISTRATION_WAIT, self.write_all)
        self._lines[connection_id] = (peer, shown(nickname))

    def closed(
        self,
        connection_id: int,
        peer: str,
        nickname: str | None,
        reason: str,
        failure: Failure,
    ) -> None:
        """Connection C{connection_id} ended: C{reason}, then C{failure}; log it.

        C{nickname} is None if it never registered.  In one line with the
        registration, if that still waits.  If C{info} events are not
        logged (C{--log-level warn}), nothing is made for the log: the
        nickname and the reason L{shown}, the failure described
        (L{describe_close}), the event (1.5 us a session).
        """
        waiting = self._lines.pop(connection_id, None)
        if waiting is not None and not self._lines:
            self._none_waiting()
        if LogLevel.info in gate.dropped:
            return
        nickname = shown(nickname)
        reason = shown(reason)
        detail = describe_close(failure)
        if waiting is None:
            _session_log.emit(
                LogLevel.info,
                "connection {connection_id} from {peer} closed ({reason}; {detail})",
                connection_id=connection_id,
                peer=peer,
                nickname=nickname,
                reason=reason,
                detail=detail,
            )
            return
        _session_log.emit(
            LogLevel.info,
            "connection {connection_id} from {peer} registered as {nickname}, "
            "closed ({reason}; {detail})",
            connection_id=connection_id,
            peer=peer,
            nickname=nickname,
            reason=reason,
            detail=detail,
            registered=True,
        )

    def take(self, connection_id: int) -> tuple[int, str, str] | None:
        """Connection C{connection_id}'s registration, if it waits; it no longer does.

        Its line is for L{write_line} to write, now.
        """
        waiting = self._lines.pop(connection_id, None)
        if waiting is None:
            return None
        if not self._lines:
            self._none_waiting()
        return (connection_id, *waiting)

    def write_all(self) -> None:
        """Write every registration that waits, in the order they came."""
        lines, self._lines = self._lines, {}
        self._none_waiting()
        for connection_id, (peer, nickname) in lines.items():
            self.write_line(connection_id, peer, nickname)

    def _none_waiting(self) -> None:
        _waiting.discard(self)
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()

    @staticmethod
    def write_line(connection_id: int, peer: str, nickname: str) -> None:
        """Write the line of a registration (L{take}n from its log)."""
        _session_log.emit(
            LogLevel.info,
            "connection {connection_id} from {peer} registered as {nickname}",
            connection_id=connection_id,
            peer=peer,
            nickname=nickname,
        )


def format_peer(host: str | None, address: IAddress) -> str:
    """How a peer is written in logs: C{1.2.3.4:5678}, C{[::1]:5678}."""
    if host is None:
        return str(address)
    if ":" in host:
        return f"[{host}]:{address.port}"  # type: ignore[attr-defined]
    return f"{host}:{address.port}"  # type: ignore[attr-defined]


def describe_close(reason: Failure) -> str:
    """How the transport ended, for the log: a clean close is not a reset."""
    # (Not reason.check(ConnectionDone), which compares the qualified names
    # of the classes: a session's close took 1.5 us longer.)
    if issubclass(reason.type, ConnectionDone):
        return "closed cleanly"
    return reason.getErrorMessage()
