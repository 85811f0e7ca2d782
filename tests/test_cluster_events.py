"""The events nodes read from each other: typed, checked, each with its handler."""

import json
from typing import get_args

import pytest

from twisted.internet.task import Clock

from chatservice.cluster.bans import ClusterBans
from chatservice.cluster.events import (
    Ban,
    Event,
    Handed,
    HandOver,
    ToEveryone,
    ToRooms,
    ToUser,
    Unban,
    checked,
)
from chatservice.cluster.inbox import Inbox
from chatservice.cluster.node import Node
from chatservice.cluster.sessions import ClusterSessions
from chatservice.testing import FakeClient


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"o": "n1", "ho": "alice", "n": "n2"}', HandOver("alice", "n2")),
        ('{"o": "n1", "handed": "alice"}', Handed("alice")),
        (
            '{"o": "n1", "ban": ["10.0.0.0/8", null, "spam", "Op"]}',
            Ban("10.0.0.0/8", None, "spam", "Op"),
        ),
        ('{"o": "n1", "unban": "10.0.0.0/8"}', Unban("10.0.0.0/8")),
        ('{"o": "n1", "to": "bob", "d": "hi\\r\\n"}', ToUser("bob", data=b"hi\r\n")),
        ('{"o": "n1", "a": 1, "d": "x\\r\\n"}', ToEveryone(b"x\r\n")),
        (
            '{"o": "n1", "r": ["#a"], "d": "x\\r\\n", "s": "bob", "h": 5}',
            ToRooms(["#a"], b"x\r\n", "bob", 5.0),
        ),
    ],
)
def test_events_are_typed(message: str, expected: Event) -> None:
    """Each kind of event is read into its typed value, with readable fields."""
    assert checked(message) == expected


@pytest.mark.parametrize(
    "event",
    [
        Ban("10.0.0.0/8", 1e9, "spam", "Op"),
        Unban("10.0.0.0/8"),
        ToEveryone(b"*** the server restarts soon\r\n"),
        ToRooms(["#a", "#b"], b"<bob> hi\r\n", "bob"),
    ],
)
def test_published_events_read_back(event: Ban | Unban | ToEveryone | ToRooms) -> None:
    """What a node publishes, another reads back as the same event."""
    assert checked(json.dumps({"o": "n1", **event.fields()})) == event


def _inbox() -> tuple[Node, Inbox]:
    node = Node("test", "n1", Clock(), 10, None, 1024)
    inbox = Inbox(node, ClusterSessions(node), ClusterBans(node))
    return node, inbox


def test_every_kind_has_a_handler() -> None:
    """The inbox's table has a handler for every kind of event."""
    node, inbox = _inbox()
    samples: list[Event] = [
        HandOver("alice"),
        Handed("alice"),
        Ban("10.0.0.0/8", None, "", "Op"),
        Unban("10.0.0.0/8"),
        ToUser("alice", data=b"x\r\n"),
        ToEveryone(b"x\r\n"),
        ToRooms(["#lobby"], b"x\r\n"),
    ]
    assert {type(event) for event in samples} == set(get_args(Event))
    for event in samples:
        inbox.act(event)  # nobody here: nothing happens, nothing raises


def test_a_line_for_rooms_reaches_this_nodes_members_once() -> None:
    """A line for two rooms reaches each member here once, the same bytes."""
    node, inbox = _inbox()
    alice, bob = FakeClient(), FakeClient()
    for client, nickname in [(alice, "alice"), (bob, "bob")]:
        node.index.add(client, nickname)
        node.index.enter(client, "#a")
    node.index.enter(alice, "#b")
    inbox.received("n2", '{"o": "n2", "r": ["#a", "#b"], "d": "<carol> hi\\r\\n"}')
    assert alice.received[0] is bob.received[0]
    assert alice.lines() == bob.lines() == ["<carol> hi"]
