"""Accounts on the IRC front end: PASS at registration, SASL PLAIN over TLS."""

from base64 import b64encode
from pathlib import Path

import pytest
import pytest_twisted
from certs import make_ca, make_server_cert
from harness import Harness, wait_until
from test_irc import IRCUser, irc_connection, start

from twisted.internet.interfaces import ISSLTransport
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from zope.interface import directlyProvides

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.testing import FakeConnection, register

CHEAP = (2**10, 8, 1)


@pytest.fixture
def server(clock: Clock) -> ChatFactory:
    """A server where alice is registered, with the password wonderland."""
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    factory.accounts.cost = CHEAP
    alice = register(factory, "alice")
    alice.enter("/register wonderland")
    alice.enter("/quit")
    return factory


def plain(account: str, password: str) -> str:
    """The SASL PLAIN message for C{account}, in base64."""
    return b64encode(f"\0{account}\0{password}".encode()).decode()


def tls_connection(factory: ChatFactory, *lines: str) -> FakeConnection:
    """An IRC client on a StringTransport that says it is TLS."""
    connection = irc_connection(factory)
    directlyProvides(connection.transport, ISSLTransport)
    connection.output()
    connection.enter(*lines)
    return connection


def test_pass_identifies_at_registration(server: ChatFactory, clock: Clock) -> None:
    """PASS with a registered nickname's password identifies it: no grace."""
    alice = irc_connection(server, "PASS wonderland", "NICK alice", "USER a 0 * :A")
    lines = alice.lines()
    assert lines[-1] == ":chatservice NOTICE alice :You are now identified as alice."
    assert not any("registered nickname" in line for line in lines)
    clock.advance(60)
    assert alice.session.nickname == "alice"


def test_wrong_pass_starts_the_grace(server: ChatFactory, clock: Clock) -> None:
    """A wrong PASS is refused, and the grace notice tells what to do."""
    alice = irc_connection(server, "PASS wrong-pass", "NICK alice", "USER a 0 * :A")
    assert alice.lines()[-2:] == [
        ":chatservice NOTICE alice :identification failed: wrong password",
        ":chatservice NOTICE alice :alice is a registered nickname: if it is yours, "
        "type /identify PASSWORD within 30 seconds; otherwise you will be renamed "
        "to a guest name",
    ]
    clock.advance(30)
    guest = alice.session.nickname
    assert guest.startswith("Guest")
    assert alice.lines()[0] == f":alice!alice@chatservice NICK {guest}"


def test_pass_for_an_unregistered_nickname_is_not_used(server: ChatFactory) -> None:
    """PASS with an unregistered nickname registers as before, and says so."""
    bob = irc_connection(server, "PASS anything1", "NICK bob", "USER b 0 * :B")
    lines = bob.lines()
    assert lines[0] == ":chatservice 001 bob :Welcome to chatservice, bob"
    assert lines[-1] == (
        ":chatservice NOTICE bob :bob is not registered: your password was not "
        "used (/register PASSWORD claims it)"
    )


def test_identify_as_an_irc_command(server: ChatFactory) -> None:
    """IDENTIFY (irssi's /identify, or /quote identify) works as /identify."""
    alice = irc_connection(server, "NICK alice", "USER a 0 * :A")
    alice.output()
    alice.enter("IDENTIFY wonderland")
    assert alice.lines() == [
        ":chatservice NOTICE alice :You are now identified as alice."
    ]


def test_sasl_offered_only_over_tls(server: ChatFactory) -> None:
    """CAP LS offers sasl on TLS connections only; REQ sasl on plain is NAKed."""
    plain_user = irc_connection(server, "CAP LS 302", "CAP REQ :sasl")
    assert plain_user.lines() == [
        ":chatservice CAP * LS :server-time",
        ":chatservice CAP * NAK :sasl",
    ]
    tls = tls_connection(server, "CAP LS 302", "CAP LS", "CAP REQ :sasl")
    assert tls.lines() == [
        ":chatservice CAP * LS :server-time sasl=PLAIN",
        ":chatservice CAP * LS :server-time sasl",
        ":chatservice CAP * ACK :sasl",
    ]


def test_sasl_plain_success(server: ChatFactory, clock: Clock) -> None:
    """SASL PLAIN with the right password: 900, 903, then identified at once."""
    bob = register(server, "bob")
    bob.enter("/msg alice sorry I missed you")
    alice = tls_connection(server, "CAP LS 302", "CAP REQ :sasl", "NICK alice")
    alice.output()
    alice.enter("AUTHENTICATE PLAIN")
    assert alice.lines() == ["AUTHENTICATE +"]
    alice.enter(f"AUTHENTICATE {plain('alice', 'wonderland')}")
    assert alice.lines() == [
        ":chatservice 900 * alice!alice@chatservice alice :You are now logged "
        "in as alice",
        ":chatservice 903 * :SASL authentication successful",
    ]
    alice.enter("USER a 0 * :A", "CAP END")
    lines = alice.lines()
    assert ":chatservice NOTICE alice :You are now identified as alice." in lines
    assert any(line.endswith("PRIVMSG alice :sorry I missed you") for line in lines), (
        lines
    )
    assert not any("registered nickname" in line for line in lines)
    clock.advance(60)
    assert alice.session.nickname == "alice"


@pytest.mark.parametrize(
    ("steps", "answers"),
    [
        (
            ["AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('alice', 'wrong-one')}"],
            ["AUTHENTICATE +", ":chatservice 904 * :SASL authentication failed"],
        ),
        (
            ["AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('nobody', 'wonderland')}"],
            ["AUTHENTICATE +", ":chatservice 904 * :SASL authentication failed"],
        ),
        (
            ["AUTHENTICATE EXTERNAL"],
            [
                ":chatservice 908 * PLAIN :are available SASL mechanisms",
                ":chatservice 904 * :SASL authentication failed",
            ],
        ),
        (
            ["AUTHENTICATE PLAIN", "AUTHENTICATE *"],
            ["AUTHENTICATE +", ":chatservice 906 * :SASL authentication aborted"],
        ),
        (
            ["AUTHENTICATE PLAIN", "AUTHENTICATE %%%%"],
            ["AUTHENTICATE +", ":chatservice 904 * :SASL authentication failed"],
        ),
    ],
)
def test_sasl_failures(
    server: ChatFactory, steps: list[str], answers: list[str]
) -> None:
    """A wrong password, unknown account or mechanism, or an abort, is refused."""
    alice = tls_connection(server, "CAP LS 302", "CAP REQ :sasl", "NICK alice")
    alice.output()
    alice.enter(*steps)
    assert alice.lines() == answers


def test_sasl_in_chunks(server: ChatFactory) -> None:
    """A message of exactly 400 bytes is followed by AUTHENTICATE +."""
    password = "p" * 293  # a message of 300 bytes: 400 of base64
    encoded = plain("alice", password)
    assert len(encoded) == 400
    alice = tls_connection(server, "CAP LS 302", "CAP REQ :sasl", "NICK alice")
    alice.output()
    alice.enter("AUTHENTICATE PLAIN", f"AUTHENTICATE {encoded}")
    assert alice.lines() == ["AUTHENTICATE +"]  # waiting for more
    alice.enter("AUTHENTICATE +")
    assert alice.lines() == [":chatservice 904 * :SASL authentication failed"]


def test_pass_never_logged(server: ChatFactory) -> None:
    """PASS and AUTHENTICATE leave no password in the log."""
    from twisted.logger import globalLogPublisher

    logged: list[dict] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        irc_connection(server, "PASS secret-pass-1", "NICK alice", "USER a 0 * :A")
        alice = tls_connection(server, "CAP LS 302", "CAP REQ :sasl", "NICK bob")
        alice.enter("AUTHENTICATE PLAIN", f"AUTHENTICATE {plain('alice', 'pw-two-x')}")
    finally:
        globalLogPublisher.removeObserver(logged.append)
    text = repr(logged)
    assert "secret-pass-1" not in text and "pw-two-x" not in text
    assert plain("alice", "pw-two-x") not in text


class SASLUser(IRCUser):
    """An IRC client that logs in with SASL PLAIN before registering."""

    def __init__(self, nickname: str, password: str) -> None:
        super().__init__(nickname)
        self.sasl_password = password

    def connectionMade(self) -> None:
        self.sendLine("CAP LS 302")
        self.sendLine("CAP REQ :sasl")
        self.sendLine("AUTHENTICATE PLAIN")

    def irc_AUTHENTICATE(self, prefix: str, params: list[str]) -> None:
        self.sendLine(f"AUTHENTICATE {plain(self.nickname, self.sasl_password)}")

    def irc_unknown(self, prefix: str, command: str, params: list[str]) -> None:
        if command in ("903", "904"):
            self.sendLine("CAP END")
            self.register(self.nickname)


@pytest_twisted.ensureDeferred
async def test_sasl_over_tls_with_irc_client(chat: Harness, tmp_path: Path) -> None:
    """twisted.words' IRCClient over TLS: SASL PLAIN identifies, then registers."""
    cert = make_server_cert(make_ca(tmp_path / "pki"))
    port = start(chat, irc_endpoint=cert.endpoint())
    owner = await chat.user("alice")
    owner.send("/register wonderland")
    await wait_until(lambda: "registered to you" in owner.lines[-1], "registered")
    owner.send("/quit")
    await wait_until(lambda: owner.disconnected, "alice's quit")
    bob = await chat.user("bob")
    bob.send("/msg alice ping me when back")
    await wait_until(lambda: "was kept" in bob.lines[-1], "kept")
    authority = Certificate.loadPEM(cert.ca_path.read_bytes())
    alice = SASLUser("alice", "wonderland")
    await chat.connect(
        alice, port, optionsForClientTLS("localhost", trustRoot=authority)
    )  # type: ignore[arg-type]
    await wait_until(
        lambda: any("PRIVMSG alice :ping me when back" in x for x in alice.lines),
        "the message kept",
    )
    assert ":chatservice 903 * :SASL authentication successful" in alice.lines
    assert ":chatservice NOTICE alice :You are now identified as alice." in alice.lines
    assert not any("registered nickname" in line for line in alice.lines)


@pytest_twisted.ensureDeferred
async def test_pass_with_irc_client(chat: Harness) -> None:
    """twisted.words' IRCClient with a password: PASS identifies at registration."""
    port = start(chat)
    owner = await chat.user("alice")
    owner.send("/register wonderland")
    await wait_until(lambda: "registered to you" in owner.lines[-1], "registered")
    owner.send("/quit")
    await wait_until(lambda: owner.disconnected, "alice's quit")
    alice = IRCUser("alice")
    alice.password = "wonderland"
    await chat.connect(alice, port)  # type: ignore[arg-type]
    await wait_until(
        lambda: (
            ":chatservice NOTICE alice :You are now identified as alice." in alice.lines
        ),
        "identified",
    )


def test_privmsg_nickserv_identify(server: ChatFactory) -> None:
    """PRIVMSG NickServ :IDENTIFY PASSWORD (IRC clients' auto-identify) works."""
    alice = irc_connection(server, "NICK alice", "USER a 0 * :A")
    alice.output()
    alice.enter("PRIVMSG NickServ :IDENTIFY wonderland")
    assert alice.lines() == [
        ":chatservice NOTICE alice :You are now identified as alice."
    ]
