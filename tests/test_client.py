"""Tests for C{chatservice-client} (L{chatservice.tools.client}).

The unit tests drive the pieces with L{Clock} and L{StringTransport}: a fake
network hands the L{Session} its connections and refusals.  The integration
tests run the console script in a subprocess, as a user does, against a
server in this process (or against nothing, for a refused port); the
subprocess is polled without blocking, so the reactor keeps serving.
"""

import os
import pty
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from certs import ServerCert, make_ca, make_server_cert
from harness import GREETING, Harness, wait_until
from OpenSSL import SSL
from processes import Connection, Server, free_port
from service_identity import VerificationError

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from chatservice import wire
from chatservice.tools.client import (
    Backoff,
    ClientProtocol,
    Heartbeat,
    InputProtocol,
    PlainOutput,
    Session,
    TerminalOutput,
    colour_of,
    main,
    output_for,
    parse_args,
)
from chatservice.wireparse import parse

ROOT = Path(__file__).resolve().parent.parent


def token_line(nickname: str, token: str) -> str:
    """The line that gives C{nickname} the resume token C{token}, without CRLF."""
    return wire.resume_token(nickname, token).decode().removesuffix("\r\n")


# Backoff


def test_backoff_doubles_up_to_the_maximum() -> None:
    """The cap starts at 1 s and doubles up to 60 s; each delay is random * cap."""
    backoff = Backoff(random=lambda: 1.0)
    assert [backoff.next() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_backoff_full_jitter() -> None:
    """Each delay is the random fraction (0 to 1) of its cap."""
    fractions = iter([0.5, 0.0, 0.25, 0.75])
    backoff = Backoff(random=lambda: next(fractions))
    assert [backoff.next() for _ in range(4)] == [0.5, 0.0, 1.0, 6.0]


def test_backoff_reset() -> None:
    """After a reset the delays start again from the initial cap."""
    backoff = Backoff(random=lambda: 1.0)
    for _ in range(5):
        backoff.next()
    backoff.reset()
    assert [backoff.next(), backoff.next()] == [1, 2]


def test_backoff_never_overflows() -> None:
    """Thousands of failures in a row keep the delay at the maximum."""
    backoff = Backoff(random=lambda: 1.0)
    delays = [backoff.next() for _ in range(5000)]
    assert delays[-1] == 60


# Heartbeat


class Beat:
    """A heartbeat on a fake clock, recording its pings and deaths."""

    def __init__(self, interval: float = 30.0, timeout: float = 15.0) -> None:
        self.clock = Clock()
        self.sent: list[bytes] = []
        self.deaths = 0
        self.heartbeat = Heartbeat(
            self.clock, interval, timeout, self.sent.append, self._dead
        )
        self.heartbeat.start()

    def _dead(self) -> None:
        self.deaths += 1


def test_heartbeat_pings_after_the_interval() -> None:
    """After 30 quiet seconds, and not before, it sends /ping hb-1."""
    beat = Beat()
    beat.clock.advance(29.9)
    assert beat.sent == []
    beat.clock.advance(0.1)
    assert beat.sent == [b"/ping hb-1"]


def test_heartbeat_dead_after_the_timeout() -> None:
    """No line within 15 s of the ping: the link is dead, once."""
    beat = Beat()
    beat.clock.advance(30)
    beat.clock.advance(14.9)
    assert beat.deaths == 0
    beat.clock.advance(0.1)
    assert beat.deaths == 1
    beat.clock.advance(100)
    assert (beat.deaths, beat.sent) == (1, [b"/ping hb-1"])


def test_heartbeat_any_line_resets_the_interval() -> None:
    """A line from the server, of any kind, and one sent start the interval again."""
    beat = Beat()
    beat.clock.advance(20)
    assert beat.heartbeat.received(parse("<bob> hi")) is False
    beat.heartbeat.sent()
    beat.clock.advance(20)
    assert beat.sent == []
    beat.clock.advance(10)
    assert beat.sent == [b"/ping hb-1"]


def test_heartbeat_pings_when_the_client_is_silent() -> None:
    """The server talking every 10 s does not stop a ping after 30 s of the client's silence."""
    beat = Beat()
    for _ in range(3):
        beat.clock.advance(10)
        beat.heartbeat.received(parse("<bob> chatter"))
    assert beat.sent == [b"/ping hb-1"]


def test_heartbeat_pings_when_the_server_is_quiet() -> None:
    """The client sending every 10 s does not stop a ping after 30 s of the server's silence."""
    beat = Beat()
    for _ in range(3):
        beat.clock.advance(10)
        beat.heartbeat.sent()
    assert beat.sent == [b"/ping hb-1"]


def test_heartbeat_one_ping_at_a_time() -> None:
    """With the timeout above the interval, no second ping goes while one waits for its answer."""
    beat = Beat(interval=10, timeout=25)
    beat.clock.advance(10)
    beat.clock.advance(24.9)
    assert (beat.sent, beat.deaths) == ([b"/ping hb-1"], 0)
    beat.clock.advance(0.1)
    assert (beat.sent, beat.deaths) == ([b"/ping hb-1"], 1)
    assert beat.clock.getDelayedCalls() == []


def test_heartbeat_any_line_proves_the_link_alive() -> None:
    """A line after the ping, even not its PONG, cancels the deadline."""
    beat = Beat()
    beat.clock.advance(30)
    beat.heartbeat.received(parse("*** bob has joined #lobby"))
    beat.clock.advance(29)
    assert beat.deaths == 0
    beat.clock.advance(1)
    assert beat.sent == [b"/ping hb-1", b"/ping hb-2"]


@pytest.mark.parametrize(
    ("line", "hidden"),
    [
        ("*** PONG hb-1", True),
        ("*** PONG hb-2", False),  # never sent
        ("*** PONG hb-1x", False),
        ("*** PONG", False),
        ("*** PONG 1700000000", False),
        ("<bob> *** PONG hb-1", False),
    ],
)
def test_heartbeat_hides_only_its_own_pongs(line: str, hidden: bool) -> None:
    """Only the answer to a ping it sent is recognised as its own."""
    beat = Beat()
    beat.clock.advance(30)
    assert beat.heartbeat.received(parse(line)) is hidden


def test_heartbeat_pong_recognised_once() -> None:
    """A second identical PONG (the user's own /ping hb-1) is shown."""
    beat = Beat()
    beat.clock.advance(30)
    assert beat.heartbeat.received(parse("*** PONG hb-1")) is True
    assert beat.heartbeat.received(parse("*** PONG hb-1")) is False


def test_heartbeat_stop_leaves_no_timer() -> None:
    """Stopped, before or after a ping, it leaves nothing on the clock."""
    beat = Beat()
    beat.heartbeat.stop()
    assert beat.clock.getDelayedCalls() == []
    beat.heartbeat.start()
    beat.clock.advance(30)
    beat.heartbeat.stop()
    assert beat.clock.getDelayedCalls() == []
    beat.heartbeat.received(parse("*** PONG hb-1"))
    assert beat.clock.getDelayedCalls() == []


# Session


class Network:
    """A fake endpoint: each connection attempt waits for the test's answer."""

    def __init__(self) -> None:
        self.attempts: list[tuple[IProtocolFactory, Deferred]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred:
        attempt: Deferred = Deferred()
        self.attempts.append((factory, attempt))
        return attempt

    def accept(self) -> tuple[ClientProtocol, StringTransport]:
        """Let the last attempt connect."""
        factory, attempt = self.attempts[-1]
        protocol = factory.buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        attempt.callback(protocol)
        return protocol, transport  # type: ignore[return-value]

    def refuse(self, error: Exception) -> None:
        """Make the last attempt fail with C{error}."""
        self.attempts[-1][1].errback(Failure(error))


def result_of(d: Deferred) -> object:
    """The result C{d} already has."""
    results: list[object] = []
    d.addBoth(results.append)
    assert results, "the Deferred has no result yet"
    return results[0]


class Rig:
    """A L{Session} on a fake clock and network, recording what everyone sees."""

    def __init__(self, nickname: str | None = "alice", **options: object) -> None:
        self.clock = Clock()
        self.network = Network()
        self.written: list[bytes] = []
        self.statuses: list[str] = []
        self.session = Session(
            self.clock,
            self.network.connect,
            "chat.example:8000",
            PlainOutput(self.written.append),
            self.statuses.append,
            nickname=nickname,
            backoff=Backoff(random=lambda: 0.5),
            **options,  # type: ignore[arg-type]
        )
        self.session.start()

    def accept(self) -> StringTransport:
        """Let the pending attempt connect; the new transport."""
        self.protocol, self.transport = self.network.accept()
        return self.transport

    def server(self, *lines: str) -> None:
        """The server sends C{lines}, CRLF-terminated."""
        for line in lines:
            self.protocol.dataReceived(line.encode("utf-8") + b"\r\n")

    def sent(self) -> list[str]:
        """The lines sent to the server since the last call."""
        data = self.transport.value().decode("utf-8")
        self.transport.clear()
        return data.split("\n")[:-1]

    def shown(self) -> list[str]:
        """The lines written to standard output since the last call."""
        data = b"".join(self.written).decode("utf-8")
        self.written.clear()
        return data.split("\n")[:-1]

    def drop(self, error: Exception | None = None) -> None:
        """The connection ends with C{error} (by default a reset)."""
        self.protocol.connectionLost(Failure(error or ConnectionLost()))

    def register(self, token: str = "T0") -> None:
        """Connect and be welcomed as alice, with a resume token."""
        self.accept()
        self.server(
            *GREETING,
            "*** Welcome, alice! Online (1): alice",
            "*** Type /help for the commands.",
            token_line("alice", token),
        )

    def reconnect(self, delay: float = 0.5, greet: bool = True) -> StringTransport:
        """Wait out the backoff delay, let the new attempt connect, and greet it."""
        attempts = len(self.network.attempts)
        self.clock.advance(delay)
        assert len(self.network.attempts) == attempts + 1
        transport = self.accept()
        if greet:
            self.server(*GREETING)
        return transport


def test_nick_first_then_typed_lines() -> None:
    """With --nick, the nickname is the first line, then what was typed, in order."""
    rig = Rig()
    rig.session.user_line(b"hello")
    rig.session.user_line(b"/me waves")
    rig.accept()
    rig.server(*GREETING)
    assert rig.sent() == ["alice", "hello", "/me waves"]
    rig.session.user_line(b"again")
    assert rig.sent() == ["again"]


def test_nothing_sent_before_the_greeting() -> None:
    """With --nick, nothing goes to the server before its first line."""
    rig = Rig()
    rig.session.user_line(b"hello")
    rig.accept()
    assert rig.sent() == []
    rig.server(GREETING[0])
    assert rig.sent() == ["alice", "hello"]


def test_abandoned_attempt_never_carried_the_token() -> None:
    """A reconnection that times out before the server's first line has not sent the token."""
    rig = Rig(connect_timeout=2)
    rig.register("tok-1")
    rig.sent()
    rig.drop()
    transport = rig.reconnect(greet=False)
    rig.clock.advance(2)
    assert transport.disconnected
    assert rig.sent() == []


def test_resume_waits_for_the_greeting() -> None:
    """On a reconnection, /resume is sent after the server's first line, the greeting hidden."""
    rig = Rig()
    rig.register("tok-1")
    rig.shown()
    rig.drop()
    rig.reconnect(greet=False)
    assert rig.sent() == []
    rig.server(*GREETING)
    assert rig.sent() == ["/resume alice tok-1"]
    assert rig.shown() == []


def test_without_nick_the_user_types_it() -> None:
    """Without --nick, nothing is sent until the user types."""
    rig = Rig(nickname=None)
    rig.accept()
    rig.server(*GREETING)
    assert rig.sent() == []
    rig.session.user_line(b"alice")
    assert rig.sent() == ["alice"]


def test_resume_with_token_after_a_lost_link() -> None:
    """A lost link is reported; after the backoff the new connection resumes."""
    rig = Rig()
    rig.register("tok-1")
    rig.sent()
    rig.drop()
    assert rig.statuses == [
        "*** connection lost (connection reset)",
        "*** reconnecting in 0.5 s...",
    ]
    rig.reconnect(0.5)
    assert rig.sent() == ["/resume alice tok-1"]


def test_latest_token_and_nickname_used() -> None:
    """Each resume uses the last token given and the nickname after a rename."""
    rig = Rig()
    rig.register("tok-1")
    rig.server(
        "*** bob is now known as carol",
        "*** alice is now known as Alicia",
        token_line("Alicia", "tok-2"),
    )
    rig.drop()
    rig.reconnect()
    assert rig.sent() == ["/resume Alicia tok-2"]
    rig.server(
        "*** Resumed as Alicia in #lobby; 0 missed lines follow:",
        "*** End of missed lines.",
        token_line("Alicia", "tok-3"),
    )
    rig.drop()
    rig.reconnect()
    assert rig.sent() == ["/resume Alicia tok-3"]


def test_resume_shows_the_missed_lines_not_the_token() -> None:
    """The user sees the missed lines; not the token, nor the greeting again."""
    rig = Rig()
    rig.register("tok-1")
    assert rig.shown() == [
        *GREETING,
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
    ]
    rig.drop()
    rig.reconnect()
    rig.server(
        "*** Resumed as alice in #lobby; 2 missed lines follow:",
        "*** 3 older missed lines were dropped.",
        "<bob> are you there?",
        "*bob* call me",
        "*** End of missed lines.",
        token_line("alice", "tok-2"),
        "<bob> live again",
    )
    assert rig.shown() == [
        "*** Resumed as alice in #lobby; 2 missed lines follow:",
        "*** 3 older missed lines were dropped.",
        "<bob> are you there?",
        "*bob* call me",
        "*** End of missed lines.",
        "<bob> live again",
    ]


def test_typed_lines_wait_for_the_resume() -> None:
    """What is typed while disconnected or resuming is sent once resumed."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.session.user_line(b"did I miss anything?")
    rig.reconnect()
    rig.session.user_line(b"hello?")
    assert rig.sent() == ["/resume alice T0"]
    rig.server("*** Resumed as alice in #lobby; 0 missed lines follow:")
    assert rig.sent() == ["did I miss anything?", "hello?"]


@pytest.mark.parametrize(
    "refusal",
    [
        "!!! resume failed: unknown nickname or wrong token",
        "!!! resume is turned off on this server",
    ],
)
def test_resume_refused_registers_the_nickname_again(refusal: str) -> None:
    """A refused resume: say so, send the nickname, then what was typed."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.reconnect()
    rig.session.user_line(b"back")
    rig.sent()
    rig.statuses.clear()
    rig.server(refusal)
    assert rig.statuses == [
        "*** the session could not be resumed; lines may have been missed; "
        "registering as alice again"
    ]
    assert rig.sent() == ["alice"]
    rig.server("*** Welcome, alice! Online (1): alice")
    assert rig.sent() == ["back"]
    assert rig.shown()[-2:] == [refusal, "*** Welcome, alice! Online (1): alice"]


def test_resume_to_try_again_keeps_the_token() -> None:
    """A cluster's server that cannot check the token now: the client reconnects later and resumes with the same token."""
    rig = Rig()
    rig.register("tok-1")
    rig.drop()
    transport = rig.reconnect()
    rig.sent()
    rig.statuses.clear()
    rig.server("!!! the other servers did not answer; try again in a moment")
    assert transport.disconnected
    rig.drop(ConnectionAborted())
    assert rig.statuses == [
        "*** cannot resume yet: the other servers did not answer; try again in a moment",
        "*** reconnecting in 1.0 s...",
    ]
    rig.reconnect(1.0)
    assert rig.sent() == ["/resume alice tok-1"]


def test_resume_refused_rejoins_the_room() -> None:
    """Registered again after a refused resume, the client rejoins its room, says so, then sends what was typed."""
    rig = Rig()
    rig.register()
    rig.session.user_line(b"/join #python")
    rig.server("*** You are now in #python. No topic is set.")
    rig.drop()
    rig.reconnect()
    rig.session.user_line(b"back")
    rig.server("!!! resume failed: unknown nickname or wrong token")
    rig.sent()
    rig.statuses.clear()
    rig.server("*** Welcome, alice! Online (1): alice")
    assert rig.statuses == ["*** registered as alice again; rejoining #python"]
    assert rig.sent() == ["/join #python", "back"]
    rig.server("*** You are now in #python. No topic is set.")
    assert rig.session.room == "#python"


def test_resume_refused_in_the_lobby_joins_nothing() -> None:
    """A session that was in #lobby is there again on registration: no /join, no note."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.reconnect()
    rig.server("!!! resume failed: unknown nickname or wrong token")
    rig.sent()
    rig.statuses.clear()
    rig.server("*** Welcome, alice! Online (1): alice")
    assert (rig.statuses, rig.sent()) == ([], [])


def test_resumed_room_is_the_one_rejoined() -> None:
    """The room named by a successful resume is the one rejoined after a later refused one."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.reconnect()
    rig.server(
        "*** Resumed as alice in #ops; 0 missed lines follow:",
        "*** End of missed lines.",
        token_line("alice", "T1"),
    )
    rig.drop()
    rig.reconnect()
    rig.server("!!! resume failed: unknown nickname or wrong token")
    rig.sent()
    rig.server("*** Welcome, alice! Online (1): alice")
    assert rig.sent() == ["/join #ops"]


def test_no_token_rejoins_the_room() -> None:
    """Without a token, the nickname is registered again and the room rejoined."""
    rig = Rig()
    rig.accept()
    rig.server(*GREETING, "*** Welcome, alice! Online (1): alice")
    rig.server("*** You are now in #python. Topic: snakes")
    rig.drop()
    rig.reconnect()
    assert rig.sent() == ["alice"]
    rig.server("*** Welcome, alice! Online (2): alice, bob")
    assert rig.sent() == ["/join #python"]
    assert rig.statuses[-1] == "*** registered as alice again; rejoining #python"


def test_another_nickname_still_rejoins_the_room() -> None:
    """When the nickname was taken meanwhile, the one the user chooses rejoins the room too."""
    rig = Rig()
    rig.register()
    rig.server("*** You are now in #python. No topic is set.")
    rig.drop()
    rig.reconnect()
    rig.server("!!! resume failed: unknown nickname or wrong token")
    rig.server("!!! the nickname alice is taken; choose another one")
    rig.sent()
    rig.session.user_line(b"alice2")
    rig.server("*** Welcome, alice2! Online (2): alice, alice2")
    assert rig.sent() == ["alice2", "/join #python"]
    assert rig.statuses[-1] == "*** registered as alice2 again; rejoining #python"


@pytest.mark.parametrize(
    "error",
    [
        "!!! the nickname alice is taken; choose another one",
        "!!! invalid nickname alice: use a letter first, then letters, digits, _ or -",
        "!!! a nickname is at most 16 characters, and alice has 5",
    ],
)
def test_nickname_taken_meanwhile_drops_typed_lines(error: str) -> None:
    """If the nickname cannot be had, typed lines are dropped, not taken for names."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.reconnect()
    rig.session.user_line(b"back")
    rig.server("!!! resume failed: unknown nickname or wrong token")
    rig.sent()
    rig.statuses.clear()
    rig.server(error)
    assert rig.statuses == [
        "*** could not register as alice again; choose another nickname "
        "(1 typed line(s) were not sent)"
    ]
    assert rig.sent() == []
    rig.session.user_line(b"alice2")
    assert rig.sent() == ["alice2"]


REFUSALS = [
    "!!! the server is full (10000 connections)",
    "!!! too many connections from your address (at most 1)",
    "!!! too many new connections from your address (at most 5 per second); "
    "try again in a moment",
    "!!! the server is shutting down",
]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_refused_connection_keeps_the_token(refusal: str) -> None:
    """A connection refused instead of greeted is retried after the backoff with the same /resume."""
    rig = Rig()
    rig.register("tok-1")
    rig.drop()
    rig.statuses.clear()
    rig.session.user_line(b"back")
    transport = rig.reconnect(greet=False)
    rig.server(refusal)
    assert transport.disconnected
    rig.drop(ConnectionDone())
    assert rig.statuses == [
        f"*** cannot connect to chat.example:8000: {refusal[4:]}",
        "*** reconnecting in 1.0 s...",
    ]
    assert rig.shown()[-1] != refusal
    rig.reconnect(1.0)
    assert rig.sent() == ["/resume alice tok-1"]
    rig.server("*** Resumed as alice in #lobby; 0 missed lines follow:")
    assert rig.sent() == ["back"]


@pytest.mark.parametrize("refusal", REFUSALS)
def test_refused_connection_while_registering_again_is_retried(refusal: str) -> None:
    """Without a token, a refused connection keeps the nickname and is retried."""
    rig = Rig()
    rig.accept()
    rig.server(*GREETING, "*** Welcome, alice! Online (1): alice")  # no token
    rig.drop()
    rig.reconnect()
    assert rig.sent() == ["alice"]
    rig.drop()
    rig.reconnect(1.0, greet=False)
    rig.server(refusal)
    rig.drop(ConnectionDone())
    assert not rig.session.done.called
    rig.reconnect(2.0)
    assert rig.sent() == ["alice"]


def test_banned_while_reconnecting_ends_the_client() -> None:
    """A ban instead of the greeting ends the client with status 1, not a retry."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.statuses.clear()
    rig.reconnect(greet=False)
    rig.server("!!! you are banned from this server")
    rig.drop(ConnectionDone())
    assert rig.shown()[-1] == "!!! you are banned from this server"
    assert rig.statuses == ["chatservice-client: disconnected by the server"]
    assert result_of(rig.session.done) == 1
    assert rig.clock.getDelayedCalls() == []


@pytest.mark.parametrize("state", ["resuming", "registering"])
def test_other_errors_are_not_refusals(state: str) -> None:
    """Other !!! lines while resuming or registering again are shown; the token and nickname stay."""
    rig = Rig()
    rig.register()
    if state == "registering":
        rig.session.token = None
    rig.drop()
    rig.reconnect()
    rig.sent()
    rig.statuses.clear()
    rig.server("!!! that failed because of a server error; it was logged")
    assert rig.statuses == []
    assert rig.sent() == []
    assert rig.shown()[-1] == "!!! that failed because of a server error; it was logged"
    assert (rig.session.nickname, rig.session.state) == ("alice", state)


def test_no_token_registers_the_nickname_again() -> None:
    """A server that gave no token: the nickname is registered again, with a warning."""
    rig = Rig()
    rig.accept()
    rig.server(*GREETING, "*** Welcome, alice! Online (1): alice")
    rig.drop()
    rig.statuses.clear()
    rig.reconnect()
    assert rig.sent() == ["alice"]
    assert rig.statuses == [
        "*** the server gave no resume token; lines may have been missed; "
        "registering as alice again"
    ]


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (ConnectionRefusedError(), "connection refused"),
        (DNSLookupError("chat.example"), "name not resolved"),
        (TimeoutError(), "timed out after 10 s"),
    ],
)
def test_first_connection_fails_with_one_line(error: Exception, why: str) -> None:
    """The first connection failing ends the client: one line, status 1."""
    rig = Rig()
    rig.network.refuse(error)
    assert rig.statuses == [
        f"chatservice-client: cannot connect to chat.example:8000: {why}"
    ]
    assert result_of(rig.session.done) == 1
    assert rig.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (
            SSL.Error([("SSL routines", "", "certificate verify failed")]),
            "certificate not trusted (certificate verify failed)",
        ),
        (
            VerificationError(errors=[]),
            "hostname mismatch (the server's certificate is for another name)",
        ),
        (
            SSL.Error([("SSL routines", "", "wrong version number")]),
            "TLS failed (wrong version number)",
        ),
        (ConnectionDone(), "closed by the server"),
    ],
)
def test_first_connection_closed_before_a_line(error: Exception, why: str) -> None:
    """A TLS failure (after TCP connected, before any line) is the connect error."""
    rig = Rig()
    rig.accept()
    rig.drop(error)
    assert rig.statuses == [
        f"chatservice-client: cannot connect to chat.example:8000: {why}"
    ]
    assert result_of(rig.session.done) == 1


def test_connect_timeout() -> None:
    """No connection within --connect-timeout: the attempt is cancelled, status 1."""
    rig = Rig(connect_timeout=7)
    rig.clock.advance(6.9)
    assert rig.statuses == []
    rig.clock.advance(0.1)
    assert rig.statuses == [
        "chatservice-client: cannot connect to chat.example:8000: timed out after 7 s"
    ]
    assert result_of(rig.session.done) == 1


def test_connect_timeout_covers_the_handshake() -> None:
    """Connected but silent (a stuck TLS handshake) past the timeout: aborted."""
    rig = Rig(connect_timeout=7)
    transport = rig.accept()
    rig.clock.advance(7)
    assert transport.disconnected
    rig.drop(ConnectionAborted())
    assert rig.statuses == [
        "chatservice-client: cannot connect to chat.example:8000: timed out after 7 s"
    ]


def test_reconnect_failures_are_retried_with_backoff() -> None:
    """After registration, failed attempts are shown and retried, ever later."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.clock.advance(0.5)
    rig.network.refuse(ConnectionRefusedError())
    rig.clock.advance(1.0)
    rig.network.refuse(DNSLookupError("chat.example"))
    assert rig.statuses == [
        "*** connection lost (connection reset)",
        "*** reconnecting in 0.5 s...",
        "*** cannot connect to chat.example:8000: connection refused",
        "*** reconnecting in 1.0 s...",
        "*** cannot connect to chat.example:8000: name not resolved",
        "*** reconnecting in 2.0 s...",
    ]
    assert not rig.session.done.called
    rig.reconnect(2.0)
    rig.server("*** Resumed as alice in #lobby; 0 missed lines follow:")
    rig.drop()
    assert rig.statuses[-1] == "*** reconnecting in 0.5 s..."


def test_dead_link_is_dropped_and_resumed() -> None:
    """No PONG in time: the link is aborted, and the session resumed."""
    rig = Rig(ping_interval=30, ping_timeout=15)
    rig.register()
    rig.sent()
    rig.clock.advance(30)
    assert rig.sent() == ["/ping hb-1"]
    rig.clock.advance(15)
    assert rig.transport.disconnected
    rig.drop(ConnectionAborted())
    assert rig.statuses == [
        "*** no answer from the server in 15 s",
        "*** reconnecting in 0.5 s...",
    ]
    rig.reconnect()
    assert rig.sent() == ["/resume alice T0"]


def test_reading_a_busy_room_keeps_the_session_alive() -> None:
    """A user who only reads a busy room pings every --ping-interval seconds, before the server's idle timeout."""
    rig = Rig(ping_interval=30)
    rig.register()
    rig.sent()
    for _ in range(3):
        rig.clock.advance(10)
        rig.server("<bob> chatter")
    assert rig.sent() == ["/ping hb-1"]


def test_typing_postpones_the_ping_in_a_busy_room() -> None:
    """A user who types and reads a busy room sends no ping."""
    rig = Rig(ping_interval=30)
    rig.register()
    for _ in range(6):
        rig.clock.advance(10)
        rig.server("<bob> chatter")
        rig.session.user_line(b"me too")
    assert "/ping hb-1" not in rig.sent()


def test_heartbeat_pong_not_shown() -> None:
    """The answer to the heartbeat's ping is not shown; the user's own is."""
    rig = Rig()
    rig.register()
    rig.shown()
    rig.clock.advance(30)
    rig.server("*** PONG hb-1", "*** PONG mine")
    assert rig.shown() == ["*** PONG mine"]
    assert not rig.transport.disconnected


def test_eof_sends_quit_and_exits_0() -> None:
    """Ctrl-D sends /quit; the server's close ends the client with status 0."""
    rig = Rig()
    rig.register()
    rig.sent()
    rig.session.user_eof()
    assert rig.sent() == ["/quit"]
    rig.server("*** Goodbye.")
    rig.drop(ConnectionDone())
    assert result_of(rig.session.done) == 0
    assert rig.shown()[-1] == "*** Goodbye."
    assert rig.clock.getDelayedCalls() == []


def test_typed_quit_is_sent_as_typed_and_later_lines_are_not() -> None:
    """/quit REASON goes as typed; nothing typed after it is sent."""
    rig = Rig()
    rig.register()
    rig.sent()
    rig.session.user_line(b"/QUIT lunch")
    rig.session.user_line(b"too late")
    rig.session.user_eof()
    assert rig.sent() == ["/QUIT lunch"]


def test_quit_does_not_wait_forever() -> None:
    """A server that does not close after /quit is cut off after 5 s."""
    rig = Rig()
    rig.register()
    rig.session.user_eof()
    rig.clock.advance(5)
    assert rig.transport.disconnected
    rig.drop(ConnectionAborted())
    assert result_of(rig.session.done) == 0


def test_quit_while_waiting_to_reconnect_exits_at_once() -> None:
    """Ctrl-D while waiting to reconnect ends the client now, with status 0."""
    rig = Rig()
    rig.register()
    rig.drop()
    rig.session.user_line(b"unsent")
    rig.session.user_eof()
    assert result_of(rig.session.done) == 0
    assert rig.statuses[-1] == "*** 1 typed line(s) were not sent"
    assert rig.clock.getDelayedCalls() == []


def test_piped_input_before_the_connection() -> None:
    """Input that ends before the connection is made is all sent, then /quit."""
    rig = Rig(nickname=None)
    rig.session.user_line(b"alice")
    rig.session.user_line(b"hello")
    rig.session.user_eof()
    rig.accept()
    rig.server(*GREETING)
    assert rig.sent() == ["alice", "hello", "/quit"]


def test_interrupted_while_connecting() -> None:
    """Stopped (Ctrl-C) during the first connection: status 0 within 5 s, quietly."""
    rig = Rig()
    rig.session.shutdown()
    rig.clock.advance(4.9)
    assert not rig.session.done.called
    rig.clock.advance(0.1)
    assert result_of(rig.session.done) == 0
    assert rig.statuses == []
    assert rig.clock.getDelayedCalls() == []


def test_interrupted_while_connected() -> None:
    """Stopped (Ctrl-C) while connected: /quit, then the server's close."""
    rig = Rig()
    rig.register()
    rig.sent()
    rig.session.shutdown()
    assert rig.sent() == ["/quit"]
    rig.drop(ConnectionDone())
    assert result_of(rig.session.done) == 0
    assert rig.clock.getDelayedCalls() == []


@pytest.mark.parametrize(
    "final",
    [
        "*** disconnected: kicked by bob",
        "*** disconnected: banned: flooding",
        "*** disconnected: your session was resumed from another connection",
    ],
)
def test_no_reconnect_after_the_server_ends_the_session(final: str) -> None:
    """Kicked, banned or taken over: no reconnection, status 1."""
    rig = Rig()
    rig.register()
    rig.server(final)
    rig.drop(ConnectionDone())
    assert rig.statuses == ["chatservice-client: disconnected by the server"]
    assert result_of(rig.session.done) == 1
    assert rig.clock.getDelayedCalls() == []


def test_closed_before_registration_is_not_retried() -> None:
    """Closed after the greeting, before a nickname: nothing to resume, status 1."""
    rig = Rig(nickname=None)
    rig.accept()
    rig.server("!!! the server is full (10000 connections)")
    rig.drop(ConnectionDone())
    assert rig.statuses == [
        "chatservice-client: connection lost (closed by the server)"
    ]
    assert result_of(rig.session.done) == 1


# Output


def test_plain_output_is_the_server_lines_unchanged() -> None:
    """Not a terminal: every byte of the line as received, ended by LF."""
    written: list[bytes] = []
    output = PlainOutput(written.append)
    for raw in [b"<alice> caf\xc3\xa9 \xff", b"* bob waves", b"\x1b[31mx"]:
        output.line(raw)
    assert b"".join(written) == b"<alice> caf\xc3\xa9 \xff\n* bob waves\n\x1b[31mx\n"


def _coloured(nick: str) -> str:
    return f"\x1b[{colour_of(nick)}m{nick}\x1b[0m"


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("<alice> hello", f"<{_coloured('alice')}> hello"),
        ("* bob waves", f"* {_coloured('bob')} waves"),
        ("*carol* psst", f"*{_coloured('carol')}* psst"),
        ("-> *bob* psst", f"-> *{_coloured('bob')}* psst"),
        ("[13:07] <alice> hi", f"[13:07] <{_coloured('alice')}> hi"),
        ("[13:07] * alice waves", f"[13:07] * {_coloured('alice')} waves"),
        ("*** bob has joined #lobby", "*** bob has joined #lobby"),
        ("!!! usage: /msg NICK TEXT", "!!! usage: /msg NICK TEXT"),
        ("<alice> <bob> quoted", f"<{_coloured('alice')}> <bob> quoted"),
    ],
)
def test_terminal_output_colours_nicknames(line: str, expected: str) -> None:
    """At a terminal, the speaker's nickname is coloured, nothing else."""
    written: list[bytes] = []
    TerminalOutput(written.append).line(line.encode("utf-8"))
    assert b"".join(written) == expected.encode("utf-8") + b"\n"


def test_terminal_output_removes_control_characters() -> None:
    """At a terminal, escapes and other controls from the server are removed."""
    written: list[bytes] = []
    TerminalOutput(written.append).line(b"<alice> \x1b[2Jhi\x07\xc2\x9b\tthere\xff")
    assert b"".join(written) == (
        f"<{_coloured('alice')}> [2Jhi\tthere\ufffd\n".encode()
    )


def test_terminal_output_without_colour() -> None:
    """At a terminal with NO_COLOR, nicknames are not coloured but controls are still removed."""
    written: list[bytes] = []
    TerminalOutput(written.append, colour=False).line(b"<alice> \x1b]0;owned\x07hi")
    assert b"".join(written) == b"<alice> ]0;ownedhi\n"


@pytest.mark.parametrize(
    ("terminal", "environ", "expected"),
    [
        (True, {}, b"<\x1b[%dmeve\x1b[0m> [2Jhi\n" % colour_of("eve")),
        (True, {"NO_COLOR": "1"}, b"<eve> [2Jhi\n"),
        (True, {"NO_COLOR": ""}, b"<\x1b[%dmeve\x1b[0m> [2Jhi\n" % colour_of("eve")),
        (False, {}, b"<eve> \x1b[2Jhi\n"),
        (False, {"NO_COLOR": "1"}, b"<eve> \x1b[2Jhi\n"),
    ],
    ids=[
        "terminal",
        "terminal NO_COLOR",
        "terminal NO_COLOR empty",
        "pipe",
        "pipe NO_COLOR",
    ],
)
def test_output_for(terminal: bool, environ: dict[str, str], expected: bytes) -> None:
    """NO_COLOR turns off colours only: at a terminal controls are always removed; lines are raw only in a pipe."""
    written: list[bytes] = []
    output_for(written.append, terminal, environ).line(b"<eve> \x1b[2Jhi")
    assert b"".join(written) == expected


def test_nickname_colour_is_stable_and_ignores_case() -> None:
    """A nickname has one colour, whatever its case; not every nick the same."""
    assert colour_of("Alice") == colour_of("alice") == colour_of("ALICE")
    assert len({colour_of(f"user{n}") for n in range(50)}) > 6


# Framing


class Recorder:
    """Stands in for a L{Session}: records what the protocols hand it."""

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.typed: list[bytes] = []
        self.statuses: list[str] = []
        self.eofs = 0

    def connection_made(self, protocol: object) -> None:
        pass

    def line_received(self, line: bytes) -> None:
        self.lines.append(line)

    def user_line(self, line: bytes) -> None:
        self.typed.append(line)

    def user_eof(self) -> None:
        self.eofs += 1

    def status(self, line: str) -> None:
        self.statuses.append(line)


STREAM = b"*** one\r\n<bob> two\n\r\n*** three\r\n"


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, len(STREAM)])
def test_server_lines_in_any_chunking(size: int) -> None:
    """Server lines are the same however the bytes are split; CR is removed."""
    recorder = Recorder()
    protocol = ClientProtocol(recorder)  # type: ignore[arg-type]
    protocol.makeConnection(StringTransport())
    for i in range(0, len(STREAM), size):
        protocol.dataReceived(STREAM[i : i + size])
    assert recorder.lines == [b"*** one", b"<bob> two", b"", b"*** three"]


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8, len(STREAM)])
def test_typed_lines_in_any_chunking(size: int) -> None:
    """Typed lines are the same however they arrive; CR is removed."""
    recorder = Recorder()
    user = InputProtocol(recorder)  # type: ignore[arg-type]
    for i in range(0, len(STREAM), size):
        user.dataReceived(STREAM[i : i + size])
    assert recorder.typed == [b"*** one", b"<bob> two", b"", b"*** three"]


def test_last_typed_line_without_newline_then_eof() -> None:
    """At the end of the input, a last line without LF is sent, then /quit."""
    recorder = Recorder()
    user = InputProtocol(recorder)  # type: ignore[arg-type]
    user.dataReceived(b"hello\nbye")
    user.readConnectionLost()
    assert (recorder.typed, recorder.eofs) == ([b"hello", b"bye"], 1)


def test_overlong_typed_line_is_dropped() -> None:
    """A typed line over the limit is dropped with one status line; the next is kept."""
    recorder = Recorder()
    user = InputProtocol(recorder)  # type: ignore[arg-type]
    user.MAX_LENGTH = 10
    user.dataReceived(b"x" * 8)
    user.dataReceived(b"x" * 8)
    user.dataReceived(b"x" * 100 + b"\nok\n" + b"y" * 11 + b"\nfine")
    user.readConnectionLost()
    assert recorder.typed == [b"ok", b"fine"]
    assert (
        recorder.statuses
        == ["*** a typed line was longer than 10 bytes; it was not sent"] * 2
    )


# The command line


@pytest.mark.parametrize(
    ("argv", "host", "port"),
    [
        (["chat.example"], "chat.example", 8000),
        (["chat.example:9000"], "chat.example", 9000),
        (["--tls", "chat.example"], "chat.example", 6697),
        (["[::1]:9000"], "::1", 9000),
        (["[::1]"], "::1", 8000),
        (["::1"], "::1", 8000),
    ],
)
def test_address_and_default_ports(argv: list[str], host: str, port: int) -> None:
    """HOST[:PORT]: 8000 by default, 6697 with --tls; IPv6 in brackets."""
    options = parse_args(argv)
    assert (options.host, options.port) == (host, port)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        ([], "the following arguments are required: HOST[:PORT]"),
        (["h:0"], "invalid HOST[:PORT] 'h:0': the port must be 1 to 65535, not 0"),
        (["h:x"], "invalid HOST[:PORT] 'h:x': the port must be a number, not 'x'"),
        ([":80"], "invalid HOST[:PORT] ':80': no host given"),
        (["[::1"], "invalid HOST[:PORT] '[::1': use [IPV6]:PORT"),
        (["--cafile", "ca.pem", "h"], "--cafile needs --tls"),
        (["--insecure", "h"], "--insecure needs --tls"),
        (
            ["--tls", "--insecure", "--cafile", "ca.pem", "h"],
            "--insecure and --cafile contradict each other",
        ),
        (
            ["--nick", "1abc", "h"],
            "argument --nick: invalid nickname '1abc': use a letter first, "
            "then letters, digits, _ or -",
        ),
        (
            ["--ping-timeout", "0", "h"],
            "argument --ping-timeout: must be more than 0, not '0'",
        ),
        (
            ["--connect-timeout", "soon", "h"],
            "argument --connect-timeout: not a number: 'soon'",
        ),
    ],
)
def test_command_line_errors(
    argv: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mistake on the command line: usage, one error line, status 2."""
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    assert (
        capsys.readouterr().err.splitlines()[-1]
        == f"chatservice-client: error: {error}"
    )


def test_unreadable_cafile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A --cafile that cannot be read: one line, status 2."""
    missing = tmp_path / "missing.pem"
    assert main(["--tls", "--cafile", str(missing), "h"]) == 2
    assert capsys.readouterr().err == (
        f"chatservice-client: cannot read --cafile {missing}: "
        "No such file or directory\n"
    )


def test_cafile_without_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --cafile with no PEM certificate in it: one line, status 2."""
    empty = tmp_path / "empty.pem"
    empty.write_text("nothing here\n")
    assert main(["--tls", "--cafile", str(empty), "h"]) == 2
    assert capsys.readouterr().err == (
        f"chatservice-client: --cafile {empty} holds no PEM certificate\n"
    )


def test_console_script_declared() -> None:
    """pyproject.toml installs chatservice-client."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    assert scripts["chatservice-client"] == "chatservice.tools.client:main"


# Integration: the console script in a subprocess.


def client_command(*args: str) -> list[str]:
    """Run this checkout's client module with this test's interpreter."""
    return [sys.executable, "-m", "chatservice.tools.client", *args]


def client_env() -> dict[str, str]:
    """Import chatservice from this checkout, whatever is installed."""
    return {**os.environ, "PYTHONPATH": str(ROOT), "NO_COLOR": ""}


def test_refused_port() -> None:
    """Nothing listens: one line on stderr, nothing on stdout, status 1."""
    port = free_port()
    result = subprocess.run(
        client_command(f"127.0.0.1:{port}"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
        env=client_env(),
    )
    assert (result.returncode, result.stdout, result.stderr.decode()) == (
        1,
        b"",
        f"chatservice-client: cannot connect to 127.0.0.1:{port}: connection refused\n",
    )


class ClientProcess:
    """The client in a subprocess, read without blocking the test's reactor."""

    def __init__(self, *args: str) -> None:
        self.process = subprocess.Popen(
            client_command(*args),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=client_env(),
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._out = bytearray()
        self._err = bytearray()
        for pipe in (self.process.stdout, self.process.stderr):
            os.set_blocking(pipe.fileno(), False)

    def _read(self) -> None:
        for pipe, buffer in (
            (self.process.stdout, self._out),
            (self.process.stderr, self._err),
        ):
            assert pipe is not None
            while True:
                try:
                    data = os.read(pipe.fileno(), 65536)
                except BlockingIOError:
                    break
                if not data:
                    break
                buffer += data

    @property
    def stdout(self) -> list[str]:
        """The complete lines written to standard output so far."""
        self._read()
        return self._out.decode("utf-8").split("\n")[:-1]

    @property
    def stderr(self) -> list[str]:
        """The complete lines written to standard error so far."""
        self._read()
        return self._err.decode("utf-8").split("\n")[:-1]

    def type(self, line: str) -> None:
        """Type one line."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode("utf-8") + b"\n")
        self.process.stdin.flush()

    def eof(self) -> None:
        """Press Ctrl-D: close standard input."""
        assert self.process.stdin is not None
        self.process.stdin.close()

    async def exit_status(self) -> int:
        """Wait (the reactor running) for the process to end."""
        await wait_until(lambda: self.process.poll() is not None, "the client's exit")
        self._read()
        return self.process.returncode

    def kill(self) -> None:
        """Make sure the process is gone, its pipes closed."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        for pipe in (self.process.stdin, self.process.stdout, self.process.stderr):
            if pipe is not None and not pipe.closed:
                pipe.close()


@pytest.fixture
def processes() -> Iterator[list[ClientProcess]]:
    """Client processes to kill after the test, whatever happened."""
    started: list[ClientProcess] = []
    try:
        yield started
    finally:
        for process in started:
            process.kill()


@pytest_twisted.ensureDeferred
async def test_cut_off_client_resumes_with_nothing_missed(
    chat: Harness, processes: list[ClientProcess]
) -> None:
    """Cut off by the server, the client reconnects, resumes, and misses nothing."""
    service = chat.start(resume_grace=60)
    client = ClientProcess("--nick", "alice", f"127.0.0.1:{chat.port}")
    processes.append(client)
    await wait_until(
        lambda: "*** Type /help for the commands." in client.stdout, "alice's welcome"
    )
    bob = await chat.user("bob")
    await wait_until(
        lambda: "*** bob has joined #lobby" in client.stdout, "bob's arrival"
    )
    # Cut alice off, and refuse her reconnections until bob has spoken.
    (listening,) = service.ports
    await listening.stopListening()
    alice_side = chat.server_side("alice")
    alice_side.transport.abortConnection()
    mark = len(bob.lines)
    await wait_until(lambda: "*** alice lost connection" in bob.since(mark), "lost")
    for n in range(3):
        bob.send(f"line {n}")
    bob.send("/msg alice call me")
    await wait_until(lambda: "-> *alice* call me" in bob.since(mark), "bob's echo")
    await wait_until(
        lambda: any("connection refused" in line for line in client.stderr),
        "a refused reconnection",
    )
    again = await serverFromString(
        reactor, f"tcp:{chat.port}:interface=127.0.0.1"
    ).listen(chat.factory)
    try:
        await wait_until(
            lambda: "*** End of missed lines." in client.stdout, "the missed lines"
        )
        await wait_until(lambda: "*** alice is back" in bob.lines, "alice's return")
        client.type("thanks")
        await wait_until(lambda: "<alice> thanks" in bob.lines, "alice's line")
        client.eof()
        assert await client.exit_status() == 0
    finally:
        await again.stopListening()

    welcome = client.stdout.index("*** Type /help for the commands.")
    assert client.stdout[welcome + 1 :] == [
        "*** bob has joined #lobby",
        "*** Resumed as alice in #lobby; 4 missed lines follow:",
        "<bob> line 0",
        "<bob> line 1",
        "<bob> line 2",
        "*bob* call me",
        "*** End of missed lines.",
        "*** Goodbye.",
    ]
    stderr = client.stderr
    assert stderr[0] == "*** connection lost (connection reset)"
    assert stderr[1].startswith("*** reconnecting in ")
    assert f"*** cannot connect to 127.0.0.1:{chat.port}: connection refused" in stderr
    assert stderr[-1].startswith("*** reconnecting in ")
    assert "*** alice has left (quit)" in bob.lines


@pytest_twisted.ensureDeferred
async def test_server_restart_registers_again_and_rejoins_the_room(
    twistd: Callable[..., Server],
    connections: Callable[..., Connection],
    processes: list[ClientProcess],
) -> None:
    """The server restarted, the token unknown: the client registers again and rejoins its room, saying so on stderr."""
    port = free_port()
    first = twistd(f"tcp:{port}:interface=127.0.0.1")
    first.wait_for_port(port)
    client = ClientProcess("--nick", "alice", f"127.0.0.1:{port}")
    processes.append(client)
    client.type("/join #python")
    joined = "*** You are now in #python. No topic is set."
    await wait_until(lambda: joined in client.stdout, "alice in #python")
    first.process.terminate()
    first.wait()
    twistd(f"tcp:{port}:interface=127.0.0.1").wait_for_port(port)
    # Reconnection attempts back off (1, 2, 4, 8 s caps) while twistd starts.
    await wait_until(
        lambda: client.stdout.count(joined) == 2, "alice in #python again", timeout=30
    )
    bob = connections(port)
    bob.send("bob")
    bob.send("/who #python")
    while bob.read() != ["*** In #python (1): alice"]:
        pass
    client.eof()
    assert await client.exit_status() == 0

    assert client.stdout[client.stdout.index(joined) :] == [
        joined,
        "*** In #python (1): alice",
        "*** server shutting down",
        "!!! resume failed: unknown nickname or wrong token",
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
        joined,
        "*** In #python (1): alice",
        "*** Goodbye.",
    ]
    stderr = client.stderr
    assert stderr[0] == "*** connection lost (closed by the server)"
    assert stderr[-2:] == [
        "*** the session could not be resumed; lines may have been missed; "
        "registering as alice again",
        "*** registered as alice again; rejoining #python",
    ]


@pytest.fixture
def server_cert(tmp_path: Path) -> ServerCert:
    """A certificate for localhost and 127.0.0.1, signed by a new CA."""
    return make_server_cert(make_ca(tmp_path / "pki"))


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate(
    chat: Harness, server_cert: ServerCert, processes: list[ClientProcess]
) -> None:
    """A certificate from a CA the client does not trust: one line, status 1."""
    chat.start(listen=[server_cert.endpoint()])
    client = ClientProcess("--tls", f"localhost:{chat.port}")
    processes.append(client)
    assert await client.exit_status() == 1
    assert client.stdout == []
    assert client.stderr == [
        f"chatservice-client: cannot connect to localhost:{chat.port}: "
        "certificate not trusted (certificate verify failed)"
    ]


@pytest_twisted.ensureDeferred
async def test_hostname_mismatch(
    chat: Harness, tmp_path: Path, processes: list[ClientProcess]
) -> None:
    """A trusted certificate for another name: one line, status 1."""
    cert = make_server_cert(
        make_ca(tmp_path / "pki"), hostnames=("chat.example",), ip_addresses=()
    )
    chat.start(listen=[cert.endpoint()])
    client = ClientProcess(
        "--tls", "--cafile", str(cert.ca_path), f"localhost:{chat.port}"
    )
    processes.append(client)
    assert await client.exit_status() == 1
    assert client.stderr == [
        f"chatservice-client: cannot connect to localhost:{chat.port}: "
        "hostname mismatch (the server's certificate is for another name)"
    ]


@pytest_twisted.ensureDeferred
async def test_chat_over_verified_tls(
    chat: Harness, server_cert: ServerCert, processes: list[ClientProcess]
) -> None:
    """With --cafile the certificate is trusted: a piped session runs to its /quit."""
    chat.start(listen=[server_cert.endpoint()])
    client = ClientProcess(
        "--tls", "--cafile", str(server_cert.ca_path), f"localhost:{chat.port}"
    )
    processes.append(client)
    for line in ["alice", "/ping over-tls"]:
        client.type(line)
    client.eof()
    assert await client.exit_status() == 0
    assert client.stdout[2:] == [
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
        "*** PONG over-tls",
        "*** Goodbye.",
    ]
    assert client.stderr == []


@pytest_twisted.ensureDeferred
async def test_insecure_warns_and_checks_nothing(
    chat: Harness, server_cert: ServerCert, processes: list[ClientProcess]
) -> None:
    """--insecure connects to an untrusted server, after a warning on stderr."""
    chat.start(listen=[server_cert.endpoint()])
    client = ClientProcess("--tls", "--insecure", f"localhost:{chat.port}")
    processes.append(client)
    client.type("/ping unchecked")
    client.eof()
    assert await client.exit_status() == 0
    assert client.stdout == [*GREETING, "*** PONG unchecked", "*** Goodbye."]
    assert client.stderr == [
        "chatservice-client: warning: --insecure: the server's certificate is "
        "not checked; anyone between you and the server can read and change "
        "this session"
    ]


@pytest_twisted.ensureDeferred
async def test_interrupt_leaves_with_quit(
    chat: Harness, processes: list[ClientProcess]
) -> None:
    """Ctrl-C (SIGINT) sends /quit, waits for the server, and exits with 130."""
    chat.start(resume_grace=60)
    bob = await chat.user("bob")
    client = ClientProcess("--nick", "alice", f"127.0.0.1:{chat.port}")
    processes.append(client)
    await wait_until(
        lambda: "*** Type /help for the commands." in client.stdout, "alice's welcome"
    )
    client.process.send_signal(signal.SIGINT)
    assert await client.exit_status() == 130
    assert client.stdout[-1] == "*** Goodbye."
    assert client.stderr == []
    await wait_until(lambda: "*** alice has left (quit)" in bob.lines, "alice's quit")


class _Hostile(Protocol):
    """A server that greets, sends escape sequences, and closes."""

    def connectionMade(self) -> None:
        self.transport.write(
            b"*** Welcome to chatservice.\r\n\x1b]0;owned\x07\x1b[2J<eve> hi\r\n"
        )
        self.transport.loseConnection()


@pytest.mark.parametrize("no_color", ["", "1"], ids=["colour", "NO_COLOR"])
@pytest_twisted.ensureDeferred
async def test_no_escape_sequence_from_the_server_reaches_a_terminal(
    no_color: str,
) -> None:
    """At a terminal, with or without NO_COLOR, the server's ESC and BEL are removed."""
    port = await serverFromString(reactor, "tcp:0:interface=127.0.0.1").listen(
        Factory.forProtocol(_Hostile)
    )
    master, slave = pty.openpty()
    process = subprocess.Popen(
        client_command(f"127.0.0.1:{port.getHost().port}"),
        stdin=subprocess.PIPE,
        stdout=slave,
        stderr=subprocess.DEVNULL,
        env={**client_env(), "NO_COLOR": no_color},
    )
    os.close(slave)
    os.set_blocking(master, False)
    seen = bytearray()

    def read() -> bool:
        try:
            seen.extend(os.read(master, 65536))
        except (BlockingIOError, OSError):
            pass
        return b"hi" in seen

    try:
        await wait_until(read, "the chat line at the terminal")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        assert process.stdin is not None
        process.stdin.close()
        os.close(master)
        await port.stopListening()
    assert b"\x1b]" not in seen and b"\x1b[2J" not in seen and b"\x07" not in seen
    assert b"eve" in seen
