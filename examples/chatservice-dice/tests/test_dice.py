"""Tests of /roll, as the users of a chat server see it."""

import random
from pathlib import Path

import pytest

from twisted.internet.task import Clock

import chatservice.plugins
from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.testing import register

#: This distribution's plugin directory, found by the scan as if installed.
PLUGINS = Path(__file__).resolve().parent.parent / "chatservice" / "plugins"


@pytest.fixture
def factory(monkeypatch: pytest.MonkeyPatch) -> ChatFactory:
    """A chat server that sees this distribution's plugins."""
    monkeypatch.setattr(
        chatservice.plugins, "__path__", [*chatservice.plugins.__path__, str(PLUGINS)]
    )
    return ChatFactory(Settings(), clock=Clock())


def test_roll(factory: ChatFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """/roll shows the whole room the dice, the roller included."""
    from chatservice.plugins import dice

    monkeypatch.setattr(dice, "rng", random.Random(7))
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()  # "*** bob has joined #lobby"
    alice.enter("/roll 2d6")
    assert alice.lines() == bob.lines() == ["*** alice rolls 2d6: 3 + 2 = 5"]


def test_bad_dice(factory: ChatFactory) -> None:
    """Dice that cannot be rolled get a !!! line, for the roller only."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.enter("/roll 21d6")
    assert alice.lines() == [
        "!!! cannot roll 21d6: use 1 to 20 dice of 2 to 1000 sides"
    ]
    assert bob.lines() == []


def test_roll_alone_rolls_one_die(
    factory: ChatFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/roll with no argument rolls one six-sided die, with no sum."""
    from chatservice.plugins import dice

    monkeypatch.setattr(dice, "rng", random.Random(7))
    alice = register(factory, "alice")
    alice.enter("/roll")
    assert alice.lines() == ["*** alice rolls 1d6: 3"]


def test_not_dice(factory: ChatFactory) -> None:
    """Something that is not NdM is refused with how to write dice."""
    alice = register(factory, "alice")
    alice.enter("/roll lots")
    assert alice.lines() == ["!!! cannot roll 'lots': write dice as NdM, e.g. 2d6"]


def test_help_lists_roll(factory: ChatFactory) -> None:
    """/help names /roll with its usage and help text."""
    alice = register(factory, "alice")
    alice.enter("/help")
    # Usages are padded to the width of the longest, whichever that is.
    shown = [line.split() for line in alice.lines() if line.startswith("*** /roll ")]
    assert shown == [
        "*** /roll [NdM] roll N dice of M sides for your room (default 1d6)".split()
    ]
