"""Nobody can get another user cut off, and asking never cuts off the asker.

Unit tests on StringTransport and a fake clock: the allowance of private
messages per recipient, the caps on topics and away messages, the pages of
/who, /users and /rooms, answers that are never counted against the send
queue, and the output of a client that fell too far behind, kept for a
/resume.  The same attacks over real sockets are in
C{tests/test_sendq_network.py}.
"""

import pytest

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock

from chatservice import events
from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.resume import HeldClient
from chatservice.testing import FakeConnection, register
from chatservice.throttle import Allowances
from tests.test_protocol import _FillingTransport
from tests.test_resume import join, resume

# Pages and caps ------------------------------------------------------------


def _crowd(factory: ChatFactory, count: int) -> list[FakeConnection]:
    """C{count} users u00, u01, ... in the lobby, output discarded."""
    people = [
        register(factory, f"u{n:02}", host=f"10.0.{n // 100}.{n % 100}")
        for n in range(count)
    ]
    for person in people:
        person.output()
    return people


def test_who_pages_a_big_room(clock: Clock) -> None:
    """/who of a room of 65 lists 30 and says how to see the rest."""
    factory = ChatFactory(Settings(flood_burst=100), clock=clock)
    people = _crowd(factory, 65)
    asker = people[0]
    asker.enter("/who")
    names = ", ".join(f"u{n:02}" for n in range(30))
    assert asker.lines() == [
        f"*** In #lobby (65): {names}",
        "*** \N{HORIZONTAL ELLIPSIS} and 35 more; /who #lobby 2",
    ]
    asker.enter("/who #lobby 2", "/who 3")
    names = ", ".join(f"u{n:02}" for n in range(30, 60))
    last = ", ".join(f"u{n:02}" for n in range(60, 65))
    assert asker.lines() == [
        f"*** In #lobby (65), page 2: {names}",
        "*** \N{HORIZONTAL ELLIPSIS} and 5 more; /who #lobby 3",
        f"*** In #lobby (65), page 3: {last}",
    ]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/who 4", "!!! there is no page 4: /who #lobby has 3 pages"),
        ("/who #lobby 0", "!!! usage: /who [#ROOM] [PAGE]"),
        ("/who #lobby two", "!!! usage: /who [#ROOM] [PAGE]"),
        ("/who #lobby 1 2", "!!! usage: /who [#ROOM] [PAGE]"),
        ("/users 2", "!!! there is no page 2: /users has 1 page"),
        ("/users all", "!!! usage: /users [PAGE]"),
        ("/rooms -1", "!!! usage: /rooms [PAGE]"),
        ("/rooms \N{SUPERSCRIPT TWO}", "!!! usage: /rooms [PAGE]"),
        ("/who #lobby 1234567", "!!! usage: /who [#ROOM] [PAGE]"),
    ],
)
def test_bad_pages(clock: Clock, line: str, error: str) -> None:
    """A page that is not there, or not a number, gets a clear error."""
    factory = ChatFactory(Settings(flood_burst=100), clock=clock)
    asker = _crowd(factory, 65)[0]
    asker.enter(line)
    assert asker.lines() == [error]


def test_users_pages(clock: Clock) -> None:
    """/users lists 200 a page, then says how to see the rest."""
    factory = ChatFactory(Settings(flood_burst=300), clock=clock)
    asker = _crowd(factory, 210)[0]
    asker.enter("/users")
    (first, note) = asker.lines()
    assert first.startswith("*** Online (210): u00, u01, ")
    assert first.count(", ") == 199
    assert note == "*** \N{HORIZONTAL ELLIPSIS} and 10 more; /users 2"
    asker.enter("/users 2")  # sorted as text: u209 comes before u21
    names = ", ".join(f"u{n}" for n in range(90, 100))
    assert asker.lines() == [f"*** Online (210), page 2: {names}"]


def test_rooms_pages(clock: Clock) -> None:
    """/rooms lists 30 rooms a page, then says how to see the rest."""
    factory = ChatFactory(Settings(flood_burst=100), clock=clock)
    people = _crowd(factory, 33)
    for n, person in enumerate(people[1:]):
        person.enter(f"/join #r{n:02}")
    asker = people[0]
    asker.output()
    asker.enter("/rooms")
    lines = asker.lines()
    assert lines[:3] == ["*** Rooms (33):", "*** #lobby (1)", "*** #r00 (1)"]
    assert lines[-2:] == [
        "*** #r28 (1)",
        "*** \N{HORIZONTAL ELLIPSIS} and 3 more; /rooms 2",
    ]
    assert len(lines) == 32
    asker.enter("/rooms 2")
    assert asker.lines() == [
        "*** Rooms (33), page 2:",
        "*** #r29 (1)",
        "*** #r30 (1)",
        "*** #r31 (1)",
    ]


@pytest.mark.parametrize(
    ("command", "what"), [("/away", "an away message"), ("/topic", "a topic")]
)
def test_long_away_and_topic_refused(
    factory: ChatFactory, command: str, what: str
) -> None:
    """An away message or topic over 300 characters is refused, not cut."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.enter(f"{command} " + "é" * 300)
    alice.lines(), bob.lines()
    alice.enter(f"{command} " + "x" * 301)
    assert alice.lines() == [
        f"!!! {what} is at most 300 characters, and yours has 301; nothing was changed"
    ]
    assert bob.lines() == []
    bob.enter("/who", "/topic")
    assert bob.lines() == [
        f"*** In #lobby (2): alice{' (away: ' + 'é' * 300 + ')' if command == '/away' else ''}, bob",
        "*** Topic of #lobby: " + "é" * 300
        if command == "/topic"
        else "*** #lobby has no topic; set one with /topic TEXT",
    ]


def test_worst_who_page_is_small(clock: Clock) -> None:
    """A page of /who with the longest away messages is under 40 KB."""
    factory = ChatFactory(Settings(flood_burst=100), clock=clock)
    people = _crowd(factory, 40)
    for person in people:
        person.enter("/away " + "\N{PILE OF POO}" * 300)  # 4 bytes each
        person.output()
    people[0].enter("/who")
    assert 30 * 1200 < len(people[0].output()) < 40_000


# Private messages ------------------------------------------------------------


def test_private_messages_past_the_allowance_are_refused(clock: Clock) -> None:
    """Past 64 KiB at once, /msg to one user is refused to its senders."""
    factory = ChatFactory(Settings(flood_burst=100, max_line=8000), clock=clock)
    bob = register(factory, "bob")
    senders = [register(factory, f"s{n}") for n in range(3)]
    bob.output()
    text = "x" * 6000
    for _ in range(4):
        for sender in senders:
            sender.enter(f"/msg bob {text}")
    received = bob.lines()
    assert len(received) == 10  # 10 lines of 6,006 bytes fit in 65,536
    assert set(received) == {f"*s{n}* {text}" for n in range(3)}
    echoes = [
        line for s in senders for line in s.lines() if not line.endswith("#lobby")
    ]
    refused = [line for line in echoes if line.startswith("!!! ")]
    assert len(refused) == 2
    assert refused[0] == (
        "!!! bob is being sent too many private messages (at most 16 KiB a "
        "second from everyone together); yours was not sent: try again in 1 second"
    )
    assert len(echoes) - len(refused) == 10


def test_private_allowance_refills_and_is_per_recipient(clock: Clock) -> None:
    """The allowance comes back over time; other recipients are not limited."""
    factory = ChatFactory(
        Settings(flood_burst=100, private_burst=3000, private_rate=1024), clock=clock
    )
    bob, carol, alice = (register(factory, n) for n in ["bob", "carol", "alice"])
    bob.output()
    text = "x" * 2000  # 2,010 bytes as sent
    alice.enter(f"/msg bob {text}", f"/msg bob {text}", "/msg carol hi")
    assert alice.lines() == [
        f"-> *bob* {text}",
        "!!! bob is being sent too many private messages (at most 1 KiB a "
        "second from everyone together); yours was not sent: try again in 1 second",
        "-> *carol* hi",
    ]
    clock.advance(1)
    alice.enter(f"/msg bob {text}")
    assert alice.lines() == [f"-> *bob* {text}"]
    assert bob.lines() == [f"*alice* {text}"] * 2


def test_msg_to_an_invalid_nickname_is_not_remembered(factory: ChatFactory) -> None:
    """/msg to a name no user can have fails at once and costs no memory."""
    alice = register(factory, "alice")
    alice.enter("/msg " + "z" * 100 + " hi", "/msg 1a hi")
    assert alice.lines() == [
        "!!! nobody called " + "z" * 100 + " is online; try /who",
        "!!! nobody called 1a is online; try /who",
    ]
    assert len(factory.private_allowance) == 0


def test_allowances_forget_full_buckets() -> None:
    """The table of allowances keeps only recipients recently sent to."""
    allowances = Allowances(rate=100, burst=1000, prune_at=10)
    for n in range(10):
        assert allowances.spend(f"u{n}", 500, now=0.0) == 0
    assert len(allowances) == 10
    assert allowances.spend("late", 500, now=100.0) == 0
    assert len(allowances) == 1
    assert allowances.spend("late", 600, now=100.0) == pytest.approx(1.0)
    assert allowances.spend("late", 10_000, now=110.0) == 0  # at most the burst


# Answers are never a reason to disconnect ---------------------------------


def test_answers_are_not_counted_against_the_send_queue(clock: Clock) -> None:
    """A client behind in reading gets its answers, and its next lines wait."""
    settings = Settings(max_sendq=10_000, flood_burst=100, max_line=10_000)
    factory = ChatFactory(settings, clock=clock)
    people = _crowd(factory, 30)
    alice, bob = people[0], people[1]
    for person in people:
        person.enter("/away " + "z" * 300)
    for person in people:
        person.output()
    bob.stop_reading()
    alice.enter("m" * 9000)  # bob is 9 kB behind
    bob.enter("/who", "/who", "/ping done")  # 9.5 kB each
    alice.enter("after")
    assert not bob.closing
    bob.resume_reading()
    lines = bob.lines()
    assert lines[0] == "<u00> " + "m" * 9000
    assert lines[1].startswith("*** In #lobby (30): u00 (away: zzz")
    # Its next lines were read only once it had caught up.
    assert lines[2] == "<u00> after"
    assert lines[3] == lines[1]
    assert lines[4:] == ["*** PONG done"]


def test_answers_filling_the_transport_at_once_are_not_counted(clock: Clock) -> None:
    """Ten pages asked in one read, 93 kB past max-sendq, do not cut the asker off."""
    factory = ChatFactory(Settings(max_sendq=10_000, flood_burst=100), clock=clock)
    for person in _crowd(factory, 30):
        person.enter("/away " + "z" * 300)
    bob = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002))
    transport = _FillingTransport()
    bob.makeConnection(transport)
    bob.dataReceived(b"bob\r\n")
    clock.advance(0)
    transport.clear()
    bob.dataReceived(b"/who\r\n" * 10 + b"/ping one\r\n")
    clock.advance(0)  # the iteration ends: 93 kB fill the transport
    bob.dataReceived(b"/ping two\r\n")
    clock.advance(0)
    assert not transport.disconnecting
    lines = transport.value().decode().split("\r\n")[:-1]
    assert len(lines) == 21  # ten pages of 30 of the 31, each with its note
    assert lines[-1] == "*** PONG one"  # /ping two waits: bob is behind
    transport.clear()
    transport.producer.resumeProducing()  # bob caught up
    clock.advance(0)
    assert transport.value() == b"*** PONG two\r\n"


def test_a_scrollback_filling_the_transport_is_not_counted(clock: Clock) -> None:
    """A welcome's scrollback of 95 kB, past max-sendq at once, does not cut the newcomer off."""
    settings = Settings(max_sendq=10_000, flood_burst=100, max_line=10_000)
    factory = ChatFactory(settings, clock=clock)
    alice = register(factory, "alice")
    for n in range(50):
        alice.enter(f"{n:02} " + "s" * 1900)
    bob = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002))
    transport = _FillingTransport()
    bob.makeConnection(transport)
    bob.dataReceived(b"bob\r\n")
    clock.advance(0)  # the iteration ends: the welcome fills the transport
    bob.dataReceived(b"/ping after\r\n")
    clock.advance(0)
    assert not transport.disconnecting
    lines = transport.value().decode().split("\r\n")[:-1]
    stamped = [line for line in lines if line.endswith("s" * 1900)]
    assert [line.split("> ")[1][:2] for line in stamped] == [
        f"{n:02}" for n in range(50)
    ]
    assert lines[-1].startswith("*** resume token: ")  # /ping waits
    transport.clear()
    transport.producer.resumeProducing()  # bob caught up
    clock.advance(0)
    assert transport.value() == b"*** PONG after\r\n"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b"x" * 10_001, "!!! line too long (max 10000 bytes)"),
        (b"\x80" * 4000, "!!! line too long (max 10000 bytes once decoded"),
        (b"\xff\xf1" * 65, "!!! line refused: more than 64 telnet commands in it"),
    ],
)
def test_refused_lines_are_answers(clock: Clock, line: bytes, error: str) -> None:
    """The refusal of a client's own bad line never cuts a client behind off."""
    settings = Settings(max_sendq=10_000, flood_burst=100, max_line=10_000)
    factory = ChatFactory(settings, clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.stop_reading()
    alice.enter("m" * (10_000 - 10 - len("<alice> \r\n")))  # bob: 10 bytes left
    bob.send(line + b"\r\n")
    assert not bob.closing
    bob.resume_reading()
    lines = bob.lines()
    assert lines[0].startswith("<alice> mmm")
    assert lines[1].startswith(error)


def test_others_traffic_still_counts(clock: Clock) -> None:
    """Lines from others still count, whatever answers wait."""
    settings = Settings(max_sendq=10_000, flood_burst=100, max_line=10_000)
    factory = ChatFactory(settings, clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.stop_reading()
    bob.enter("/help")
    alice.enter("m" * 5000)
    assert not bob.closing
    alice.enter("m" * 5000)
    assert bob.closing


# A client too far behind: its private messages are kept -----------------------


def test_overflow_keeps_private_messages_for_resume(clock: Clock) -> None:
    """Past max-sendq, held output is kept for /resume, private messages first."""
    factory = ChatFactory(
        Settings(max_sendq=10_000, flood_burst=1000, resume_buffer=20), clock=clock
    )
    bob, token = join(factory, "bob")
    alice, carol = register(factory, "alice"), register(factory, "carol")
    bob.output()
    bob.stop_reading()
    alice.enter("before")
    carol.enter("/msg bob one")
    for n in range(120):  # 12 kB: past max-sendq
        alice.enter(f"{n:03} " + "m" * 96)
    assert bob.closing
    carol.enter("/msg bob two")  # before the session is held
    clock.advance(0)
    carol.enter("/msg bob three")  # held
    for n in range(30):
        alice.enter(f"late {n}")
    bob.drop()
    again = resume(factory, "bob", token)
    lines = again.lines()
    assert lines[:2] == [
        "*** Resumed as bob in #lobby; 20 missed lines follow:",
        "*** 134 older missed lines were dropped.",
    ]
    missed = lines[2:22]
    assert [line for line in missed if line.startswith("*carol*")] == [
        "*carol* one",
        "*carol* two",
        "*carol* three",
    ]
    assert missed[-1] == "<alice> late 29"


def test_held_client_drops_room_lines_before_private_ones(factory: ChatFactory) -> None:
    """A held session over its limit drops its oldest room lines first."""
    session = register(factory, "bob").session
    held = HeldClient(session, factory.sessions, limit=3, max_bytes=10_000)
    held.deliver(events.private("alice", "one"))
    for n in range(5):
        held.deliver(events.chat("carol", str(n)))
        held.deliver(events.private("alice", f"p{n}")) if n == 2 else None
    missed, lines = held.missed()
    assert b"".join(e.line for e in missed).decode().split("\r\n")[:-1] == [
        "*alice* one",
        "*alice* p2",
        "<carol> 4",
    ]
    assert (lines, held.dropped) == (3, 4)
    for n in range(3):
        held.deliver(events.private("alice", f"q{n}"))
    missed, _ = held.missed()
    assert b"".join(e.line for e in missed).decode().split("\r\n")[:-1] == [
        "*alice* q0",
        "*alice* q1",
        "*alice* q2",
    ]


def test_unsent_output_is_trimmed_before_it_is_kept(factory: ChatFactory) -> None:
    """Of a long unsent backlog, only what can be kept is kept (and mirrored)."""
    session = register(factory, "bob").session
    mirrored: list[events.Event] = []
    held = HeldClient(
        session,
        factory.sessions,
        limit=3,
        max_bytes=10_000,
        mirror=lambda nickname, data, limit: mirrored.append(data),
    )
    backlog = [events.chat("carol", str(n)) for n in range(1000)]
    backlog[10] = events.private("alice", "early")
    backlog[500] = events.private("alice", "middle")
    held.keep_unsent(backlog)
    missed, lines = held.missed()
    assert b"".join(e.line for e in missed).decode().split("\r\n")[:-1] == [
        "*alice* early",
        "*alice* middle",
        "<carol> 999",
    ]
    assert (lines, held.dropped) == (3, 997)
    assert len(mirrored) == 5  # two private messages and three room lines
