"""Session hooks: the dispatcher, and what a hooks plugin sees of sessions."""

from collections.abc import Iterator
from typing import Any

import pytest

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface.verify import verifyObject

from chatservice.hooks import FAILURE_LOG_INTERVAL, Hooks, SessionHooks
from chatservice.interfaces import ISessionHooks
from chatservice.reasons import CloseReason


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """The events logged during the test."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def failures(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The hook failures logged: each text, and its exception."""
    return [
        (formatEvent(event), repr(event["log_failure"].value))
        for event in events
        if event.get("log_namespace") == "chatservice.hooks"
    ]


class Recorder(SessionHooks):
    """Records every hook it is given, with the plugin's name."""

    def __init__(self, name: str, seen: list[tuple[object, ...]]) -> None:
        self.name = name
        self.seen = seen

    def connected(self, session: object) -> None:
        self.seen.append((self.name, "connected", session))

    def said(self, session: object, room: str, text: str) -> None:
        self.seen.append((self.name, "said", session, room, text))

    def disconnected(self, session: object, reason: CloseReason) -> None:
        self.seen.append((self.name, "disconnected", session, reason))


class Crashing(SessionHooks):
    """Raises from its said hook."""

    name = "crashing"

    def said(self, session: object, room: str, text: str) -> None:
        raise ZeroDivisionError("a plugin's bug")


def test_session_hooks_provides_the_interface() -> None:
    """The do-nothing base class, and a subclass, provide ISessionHooks in full."""
    assert verifyObject(ISessionHooks, SessionHooks())
    assert verifyObject(ISessionHooks, Recorder("r", []))


def test_called_in_name_order() -> None:
    """Every plugin's hook is called, in order of name, with the event's values."""
    seen: list[tuple[object, ...]] = []
    hooks = Hooks([Recorder("b", seen), Recorder("a", seen)], Clock())
    hooks.said("session", "#lobby", "hello")
    assert seen == [
        ("a", "said", "session", "#lobby", "hello"),
        ("b", "said", "session", "#lobby", "hello"),
    ]


def test_only_written_hooks_are_called() -> None:
    """A hook a plugin left as SessionHooks' is not in the event's calls."""
    hooks = Hooks([Recorder("r", []), Crashing()], Clock())
    assert [name for name, _ in hooks.on_said] == ["crashing", "r"]
    assert [name for name, _ in hooks.on_connected] == ["r"]
    assert hooks.on_joined == hooks.on_nick_changed == ()


def test_no_plugins_nothing_to_call() -> None:
    """Without hooks plugins every event's calls are empty, and calls do nothing."""
    hooks = Hooks((), Clock())
    assert not hooks.on_said and not hooks.on_acted and not hooks.on_connected
    hooks.said("session", "#lobby", "hello")  # nothing to call, nothing raised


def test_exception_logged_and_next_hook_called(logged: list) -> None:
    """A hook that raises is logged with its traceback; the next is still called."""
    seen: list[tuple[object, ...]] = []
    hooks = Hooks([Crashing(), Recorder("later", seen)], Clock())
    hooks.said("session", "#lobby", "hello")  # does not raise
    assert seen == [("later", "said", "session", "#lobby", "hello")]
    assert failures(logged) == [
        (
            "hooks plugin crashing: its said hook failed",
            'ZeroDivisionError("a plugin\'s bug")',
        )
    ]


def test_failures_logged_once_a_minute(logged: list) -> None:
    """A hook failing on every line logs one traceback a minute, then the count."""
    clock = Clock()
    hooks = Hooks([Crashing()], clock)
    for _ in range(5):
        hooks.said("session", "#lobby", "hello")
    assert len(failures(logged)) == 1
    clock.advance(FAILURE_LOG_INTERVAL)
    hooks.said("session", "#lobby", "hello")
    first, second = failures(logged)
    assert second[0] == (
        "hooks plugin crashing: its said hook failed "
        "(4 more failures since the last one logged)"
    )


def test_failed_deferred_logged(logged: list) -> None:
    """A hook's Deferred that fails later is logged like an exception."""
    waiting: Deferred[None] = Deferred()

    class Later(SessionHooks):
        name = "later"

        def connected(self, session: object) -> Deferred[None]:
            return waiting

    Hooks([Later()], Clock()).connected("session")
    waiting.errback(ValueError("no answer"))
    assert failures(logged) == [
        ("hooks plugin later: its connected hook failed", "ValueError('no answer')")
    ]


def test_plugin_names_are_escaped_in_the_log(logged: list) -> None:
    """A plugin name with a line break cannot write a line of its own."""

    class Odd(Crashing):
        name = "odd\nname"

    Hooks([Odd()], Clock()).said("session", "#lobby", "hello")
    ((text, _),) = failures(logged)
    assert text == "hooks plugin odd\\nname: its said hook failed"


class Life(SessionHooks):
    """Records the hooks of a session's life, by event name."""

    name = "life"

    def __init__(self) -> None:
        self.seen: list[tuple[object, ...]] = []

    def registered(self, session: object) -> None:
        self.seen.append(("registered",))

    def joined(self, session: object, room: str) -> None:
        self.seen.append(("joined", room))

    def left(self, session: object, room: str, reason: str) -> None:
        self.seen.append(("left", room, reason))

    def disconnected(self, session: object, reason: CloseReason) -> None:
        self.seen.append(("disconnected", str(reason)))


class Session:
    """As much of a session as the dispatcher reads."""

    room = "#lobby"


def test_registered_then_joined_its_room() -> None:
    """Registering calls registered, then joined for the session's room."""
    life = Life()
    Hooks([life], Clock()).registered(Session())
    assert life.seen == [("registered",), ("joined", "#lobby")]


def test_rooms_left_before_disconnected() -> None:
    """At the end, each room still joined is left, then disconnected is called."""
    life, session = Life(), Session()
    hooks = Hooks([life], Clock())
    hooks.registered(session)
    hooks.joined(session, "#tea")
    hooks.left(session, "#lobby", "joined #tea")
    hooks.joined(session, "#cake")
    hooks.disconnected(session, CloseReason.quit("lunch"))
    assert life.seen[-4:] == [
        ("joined", "#cake"),
        ("left", "#tea", "quit: lunch"),
        ("left", "#cake", "quit: lunch"),
        ("disconnected", "quit: lunch"),
    ]
    hooks.disconnected(Session(), CloseReason.quit())  # a stranger: no rooms
    assert life.seen[-1] == ("disconnected", "quit")
    assert hooks._rooms == {}  # nothing kept of sessions gone


def test_unregistered_only_disconnected() -> None:
    """A connection that never registered is told only that it disconnected."""
    life = Life()
    Hooks([life], Clock()).disconnected(Session(), CloseReason.quit())
    assert life.seen == [("disconnected", "quit")]
