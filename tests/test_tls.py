"""TLS: C{--port ssl:...} serves the same chat, encrypted, beside plain TCP.

A throwaway CA and server certificate (L{certs}) are made for each test.
The in-process tests use Twisted clients (see L{harness}); the end-to-end
tests run C{twistd -n chat} and use Python's blocking C{ssl} module, as any
TLS client would.  Every wait has a deadline; nothing sleeps.
"""

import signal
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from certs import ServerCert, make_ca, make_server_cert
from harness import GREETING, Harness, wait_until
from processes import Connection, Server, free_port, opened_by

from twisted.internet import reactor
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.logger import LogLevel, globalLogPublisher

PLAIN = "tcp:0:interface=127.0.0.1"


@pytest.fixture
def server_cert(tmp_path: Path) -> ServerCert:
    """A certificate for localhost and 127.0.0.1, signed by a new CA."""
    return make_server_cert(make_ca(tmp_path / "pki"))


def trusting(
    cert: ServerCert, hostname: str = "localhost"
) -> IOpenSSLClientConnectionCreator:
    """Client TLS options that trust only the test CA and expect C{hostname}."""
    authority = Certificate.loadPEM(cert.ca_path.read_bytes())
    return optionsForClientTLS(hostname, trustRoot=authority)


@pytest.fixture
def logged() -> Iterator[list[dict]]:
    """Every log event emitted during the test."""
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(events.append)


def errors(events: list[dict]) -> list[dict]:
    """The events logged at error level or above, or carrying a failure."""
    serious = (LogLevel.error, LogLevel.critical)
    return [
        event
        for event in events
        if event.get("log_level") in serious
        or "log_failure" in event
        or event.get("isError")
    ]


@pytest_twisted.ensureDeferred
async def test_tls_and_plain_users_share_the_lobby(
    chat: Harness, server_cert: ServerCert, logged: list[dict]
) -> None:
    """A TLS user and a plain user are in one #lobby: each hears the other, /who lists both."""
    chat.start(listen=[PLAIN, server_cert.endpoint()])
    plain_port, tls_port = chat.ports
    alice = await chat.user("alice", port=tls_port, tls=trusting(server_cert))
    bob = await chat.user("bob", port=plain_port)
    await wait_until(lambda: len(alice.lines) == 5, "bob's arrival")

    alice.send("hello from TLS")
    await wait_until(lambda: len(bob.lines) == 5, "alice's line")
    bob.send("hello in the clear")
    await wait_until(lambda: len(alice.lines) == 6, "bob's line")
    alice.send("/who")
    bob.send("/who")
    await wait_until(
        lambda: len(alice.lines) == 7 and len(bob.lines) == 6, "both /who answers"
    )

    assert alice.lines[2] == "*** Welcome, alice! Online (1): alice"
    assert alice.since(4) == [
        "*** bob has joined #lobby",
        "<bob> hello in the clear",
        "*** In #lobby (2): alice, bob",
    ]
    assert bob.lines[2] == "*** Welcome, bob! Online (2): alice, bob"
    assert bob.since(4) == [
        "<alice> hello from TLS",
        "*** In #lobby (2): alice, bob",
    ]
    # Alice really is on TLS, and was shown the test certificate.
    assert alice.transport.getPeerCertificate() is not None
    assert errors(logged) == []


@pytest_twisted.ensureDeferred
async def test_untrusted_certificate_refused_server_unharmed(
    chat: Harness, server_cert: ServerCert, logged: list[dict]
) -> None:
    """A client that does not trust the CA fails the handshake; the server serves on, logging no error."""
    chat.start(listen=[PLAIN, server_cert.endpoint()])
    plain_port, tls_port = chat.ports
    bob = await chat.user("bob", port=plain_port)

    # The platform's trust store knows nothing of the test CA.
    stranger = await chat.connect(port=tls_port, tls=optionsForClientTLS("localhost"))
    await wait_until(lambda: stranger.disconnected, "the failed handshake")
    await wait_until(lambda: len(chat.factory.connections) == 1, "the server's close")

    assert stranger.lines == []
    assert "certificate verify failed" in str(stranger.reason.value)
    alice = await chat.user("alice", port=tls_port, tls=trusting(server_cert))
    await wait_until(lambda: len(bob.lines) == 5, "alice's arrival")
    assert alice.lines[2] == "*** Welcome, alice! Online (2): alice, bob"
    assert bob.since(4) == ["*** alice has joined #lobby"]
    assert errors(logged) == []


@pytest_twisted.ensureDeferred
async def test_wrong_hostname_refused(
    chat: Harness, server_cert: ServerCert, logged: list[dict]
) -> None:
    """A client expecting another hostname fails the handshake and is not greeted."""
    chat.start(listen=[server_cert.endpoint()])

    client = await chat.connect(tls=trusting(server_cert, "wrong.example"))
    await wait_until(lambda: client.disconnected, "the failed handshake")
    await wait_until(lambda: not chat.factory.connections, "the server's close")

    assert client.lines == []
    assert errors(logged) == []


@pytest_twisted.ensureDeferred
async def test_plain_client_on_tls_port_disconnected(
    chat: Harness, server_cert: ServerCert, logged: list[dict]
) -> None:
    """A plain client typing on the TLS port is disconnected at once; TLS users carry on."""
    chat.start(listen=[server_cert.endpoint()])
    alice = await chat.user("alice", tls=trusting(server_cert))

    confused = await chat.connect()
    confused.send("bob")
    await wait_until(lambda: confused.disconnected, "the plain client's close", 5)
    await wait_until(lambda: len(chat.factory.connections) == 1, "the server's close")

    assert confused.lines == []
    mark = len(alice.lines)
    alice.send("/who")
    await wait_until(lambda: len(alice.lines) > mark, "the /who answer")
    assert alice.since(mark) == ["*** In #lobby (1): alice"]
    assert errors(logged) == []


@pytest_twisted.ensureDeferred
async def test_tls_client_on_plain_port_fails_at_once(
    chat: Harness, server_cert: ServerCert, logged: list[dict]
) -> None:
    """A TLS client pointed at the plain port fails its handshake at once, not at a timeout."""
    chat.start(listen=[PLAIN, server_cert.endpoint()])
    plain_port, _ = chat.ports

    confused = await chat.connect(port=plain_port, tls=trusting(server_cert))
    await wait_until(lambda: confused.disconnected, "the TLS client's close", 5)
    await wait_until(lambda: not chat.factory.connections, "the server's close")

    assert confused.lines == []
    assert errors(logged) == []


@pytest_twisted.ensureDeferred
async def test_silent_client_on_tls_port_times_out(
    chat: Harness, server_cert: ServerCert, logged: list[dict]
) -> None:
    """A client that never starts the handshake is dropped after the registration timeout and the closing deadline."""
    chat.start(
        listen=[server_cert.endpoint()], register_timeout=0.2, shutdown_timeout=0.5
    )

    started = reactor.seconds()
    silent = await chat.connect()
    await wait_until(lambda: silent.disconnected, "the silent client's close", 5)
    elapsed = reactor.seconds() - started

    # Before a handshake the server cannot say goodbye in TLS, so closing
    # waits out the closing deadline too.
    assert 0.2 <= elapsed < 3, elapsed
    assert silent.lines == []
    assert errors(logged) == []


class TLSConnection(Connection):
    """A blocking TLS client socket that reads CRLF-terminated lines."""

    def __init__(self, port: int, cafile: Path, server_hostname: str) -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            self.sock = context.wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.file = self.sock.makefile("rb")


@pytest.fixture
def tls_connections() -> Iterator[Callable[..., TLSConnection]]:
    """Open TLS client connections, C{(port, cafile, server_hostname)}."""
    yield from opened_by(TLSConnection)


@pytest.mark.parametrize("server_hostname", ["localhost", "127.0.0.1"])
def test_twistd_serves_tls(
    twistd: Callable[..., Server],
    tls_connections: Callable[..., TLSConnection],
    server_cert: ServerCert,
    server_hostname: str,
) -> None:
    """Under twistd, --port ssl:... serves a verifying TLS client; a wrong hostname fails verification."""
    port = free_port()
    server = twistd(server_cert.endpoint(port), "--shutdown-timeout", "60")
    server.wait_for_port(port)

    alice = tls_connections(port, server_cert.ca_path, server_hostname)
    assert alice.read(2) == GREETING
    alice.send("alice")
    assert alice.read() == ["*** Welcome, alice! Online (1): alice"]
    with pytest.raises(ssl.SSLCertVerificationError) as refused:
        tls_connections(port, server_cert.ca_path, "wrong.example")
    assert "Hostname mismatch" in refused.value.verify_message
    alice.send("/who")
    # Whatever else follows the welcome (help, MOTD...) is not TLS's business.
    assert read_until(alice, "*** In #lobby (1): alice")

    stopping = time.monotonic()
    server.process.send_signal(signal.SIGTERM)

    assert alice.read(2) == ["*** server shutting down", None]
    # The server waits for the client's side of the TLS close (or the
    # deadline): a client that closes on end of file lets it exit at once.
    alice.close()
    assert server.wait() in (0, -signal.SIGTERM)
    assert time.monotonic() - stopping < 10, "twistd waited for the deadline"
    assert "Traceback" not in server.output()


def read_until(connection: Connection, wanted: str, limit: int = 20) -> list[str]:
    """The lines up to C{wanted}, which must come within C{limit} lines."""
    lines: list[str] = []
    while wanted not in lines:
        assert len(lines) < limit, lines
        (line,) = connection.read()
        assert line is not None, f"closed before {wanted!r}: {lines}"
        lines.append(line)
    return lines


def test_twistd_key_not_matching_certificate(
    twistd: Callable[[str], Server], tmp_path: Path
) -> None:
    """A private key that is not the certificate's stops twistd with one line."""
    authority = make_ca(tmp_path / "pki")
    cert, other = make_server_cert(authority), make_server_cert(authority)
    mismatched = ServerCert(other.key_path, cert.cert_path, cert.ca_path)
    endpoint = mismatched.endpoint(free_port())

    server = twistd(endpoint)

    assert server.wait() != 0
    output = server.output()
    assert output.splitlines() == [
        f"twistd chat: invalid --port {endpoint!r}: Certificate public and "
        "private keys do not match. (see twistd chat --help)"
    ]


@pytest.mark.parametrize(
    ("option", "why"),
    [
        (
            "dhParameters={missing}",
            "cannot load the key, certificate or parameters (a file that is "
            "not PEM, or the wrong file?): OpenSSL says ",
        ),
        (
            "privateKey={cert}",
            "cannot load the key, certificate or parameters (a file that is "
            "not PEM, or the wrong file?): OpenSSL says ",
        ),
    ],
)
def test_bad_tls_files_stop_the_start(
    server_cert: ServerCert, tmp_path: Path, option: str, why: str
) -> None:
    """A TLS file that cannot be used stops the start with one readable line."""
    from chatservice.errors import StartupError
    from chatservice.tap import Options

    extra = option.format(missing=tmp_path / "nope.pem", cert=server_cert.cert_path)
    description = server_cert.endpoint(0) + ":" + extra
    if extra.startswith("privateKey="):
        cert = server_cert.cert_path
        description = f"ssl:0:privateKey={cert}:certKey={cert}"
    with pytest.raises(StartupError) as caught:
        Options().parseOptions(["--port", description])
    message = str(caught.value)
    assert message.startswith(f"twistd chat: invalid --port {description!r}: {why}")
    assert "\n" not in message


@pytest_twisted.ensureDeferred
async def test_tls_user_may_start_with_0x16(
    chat: Harness, server_cert: ServerCert
) -> None:
    """On the TLS port a first byte 0x16 (Ctrl-V) is text, not a handshake."""
    chat.start(listen=[server_cert.endpoint()])
    client = await chat.greeted(tls=trusting(server_cert))
    client.transport.write(b"\x16alice\r\n")
    await wait_until(
        lambda: any(line.startswith("*** Welcome, alice!") for line in client.lines),
        "the welcome",
    )
