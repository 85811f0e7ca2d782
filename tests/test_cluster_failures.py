"""The clustered registry when things go wrong: outages, dead nodes, failed calls.

Each of these once left a ghost, a stale token or a half-done change behind.
"""

import json

import pytest
from clusterharness import Nodes, block, eventually, in_greenlet, registered

from twisted.internet.defer import fail

from chatservice import events as chat_events
from chatservice.cluster import ClusterRegistry
from chatservice.reasons import CloseReason


@in_greenlet
def test_rooms_changed_during_short_outage_reach_redis(nodes: Nodes) -> None:
    """A join and a part made while cut off reach Redis once back.

    Cut off for less than --node-ttl, Redis kept its data: the node's
    records there are out of date, not gone.
    """
    a = nodes.make("short")
    b = nodes.make("short")
    alice = registered(a, "alice")
    registered(b, "bob")
    block(a.idle())
    a.link._down()  # as a connection lost and found again would
    assert not a.up
    block(a.join(alice, "#x"))
    a.part(alice, "#lobby", "joined #x")
    a.link._check()
    eventually(lambda: a.up, "node A back")
    block(a.idle())
    assert [u.nickname for u in block(b.users("#x"))] == ["alice"]
    assert [u.nickname for u in block(b.users("#lobby"))] == ["bob"]


@in_greenlet
def test_users_of_a_room_of_more_than_8000(nodes: Nodes) -> None:
    """/who of a room of more than 8000 members lists them all."""
    a = nodes.make("big")
    b = nodes.make("big")
    alice = registered(b, "alice")
    block(b.join(alice, "#big"))
    block(b.idle())
    members: list[str] = []
    for n in range(8100):
        members += [f"ghost{n}", f"ghost{n}"]
    block(
        a.core.command("execute_command", "HSET", a.core.prefix + "room:#big", *members)
    )
    assert "alice" in [u.nickname for u in block(a.users("#big"))]


def _dead(a: ClusterRegistry, b: ClusterRegistry) -> None:
    b.liveness.heartbeat.stop()
    block(b.link.stop())
    block(a.core.command("delete", a.core.prefix + "node:" + b.node))


@in_greenlet
def test_reclaim_from_a_dead_node_cleans_up(nodes: Nodes) -> None:
    """A nickname reclaimed from a dead node leaves no token, no empty room."""
    a = nodes.make("reclaim", node_ttl=120)
    b = nodes.make("reclaim", node_ttl=120)
    bob = registered(b, "bob")
    block(b.join(bob, "#x"))
    b.set_topic(bob, "#x", "old")
    b.shared_sessions.store_token("bob", "digest-of-the-old-bob")
    block(b.idle())
    _dead(a, b)
    record = {"nick": "bob", "node": a.node, "host": "", "rooms": ["#lobby"]}
    claimed = block(
        a.core.call(
            "reclaim", a.node, "bob", json.dumps(record), -1, "0", "{}", "{}", "#lobby"
        )
    )
    assert int(claimed[0]) == 1
    # The old bob's token must not take over the new bob's session.
    token = block(a.core.command("get", a.core.prefix + "token:bob"))
    rooms = [room.name for room in block(a.rooms())]
    assert (token, "#x" in rooms) == (None, False)


@in_greenlet
def test_retire_leaves_no_ghost_user(nodes: Nodes) -> None:
    """A node that retires with a user left frees the nickname."""
    a = nodes.make("retire")
    b = nodes.make("retire")
    registered(a, "alice")
    block(a.idle())
    a.stop()
    block(a.close())
    nodes.made.remove(a)
    registered(b, "alice")


@in_greenlet
def test_leave_is_told_here_when_the_redis_call_fails(nodes: Nodes) -> None:
    """A leave is told on its own node even if the Redis call fails."""
    import txredisapi

    a = nodes.make("lost-call")
    alice = registered(a, "alice")
    amy = registered(a, "amy")
    block(a.join(alice, "#x"))
    block(a.join(amy, "#x"))
    amy.lines()
    real = a.link.call
    a.link.call = lambda *args: fail(txredisapi.ConnectionError("Lost connection"))
    try:
        a.unregister(alice, CloseReason.quit())
        block(a.idle())
    finally:
        a.link.call = real
    assert "*** alice has left (quit)" in amy.lines()


@in_greenlet
def test_missed_lines_are_not_replayed_after_a_local_resume(nodes: Nodes) -> None:
    """Lines already replayed by a local resume are not replayed again."""
    from clusterharness import chatting, heard

    from twisted.internet.error import ConnectionLost

    from chatservice.testing import FakeConnection

    on_a, on_b = nodes.servers("replay", resume_grace=60)
    a = on_a.registry
    alice, token = chatting(on_a, "alice")
    bob, _ = chatting(on_b, "bob")
    bob_saw: list[str] = []
    alice.drop(ConnectionLost)
    heard(bob, "*** alice lost connection", bob_saw)
    bob.enter("one")
    eventually(
        lambda: getattr(a.core.index.by_fold.get("alice"), "_lines", 0), "line one"
    )
    block(a.idle())
    here = FakeConnection(on_a)  # back on the same node: gets "one"
    here.enter(f"/resume alice {token}")
    seen: list[str] = []
    heard(here, "<bob> one", seen)
    token = next(line.split()[3] for line in seen if "resume token" in line)
    block(a.idle())
    here.drop(ConnectionLost)
    heard(bob, "*** alice lost connection", bob_saw)
    bob.enter("two")
    eventually(
        lambda: getattr(a.core.index.by_fold.get("alice"), "_lines", 0), "line two"
    )
    block(a.idle())
    there = FakeConnection(on_b)
    there.enter(f"/resume alice {token}")
    eventually(lambda: there.session.nickname == "alice", "the resume")
    lines = there.lines()
    start = [line.startswith("*** Resumed") for line in lines].index(True)
    try:
        assert lines[start : start + 3] == [
            "*** Resumed as alice in #lobby; 1 missed line follows:",
            "<bob> two",
            "*** End of missed lines.",
        ]
    finally:
        for connection in (there, bob):
            connection.drop()


@in_greenlet
def test_a_failed_join_leaves_no_half_joined_user(nodes: Nodes) -> None:
    """A join that fails leaves the user out of the room."""
    import txredisapi

    from twisted.python.failure import Failure

    a = nodes.make("half-join")
    alice = registered(a, "alice")
    real = a.link.call
    a.link.call = lambda *args: fail(txredisapi.ConnectionError("Lost connection"))
    outcome: list[object] = []
    try:
        a.join(alice, "#x").addBoth(outcome.append)
    finally:
        a.link.call = real
    joined = "#x" in a.core.index.users[alice].rooms
    failed = isinstance(outcome[0], Failure)
    assert not (joined and failed), (joined, outcome)


@in_greenlet
def test_unanswered_calls_tell_the_user_why(nodes: Nodes) -> None:
    """A /msg, /nick or lookup Redis does not answer gets a clear error."""
    import txredisapi

    from chatservice.errors import ChatError

    a = nodes.make("unanswered")
    b = nodes.make("unanswered")
    alice = registered(a, "alice")
    registered(b, "bob")
    real_call, real_command = a.link.call, a.link.command
    lost = txredisapi.ConnectionError("Lost connection")
    a.link.call = lambda *args: fail(lost)
    a.link.command = lambda *args: fail(lost)
    try:
        for d in (
            a.send_private("bob", chat_events.private("alice", "hi")),
            a.find("bob"),
            a.rename(alice, "alicia"),
        ):
            with pytest.raises(ChatError, match="try again in a moment"):
                block(d)
    finally:
        a.link.call, a.link.command = real_call, real_command
    assert a.core.index.users[alice].nickname == "alice"


@in_greenlet
def test_no_redis_at_start_serves_alone(nodes: Nodes) -> None:
    """Redis not there at the start: the node serves its users, and says why."""
    from redisserver import free_port

    from twisted.internet.task import Clock
    from twisted.logger import globalLogPublisher

    from chatservice.testing import FakeClient

    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    clock = Clock()
    node = ClusterRegistry(f"redis://127.0.0.1:{free_port()}/0", clock=clock)
    node.start()
    try:
        alice, bob = FakeClient(), FakeClient()
        assert block(node.register(alice, "alice")) == "alice"
        assert block(node.register(bob, "bob")) == "bob"
        assert alice.lines() == ["*** bob has joined #lobby"]
        node.say("#lobby", chat_events.chat("bob", "anyone?", "#lobby"), bob)
        assert alice.lines() == ["<bob> anyone?"]
        clock.advance(5)
        warned = [e for e in events if "cannot reach Redis" in e.get("log_format", "")]
        assert len(warned) == 1 and warned[0]["port"] == node.link.port
    finally:
        globalLogPublisher.removeObserver(events.append)
        block(node.close())


@in_greenlet
def test_resume_while_cut_off_says_try_again(nodes: Nodes) -> None:
    """A /resume of a session this node does not have, while cut off."""
    from clusterharness import heard
    from redisserver import free_port

    from chatservice.config import Settings
    from chatservice.factory import ChatFactory, run_at_once
    from chatservice.testing import FakeConnection

    node = ClusterRegistry(f"redis://127.0.0.1:{free_port()}/0")
    server = ChatFactory(
        Settings(resume_grace=60),
        registry=node,
        run_in_thread=run_at_once,
        shared_sessions=node.shared_sessions,
    )
    node.start()
    try:
        alice = FakeConnection(server)
        alice.enter("/resume alice 3hV0mYvS7Jx2dQk9Zr8T1w")
        heard(alice, "!!! the other servers did not answer; try again in a moment", [])
        alice.drop()
    finally:
        block(node.close())
