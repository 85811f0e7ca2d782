"""twistd's text log, byte for byte, at a fraction of Twisted's cost.

twistd writes its log (C{twistd -n} to standard output, C{--logfile} to a
file) with Twisted's text file observer, which formats every event with
C{string.Formatter} in Python and makes a time zone object for each: some
30 us an event in a busy server, a tenth of a short session's CPU.
L{format_classic} writes the same text, made with C{str.format_map} and a
timestamp made once a second, and leaves anything unusual to Twisted.

L{speed_up_text_logs} gives twistd's own observer L{format_classic} when
the chat service starts (L{chatservice.service.ChatService}): the default
log is still twistd's (its file, its rotation, its lines), only made
faster.  L{write_once_a_turn} then has it write its C{info} lines once per
reactor turn (L{TurnWriter}), not a write and a flush each.
L{text_observer} is the same observer for C{twistd --logger}, which was
the way to it before.
"""

import atexit
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.interfaces import IDelayedCall
from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    LogEvent,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    globalLogPublisher,
    textFileLogObserver,
)

#: The name of the formatter each C{textFileLogObserver} is made with.
_TWISTED_FORMATTER = (
    textFileLogObserver.__module__,
    f"{textFileLogObserver.__qualname__}.<locals>.formatEvent",
)


def speed_up_text_logs(
    publisher: LogPublisher = globalLogPublisher,
) -> list[FileLogObserver]:
    """Give every Twisted text file observer of C{publisher} L{format_classic}.

    twistd builds its log observer before any plugin runs, with
    C{textFileLogObserver} (to standard output or to its C{--logfile}),
    and adds it to the global log publisher; it offers no way to choose
    how it formats.  Here each observer made by C{textFileLogObserver}
    whose timestamps are twistd's (it writes a probe event as
    L{format_classic} does) has its C{formatEvent}, a public attribute,
    replaced: the same lines, written to the same file, faster.  Any other
    observer (a C{--logger} one, JSON, syslog) is left as it is.

    This is the one function that reads a private attribute of Twisted's,
    the publisher's list of observers (it offers no public one).  If
    Twisted ever renames it, or changes what C{textFileLogObserver} makes,
    nothing is changed (Twisted formats the log, as before) and
    C{tests/test_textlog.py} and the end-to-end tests fail.

    Returns the observers changed now (not those changed before).
    """
    observers = getattr(publisher, "_observers", None)
    if not isinstance(observers, list):
        return []
    changed = []
    for observer in tuple(observers):
        if isinstance(observer, FileLogObserver) and _twistds_text(
            observer.formatEvent
        ):
            observer.formatEvent = format_classic
            changed.append(observer)
    return changed


def _twistds_text(formatter: object) -> bool:
    """Whether C{formatter} is C{textFileLogObserver}'s, with twistd's time."""
    name = (
        getattr(formatter, "__module__", None),
        getattr(formatter, "__qualname__", None),
    )
    if name != _TWISTED_FORMATTER:
        return False
    probe = {
        "log_format": "a probe of the log's format: {probe}",
        "probe": 1,
        "log_level": LogLevel.info,
        "log_namespace": __name__,
        "log_time": time.time(),
        "log_logger": None,
        "log_source": None,
    }
    try:
        text = formatter(dict(probe))  # type: ignore[operator]
    except Exception:
        return False
    return bool(text) and text == format_classic(dict(probe))


#: The levels whose lines wait for the end of the reactor's turn
#: (L{TurnWriter}); a warning, an error or a critical line is written at
#: once, with the lines that wait before it.
WAITING_LEVELS = frozenset({LogLevel.debug, LogLevel.info})

#: What L{TurnWriter} gives its observer to write the lines that wait (an
#: event of no one else's: its identity is what is checked).
_WRITE: LogEvent = {
    "log_format": "",
    "log_level": LogLevel.info,
    "log_namespace": __name__,
    "log_time": 0.0,
}


class TurnWriter:
    """A text file observer's C{formatEvent} that writes once per reactor turn.

    Twisted's C{FileLogObserver} writes and flushes every line it formats:
    a system call a line (C{twistd --logfile}'s file is unbuffered,
    standard output is flushed), some 6 % of the CPU of a server of short
    sessions, each logged in a line when it closes.  Here a C{debug} or
    C{info} line logged in the reactor's thread while it runs waits for the
    end of the reactor's turn (a C{callLater(0)}), and the lines of the
    turn are then given to the observer as one text: one write and one
    flush, of the same bytes, in the same order, through the same observer
    (so C{--logfile}'s rotation by size is as before, and by SIGUSR1 too:
    see L{write_once_a_turn}).
    Any other line (a warning or worse, one before the reactor runs or
    once it has stopped) is written at once, after those that wait; a
    line from another thread (or a signal handler) at once, alone: it may
    come before the reactor's lines of the same turn.  When the reactor
    stops (after its shutdown), and at the process's exit, what waits is
    written and every later line is written at once.

    What a C{kill -9} can lose: the C{info} lines of the reactor's current
    turn (written when it ends, within milliseconds), as a process killed
    between two Python calls loses what it has not written.

    @param observer: the observer, whose C{formatEvent} formats each line;
        L{write_once_a_turn} makes this its C{formatEvent}.
    @param reactor: the reactor whose turns are waited for.
    """

    def __init__(self, observer: FileLogObserver, reactor: Any) -> None:
        self._observer = observer
        self._format = observer.formatEvent
        self._reactor = reactor
        # Touched by the reactor's thread only: no lock (see __call__).
        self._lines: list[str] = []
        self._call: IDelayedCall | None = None
        self._thread = threading.get_ident()
        self._busy = False
        self._stopped = False

    def __call__(self, event: LogEvent) -> str | None:
        """The text to write now for C{event}: None if it waits.

        Only the reactor's thread keeps lines or takes them, and never
        within itself: a line logged by a signal handler (Twisted's logs
        C{Received SIGTERM}), which runs in that thread between any two
        steps of this, is written at once, as another thread's is, and
        the lines waiting are left as they are.  (A lock here deadlocked
        a server whose SIGTERM came while it kept a line.)
        """
        if event is _WRITE:
            # Taken whole, then joined: a handler's line, if one comes
            # meanwhile, is in the list taken or in the new one.
            lines = self._lines
            self._lines = []
            return "".join(lines) or None
        text = self._format(event)
        if not text or self._busy or threading.get_ident() != self._thread:
            return text
        self._busy = True
        try:
            if (
                event.get("log_level") in WAITING_LEVELS
                and not self._stopped
                and self._reactor.running
            ):
                self._lines.append(text)
                if self._call is None:
                    self._call = self._reactor.callLater(0, self._write)
                return None
            if self._lines:
                lines = self._lines
                self._lines = []
                text = "".join(lines) + text
            return text
        finally:
            self._busy = False

    def _write(self) -> None:
        self._call = None
        self.write_now()

    def write_now(self) -> None:
        """Give the observer the lines that wait, to write in one."""
        if self._lines and self._observer.formatEvent is self:
            self._observer(_WRITE)

    def stop(self) -> None:
        """Write what waits now; from now on, every line is written at once."""
        self._stopped = True
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        self.write_now()


def write_once_a_turn(
    observers: Iterable[FileLogObserver],
    reactor: Any,
    first: Callable[[], object] | None = None,
) -> list[TurnWriter]:
    """Have each of C{observers} write its C{info} lines once per turn of C{reactor}.

    Each observer's C{formatEvent} (public) becomes a L{TurnWriter} of it,
    stopped after the reactor's shutdown and at the process's exit, and
    written out before twistd rotates its C{--logfile} on C{SIGUSR1}
    (after C{first} is called: what logs lines that wait for the turn's
    end too, L{chatservice.logs.write_ended}).  For
    the observers L{speed_up_text_logs} changed (twistd's own text log):
    C{--logger}'s observers, JSON or syslog, are never given here.
    """
    writers = []
    for observer in observers:
        writer = TurnWriter(observer, reactor)
        observer.formatEvent = writer
        reactor.addSystemEventTrigger("after", "shutdown", writer.stop)
        atexit.register(_stop_at_exit, writer)
        writers.append(writer)
    if writers:
        _write_before_rotating(writers, reactor, first)
    return writers


def _write_before_rotating(
    writers: list[TurnWriter], reactor: Any, first: Callable[[], object] | None
) -> None:
    """Have C{SIGUSR1} write the lines that wait before twistd rotates its file.

    twistd's handler of C{SIGUSR1} (C{--logfile}) rotates the file in the
    reactor's next turn (C{callFromThread}), before that turn's timed
    calls: the lines logged before the signal would have gone to the new
    file.  Here the handler first asks for them to be written, in the same
    queue, so the old file has every line logged before the rotation, as
    when each line was written at once.  Any other handler (none, the
    default, or one not in Python) is left alone.
    """
    previous = signal.getsignal(signal.SIGUSR1)
    if not callable(previous) or threading.current_thread() is not (
        threading.main_thread()
    ):
        return

    def write_then_rotate(number: int, frame: Any) -> None:
        if first is not None:
            reactor.callFromThread(first)
        for writer in writers:
            reactor.callFromThread(writer.write_now)
        previous(number, frame)

    signal.signal(signal.SIGUSR1, write_then_rotate)


def _stop_at_exit(writer: TurnWriter) -> None:
    """Write what waits as the process exits (its file may be closed)."""
    try:
        writer.stop()
    except Exception:
        pass


def text_observer() -> ILogObserver:
    """Twistd's text log on standard output, each line as twistd writes it.

    For C{twistd --logger chatservice.logs.text_observer} (the factory of
    the initial log observer: twistd calls it with no arguments).  It
    writes exactly what twistd's own observer writes to standard output
    (C{twistd -n} without C{--logfile}), made with L{format_classic}, as
    twistd's own observer now is anyway (L{speed_up_text_logs}).
    """
    return FileLogObserver(sys.stdout, format_classic)


class _Second:
    """The last second whose timestamp L{format_classic} wrote, and it.

    One tuple, so that a thread logging at the same time never sees a
    second with another second's timestamp.
    """

    last: tuple[int | None, str] = (None, "")


def format_classic(event: LogEvent) -> str | None:
    """C{event} as twistd's text log writes it, without Twisted's slow path.

    The same text as C{formatEventAsClassicLogText} with twistd's time
    format: C{2026-12-06T18:00:00+0000 [chatservice.session#info] ...}.
    Twisted formats every event with C{string.Formatter} in Python and
    makes a time zone object for each (12 us an event, some 28 us in a
    busy server: a third of a short session's cost at C{info}); here a
    plain event (a C{str} format, a level and a namespace, no failure, no
    system) is formatted by C{str.format_map}, with the timestamp made
    once a second.  Anything else, and anything that fails, is Twisted's
    own formatting, so the text is the same for every event.
    """
    fmt = event.get("log_format")
    level = event.get("log_level")
    when = event.get("log_time")
    if (
        fmt.__class__ is not str
        or level is None
        or when.__class__ is not float
        or "log_failure" in event
        or "log_system" in event
        or "log_flattened" in event
    ):
        return _twistd_format(event)
    try:
        text = fmt.format_map(event)  # type: ignore[union-attr]
        system = f"{event.get('log_namespace', '-')}#{level.name}"
    except Exception:
        return _twistd_format(event)  # which says why it could not
    if not text:
        return None
    second = int(when)  # type: ignore[arg-type]
    last_second, stamp = _Second.last
    if second != last_second:
        stamp = formatTime(second)
        _Second.last = (second, stamp)
    line = f"{stamp} [{system}] {text}"
    if "\n" in line:
        line = line.replace("\n", "\n\t")
    return line + "\n"


def _twistd_format(event: LogEvent) -> str | None:
    """What twistd's own text observer writes for C{event}."""
    return formatEventAsClassicLogText(event, formatTime=formatTime)
