"""Liveness: dead peers are found by TCP keepalive, quiet people stay.

The in-process tests read the options of accepted sockets with getsockopt.
The end-to-end tests run C{twistd -n chat} in a network namespace of its
own, joined to the test's by a veth pair, so that one client's packets can
be dropped with C{nft} while the other client's still flow: that client
"vanishes" as behind a pulled cable, without a FIN or a reset.  They need
root, C{ip} (iproute2) and C{nft} (nftables), which C{.ci/run} installs;
without them they fail, never skip.
"""

import os
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import pytest_twisted
from certs import ServerCert, make_ca, make_server_cert
from harness import GREETING, Client, Harness, bounded, wait_until
from processes import WAIT, Connection, Server, opened_by

from twisted.internet import reactor
from twisted.internet.endpoints import (
    UNIXClientEndpoint,
    connectProtocol,
    serverFromString,
)

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.service import ChatService
from chatservice.system import set_listener_options

PLAIN = "tcp:0:interface=127.0.0.1"

#: The keepalive of the end-to-end tests: a vanished peer goes within
#: 1 + 3 * 1 = 4 seconds.
KEEPALIVE = 1
BOUND = 4


def _timers(sock: socket.socket) -> tuple[int, int, int, int, int]:
    """SO_KEEPALIVE, TCP_KEEPIDLE, TCP_KEEPINTVL, TCP_KEEPCNT, TCP_USER_TIMEOUT."""
    return (
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
    )


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, (1, 60, 20, 3, 120_000)),
        ({"keepalive": 7}, (1, 7, 3, 3, 16_000)),
        ({"keepalive": 1}, (1, 1, 1, 3, 4_000)),
    ],
)
@pytest_twisted.ensureDeferred
async def test_keepalive_timers_on_accepted_socket(
    chat: Harness, settings: dict[str, int], expected: tuple[int, ...]
) -> None:
    """An accepted TCP socket has keepalive on, with timers from --keepalive."""
    chat.start(**settings)
    await chat.greeted()
    (session,) = chat.factory.connections.values()
    protocol = session.connection
    assert _timers(protocol.transport.getHandle()) == expected


@pytest_twisted.ensureDeferred
async def test_listener_has_the_options_its_connections_copy(chat: Harness) -> None:
    """A TCP listener has its connections' options, which Linux copies to each."""
    chat.start(keepalive=7)
    listener = chat.service.ports[0].socket
    assert _timers(listener) == (1, 7, 3, 3, 16_000)
    assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 1
    await chat.greeted()
    (session,) = chat.factory.connections.values()
    accepted = session.connection.transport.getHandle()
    assert _timers(accepted) == (1, 7, 3, 3, 16_000)
    assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 1
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.parametrize("keepalive", [0, 7])
@pytest_twisted.ensureDeferred
async def test_accepted_connection_sends_without_nagle_delay(
    chat: Harness, keepalive: int
) -> None:
    """An accepted TCP socket has TCP_NODELAY, with keepalive on or off."""
    chat.start(keepalive=keepalive)
    await chat.greeted()
    (session,) = chat.factory.connections.values()
    accepted = session.connection.transport.getHandle()
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest_twisted.ensureDeferred
async def test_options_set_on_every_connection_made_before_the_listener_had_them(
    chat: Harness,
) -> None:
    """Each connection made before its listener had the options is given them.

    However many wait to be accepted; those made after are too (Linux
    copies them), and the server stops asking once it has seen one that has
    them.
    """
    chat.start(keepalive=7)
    port = chat.service.ports[0]
    listener = port.socket
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 0)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0)
    # The kernel completes these handshakes without the reactor.
    clients = [socket.create_connection(("127.0.0.1", chat.port)) for _ in range(2)]
    set_listener_options(port, 7)
    clients += [socket.create_connection(("127.0.0.1", chat.port)) for _ in range(2)]
    try:
        await wait_until(lambda: len(chat.factory.connections) == 4, "the accepts")
        for session in chat.factory.connections.values():
            accepted = session.connection.transport.getHandle()
            assert _timers(accepted) == (1, 7, 3, 3, 16_000)
    finally:
        for client in clients:
            client.close()


@pytest_twisted.ensureDeferred
async def test_options_set_on_a_connection_the_listener_lacked_them_for(
    chat: Harness,
) -> None:
    """A connection made before its listener had the options is given them.

    As one whose handshake completed between the listener's C{listen()}
    and its options being set.
    """
    chat.start(keepalive=7)
    listener = chat.service.ports[0].socket
    for level, option, value in [
        (socket.SOL_SOCKET, socket.SO_OOBINLINE, 0),
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 0),
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 0),
        (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 7200),
        (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 75),
        (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 9),
        (socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 0),
    ]:
        listener.setsockopt(level, option, value)
    await chat.greeted()
    (session,) = chat.factory.connections.values()
    accepted = session.connection.transport.getHandle()
    assert _timers(accepted) == (1, 7, 3, 3, 16_000)
    assert accepted.getsockopt(socket.SOL_SOCKET, socket.SO_OOBINLINE) == 1
    assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


@pytest.mark.parametrize(
    ("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")]
)
def test_listener_accepts_the_sockets_the_standard_accept_makes(
    family: socket.AddressFamily, host: str
) -> None:
    """A listener given the options accepts the very sockets socket.accept makes."""
    made = []
    for given in (False, True):
        with socket.socket(family) as listener:
            listener.bind((host, 0))
            listener.listen()
            listener.setblocking(False)  # as Twisted's listeners
            if given:
                set_listener_options(SimpleNamespace(socket=listener), 7)
            with socket.create_connection(listener.getsockname()[:2]) as client:
                select.select([listener], [], [], 5)
                accepted, address = listener.accept()
                with accepted:
                    made.append(
                        (
                            type(accepted),
                            accepted.family,
                            accepted.type,
                            accepted.proto,
                            accepted.gettimeout(),
                            accepted.get_inheritable(),
                            accepted.getpeername() == client.getsockname() == address,
                        )
                    )
    assert made[0] == made[1]
    assert made[1][-1]


@pytest_twisted.ensureDeferred
async def test_keepalive_off(chat: Harness) -> None:
    """--keepalive 0 leaves keepalive off."""
    chat.start(keepalive=0)
    await chat.greeted()
    (session,) = chat.factory.connections.values()
    protocol = session.connection
    sock = protocol.transport.getHandle()
    assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest_twisted.ensureDeferred
async def test_keepalive_under_tls(chat: Harness, tmp_path: Path) -> None:
    """A TLS connection's TCP socket gets the same keepalive timers."""
    cert: ServerCert = make_server_cert(make_ca(tmp_path / "pki"))
    chat.start(listen=[cert.endpoint()], keepalive=7)
    await chat.connect()  # TCP is enough: the options are set on accept
    await wait_until(lambda: chat.factory.connections, "the connection")
    (session,) = chat.factory.connections.values()
    protocol = session.connection
    tcp_transport = protocol.transport.transport  # TLS wraps TCP
    assert _timers(tcp_transport.getHandle()) == (1, 7, 3, 3, 16_000)


@pytest_twisted.ensureDeferred
async def test_unix_socket_served(chat: Harness, tmp_path: Path) -> None:
    """A UNIX socket, which has no keepalive, is served as before."""
    path = tmp_path / "chat.sock"
    description = f"unix:{path}"
    service = ChatService(
        ChatFactory(Settings(), clock=reactor),
        [(description, serverFromString(reactor, description))],
    )
    service.startService()
    chat.services.append(service)  # stopped after the test
    client = Client()
    await bounded(
        connectProtocol(UNIXClientEndpoint(reactor, str(path), timeout=5), client)
    )
    chat.clients.append(client)
    await wait_until(lambda: len(client.lines) >= 2, "the greeting")
    assert client.lines == GREETING


# A peer that vanishes, in a network namespace ---------------------------------


@dataclass(frozen=True)
class Namespace:
    """A network namespace joined to ours by a veth pair."""

    name: str
    #: Our end's address, and the namespace's.
    outside: str
    inside: str

    def run(self, *command: str, stdin: str | None = None) -> None:
        """Run C{command} inside the namespace; fail loudly if it fails."""
        _run("ip", "netns", "exec", self.name, *command, stdin=stdin)

    def cut(self, port: int) -> None:
        """Drop every packet to and from our side's TCP port C{port}."""
        self.run(
            "nft",
            "-f",
            "-",
            stdin=(
                "table inet vanish {\n"
                "  chain input { type filter hook input priority 0;"
                f" tcp sport {port} drop; }}\n"
                "  chain output { type filter hook output priority 0;"
                f" tcp dport {port} drop; }}\n"
                "}\n"
            ),
        )


def _run(*command: str, stdin: str | None = None) -> None:
    result = subprocess.run(
        command, input=stdin, capture_output=True, text=True, timeout=30
    )
    if result.returncode:
        pytest.fail(
            f"{' '.join(command)} failed ({result.returncode}): {result.stderr}",
            pytrace=False,
        )


@pytest.fixture
def netns() -> Iterator[Namespace]:
    """A fresh namespace with a veth link to ours; deleted after the test."""
    missing = [tool for tool in ("ip", "nft") if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not on PATH (Debian's nft is in /usr/sbin, "
            "which .ci/run adds to it); .ci/run installs them "
            "(apt-get install -y iproute2 nftables)",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (as in CI)", pytrace=False)
    number = os.getpid() % 16384  # a /30 of 10.250.0.0/16 per test process
    base = number * 4
    prefix = f"10.250.{base // 256}."
    namespace = Namespace(
        f"chatns{number}", f"{prefix}{base % 256 + 1}", f"{prefix}{base % 256 + 2}"
    )
    outer, inner = f"chatvo{number}", f"chatvi{number}"
    try:
        _run("ip", "netns", "add", namespace.name)
        _run("ip", "link", "add", outer, "type", "veth", "peer", "name", inner)
        _run("ip", "link", "set", inner, "netns", namespace.name)
        _run("ip", "addr", "add", f"{namespace.outside}/30", "dev", outer)
        _run("ip", "link", "set", outer, "up")
        namespace.run("ip", "addr", "add", f"{namespace.inside}/30", "dev", inner)
        namespace.run("ip", "link", "set", inner, "up")
        namespace.run("ip", "link", "set", "lo", "up")
        yield namespace
    finally:
        # Deleting the namespace deletes its end of the veth pair, and so
        # the pair, and its nft table; the link goes too if it never moved.
        for command in (
            ("ip", "netns", "delete", namespace.name),
            ("ip", "link", "delete", outer),
        ):
            subprocess.run(command, capture_output=True, timeout=30)


@pytest.fixture
def server_in(netns: Namespace, tmp_path: Path) -> Iterator[tuple[Server, int]]:
    """A twistd with --keepalive 1 in the namespace; killed before it goes."""
    port = 8000  # the namespace is new: nothing else listens there
    server = Server(
        f"tcp:{port}:interface={netns.inside}",
        tmp_path,
        ("--keepalive", str(KEEPALIVE), "--resume-grace", "0"),
        prefix=("ip", "netns", "exec", netns.name),
    )
    try:
        server.wait_for_port(port, netns.inside)
        yield server, port
    finally:
        server.kill()


@pytest.fixture
def users(
    netns: Namespace, server_in: tuple[Server, int]
) -> Iterator[Callable[[str], Connection]]:
    """Register users from our side of the link; closed after the test."""
    _, port = server_in
    opened = opened_by(Connection)
    connect = next(opened)

    def user(nickname: str) -> Connection:
        return _user(connect(port, netns.outside, netns.inside), nickname)

    try:
        yield user
    finally:
        opened.close()  # closes every connection it opened


def _user(connection: Connection, nickname: str) -> Connection:
    assert connection.read(2) == [line for line in GREETING]
    connection.send(nickname)
    (welcome,) = connection.read()
    assert welcome is not None and welcome.startswith(f"*** Welcome, {nickname}!")
    return connection


def _read_until(connection: Connection, wanted: str, timeout: float) -> list[str]:
    """The lines up to C{wanted}; fail if it does not come within C{timeout}."""
    connection.sock.settimeout(timeout)
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while wanted not in seen:
        if time.monotonic() > deadline:
            pytest.fail(f"no {wanted!r} within {timeout:g} s; got {seen}")
        try:
            (line,) = connection.read()
        except TimeoutError:
            pytest.fail(f"no {wanted!r} within {timeout:g} s; got {seen}")
        assert line is not None, f"disconnected while waiting for {wanted!r}: {seen}"
        seen.append(line)
    return seen


@pytest.mark.parametrize("talking", [False, True], ids=["quiet", "talking"])
def test_vanished_peer_dropped(
    netns: Namespace,
    server_in: tuple[Server, int],
    users: Callable[[str], Connection],
    talking: bool,
) -> None:
    """A peer whose packets stop is dropped within the keepalive bound; its room hears it left.

    Quiet: nothing is sent to it, so only keepalive probes can find it.
    Talking: the room keeps sending it lines it never acknowledges
    (TCP_USER_TIMEOUT).  Meanwhile the other user, who has not typed a line
    since registering, stays through several keepalive periods.
    """
    server, _ = server_in
    alice = users("alice")
    bob = users("bob")
    _read_until(alice, "*** bob has joined #lobby", WAIT)
    _read_until(bob, "*** Type /help for the commands.", WAIT)
    if not talking:
        # Both silent for longer than the keepalive bound: probes come and
        # are answered; nobody is dropped for being quiet.
        time.sleep(BOUND + 2)
    bob.send("still here")
    _read_until(alice, "<bob> still here", WAIT)

    netns.cut(bob.sock.getsockname()[1])
    cut = time.monotonic()
    if talking:
        alice.sock.settimeout(5)
        for count in range(BOUND * 4):
            alice.send(f"line {count}")
            time.sleep(0.25)
    # Generous for a loaded machine, yet far below the 60 s and 120 s of
    # the default --keepalive, which a server ignoring the option would use.
    _read_until(alice, "*** bob has left (connection lost)", BOUND + 12)
    elapsed = time.monotonic() - cut
    assert 1 < elapsed < BOUND + 10, (elapsed, server.output())
    assert server.process.poll() is None
