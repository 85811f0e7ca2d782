"""Attacks on accounts: keeping a nickname past the grace, leaking passwords."""

import re

import pytest

from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionLost
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from chatservice.accounts import MemoryAccountStore
from chatservice.factory import ChatFactory
from chatservice.testing import FakeConnection, register
from tests.test_accounts import CHALLENGE, CHEAP, make_server, registered


@pytest.fixture
def server(clock: Clock) -> ChatFactory:
    """A server whose accounts are in memory, with cheap hashes."""
    return make_server(clock)


def challenge(seconds: str) -> str:
    """The challenge's line with C{seconds} left."""
    return CHALLENGE.replace("within 30 seconds", f"within {seconds} seconds")


def token_of(lines: list[str]) -> str:
    """The resume token a registration's lines gave."""
    (token,) = [
        m.group(1)
        for m in map(re.compile(r"\*\*\* resume token: ([\w-]+) ").match, lines)
        if m
    ]
    return token


def test_nick_back_and_forth_does_not_restart_the_grace(
    server: ChatFactory, clock: Clock
) -> None:
    """Leaving a registered nickname and taking it again gets what was left of the grace."""
    registered(server).enter("/quit")
    squatter = register(server, "alice")
    clock.advance(20)
    squatter.enter("/nick bob", "/nick alice")
    assert squatter.lines() == [
        "*** alice is now known as bob",
        "*** bob is now known as alice",
        challenge("10"),
    ]
    clock.advance(10)
    assert squatter.session.nickname.startswith("Guest")


def test_grace_once_spent_renames_at_once(server: ChatFactory, clock: Clock) -> None:
    """An address whose grace ran out is renamed at once when it takes the nickname again."""
    registered(server).enter("/quit")
    squatter = register(server, "alice", "203.0.113.5")
    clock.advance(30)
    squatter.enter("/quit")
    again = FakeConnection(server, "203.0.113.5")
    again.enter("alice")
    guest = again.session.nickname
    assert guest.startswith("Guest")
    assert again.lines()[-1] == (
        "*** alice is a registered nickname and your address did not identify "
        f"within 30 seconds of taking it: you are now {guest}"
    )
    # Another address gets its own grace; the owner can still prove it.
    other = register(server, "alice", "198.51.100.1")
    assert other.session.nickname == "alice"
    other.enter("/quit")
    again.enter("/nick alice wonderland")
    assert again.lines()[-1] == "*** You are now identified as alice."


def test_resume_does_not_restart_the_grace(server: ChatFactory, clock: Clock) -> None:
    """Dropping the connection and resuming the held session does not buy a new grace."""
    registered(server).enter("/quit")
    squatter = FakeConnection(server)
    squatter.enter("alice")
    token = token_of(squatter.lines())
    clock.advance(25)
    squatter.drop(ConnectionLost)
    back = FakeConnection(server)
    back.output()
    back.enter(f"/resume alice {token}")
    assert challenge("5") in back.lines()
    clock.advance(5)
    assert back.session.nickname.startswith("Guest")


def test_identifying_forgets_the_spent_grace(server: ChatFactory, clock: Clock) -> None:
    """Once the address identified, a later unidentified connection gets a whole grace."""
    registered(server).enter("/quit")
    owner = register(server, "alice")
    clock.advance(25)
    owner.enter("/identify wonderland", "/quit")
    later = FakeConnection(server)
    later.enter("alice")
    assert later.lines()[-1] == CHALLENGE


def test_registrations_limited_per_address(server: ChatFactory, clock: Clock) -> None:
    """An address registers five nicknames at once, then one every 12 minutes."""
    user = register(server, "bob", "203.0.113.7")
    for number in range(5):
        user.enter(f"/nick bob{number}", f"/register password-{number}")
        assert user.lines()[-1].startswith(f"*** bob{number} is now registered")
        clock.advance(1)  # the flood control
    user.enter("/nick bob5", "/register password-5")
    assert user.lines()[-1] == (
        "!!! your address has registered as many nicknames as it may (5 an hour); "
        "try again in 12 minutes"  # less the 5 s spent above
    )
    assert not server.accounts.is_registered("bob5")
    other = register(server, "carol", "198.51.100.2")
    other.enter("/msg NickServ REGISTER password-c")
    assert other.lines()[-1].startswith("*** carol is now registered")
    clock.advance(720)
    user.enter("/register password-5")
    assert user.lines()[-1].startswith("*** bob5 is now registered")


@pytest.fixture
def log_text() -> list[dict[str, object]]:
    """What is logged during the test."""
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


@pytest.mark.parametrize(
    "line",
    [
        " /identify wonderland",
        "\t/msg NickServ IDENTIFY wonderland",
        "   /NICK alice wonderland",
    ],
)
def test_command_after_spaces_is_not_said(server: ChatFactory, line: str) -> None:
    """A command typed after spaces is refused, never said to the room (nor kept)."""
    registered(server).enter("/quit")
    bob = register(server, "bob")
    carol = register(server, "carol")
    bob.output()
    bob.enter(line)
    name = line.split()[0][1:].lower()
    assert bob.lines() == [
        f"!!! your line was not sent: it is /{name} after spaces; type it without "
        "them to run the command, or start it with // to say it"
    ]
    bob.enter(" /shrug is chat", "//identify is chat too")
    assert carol.lines() == ["<bob>  /shrug is chat", "<bob> /identify is chat too"]


def test_irc_channel_message_that_is_a_command_is_not_said(
    server: ChatFactory,
) -> None:
    """An IRC client's channel message of a command after a space is refused too."""
    from test_irc import irc_registered

    registered(server).enter("/quit")
    carol = register(server, "carol")
    bob = irc_registered(server, "bob")
    bob.enter("JOIN #lobby")
    bob.output()
    carol.output()
    bob.enter("PRIVMSG #lobby : /msg NickServ IDENTIFY wonderland")
    assert "wonderland" not in "".join(carol.lines())
    assert bob.lines() == [
        ":chatservice NOTICE bob :your line was not sent: it is /msg after "
        "spaces; type it without them to run the command, or start it with // "
        "to say it"
    ]


@pytest.mark.parametrize("first", [True, False])
def test_nick_with_password_of_an_unregistered_name_changes_nothing(
    server: ChatFactory, log_text: list, first: bool
) -> None:
    """/nick PASSWORD NAME, typed the wrong way round, neither renames nor quotes."""
    registered(server).enter("/quit")
    carol = register(server, "carol")
    user = FakeConnection(server)
    if not first:
        user.enter("bob")
    user.output()
    carol.output()
    user.enter("/nick Wonderland7 alice")
    assert user.lines() == [
        "!!! the nickname you gave with a password is not registered: nothing was "
        "changed, and the password was not used (/nick NAME alone takes a nickname)"
    ]
    assert user.session.nickname == (None if first else "bob")
    assert carol.lines() == []
    assert "Wonderland7" not in repr(log_text)


@pytest.mark.parametrize(
    "line",
    [
        "/register p@ss-w0rd bob@example.org",
        "/msg NickServ IDENTIFY p@ss-w0rd p@ss-w0rd",
        "/msg NickServ REGISTER bob@example.org p@ss-w0rd",
    ],
)
def test_errors_do_not_quote_a_password(server: ChatFactory, line: str) -> None:
    """An account command typed wrong is refused without showing the password back."""
    bob = register(server, "bob")
    bob.enter(line)
    (answer,) = bob.lines()
    assert answer.startswith("!!! ") and "p@ss-w0rd" not in answer


class SlowTakeStore(MemoryAccountStore):
    """A memory store whose C{take} answers when the test says."""

    def __init__(self) -> None:
        super().__init__()
        self.taking: list[Deferred[list[object]]] = []

    def take(self, key: str) -> Deferred[list[object]]:
        """Read and delete now; answer later, as a thread pool would."""
        letters = self.mailboxes.pop(key, [])
        d: Deferred[list[object]] = Deferred()
        self.taking.append(d)
        d.addCallback(lambda _: letters)
        return d


def test_letters_kept_when_the_session_closes_while_they_are_read(
    clock: Clock,
) -> None:
    """Messages read for a session that closed meanwhile are delivered at its next identify."""
    store = SlowTakeStore()
    server = make_server(clock, store)
    registered(server).enter("/quit")
    bob = register(server, "bob")
    bob.enter("/msg alice first")
    clock.advance(60)
    alice = register(server, "alice")
    alice.enter("/identify wonderland")
    alice.drop(ConnectionLost)
    (reading,) = store.taking
    clock.advance(5)
    reading.callback(None)
    clock.advance(60)  # past --resume-grace: alice is offline
    bob.enter("/msg alice second")
    again = register(server, "alice")
    again.enter("/identify wonderland")
    store.taking[-1].callback(None)
    lines = again.lines()
    assert [line.split("] ", 1)[-1] for line in lines if "*bob*" in line] == [
        "*bob* first",
        "*bob* second",
    ]


def test_letters_read_slowly_are_not_cancelled(clock: Clock) -> None:
    """Messages whose read outlasts --command-timeout are still delivered."""
    store = SlowTakeStore()
    server = make_server(clock, store)
    registered(server).enter("/quit")
    bob = register(server, "bob")
    bob.enter("/msg alice while you were out")
    alice = register(server, "alice")
    alice.enter("/identify wonderland")
    clock.advance(server.settings.command_timeout + 1)
    store.taking[-1].callback(None)
    assert alice.lines()[-2].endswith("] *bob* while you were out")


def test_identify_as_the_grace_ends(clock: Clock) -> None:
    """The owner whose right password is checked as the grace ends gets the nickname back."""
    from chatservice.factory import run_at_once

    checks: list[Deferred[object]] = []

    def slow(function, *args):  # type: ignore[no-untyped-def]
        d: Deferred[object] = Deferred()
        checks.append(d)
        return d.addCallback(lambda _: run_at_once(function, *args))

    server = make_server(clock)
    registered(server).enter("/quit")
    server.accounts._address_checks._run_in_thread = slow
    carol = register(server, "carol")
    owner = register(server, "alice")
    clock.advance(29)
    owner.enter("/identify wonderland")
    clock.advance(1)
    guest = owner.session.nickname
    assert guest.startswith("Guest")
    checks.pop().callback(None)
    assert owner.session.nickname == "alice"
    assert owner.lines()[-2:] == [
        f"*** {guest} is now known as alice",
        "*** You are now identified as alice.",
    ]
    assert carol.lines()[-1] == f"*** {guest} is now known as alice"


def sasl_guesser(server: ChatFactory, host: str) -> FakeConnection:
    """An IRC client over TLS from C{host}, ready to send SASL PLAIN."""
    from base64 import b64encode

    from twisted.internet.interfaces import ISSLTransport
    from zope.interface import directlyProvides

    from chatservice.frontends.irc import irc_front_end

    connection = FakeConnection(server, host, front_end=irc_front_end)
    directlyProvides(connection.transport, ISSLTransport)
    connection.enter("CAP LS 302", "CAP REQ :sasl", "NICK mallory")
    connection.guess = lambda: connection.enter(  # type: ignore[attr-defined]
        "AUTHENTICATE PLAIN",
        "AUTHENTICATE " + b64encode(b"\0alice\0wrong-guess").decode(),
    )
    return connection


def test_guesser_cannot_lock_the_owner_out(clock: Clock) -> None:
    """Guesses keeping the account's checks busy do not refuse its owner, on an address it identified from."""
    server = make_server(clock)
    owner_address = "198.51.100.7"
    first = register(server, "alice", owner_address)
    first.enter("/register wonderland", "/quit")
    one, two = (sasl_guesser(server, "203.0.113.9") for _ in range(2))
    for _ in range(3):
        one.guess()
        two.guess()
        clock.advance(8)
    one.output()
    one.guess()
    two.guess()
    assert one.lines()[-1] == "AUTHENTICATE +"  # waiting its turn
    owner = register(server, "alice", owner_address)
    owner.enter("/identify wonderland")
    assert owner.lines() == ["*** You are now identified as alice."]


def test_one_address_cannot_fill_a_mailbox(server: ChatFactory, clock: Clock) -> None:
    """An address leaves one offline user 20 messages a day; others still can."""
    registered(server).enter("/quit")
    registered(server, "carol").enter("/quit")
    spammer = register(server, "spammer", "203.0.113.66")
    for number in range(20):
        spammer.enter(f"/msg alice spam {number}")
        clock.advance(1)
    spammer.output()
    spammer.enter("/msg alice one more")
    assert spammer.lines() == [
        "!!! alice is offline, and your address has left them as many messages "
        "as it may (20 a day); yours was not kept"
    ]
    spammer.enter("/msg carol hello")
    assert spammer.lines()[-1].startswith("*** carol is offline: your message was kept")
    friend = register(server, "friend", "198.51.100.3")
    friend.enter("/msg alice call me")
    assert friend.lines()[-1].startswith("*** alice is offline: your message was kept")
    clock.advance(86400 / 20)
    spammer.enter("/msg alice again")
    assert spammer.lines()[-1].startswith("*** alice is offline: your message was kept")


def test_no_path_logs_a_password(server: ChatFactory, log_text: list) -> None:
    """Every way of giving a password, right or wrong, leaves it out of the log."""
    from base64 import b64encode

    from test_irc import irc_connection

    registered(server).enter("/quit")
    secrets = ["wonderland", "Sekrit-one", "Sekrit-two", "Sekrit-six", "Sekrit-ten"]
    line = register(server, "alice", "203.0.113.1")
    line.enter(
        "/identify Sekrit-one",
        " /identify Sekrit-two",
        "/msg NickServ IDENTIFY alice Sekrit-one",
        "/nick Sekrit-six alice",
        "/register Sekrit-two@x Sekrit-six",
        "/quit",
    )
    irc = irc_connection(
        server, "PASS Sekrit-ten", "NICK alice", "USER a 0 * :A", "JOIN #lobby"
    )
    irc.enter(
        "PRIVMSG NickServ :IDENTIFY Sekrit-two",
        "PRIVMSG #lobby : /msg NickServ IDENTIFY Sekrit-one",
        "NOTICE nickserv :identify wonderland",
    )
    tls = sasl_guesser(server, "203.0.113.2")
    long_secret = "Sekrit-ten" * 12  # the base64 of its message is 400+
    chunked = b64encode(f"\0alice\0{long_secret}".encode()).decode()
    tls.enter("AUTHENTICATE PLAIN", f"AUTHENTICATE {chunked[:400]}")
    tls.enter(f"AUTHENTICATE {chunked[400:]}" if chunked[400:] else "AUTHENTICATE +")
    # A password given as the account (authcid), by mistake.
    tls.enter(
        "AUTHENTICATE PLAIN",
        "AUTHENTICATE " + b64encode(b"\0Sekrit-six\0alice").decode(),
    )
    text = repr(log_text)
    assert [secret for secret in secrets if secret in text] == []
    formats = [event.get("log_format", "") for event in log_text]
    assert any("failed identification" in f for f in formats)
    assert any("failed SASL identification" in f for f in formats)


@pytest.mark.parametrize("irc", [False, True])
def test_failed_password_with_the_nickname_is_logged(
    server: ChatFactory, log_text: list, irc: bool
) -> None:
    """A wrong password given with the nickname (/nick NAME PASSWORD, IRC PASS) is logged as /identify's is."""
    from test_irc import irc_connection

    registered(server).enter("/quit")
    if irc:
        irc_connection(server, "PASS wrong-guess", "NICK alice", "USER a 0 * :A")
    else:
        FakeConnection(server, "203.0.113.4").enter("/nick alice wrong-guess")
    (failed,) = [e for e in log_text if "failed identification" in e["log_format"]]
    assert failed["nickname"] == "alice"
    assert failed["host"] == ("127.0.0.1" if irc else "203.0.113.4")


def test_held_session_ends_with_its_grace(server: ChatFactory, clock: Clock) -> None:
    """A squatter's dropped session, held for a resume, frees the nickname when its grace ends."""
    registered(server).enter("/quit")
    squatter = register(server, "alice", "203.0.113.8")
    clock.advance(25)
    squatter.drop(ConnectionLost)
    someone = FakeConnection(server, "198.51.100.7")
    someone.enter("/nick alice")
    assert someone.lines()[-1] == "!!! the nickname alice is taken; choose another one"
    clock.advance(5)
    someone.enter("/nick alice")
    assert someone.session.nickname == "alice"


def test_owner_takes_the_nickname_back(server: ChatFactory, clock: Clock) -> None:
    """/nick NAME PASSWORD takes a registered nickname from whoever holds it unidentified."""
    registered(server).enter("/quit")
    carol = register(server, "carol")
    squatter = register(server, "alice", "203.0.113.8")
    owner = register(server, "bob", "198.51.100.7")
    carol.output()
    owner.enter("/nick alice wrong-password")
    assert owner.lines() == ["!!! identification failed: wrong password"]
    assert squatter.session.nickname == "alice"
    owner.enter("/nick alice wonderland")
    guest = squatter.session.nickname
    assert guest.startswith("Guest")
    assert squatter.lines()[-3:] == [
        f"*** alice is now known as {guest}",
        f"*** the owner of alice identified and took it back: you are now {guest}",
        "*** bob is now known as alice",
    ]
    assert owner.lines() == [
        f"*** alice is now known as {guest}",
        "*** bob is now known as alice",
        "*** You are now identified as alice.",
    ]
    assert carol.lines() == [
        f"*** alice is now known as {guest}",
        "*** bob is now known as alice",
    ]


def test_owner_takes_the_nickname_back_from_a_held_session(
    server: ChatFactory, clock: Clock
) -> None:
    """A squatter's held session is ended when the owner proves the nickname, at their first line."""
    registered(server).enter("/quit")
    squatter = register(server, "alice", "203.0.113.8")
    squatter.drop(ConnectionLost)
    owner = FakeConnection(server, "198.51.100.7")
    owner.enter("/nick alice wonderland")
    assert owner.session.nickname == "alice"
    assert owner.lines()[-1] == "*** You are now identified as alice."


def test_identified_holder_is_not_evicted(server: ChatFactory) -> None:
    """An identified session keeps its nickname against another right password."""
    registered(server).enter("/quit")
    first = register(server, "alice")
    first.enter("/identify wonderland")
    other = register(server, "bob", "198.51.100.7")
    other.enter("/nick alice wonderland")
    assert other.lines() == ["!!! the nickname alice is taken; choose another one"]
    assert first.session.nickname == "alice"


def test_irc_regain_by_nickserv(server: ChatFactory) -> None:
    """An IRC client's PRIVMSG NickServ :REGAIN NICK PASSWORD takes the nickname back."""
    from test_irc import irc_registered

    registered(server).enter("/quit")
    squatter = register(server, "alice", "203.0.113.8")
    owner = irc_registered(server, "alice_")
    owner.enter("PRIVMSG NickServ :REGAIN alice wonderland")
    guest = squatter.session.nickname
    assert guest.startswith("Guest")
    assert owner.lines() == [
        f":alice!alice@chatservice NICK {guest}",
        ":alice_!alice_@chatservice NICK alice",
        ":chatservice NOTICE alice :You are now identified as alice.",
    ]


def test_history_keeps_no_account_command(clock: Clock) -> None:
    """Of account commands typed every way, the room's stored history keeps none; chat is kept."""
    from test_irc import irc_registered

    from chatservice.config import Settings
    from chatservice.factory import run_at_once
    from chatservice.testing import memory_store

    store = memory_store()
    server = ChatFactory(
        Settings(), clock=clock, store=store, run_in_thread=run_at_once
    )
    server.accounts.cost = CHEAP
    alice = register(server, "alice")
    alice.enter(
        "/register wonderland",
        "/msg NickServ IDENTIFY wonderland",
        " /identify wonderland",
        "/nick alice wonderland",
        "hello, said in the room",
    )
    irc = irc_registered(server, "bob")
    irc.enter(
        "PRIVMSG NickServ :IDENTIFY wonderland",
        "PRIVMSG #lobby : /msg NickServ IDENTIFY wonderland",
        "PRIVMSG #lobby :hello from IRC",
    )
    server.history.flush()
    rows = store.run_interaction(
        lambda cursor: cursor.execute("SELECT text FROM history").fetchall()
    ).result
    assert sorted(row[0] for row in rows) == [
        "hello from IRC",
        "hello, said in the room",
    ]


def test_registered_nickname_in_any_case(server: ChatFactory, clock: Clock) -> None:
    """Alice registered is alice and ALICE too: challenged, renamed, not registrable again."""
    owner = register(server, "Alice")
    owner.enter("/register wonderland", "/quit")
    other = register(server, "ALICE", "203.0.113.3")
    other.enter("/register another-password")
    assert other.lines() == ["!!! ALICE is registered already"]
    clock.advance(30)
    assert other.session.nickname.startswith("Guest")
    other.enter("/nick alice wonderland")
    assert other.lines()[-1] == "*** You are now identified as alice."


def test_line_port_does_not_repeat_an_irc_password(server: ChatFactory) -> None:
    """An IRC client on the line port sending PASS PASSWORD is not shown its password back."""
    client = FakeConnection(server)
    client.output()
    client.enter("PASS hunter2secret", "PASS a-much-longer-password-than-a-nickname")
    assert (
        client.lines()
        == ["!!! a nickname is one word: a letter, then letters, digits, _ or -"] * 2
    )


def test_guest_name_taken_is_not_a_way_out(server: ChatFactory, clock: Clock) -> None:
    """A guest name someone already holds is skipped: the squatter still loses the nickname."""
    registered(server).enter("/quit")
    register(server, "Guest12345")
    numbers = iter([12345, 23456])
    server.accounts._random.randrange = lambda *_: next(numbers)  # type: ignore[method-assign]
    squatter = register(server, "alice", "203.0.113.8")
    clock.advance(30)
    assert squatter.session.nickname == "Guest23456"
