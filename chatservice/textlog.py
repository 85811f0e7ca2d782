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
faster.  L{text_observer} is the same observer for C{twistd --logger},
which was the way to it before.
"""

import sys
import time

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
