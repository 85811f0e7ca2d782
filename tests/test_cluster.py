"""The clustered registry: the shared behaviour suite, then what spans nodes.

Every test runs against a real redis-server (the C{redis_server} fixture),
on the real reactor.  The behaviour suite is the one the in-memory registry
passes; it waits (L{chatservice.testing.Waiting}) where this registry
answers later.
"""

from ipaddress import ip_network

import pytest
from clusterharness import (
    Nodes,
    block,
    chatting,
    collect,
    eventually,
    heard,
    heard_client,
    in_greenlet,
    registered,
)
from prometheus_client import generate_latest
from redisserver import RedisServer

from twisted.internet import reactor
from twisted.internet.error import ConnectionLost
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from chatservice import events
from chatservice.cluster import ClusterRegistry
from chatservice.config import Settings
from chatservice.errors import ChatError, NicknameInUse, NoSuchNickname
from chatservice.factory import ChatFactory, run_at_once
from chatservice.interfaces import ISharedBans, ISharedSessions, RoomInfo, UserInfo
from chatservice.metrics import collector_registry
from chatservice.reasons import CloseReason
from chatservice.testing import FakeClient, FakeConnection, RegistryBehaviour


class TestClusterRegistry(RegistryBehaviour):
    @pytest.fixture(autouse=True)
    def _nodes(self, nodes: Nodes) -> None:
        self.nodes = nodes

    def make_registry(self, announce_max: int | None = None) -> ClusterRegistry:
        return self.nodes.make(announce_max=announce_max)

    def shared_of(  # type: ignore[override]
        self, registry: ClusterRegistry
    ) -> tuple[ISharedSessions, ISharedBans]:
        return registry.shared_sessions, registry.shared_bans


for _name in dir(RegistryBehaviour):
    if _name.startswith("test_"):
        setattr(
            TestClusterRegistry, _name, in_greenlet(getattr(RegistryBehaviour, _name))
        )


# Across nodes ---------------------------------------------------------------
#
# Two or three nodes of one cluster in this process, each with its own Redis
# connections, as separate twistd processes would have.


@in_greenlet
def test_chat_crosses_nodes_once_in_order(nodes: Nodes) -> None:
    """A line said on one node reaches the room on the others once, in order."""
    a = nodes.make("one")
    b = nodes.make("one")
    c = nodes.make("one")
    alice = registered(a, "alice")
    bob = registered(b, "bob")
    carol = registered(c, "carol")
    seen: list[str] = []
    eventually(lambda: "*** carol has joined #lobby" in collect(alice, seen)(), "join")
    assert seen == ["*** bob has joined #lobby", "*** carol has joined #lobby"]
    for n in range(50):
        a.say("#lobby", events.chat("alice", str(n), "#lobby"), alice)
    expected = [f"<alice> {n}" for n in range(50)]
    for client in (bob, carol):
        got: list[str] = []
        more = collect(client, got)
        eventually(
            lambda more=more: sum(line.startswith("<") for line in more()) >= 50,
            "the lines",
        )
        assert [line for line in got if line.startswith("<")] == expected
    assert alice.lines() == []  # not echoed back to the sender
    block(b.idle())
    # A newcomer on any node sees the same scrollback.
    dave = FakeClient()
    block(c.register(dave, "dave"))
    history = block(c.join(dave, "#lobby"))
    assert [line.event.line.decode() for line in history][-2:] == [
        "<alice> 48\r\n",
        "<alice> 49\r\n",
    ]


class _Events:
    """An L{IChatClient} that keeps the events it is delivered, not their bytes."""

    def __init__(self) -> None:
        self.connection_id = 0
        self.host = None
        self.events: list[events.Event] = []

    @property
    def receiver(self) -> "_Events":
        """See L{IChatClient.receiver}: this client itself."""
        return self

    def deliver(self, event: events.Event) -> None:
        self.events.append(event)

    def disconnect(self, reason: CloseReason) -> None:
        pass


@in_greenlet
def test_other_nodes_see_typed_events(nodes: Nodes) -> None:
    """What is said or done on one node reaches another as events: kind, room, nick, text, time."""
    a = nodes.make("typed")
    b = nodes.make("typed")
    alice = registered(a, "alice")
    bob = _Events()
    assert block(b.register(bob, "bob")) == "bob"
    block(a.join(alice, "#dev"))
    block(b.join(bob, "#dev"))
    said = events.chat("alice", "two lines,\nsent as one", "#dev")
    a.say("#dev", said, alice)
    block(a.send_private("bob", events.private("alice", "psst")))
    a.set_topic(alice, "#dev", "cats")
    eventually(lambda: [e.kind for e in bob.events][-1:] == ["topic"], "the topic")
    # (alice's join of #dev may reach node B after bob is in: it is told.)
    chat, private, topic = [e for e in bob.events if e.kind != "join"]
    assert chat.as_dict() == said.as_dict()  # the time too, to the millisecond
    assert chat.time == said.time
    assert chat.line == b"<alice> two lines,\r\n<alice> sent as one\r\n"
    assert (private.kind, private.nick, private.text) == ("private", "alice", "psst")
    assert (topic.kind, topic.room, topic.nick, topic.text) == (
        "topic",
        "#dev",
        "alice",
        "cats",
    )
    # The scrollback a newcomer gets on another node: the events, with their time.
    carol = FakeClient()
    block(b.register(carol, "carol"))
    (line,) = block(b.join(carol, "#dev"))
    assert line.event.as_dict() == said.as_dict() and line.when == said.time
    assert line.stamped.history and line.stamped.line == said.stamped().line


@in_greenlet
def test_nickname_race_has_one_winner(nodes: Nodes) -> None:
    """Two nodes claiming one nickname at once: exactly one wins."""
    a = nodes.make("race")
    b = nodes.make("race")
    for n in range(20):
        name = f"zed{n}"
        first, second = FakeClient(), FakeClient()
        outcomes: list[object] = []
        a.register(first, name).addBoth(outcomes.append)
        b.register(second, name.upper()).addBoth(outcomes.append)
        eventually(lambda outcomes=outcomes: len(outcomes) == 2, "both answers")
        wins = [o for o in outcomes if isinstance(o, str)]
        losses = [o for o in outcomes if isinstance(o, Failure)]
        assert len(wins) == 1 and len(losses) == 1, outcomes
        assert losses[0].check(NicknameInUse)


@in_greenlet
def test_who_users_rooms_private_and_kick_span_nodes(nodes: Nodes) -> None:
    """/who, /users, /rooms, /msg and kicks see every node's users."""
    a = nodes.make("span")
    b = nodes.make("span")
    alice = registered(a, "alice")
    bob = registered(b, "bob")
    block(b.join(bob, "#dev"))
    b.set_topic(bob, "#dev", "builds")
    b.set_away(bob, "lunch")
    block(b.idle())
    assert [u.nickname for u in block(a.users())] == ["alice", "bob"]
    assert block(a.users("#dev")) == [UserInfo("bob", "lunch", None)]
    assert block(a.count()) == 2
    assert block(a.rooms()) == [
        RoomInfo("#dev", 1, "builds"),
        RoomInfo("#lobby", 2, ""),
    ]
    assert block(a.topic("#dev")) == "builds"
    assert block(a.find("BOB")).nickname == "bob"
    bob.lines()
    assert (
        block(a.send_private("bob", events.private("alice", "psst"))).nickname == "bob"
    )
    eventually(lambda: bob.received, "the private line")
    assert bob.lines() == ["*alice* psst"]
    block(a.kick("bob", CloseReason.kicked("alice", "spam")))
    eventually(lambda: bob.disconnected, "the kick")
    assert bob.disconnected == [CloseReason.kicked("alice", "spam")]
    with pytest.raises(NoSuchNickname):
        block(a.send_private("nobody", events.private("alice", "x")))
    # alice, not in #dev, was told of bob's arrival only: not of the topic.
    assert alice.lines() == ["*** bob has joined #lobby"]


@in_greenlet
def test_dead_node_leaves_no_ghosts(nodes: Nodes) -> None:
    """A node that stops without a word: its users are gone, announced once."""
    a = nodes.make("ghosts", node_ttl=1.0)
    b = nodes.make("ghosts", node_ttl=1.0)
    c = nodes.make("ghosts", node_ttl=1.0)
    registered(a, "alice")
    bob = registered(b, "bob")
    carol = registered(c, "carol")
    block(a.idle())
    # As kill -9 would: no leaves, no retiring, the heartbeat just stops.
    a.liveness.heartbeat.stop()
    block(a.link.stop())
    bob_saw: list[str] = []
    carol_saw: list[str] = []
    eventually(
        lambda: "*** alice has left (connection lost)" in collect(bob, bob_saw)(),
        "alice's leave",
    )
    eventually(
        lambda: "*** alice has left (connection lost)" in collect(carol, carol_saw)(),
        "alice's leave",
    )
    block(deferLater(reactor, 1.5, lambda: None))  # more heartbeats, no repeats
    for saw, client in ((bob_saw, bob), (carol_saw, carol)):
        collect(client, saw)()
        assert saw.count("*** alice has left (connection lost)") == 1, saw
    assert [u.nickname for u in block(b.users())] == ["bob", "carol"]
    registered(b, "alice")  # the nickname is free again


@in_greenlet
def test_redis_restart(nodes: Nodes, redis_server: RedisServer) -> None:
    """Redis gone: each node serves its own users and says so once; then back."""
    a = nodes.make("outage")
    b = nodes.make("outage")
    alice = registered(a, "alice")
    amy = registered(a, "amy")
    bob = registered(b, "bob")
    seen: list[str] = []
    eventually(lambda: "*** bob has joined #lobby" in collect(amy, seen)(), "join")
    for client in (alice, bob):
        client.lines()

    redis_server.stop()
    eventually(lambda: not a.up and not b.up, "both nodes to notice")
    down = (
        "*** the other servers are unreachable: you see only the users of "
        "this one until they are back"
    )
    for client in (alice, amy, bob):
        assert client.lines() == [down]
    a.say("#lobby", events.chat("alice", "still here", "#lobby"), alice)
    assert amy.lines() == ["<alice> still here"]
    assert bob.lines() == []
    assert [u.nickname for u in block(a.users())] == ["alice", "amy"]
    with pytest.raises(ChatError, match="did not answer"):  # bob is elsewhere
        block(a.send_private("bob", events.private("alice", "psst")))
    # Registering locally still works, and the nickname is claimed later.
    ann = registered(a, "ann")
    for client in (alice, amy):
        assert client.lines() == ["*** ann has joined #lobby"]
    a.unregister(amy, CloseReason.quit())
    for client in (alice, ann):
        assert client.lines() == ["*** amy has left (quit)"]

    redis_server.start()
    eventually(lambda: a.up and b.up, "both nodes back", timeout=30)
    back = "*** the other servers are reachable again"
    for client in (alice, ann):
        eventually(lambda c=client: c.received, "the notice")
        assert client.lines() == [back]
    # bob, on the other node, is told who came and went meanwhile, once.
    bob_saw: list[str] = []
    for line in (back, "*** ann has joined #lobby", "*** amy has left (quit)"):
        heard_client(bob, line, bob_saw)
    block(a.idle())
    block(b.idle())
    assert [u.nickname for u in block(b.users())] == ["alice", "ann", "bob"]
    a.say("#lobby", events.chat("alice", "hello again", "#lobby"), alice)
    eventually(lambda: bob.received, "the line")
    assert bob.lines() == ["<alice> hello again"]
    block(deferLater(reactor, 0.5, lambda: None))
    assert sorted(bob_saw + bob.lines()) == sorted(
        [back, "*** ann has joined #lobby", "*** amy has left (quit)"]
    )
    for client in (alice, ann):  # no joins or leaves told twice
        assert [
            line for line in client.lines() if "joined" in line or "left" in line
        ] == []


@in_greenlet
def test_metrics_count_this_node(nodes: Nodes) -> None:
    """A node's metrics count its own users and rooms, without asking Redis."""
    a = nodes.make("metrics")
    b = nodes.make("metrics")
    factory = ChatFactory(Settings(), registry=a, run_in_thread=run_at_once)
    registered(a, "alice")
    registered(b, "bob")
    text = generate_latest(collector_registry(factory)).decode("utf-8")
    assert "chatservice_users 1.0" in text
    assert "chatservice_rooms 1.0" in text


@in_greenlet
def test_resume_on_another_node(nodes: Nodes) -> None:
    """A dropped session resumes on another node, with the lines it missed."""
    on_a, on_b = nodes.servers("resume", resume_grace=60)
    a = on_a.registry
    alice, token = chatting(on_a, "alice")
    bob, _ = chatting(on_b, "bob")
    bob_saw: list[str] = []
    alice.drop(ConnectionLost)  # held on node A
    heard(bob, "*** alice lost connection", bob_saw)
    bob.enter("are you there?")
    eventually(
        lambda: getattr(a.core.index.by_fold.get("alice"), "_lines", 0), "a missed line"
    )
    block(a.idle())

    again = FakeConnection(on_b)
    again.enter(f"/resume alice {token}")
    eventually(lambda: again.session.nickname == "alice", "the resume")
    lines = again.lines()
    lines = lines[[line.startswith("*** Resumed") for line in lines].index(True) :]
    assert lines[:3] == [
        "*** Resumed as alice in #lobby; 1 missed line follows:",
        "<bob> are you there?",
        "*** End of missed lines.",
    ]
    assert lines[3].startswith("*** resume token: ")
    heard(bob, "*** alice is back", bob_saw)
    eventually(lambda: not a.local_users() and not len(on_a.sessions), "node A lets go")
    again.enter("I am now")
    heard(bob, "<alice> I am now", bob_saw)
    assert bob_saw.count("*** alice is back") == 1
    # The old token is spent; the new one works, on either node.
    stale = FakeConnection(on_a)
    stale.enter(f"/resume alice {token}")
    stale_saw: list[str] = []
    heard(stale, "!!! resume failed: unknown nickname or wrong token", stale_saw)
    for connection in (again, bob, stale):
        connection.drop()


@in_greenlet
def test_node_taken_for_dead_comes_back(nodes: Nodes) -> None:
    """A node silent past --node-ttl, yet alive, claims its users again."""
    a = nodes.make("pause", node_ttl=1.0)
    b = nodes.make("pause", node_ttl=1.0)
    alice = registered(a, "alice")
    amy = registered(a, "amy")
    bob = registered(b, "bob")
    bob_saw: list[str] = []
    eventually(lambda: "*** bob has joined #lobby" in collect(alice, [])(), "join")
    a.liveness.heartbeat.stop()  # as a long pause would
    eventually(
        lambda: "*** alice has left (connection lost)" in collect(bob, bob_saw)(),
        "alice's leave",
    )
    a.liveness.heartbeat.start(1.0 / 3, now=True)
    eventually(
        lambda: "*** alice has joined #lobby" in collect(bob, bob_saw)(),
        "alice's return",
    )
    eventually(lambda: a.up, "node A claims its users again")
    a.say("#lobby", events.chat("alice", "I was only sleeping", "#lobby"), alice)
    eventually(
        lambda: "<alice> I was only sleeping" in collect(bob, bob_saw)(), "the line"
    )
    block(deferLater(reactor, 1.0, lambda: None))  # more heartbeats: no repeats
    collect(bob, bob_saw)()
    assert bob_saw.count("*** alice has joined #lobby") == 1, bob_saw
    assert bob_saw.count("*** alice has left (connection lost)") == 1, bob_saw
    # amy, beside alice all along, was told nothing of her leaving or return.
    assert [line for line in amy.lines() if "alice" in line] == [
        "<alice> I was only sleeping"
    ]


@in_greenlet
def test_bans_hold_on_every_node(nodes: Nodes) -> None:
    """A ban made on one node closes and refuses on the others; so does /unban."""
    on_a, on_b = nodes.servers("bans")
    bob = FakeConnection(on_b, host="192.0.2.7")
    bob.enter("bob")
    eventually(lambda: bob.session.nickname == "bob", "bob registered")
    on_a.ban(ip_network("192.0.2.0/24"), 3600, "spam", "root")
    bob_saw: list[str] = []
    heard(bob, "*** disconnected: banned: spam", bob_saw)
    assert bob.closing
    ban = on_b.bans.match("192.0.2.9")
    assert ban is not None and ban.reason == "spam" and ban.by == "root"
    assert 3500 < ban.expires - reactor.seconds() <= 3600
    on_a.unban(ip_network("192.0.2.0/24"))
    eventually(lambda: on_b.bans.match("192.0.2.9") is None, "the ban lifted")
    bob.drop()
