"""What chatservice logs of a connection, and the --log-level gate."""

from collections.abc import Iterator

import pytest

from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from chatservice.factory import ChatFactory
from chatservice.logs import LevelGate, gate
from chatservice.testing import FakeConnection


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
        if str(event.get("log_namespace", "")).startswith("chatservice.protocol")
    ]


def test_a_session_is_two_events(factory: ChatFactory, logged: list) -> None:
    """The registration and the close are logged, each naming the peer."""
    alice = FakeConnection(factory)
    assert texts(logged) == []  # the connection alone is not logged
    alice.enter("alice")
    alice.enter("/quit")
    alice.drop()
    peer = alice.protocol.peer
    assert texts(logged) == [
        f"connection 1 from {peer} registered as alice",
        f"connection 1 from {peer} closed (quit; closed cleanly)",
    ]
    assert logged[-1]["nickname"] == "alice"


def test_unregistered_close_names_the_peer(factory: ChatFactory, logged: list) -> None:
    """A connection that never registers is logged once, when it closes."""
    stranger = FakeConnection(factory)
    stranger.drop()
    assert texts(logged) == [
        f"connection 1 from {stranger.protocol.peer} closed "
        "(connection lost; closed cleanly)"
    ]
    assert logged[-1]["nickname"] is None


def test_gate_drops_events_below_its_level(logged: list) -> None:
    """Events below the level are dropped; the rest reach the publisher."""
    warn_gate = LevelGate(LogLevel.warn)
    for level in LogLevel.iterconstants():
        warn_gate({"log_level": level, "log_format": level.name})
    assert [event["log_format"] for event in logged] == ["warn", "error", "critical"]


def test_default_level_is_info() -> None:
    """By default, chatservice's debug events are left out."""
    assert gate.level == LogLevel.info
