"""twistd's text log, made faster: the same bytes as Twisted's, for any event."""

import io
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

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

from chatservice import logs
from chatservice.logs import shown
from chatservice.textlog import format_classic, speed_up_text_logs, text_observer


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
