"""Close reasons: every way out is one kind, told, logged and counted alike."""

import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from twisted.internet.task import Clock

from chatservice.bans import parse_target
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.reasons import CloseKind, CloseReason
from chatservice.testing import FakeConnection, register

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("reason", "text"),
    [
        (CloseReason.quit(), "quit"),
        (CloseReason.quit("lunch"), "quit: lunch"),
        (CloseReason.quit("a: b by c"), "quit: a: b by c"),
        (CloseReason.kicked("root"), "kicked by root"),
        (CloseReason.kicked("root", "spam"), "kicked by root: spam"),
        (CloseReason.banned(), "banned"),
        (CloseReason.banned("spam"), "banned: spam"),
        (CloseReason(CloseKind.CONNECTION_LOST), "connection lost"),
        (
            CloseReason(CloseKind.NICKNAME_TAKEN, detail="reconnect"),
            "nickname taken elsewhere: reconnect",
        ),
    ],
)
def test_text(reason: CloseReason, text: str) -> None:
    """A reason reads as its kind, then who did it, then the detail."""
    assert str(reason) == text


def test_only_lost_connections_are_held() -> None:
    """Only connection loss, idle and heartbeat timeouts, the send queue keep one."""
    assert {kind for kind in CloseKind if CloseReason(kind).holdable} == {
        CloseKind.CONNECTION_LOST,
        CloseKind.IDLE_TIMEOUT,
        CloseKind.HEARTBEAT_TIMEOUT,
        CloseKind.SEND_QUEUE,
    }


@pytest.fixture
def server(clock: Clock) -> ChatFactory:
    """A server that holds no session, times out the idle, has a small queue."""
    settings = replace(Settings(), resume_grace=0, idle_timeout=10, max_sendq=512)
    return ChatFactory(settings, clock=clock, run_in_thread=run_at_once)


def _flood(
    server: ChatFactory, alice: FakeConnection, bob: FakeConnection, clock: Clock
) -> None:
    alice.stop_reading()
    carol = register(server, "carol")
    for _ in range(10):  # the flood burst
        carol.enter("x" * 100)
    clock.advance(0)


#: Each way a registered user (alice, on 127.0.0.2) is made to leave, what
#: she is told last, what bob in her room is told, and the kind counted.
WAYS: list[tuple[str, Callable[..., None], str | None, str, str]] = [
    ("quit", lambda s, a, b, c: a.enter("/quit"), "*** Goodbye.", "quit", "quit"),
    (
        "quit with a message",
        lambda s, a, b, c: a.enter("/quit lunch"),
        "*** Goodbye.",
        "quit: lunch",
        "quit",
    ),
    (
        "connection lost",
        lambda s, a, b, c: a.drop(),
        None,
        "connection lost",
        "connection lost",
    ),
    (
        "idle timeout",
        lambda s, a, b, c: (c.advance(5), b.enter("/ping"), c.advance(5)),
        "*** idle timeout: no input for 10 seconds; disconnecting",
        "idle timeout",
        "idle timeout",
    ),
    (
        "kicked",
        lambda s, a, b, c: s.registry.kick("ALICE", CloseReason.kicked("root", "spam")),
        "*** disconnected: kicked by root: spam",
        "kicked by root: spam",
        "kicked",
    ),
    (
        "banned",
        lambda s, a, b, c: s.ban(parse_target("127.0.0.2"), None, "spam", "root"),
        "*** disconnected: banned: spam",
        "banned: spam",
        "banned",
    ),
    ("send queue", _flood, None, "send queue exceeded", "send queue exceeded"),
]


@pytest.mark.parametrize(
    ("end", "told", "others", "kind"),
    [way[1:] for way in WAYS],
    ids=[way[0] for way in WAYS],
)
def test_every_way_out(
    server: ChatFactory,
    clock: Clock,
    end: Callable[..., None],
    told: str | None,
    others: str,
    kind: str,
) -> None:
    """The user is told, the room hears the reason once, its kind is counted."""
    bob = register(server, "bob")
    alice = register(server, "alice", host="127.0.0.2")
    bob.output()
    end(server, alice, bob, clock)
    if told is not None:
        assert alice.lines()[-1] == told
    assert [line for line in bob.lines() if "alice" in line] == [
        f"*** alice has left ({others})"
    ]
    if not server.stats.closed:  # not dropped already
        alice.drop()
    assert dict(server.stats.closed) == {kind: 1}


@pytest.mark.parametrize(
    ("first", "kind"),
    [
        (b"\x16\x03\x01\x00\xa5", "wrong protocol (TLS on a plain port)"),
        (b"GET / HTTP/1.1\r\n", "wrong protocol (HTTP)"),
    ],
)
def test_wrong_protocol(server: ChatFactory, first: bytes, kind: str) -> None:
    """A TLS or HTTP client is closed, counted by its kind."""
    client = FakeConnection(server)
    client.send(first)
    assert client.closing
    client.drop()
    assert dict(server.stats.closed) == {kind: 1}


def test_registration_timeout(factory: ChatFactory, clock: Clock) -> None:
    """A connection with no nickname is closed, counted, and nobody is told."""
    bob = register(factory, "bob")
    client = FakeConnection(factory)
    clock.advance(30)
    assert client.lines()[-1] == (
        "*** registration timeout: no nickname chosen within 30 seconds; disconnecting"
    )
    client.drop()
    assert bob.lines() == []
    assert dict(factory.stats.closed) == {"registration timeout": 1}


def test_shutdown(server: ChatFactory) -> None:
    """At shutdown every user is told, nobody hears the others leave."""
    bob = register(server, "bob")
    alice = register(server, "alice")
    bob.output()
    server.stop()
    assert alice.lines() == bob.lines() == ["*** server shutting down"]
    alice.drop()
    bob.drop()
    assert dict(server.stats.closed) == {"server shutting down": 2}


def test_resumed_elsewhere(factory: ChatFactory) -> None:
    """A ghost whose session is resumed is counted as resumed elsewhere."""
    ghost = FakeConnection(factory)
    ghost.enter("alice")
    token = re.search(r"resume token: ([\w-]+)", ghost.output().decode()).group(1)
    again = FakeConnection(factory)
    again.enter(f"/resume alice {token}")
    assert ghost.lines()[-1] == (
        "*** disconnected: your session was resumed from another connection"
    )
    ghost.drop()
    assert dict(factory.stats.closed) == {"resumed elsewhere": 1}


def test_operations_lists_every_kind() -> None:
    """docs/operations.md explains exactly the kinds there are."""
    text = (ROOT / "docs/operations.md").read_text(encoding="utf-8")
    section = text.split("### Why a connection closed\n", 1)[1]
    body = section.split("|---|---|\n", 1)[1].split("\n\n", 1)[0]
    first_cells = [line.split(" | ")[0] for line in body.splitlines()]
    documented = {
        name for cell in first_cells for name in re.findall(r"`([^`]+)`", cell)
    }
    assert documented == {kind.value for kind in CloseKind}
