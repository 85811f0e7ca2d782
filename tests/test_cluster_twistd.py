"""The clustered mode end to end: real ``twistd -n chat`` nodes, one real Redis.

Each test starts two or three nodes as subprocesses, exactly as a user runs
them (C{--redis}, C{--cluster}, C{--node-ttl}, C{--store}), against the
C{redis_server} fixture and a database of the C{postgres} fixture, and talks to them over plain blocking sockets.  Every wait polls
with a deadline; the only fixed pauses are the short quiet periods that
check that nothing more (no duplicate) arrives.

Nodes run with C{--resume-grace 0} (no resume token, and a dropped
connection leaves at once) and C{--history 0} (no scrollback block), so
that what a client reads is exactly what the test expects.
"""

import select
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from harness import GREETING
from processes import WAIT, Connection, Server, free_port, opened_by
from redisserver import RedisServer

CLUSTER = "itest"
#: --node-ttl of every node: a node renews its heartbeat every TTL / 3 s.
NODE_TTL = 2
#: Long enough for several heartbeats, to see that nothing is told twice.
QUIET = 2.5
#: txredisapi reconnects with a backoff of up to 10 s.
RECONNECT_WAIT = 30.0

DOWN = (
    "*** the other servers are unreachable: you see only the users of this "
    "one until they are back"
)
BACK = "*** the other servers are reachable again"
FLOOD = (
    "*** flood control: you are sending more than 5 lines per second; your "
    "lines are slowed down, none is lost"
)


class Client(Connection):
    """A connection whose reads poll with a deadline and can wait for quiet.

    L{Connection.read} reads through a socket file, which cannot be read
    again once a read has timed out; this one keeps its own buffer, so a
    test can also ask "did anything more arrive in the next N seconds?".
    """

    def __init__(self, port: int) -> None:
        super().__init__(port)
        self.buffer = b""
        self.ended = False
        #: The nickname it registered, for failure messages.
        self.name = ""
        #: Every line read so far, for failure messages.
        self.history: list[str | None] = []

    def _fill(self, deadline: float) -> bool:
        """Receive more bytes; False if none came before C{deadline}."""
        if self.ended:
            return False
        # Past the deadline, still look (without waiting) at what has come:
        # assert_quiet checks its later clients after the first one's wait.
        remaining = max(0.0, deadline - time.monotonic())
        readable, _, _ = select.select([self.sock], [], [], remaining)
        if not readable:
            return False
        data = self.sock.recv(65536)
        if not data:
            self.ended = True
            return True
        self.buffer += data
        return True

    def _next(self, deadline: float) -> tuple[bool, str | None]:
        """C{(True, line)}, C{(True, None)} at the end, C{(False, None)} on timeout."""
        while b"\r\n" not in self.buffer:
            if self.ended:
                assert not self.buffer, self.buffer
                self.history.append(None)
                return True, None
            if not self._fill(deadline):
                return False, None
        raw, self.buffer = self.buffer.split(b"\r\n", 1)
        line = raw.decode("utf-8")
        self.history.append(line)
        return True, line

    def read(self, count: int = 1, timeout: float = WAIT) -> list[str | None]:
        """The next C{count} lines (C{None} for the end); fail after C{timeout}."""
        deadline = time.monotonic() + timeout
        lines: list[str | None] = []
        for _ in range(count):
            got, line = self._next(deadline)
            if not got:
                pytest.fail(
                    f"no line within {timeout:g} s; got {lines!r}; "
                    f"read before: {self.history[-20:]!r}"
                )
            lines.append(line)
        return lines

    def line(self, timeout: float = WAIT) -> str | None:
        """The next line."""
        return self.read(1, timeout)[0]

    def until(
        self, wanted: str | Callable[[str], bool], timeout: float = WAIT
    ) -> list[str]:
        """Read up to and including a line that is C{wanted}; all of them."""
        match = wanted if callable(wanted) else wanted.__eq__
        deadline = time.monotonic() + timeout
        lines: list[str] = []
        while True:
            got, line = self._next(deadline)
            if not got or line is None:
                what = "the connection ended" if got else f"{timeout:g} s passed"
                pytest.fail(f"{what} before {wanted!r}; got {lines!r}")
            lines.append(line)
            if match(line):
                return lines

    def quiet(self, seconds: float = QUIET) -> list[str | None]:
        """Whatever arrives within C{seconds} (C{[]} if nothing does)."""
        return self.arrived_by(time.monotonic() + seconds)

    def arrived_by(self, deadline: float) -> list[str | None]:
        """Whatever arrives before C{deadline}, or is already buffered."""
        lines: list[str | None] = []
        while True:
            got, line = self._next(deadline)
            if not got:
                return lines
            lines.append(line)
            if line is None:
                return lines

    def sync(self, token: str) -> list[str]:
        """Send C{/ping TOKEN}; the lines that arrived before its PONG."""
        self.send(f"/ping {token}")
        return self.until(f"*** PONG {token}")[:-1]


@dataclass
class Node:
    """One node of the cluster: its twistd process and its port."""

    name: str
    server: Server
    port: int

    def wait_for_output(self, text: str, count: int = 1, timeout: float = WAIT) -> None:
        """Wait until the node's log holds C{text} at least C{count} times."""
        deadline = time.monotonic() + timeout
        while self.server.output().count(text) < count:
            if self.server.process.poll() is not None:
                pytest.fail(f"node {self.name} exited:\n{self.server.output()}")
            if time.monotonic() > deadline:
                pytest.fail(
                    f"node {self.name} did not log {text!r} within {timeout:g} s:\n"
                    + self.server.output()
                )
            time.sleep(0.05)


class Cluster:
    """Starts nodes of one cluster and opens clients to them."""

    def __init__(
        self,
        twistd: Callable[..., Server],
        connect: Callable[[int], Client],
        redis: RedisServer,
        store: str,
    ) -> None:
        self.twistd = twistd
        self.connect = connect
        self.redis = redis
        #: The PostgreSQL database the nodes share.
        self.store = store
        self.nodes: list[Node] = []

    def start(self, count: int, *args: str) -> list[Node]:
        """Start C{count} nodes; return once each is in touch with the others."""
        started = []
        for _ in range(count):
            port = free_port()
            server = self.twistd(
                f"tcp:{port}:interface=127.0.0.1",
                "--redis",
                self.redis.url,
                "--cluster",
                CLUSTER,
                "--node-ttl",
                str(NODE_TTL),
                "--resume-grace",
                "0",
                "--history",
                "0",
                "--store",
                self.store,
                *args,
            )
            node = Node("ABCDEFGH"[len(self.nodes)], server, port)
            self.nodes.append(node)
            started.append(node)
        for node in started:
            node.server.wait_for_port(node.port)
            node.wait_for_output(f"cluster {CLUSTER}: in touch with the other nodes")
        return started

    def greeted(self, node: Node) -> Client:
        """A new connection to C{node}, past its greeting."""
        client = self.connect(node.port)
        assert client.read(2) == GREETING
        return client

    def user(self, node: Node, nickname: str) -> tuple[Client, str]:
        """Register C{nickname} on C{node}: the client, and its welcome line."""
        client = self.greeted(node)
        client.send(nickname)
        client.name = nickname
        welcome = client.line()
        assert welcome is not None
        assert welcome.startswith(f"*** Welcome, {nickname}! Online ("), welcome
        assert client.line() == "*** Type /help for the commands."
        assert client.sync("registered") == []
        return client, welcome


@pytest.fixture
def cluster(
    twistd: Callable[..., Server], redis_server: RedisServer, postgres: str
) -> Iterator[Cluster]:
    """Nodes against the test's Redis; nodes and clients are gone afterwards."""
    opened = opened_by(Client)
    connect = next(opened)
    try:
        yield Cluster(twistd, connect, redis_server, postgres)
    finally:
        opened.close()  # closes every client


def assert_quiet(clients: tuple[Client, ...], seconds: float = QUIET) -> None:
    """Nothing more reaches any of C{clients} within C{seconds} (together)."""
    deadline = time.monotonic() + seconds
    late = [(client.name, client.arrived_by(deadline)) for client in clients]
    assert all(not lines for _, lines in late), late


def assert_clean(node: Node) -> None:
    """The node's log has no traceback and no unexpected cluster failure."""
    output = node.server.output()
    assert "Traceback" not in output, output
    assert "Unhandled" not in output, output


# The tests -------------------------------------------------------------------


def test_chat_crosses_nodes_once_in_order(cluster: Cluster) -> None:
    """Joins are announced across nodes; lines reach every node once, in order."""
    a, b, c = cluster.start(3)
    alice, welcome = cluster.user(a, "alice")
    assert welcome == "*** Welcome, alice! Online (1): alice"
    bob, welcome = cluster.user(b, "bob")
    assert welcome == "*** Welcome, bob! Online (2): alice, bob"
    assert alice.line() == "*** bob has joined #lobby"
    carol, welcome = cluster.user(c, "carol")
    assert welcome == "*** Welcome, carol! Online (3): alice, bob, carol"
    assert alice.line() == "*** carol has joined #lobby"
    assert bob.line() == "*** carol has joined #lobby"
    # dave, on B too, is in another room: the lobby's lines are not for him.
    dave, _ = cluster.user(b, "dave")
    for client in (alice, bob, carol):
        assert client.line() == "*** dave has joined #lobby"
    dave.send("/join #elsewhere")
    assert dave.sync("joined") == [
        "*** You are now in #elsewhere. No topic is set.",
        "*** In #elsewhere (1): dave",
    ]
    for client in (alice, bob, carol):
        assert client.line() == "*** dave has left #lobby (joined #elsewhere)"

    expected = [f"<alice> line {n:02d}" for n in range(20)]
    for n in range(20):
        alice.send(f"line {n:02d}")
    for client in (bob, carol):
        assert client.until(expected[-1]) == expected
    # Nothing more: no line twice, none echoed, none to the other room.
    assert_quiet((bob, carol, dave), 1.0)
    # 20 lines at once are over the flood limit: alice is told, once at most.
    assert alice.quiet(0.2) in ([], [FLOOD])
    # And back the other way, from the node with the most users.
    carol.send("hi from C")
    assert alice.line() == "<carol> hi from C"
    assert bob.line() == "<carol> hi from C"
    bob.send("hi from B")
    assert alice.line() == "<bob> hi from B"
    assert carol.line() == "<bob> hi from B"
    assert dave.quiet(0.5) == []
    for node in (a, b, c):
        assert_clean(node)


def test_nickname_race_has_one_winner(cluster: Cluster) -> None:
    """The same nickname typed at once on two nodes: one welcome, one refusal."""
    a, b = cluster.start(2)
    for round in range(8):
        name = f"zed{round}"
        first, second = cluster.greeted(a), cluster.greeted(b)
        first.send(name)
        second.send(name)
        answers = {first: first.line(), second: second.line()}
        welcomed = [
            c for c, line in answers.items() if line.startswith(f"*** Welcome, {name}!")
        ]
        refused = [
            c
            for c, line in answers.items()
            if line == f"!!! the nickname {name} is taken; choose another one"
        ]
        assert len(welcomed) == 1 and len(refused) == 1, answers
        (loser,) = refused
        # The loser is still connected, and can choose another nickname.
        loser.send(f"{name}-too")
        assert loser.line().startswith(f"*** Welcome, {name}-too! Online (")
        (winner,) = welcomed
        winner.sync("check")  # still there
    # Every nickname is held once across the cluster.
    checker, _ = cluster.user(a, "checker")
    names = [f"zed{n}" for n in range(8)] + [f"zed{n}-too" for n in range(8)]
    listed = sorted(["checker", *names], key=str.lower)
    checker.send("/users")
    assert checker.line() == f"*** Online ({len(listed)}): " + ", ".join(listed)


def test_who_users_and_msg_span_nodes(cluster: Cluster) -> None:
    """/who, /users, /rooms and /msg see and reach the users of every node."""
    a, b, c = cluster.start(3)
    alice, _ = cluster.user(a, "alice")
    bob, _ = cluster.user(b, "bob")
    carol, _ = cluster.user(c, "carol")
    assert alice.until("*** carol has joined #lobby") == [
        "*** bob has joined #lobby",
        "*** carol has joined #lobby",
    ]
    assert bob.line() == "*** carol has joined #lobby"
    bob.send("/join #dev")
    assert bob.sync("dev") == [
        "*** You are now in #dev. No topic is set.",
        "*** In #dev (1): bob",
    ]
    assert alice.line() == "*** bob has left #lobby (joined #dev)"
    assert carol.line() == "*** bob has left #lobby (joined #dev)"
    bob.send("/away lunch")
    assert bob.sync("away") == ["*** You are marked as away: lunch"]

    for client in (alice, carol):
        client.send("/users")
        assert client.line() == "*** Online (3): alice, bob (away), carol"
        client.send("/who")
        assert client.line() == "*** In #lobby (2): alice, carol"
        client.send("/who #dev")
        assert client.line() == "*** In #dev (1): bob (away: lunch)"
        client.send("/rooms")
        assert client.read(3) == ["*** Rooms (2):", "*** #dev (1)", "*** #lobby (2)"]
    bob.send("/who")
    assert bob.line() == "*** In #dev (1): bob (away: lunch)"

    alice.send("/msg BOB are you free at noon?")
    assert alice.read(2) == [
        "-> *bob* are you free at noon?",
        "*** bob is away: lunch",
    ]
    assert bob.line() == "*alice* are you free at noon?"
    bob.send("/msg carol psst")
    assert bob.line() == "-> *carol* psst"
    assert carol.line() == "*bob* psst"
    carol.send("/msg nobody hello?")
    assert carol.line() == "!!! nobody called nobody is online; try /who"
    assert_quiet((alice, bob, carol), 0.5)


def test_killed_node_users_leave_once(cluster: Cluster) -> None:
    """A node killed (SIGKILL): its users leave once on the others; names are free."""
    a, b, c = cluster.start(3)
    alice, _ = cluster.user(a, "alice")
    amy, _ = cluster.user(a, "amy")
    bob, _ = cluster.user(b, "bob")
    carol, _ = cluster.user(c, "carol")
    assert bob.until("*** carol has joined #lobby") == ["*** carol has joined #lobby"]
    assert carol.quiet(0.2) == []

    a.server.process.kill()
    a.server.process.wait(timeout=WAIT)
    assert alice.read(4) == [
        "*** amy has joined #lobby",
        "*** bob has joined #lobby",
        "*** carol has joined #lobby",
        None,
    ]
    assert amy.read(3) == [
        "*** bob has joined #lobby",
        "*** carol has joined #lobby",
        None,
    ]
    started = time.monotonic()
    leaves = {
        "*** alice has left (connection lost)",
        "*** amy has left (connection lost)",
    }
    for client in (bob, carol):
        seen = [client.line(timeout=NODE_TTL + 8) for _ in leaves]
        assert set(seen) == leaves, seen
    # Gone within the TTL and a heartbeat or two, not much later.
    assert time.monotonic() - started < NODE_TTL + 5
    assert_quiet((bob, carol))  # not told again on later heartbeats

    bob.send("/users")
    assert bob.line() == "*** Online (2): bob, carol"
    alice2, welcome = cluster.user(b, "alice")
    assert welcome == "*** Welcome, alice! Online (3): alice, bob, carol"
    amy2, welcome = cluster.user(c, "amy")
    assert welcome == "*** Welcome, amy! Online (4): alice, amy, bob, carol"
    assert bob.read(2) == ["*** alice has joined #lobby", "*** amy has joined #lobby"]
    assert carol.read(2) == ["*** alice has joined #lobby", "*** amy has joined #lobby"]
    assert alice2.line() == "*** amy has joined #lobby"
    assert_quiet((alice2, amy2, bob, carol), 1.0)
    for node in (b, c):
        assert_clean(node)


def test_redis_restart_mid_conversation(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """Redis gone: each user is told once, local chat goes on; then back."""
    a, b = cluster.start(2)
    alice, _ = cluster.user(a, "alice")
    amy, _ = cluster.user(a, "amy")
    bob, _ = cluster.user(b, "bob")
    assert alice.read(2) == ["*** amy has joined #lobby", "*** bob has joined #lobby"]
    assert amy.line() == "*** bob has joined #lobby"
    bob.send("before")
    assert alice.line() == "<bob> before"
    assert amy.line() == "<bob> before"

    redis_server.stop()
    for client in (alice, amy, bob):
        assert client.line() == DOWN
    alice.send("still here")
    assert amy.line() == "<alice> still here"
    amy.send("me too")
    assert alice.line() == "<amy> me too"
    # A newcomer on A meanwhile: registered locally, claimed in Redis later.
    ann, welcome = cluster.user(a, "ann")
    assert welcome == "*** Welcome, ann! Online (3): alice, amy, ann"
    for client in (alice, amy):
        assert client.line() == "*** ann has joined #lobby"
    alice.send("/users")
    assert alice.line() == "*** Online (3): alice, amy, ann"
    bob.send("/users")
    assert bob.line() == "*** Online (1): bob"
    assert bob.quiet(0.5) == []  # A's chat stays on A

    redis_server.start()
    for client in (alice, amy, ann):
        assert client.line(timeout=RECONNECT_WAIT) == BACK
    # bob, on the other node, is told once of ann, who came meanwhile.
    assert {bob.line(timeout=RECONNECT_WAIT), bob.line(timeout=RECONNECT_WAIT)} == {
        BACK,
        "*** ann has joined #lobby",
    }
    for node in (a, b):
        node.wait_for_output(
            f"cluster {CLUSTER}: in touch with the other nodes", count=2
        )
    # Both are back: cross-node chat again, both ways.
    alice.send("hello again")
    for client in (amy, ann, bob):
        assert client.line() == "<alice> hello again"
    bob.send("welcome back")
    for client in (alice, amy, ann):
        assert client.line() == "<bob> welcome back"
    for client in (alice, amy, ann, bob):
        client.send("/users")
        assert client.line() == "*** Online (4): alice, amy, ann, bob"
    # Nothing told twice: no second notice, no repeated joins or leaves.
    assert_quiet((alice, amy, ann, bob))
    # Joins and leaves after the outage are told once, on every node.
    eve, welcome = cluster.user(b, "eve")
    assert welcome == "*** Welcome, eve! Online (5): alice, amy, ann, bob, eve"
    for client in (alice, amy, ann, bob):
        assert client.line() == "*** eve has joined #lobby"
    amy.send("/quit bye")
    assert amy.read(2) == ["*** Goodbye.", None]
    for client in (alice, ann, bob, eve):
        assert client.line() == "*** amy has left (quit: bye)"
    ann.close()  # the newcomer of the outage, gone without a word
    for client in (alice, bob, eve):
        assert client.line() == "*** ann has left (connection lost)"
    eve.send("/quit")
    assert eve.read(2) == ["*** Goodbye.", None]
    for client in (alice, bob):
        assert client.line() == "*** eve has left (quit)"
    assert_quiet((alice, bob))
    for node in (a, b):
        assert_clean(node)


def test_sigterm_node_users_leave_once(cluster: Cluster) -> None:
    """A node stopped with SIGTERM: its users leave once on the other nodes."""
    a, b, c = cluster.start(3)
    alice, _ = cluster.user(a, "alice")
    amy, _ = cluster.user(a, "amy")
    bob, _ = cluster.user(b, "bob")
    carol, _ = cluster.user(c, "carol")
    assert bob.until("*** carol has joined #lobby") == ["*** carol has joined #lobby"]
    assert alice.read(3) == [
        "*** amy has joined #lobby",
        "*** bob has joined #lobby",
        "*** carol has joined #lobby",
    ]
    assert amy.read(2) == ["*** bob has joined #lobby", "*** carol has joined #lobby"]

    a.server.process.send_signal(signal.SIGTERM)
    # The node's own users hear of the shutdown, not of each other's leaving.
    for client in (alice, amy):
        assert client.read(2) == ["*** server shutting down", None]
    assert a.server.wait() in (0, -signal.SIGTERM)
    leaves = {
        "*** alice has left (server shutting down)",
        "*** amy has left (server shutting down)",
    }
    for client in (bob, carol):
        seen = [client.line() for _ in leaves]
        assert set(seen) == leaves, seen
    assert_quiet((bob, carol), NODE_TTL + 1.5)  # not again once the TTL runs out
    bob.send("/users")
    assert bob.line() == "*** Online (2): bob, carol"
    again, welcome = cluster.user(c, "alice")
    assert welcome == "*** Welcome, alice! Online (3): alice, bob, carol"
    assert_clean(a)
    output = a.server.output()
    assert output.count(" closed (server shutting down;") == 2, output


def redis_command(port: int, *args: str) -> bytes:
    """Send one command to Redis on C{port}; its first reply line."""
    request = f"*{len(args)}\r\n" + "".join(f"${len(a)}\r\n{a}\r\n" for a in args)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        reply = b""
        while not reply.endswith(b"\r\n"):
            chunk = sock.recv(1024)
            if not chunk:
                break
            reply += chunk
        return reply


def test_redis_back_with_commands_connection_failing(
    cluster: Cluster, redis_server: RedisServer
) -> None:
    """Redis back, but the command connection keeps dropping for a while.

    Each node has two connections to Redis: the subscription, and the one
    for commands, which reconnect on their own schedules.  Here the
    subscription comes back while every command connection is dropped
    (C{CLIENT KILL TYPE normal}) for longer than two call timeouts, as
    after a long outage when the two backoffs drift apart.  Once that
    stops, the nodes must still claim their users again: everyone lists
    everyone, and a private message crosses.

    A command connection dropped during its handshake (txredisapi logs
    "could not set dbid=0: Lost connection") has been seen never to come
    back: heartbeats fail with "Not connected" for good, while the users
    were told the other servers are reachable again.
    """
    a, b = cluster.start(2)
    alice, _ = cluster.user(a, "alice")
    bob, _ = cluster.user(b, "bob")
    assert alice.line() == "*** bob has joined #lobby"

    redis_server.stop()
    for client in (alice, bob):
        assert client.line() == DOWN
    redis_server.start()
    end = time.monotonic() + 12.0  # over two CALL_TIMEOUTs of 5 s
    while time.monotonic() < end:
        redis_command(redis_server.port, "CLIENT", "KILL", "TYPE", "normal")
        time.sleep(0.01)

    lines = {
        client.name: client.until(BACK, timeout=RECONNECT_WAIT)
        for client in (alice, bob)
    }
    assert lines == {"alice": [BACK], "bob": [BACK]}
    deadline = time.monotonic() + 3 * NODE_TTL + 5
    while True:
        answers = []
        for client in (alice, bob):
            client.send("/users")
            answers.append(client.line())
        if answers == ["*** Online (2): alice, bob"] * 2:
            break
        if time.monotonic() > deadline:
            pytest.fail(
                f"the users were not claimed again: {answers}\nnode A:\n"
                + a.server.output()[-3000:]
            )
        time.sleep(0.2)
    bob.send("/msg alice are you there?")
    assert bob.line() == "-> *alice* are you there?"
    assert alice.line() == "*bob* are you there?"


def test_resume_and_scrollback_on_another_node(cluster: Cluster) -> None:
    """A dropped session resumes on another node; the scrollback is shared."""
    a, b = cluster.start(2, "--resume-grace", "60", "--history", "10")

    def joined(node: Node, nickname: str) -> tuple[Client, str]:
        client = cluster.greeted(node)
        client.send(nickname)
        client.name = nickname
        token = client.until(lambda line: line.startswith("*** resume token: "))
        return client, token[-1].split()[3]

    alice, token = joined(a, "alice")
    bob, _ = joined(b, "bob")
    assert alice.line() == "*** bob has joined #lobby"
    bob.send("said before")
    assert alice.line() == "<bob> said before"

    alice.close()  # the connection drops: the session is held on A
    assert bob.line() == "*** alice lost connection"
    bob.send("while you were out")
    assert bob.sync("sent") == []

    again = cluster.greeted(b)
    again.name = "alice again"
    again.send(f"/resume alice {token}")
    assert again.until(lambda line: line.startswith("*** resume token: ")) == [
        "*** Resumed as alice in #lobby; 1 missed line follows:",
        "<bob> while you were out",
        "*** End of missed lines.",
        again.history[-1],
    ]
    assert bob.line() == "*** alice is back"
    again.send("back, on another server")
    assert bob.line() == "<alice> back, on another server"
    # A newcomer on node A sees the scrollback said on B.
    carol = cluster.greeted(a)
    carol.send("carol")
    history = carol.until("*** End of scrollback of #lobby.")
    assert [line[8:] for line in history if line.startswith("[")] == [
        "<bob> said before",
        "<bob> while you were out",
        "<alice> back, on another server",
    ]
    for client in (again, bob):
        assert client.line() == "*** carol has joined #lobby"
    assert_quiet((again, bob))
    for node in (a, b):
        assert_clean(node)


def test_line_said_just_before_a_resume_elsewhere(cluster: Cluster) -> None:
    """A resume sent right after a line on a third node replays that line."""
    a, b, c = cluster.start(3, "--resume-grace", "60")

    def token_of(client: Client) -> str:
        lines = client.until(lambda line: line.startswith("*** resume token: "))
        return lines[-1].split()[3]

    alice = cluster.greeted(a)
    alice.send("alice")
    alice.name = "alice"
    token = token_of(alice)
    bob = cluster.greeted(c)
    bob.send("bob")
    bob.name = "bob"
    token_of(bob)
    old, new = a, b
    for n in range(3):
        alice.close()  # held on the old node
        bob.until("*** alice lost connection")
        again = cluster.greeted(new)
        again.name = f"alice, round {n}"
        bob.send(f"just before {n}")
        again.send(f"/resume alice {token}")  # at once: no pause in between
        resumed = again.until(lambda line: line.startswith("*** resume token: "))
        assert resumed[:3] == [
            "*** Resumed as alice in #lobby; 1 missed line follows:",
            f"<bob> just before {n}",
            "*** End of missed lines.",
        ]
        token = resumed[-1].split()[3]
        bob.until("*** alice is back")
        alice, old, new = again, new, old
    for client in (alice, bob):
        client.send("/quit")
    for node in (a, b, c):
        assert_clean(node)


def test_history_is_shared_and_stored_once(cluster: Cluster) -> None:
    """A line said on one node is in /history on another, stored once."""
    import psycopg

    a, b = cluster.start(2)
    alice, _ = cluster.user(a, "alice")
    bob, _ = cluster.user(b, "bob")
    assert alice.line() == "*** bob has joined #lobby"
    alice.send("kept in postgres")
    assert bob.line() == "<alice> kept in postgres"
    deadline = time.monotonic() + WAIT
    while True:
        bob.send("/history 5")
        lines = bob.sync(f"history {time.monotonic()}")
        if len(lines) > 1 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert lines[0] == "*** History of #lobby: the last 1 line, times in UTC:", lines
    assert lines[1].endswith("] <alice> kept in postgres"), lines
    bob.send("/search postgres")
    assert bob.sync("search")[1].endswith("] <alice> kept in postgres")
    with psycopg.connect(cluster.store) as connection:
        rows = connection.execute("SELECT room, nick, text FROM history").fetchall()
    assert rows == [("#lobby", "alice", "kept in postgres")]
    for node in (a, b):
        assert_clean(node)
