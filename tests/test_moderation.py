"""Unit tests of operators: /oper, /kick, /ban, /unban, /bans, /wall, /stats."""

from pathlib import Path

import pytest

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.operators import Operators, hash_password
from chatservice.testing import FakeConnection, register

OPERATORS = {"root": hash_password("s3cret", n=2**10)}


def make_factory(clock: Clock, **settings: object) -> ChatFactory:
    factory = ChatFactory(
        Settings(**settings),  # type: ignore[arg-type]
        clock=clock,
        run_in_thread=run_at_once,
    )
    factory.operators = Operators(OPERATORS)
    return factory


@pytest.fixture
def server(clock: Clock) -> ChatFactory:
    """A server with one operator, root, whose password is s3cret."""
    return make_factory(clock)


def oper(
    factory: ChatFactory, nickname: str, host: str = "127.0.0.1"
) -> FakeConnection:
    """Register C{nickname} and log in as operator root."""
    connection = register(factory, nickname, host)
    connection.enter("/oper root s3cret")
    assert connection.lines() == [
        "*** You are now an operator (root); /help lists your commands."
    ]
    return connection


@pytest.fixture
def log_events() -> list[dict[str, object]]:
    """What is logged during the test."""
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


# /oper -------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["/oper root wrong", "/oper nobody s3cret"])
def test_oper_failure_is_one_line(server: ChatFactory, line: str) -> None:
    """A wrong name and a wrong password get the same answer."""
    alice = register(server, "alice")
    alice.enter(line)
    assert alice.lines() == ["!!! operator login failed"]


def test_oper_without_operators_file(clock: Clock) -> None:
    """With no operators configured, /oper fails the same way."""
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    alice = register(factory, "alice")
    alice.enter("/oper root s3cret")
    assert alice.lines() == ["!!! operator login failed"]


def test_oper_failures_slowed_down(server: ChatFactory, clock: Clock) -> None:
    """After three failures from an address, each answer waits longer."""
    alice = register(server, "alice")
    for _ in range(3):
        alice.enter("/oper root wrong")
        assert alice.lines() == ["!!! operator login failed"]
    alice.enter("/oper root s3cret")
    assert alice.lines() == []
    clock.advance(1)
    assert alice.lines() == [
        "*** You are now an operator (root); /help lists your commands."
    ]


def test_oper_slowdown_is_per_address(server: ChatFactory) -> None:
    """Failures from one address do not slow another down."""
    mallory = register(server, "mallory", "203.0.113.1")
    for _ in range(5):
        mallory.enter("/oper root wrong")
    oper(server, "alice", "198.51.100.1")


def test_failed_oper_logged(server: ChatFactory, log_events: list) -> None:
    """A failed /oper is logged with the name tried, never the password."""
    alice = register(server, "alice")
    alice.enter("/oper root hunter2")
    failed = [e for e in log_events if "failed /oper" in e["log_format"]]
    assert len(failed) == 1
    assert failed[0]["operator"] == "root"
    assert "hunter2" not in repr(log_events)


def test_operator_commands_refused_to_users(server: ChatFactory) -> None:
    """Users are told an operator command is for operators."""
    register(server, "bob")
    alice = register(server, "alice")
    alice.enter("/kick bob")
    assert alice.lines() == ["!!! /kick is for operators"]


def test_help_lists_operator_commands_to_operators_only(server: ChatFactory) -> None:
    """/help shows /kick and friends to operators, not to users."""
    alice = register(server, "alice")
    alice.enter("/help")
    assert not any("/kick" in line for line in alice.lines())
    root = oper(server, "root")
    root.enter("/help")
    listing = root.lines()
    for name in ["/kick", "/ban", "/unban", "/bans", "/wall", "/stats"]:
        assert any(line.startswith(f"*** {name} ") for line in listing), name


def test_operator_exempt_from_flood_control(server: ChatFactory) -> None:
    """An operator's lines are never throttled."""
    root = oper(server, "root")
    bob = register(server, "bob")
    root.send(b"x\n" * 100)
    assert bob.lines() == ["<root> x"] * 100


# /kick ---------------------------------------------------------------------------


def test_kick(server: ChatFactory, log_events: list) -> None:
    """A kicked user is told why and disconnected; the room is told once."""
    root = oper(server, "root")
    bob, carol = register(server, "bob"), register(server, "carol")
    root.output()
    bob.output()
    root.enter("/kick Bob spamming")
    assert bob.lines() == ["*** disconnected: kicked by root: spamming"]
    assert bob.closing
    assert carol.lines() == ["*** bob has left (kicked by root: spamming)"]
    assert root.lines() == [
        "*** bob has left (kicked by root: spamming)",
        "*** bob was kicked.",
    ]
    kicks = [e for e in log_events if "kicked" in e["log_format"]]
    assert [(e["operator"], e["target"]) for e in kicks] == [("root", "bob")]


def test_kick_unknown(server: ChatFactory) -> None:
    """Kicking nobody is an error."""
    root = oper(server, "root")
    root.enter("/kick ghost")
    assert root.lines() == ["!!! nobody called ghost is online; try /who"]


# /ban ------------------------------------------------------------------------------


def test_ban_nickname_refuses_address(server: ChatFactory, clock: Clock) -> None:
    """Banning a nickname closes its connection and refuses its address."""
    root = oper(server, "root")
    bob = register(server, "bob", "203.0.113.7")
    root.output()
    root.enter("/ban bob 1h flooding")
    assert bob.lines() == ["*** disconnected: banned: flooding"]
    assert root.lines() == [
        "*** bob has left (banned: flooding)",
        "*** Banned 203.0.113.7/32 (bob) for 1h: flooding.",
    ]
    again = FakeConnection(server, "203.0.113.7")
    assert again.lines() == [
        "!!! you are banned from this server until 1970-01-01 01:00 UTC: flooding"
    ]
    assert again.closing
    assert FakeConnection(server, "203.0.113.8").lines()[0].startswith("*** Welcome")
    clock.advance(3600)
    assert FakeConnection(server, "203.0.113.7").lines()[0].startswith("*** Welcome")


def test_ban_network_closes_all_matching(server: ChatFactory) -> None:
    """Banning a network closes every connection from it, registered or not."""
    root = oper(server, "root")
    bob = register(server, "bob", "198.51.100.20")
    lurker = FakeConnection(server, "198.51.100.99")
    root.enter("/ban 198.51.100.0/24")
    assert bob.closing and lurker.closing
    assert FakeConnection(server, "198.51.100.1").lines() == [
        "!!! you are banned from this server"
    ]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/ban ghost", "!!! nobody called ghost is online; try /who"),
        ("/ban 1337", "!!! nobody called 1337 is online; try /who"),
        ("/ban 10.1.2.3 2hrs spam", None),
        ("/ban 10.1.2.3 1.5", None),
        (
            "/ban 127.0.0.1",
            "!!! 127.0.0.1/32 is your own address; you would be banned too",
        ),
        (
            "/ban 10.1.2.3 3 strikes",
            "!!! a duration needs a unit: 3m, 3h or 3d (or forever)",
        ),
        ("/ban 10.0.0.1/8", None),
        ("/ban 999.1.1.1", None),
        ("/unban 10.1.2.3", "!!! 10.1.2.3/32 is not banned; /bans lists the bans"),
    ],
)
def test_ban_errors(server: ChatFactory, line: str, error: str | None) -> None:
    """A ban of nothing, or of a malformed address, is a clear error."""
    root = oper(server, "root")
    root.enter(line)
    (answer,) = root.lines()
    assert answer.startswith("!!! ")
    if error is not None:
        assert answer == error


def test_bans_listed_and_lifted(server: ChatFactory, clock: Clock) -> None:
    """/bans lists the bans in force; /unban lifts one."""
    root = oper(server, "root")
    root.enter("/ban 203.0.113.0/24 2h abuse", "/ban 198.51.100.5")
    root.output()
    clock.advance(60)
    root.enter("/bans")
    assert root.lines() == [
        "*** Bans (2):",
        "*** 198.51.100.5/32 permanent, by root",
        "*** 203.0.113.0/24 until 1970-01-01 02:00 UTC (1h 59m left), by root: abuse",
    ]
    root.enter("/unban 203.0.113.0/24")
    assert root.lines() == ["*** Unbanned 203.0.113.0/24."]
    assert FakeConnection(server, "203.0.113.1").lines()[0].startswith("*** Welcome")


def test_bans_pages(server: ChatFactory) -> None:
    """/bans of 65 bans lists 30 and says how to see the rest, as /who does."""
    root = oper(server, "root")
    for n in range(65):
        root.enter(f"/ban 10.0.0.{n}")
    root.output()
    root.enter("/bans")
    lines = root.lines()
    assert lines[0] == "*** Bans (65):"
    assert lines[1:31] == [f"*** 10.0.0.{n}/32 permanent, by root" for n in range(30)]
    assert lines[31:] == ["*** \N{HORIZONTAL ELLIPSIS} and 35 more; /bans 2"]
    root.enter("/bans 3")
    lines = root.lines()
    assert lines[0] == "*** Bans (65), page 3:"
    assert len(lines) == 6  # the last five, and no note
    root.enter("/bans 4", "/bans x")
    assert root.lines() == [
        "!!! there is no page 4: /bans has 3 pages",
        "!!! usage: /bans [PAGE]",
    ]


def _behind(server: ChatFactory, root: FakeConnection, margin: int) -> None:
    """Get C{root} to within C{margin} bytes of --max-sendq behind in reading."""
    talker = register(server, "talker", "192.0.2.1")
    root.output()
    root.stop_reading()
    talker.enter("m" * (server.settings.max_sendq - margin - len("<talker> \r\n")))
    assert not root.closing


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("/bans", "*** Bans (40):"),
        ("/stats", "*** Server stats, up 0s:"),
        ("/ban 198.51.100.7", "*** Banned 198.51.100.7/32 (198.51.100.7) permanently."),
        ("/unban 10.0.0.1", "*** Unbanned 10.0.0.1/32."),
        ("/kick victim", "*** victim was kicked."),
    ],
)
def test_operator_answers_never_cut_the_operator_off(
    clock: Clock, line: str, answer: str
) -> None:
    """An operator behind in reading gets its commands' answers, and stays."""
    server = make_factory(clock, max_sendq=10_000, max_line=20_000, flood_burst=100)
    root = oper(server, "root")
    for n in range(40):
        root.enter(f"/ban 10.0.0.{n} " + "r" * 200)  # /bans: 9 kB
    # In another room: its leave, a line from others, is not counted here.
    register(server, "victim", "192.0.2.2").enter("/join #elsewhere")
    _behind(server, root, margin=10)
    root.enter(line)
    assert not root.closing
    root.resume_reading()
    lines = root.lines()
    assert lines[0].startswith("<talker> mmm")
    assert answer in lines


def test_bans_survive_restart(clock: Clock, tmp_path: Path) -> None:
    """Bans are kept in the --bans file and refused by the next server."""
    path = str(tmp_path / "bans.json")
    first = make_factory(clock, bans=path)
    first.load_bans()
    root = oper(first, "root")
    root.enter("/ban 203.0.113.0/24 permanent abuse")
    second = make_factory(clock, bans=path)
    second.load_bans()
    assert FakeConnection(second, "203.0.113.1").lines() == [
        "!!! you are banned from this server: abuse"
    ]


# /wall and /stats ------------------------------------------------------------------


def test_wall_reaches_every_room(server: ChatFactory) -> None:
    """/wall is a notice to everyone online, whatever their room."""
    root = oper(server, "root")
    bob, carol = register(server, "bob"), register(server, "carol")
    carol.enter("/join #elsewhere")
    bob.output()
    carol.output()
    root.output()
    root.enter("/wall restarting at noon")
    notice = "*** NOTICE from root: restarting at noon"
    assert bob.lines() == [notice]
    assert carol.lines() == [notice]
    assert root.lines() == [notice]


def test_stats(clock: Clock) -> None:
    """/stats counts connections, users, rooms, lines, drops and refusals."""
    server = make_factory(clock, idle_timeout=10**6)
    lurkers = [FakeConnection(server, "203.0.113.9") for _ in range(10)]
    FakeConnection(server, "203.0.113.9")  # refused: connect rate
    root = oper(server, "root")
    bob = register(server, "bob")
    bob.enter("hello", "/join #side", "hi", "/quit")
    bob.drop()
    clock.advance(3725)
    for lurker in lurkers:
        assert lurker.closing
        lurker.drop()
    root.output()
    root.enter("/stats")
    assert root.lines() == [
        "*** Server stats, up 1h 02m:",
        "*** connections 1 (peak 12), users 1, rooms 1",
        "*** lines received 8; chat lines said 2, delivered 1",
        "*** disconnects: quit 1, registration timeout 10",
        "*** refused: connect rate 1",
    ]


def test_operator_removed_on_reload(clock: Clock, tmp_path: Path) -> None:
    """An operator taken out of the file loses their rights on reload."""
    path = tmp_path / "operators"
    path.write_text(f"root {OPERATORS['root']}\n")
    factory = make_factory(clock, operators=str(path))
    factory.load_operators()
    root = oper(factory, "root")
    path.write_text("")
    factory.load_operators()
    assert root.lines() == ["*** Your operator rights were withdrawn."]
    root.enter("/stats")
    assert root.lines() == ["!!! /stats is for operators"]


def test_wrong_protocol_counted_by_kind(server: ChatFactory) -> None:
    """/stats tells HTTP clients from TLS clients among the disconnects."""
    web = FakeConnection(server)
    web.send(b"GET / HTTP/1.1\r\n")
    web.drop()
    tls = FakeConnection(server)
    tls.send(b"\x16\x03\x01")
    tls.drop()
    root = oper(server, "root")
    root.enter("/stats")
    assert (
        "*** disconnects: wrong protocol (HTTP) 1, wrong protocol (TLS on a plain "
        "port) 1"
    ) in root.lines()
