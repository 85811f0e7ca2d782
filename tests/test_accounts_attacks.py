"""Attacks on accounts: keeping a nickname past the grace, leaking passwords."""

import re

import pytest

from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock

from chatservice.factory import ChatFactory
from chatservice.testing import FakeConnection, register
from tests.test_accounts import CHALLENGE, make_server, registered


@pytest.fixture
def server(clock: Clock) -> ChatFactory:
    """A server whose accounts are in memory, with cheap hashes."""
    return make_server(clock)


def challenge(seconds: str) -> str:
    """The challenge's line with C{seconds} left."""
    return CHALLENGE.replace("within 30 seconds", f"within {seconds} seconds")


def token_of(lines: list[str]) -> str:
    """The resume token a registration's lines gave."""
    (token,) = [
        m.group(1)
        for m in map(re.compile(r"\*\*\* resume token: ([\w-]+) ").match, lines)
        if m
    ]
    return token


def test_nick_back_and_forth_does_not_restart_the_grace(
    server: ChatFactory, clock: Clock
) -> None:
    """Leaving a registered nickname and taking it again gets what was left of the grace."""
    registered(server).enter("/quit")
    squatter = register(server, "alice")
    clock.advance(20)
    squatter.enter("/nick bob", "/nick alice")
    assert squatter.lines() == [
        "*** alice is now known as bob",
        "*** bob is now known as alice",
        challenge("10"),
    ]
    clock.advance(10)
    assert squatter.session.nickname.startswith("Guest")


def test_grace_once_spent_renames_at_once(server: ChatFactory, clock: Clock) -> None:
    """An address whose grace ran out is renamed at once when it takes the nickname again."""
    registered(server).enter("/quit")
    squatter = register(server, "alice", "203.0.113.5")
    clock.advance(30)
    squatter.enter("/quit")
    again = FakeConnection(server, "203.0.113.5")
    again.enter("alice")
    guest = again.session.nickname
    assert guest.startswith("Guest")
    assert again.lines()[-1] == (
        "*** alice is a registered nickname and your address did not identify "
        f"within 30 seconds of taking it: you are now {guest}"
    )
    # Another address gets its own grace; the owner can still prove it.
    other = register(server, "alice", "198.51.100.1")
    assert other.session.nickname == "alice"
    other.enter("/quit")
    again.enter("/nick alice wonderland")
    assert again.lines()[-1] == "*** You are now identified as alice."


def test_resume_does_not_restart_the_grace(server: ChatFactory, clock: Clock) -> None:
    """Dropping the connection and resuming the held session does not buy a new grace."""
    registered(server).enter("/quit")
    squatter = FakeConnection(server)
    squatter.enter("alice")
    token = token_of(squatter.lines())
    clock.advance(25)
    squatter.drop(ConnectionLost)
    back = FakeConnection(server)
    back.output()
    back.enter(f"/resume alice {token}")
    assert challenge("5") in back.lines()
    clock.advance(5)
    assert back.session.nickname.startswith("Guest")


def test_identifying_forgets_the_spent_grace(server: ChatFactory, clock: Clock) -> None:
    """Once the address identified, a later unidentified connection gets a whole grace."""
    registered(server).enter("/quit")
    owner = register(server, "alice")
    clock.advance(25)
    owner.enter("/identify wonderland", "/quit")
    later = FakeConnection(server)
    later.enter("alice")
    assert later.lines()[-1] == CHALLENGE


def test_registrations_limited_per_address(server: ChatFactory, clock: Clock) -> None:
    """An address registers five nicknames at once, then one every 12 minutes."""
    user = register(server, "bob", "203.0.113.7")
    for number in range(5):
        user.enter(f"/nick bob{number}", f"/register password-{number}")
        assert user.lines()[-1].startswith(f"*** bob{number} is now registered")
        clock.advance(1)  # the flood control
    user.enter("/nick bob5", "/register password-5")
    assert user.lines()[-1] == (
        "!!! your address has registered as many nicknames as it may (5 an hour); "
        "try again in 12 minutes"  # less the 5 s spent above
    )
    assert not server.accounts.is_registered("bob5")
    other = register(server, "carol", "198.51.100.2")
    other.enter("/msg NickServ REGISTER password-c")
    assert other.lines()[-1].startswith("*** carol is now registered")
    clock.advance(720)
    user.enter("/register password-5")
    assert user.lines()[-1].startswith("*** bob5 is now registered")
