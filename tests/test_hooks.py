"""Session hooks: the dispatcher, and what a hooks plugin sees of sessions."""

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from harness import Harness, wait_until

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import formatEvent, globalLogPublisher
from zope.interface.verify import verifyObject

import chatservice.plugins
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.hooks import FAILURE_LOG_INTERVAL, Hooks, SessionHooks
from chatservice.interfaces import ISessionHooks
from chatservice.operators import Operators, hash_password
from chatservice.reasons import CloseReason
from chatservice.testing import FakeConnection, register


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


class Session:
    """As much of a session as the dispatcher reads."""

    room = "#lobby"


def live(hooks: Hooks) -> Session:
    """A session that connected and registered, as the dispatcher was told."""
    session = Session()
    hooks.connected(session)
    hooks.registered(session)
    return session


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
    session = live(hooks)
    hooks.said(session, "#lobby", "hello")
    assert seen[-2:] == [
        ("a", "said", session, "#lobby", "hello"),
        ("b", "said", session, "#lobby", "hello"),
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
    session = live(hooks)
    hooks.said(session, "#lobby", "hello")  # nothing to call, nothing raised
    hooks.disconnected(session, CloseReason.quit())


def test_exception_logged_and_next_hook_called(logged: list) -> None:
    """A hook that raises is logged with its traceback; the next is still called."""
    seen: list[tuple[object, ...]] = []
    hooks = Hooks([Crashing(), Recorder("later", seen)], Clock())
    session = live(hooks)
    hooks.said(session, "#lobby", "hello")  # does not raise
    assert seen[-1] == ("later", "said", session, "#lobby", "hello")
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
    session = live(hooks)
    for _ in range(5):
        hooks.said(session, "#lobby", "hello")
    assert len(failures(logged)) == 1
    clock.advance(FAILURE_LOG_INTERVAL)
    hooks.said(session, "#lobby", "hello")
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

    Hooks([Later()], Clock()).connected(Session())
    waiting.errback(ValueError("no answer"))
    assert failures(logged) == [
        ("hooks plugin later: its connected hook failed", "ValueError('no answer')")
    ]


def test_plugin_names_are_escaped_in_the_log(logged: list) -> None:
    """A plugin name with a line break cannot write a line of its own."""

    class Odd(Crashing):
        name = "odd\nname"

    hooks = Hooks([Odd()], Clock())
    hooks.said(live(hooks), "#lobby", "hello")
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


def test_registered_then_joined_its_room() -> None:
    """Registering calls registered, then joined for the session's room."""
    life = Life()
    hooks = Hooks([life], Clock())
    session = live(hooks)
    hooks.registered(session)  # told twice: once is enough
    assert life.seen == [("registered",), ("joined", "#lobby")]


def test_rooms_left_before_disconnected() -> None:
    """At the end, each room still joined is left, then disconnected is called."""
    life = Life()
    hooks = Hooks([life], Clock())
    session = live(hooks)
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
    hooks.disconnected(Session(), CloseReason.quit())  # never connected: nothing
    assert len(life.seen) == 8


def test_nothing_out_of_order() -> None:
    """Events before connected, after disconnected, or for rooms not joined are dropped."""
    life, session = Life(), Session()
    hooks = Hooks([life], Clock())
    hooks.said(session, "#lobby", "too early")
    hooks.connected(session)
    hooks.joined(session, "#tea")  # not registered yet
    hooks.registered(session)
    hooks.left(session, "#tea", "never joined")
    hooks.disconnected(session, CloseReason.quit())
    hooks.nick_changed(session, "bob", "robert")  # too late
    hooks.disconnected(session, CloseReason.quit())  # once is enough
    assert life.seen == [
        ("registered",),
        ("joined", "#lobby"),
        ("left", "#lobby", "quit"),
        ("disconnected", "quit"),
    ]


def test_unregistered_only_disconnected() -> None:
    """A connection that never registered is told only that it disconnected."""
    life, session = Life(), Session()
    hooks = Hooks([life], Clock())
    hooks.connected(session)
    hooks.disconnected(session, CloseReason.quit())
    assert life.seen == [("disconnected", "quit")]


# A hooks plugin on a real server ---------------------------------------------

#: A hooks plugin that records every hook it is given, by connection id.
RECORDER = """
    from chatservice.hooks import SessionHooks

    class Recorder(SessionHooks):
        name = "recorder"

        def __init__(self):
            self.seen = []

        def connected(self, session):
            self.seen.append((session.connection_id, "connected"))

        def registered(self, session):
            self.seen.append((session.connection_id, "registered", session.nickname))

        def joined(self, session, room):
            self.seen.append((session.connection_id, "joined", room))

        def left(self, session, room, reason):
            self.seen.append((session.connection_id, "left", room, reason))

        def said(self, session, room, text):
            self.seen.append((session.connection_id, "said", room, text))

        def acted(self, session, room, text):
            self.seen.append((session.connection_id, "acted", room, text))

        def nick_changed(self, session, old, new):
            self.seen.append((session.connection_id, "nick_changed", old, new))

        def disconnected(self, session, reason):
            self.seen.append((session.connection_id, "disconnected", str(reason)))

    recorder = Recorder()
"""

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.fixture
def recorder_plugin(
    install: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Put the recorder, and the /seen example, where the plugin scan looks."""
    install(RECORDER)
    seen = EXAMPLES / "chatservice-seen" / "chatservice" / "plugins"
    monkeypatch.setattr(
        chatservice.plugins, "__path__", [*chatservice.plugins.__path__, str(seen)]
    )


def recorded(factory: ChatFactory, connection: FakeConnection | int) -> list[tuple]:
    """What the recorder was told of one connection, in order."""
    if isinstance(connection, FakeConnection):
        connection = connection.protocol.connection_id
    (recorder,) = [p for p in factory.hooks.plugins if p.name == "recorder"]
    return [event[1:] for event in recorder.seen if event[0] == connection]


def test_hook_failure_costs_the_user_nothing(
    install: Callable[[str], str], clock: Clock, logged: list
) -> None:
    """A plugin whose hooks raise: the line is relayed, the user stays, others run."""
    install(
        """
        from chatservice.hooks import SessionHooks

        class Broken(SessionHooks):
            name = "a-broken"

            def registered(self, session):
                raise RuntimeError("registered")

            def said(self, session, room, text):
                raise RuntimeError("said")

        broken = Broken()
        """
    )
    install(RECORDER)
    factory = ChatFactory(Settings(), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter("hello")
    assert bob.lines() == ["<alice> hello"]
    assert not alice.closing
    assert recorded(factory, alice)[-1] == ("said", "#lobby", "hello")
    assert [text for text, _ in failures(logged)] == [
        "hooks plugin a-broken: its registered hook failed",
        "hooks plugin a-broken: its said hook failed",
    ]


def test_said_as_relayed(install: Callable[[str], str], clock: Clock) -> None:
    """Said gets the text the filters made, and nothing for a refused line."""
    install(
        """
        from twisted.plugin import IPlugin
        from zope.interface import implementer
        from chatservice.errors import ChatError
        from chatservice.interfaces import IMessageFilter

        @implementer(IPlugin, IMessageFilter)
        class Cats:
            name = "cats"

            def filter(self, session, room, text):
                if "secret" in text:
                    raise ChatError("no secrets")
                return text.replace("cat", "dog\x1b[31m")

        cats = Cats()
        """
    )
    install(RECORDER)
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    alice.enter("my cat", "a secret", "/me pets the cat")
    assert recorded(factory, alice)[-2:] == [
        ("said", "#lobby", "my dog"),
        ("acted", "#lobby", "pets the dog"),
    ]


def test_resume_is_a_new_session(recorder_plugin: None, clock: Clock) -> None:
    """A dropped connection leaves and disconnects; the one resuming registers."""
    factory = ChatFactory(Settings(resume_grace=60), clock=clock)
    alice = FakeConnection(factory)
    alice.enter("alice", "/join #tea")
    (token,) = re.findall(r"resume token: ([\w-]+)", alice.output().decode())
    alice.drop()
    again = FakeConnection(factory)
    again.enter(f"/resume alice {token}")
    assert recorded(factory, alice)[-3:] == [
        ("left", "#lobby", "joined #tea"),
        ("left", "#tea", "connection lost"),
        ("disconnected", "connection lost"),
    ]
    assert recorded(factory, again) == [
        ("connected",),
        ("registered", "alice"),
        ("joined", "#tea"),
    ]


def test_kicked(recorder_plugin: None, clock: Clock) -> None:
    """A kicked user leaves its room with the kick as the reason."""
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    factory.operators = Operators({"root": hash_password("s3cret")})
    root, bob = register(factory, "root"), register(factory, "bob")
    root.enter("/oper root s3cret", "/kick bob spam")
    bob.drop()
    assert recorded(factory, bob)[-2:] == [
        ("left", "#lobby", "kicked by root: spam"),
        ("disconnected", "kicked by root: spam"),
    ]


@pytest_twisted.ensureDeferred
async def test_each_event_once(chat: Harness, recorder_plugin: None) -> None:
    """Over real sockets, a hooks plugin sees each event of a session once, in order."""
    chat.start()
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    bob_id = chat.server_side("bob").connection_id
    for line in ["hello", "/me waves", "/join #tea", "/nick robert", "/quit lunch"]:
        bob.send(line)
    await wait_until(lambda: bob.disconnected, "bob's quit")
    stranger = await chat.greeted()
    stranger.transport.loseConnection()
    await wait_until(lambda: stranger.disconnected, "the stranger's close")
    await wait_until(
        lambda: (
            recorded(chat.factory, bob_id + 1)[-1:]
            == [("disconnected", "connection lost")]
        ),
        "the stranger's disconnected hook",
    )
    assert recorded(chat.factory, bob_id) == [
        ("connected",),
        ("registered", "bob"),
        ("joined", "#lobby"),
        ("said", "#lobby", "hello"),
        ("acted", "#lobby", "waves"),
        ("joined", "#tea"),
        ("left", "#lobby", "joined #tea"),
        ("nick_changed", "bob", "robert"),
        ("left", "#tea", "quit: lunch"),
        ("disconnected", "quit: lunch"),
    ]
    assert recorded(chat.factory, bob_id + 1) == [
        ("connected",),
        ("disconnected", "connection lost"),
    ]
    alice.send("/seen bob")
    alice.send("/seen robert")
    alice.send("/seen alice")
    await wait_until(
        lambda: alice.lines[-1] == "*** alice is online in #lobby", "/seen's answers"
    )
    assert alice.lines[-3:] == [
        "*** bob was last seen just now, changing nickname to robert",
        "*** robert was last seen just now, leaving #tea (quit: lunch)",
        "*** alice is online in #lobby",
    ]


@pytest_twisted.ensureDeferred
async def test_shutdown_tells_every_session(
    chat: Harness, recorder_plugin: None
) -> None:
    """When the server stops, each session leaves its room and disconnects, once."""
    service = chat.start()
    await chat.user("alice")
    alice_id = chat.server_side("alice").connection_id
    await service.stopService()
    assert recorded(chat.factory, alice_id) == [
        ("connected",),
        ("registered", "alice"),
        ("joined", "#lobby"),
        ("left", "#lobby", "server shutting down"),
        ("disconnected", "server shutting down"),
    ]


@pytest_twisted.ensureDeferred
async def test_frame_sessions_too(chat: Harness, recorder_plugin: None) -> None:
    """A frame user's session calls the same hooks, multi-line text said whole."""
    chat.start(frames=("tcp:0:interface=127.0.0.1",))
    bob = await chat.frame_user("bob")
    (bob_id,) = chat.factory.connections
    bob.say("one\ntwo")
    bob.say("/quit")
    await wait_until(lambda: bob.disconnected, "bob's quit")
    await wait_until(
        lambda: recorded(chat.factory, bob_id)[-1:] == [("disconnected", "quit")],
        "bob's disconnected hook",
    )
    assert recorded(chat.factory, bob_id) == [
        ("connected",),
        ("registered", "bob"),
        ("joined", "#lobby"),
        ("said", "#lobby", "one\ntwo"),
        ("left", "#lobby", "quit"),
        ("disconnected", "quit"),
    ]


def test_irc_sessions_too(recorder_plugin: None, clock: Clock) -> None:
    """An IRC user's session calls the same hooks: a JOIN adds, a PART leaves one."""
    from chatservice.frontends.irc import irc_front_end

    factory = ChatFactory(Settings(), clock=clock)
    alice = FakeConnection(factory, front_end=irc_front_end)
    alice.enter(
        "NICK alice",
        "USER a 0 * :A",
        "JOIN #tea,#cake",
        "PRIVMSG #tea :hello",
        "PRIVMSG #cake :\x01ACTION bakes\x01",
        "PART #tea :full",
        "NICK alicia",
        "QUIT :bye",
    )
    alice.drop()
    assert recorded(factory, alice) == [
        ("connected",),
        ("registered", "alice"),
        ("joined", "#lobby"),
        ("joined", "#tea"),
        ("joined", "#cake"),
        ("said", "#tea", "hello"),
        ("acted", "#cake", "bakes"),
        ("left", "#tea", "full"),
        ("nick_changed", "alice", "alicia"),
        ("left", "#lobby", "quit: bye"),
        ("left", "#cake", "quit: bye"),
        ("disconnected", "quit: bye"),
    ]
