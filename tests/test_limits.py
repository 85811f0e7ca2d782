"""Regression tests of the per-address limits (issue 13, points 5, 6 and 8).

Each test reproduces an attack from the review and checks what a user or an
operator sees: parallel /oper guessing from one address, failure tables
filled from many addresses, IPv6 and IPv4-mapped addresses escaping the
per-address limits, and held sessions escaping --max-per-ip.
"""

import pytest
import pytest_twisted
from harness import Harness, wait_until
from test_bans import HeldThreads
from test_resume import resume, token_of

from twisted.internet.task import Clock

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.operators import Operators, hash_password
from chatservice.testing import FakeConnection, register
from chatservice.throttle import FAILURES_MAX

OPERATORS = {"root": hash_password("s3cret", n=2**10)}
FAILED = "!!! operator login failed"
TOO_MANY = (
    "!!! too many /oper attempts under way from your address; "
    "try again when they are answered"
)
CANCELLED = "!!! /oper failed: it took too long and was cancelled"
WELCOME = "*** Welcome to chatservice."
RESUME_FAILED = "!!! resume failed: unknown nickname or wrong token"


def crowd(
    factory: ChatFactory, clock: Clock, names: list[str], host: str
) -> list[FakeConnection]:
    """Register C{names} from C{host}, within its connect rate; output dropped."""
    users = []
    for name in names:
        users.append(register(factory, name, host))
        clock.advance(0.1)
    for user in users:
        user.output()
    return users


def make_factory(clock: Clock, run_in_thread: object = run_at_once, **settings: object):
    """A server with one operator, root (password s3cret), on C{clock}."""
    factory = ChatFactory(
        Settings(**settings),  # type: ignore[arg-type]
        clock=clock,
        run_in_thread=run_in_thread,  # type: ignore[arg-type]
    )
    factory.operators = Operators(OPERATORS)
    return factory


# /oper guessing (point 6) ------------------------------------------------------


def test_parallel_oper_guesses_from_one_address_are_serialised(clock: Clock) -> None:
    """Forty connections from one address guessing for two minutes get ~16 answers.

    Before, each connection waited its delay in parallel: about 4 guesses a
    second.  Now one address has one check at a time, after its delay (3
    free, then 1, 2, 4, 8 and 10 s each), and one more queued; the others
    are told so at once.
    """
    factory = make_factory(clock)
    checks: list[str] = []
    real_check = factory.operators.check

    def counted(name: str, password: str) -> bool:
        checks.append(password)
        return real_check(name, password)

    factory.operators.check = counted  # type: ignore[method-assign]
    guessers = crowd(factory, clock, [f"g{n}" for n in range(40)], "203.0.113.9")
    answers: dict[str, int] = {FAILED: 0, TOO_MANY: 0}
    busy = set()
    for second in range(120):
        for n, guesser in enumerate(guessers):
            lines = guesser.lines()
            for line in lines:
                answers[line] += 1
            if lines or n not in busy:
                busy.add(n)
                guesser.enter(f"/oper root guess{second}-{n}")
        clock.advance(1)
    assert answers[FAILED] == len(checks)
    # 3 free, then 1+2+4+8 s, then one every 10 s (each waits for the last).
    assert 14 <= len(checks) <= 17, checks
    assert answers[TOO_MANY] > 1000
    # Another address is not slowed down by this one.
    root = register(factory, "root", "198.51.100.1")
    root.enter("/oper root s3cret")
    assert root.lines() == [
        "*** You are now an operator (root); /help lists your commands."
    ]


def test_oper_checks_run_one_at_a_time_in_all(clock: Clock) -> None:
    """Ten /oper from ten addresses run one scrypt check at a time, in order."""
    threads = HeldThreads()
    factory = make_factory(clock, threads)
    users = [crowd(factory, clock, [f"u{n}"], f"198.51.100.{n}")[0] for n in range(10)]
    for user in users:
        user.output()
    for user in users:
        user.enter("/oper root wrong")
    for n, user in enumerate(users):
        assert len(threads.calls) == n + 1  # only one in its thread at a time
        threads.finish(n)
        assert user.lines() == [FAILED]
    assert [user.lines() for user in users] == [[]] * 10


def test_too_many_oper_attempts_do_not_tell_which_names_exist(clock: Clock) -> None:
    """Past two attempts under way, an address is told so, whatever the name."""
    threads = HeldThreads()
    factory = make_factory(clock, threads)
    a, b, c, d = crowd(factory, clock, list("abcd"), "203.0.113.9")
    a.enter("/oper root wrong")
    b.enter("/oper root wrong")
    c.enter("/oper root s3cret")
    d.enter("/oper nobody s3cret")
    assert (c.lines(), d.lines()) == ([TOO_MANY], [TOO_MANY])
    assert len(threads.calls) == 1
    threads.finish(0)
    assert a.lines() == [FAILED]
    assert len(threads.calls) == 2  # b's check starts only now
    threads.finish(1)
    assert b.lines() == [FAILED]


def test_oper_attempt_cancelled_by_command_timeout_leaves_the_queue(
    clock: Clock,
) -> None:
    """An /oper waiting past --command-timeout is cancelled and never checked."""
    threads = HeldThreads()
    factory = make_factory(clock, threads, command_timeout=30)
    a, b = crowd(factory, clock, ["a", "b"], "203.0.113.9")
    a.enter("/oper root wrong")
    b.enter("/oper root s3cret")
    clock.advance(30)
    assert (a.lines(), b.lines()) == ([CANCELLED], [CANCELLED])
    threads.finish(0)  # a's check was running: it ends, and counts
    assert len(threads.calls) == 1  # b's was withdrawn, never run
    b.enter("/oper root s3cret")
    threads.finish(1)
    assert b.lines() == [
        "*** You are now an operator (root); /help lists your commands."
    ]


# Failure tables (point 8) ----------------------------------------------------


def test_failed_resumes_from_many_addresses_stay_bounded(clock: Clock) -> None:
    """Failed /resume from 12,000 addresses keep at most FAILURES_MAX entries.

    An address that keeps guessing stays among the newest, so it stays slowed
    down.
    """
    factory = make_factory(clock)
    for n in range(12_000):
        guesser = FakeConnection(factory, f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}")
        guesser.enter("/resume alice AAAAAAAAAAAAAAAAAAAAAA")
        guesser.drop()
        clock.advance(0.001)
        if n % 1000 == 0:
            mallory = FakeConnection(factory, "203.0.113.66")
            mallory.enter("/resume alice AAAAAAAAAAAAAAAAAAAAAA")
            mallory.drop()
    assert len(factory.resume_failures) <= FAILURES_MAX
    mallory = FakeConnection(factory, "203.0.113.66")
    mallory.output()
    mallory.enter("/resume alice AAAAAAAAAAAAAAAAAAAAAA")
    assert mallory.lines() == []  # 12 failures: it waits the longest delay
    clock.advance(10)
    assert mallory.lines() == [RESUME_FAILED]


@pytest.mark.parametrize(
    "first, second, shared",
    [
        ("2001:db8:1:2::a", "2001:db8:1:2:ffff:ffff:ffff:ffff", True),
        ("2001:db8:1:2::a", "2001:db8:1:3::a", False),
        ("203.0.113.5", "::ffff:203.0.113.5", True),
    ],
)
def test_resume_slowdown_keys(
    clock: Clock, first: str, second: str, shared: bool
) -> None:
    """Failures from one IPv6 /64, or an IPv4 address written mapped, add up."""
    factory = make_factory(clock)
    for _ in range(3):
        FakeConnection(factory, first).enter("/resume alice AAAAAAAAAAAAAAAAAAAAAA")
    other = FakeConnection(factory, second)
    other.output()
    other.enter("/resume alice AAAAAAAAAAAAAAAAAAAAAA")
    assert (other.lines() == []) is shared


def test_max_per_ip_counts_an_ipv6_64_as_one_address(clock: Clock) -> None:
    """Connections from new addresses of one /64 count against one --max-per-ip."""
    factory = make_factory(clock, max_per_ip=2)
    FakeConnection(factory, "2001:db8:1:2::1")
    FakeConnection(factory, "2001:db8:1:2::2")
    refused = FakeConnection(factory, "2001:db8:1:2::3")
    assert refused.lines() == ["!!! too many connections from your address (at most 2)"]
    assert FakeConnection(factory, "2001:db8:1:3::1").lines()[0] == WELCOME


def test_connect_rate_counts_an_ipv6_64_as_one_address(clock: Clock) -> None:
    """A new address of the same /64 for every connection meets --max-connect-rate."""
    factory = make_factory(clock)
    for n in range(10):
        FakeConnection(factory, f"2001:db8:1:2::{n + 1:x}")
    refused = FakeConnection(factory, "2001:db8:1:2::ff")
    assert refused.lines()[0].startswith("!!! too many new connections")


def test_connect_rate_table_bounded_in_a_burst(clock: Clock) -> None:
    """40,000 addresses connecting in the same instant do not grow the table past its cap."""
    from chatservice.factory import CONNECTS_MAX

    factory = make_factory(clock)
    for n in range(40_000):
        FakeConnection(factory, f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}").drop()
    assert len(factory._connects) <= CONNECTS_MAX + 1


@pytest_twisted.ensureDeferred
async def test_ipv4_mapped_address_counts_as_the_ipv4_one(chat: Harness) -> None:
    """An IPv4 client reaching a dual-stack listener is the same address as on IPv4."""
    chat.start(
        listen=("tcp:0:interface=127.0.0.1", r"tcp6:0:interface=\:\:ffff\:127.0.0.1"),
        max_per_ip=1,
    )
    await chat.greeted(port=chat.ports[0])
    mapped = await chat.connect(port=chat.ports[1])
    await wait_until(lambda: mapped.disconnected, "the refused client's close")
    assert mapped.lines == ["!!! too many connections from your address (at most 1)"]


# Held sessions (point 5) -----------------------------------------------------


def join_from(
    factory: ChatFactory, clock: Clock, nickname: str, host: str
) -> tuple[FakeConnection, str]:
    """Register C{nickname} from C{host}; return the connection and its token."""
    connection = FakeConnection(factory, host)
    connection.enter(nickname)
    clock.advance(0.1)  # within --max-connect-rate
    return connection, token_of(connection.lines())


def test_register_and_drop_loop_holds_at_most_max_per_ip(clock: Clock) -> None:
    """Ten register-and-drop cycles from one address leave its last three held.

    Each new session past --max-per-ip (3) ends the oldest held session of
    the address, which the room hears leave as if its grace had ended.
    """
    factory = make_factory(clock, max_per_ip=3)
    watcher = register(factory, "watcher", "198.51.100.1")
    tokens = []
    for n in range(10):
        user, token = join_from(factory, clock, f"u{n}", "203.0.113.9")
        tokens.append(token)
        user.drop()
    expected = []
    for n in range(10):
        expected.append(f"*** u{n} has joined #lobby")
        if n >= 3:
            expected.append(f"*** u{n - 3} has left (connection lost)")
        expected.append(f"*** u{n} lost connection")
    assert watcher.lines() == expected
    assert len(factory.sessions) == 3
    assert resume(factory, "u0", tokens[0]).lines() == [RESUME_FAILED]
    assert resume(factory, "u9", tokens[9]).lines()[0].startswith("*** Resumed as u9")


def test_nat_users_all_resume_after_an_outage(clock: Clock) -> None:
    """Users behind one address, all dropped at once, all resume at the limit."""
    factory = make_factory(clock, max_per_ip=3)
    watcher = register(factory, "watcher", "198.51.100.1")
    users = [join_from(factory, clock, name, "203.0.113.9") for name in "abc"]
    for connection, _ in users:
        connection.drop()
    returning = [FakeConnection(factory, "203.0.113.9") for _ in users]
    for connection, (_, token), name in zip(returning, users, "abc", strict=True):
        connection.output()
        connection.enter(f"/resume {name} {token}")
        assert connection.lines()[0].startswith(f"*** Resumed as {name}")
    assert [line for line in watcher.lines() if "back" in line or "left" in line] == [
        "*** a is back",
        "*** b is back",
        "*** c is back",
    ]


def test_new_user_at_the_limit_ends_the_oldest_held_session(clock: Clock) -> None:
    """At --max-per-ip, a new user is let in and the oldest held session ends."""
    factory = make_factory(clock, max_per_ip=3)
    watcher = register(factory, "watcher", "198.51.100.1")
    (a, _), (b, b_token), _ = (
        join_from(factory, clock, name, "203.0.113.9") for name in "abc"
    )
    a.drop()
    b.drop()
    watcher.output()
    d, _ = join_from(factory, clock, "d", "203.0.113.9")
    assert watcher.lines() == [
        "*** d has joined #lobby",
        "*** a has left (connection lost)",
    ]
    assert not d.closing
    assert resume(factory, "b", b_token).lines()[0].startswith("*** Resumed as b")


def test_held_sessions_count_against_max_clients(clock: Clock) -> None:
    """At --max-clients, a new user ends the server's oldest held session."""
    factory = make_factory(clock, max_clients=3)
    a, _ = join_from(factory, clock, "a", "203.0.113.1")
    b, _ = join_from(factory, clock, "b", "203.0.113.2")
    a.drop()
    b.drop()
    watcher = register(factory, "watcher", "198.51.100.1")
    register(factory, "carol", "198.51.100.2")
    assert watcher.lines() == [
        "*** carol has joined #lobby",
        "*** a has left (connection lost)",
    ]
    assert len(factory.sessions) == 1


def test_resume_from_another_address_counts_there(clock: Clock) -> None:
    """A session resumed from a new address makes room among that address's held ones."""
    factory = make_factory(clock, max_per_ip=2)
    watcher = register(factory, "watcher", "198.51.100.1")
    x, _ = join_from(factory, clock, "x", "203.0.113.7")
    y, _ = join_from(factory, clock, "y", "203.0.113.7")
    mobile, token = join_from(factory, clock, "mobile", "192.0.2.1")
    for connection in (x, y, mobile):
        connection.drop()
    watcher.output()
    again = FakeConnection(factory, "203.0.113.7")
    again.output()
    again.enter(f"/resume mobile {token}")
    assert again.lines()[:3] == [
        "*** Resumed as mobile in #lobby; 1 missed line follows:",
        "*** x has left (connection lost)",
        "*** End of missed lines.",
    ]
    assert watcher.lines() == ["*** x has left (connection lost)", "*** mobile is back"]


def test_held_session_keeps_at_most_resume_buffer_bytes(clock: Clock) -> None:
    """Past --resume-buffer-bytes a held session drops its oldest lines."""
    factory = make_factory(clock, resume_buffer_bytes=1000)
    alice, token = join_from(factory, clock, "alice", "203.0.113.1")
    bob = register(factory, "bob", "198.51.100.1")
    alice.drop()
    for n in range(20):
        bob.enter(f"{n:02} " + "x" * 88)  # "<bob> NN xxx...\r\n": 100 bytes
        clock.advance(1)
    lines = resume(factory, "alice", token).lines()
    assert lines[:3] == [
        "*** Resumed as alice in #lobby; 10 missed lines follow:",
        "*** 10 older missed lines were dropped.",
        "<bob> 10 " + "x" * 88,
    ]
    assert lines[12] == "*** End of missed lines."


@pytest_twisted.ensureDeferred
async def test_register_and_drop_loop_over_tcp(chat: Harness) -> None:
    """Thirty register-and-drop cycles from 127.0.0.1 leave at most --max-per-ip held."""
    chat.start(resume_grace=60, max_per_ip=5)
    watcher = await chat.user("watcher")
    for n in range(30):
        user = await chat.user(f"u{n}")
        await wait_until(
            lambda user=user: user.lines[-1].startswith("*** resume token: "),
            "the token",
        )
        user.transport.loseConnection()
        await wait_until(
            lambda n=n: f"*** u{n} lost connection" in watcher.lines, "the drop"
        )
    left = [line for line in watcher.lines if "has left" in line]
    # The watcher is one of the five: four sessions are held.
    assert left == [f"*** u{n} has left (connection lost)" for n in range(26)]
    assert len(chat.factory.sessions) == 4
