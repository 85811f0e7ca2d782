"""Unit tests of resuming a session after a dropped connection."""

import re

import pytest

from twisted.internet.task import Clock

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.operators import Operators, hash_password
from chatservice.testing import FakeConnection, register

TOKEN = re.compile(r"\*\*\* resume token: ([\w-]+) \(if your connection drops")


def token_of(lines: list[str]) -> str:
    """The token in the last resume-token line of C{lines}."""
    tokens = [m.group(1) for m in map(TOKEN.match, lines) if m]
    assert tokens, lines
    return tokens[-1]


def join(factory: ChatFactory, nickname: str) -> tuple[FakeConnection, str]:
    """Register C{nickname}; return the connection and its token."""
    connection = FakeConnection(factory)
    connection.output()
    connection.enter(nickname)
    return connection, token_of(connection.lines())


def resume(factory: ChatFactory, nickname: str, token: str) -> FakeConnection:
    """Connect again and resume; greeting discarded."""
    connection = FakeConnection(factory)
    connection.output()
    connection.enter(f"/resume {nickname} {token}")
    return connection


def test_token_is_128_random_bits(factory: ChatFactory, clock: Clock) -> None:
    """Each user gets a different URL-safe token of at least 128 bits."""
    tokens = set()
    for n in range(20):
        tokens.add(join(factory, f"user{n}")[1])
        clock.advance(1)
    assert len(tokens) == 20
    for token in tokens:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", token)


def test_resume_with_missed_lines(factory: ChatFactory, clock: Clock) -> None:
    """A dropped user resumes, sees what was said meanwhile, and the room is told."""
    alice, token = join(factory, "alice")
    bob = register(factory, "bob")
    alice.output()
    alice.drop()
    assert bob.lines() == ["*** alice lost connection"]
    bob.enter("are you there?", "/msg alice call me")
    clock.advance(30)
    again = resume(factory, "alice", token)
    lines = again.lines()
    assert lines[:-1] == [
        "*** Resumed as alice in #lobby; 2 missed lines follow:",
        "<bob> are you there?",
        "*bob* call me",
        "*** End of missed lines.",
    ]
    assert token_of(lines) != token
    assert bob.lines()[-1] == "*** alice is back"
    again.enter("back now")
    assert bob.lines() == ["<alice> back now"]
    clock.advance(60)
    assert bob.lines() == []  # the grace timer was cancelled


def test_resume_keeps_room(factory: ChatFactory) -> None:
    """The session comes back in the room it was in."""
    alice, token = join(factory, "alice")
    bob = register(factory, "bob")
    alice.enter("/join #side")
    bob.enter("/join #side")
    alice.drop()
    bob.enter("here")
    again = resume(factory, "alice", token)
    assert again.lines()[:3] == [
        "*** Resumed as alice in #side; 1 missed line follows:",
        "<bob> here",
        "*** End of missed lines.",
    ]
    bob.output()
    again.enter("and back")
    assert bob.lines() == ["<alice> and back"]


def test_buffer_bounded(clock: Clock) -> None:
    """Beyond --resume-buffer lines the oldest are dropped, and counted."""
    factory = ChatFactory(Settings(resume_buffer=3), clock=clock)
    alice, token = join(factory, "alice")
    bob = register(factory, "bob")
    alice.drop()
    bob.enter(*[f"line {n}" for n in range(5)])
    assert resume(factory, "alice", token).lines()[:-1] == [
        "*** Resumed as alice in #lobby; 3 missed lines follow:",
        "*** 2 older missed lines were dropped.",
        "<bob> line 2",
        "<bob> line 3",
        "<bob> line 4",
        "*** End of missed lines.",
    ]


def test_one_missed_line_one_dropped(clock: Clock) -> None:
    """One missed line "follows" and one dropped line "was dropped"."""
    factory = ChatFactory(Settings(resume_buffer=1), clock=clock)
    alice, token = join(factory, "alice")
    bob = register(factory, "bob")
    alice.drop()
    bob.enter("line 0", "line 1")
    assert resume(factory, "alice", token).lines()[:-1] == [
        "*** Resumed as alice in #lobby; 1 missed line follows:",
        "*** 1 older missed line was dropped.",
        "<bob> line 1",
        "*** End of missed lines.",
    ]


def test_grace_expires(factory: ChatFactory, clock: Clock) -> None:
    """After --resume-grace the user leaves as usual, and the token is void."""
    alice, token = join(factory, "alice")
    bob = register(factory, "bob")
    alice.drop()
    bob.output()
    clock.advance(59)
    carol = FakeConnection(factory)
    carol.enter("alice")
    assert "!!! the nickname alice is taken; choose another one" in carol.lines()
    clock.advance(1)
    assert bob.lines() == ["*** alice has left (connection lost)"]
    assert resume(factory, "alice", token).lines() == [
        "!!! resume failed: unknown nickname or wrong token"
    ]
    register(factory, "alice")


@pytest.mark.parametrize("attempt", ["/resume alice wrongtoken", "/resume nobody x"])
def test_wrong_token(factory: ChatFactory, attempt: str) -> None:
    """A wrong token or nickname gets the same error, and the session stays held."""
    alice, token = join(factory, "alice")
    alice.drop()
    intruder = FakeConnection(factory)
    intruder.output()
    intruder.enter(attempt)
    assert intruder.lines() == ["!!! resume failed: unknown nickname or wrong token"]
    assert resume(factory, "alice", token).lines()[0].startswith("*** Resumed")


def test_failures_slowed_down(factory: ChatFactory, clock: Clock) -> None:
    """After three failures from an address, each attempt waits longer."""
    alice, token = join(factory, "alice")
    alice.drop()
    guesser = FakeConnection(factory, "203.0.113.4")
    guesser.output()
    for _ in range(3):
        guesser.enter("/resume alice guess")
        assert guesser.lines() == ["!!! resume failed: unknown nickname or wrong token"]
    guesser.enter(f"/resume alice {token}")
    assert guesser.lines() == []
    clock.advance(1)
    assert guesser.lines()[0].startswith("*** Resumed as alice")


def test_old_token_void_after_resume(factory: ChatFactory) -> None:
    """Each resume gives a new token; the old one no longer works."""
    alice, token = join(factory, "alice")
    alice.drop()
    again = resume(factory, "alice", token)
    new_token = token_of(again.lines())
    again.drop()
    assert resume(factory, "alice", token).lines()[0].startswith("!!! resume failed")
    assert resume(factory, "alice", new_token).lines()[0].startswith("*** Resumed")


def test_ghost_replaced(factory: ChatFactory) -> None:
    """Resuming while the old connection is still open closes the ghost quietly."""
    ghost, token = join(factory, "alice")
    bob = register(factory, "bob")
    ghost.output()
    again = resume(factory, "alice", token)
    assert again.lines()[0] == "*** Resumed as alice in #lobby; 0 missed lines follow:"
    assert ghost.lines() == [
        "*** disconnected: your session was resumed from another connection"
    ]
    assert ghost.closing
    ghost.drop()
    assert bob.lines() == []
    again.enter("hello")
    assert bob.lines() == ["<alice> hello"]


def test_quit_releases_at_once(factory: ChatFactory) -> None:
    """/quit holds nothing: the room hears the leave and the nickname is free."""
    alice, token = join(factory, "alice")
    bob = register(factory, "bob")
    alice.enter("/quit bye")
    alice.drop()
    assert bob.lines() == ["*** alice has left (quit: bye)"]
    assert resume(factory, "alice", token).lines()[0].startswith("!!! resume failed")
    register(factory, "alice")


def test_rename_then_resume(factory: ChatFactory) -> None:
    """A user who changed nickname resumes under the new one."""
    alice, token = join(factory, "alice")
    alice.enter("/nick alicia")
    alice.drop()
    assert resume(factory, "alice", token).lines()[0].startswith("!!! resume failed")
    assert resume(factory, "ALICIA", token).lines()[0] == (
        "*** Resumed as alicia in #lobby; 0 missed lines follow:"
    )


def test_resume_turned_off(clock: Clock) -> None:
    """With --resume-grace 0 a dropped user leaves at once and nobody resumes."""
    factory = ChatFactory(Settings(resume_grace=0), clock=clock)
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("alice")
    assert not any(line.startswith("*** resume token") for line in alice.lines())
    bob = register(factory, "bob")
    alice.drop()
    assert bob.lines() == ["*** alice has left (connection lost)"]
    assert resume(factory, "alice", "x").lines() == [
        "!!! resume is turned off on this server"
    ]


def test_resume_needs_new_connection(factory: ChatFactory) -> None:
    """A registered user cannot /resume."""
    alice, token = join(factory, "alice")
    alice.enter(f"/resume alice {token}")
    assert alice.lines() == [
        "!!! you already have a nickname; /resume is the first line of a new connection"
    ]


def test_kicked_while_away(clock: Clock) -> None:
    """Kicking a held user ends the session at once."""
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    factory.operators = Operators({"root": hash_password("pw", n=2**10)})
    alice, token = join(factory, "alice")
    root = register(factory, "root")
    root.enter("/oper root pw")
    alice.drop()
    root.output()
    root.enter("/kick alice gone too long")
    assert root.lines() == [
        "*** alice has left (kicked by root: gone too long)",
        "*** alice was kicked.",
    ]
    assert resume(factory, "alice", token).lines()[0].startswith("!!! resume failed")


def test_idle_timeout_is_resumable(clock: Clock) -> None:
    """A user disconnected for idleness may resume within the grace period."""
    factory = ChatFactory(Settings(idle_timeout=300), clock=clock)
    alice, token = join(factory, "alice")
    clock.advance(300)
    assert alice.closing
    alice.drop()
    assert resume(factory, "alice", token).lines()[0].startswith("*** Resumed")


def test_shutdown_ends_held_sessions(factory: ChatFactory, clock: Clock) -> None:
    """Stopping the server ends held sessions and leaves no timers."""
    alice, _ = join(factory, "alice")
    alice.drop()
    factory.stop()
    assert clock.getDelayedCalls() == []


def test_forget_voids_the_token(factory: ChatFactory) -> None:
    """A plugin that has the server forget a session's token makes it unresumable."""
    alice, token = join(factory, "alice")
    factory.sessions.forget(alice.session)
    alice.drop()
    assert resume(factory, "alice", token).lines() == [
        "!!! resume failed: unknown nickname or wrong token"
    ]
