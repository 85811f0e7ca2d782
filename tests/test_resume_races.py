"""Races between resuming, closing, kicking, banning and stopping (found in review)."""

import re

from twisted.internet.task import Clock

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.operators import Operators, hash_password
from chatservice.testing import FakeConnection, register

TOKEN = re.compile(r"\*\*\* resume token: ([\w-]+) \(if your connection drops")


def token_of(lines):
    tokens = [m.group(1) for m in map(TOKEN.match, lines) if m]
    assert tokens, lines
    return tokens[-1]


def join(factory, nickname, host="127.0.0.1"):
    connection = FakeConnection(factory, host)
    connection.output()
    connection.enter(nickname)
    return connection, token_of(connection.lines())


def make_factory(clock, **settings):
    factory = ChatFactory(Settings(**settings), clock=clock, run_in_thread=run_at_once)
    factory.operators = Operators({"root": hash_password("pw", n=2**10)})
    return factory


def oper(factory, host="192.0.2.1"):
    root = register(factory, "root", host)
    root.enter("/oper root pw")
    root.output()
    return root


# 1 -------------------------------------------------------------------------
def test_resume_completing_after_new_connection_closed():
    """A /resume whose connection closes while it waits leaves the session held."""
    clock = Clock()
    factory = make_factory(clock)
    alice, token = join(factory, "alice", "203.0.113.5")
    bob = register(factory, "bob", "198.51.100.1")
    root = oper(factory)
    alice.drop()  # held for 60 s
    again = FakeConnection(factory, "198.51.100.9")
    for _ in range(3):  # e.g. stale tokens tried first
        again.enter("/resume alice stale")
    again.output()
    again.enter(f"/resume alice {token}")  # waits 1 s (4th attempt)
    root.enter("/ban 198.51.100.9 1h")  # closes that connection
    assert again.closing
    again.drop()
    bob.output()
    clock.advance(1)  # the delayed attempt runs now
    clock.advance(120)  # well past --resume-grace
    seen = bob.lines()
    bob.enter("/users")
    users = bob.lines()
    root.output()
    root.enter("/kick alice")
    kicked = root.lines()
    bob.output()
    # Observed: seen == ['*** alice is back'], users lists alice, the kick
    # says "alice was kicked." but nothing happens, and the nickname is
    # taken until restart.
    assert "*** alice has left (connection lost)" in seen, (seen, users, kicked)
    carol = FakeConnection(factory, "192.0.2.77")
    carol.output()
    carol.enter("alice")
    assert carol.session.nickname == "alice", carol.lines()


# 2 -------------------------------------------------------------------------
def test_ban_ends_held_session():
    """Banning a user whose session is held ends it at once, with the reason."""
    clock = Clock()
    factory = make_factory(clock)
    alice, token = join(factory, "alice", "203.0.113.5")
    bob = register(factory, "bob", "198.51.100.1")
    root = oper(factory)
    alice.drop()
    bob.output()
    root.enter("/ban alice 1h spam")
    assert root.lines()[-1].startswith("*** Banned 203.0.113.5/32 (alice)")
    assert bob.lines() == ["*** alice has left (banned: spam)"]


def test_banned_held_session_resumable_from_other_address():
    """A held session of a banned address can be resumed from another one."""
    clock = Clock()
    factory = make_factory(clock)
    alice, token = join(factory, "alice", "203.0.113.5")
    root = oper(factory)
    alice.drop()
    root.enter("/ban 203.0.113.5 1h spam")
    elsewhere = FakeConnection(factory, "198.51.100.9")
    elsewhere.output()
    elsewhere.enter(f"/resume alice {token}")
    assert elsewhere.lines()[0].startswith("!!! resume failed"), elsewhere.lines()


# 3 -------------------------------------------------------------------------
def overflow(factory, connection):
    """Make C{connection} overflow its send queue (abort pending, as on TCP)."""
    connection.stop_reading()
    other = register(factory, "spammer", "198.51.100.50")
    while not connection.aborted:
        other.enter("x" * 400)
        factory.clock.advance(1)  # keep the spammer under flood control
    return other


def test_kick_between_overflow_and_connection_lost():
    """A kick just after a send-queue abort ends the session; nothing is held."""
    clock = Clock()
    factory = make_factory(clock, max_sendq=4096)
    alice, token = join(factory, "alice", "203.0.113.5")
    root = oper(factory)
    overflow(factory, alice)
    root.output()
    root.enter("/kick alice bye")
    assert root.lines()[-1] == "*** alice was kicked."
    alice.drop()  # the reactor now reports the abort
    root.output()
    again = FakeConnection(factory, "203.0.113.5")
    again.output()
    again.enter(f"/resume alice {token}")
    assert again.lines()[0].startswith("!!! resume failed"), again.lines()


def test_stop_between_overflow_and_connection_lost_leaves_timer():
    """A stop just after a send-queue abort holds nothing and leaves no timer."""
    clock = Clock()
    factory = make_factory(clock, max_sendq=4096)
    alice, token = join(factory, "alice", "203.0.113.5")
    spammer = overflow(factory, alice)
    factory.stop()
    alice.drop()
    spammer.drop()
    factory.flusher.flush()  # the end of the reactor iteration
    assert len(factory.sessions) == 0
    assert clock.getDelayedCalls() == []
