"""twistd's text log, made faster: the same bytes as Twisted's, for any event."""

import io
import json
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from twisted.internet.task import Clock
from twisted.logger import (
    FileLogObserver,
    LogLevel,
    LogPublisher,
    formatEventAsClassicLogText,
    formatTime,
    jsonFileLogObserver,
    textFileLogObserver,
)
from twisted.python.failure import Failure
from twisted.python.logfile import LogFile

from chatservice import logs
from chatservice.logs import shown
from chatservice.textlog import (
    TurnWriter,
    format_classic,
    speed_up_text_logs,
    text_observer,
    write_once_a_turn,
)


def twisted_text(event: dict[str, Any]) -> str | None:
    """What twistd's own observer writes for C{event}, by Twisted alone."""
    return formatEventAsClassicLogText(dict(event), formatTime=formatTime)


# format_classic writes what Twisted writes -----------------------------------


class _Thing:
    """A value with an attribute and a method, as log fields may be."""

    size = 3

    def describe(self) -> str:
        return "a thing"

    def __repr__(self) -> str:
        return "<thing>"


def _failure_event() -> dict[str, object]:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        failure = Failure()
    return {
        "log_format": "it failed: {why}",
        "why": "division",
        "log_failure": failure,
        "log_level": LogLevel.critical,
        "log_namespace": "chatservice.commands",
        "log_time": 1_700_000_000.25,
    }


def _event(fmt: object, when: float = 1_700_000_000.5, **fields: object) -> dict:
    return {
        "log_format": fmt,
        "log_level": LogLevel.info,
        "log_namespace": "chatservice.session",
        "log_time": when,
        "log_logger": None,
        "log_source": None,
        **fields,
    }


@pytest.mark.parametrize(
    "event",
    [
        _event(
            "connection {connection_id} from {peer} registered as {nickname}",
            connection_id=7,
            peer="[::1]:4567",
            nickname=shown("x\N{BRAILLE PATTERN BLANK}y"),
        ),
        _event("a second later: {n}", when=1_700_000_001.75, n=1),
        _event("throttled: more than {rate:g} lines per second", rate=5.0),
        _event(
            "{thing!r} {thing!s} {thing.size} {items[1]} {d[k]}",
            thing=_Thing(),
            items=["a", "b"],
            d={"k": "v"},
        ),
        _event("called: {thing.describe()}", thing=_Thing()),
        _event("{f()}", f=lambda: "from a call"),
        _event("two\nlines: {x}", x="and\nthree"),
        _event("a missing {field}"),
        _event("positional {}"),
        _event("{empty}", empty=""),
        _event(b"bytes {x}", x=1),
        _event(None),
        _event("no time", when=None),  # type: ignore[arg-type]
        {**_event("a system {x}", x=1), "log_system": "ChatFactory,0,127.0.0.1"},
        {**_event("no level {x}", x=1), "log_level": None},
        {**_event("flattened {x}", x=1), "log_flattened": {"x!s:": "other"}},
        _failure_event(),
    ],
)
def test_format_classic_is_twistds(event: dict[str, object]) -> None:
    """The faster formatting writes, for each kind of event, what twistd's writes."""
    assert format_classic(dict(event)) == twisted_text(event)


#: Pieces of log formats: text, fields in every form, and broken ones.
FORMAT_PIECES = st.sampled_from(
    [
        "connection ",
        " from ",
        ": ",
        "\n",
        "\t",
        "é",
        "\N{BRAILLE PATTERN BLANK}",
        "{{",
        "}}",
        "{text}",
        "{number}",
        "{number:>6}",
        "{number:{width}}",
        "{text!r}",
        "{text!s}",
        "{text!a}",
        "{items[0]}",
        "{number.real}",
        "{text.upper()}",
        "{missing}",
        "{}",
        "{0}",
        "{",
        "}",
        "{text:d}",
        "{number!x}",
    ]
)


@st.composite
def events(draw: st.DrawFn) -> dict[str, object]:
    """A log event as Twisted's loggers (or anyone's) may make it."""
    fmt = draw(
        st.one_of(
            st.lists(FORMAT_PIECES, max_size=8).map("".join),
            st.none(),
            st.just(b"bytes {text}"),
        )
    )
    event: dict[str, object] = {
        "log_format": fmt,
        "log_level": draw(st.sampled_from([*LogLevel.iterconstants(), None])),
        "log_time": draw(
            st.one_of(
                st.floats(min_value=0, max_value=4e9),
                st.integers(min_value=0, max_value=4_000_000_000),
                st.none(),
            )
        ),
        "log_logger": None,
        "log_source": None,
        "text": draw(st.text(max_size=20)),
        "number": draw(st.one_of(st.integers(), st.floats(allow_nan=False))),
        "width": draw(st.integers(min_value=0, max_value=12)),
        "items": draw(st.lists(st.text(max_size=5), max_size=2)),
    }
    namespace = draw(st.one_of(st.none(), st.text(max_size=20)))
    if namespace is not None:
        event["log_namespace"] = namespace
    if draw(st.booleans()):
        event["log_system"] = draw(st.text(max_size=10))
    return event


@settings(max_examples=500)
@given(events())
@example(_event("{text}", text="a line\nand another"))
@example(_event("connection {number} closed", number=5))
def test_format_classic_is_twistds_for_any_event(event: dict[str, object]) -> None:
    """The faster formatting writes, for any event, what twistd's own writes."""
    assert format_classic(dict(event)) == twisted_text(event)


def test_format_classic_formats_plain_events_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plain event is formatted without Twisted's formatter at all."""

    def not_called(*args: object, **kwargs: object) -> str:
        raise AssertionError("formatted by Twisted")

    event = _event("connection {n} closed", n=5)
    expected = twisted_text(event)
    monkeypatch.setattr("chatservice.textlog.formatEventAsClassicLogText", not_called)
    assert format_classic(event) == expected


# twistd's observer gets the faster formatting ---------------------------------


def test_twistds_text_observer_is_sped_up() -> None:
    """A publisher's textFileLogObserver writes the same lines, formatted faster.

    This fails if Twisted's insides change so that the observer is no
    longer found (C{LogPublisher._observers}, C{textFileLogObserver}).
    """
    fast, slow = io.StringIO(), io.StringIO()
    observer = textFileLogObserver(fast)
    publisher = LogPublisher(observer)
    assert speed_up_text_logs(publisher) == [observer]
    assert observer.formatEvent is format_classic
    reference = textFileLogObserver(slow)
    for event in (
        _event("connection {n} closed", n=5),
        _event("a line\nand another"),
        {**_event("a system {x}", x=1), "log_system": "ChatFactory,0,127.0.0.1"},
        _failure_event(),
    ):
        publisher(dict(event))
        reference(dict(event))
    assert fast.getvalue() == slow.getvalue()
    assert fast.getvalue().count("\n") > 4


def test_speeding_up_twice_changes_nothing_more() -> None:
    """An observer already sped up is not reported again."""
    observer = textFileLogObserver(io.StringIO())
    publisher = LogPublisher(observer)
    speed_up_text_logs(publisher)
    assert speed_up_text_logs(publisher) == []
    assert observer.formatEvent is format_classic


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda out: textFileLogObserver(out, timeFormat=None), id="-"),
        pytest.param(
            lambda out: textFileLogObserver(out, timeFormat="%H:%M:%S"), id="time"
        ),
        pytest.param(jsonFileLogObserver, id="json"),
        pytest.param(
            lambda out: FileLogObserver(out, lambda event: "mine\n"), id="custom"
        ),
        pytest.param(lambda out: out.write, id="callable"),
    ],
)
def test_other_observers_are_left_alone(make: Any) -> None:
    """Observers that write anything but twistd's lines keep their formatting."""
    out = io.StringIO()
    observer = make(out)
    formatter = getattr(observer, "formatEvent", None)
    assert speed_up_text_logs(LogPublisher(observer)) == []
    assert getattr(observer, "formatEvent", None) is formatter


def test_json_log_is_unchanged() -> None:
    """A JSON observer next to a sped-up text one still writes every field."""
    text, data = io.StringIO(), io.StringIO()
    publisher = LogPublisher(textFileLogObserver(text), jsonFileLogObserver(data))
    speed_up_text_logs(publisher)
    publisher(_event("connection {n} closed", n=5))
    record = json.loads(data.getvalue().strip("\x1e"))
    assert (record["log_format"], record["n"]) == ("connection {n} closed", 5)


def test_without_the_private_list_nothing_changes() -> None:
    """If Twisted renames the publisher's list of observers, Twisted formats."""

    class Publisher:
        observers = [textFileLogObserver(io.StringIO())]

    assert speed_up_text_logs(Publisher()) == []  # type: ignore[arg-type]
    assert Publisher.observers[0].formatEvent is not format_classic


def test_text_observer_writes_to_standard_output(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--logger chatservice.logs.text_observer writes twistd's lines to stdout."""
    assert logs.text_observer is text_observer
    assert logs.format_classic is format_classic
    observer = text_observer()
    event = _event("connection {n} closed", n=5)
    observer(dict(event))
    assert capsys.readouterr().out == twisted_text(event)


# twistd's observer writes its info lines once a reactor turn ------------------


class _Reactor(Clock):
    """A clock that runs, and keeps the system event triggers it is given."""

    running = True

    def __init__(self) -> None:
        super().__init__()
        self.triggers: list[tuple[str, str, Any]] = []
        self.from_threads: list[Any] = []

    def addSystemEventTrigger(self, phase: str, event: str, call: Any) -> None:
        self.triggers.append((phase, event, call))

    def callFromThread(self, call: Any) -> None:
        self.from_threads.append(call)

    def shut_down(self) -> None:
        """Fire the triggers of the shutdown, as the reactor does, and stop."""
        for phase in ("before", "during", "after"):
            for when, event, call in self.triggers:
                if (when, event) == (phase, "shutdown"):
                    call()
        self.running = False


class _Writes(io.StringIO):
    """A text file that keeps each write."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)


def _turn_log() -> tuple[LogPublisher, _Writes, _Reactor, list[TurnWriter]]:
    """The twistd observer, sped up and writing once a turn of a fake reactor."""
    out, reactor = _Writes(), _Reactor()
    publisher = LogPublisher(textFileLogObserver(out))
    writers = write_once_a_turn(speed_up_text_logs(publisher), reactor)
    return publisher, out, reactor, writers


def _events(*levels: LogLevel) -> list[dict[str, object]]:
    return [
        {**_event("line {n}", n=n, when=1_700_000_000.5 + n), "log_level": level}
        for n, level in enumerate(levels)
    ]


def test_info_lines_are_written_once_a_turn() -> None:
    """The info lines of a reactor turn are written at its end, in one write, as Twisted writes them."""
    publisher, out, reactor, _ = _turn_log()
    events = _events(LogLevel.info, LogLevel.debug, LogLevel.info)
    for event in events:
        publisher(dict(event))
    assert out.getvalue() == ""
    reactor.advance(0)
    assert out.writes == ["".join(twisted_text(event) or "" for event in events)]
    assert reactor.getDelayedCalls() == []


def test_a_warning_is_written_at_once_after_the_lines_waiting() -> None:
    """A warning (or worse) is not kept: it is written at once, after the lines before it."""
    publisher, out, reactor, _ = _turn_log()
    events = _events(LogLevel.info, LogLevel.warn, LogLevel.info, LogLevel.critical)
    for event in events:
        publisher(dict(event))
    text = [twisted_text(event) or "" for event in events]
    assert out.writes == [text[0] + text[1], text[2] + text[3]]
    reactor.advance(0)
    assert out.getvalue() == "".join(text)


def test_lines_are_written_at_once_while_the_reactor_does_not_run() -> None:
    """Before the reactor runs (a start that fails), every line is written at once."""
    publisher, out, reactor, _ = _turn_log()
    reactor.running = False
    events = _events(LogLevel.info, LogLevel.info)
    for event in events:
        publisher(dict(event))
    assert out.writes == [twisted_text(event) for event in events]
    assert reactor.getDelayedCalls() == []


def test_the_shutdown_writes_what_waits() -> None:
    """When the reactor stops, the lines that wait are written, and later ones at once."""
    publisher, out, reactor, _ = _turn_log()
    events = _events(LogLevel.info, LogLevel.info, LogLevel.info)
    publisher(dict(events[0]))
    publisher(dict(events[1]))
    reactor.shut_down()
    publisher(dict(events[2]))
    text = [twisted_text(event) or "" for event in events]
    assert out.writes == [text[0] + text[1], text[2]]
    assert reactor.getDelayedCalls() == []


def test_the_exit_writes_what_waits() -> None:
    """A process that exits without the reactor's shutdown still writes the lines that wait."""
    publisher, out, reactor, (writer,) = _turn_log()
    event = _events(LogLevel.info)[0]
    publisher(dict(event))
    writer.stop()  # what atexit calls
    assert out.getvalue() == twisted_text(event)


def test_another_threads_line_is_written_at_once() -> None:
    """A line logged in another thread is written at once, the reactor's waiting lines after the turn."""
    publisher, out, reactor, _ = _turn_log()
    events = _events(LogLevel.info, LogLevel.info)
    publisher(dict(events[0]))
    thread = threading.Thread(target=publisher, args=(dict(events[1]),))
    thread.start()
    thread.join()
    assert out.writes == [twisted_text(events[1])]
    reactor.advance(0)
    assert out.writes == [twisted_text(events[1]), twisted_text(events[0])]


def test_a_signal_handlers_line_while_a_line_is_kept() -> None:
    """A line logged by a signal handler while a line is being kept is written at once, and nothing hangs.

    Twisted's handler of SIGTERM logs; it runs in the reactor's thread
    between any two steps of the observer's (a lock there deadlocked).
    """
    events = _events(LogLevel.info, LogLevel.info)
    written: list[str] = []

    def reactors_thread() -> None:
        publisher, out, reactor, _ = _turn_log()
        call_later = reactor.callLater

        def interrupted(*args: Any) -> Any:
            publisher(dict(events[1]))  # what a signal handler would log here
            return call_later(*args)

        reactor.callLater = interrupted  # type: ignore[method-assign]
        publisher(dict(events[0]))
        written.append(out.getvalue())
        reactor.advance(0)
        written.append(out.getvalue())

    # (In a thread of its own, so that a deadlock fails the test.)
    thread = threading.Thread(target=reactors_thread, daemon=True)
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "the observer deadlocked"
    assert written == [
        twisted_text(events[1]),
        "".join(twisted_text(event) or "" for event in reversed(events)),
    ]


def test_a_log_file_written_once_a_turn_still_rotates(tmp_path: Path) -> None:
    """A --logfile written once a turn rotates by size with every line kept."""
    log_file = LogFile("chat.log", str(tmp_path), rotateLength=200)
    publisher = LogPublisher(textFileLogObserver(log_file))
    reactor = _Reactor()
    write_once_a_turn(speed_up_text_logs(publisher), reactor)
    events = _events(*[LogLevel.info] * 9)
    for turn in range(3):
        for event in events[turn * 3 : turn * 3 + 3]:
            publisher(dict(event))
        reactor.advance(0)
    log_file.close()
    rotated = sorted(tmp_path.glob("chat.log.*"), reverse=True)
    assert rotated, "not rotated"
    written = "".join(path.read_text() for path in [*rotated, tmp_path / "chat.log"])
    assert written == "".join(twisted_text(event) or "" for event in events)


def test_sigusr1_writes_what_waits_before_the_rotation() -> None:
    """SIGUSR1 writes the lines that wait before twistd's handler rotates the file."""
    out, reactor = _Writes(), _Reactor()
    written_at_rotation: list[str] = []

    def rotate() -> None:
        written_at_rotation.append(out.getvalue())

    def twistds_handler(number: int, frame: object) -> None:
        reactor.callFromThread(rotate)

    previous = signal.signal(signal.SIGUSR1, twistds_handler)
    later = _events(LogLevel.info, LogLevel.info)
    try:
        publisher = LogPublisher(textFileLogObserver(out))
        # What logs lines waiting for the turn's end too (a session's end).
        write_once_a_turn(
            speed_up_text_logs(publisher),
            reactor,
            first=lambda: publisher(dict(later[1])),
        )
        publisher(dict(later[0]))
        signal.raise_signal(signal.SIGUSR1)
    finally:
        signal.signal(signal.SIGUSR1, previous)
    for call in reactor.from_threads:  # the reactor's next turn
        call()
    assert written_at_rotation == ["".join(twisted_text(e) or "" for e in later)]
