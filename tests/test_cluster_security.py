"""A cluster under attack or in a race: each test reproduces one of issue 13's findings.

Every test runs against a real redis-server, on the real reactor, with
several nodes of one cluster in this process (see C{clusterharness}).
"""

import json

import pytest
from clusterharness import (
    Nodes,
    block,
    chatting,
    eventually,
    heard,
    in_greenlet,
    registered,
)
from prometheus_client import generate_latest

from twisted.internet.error import ConnectionLost
from twisted.logger import globalLogPublisher

from chatservice import events
from chatservice.cluster import ClusterRegistry
from chatservice.cluster.events import EVENT_MAX
from chatservice.cluster.registry import MISSED_BYTES
from chatservice.cluster.scripts import STREAM_EVENTS
from chatservice.metrics import collector_registry
from chatservice.reasons import CloseReason
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
    eventually(lambda: here.session.nickname == "alice", "alice on node A")
    there = FakeConnection(on_b)
    there.enter("alice")  # node B gives the nickname away meanwhile
    eventually(lambda: there.session.nickname == "alice", "alice on node B")
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


def _event(kind: str = "chat", **fields: object) -> dict:
    """A chat event as nodes share it (see L{chatservice.cluster.events.dumped})."""
    defaults = {"room": "#lobby", "nick": "mallory", "text": "hi"}
    value = {"type": kind, "time": 1796000000.5}
    for name in events.KINDS.get(kind, ("text",)):
        value[name] = fields.pop(name, defaults.get(name, ""))
    return {**value, **fields}


def _forge(node: ClusterRegistry, event: object) -> None:
    """Add C{event} to the cluster's stream, as a bad writer to Redis could."""
    text = event if isinstance(event, str) else json.dumps(event)
    block(
        node.core.command(
            "execute_command",
            "XADD",
            node.core.prefix + "events",
            "*",
            "o",
            "x",
            "e",
            text,
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
        alice, _ = chatting(on_a, "alice")
        for bad in (
            "not json",
            "[1, 2]",
            {"r": ["#lobby"], "d": "<x> a line, not an event\r\n"},
            {"r": ["#lobby"], "ev": 7},
            {"r": ["#lobby"], "ev": "<x> hi\r\n"},
            {"r": "#lobby", "ev": _event(text="rooms not a list")},
            {"r": ["#lobby"], "ev": _event(), "h": "soon"},
            {"r": ["#lobby"], "ev": _event(time="soon")},
            {"r": ["#lobby"], "ev": _event(time=1e300)},  # no date can show it
            {"r": ["#lobby"], "ev": _event(text=["hi"])},
            {"r": ["#lobby"], "ev": _event(nick="m" * 100)},
            {"r": ["#lobby"], "ev": _event(history=True)},
            {"r": ["#lobby"], "ev": _event(reason="a field chat has not")},
            {"r": ["#lobby"], "ev": _event("resume_token", token="spoofed")},
            {"r": ["#lobby"], "ev": _event("nonsense")},
            {"a": 1, "ev": {"type": "notice", "text": "no time"}},
            {"to": "ALICE!", "ev": _event("private", text="to no one")},
            {"to": "alice"},
            {"ban": ["0.0.0.0/0", None, "everyone", "root"]},
            {"ban": ["192.0.2.0/24", None, "spam", "root\x1b[2J"]},
            {"ban": "192.0.2.0/24"},
            {"unban": 7},
            {"what": 1},
            {"r": ["#lobby"], "ev": _event(text="x" * 9000)},
        ):
            _forge(a, bad)
        _forge(a, {"r": ["#lobby"], "ev": _event(text="\x1b]0;pwned\x07hi\x1b[2J")})
        _forge(a, {"to": "alice", "ev": _event("private", text="\x9b31mred\u202e")})
        _forge(a, {"r": ["#lobby"], "ev": _event("join", nick="eve\x1b[2J\n<alice>")})
        _forge(a, {"r": ["#lobby"], "ev": _event(text="two\x07\nlines\r\n\r")})
        _forge(a, {"a": 1, "ev": _event("notice", text="odd \ud800 text")})
        _forge(a, {"to": "alice", "k": "kicked by mallory: bye"})  # text: old
        _forge(a, {"to": "alice", "k": ["sleepy", None, ""]})  # no such kind
        _forge(a, {"to": "alice", "k": ["kicked", "mallory", "\x1b[5mbye"]})
        seen: list[str] = []
        heard(alice, "*** disconnected: kicked by mallory: bye", seen)
        assert seen == [
            "<mallory> hi",
            "*mallory* red",
            "*** eve<alice> has joined #lobby",
            "<mallory> two",
            "<mallory> lines",
            "<mallory> ",
            "*** odd \ufffd\ufffd\ufffd text",
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
            "to everyone",
            "ban",
            "unban",
            "unknown kind",
            "too long",
        }
    finally:
        globalLogPublisher.removeObserver(events.append)


def _resumed(connection: FakeConnection) -> list[str]:
    """What C{connection} was told from its resume on: missed lines, token."""
    eventually(
        lambda: any(line.startswith("*** resume token: ") for line in connection.seen),
        "the resume",
    )
    lines = connection.seen
    start = [line.startswith("*** Resumed") for line in lines].index(True)
    return lines[start:]


class _Seen(FakeConnection):
    """A connection that remembers every line it was sent."""

    @property
    def seen(self) -> list[str]:
        self._seen = getattr(self, "_seen", [])
        self._seen.extend(self.lines())
        return self._seen


@in_greenlet
def test_line_said_just_before_a_resume_elsewhere_is_replayed(nodes: Nodes) -> None:
    """A resume sent right after a line replays it, whatever node it is on."""
    on_a, on_b, on_c = nodes.servers(
        "window", count=3, resume_grace=60, flood_rate=1000.0, flood_burst=1000
    )
    alice, token = chatting(on_a, "alice")
    bob, _ = chatting(on_c, "bob")  # on a third node
    dave, _ = chatting(on_a, "dave")  # beside alice's held session
    old, new = on_a, on_b
    for n in range(6):
        alice.drop(ConnectionLost)
        heard(bob, "*** alice lost connection", [])
        again = _Seen(new, host=f"192.0.2.{n + 1}")
        # All in one go: the lines and the resume reach the nodes together.
        bob.enter(f"from c {n}", f"/msg alice private {n}")
        dave.enter(f"from a {n}")
        again.enter(f"/resume alice {token}")
        lines = _resumed(again)
        missed = lines[1 : lines.index("*** End of missed lines.")]
        assert sorted(missed) == sorted(
            [f"<bob> from c {n}", f"*bob* private {n}", f"<dave> from a {n}"]
        ), (n, lines)
        token = lines[-1].split()[3]
        eventually(lambda o=old: not len(o.sessions), "the old node lets go")
        alice, old, new = again, new, old
        if n == 2:
            dave.enter("/quit")
            dave.drop()
            dave, _ = chatting(old, "dave")  # now beside the held session
    for connection in (alice, bob, dave):
        connection.drop()


@in_greenlet
def test_a_replaced_token_works_nowhere(nodes: Nodes) -> None:
    """Once a resume replaced a token, the old one fails on every node at once."""
    on_a, on_b = nodes.servers("spent", resume_grace=60)
    a = on_a.registry
    alice, first = chatting(on_a, "alice")
    alice.drop(ConnectionLost)
    # Resumed on its own node: the token is spent everywhere, at once.
    here = _Seen(on_a, host="192.0.2.1")
    here.enter(f"/resume alice {first}")
    second = _resumed(here)[-1].split()[3]
    opened: list[FakeConnection] = []
    thief = FakeConnection(on_b, host="198.51.100.1")
    opened.append(thief)
    thief.enter(f"/resume alice {first}")
    heard(thief, "!!! resume failed: unknown nickname or wrong token", [])
    # Resumed on another node: the old node's copy of the token is no use.
    here.drop(ConnectionLost)
    there = _Seen(on_b, host="192.0.2.2")
    there.enter(f"/resume alice {second}")
    third = _resumed(there)[-1].split()[3]
    for server, host in ((on_a, "198.51.100.2"), (on_b, "198.51.100.3")):
        thief = FakeConnection(server, host=host)
        opened.append(thief)
        thief.enter(f"/resume alice {second}")
        heard(thief, "!!! resume failed: unknown nickname or wrong token", [])
    # While a node is cut off from Redis it resumes nobody, not even its own.
    there.drop(ConnectionLost)
    b = on_b.registry
    block(b.idle())
    b.link._down()
    cut_off = FakeConnection(on_b, host="192.0.2.3")
    opened.append(cut_off)
    cut_off.enter(f"/resume alice {third}")
    heard(cut_off, "!!! the other servers did not answer; try again in a moment", [])
    b.link._check()
    eventually(lambda: b.up, "node B back")
    back = _Seen(on_a, host="192.0.2.4")
    back.enter(f"/resume alice {third}")
    _resumed(back)
    thief = FakeConnection(on_b, host="198.51.100.4")
    opened.append(thief)
    thief.enter(f"/resume alice {third}")
    heard(thief, "!!! resume failed: unknown nickname or wrong token", [])
    assert not a.up or a.core.index.by_fold["alice"] is back.session
    for connection in [back, *opened]:
        connection.drop()


# Redis's memory, bounded in bytes ------------------------------------------


def _newest_event(node: ClusterRegistry) -> str:
    ((_, fields),) = block(
        node.core.command(
            "execute_command",
            "XREVRANGE",
            node.core.prefix + "events",
            "+",
            "-",
            "COUNT",
            1,
        )
    )
    return fields[3]


@in_greenlet
def test_the_event_stream_is_bounded_in_bytes(nodes: Nodes) -> None:
    """Events are at most EVENT_MAX bytes and the stream keeps about STREAM_EVENTS."""
    a = nodes.make("stream")
    b = nodes.make("stream")
    alice = registered(a, "alice")
    bob = registered(b, "bob")
    block(b.idle())
    # The longest line --max-line lets through, every byte of it invalid.
    worst = "\ufffd" * 2048
    a.say("#lobby", events.chat("alice", worst, "#lobby"), alice)
    block(a.idle())
    assert len(_newest_event(a).encode("utf-8")) <= EVENT_MAX
    seen: list[str] = []
    eventually(
        lambda: f"<alice> {worst}" in seen or seen.extend(bob.lines()), "the worst line"
    )
    # Longer (a larger --max-line), or all quotes (two bytes each in JSON):
    # it reaches the other nodes cut.
    for text in ("x" * 10_000, '"' * 5_000):
        a.say("#lobby", events.chat("alice", text, "#lobby"), alice)
        block(a.idle())
        assert len(_newest_event(a).encode("utf-8")) <= EVENT_MAX
        end = text[0] + "\u2026"
        eventually(
            lambda end=end: seen.extend(bob.lines()) or seen[-1].endswith(end), "cut"
        )
        shown = len(seen[-1].encode("utf-8"))
        assert (3400 if text[0] == '"' else 6900) < shown <= 7 * 1024
    for _ in range(STREAM_EVENTS + 300):
        a.broadcast("#lobby", events.notice("n"), None)
    block(a.idle())
    length = block(a.core.command("execute_command", "XLEN", a.core.prefix + "events"))
    assert STREAM_EVENTS <= int(length) <= STREAM_EVENTS + 100


@pytest.mark.parametrize("cap", [None, 16_000, 150_000])
@in_greenlet
def test_a_held_sessions_lines_in_redis_are_bounded_in_bytes(
    nodes: Nodes, cap: int | None
) -> None:
    """Events kept in Redis for a held session stop at --resume-buffer-bytes of JSON (64 KiB by default), the newest kept and handed over."""
    limit = MISSED_BYTES if cap is None else cap
    on_a, on_b = nodes.servers(
        f"held{cap}",
        resume_grace=60,
        resume_buffer=1000,
        flood_rate=1000.0,
        flood_burst=1000,
        **({} if cap is None else {"resume_buffer_bytes": cap}),
    )
    a = on_a.registry
    alice, token = chatting(on_a, "alice")
    bob, _ = chatting(on_b, "bob")
    alice.drop(ConnectionLost)
    heard(bob, "*** alice lost connection", [])
    filler = "y" * 990
    for n in range(200):
        bob.enter(f"{n:03} {filler}")
    eventually(
        lambda: (
            "alice" in a.core.index.by_fold
            and any(
                event.text.startswith("199 ")
                for event in a.core.index.by_fold["alice"].missed()[0]
            )
        ),
        "the lines held",
    )
    block(a.idle())
    kept = block(a.core.command("lrange", a.core.prefix + "missed:alice", 0, -1))
    size = int(block(a.core.command("get", a.core.prefix + "missed-bytes:alice")))
    # The JSON of each event, about 1,090 bytes: within one of the limit.
    assert size == sum(len(value.encode("utf-8")) for value in kept)
    assert limit - 1200 < size <= limit
    said = [json.loads(value) for value in kept]
    assert said[-1]["text"] == f"199 {filler}"
    assert {(e["type"], e["room"], e["nick"]) for e in said} == {
        ("chat", "#lobby", "bob")
    }
    again = _Seen(on_b, host="192.0.2.9")
    again.enter(f"/resume alice {token}")
    lines = _resumed(again)
    missed = lines[1 : lines.index("*** End of missed lines.")]
    # Handed over: the newest events whose JSON fits, the same as Redis kept.
    assert missed == [f"<bob> {e['text']}" for e in said]
    for connection in (again, bob):
        connection.drop()


@in_greenlet
def test_a_flood_of_users_and_rooms_costs_redis_one_answer(nodes: Nodes) -> None:
    """However many ask /users, /who or /rooms at once, Redis answers once."""
    a = nodes.make("roster")
    b = nodes.make("roster")
    for n in range(66):
        user = registered(b, f"user{n}")
        b.set_away(user, "z" * 300)
    alice = registered(a, "alice")
    block(b.idle())
    fetched: list[str] = []
    real = a.link.call

    def counting(script: str, *args: object) -> object:
        fetched.append(script)
        return real(script, *args)

    a.link.call = counting  # type: ignore[method-assign]
    try:
        asked = [a.users() for _ in range(320)]
        asked += [a.users("#lobby") for _ in range(320)]
        asked += [a.rooms() for _ in range(320)]
        answers = [block(d) for d in asked]
        assert fetched.count("users") == 2 and fetched.count("rooms") == 1
        assert len(answers[0]) == 67 and answers[0] == answers[319]
        # A change made here is seen at once.
        a.unregister(alice, CloseReason.quit())
        block(a.idle())
        assert len(block(a.users())) == 66
    finally:
        a.link.call = real  # type: ignore[method-assign]


@in_greenlet
def test_resume_from_a_node_that_does_not_hand_over(nodes: Nodes) -> None:
    """An old node that cannot hand over: the lines it stored are replayed."""
    on_a, on_b = nodes.servers("silent", resume_grace=60)
    a = on_a.registry
    alice, token = chatting(on_a, "alice")
    bob, _ = chatting(on_b, "bob")
    alice.drop(ConnectionLost)
    heard(bob, "*** alice lost connection", [])
    bob.enter("stored")
    eventually(
        lambda: (
            "alice" in a.core.index.by_fold
            and any(
                event.text == "stored"
                for event in a.core.index.by_fold["alice"].missed()[0]
            )
        ),
        "the line held",
    )
    block(a.idle())
    a.link._down()  # node A can no longer write to Redis: no hand-over
    try:
        again = _Seen(on_b, host="192.0.2.5")
        again.enter(f"/resume alice {token}")
        lines = _resumed(again)
        assert lines[:3] == [
            "*** Resumed as alice in #lobby; 1 missed line follows:",
            "<bob> stored",
            "*** End of missed lines.",
        ]
    finally:
        a.link._check()
    eventually(lambda: a.up, "node A back")
    for connection in (again, bob):
        connection.drop()
