"""Unit tests of accounts: /register, /identify, the grace, offline messages."""

import pytest

from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from chatservice.accounts import ACCOUNT_FREE, MemoryAccountStore
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.operators import Operators, hash_password
from chatservice.testing import FakeConnection, FakeFrames, frame_user, register

CHEAP = (2**10, 8, 1)


def make_server(clock: Clock, store: MemoryAccountStore | None = None) -> ChatFactory:
    factory = ChatFactory(
        Settings(), clock=clock, run_in_thread=run_at_once, account_store=store
    )
    factory.accounts.cost = CHEAP
    factory.operators = Operators({"root": hash_password("s3cret", n=2**10)})
    return factory


@pytest.fixture
def server(clock: Clock) -> ChatFactory:
    """A server whose accounts are in memory, with cheap hashes."""
    return make_server(clock)


@pytest.fixture
def log_events() -> list[dict[str, object]]:
    """What is logged during the test."""
    events: list[dict[str, object]] = []
    globalLogPublisher.addObserver(events.append)
    yield events
    globalLogPublisher.removeObserver(events.append)


def registered(server: ChatFactory, nickname: str = "alice") -> FakeConnection:
    """C{nickname}, connected and registered with the password wonderland."""
    user = register(server, nickname)
    user.enter("/register wonderland")
    assert user.lines() == [
        f"*** {nickname} is now registered to you; on later connections "
        "prove it with /identify PASSWORD"
    ]
    return user


CHALLENGE = (
    "*** alice is a registered nickname: if it is yours, type /identify "
    "PASSWORD within 30 seconds; otherwise you will be renamed to a guest name"
)


def test_register_then_identify_on_a_later_connection(server: ChatFactory) -> None:
    """A registered nickname taken again is challenged; /identify proves it."""
    registered(server).enter("/quit")
    again = register(server, "alice")
    again.enter("/identify wonderland")
    assert again.lines() == ["*** You are now identified as alice."]


def test_challenge_is_told_at_registration(server: ChatFactory) -> None:
    """Whoever takes a registered nickname is told to identify, and how."""
    registered(server).enter("/quit")
    user = FakeConnection(server)
    user.output()
    user.enter("alice")
    assert user.lines()[-1] == CHALLENGE


def test_grace_renames_to_a_guest(server: ChatFactory, clock: Clock) -> None:
    """Not identifying within the grace gives a guest name, saying why."""
    registered(server).enter("/quit")
    impostor = register(server, "alice")
    clock.advance(29)
    assert impostor.lines() == []
    clock.advance(1)
    lines = impostor.lines()
    guest = impostor.session.nickname
    assert guest.startswith("Guest") and len(guest) == 10
    assert lines == [
        f"*** alice is now known as {guest}",
        "*** alice is a registered nickname and you did not identify within "
        f"30 seconds: you are now {guest}",
    ]


def test_identify_stops_the_grace(server: ChatFactory, clock: Clock) -> None:
    """An identified user keeps the nickname after the grace."""
    registered(server).enter("/quit")
    user = register(server, "alice")
    user.enter("/identify wonderland")
    clock.advance(60)
    assert user.session.nickname == "alice"
    assert user.lines() == ["*** You are now identified as alice."]


def test_nick_with_password_before_registration(
    server: ChatFactory, clock: Clock
) -> None:
    """/nick NAME PASSWORD takes the nickname and proves it at once."""
    registered(server).enter("/quit")
    user = FakeConnection(server)
    user.enter("/nick alice wonderland")
    lines = user.lines()
    assert lines[-1] == "*** You are now identified as alice."
    assert CHALLENGE not in lines
    clock.advance(60)
    assert user.session.nickname == "alice"


def test_nick_with_password_when_renaming(server: ChatFactory) -> None:
    """/nick NAME PASSWORD from another nickname proves the new one."""
    registered(server).enter("/quit")
    user = register(server, "bob")
    user.enter("/nick alice wonderland")
    assert user.lines() == [
        "*** bob is now known as alice",
        "*** You are now identified as alice.",
    ]


def test_wrong_password_is_one_answer(server: ChatFactory, clock: Clock) -> None:
    """A wrong password is refused, and the grace runs on."""
    registered(server).enter("/quit")
    user = register(server, "alice")
    user.enter("/identify wrong-password")
    assert user.lines() == ["!!! identification failed: wrong password"]
    clock.advance(30)
    assert user.session.nickname.startswith("Guest")


def test_renaming_to_a_registered_nickname_is_challenged(
    server: ChatFactory, clock: Clock
) -> None:
    """/nick to a registered nickname starts the grace too."""
    registered(server).enter("/quit")
    user = register(server, "bob")
    user.enter("/nick alice")
    assert user.lines() == ["*** bob is now known as alice", CHALLENGE]
    user.enter("/nick bob")
    clock.advance(60)
    assert user.session.nickname == "bob"


def test_identify_an_unregistered_nickname(server: ChatFactory) -> None:
    """/identify on a nickname nobody registered says so."""
    user = register(server, "bob")
    user.enter("/identify whatever1")
    assert user.lines() == ["!!! bob is not registered; /register PASSWORD claims it"]


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("/register short", "!!! a password is 8 to 128 characters, without spaces"),
        (
            "/register alice@example.org Alice",
            "!!! a password is 8 to 128 characters, without spaces",
        ),
        ("/register ALICE123 ", "!!! a password must not be the nickname"),
        (
            "/register one two three",
            "!!! usage: /register [EMAIL] PASSWORD (a password has no spaces)",
        ),
        (
            "/register nodomain@x pass-word",
            "!!! with two words, the first must be an e-mail address: "
            "/register [EMAIL] PASSWORD",
        ),
    ],
)
def test_register_refusals(server: ChatFactory, line: str, answer: str) -> None:
    """A bad password or e-mail address is refused, saying why."""
    user = register(server, "alice123")
    user.enter(line)
    assert user.lines() == [answer]


def test_register_twice_and_guests(server: ChatFactory) -> None:
    """A registered nickname, or a guest name, cannot be registered (again)."""
    user = registered(server)
    user.enter("/register wonderland")
    assert user.lines() == ["!!! alice is registered already"]
    guest = register(server, "Guest12345")
    guest.enter("/register wonderland")
    assert guest.lines() == [
        "!!! guest names cannot be registered; choose another nickname"
    ]


def test_register_with_email_is_kept(clock: Clock) -> None:
    """The e-mail address given is kept with the account."""
    store = MemoryAccountStore()
    server = make_server(clock, store)
    user = register(server, "alice")
    user.enter("/register alice@example.org wonderland")
    assert store.accounts["alice"].email == "alice@example.org"
    assert store.accounts["alice"].password.startswith("scrypt$1024$8$1$")


def test_password_change(server: ChatFactory) -> None:
    """/password OLD NEW changes it: the old one no longer works."""
    user = registered(server)
    user.enter("/password wonderland looking-glass")
    assert user.lines() == ["*** The password of alice was changed."]
    user.enter("/quit")
    again = register(server, "alice")
    again.enter("/identify wonderland")
    assert again.lines() == ["!!! identification failed: wrong password"]
    again.enter("/identify looking-glass")
    assert again.lines() == ["*** You are now identified as alice."]


def test_password_needs_identification(server: ChatFactory) -> None:
    """Only an identified user may change the password."""
    registered(server).enter("/quit")
    user = register(server, "alice")
    user.enter("/password wonderland other-password")
    assert user.lines() == ["!!! identify as alice first"]


def test_unregister(server: ChatFactory, clock: Clock) -> None:
    """/unregister PASSWORD deletes the account: nobody is challenged after."""
    user = registered(server)
    user.enter("/unregister wonderland")
    assert user.lines() == [
        "*** alice is no longer registered; its account is deleted."
    ]
    user.enter("/quit")
    again = register(server, "alice")
    clock.advance(60)
    assert again.session.nickname == "alice"


def test_operator_drops_an_account(server: ChatFactory) -> None:
    """/dropaccount NICK deletes the account; only operators have it."""
    registered(server).enter("/quit")
    bob = register(server, "bob")
    bob.enter("/dropaccount alice")
    assert bob.lines() == ["!!! /dropaccount is for operators"]
    bob.enter("/oper root s3cret")
    bob.output()
    bob.enter("/dropaccount alice")
    assert bob.lines() == ["*** The account alice was deleted."]
    bob.enter("/dropaccount alice")
    assert bob.lines() == ["!!! alice is not registered"]
    assert not server.accounts.is_registered("alice")


def test_guesses_slowed_down_per_account(clock: Clock) -> None:
    """Past a few failures, guesses at one account wait, from any address."""
    server = make_server(clock)
    registered(server).enter("/quit")
    for number in range(ACCOUNT_FREE):
        guesser = register(server, "alice", f"203.0.113.{number + 1}")
        guesser.enter("/identify wrong-guess")
        assert guesser.lines() == ["!!! identification failed: wrong password"]
        guesser.enter("/quit")
    owner = register(server, "alice", "198.51.100.7")
    owner.enter("/identify wonderland")
    assert owner.lines() == []
    clock.advance(1)
    assert owner.lines() == ["*** You are now identified as alice."]


def test_guesses_slowed_down_per_address(server: ChatFactory, clock: Clock) -> None:
    """Past three failures from one address, its guesses wait, as for /oper."""
    registered(server).enter("/quit")
    guesser = register(server, "alice", "203.0.113.9")
    for _ in range(3):
        guesser.enter("/identify wrong-guess")
        assert guesser.lines() == ["!!! identification failed: wrong password"]
    guesser.enter("/identify wonderland")
    assert guesser.lines() == []
    clock.advance(1)
    assert guesser.lines() == ["*** You are now identified as alice."]


def test_passwords_never_logged(server: ChatFactory, log_events: list) -> None:
    """Registering, failing and identifying log no password."""
    user = registered(server)
    user.enter("/quit")
    again = register(server, "alice")
    again.enter("/identify hunter2-wrong", "/identify wonderland")
    again.enter("/password wonderland new-password-1", "/unregister new-password-1")
    text = repr(log_events)
    for secret in ("wonderland", "hunter2-wrong", "new-password-1"):
        assert secret not in text
    assert any("failed identification" in e["log_format"] for e in log_events)


# Offline messages -------------------------------------------------------------


def test_message_to_offline_registered_user_is_kept(server: ChatFactory) -> None:
    """/msg to a registered user who is offline is kept, and given on identify."""
    registered(server).enter("/quit")
    bob = register(server, "bob")
    bob.enter("/msg alice are you there?")
    assert bob.lines() == [
        "-> *alice* are you there?",
        "*** alice is offline: your message was kept, and will be delivered "
        "when they identify",
    ]
    alice = register(server, "alice")
    alice.enter("/identify wonderland")
    lines = alice.lines()
    assert lines[0] == "*** You are now identified as alice."
    assert lines[1] == "*** 1 message came while you were away, times in UTC:"
    assert lines[2].startswith("*** ") and lines[2].endswith(":")  # the date
    assert lines[3].endswith("] *bob* are you there?")
    assert lines[4] == "*** End of the messages that came while you were away."
    alice.enter("/quit")
    again = register(server, "alice")
    again.enter("/identify wonderland")
    assert again.lines() == ["*** You are now identified as alice."]


def test_message_to_offline_unregistered_user_refused(server: ChatFactory) -> None:
    """/msg to someone unregistered and offline is refused, as before."""
    bob = register(server, "bob")
    bob.enter("/msg carol hello")
    assert bob.lines() == ["!!! nobody called carol is online; try /who"]


def test_mailbox_is_bounded(server: ChatFactory) -> None:
    """Past 100 messages the sender is told the mailbox is full."""
    registered(server).enter("/quit")
    for number in range(10):
        # From ten addresses: one may leave one recipient 20 a day.
        sender = register(server, f"bob{number}", f"203.0.113.{number + 1}")
        for _ in range(10):
            sender.enter("/msg alice hi")
        sender.enter("/quit")
        server.clock.advance(60)  # the private-message allowance refills
    late = register(server, "late")
    late.enter("/msg alice one more")
    assert late.lines() == [
        "!!! alice is offline and has as many messages waiting as they may "
        "(100, or 64 KiB); yours was not kept"
    ]


def test_unidentified_sender_with_registered_name_cannot_leave_messages(
    server: ChatFactory,
) -> None:
    """Someone using a registered nickname must identify before leaving messages."""
    registered(server, "bob").enter("/quit")
    registered(server, "alice").enter("/quit")
    impostor = register(server, "bob")
    impostor.output()
    impostor.enter("/msg alice it is me")
    assert impostor.lines() == [
        "!!! alice is offline; identify as bob to leave them a message"
    ]


def test_frame_user_identifies_and_gets_messages(server: ChatFactory) -> None:
    """A frame client registers, identifies and gets its messages as events."""
    alice = frame_user(server, "alice")
    alice.say("/register wonderland")
    alice.say("/quit")
    bob = register(server, "bob")
    bob.enter("/msg alice hello frames")
    user = FakeFrames(server)
    user.output()
    user.say("/nick alice wonderland")
    said = user.said()
    assert "notice: You are now identified as alice." in said
    assert "private: hello frames" in said


def test_identification_survives_a_resume(server: ChatFactory, clock: Clock) -> None:
    """A session resumed with its token stays identified: no grace, no rename."""
    import re

    from twisted.internet.error import ConnectionLost

    registered(server).enter("/quit")
    alice = FakeConnection(server)
    alice.enter("/nick alice wonderland")
    lines = alice.lines()
    assert lines[-1] == "*** You are now identified as alice."
    (token,) = [
        m.group(1)
        for m in map(re.compile(r"\*\*\* resume token: ([\w-]+) ").match, lines)
        if m
    ]
    alice.drop(ConnectionLost)
    back = FakeConnection(server)
    back.output()
    back.enter(f"/resume alice {token}")
    assert not any("registered nickname" in line for line in back.lines())
    clock.advance(60)
    assert back.session.nickname == "alice"
    back.enter("/identify wonderland")
    assert back.lines() == ["!!! you are identified as alice already"]


def test_unidentified_resume_is_challenged(server: ChatFactory, clock: Clock) -> None:
    """A session that had not identified is challenged again after a resume."""
    import re

    from twisted.internet.error import ConnectionLost

    registered(server).enter("/quit")
    squatter = FakeConnection(server)
    squatter.enter("alice")
    lines = squatter.lines()
    (token,) = [
        m.group(1)
        for m in map(re.compile(r"\*\*\* resume token: ([\w-]+) ").match, lines)
        if m
    ]
    squatter.drop(ConnectionLost)
    back = FakeConnection(server)
    back.output()
    back.enter(f"/resume alice {token}")
    assert CHALLENGE in back.lines()
    clock.advance(30)
    assert back.session.nickname.startswith("Guest")


def test_nickserv_identify_by_message(server: ChatFactory) -> None:
    """/msg NickServ IDENTIFY PASSWORD identifies, as IRC clients send it."""
    registered(server).enter("/quit")
    alice = register(server, "alice")
    alice.enter("/msg NickServ IDENTIFY wrong-password")
    assert alice.lines() == ["!!! identification failed: wrong password"]
    alice.enter("/msg nickserv identify alice wonderland")
    assert alice.lines() == ["*** You are now identified as alice."]


def test_nickserv_register_by_message(server: ChatFactory) -> None:
    """/msg NickServ REGISTER PASSWORD EMAIL registers, in NickServ's order."""
    bob = register(server, "bob")
    bob.enter("/msg NickServ REGISTER builder-pw bob@example.org")
    assert bob.lines() == [
        "*** bob is now registered to you; on later connections prove it with "
        "/identify PASSWORD"
    ]
    bob.enter("/msg NickServ hello")
    assert bob.lines() == [
        "*** NickServ understands IDENTIFY [NICK] PASSWORD, REGISTER PASSWORD "
        "[EMAIL], PASSWORD OLD NEW, UNREGISTER PASSWORD and REGAIN NICK "
        "PASSWORD (or use /help)"
    ]


def test_nobody_can_be_nickserv(server: ChatFactory) -> None:
    """Whoever takes the nickname NickServ is renamed at once, and gets no messages."""
    mallory = FakeConnection(server)
    mallory.enter("NickServ")
    guest = mallory.session.nickname
    assert guest.startswith("Guest")
    assert mallory.lines()[-2:] == [
        f"*** NickServ is now known as {guest}",
        f"*** NickServ is the name of a service, not a user's: you are now {guest}",
    ]
    alice = register(server, "alice")
    alice.enter("/msg NickServ IDENTIFY secret-pw")
    assert alice.lines() == [
        "!!! alice is not registered; /register PASSWORD claims it"
    ]
    assert not any("secret-pw" in line for line in mallory.lines())


def test_account_dropped_during_the_grace(server: ChatFactory, clock: Clock) -> None:
    """A nickname unregistered during someone's grace is theirs to keep."""
    registered(server).enter("/quit")
    squatter = register(server, "alice")
    root = register(server, "root")
    root.enter("/oper root s3cret", "/dropaccount alice")
    clock.advance(60)
    assert squatter.session.nickname == "alice"
