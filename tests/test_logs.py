"""What chatservice logs, how it shows what users chose, and the --log-level gate."""

import ast
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent, globalLogPublisher
from twisted.python.failure import Failure

import chatservice
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.logs import (
    REGISTRATION_WAIT,
    TOKEN_LENGTH,
    GatedLogger,
    LevelGate,
    SessionLog,
    claimed_nickname,
    describe_close,
    gate,
    shown,
)
from chatservice.operators import Operators, hash_password
from chatservice.resume import TOKEN_BYTES
from chatservice.testing import FakeConnection, register


@pytest.fixture
def logged() -> Iterator[list[dict[str, object]]]:
    """The events chatservice logs during the test."""
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def texts(events: list[dict[str, object]]) -> list[str]:
    return [
        formatEvent(event)
        for event in events
        if str(event.get("log_namespace", "")).startswith("chatservice.session")
    ]


def _waiting(factory: ChatFactory, clock: Clock) -> list[object]:
    """The timer that writes the registrations waiting, if there is one."""
    write_all = factory.session_log.write_all
    return [call for call in clock.getDelayedCalls() if call.func == write_all]


def test_a_session_is_two_events(
    factory: ChatFactory, clock: Clock, logged: list
) -> None:
    """The registration and the close are logged, each naming the peer.

    The registration's line is written within a second.
    """
    alice = FakeConnection(factory)
    assert texts(logged) == []  # the connection alone is not logged
    alice.enter("alice")
    clock.advance(REGISTRATION_WAIT - 0.01)
    assert texts(logged) == []
    clock.advance(0.01)
    peer = alice.session.peer
    assert texts(logged) == [f"connection 1 from {peer} registered as alice"]
    alice.enter("/quit")
    alice.drop()
    assert texts(logged) == [
        f"connection 1 from {peer} registered as alice",
        f"connection 1 from {peer} closed (quit; closed cleanly)",
    ]
    assert logged[-1]["nickname"] == "alice"
    assert "registered" not in logged[-1]
    assert _waiting(factory, clock) == []


def test_a_short_session_is_one_event(
    factory: ChatFactory, clock: Clock, logged: list
) -> None:
    """A session that ends within a second of registering is logged in one line."""
    alice = FakeConnection(factory)
    alice.enter("alice")
    clock.advance(REGISTRATION_WAIT / 2)
    alice.enter("/quit")
    alice.drop()
    peer = alice.session.peer
    assert texts(logged) == [
        f"connection 1 from {peer} registered as alice, closed (quit; closed cleanly)"
    ]
    event = logged[-1]
    assert (event["connection_id"], event["peer"], event["nickname"]) == (
        1,
        peer,
        "alice",
    )
    assert (event["reason"], event["detail"], event["registered"]) == (
        "quit",
        "closed cleanly",
        True,
    )
    assert _waiting(factory, clock) == []  # nothing left waiting


def test_registrations_waiting_are_written_in_order(
    factory: ChatFactory, clock: Clock, logged: list
) -> None:
    """Registrations waiting are written together, in the order they came."""
    alice, bob = FakeConnection(factory), FakeConnection(factory)
    alice.enter("alice")
    clock.advance(0.5)
    bob.enter("bob")
    clock.advance(0.5)
    assert texts(logged) == [
        f"connection 1 from {alice.session.peer} registered as alice",
        f"connection 2 from {bob.session.peer} registered as bob",
    ]
    assert _waiting(factory, clock) == []


def test_a_connections_other_events_come_after_its_registration(
    factory: ChatFactory, clock: Clock, logged: list
) -> None:
    """An event about a connection whose registration waits writes that first."""
    alice, bob = FakeConnection(factory), FakeConnection(factory)
    alice.enter("alice")
    bob.enter("bob")
    alice.enter("/nick alicia")
    assert texts(logged) == [
        f"connection 1 from {alice.session.peer} registered as alice",
        "connection 1 renamed from alice to alicia",
    ]
    bob.drop()
    assert texts(logged)[-1] == (
        f"connection 2 from {bob.session.peer} registered as bob, "
        "closed (connection lost; closed cleanly)"
    )


def test_unregistered_close_names_the_peer(factory: ChatFactory, logged: list) -> None:
    """A connection that never registers is logged once, when it closes."""
    stranger = FakeConnection(factory)
    stranger.drop()
    assert texts(logged) == [
        f"connection 1 from {stranger.session.peer} closed "
        "(connection lost; closed cleanly)"
    ]
    assert logged[-1]["nickname"] is None


def test_gate_drops_events_below_its_level(logged: list) -> None:
    """Events below the level are dropped; the rest reach the publisher."""
    warn_gate = LevelGate(LogLevel.warn)
    for level in LogLevel.iterconstants():
        warn_gate({"log_level": level, "log_format": level.name})
    assert [event["log_format"] for event in logged] == ["warn", "error", "critical"]


def test_events_below_the_level_are_not_made(
    factory: ChatFactory, logged: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At --log-level warn a session's info events are not even made."""
    made: list[str] = []
    emit = Logger.emit

    def counted(self: Logger, level: LogLevel, *args: object, **kwargs: object) -> None:
        made.append(self.namespace)
        emit(self, level, *args, **kwargs)  # type: ignore[arg-type]

    def clock() -> float:
        # A GatedLogger reads the time for each event it makes.
        made.append("GatedLogger")
        return time.time()

    def counting(name: str, function: Callable[..., object]) -> Callable[..., object]:
        def call(*args: object) -> object:
            made.append(name)
            return function(*args)

        return call

    monkeypatch.setattr(Logger, "emit", counted)
    monkeypatch.setattr("chatservice.logs.time", clock)
    # The session's log makes no field for an event it would not write.
    monkeypatch.setattr("chatservice.logs.shown", counting("shown", shown))
    monkeypatch.setattr(
        "chatservice.logs.describe_close", counting("describe_close", describe_close)
    )
    monkeypatch.setattr(gate, "level", LogLevel.warn)
    alice = FakeConnection(factory)
    alice.enter("alice")
    assert _waiting(factory, factory.clock) == []  # type: ignore[arg-type]
    alice.drop()
    assert made == []
    assert texts(logged) == []


def test_session_log_shows_what_it_is_given(clock: Clock, logged: list) -> None:
    """The session's log passes the nickname and the reason through shown()."""
    session_log = SessionLog(clock)
    session_log.registered(1, "192.0.2.1:5000", "a\nb")
    session_log.closed(2, "192.0.2.2:5000", None, "x\u2800y", Failure(ConnectionDone()))
    clock.advance(REGISTRATION_WAIT)
    session_log.closed(1, "192.0.2.1:5000", "c\rd", "quit", Failure(ConnectionLost()))
    assert texts(logged) == [
        "connection 2 from 192.0.2.2:5000 closed (x\\u2800y; closed cleanly)",
        "connection 1 from 192.0.2.1:5000 registered as a\\nb",
        "connection 1 from 192.0.2.1:5000 closed (quit; "
        + describe_close(Failure(ConnectionLost()))
        + ")",
    ]
    assert logged[-1]["nickname"] == "c\\rd"


@pytest.mark.parametrize("level", list(LogLevel.iterconstants()), ids=str)
def test_gated_logger_makes_twisteds_events(
    level: LogLevel, logged: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A GatedLogger's event has exactly the fields Twisted's Logger gives it."""
    monkeypatch.setattr(gate, "level", LogLevel.debug)
    source = object()
    twisteds: list[dict[str, object]] = []
    twisted_logger = Logger("chatservice.test", source, observer=twisteds.append)
    gated = GatedLogger("chatservice.test", source)
    before = time.time()
    twisted_logger.emit(level, "a {field}", field=1, log_trace=[])
    gated.emit(level, "a {field}", field=1, log_trace=[])
    after = time.time()
    (theirs,), (ours,) = twisteds, logged
    assert ours.keys() == theirs.keys()
    same = ours.keys() - {"log_logger", "log_time", "log_trace"}
    assert {key: ours[key] for key in same} == {key: theirs[key] for key in same}
    assert (ours["log_logger"], theirs["log_logger"]) == (gated, twisted_logger)
    assert before <= theirs["log_time"] <= ours["log_time"] <= after
    assert ours["log_trace"][0] == (gated, gate)
    assert theirs["log_trace"] == [(twisted_logger, twisteds.append)]


def test_gated_logger_with_no_level_says_so(logged: list) -> None:
    """A GatedLogger given something that is no level logs Twisted's critical event."""
    GatedLogger("chatservice.test").emit("loud", "a {field}", field=1)  # type: ignore[arg-type]
    assert [event["log_level"] for event in logged] == [LogLevel.critical]
    assert formatEvent(logged[0]).startswith(
        "Got invalid log level 'loud' in <GatedLogger 'chatservice.test'>.emit()"
    )


def test_default_level_is_info() -> None:
    """By default, chatservice's debug events are left out."""
    assert gate.level == LogLevel.info


# What users choose is escaped in the log ----------------------------------------

#: Looks like spaces, is not: a nickname made with it reads as a sentence.
BLANK = "\N{BRAILLE PATTERN BLANK}"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("alice", "alice"),
        ("kicked by alice", "kicked by alice"),
        (f"x{BLANK}is{BLANK}now", "x\\u2800is\\u2800now"),
        ("one\ntwo\r\x1b[2J", "one\\ntwo\\r\\x1b[2J"),
        ("back\\slash", "back\\\\slash"),
        ("r\N{CYRILLIC SMALL LETTER O}ot", "r\\u043eot"),  # looks like "root"
        ("\N{RIGHT-TO-LEFT OVERRIDE}toor", "\\u202etoor"),
        ("\U0001f600", "\\U0001f600"),
        ("", ""),
        (42, "42"),
        (None, None),
        ("x" * 101, "x" * 100 + "...[101 characters]"),
    ],
)
def test_shown(value: object, expected: str | None) -> None:
    """Printable ASCII is kept; the rest is escaped; long values are cut."""
    assert shown(value) == expected


def test_shown_is_unambiguous() -> None:
    """Two different values never show the same (within the length limit)."""
    values = ["\\u2800", BLANK, "\\n", "\n", "\\", "\\\\"]
    assert len({shown(value) for value in values}) == len(values)


def formatted(events: list[dict[str, object]]) -> list[str]:
    """Chatservice's events as twistd would write them."""
    return [
        formatEvent(event)
        for event in events
        if str(event.get("log_namespace", "")).startswith("chatservice")
    ]


def test_failed_resume_with_a_blank_looking_nickname(
    factory: ChatFactory, logged: list
) -> None:
    """A /resume's nickname is checked before it is logged: no forged line."""
    forger = FakeConnection(factory)
    forger.enter(
        f"/resume x{BLANK * 60}connection{BLANK}1{BLANK}is{BLANK}now{BLANK}operator{BLANK}root 0"
    )
    assert forger.lines()[-1] == "!!! resume failed: unknown nickname or wrong token"
    assert formatted(logged) == [
        "failed /resume as (an invalid nickname) by connection 1 from 127.0.0.1"
    ]


def _token(connection: FakeConnection) -> str:
    (line,) = [each for each in connection.lines() if "resume token:" in each]
    return line.split("resume token: ")[1].split()[0]


@pytest.mark.parametrize("swapped", [False, True])
def test_a_token_is_never_logged(
    factory: ChatFactory, logged: list, swapped: bool
) -> None:
    """A wrong /resume is logged without its token, even with NICK and TOKEN swapped."""
    alice = FakeConnection(factory)
    alice.enter("alice")
    token = _token(alice)
    alice.drop()
    thief = FakeConnection(factory)
    thief.enter(f"/resume {token} alice" if swapped else f"/resume alice {token}x")
    assert thief.lines()[-1] == "!!! resume failed: unknown nickname or wrong token"
    failed = formatted(logged)[-1]
    assert failed.startswith("failed /resume as ")
    assert token not in "\n".join(formatted(logged))
    assert all(token not in repr(event) for event in logged)


def test_a_nickname_as_long_as_a_token_is_not_logged() -> None:
    """Any claimed nickname of a token's length is left out, valid or not."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    assert len(token) == TOKEN_LENGTH
    assert claimed_nickname("A" * TOKEN_LENGTH) == (
        "(a 22-character name, not shown: it may be a token)"
    )
    assert claimed_nickname("alice") == "alice"


def test_user_text_in_every_logged_command_is_escaped(
    clock: Clock, logged: list
) -> None:
    """Reasons, names and nicknames typed by users reach the log escaped."""
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    factory.operators = Operators({"root": hash_password("s3cret", n=2**10)})
    attack = f"ok{BLANK}\N{LINE SEPARATOR}is{BLANK}now{BLANK}operator{BLANK}root"
    root = register(factory, "root")
    for nickname in ("bob", "carol", "dave"):
        register(factory, nickname, "10.0.0.9")
    stranger = FakeConnection(factory)
    stranger.enter(f"/resume {attack} token")
    root.enter(f"/oper {attack} s3cret", "/oper root wrong", "/oper root s3cret")
    root.enter(f"/kick bob {attack}", f"/ban carol 1h {attack}", "/unban 10.0.0.9")
    root.enter(f"/nick r{BLANK}t", f"/join #{attack}", f"/quit {attack}")
    clock.advance(3600)
    texts = formatted(logged)
    # (The sanitiser removed the U+2028 before the log saw it.)
    assert any("kicked bob: ok\\u2800is\\u2800now" in text for text in texts)
    assert any("banned 10.0.0.9/32 (carol) for 1h: ok\\u2800" in text for text in texts)
    for text in texts:
        assert text.isascii() and text.isprintable(), text


# Every log call escapes what users chose ----------------------------------------

#: Fields that only the server chooses: no user's text can reach them.
SERVER_FIELDS = frozenset(
    {
        "address",
        "after",
        "before",
        "cluster",
        "code",
        "connection_id",
        "count",
        "days",
        "description",
        "detail",
        "dropped",
        "duration",
        "error",
        "formatter",
        "grace",
        "host",
        "limit",
        "max_clients",
        "max_sendq",
        "needed",
        "path",
        "peer",
        "plugins",
        "port",
        "problem",
        "rate",
        "spare",
        "store",
        "usable",
        "what",
    }
)

_LEVELS = {"debug", "info", "warn", "error", "critical", "failure"}


def _escaped(node: ast.expr) -> bool:
    """Whether C{node} is a value that went through L{shown}, or a constant."""
    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.IfExp):
        return _escaped(node.body) and _escaped(node.orelse)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id == "shown":
            return True
        if node.func.id == "_colon":  # moderation's ": TEXT" wrapper
            return all(_escaped(arg) for arg in node.args)
    return False


def _log_calls() -> Iterator[tuple[str, ast.Call]]:
    package = Path(chatservice.__file__).parent
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            is_log = (
                isinstance(func, ast.Attribute)
                and func.attr in _LEVELS
                and isinstance(func.value, ast.Name)
                and func.value.id == "log"
            )
            is_audit = isinstance(func, ast.Name) and func.id == "_audit"
            if is_log or is_audit:
                yield f"{path.relative_to(package.parent)}:{node.lineno}", node


def test_every_log_call_escapes_user_chosen_fields() -> None:
    """Each field of each log call is server-chosen or passed through shown()."""
    calls = list(_log_calls())
    assert len(calls) > 40  # the scan finds them
    unescaped = [
        f"{where}: {keyword.arg}"
        for where, call in calls
        for keyword in call.keywords
        if keyword.arg is not None
        and keyword.arg not in SERVER_FIELDS
        and not _escaped(keyword.value)
    ]
    assert unescaped == [], (
        "pass these through chatservice.logs.shown (or, if only the server "
        "chooses them, add them to SERVER_FIELDS)"
    )
