"""Tests of /seen, as the users of a chat server see it."""

import re
from pathlib import Path

import pytest

from twisted.internet.task import Clock

import chatservice.plugins
from chatservice.config import Settings
from chatservice.extensions import load_extensions
from chatservice.factory import ChatFactory
from chatservice.testing import FakeConnection, register

#: This distribution's plugin directory, found by the scan as if installed.
PLUGINS = Path(__file__).resolve().parent.parent / "chatservice" / "plugins"


@pytest.fixture
def clock() -> Clock:
    """The server's clock, which the tests move on."""
    return Clock()


@pytest.fixture
def factory(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> ChatFactory:
    """A chat server that sees this distribution's plugins."""
    monkeypatch.setattr(
        chatservice.plugins, "__path__", [*chatservice.plugins.__path__, str(PLUGINS)]
    )
    return ChatFactory(Settings(), clock=clock)


def test_online(factory: ChatFactory) -> None:
    """Someone online is said to be, in their room, whatever the case typed."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.enter("/join #tea")
    alice.output()
    alice.enter("/seen BOB")
    assert alice.lines() == ["*** bob is online in #tea"]


def test_quit(factory: ChatFactory, clock: Clock) -> None:
    """Someone who left is said to be gone, since when, from where, and why."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.enter("/quit lunch")
    bob.drop()  # the client closes, as it does on "*** Goodbye."
    clock.advance(5 * 60 + 20)
    alice.output()
    alice.enter("/seen bob")
    assert alice.lines() == [
        "*** bob was last seen 5 minutes ago, leaving #lobby (quit: lunch)"
    ]


def test_connection_lost(factory: ChatFactory, clock: Clock) -> None:
    """A dropped connection is a leave too, with its reason."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.enter("/join #tea")
    bob.drop()
    clock.advance(2 * 3600)
    alice.output()
    alice.enter("/seen bob")
    assert alice.lines() == [
        "*** bob was last seen 2 hours ago, leaving #tea (connection lost)"
    ]


def test_never_seen(factory: ChatFactory) -> None:
    """A nickname nobody used here gets a !!! line."""
    alice = register(factory, "alice")
    alice.enter("/seen carol")
    assert alice.lines() == ["!!! nobody called carol has been seen"]


def test_nick_change(factory: ChatFactory) -> None:
    """An old nickname was last seen changing to the new one, which is online."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.enter("/nick robert")
    alice.output()
    alice.enter("/seen bob", "/seen robert")
    assert alice.lines() == [
        "*** bob was last seen just now, changing nickname to robert",
        "*** robert is online in #lobby",
    ]


def test_back_again(factory: ChatFactory) -> None:
    """Someone who left and came back is online, not gone."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.enter("/quit")
    bob.drop()
    register(factory, "Bob")
    alice.output()
    alice.enter("/seen bob")
    assert alice.lines() == ["*** Bob is online in #lobby"]


def test_memory_bounded(
    factory: ChatFactory, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its limit, the nickname seen longest ago is forgotten."""
    from chatservice.plugins import seen

    monkeypatch.setattr(seen.seen, "limit", 2)
    alice = register(factory, "alice")
    for nickname in ("bob", "carol", "dave"):
        register(factory, nickname).drop()
        clock.advance(60)
    alice.output()
    alice.enter("/seen bob", "/seen carol", "/seen dave")
    assert alice.lines() == [
        "!!! nobody called bob has been seen",
        "*** carol was last seen 2 minutes ago, leaving #lobby (connection lost)",
        "*** dave was last seen 1 minute ago, leaving #lobby (connection lost)",
    ]


def test_help_lists_seen(factory: ChatFactory) -> None:
    """/help names /seen with its usage and help text."""
    alice = register(factory, "alice")
    alice.enter("/help seen")
    assert alice.lines() == [
        "*** usage: /seen NICK",
        "*** say whether NICK is online, or when they were last seen",
    ]


def test_disabled(factory: ChatFactory, clock: Clock) -> None:
    """--disable-plugin seen leaves out the command and the hooks alike."""
    extensions = load_extensions(frozenset({"seen"}))
    assert "seen" not in extensions.commands
    assert extensions.hooks == ()
    assert extensions.disabled == ("/seen", "seen")


def test_resumed_from_an_open_connection(factory: ChatFactory) -> None:
    """A session resumed while its old connection was open is still online."""
    alice, bob = register(factory, "alice"), FakeConnection(factory)
    bob.enter("bob")
    (token,) = re.findall(r"resume token: ([\w-]+)", bob.output().decode())
    again = FakeConnection(factory)
    again.enter(f"/resume bob {token}")
    bob.drop()  # the old connection, told it was resumed elsewhere, closes
    alice.output()
    alice.enter("/seen bob")
    assert alice.lines() == ["*** bob is online in #lobby"]
