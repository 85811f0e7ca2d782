"""A cluster under attack or in a race: each test reproduces one of issue 13's findings.

Every test runs against a real redis-server, on the real reactor, with
several nodes of one cluster in this process (see C{clusterharness}).
"""

import json

from clusterharness import Nodes, block, eventually, heard, in_greenlet
from prometheus_client import generate_latest

from twisted.logger import globalLogPublisher

from chatservice.cluster import ClusterRegistry
from chatservice.metrics import collector_registry
from chatservice.testing import FakeConnection


@in_greenlet
def test_nickname_conflict_close_reason_is_a_fixed_label(nodes: Nodes) -> None:
    """A nickname lost to another node is counted without the nickname."""
    on_a, on_b = nodes.servers("conflict")
    a = on_a.registry
    block(a.idle())
    a.link._down()  # cut off: alice registers on node A alone
    here = FakeConnection(on_a)
    here.enter("alice")
    eventually(lambda: here.protocol.nickname == "alice", "alice on node A")
    there = FakeConnection(on_b)
    there.enter("alice")  # node B gives the nickname away meanwhile
    eventually(lambda: there.protocol.nickname == "alice", "alice on node B")
    a.link._check()
    heard(
        here,
        "*** disconnected: nickname taken elsewhere: another server gave alice to "
        "someone else while the servers were cut off; reconnect and choose a "
        "nickname",
        [],
    )
    assert here.closing
    here.drop()
    assert dict(on_a.stats.closed) == {"nickname taken elsewhere": 1}
    text = generate_latest(collector_registry(on_a)).decode("utf-8")
    assert 'chatservice_disconnects_total{reason="nickname taken elsewhere"} 1.0' in (
        text
    )
    assert "alice" not in text
    there.drop()


def _forge(node: ClusterRegistry, event: object) -> None:
    """Add C{event} to the cluster's stream, as a bad writer to Redis could."""
    text = event if isinstance(event, str) else json.dumps(event)
    block(
        node._command(
            "execute_command", "XADD", node._prefix + "events", "*", "o", "x", "e", text
        )
    )


@in_greenlet
def test_forged_events_are_sanitised_or_skipped(nodes: Nodes) -> None:
    """Events written to Redis by anyone are checked and sanitised once more."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        on_a, on_b = nodes.servers("forged")
        a = on_a.registry
        alice = FakeConnection(on_a, host="192.0.2.7")
        alice.enter("alice")
        eventually(lambda: alice.protocol.nickname == "alice", "alice registered")
        alice.lines()
        for bad in (
            "not json",
            "[1, 2]",
            {"r": ["#lobby"], "d": 7},
            {"r": ["#lobby"], "d": "no line end"},
            {"r": "#lobby", "d": "<x> rooms not a list\r\n"},
            {"r": ["#lobby"], "d": "<x> hi\r\n", "h": "soon"},
            {"to": "ALICE!", "d": "<x> to no one\r\n"},
            {"ban": ["0.0.0.0/0", None, "everyone", "root"]},
            {"ban": ["192.0.2.0/24", None, "spam", "root\x1b[2J"]},
            {"ban": "192.0.2.0/24"},
            {"unban": 7},
            {"what": 1},
            {"r": ["#lobby"], "d": "x" * 9000 + "\r\n"},
        ):
            _forge(a, bad)
        _forge(a, {"r": ["#lobby"], "d": "<mallory> \x1b]0;pwned\x07hi\x1b[2J\r\n"})
        _forge(a, {"to": "alice", "d": "*mallory* \x9b31mred\u202e\r\n"})
        _forge(a, {"to": "alice", "k": "kicked by mallory: \x1b[5mbye"})
        seen: list[str] = []
        heard(alice, "*** disconnected: kicked by mallory: bye", seen)
        assert seen == [
            "<mallory> hi",
            "*mallory* red",
            "*** disconnected: kicked by mallory: bye",
        ]
        assert on_a.bans.match("192.0.2.9") is None  # neither ban was made
        alice.drop()
        assert dict(on_a.stats.closed) == {"kicked": 1}
        skipped = [
            e
            for e in events
            if "malformed event" in e.get("log_format", "") and e["node"] == a.node
        ]
        # Logged once per kind of fault, not once per event.
        kinds = [e["kind"] for e in skipped]
        assert sorted(kinds) == sorted(set(kinds))
        assert set(kinds) == {
            "not JSON",
            "not an object",
            "to rooms",
            "to a user",
            "ban",
            "unban",
            "unknown kind",
            "too long",
        }
    finally:
        globalLogPublisher.removeObserver(events.append)
