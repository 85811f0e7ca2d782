"""Unit tests of one connection: StringTransport and a fake clock."""

import re

import pytest

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionAborted, ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatservice import commands, events
from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.reasons import CloseReason
from chatservice.registry import Registry
from chatservice.testing import FakeConnection, register

GREETING = [
    "*** Welcome to chatservice.",
    "*** Choose a nickname: type it and press Enter (or use /nick NAME).",
]


@pytest.fixture
def pair(factory: ChatFactory) -> tuple[FakeConnection, FakeConnection]:
    """Alice and Bob, registered, output so far discarded."""
    alice = register(factory, "alice")
    bob = register(factory, "bob")
    alice.output()
    return alice, bob


# Framing -------------------------------------------------------------------

STREAM = b"alice\r\nhello\nsecond line\r\n\n  \r\nthird\n"


def _relayed_lines(factory: ChatFactory, chunks: list[bytes]) -> list[str]:
    bob = register(factory, "bob")
    client = FakeConnection(factory)
    for chunk in chunks:
        client.send(chunk)
    return bob.lines()


EXPECTED = [
    "*** alice has joined #lobby",
    "<alice> hello",
    "<alice> second line",
    "<alice> third",
]


@pytest.mark.parametrize("size", range(1, 9))
def test_framing_any_chunk_size(factory: ChatFactory, size: int) -> None:
    """Lines come out the same however the stream is cut, byte by byte too."""
    chunks = [STREAM[i : i + size] for i in range(0, len(STREAM), size)]
    assert _relayed_lines(factory, chunks) == EXPECTED


def test_framing_every_split_point(clock: Clock) -> None:
    """Lines come out the same for the stream cut in two at every point."""
    for cut in range(len(STREAM) + 1):
        factory = ChatFactory(Settings(), clock=clock)
        chunks = [STREAM[:cut], STREAM[cut:]]
        assert _relayed_lines(factory, chunks) == EXPECTED, cut


def test_many_lines_in_one_read(clock: Clock) -> None:
    """A thousand lines in one read are all relayed, in order (no flood limit)."""
    factory = ChatFactory(Settings(flood_burst=10_000), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.send(b"".join(b"line %d\n" % n for n in range(1000)))
    assert bob.lines() == [f"<alice> line {n}" for n in range(1000)]


def test_partial_line_waits(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """Nothing is relayed until the line's newline arrives."""
    alice, bob = pair
    alice.send(b"half a li")
    assert bob.lines() == []
    alice.send(b"ne\r")
    assert bob.lines() == []
    alice.send(b"\n")
    assert bob.lines() == ["<alice> half a line"]


def test_server_writes_crlf(factory: ChatFactory) -> None:
    """Every line the server writes ends in CRLF."""
    client = FakeConnection(factory)
    data = client.output()
    assert data.count(b"\r\n") == data.count(b"\n") == 2


# Greeting and registration ---------------------------------------------------


def test_greeting_asks_for_a_nickname(factory: ChatFactory) -> None:
    """A new connection is greeted and asked for a nickname."""
    assert FakeConnection(factory).lines() == GREETING


def test_first_line_is_nickname(factory: ChatFactory) -> None:
    """The first plain line registers; the welcome names the user and who is on."""
    bob = register(factory, "bob")
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("alice")
    *welcome, token = alice.lines()
    assert welcome == [
        "*** Welcome, alice! Online (2): alice, bob",
        "*** Type /help for the commands.",
    ]
    assert re.fullmatch(
        r"\*\*\* resume token: ([\w-]{22}) \(if your connection drops, reconnect "
        r"and send /resume alice \1 as your first line\)",
        token,
    )
    assert bob.lines() == ["*** alice has joined #lobby"]


def test_nick_command_registers(factory: ChatFactory) -> None:
    """/nick NAME registers too."""
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("/nick alice")
    assert alice.lines()[0] == "*** Welcome, alice! Online (1): alice"


def test_invalid_nickname_then_retry(factory: ChatFactory) -> None:
    """An invalid nickname gets an error and the client can try again."""
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("9lives")
    assert alice.lines() == [
        "!!! invalid nickname '9lives': use a letter first, then letters, "
        "digits, _ or -"
    ]
    alice.enter("alice")
    assert alice.lines()[0] == "*** Welcome, alice! Online (1): alice"


def test_invalid_nickname_by_nick_command(factory: ChatFactory) -> None:
    """/nick with an invalid nickname, before registration, says why; none is taken."""
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("/nick 9lives")
    assert alice.lines() == [
        "!!! invalid nickname '9lives': use a letter first, then letters, "
        "digits, _ or -"
    ]
    assert alice.session.nickname is None


def test_taken_nickname_then_retry(factory: ChatFactory) -> None:
    """A nickname taken ignoring case gets an error; another one works."""
    register(factory, "alice")
    other = FakeConnection(factory)
    other.output()
    other.enter("ALICE")
    assert other.lines() == ["!!! the nickname ALICE is taken; choose another one"]
    other.enter("alice2")
    assert other.lines()[0].startswith("*** Welcome, alice2!")


def test_commands_need_registration(factory: ChatFactory) -> None:
    """A command that needs a nickname says so before registration."""
    client = FakeConnection(factory)
    client.output()
    for line in ["/who", "/me waves", "/msg bob hi"]:
        client.enter(line)
        assert client.lines() == ["!!! choose a nickname first: type it, or /nick NAME"]


def test_ping_before_registration(factory: ChatFactory) -> None:
    """/ping answers before registration."""
    client = FakeConnection(factory)
    client.output()
    client.enter("/ping abc123")
    assert client.lines() == ["*** PONG abc123"]


# Chat ------------------------------------------------------------------------


def test_chat_line_not_echoed(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """A plain line goes to others as <nick> text, not back to the sender."""
    alice, bob = pair
    alice.enter("hello there")
    assert bob.lines() == ["<alice> hello there"]
    assert alice.lines() == []


def test_double_slash_escapes(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """//text sends a chat line starting with one slash."""
    alice, bob = pair
    alice.enter("//etc/passwd is a file")
    assert bob.lines() == ["<alice> /etc/passwd is a file"]


def test_blank_lines_ignored(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """Empty and blank lines are ignored."""
    alice, bob = pair
    alice.send(b"\n\r\n   \r\n\t\n")
    assert bob.lines() == alice.lines() == []


def test_action(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """/me shows an action to the others."""
    alice, bob = pair
    alice.enter("/me waves")
    assert bob.lines() == ["* alice waves"]
    assert alice.lines() == []


def test_private_message(factory: ChatFactory) -> None:
    """/msg reaches only its target; the sender sees an echo."""
    alice, bob, carol = (register(factory, n) for n in ["alice", "Bob", "carol"])
    for client in (alice, bob, carol):
        client.output()
    alice.enter("/msg bob psst, a secret")
    assert bob.lines() == ["*alice* psst, a secret"]
    assert alice.lines() == ["-> *Bob* psst, a secret"]
    assert carol.lines() == []


def test_private_message_errors(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """/msg to nobody, or without text, gets an error."""
    alice, _ = pair
    alice.enter("/msg zed hi")
    assert alice.lines() == ["!!! nobody called zed is online; try /who"]
    alice.enter("/msg bob")
    assert alice.lines() == ["!!! usage: /msg NICK TEXT"]


def test_rename(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """/nick NEW is announced to everyone, the renamed user included."""
    alice, bob = pair
    alice.enter("/nick alicia")
    assert alice.lines() == bob.lines() == ["*** alice is now known as alicia"]
    alice.enter("hi")
    assert bob.lines() == ["<alicia> hi"]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("/nick BOB", "!!! the nickname BOB is taken; choose another one"),
        ("/nick alice", "!!! you are already alice"),
        (
            "/nick 1x",
            "!!! invalid nickname '1x': use a letter first, then letters, digits, _ or -",
        ),
        ("/nick", "!!! usage: /nick NAME [PASSWORD]"),
    ],
)
def test_rename_errors(
    pair: tuple[FakeConnection, FakeConnection], line: str, error: str
) -> None:
    """A refused nick change says why and changes nothing."""
    alice, bob = pair
    alice.enter(line)
    assert alice.lines() == [error]
    assert bob.lines() == []


def test_who(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """/who lists who is online."""
    alice, _ = pair
    alice.enter("/who")
    assert alice.lines() == ["*** In #lobby (2): alice, bob"]


def test_ping_exact(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """/ping TOKEN answers exactly *** PONG TOKEN, and /ping alone *** PONG."""
    alice, bob = pair
    alice.enter("/ping 1700000000.123")
    alice.enter("/ping")
    assert alice.lines() == ["*** PONG 1700000000.123", "*** PONG"]
    assert bob.lines() == []


def test_help_lists_every_command(factory: ChatFactory) -> None:
    """/help has a line for each command in the table but operators' ones."""
    client = FakeConnection(factory)
    client.output()
    client.enter("/help")
    lines = client.lines()
    for usage in [
        "/nick NAME",
        "/who",
        "/me ACTION",
        "/msg NICK TEXT",
        "/ping [TOKEN]",
        "/quit [REASON]",
        "/help",
    ]:
        assert any(line.startswith(f"*** {usage} ") for line in lines), usage
    for_users = [c for c in factory.commands.values() if not c.operator_only]
    assert len(lines) == len(for_users) + 1


def test_command_names_ignore_case(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """Command names are case-insensitive."""
    alice, _ = pair
    alice.enter("/WHO")
    assert alice.lines() == ["*** In #lobby (2): alice, bob"]


def test_unknown_command(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """An unknown command gets an error naming /help."""
    alice, bob = pair
    alice.enter("/frobnicate now")
    assert alice.lines() == ["!!! unknown command /frobnicate; type /help for the list"]
    assert bob.lines() == []


def test_missing_argument(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """A command without its argument shows its usage."""
    alice, _ = pair
    alice.enter("/me")
    assert alice.lines() == ["!!! usage: /me ACTION"]


def test_failing_command_reported(
    pair: tuple[FakeConnection, FakeConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command that crashes gets the user an error; the connection goes on."""

    def broken(session: object, args: str) -> None:
        raise RuntimeError("bug")

    entry = commands.Command("broken", broken, "/broken", "crashes")
    alice, bob = pair
    monkeypatch.setitem(alice.session.server.commands, "broken", entry)
    alice.enter("/broken")
    assert alice.lines() == [
        "!!! /broken failed because of a server error; it was logged"
    ]
    alice.enter("still here")
    assert bob.lines() == ["<alice> still here"]


def test_coroutine_command_is_waited_for(
    pair: tuple[FakeConnection, FakeConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command written as a coroutine answers when it is done; later lines wait."""
    waiting: Deferred[str] = Deferred()

    async def slow(session: object, args: str) -> None:
        alice.session.answer(events.notice(await waiting))

    entry = commands.Command("slow", slow, "/slow", "waits")
    alice, bob = pair
    monkeypatch.setitem(alice.session.server.commands, "slow", entry)
    alice.enter("/slow", "after it")
    assert (alice.lines(), bob.lines()) == ([], [])
    waiting.callback("done")
    assert alice.lines() == ["*** done"]
    assert bob.lines() == ["<alice> after it"]


# Sanitising ------------------------------------------------------------------


def test_relayed_text_is_sanitised(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """Escape sequences and controls never reach another user's terminal."""
    alice, bob = pair
    alice.send(b"\x1b[2J\x1b]0;pwned\x07hi\x07 \xe2\x80\xae there\x00\xc2\x9b\r\n")
    alice.send(b"/me \x1b[5mblinks\r\n")
    alice.send(b"/msg bob \x1b[31msecret\r\n")
    assert bob.lines() == ["<alice> hi  there", "* alice blinks", "*alice* secret"]


def test_invalid_utf8_replaced(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """Invalid UTF-8 becomes U+FFFD."""
    alice, bob = pair
    alice.send(b"caf\xe9 ok\n")
    assert bob.lines() == ["<alice> caf\ufffd ok"]


def test_telnet_negotiation_dropped(factory: ChatFactory) -> None:
    """Telnet option negotiation before the nickname is refused, not read as it."""
    client = FakeConnection(factory)
    client.output()
    client.send(b"\xff\xfd\x03\xff\xfb\x18alice\r\n")
    assert client.output().startswith(
        b"\xff\xfc\x03\xff\xfe\x18*** Welcome, alice! Online (1): alice\r\n"
    )


# Line length -----------------------------------------------------------------


def test_line_at_limit_accepted(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """A line of exactly max-line bytes, CR aside, is relayed."""
    alice, bob = pair
    text = "x" * (2048 - len("//"))
    alice.send(b"//" + text.encode() + b"\r\n")
    assert bob.lines() == ["<alice> /" + text]


def test_long_line_refused_and_connection_kept(
    pair: tuple[FakeConnection, FakeConnection],
) -> None:
    """A long line gets an error, none of it is relayed, the next line works."""
    alice, bob = pair
    alice.send(b"y" * 2049 + b"\nafter\n")
    assert alice.lines() == ["!!! line too long (max 2048 bytes)"]
    assert bob.lines() == ["<alice> after"]
    assert not alice.closing


def test_endless_line_bounded(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """Megabytes without a newline: one error, bounded memory, then normal."""
    alice, bob = pair
    chunk = b"z" * 65536
    for _ in range(160):  # 10 MiB
        alice.send(chunk)
        assert len(alice.protocol._buffer) <= 2049
    alice.send(b"still the long line\nback to normal\n")
    assert alice.lines() == ["!!! line too long (max 2048 bytes)"]
    assert bob.lines() == ["<alice> back to normal"]


def test_long_line_in_small_pieces(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """A long line trickled in byte by byte is refused once, then discarded."""
    alice, bob = pair
    for byte in b"q" * 5000 + b"\nok\n":
        alice.send(bytes([byte]))
    assert alice.lines() == ["!!! line too long (max 2048 bytes)"]
    assert bob.lines() == ["<alice> ok"]


def test_max_line_setting(clock: Clock) -> None:
    """--max-line sets the limit in the error too."""
    factory = ChatFactory(Settings(max_line=10), clock=clock)
    client = FakeConnection(factory)
    client.output()
    client.enter("abcdefghijk")
    assert client.lines() == ["!!! line too long (max 10 bytes)"]


# Leaving ---------------------------------------------------------------------


def test_quit_with_reason(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """/quit REASON: others see it once; the connection closes."""
    alice, bob = pair
    alice.enter("/quit off to lunch")
    assert alice.lines() == ["*** Goodbye."]
    assert alice.closing
    assert bob.lines() == ["*** alice has left (quit: off to lunch)"]
    alice.drop()
    assert bob.lines() == []


def test_quit_without_reason(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """/quit alone is announced as (quit)."""
    alice, bob = pair
    alice.enter("/quit")
    assert bob.lines() == ["*** alice has left (quit)"]


def test_lines_after_quit_ignored(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """Lines after /quit in the same read are not acted on."""
    alice, bob = pair
    alice.send(b"/quit\nnot relayed\n")
    assert bob.lines() == ["*** alice has left (quit)"]


def test_bare_quit_then_close(pair: tuple[FakeConnection, FakeConnection]) -> None:
    """A QUIT line, then a close (as simple clients leave), is a /quit."""
    alice, bob = pair
    alice.send(b"QUIT\nnot relayed\n")
    alice.drop()
    assert alice.lines() == ["*** Goodbye."]
    assert bob.lines() == ["*** alice has left (quit)"]


@pytest.mark.parametrize("line", ["quit", "Quit", "QUIT now", " QUIT", "QUIT "])
def test_quit_as_chat(pair: tuple[FakeConnection, FakeConnection], line: str) -> None:
    """Only upper-case QUIT alone on its line quits; anything else is chat."""
    alice, bob = pair
    alice.enter(line)
    assert bob.lines() == [f"<alice> {line}"]
    assert not alice.closing


@pytest.mark.parametrize("line", ["QUIT", "  QUIT "])
def test_bare_quit_before_registration(factory: ChatFactory, line: str) -> None:
    """Before registration QUIT is not a nickname: it ends the connection."""
    bob = register(factory, "bob")
    client = FakeConnection(factory)
    client.output()
    client.enter(line)
    assert client.lines() == ["*** Goodbye."]
    assert client.closing
    assert client.session.nickname is None
    assert bob.lines() == []


@pytest.mark.parametrize("reason", [ConnectionDone, ConnectionLost])
def test_disconnect_announced_once(
    pair: tuple[FakeConnection, FakeConnection],
    clock: Clock,
    reason: type[Exception],
) -> None:
    """A closed or reset connection is announced once, then the leave once."""
    alice, bob = pair
    alice.drop(reason)
    assert bob.lines() == ["*** alice lost connection"]
    clock.advance(59)
    assert bob.lines() == []
    clock.advance(1)
    assert bob.lines() == ["*** alice has left (connection lost)"]


def test_unregistered_leaves_silently(factory: ChatFactory) -> None:
    """A connection that never registered is not announced."""
    bob = register(factory, "bob")
    FakeConnection(factory).drop()
    assert bob.lines() == []


# Timeouts --------------------------------------------------------------------


@pytest.fixture
def idle_pair(clock: Clock) -> tuple[FakeConnection, FakeConnection]:
    """Alice and Bob, registered on a server with --idle-timeout 300."""
    factory = ChatFactory(Settings(idle_timeout=300), clock=clock)
    alice = register(factory, "alice")
    bob = register(factory, "bob")
    alice.output()
    return alice, bob


def test_quiet_reader_stays(
    pair: tuple[FakeConnection, FakeConnection], clock: Clock
) -> None:
    """By default a user who only reads is never timed out, even after a day."""
    alice, bob = pair
    for hour in range(25):
        bob.enter(f"hour {hour}")
        clock.advance(3600)
    assert not alice.closing
    assert alice.lines() == [f"<bob> hour {hour}" for hour in range(25)]
    assert clock.getDelayedCalls() == []


def test_idle_timeout(
    idle_pair: tuple[FakeConnection, FakeConnection], clock: Clock
) -> None:
    """A registered user silent for the idle timeout is told and disconnected."""
    alice, bob = idle_pair
    clock.advance(1)
    bob.enter("/ping")  # bob's timer now ends a second after alice's
    clock.advance(298)
    assert not alice.closing
    clock.advance(1)
    assert alice.lines() == [
        "*** idle timeout: no input for 300 seconds; disconnecting"
    ]
    assert alice.closing
    assert bob.lines() == ["*** PONG", "*** alice lost connection"]
    alice.drop()
    bob.enter("/ping")
    clock.advance(60)
    assert bob.lines() == ["*** PONG", "*** alice has left (idle timeout)"]


def test_any_line_resets_idle_timer(
    idle_pair: tuple[FakeConnection, FakeConnection], clock: Clock
) -> None:
    """Every received line, /ping included, restarts the idle timer."""
    alice, _ = idle_pair
    for line in ["/ping", "hello", "/who", "/bogus", "x" * 3000]:
        clock.advance(299)
        alice.enter(line)
    clock.advance(299)
    assert not alice.closing


def test_partial_line_does_not_reset_timer(
    idle_pair: tuple[FakeConnection, FakeConnection], clock: Clock
) -> None:
    """A trickle of bytes with no newline does not keep a connection alive."""
    alice, _ = idle_pair
    for _ in range(300):
        alice.send(b"x")
        clock.advance(1)
    assert alice.closing


def test_register_timeout(factory: ChatFactory, clock: Clock) -> None:
    """A connection with no nickname after the register timeout is closed."""
    bob = register(factory, "bob")
    client = FakeConnection(factory)
    client.output()
    clock.advance(30)
    assert client.lines() == [
        "*** registration timeout: no nickname chosen within 30 seconds; disconnecting"
    ]
    assert client.closing
    assert bob.lines() == []


def test_register_timeout_counts_from_connect(
    factory: ChatFactory, clock: Clock
) -> None:
    """Lines before a nickname (a /ping every few seconds) do not extend the deadline."""
    client = FakeConnection(factory)
    client.output()
    for _ in range(5):
        clock.advance(5)
        client.enter("/ping")
    clock.advance(4.9)
    client.enter("/help ping")
    assert not client.closing
    clock.advance(0.1)
    assert client.lines()[-1] == (
        "*** registration timeout: no nickname chosen within 30 seconds; disconnecting"
    )
    assert client.closing


def test_timeouts_configurable(clock: Clock) -> None:
    """--idle-timeout and --register-timeout set the timers."""
    factory = ChatFactory(Settings(idle_timeout=5, register_timeout=2), clock=clock)
    waiting = FakeConnection(factory)
    alice = register(factory, "alice")
    clock.advance(2)
    assert waiting.closing and not alice.closing
    clock.advance(3)
    assert alice.closing


def test_close_deadline_aborts_non_reader(
    pair: tuple[FakeConnection, FakeConnection], clock: Clock
) -> None:
    """A closing connection whose client does not read is aborted in the end."""
    alice, _ = pair
    alice.enter("/quit")
    assert alice.closing and not alice.aborted
    clock.advance(5)
    assert alice.aborted


def test_timer_cancelled_on_disconnect(
    pair: tuple[FakeConnection, FakeConnection], clock: Clock
) -> None:
    """A dropped connection leaves no timer behind once its resume grace ends."""
    alice, bob = pair
    alice.drop()
    bob.drop()
    clock.advance(60)
    assert clock.getDelayedCalls() == []


# Slow readers ----------------------------------------------------------------


def test_output_held_then_flushed_in_order(
    pair: tuple[FakeConnection, FakeConnection],
) -> None:
    """While a client's transport is full, its output waits, then comes in order."""
    alice, bob = pair
    bob.stop_reading()
    for n in range(5):
        alice.enter(f"line {n}")
    assert bob.lines() == []
    bob.resume_reading()
    assert bob.lines() == [f"<alice> line {n}" for n in range(5)]


def test_send_queue_exceeded(clock: Clock) -> None:
    """A client that stops reading is closed past max-sendq; others go on."""
    factory = ChatFactory(Settings(max_sendq=10_000, flood_burst=1000), clock=clock)
    alice, bob, carol = (register(factory, n) for n in ["alice", "bob", "carol"])
    alice.output()
    bob.output()
    bob.stop_reading()
    line = "m" * 100
    for _ in range(200):  # 20 kB for bob
        alice.enter(line)
    assert bob.closing
    assert len(carol.lines()) == 200
    assert bob.lines() == []  # nothing more is sent to it
    clock.advance(0)  # the next reactor iteration: its session is held
    assert carol.lines() == ["*** bob lost connection"]
    assert alice.lines() == ["*** bob lost connection"]
    assert not bob.aborted
    clock.advance(factory.settings.shutdown_timeout)  # it still reads nothing
    assert bob.aborted
    bob.drop(ConnectionAborted)
    clock.advance(60)
    assert carol.lines() == ["*** bob has left (send queue exceeded)"]


def test_send_queue_counts_output_released_at_drain(clock: Clock) -> None:
    """Output handed over at a drain still counts until the next drain."""
    factory = ChatFactory(Settings(max_sendq=10_000), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    bob.stop_reading()
    alice.enter(*["x" * 1400] * 6)  # 8.5 kB held
    bob.resume_reading()  # handed to the transport, not yet sent
    bob.stop_reading()
    assert not bob.closing
    alice.enter("y" * 1000)
    assert not bob.closing
    alice.enter("z" * 1000)
    assert bob.closing


def test_close_sends_held_output_then_closes(
    pair: tuple[FakeConnection, FakeConnection],
) -> None:
    """/quit with output held still sends it all, and lets the close finish."""
    alice, bob = pair
    alice.stop_reading()
    bob.enter("one", "two")
    alice.enter("/quit")
    assert alice.lines() == ["<bob> one", "<bob> two", "*** Goodbye."]
    assert alice.transport.producer is None  # nothing holds the close back
    bob.enter("three")
    assert alice.lines() == []


def test_disconnect_tells_user_and_others(
    pair: tuple[FakeConnection, FakeConnection],
) -> None:
    """disconnect(REASON) tells the user, closes, and tells the others."""
    alice, bob = pair
    alice.session.disconnect(CloseReason.kicked("root", "spam"))
    assert alice.lines() == ["*** disconnected: kicked by root: spam"]
    assert alice.closing
    assert bob.lines() == ["*** alice has left (kicked by root: spam)"]


# Ordering with a registry that answers later -----------------------------------


class SlowRegistry(Registry):
    """A registry whose nickname claims are answered later, as over a network.

    It inherits L{IRegistryAtOnce} and C{register_now}: the welcome must
    still ask its C{register}, the override.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pending: list[Deferred[str]] = []

    def register(self, client, nickname):  # type: ignore[no-untyped-def]
        answer = super().register(client, nickname)
        later: Deferred[str] = Deferred()
        self.pending.append(later)
        return later.addCallback(lambda _: answer)


def test_lines_wait_for_registration(clock: Clock) -> None:
    """Lines after a nickname wait for the registry's answer, then go in order."""
    registry = SlowRegistry()
    factory = ChatFactory(Settings(), registry=registry, clock=clock)
    bob = register_now(factory, registry, "bob")
    alice = FakeConnection(factory)
    alice.output()
    alice.send(b"alice\nfirst\nsecond\n")
    assert alice.lines() == []
    assert bob.lines() == ["*** alice has joined #lobby"]
    registry.pending.pop().callback(None)
    assert alice.lines()[0].startswith("*** Welcome, alice!")
    assert bob.lines() == ["<alice> first", "<alice> second"]


def test_nothing_written_after_close(clock: Clock) -> None:
    """A registration answered after the timeout closed the connection is dropped."""
    registry = SlowRegistry()
    factory = ChatFactory(Settings(), registry=registry, clock=clock)
    bob = register_now(factory, registry, "bob")
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("alice")
    clock.advance(30)
    registry.pending.pop().callback(None)
    assert alice.lines() == [
        "*** registration timeout: no nickname chosen within 30 seconds; disconnecting"
    ]
    assert bob.lines()[-1] == "*** alice has left (registration timeout)"


def register_now(
    factory: ChatFactory, registry: SlowRegistry, nickname: str
) -> FakeConnection:
    client = FakeConnection(factory)
    client.enter(nickname)
    registry.pending.pop().callback(None)
    client.output()
    return client


# Output: one write per connection per reactor iteration ----------------------


class _CountingTransport(StringTransport):
    """A StringTransport that remembers each write."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)
        super().write(data)


def test_output_sent_once_per_iteration(clock: Clock) -> None:
    """Lines for a client go out together when the reactor iteration ends."""
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    address = IPv4Address("TCP", "127.0.0.1", 40001)
    bob = factory.buildProtocol(address)
    transport = _CountingTransport()
    bob.makeConnection(transport)
    bob.dataReceived(b"bob\r\n")
    clock.advance(0)
    transport.writes.clear()
    alice.send(b"one\ntwo\nthree\n")
    assert transport.writes == []  # not yet: the iteration goes on
    clock.advance(0)
    assert transport.writes == [b"<alice> one\r\n<alice> two\r\n<alice> three\r\n"]
    alice.send(b"four\n")
    clock.advance(0)
    assert transport.writes[1:] == [b"<alice> four\r\n"]
    waiting = [call.func for call in clock.getDelayedCalls()]
    assert factory.flusher.flush not in waiting


def test_close_sends_pending_output_first(clock: Clock) -> None:
    """A client told something and then closed gets it before the close."""
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    alice.send(b"/ping\n/quit\n")
    assert alice.transport.disconnecting
    assert alice.lines() == ["*** PONG", "*** Goodbye."]


def test_connection_state_in_slots(factory: ChatFactory) -> None:
    """A registered, chatting connection keeps no per-instance dict.

    Idle connections are most of a big server's memory; see the slots of
    LineProtocol and Session.
    """
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.enter("hello", "/join #x", "/away lunch")
    bob.lines()
    for connection in (alice, bob):
        assert vars(connection.protocol) == {}
        assert vars(connection.session) == {}


def test_one_failed_flush_does_not_mute_other_connections(clock: Clock) -> None:
    """A connection whose output cannot be sent does not mute the others."""
    factory = ChatFactory(Settings(), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")

    def broken(data: bytes) -> None:
        raise RuntimeError("a bug")

    alice.transport.write = broken  # type: ignore[method-assign]
    alice.protocol.deliver(events.notice("lost"))
    bob.protocol.deliver(events.notice("one"))
    factory.flusher.flush()  # logs alice's failure, goes on
    bob.protocol.deliver(events.notice("two"))
    assert bob.lines() == ["*** one", "*** two"]


def test_output_pending_when_transport_fills_keeps_its_place(clock: Clock) -> None:
    """Output delivered before the transport filled goes out before held output.

    The transport can fill while output waits for the end of the iteration
    when something else writes to it (TLS writing records of its own).
    """
    factory = ChatFactory(Settings(), clock=clock)
    bob = register(factory, "bob")
    bob.protocol.deliver(events.notice("one"))  # waits for the end of the iteration
    bob.stop_reading()  # the transport's buffer fills
    bob.protocol.deliver(events.notice("two"))  # held
    bob.resume_reading()  # it drains, in the same iteration
    assert bob.lines() == ["*** one", "*** two"]


class _FillingTransport(StringTransport):
    """Pauses its streaming producer past 64 KiB unsent, as tcp.Server does."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40002))

    def write(self, data: bytes) -> None:
        super().write(data)
        if self.producer is not None and self.streaming and len(self.value()) > 65536:
            self.producer.pauseProducing()

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))


def test_one_iteration_of_output_counts_against_max_sendq(clock: Clock) -> None:
    """One iteration's output beyond what the transport takes counts too.

    A client that reads nothing costs at most 64 KiB + max_sendq + one
    iteration's output, however much arrives for it at once, and only until
    the close deadline.
    """
    factory = ChatFactory(Settings(max_sendq=10_000, flood_burst=1000), clock=clock)
    alice = register(factory, "alice")
    bob = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40002))
    transport = _FillingTransport()
    bob.makeConnection(transport)
    bob.dataReceived(b"bob\r\n")
    clock.advance(0)
    transport.clear()
    alice.enter(*["x" * 100] * 1000)  # one reactor iteration, 111 KB for bob
    clock.advance(0)  # the iteration ends: the Flusher runs
    assert transport.disconnecting
    clock.advance(factory.settings.shutdown_timeout)
    assert transport.disconnected  # aborted: StringTransport's name for it


def test_output_to_a_lost_connection_is_not_counted_as_sent(
    factory: ChatFactory,
) -> None:
    """Output for a connection that is gone is dropped, not counted as sent."""
    alice = register(factory, "alice")
    alice.drop()
    before = factory.stats.bytes_out
    alice.protocol.deliver(events.notice("too late"))  # e.g. a command's late Deferred
    factory.flusher.flush()
    assert factory.stats.bytes_out == before


class _SoonerCountingClock(Clock):
    """A Clock that counts the timers moved sooner (C{DelayedCall.reset}).

    The reactor finds such a timer in its heap by a linear scan.
    """

    def __init__(self) -> None:
        super().__init__()
        self.moved_sooner = 0

    def callLater(self, delay, callable, *args, **kw):  # type: ignore[no-untyped-def]
        call = super().callLater(delay, callable, *args, **kw)
        call.resetter = self._moved
        return call

    def _moved(self, call: object) -> None:
        self.moved_sooner += 1
        self.calls.sort(key=lambda each: each.getTime())


def test_closing_makes_a_new_deadline() -> None:
    """Closing with an idle timer running moves no timer sooner, and still aborts."""
    clock = _SoonerCountingClock()
    factory = ChatFactory(Settings(idle_timeout=3600), clock=clock)
    alice = register(factory, "alice")
    alice.enter("/quit")
    assert alice.closing
    clock.advance(factory.settings.shutdown_timeout)  # it reads nothing
    assert alice.aborted
    assert clock.moved_sooner == 0


def test_an_idle_timeout_shorter_than_registration_is_a_new_timer() -> None:
    """An idle timeout shorter than the registration's moves no timer sooner."""
    clock = _SoonerCountingClock()
    settings = Settings(register_timeout=30, idle_timeout=10)
    factory = ChatFactory(settings, clock=clock)
    alice = register(factory, "alice")
    clock.advance(10)
    assert alice.lines() == ["*** idle timeout: no input for 10 seconds; disconnecting"]
    assert clock.moved_sooner == 0
