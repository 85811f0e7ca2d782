"""End-to-end tests: ``twistd -n chat`` in a subprocess, as a user runs it.

twistd is started as ``python -c "from twisted.scripts.twistd import run;
run()"`` with this test's own interpreter, rather than through the ``twistd``
console script: that needs neither PATH nor a script installed next to the
interpreter, and cannot pick up another Python's Twisted.

The server is another process, so these are plain synchronous tests with
blocking sockets, each with a timeout.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: The longest any single wait may take before the test fails.
WAIT = 15.0

GREETING = [
    "*** Welcome to chatservice.",
    "*** Choose a nickname: type it and press Enter (or use /nick NAME).",
]


class Server:
    """One ``twistd -n chat`` process, its output going to a file."""

    def __init__(
        self,
        port_option: str,
        directory: Path,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.output_path = directory / f"twistd-{time.monotonic_ns()}.out"
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [*TWISTD, "-n", "--pidfile=", "chat", "--port", port_option, *args],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )

    def output(self) -> str:
        """Everything the process wrote so far, stdout and stderr."""
        return self.output_path.read_text(errors="replace")

    def wait(self) -> int:
        """Wait for the process to exit, at most L{WAIT} seconds."""
        try:
            return self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"twistd still running after {WAIT:g} s:\n{self.output()}")

    def wait_for_port(self, port: int) -> None:
        """Wait until the server accepts connections on C{port}."""
        deadline = time.monotonic() + WAIT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"twistd exited early:\n{self.output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nothing listens on {port}:\n{self.output()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)


class Connection:
    """A blocking client socket that reads CRLF-terminated lines."""

    def __init__(self, port: int, source: str = "127.0.0.1") -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=5, source_address=(source, 0)
        )
        self.file = self.sock.makefile("rb")

    def send(self, text: str) -> None:
        """Type one line, ended by CRLF as telnet sends it."""
        self.sock.sendall(text.encode("utf-8") + b"\r\n")

    def read(self, count: int = 1) -> list[str | None]:
        """The next C{count} lines; C{None} for the end of the connection."""
        lines: list[str | None] = []
        for _ in range(count):
            raw = self.file.readline()
            if not raw:
                lines.append(None)
                continue
            assert raw.endswith(b"\r\n"), raw
            lines.append(raw[:-2].decode("utf-8"))
        return lines

    def close(self) -> None:
        """Close the socket."""
        self.file.close()
        self.sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start C{twistd -n chat --port ENDPOINT}; every process is killed after."""
    servers: list[Server] = []

    def start(
        port_option: str, *args: str, env: dict[str, str] | None = None
    ) -> Server:
        server = Server(port_option, tmp_path, args, env)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def connections() -> Iterator[Callable[..., Connection]]:
    """Open client connections; each is closed after the test."""
    opened: list[Connection] = []

    def connect(port: int, source: str = "127.0.0.1") -> Connection:
        connection = Connection(port, source)
        opened.append(connection)
        return connection

    try:
        yield connect
    finally:
        for connection in opened:
            connection.close()


def test_chat_then_sigterm(
    twistd: Callable[[str], Server], connections: Callable[[int], Connection]
) -> None:
    """Two users chat through twistd; SIGTERM tells both, closes them, and exits."""
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1")
    server.wait_for_port(port)

    alice = connections(port)
    assert alice.read(2) == GREETING
    alice.send("alice")
    assert alice.read(3)[:2] == [
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
    ]
    bob = connections(port)
    assert bob.read(2) == GREETING
    bob.send("bob")
    assert bob.read(3)[:2] == [
        "*** Welcome, bob! Online (2): alice, bob",
        "*** Type /help for the commands.",
    ]
    assert alice.read() == ["*** bob has joined #lobby"]
    bob.send("hello alice")
    assert alice.read() == ["<bob> hello alice"]
    alice.send("/who")
    assert alice.read() == ["*** In #lobby (2): alice, bob"]

    server.process.send_signal(signal.SIGTERM)

    assert alice.read(2) == ["*** server shutting down", None]
    assert bob.read(2) == ["*** server shutting down", None]
    assert server.wait() in (0, -signal.SIGTERM)
    assert "Traceback" not in server.output()


def test_port_in_use(twistd: Callable[[str], Server]) -> None:
    """A second server on a busy port exits non-zero with one line saying so."""
    port = free_port()
    endpoint = f"tcp:{port}:interface=127.0.0.1"
    first = twistd(endpoint)
    first.wait_for_port(port)

    second = twistd(endpoint)

    assert second.wait() != 0
    output = second.output()
    mentions = [line for line in output.splitlines() if f"tcp:{port}" in line]
    assert len(mentions) == 1, output
    assert f"cannot listen on {endpoint}: address already in use" in mentions[0]
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("endpoint", "cause"),
    [
        ("tcp:99999", "the port number is out of range (0-65535)"),
        ("foo:1", "Unknown endpoint type: 'foo'"),
        ("tcp:interface=127.0.0.1", "no port given"),
    ],
)
def test_bad_endpoint(
    twistd: Callable[[str], Server], endpoint: str, cause: str
) -> None:
    """An unusable --port exits non-zero with one line naming it and the cause."""
    server = twistd(endpoint)

    assert server.wait() != 0
    output = server.output()
    mentions = [line for line in output.splitlines() if endpoint in line]
    assert len(mentions) == 1, output
    assert cause in mentions[0]
    assert "Traceback" not in output


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_third_party_plugins(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """Plugins on sys.path are used; a broken one is one line, and left out."""
    broken = tmp_path / "broken" / "chatservice" / "plugins"
    broken.mkdir(parents=True)
    (broken / "broken_plugin.py").write_text("import no_such_module_here\n")
    path = [
        EXAMPLES / "chatservice-dice",
        EXAMPLES / "chatservice-capsfilter",
        broken.parent.parent,
        *filter(None, [os.environ.get("PYTHONPATH")]),
    ]
    port = free_port()
    server = twistd(
        f"tcp:{port}:interface=127.0.0.1",
        env={
            "PYTHONPATH": os.pathsep.join(map(str, path)),
            "CHATSERVICE_MAX_CAPS": "50",
        },
    )
    server.wait_for_port(port)
    alice = connections(port)
    alice.read(2)
    alice.send("alice")
    alice.read(3)
    alice.send("/roll 1d1000")
    (rolled,) = alice.read()
    assert rolled is not None and rolled.startswith("*** alice rolls 1d1000: "), (
        server.output()
    )
    alice.send("HELLO EVERYONE")
    assert alice.read() == [
        "!!! please don't shout: your line was not sent (at most 50% capital letters)"
    ]
    output = server.output()
    problems = [line for line in output.splitlines() if "broken_plugin" in line]
    assert len(problems) == 1, output
    assert problems[0].endswith(
        "plugin chatservice.plugins.broken_plugin left out: cannot import it: "
        "ModuleNotFoundError: No module named 'no_such_module_here'"
    )
    assert "Traceback" not in output


def test_motd_reloaded_on_sighup(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """The message of the day follows the welcome and is re-read on SIGHUP."""
    motd = tmp_path / "motd.txt"
    motd.write_text("Welcome to the test server.\n")
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", "--motd", str(motd))
    server.wait_for_port(port)
    alice = connections(port)
    alice.read(2)
    alice.send("alice")
    assert alice.read(3)[2] == "*** Welcome to the test server."
    motd.write_text("New rules today.\n")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while server.output().count("message of the day read from") < 2:
        assert time.monotonic() < deadline, server.output()
        assert server.process.poll() is None, server.output()
        time.sleep(0.05)
    bob = connections(port)
    bob.read(2)
    bob.send("bob")
    assert bob.read(3)[2] == "*** New rules today."


def test_missing_motd_is_one_line(
    twistd: Callable[..., Server], tmp_path: Path
) -> None:
    """A --motd file that cannot be read stops the start with one line."""
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", "--motd", str(tmp_path / "nope"))
    assert server.wait() != 0
    output = server.output()
    assert (
        f"chatservice: cannot read --motd {tmp_path / 'nope'}: no such file or directory"
        in output
    )
    assert "Traceback" not in output


def test_plain_text_operator_password_refused(
    twistd: Callable[..., Server], tmp_path: Path
) -> None:
    """An operators file with a plain-text password stops the start with one line."""
    operators = tmp_path / "operators"
    operators.write_text("root hunter2\n")
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", "--operators", str(operators))
    assert server.wait() != 0
    output = server.output()
    assert "plain-text passwords are refused" in output
    assert "chatservice-oper root" in output
    assert "hunter2" not in output
    assert "Traceback" not in output


def test_operator_ban_survives_restart(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """An operator made with chatservice-oper bans an address; a restart keeps it."""
    made = subprocess.run(
        [sys.executable, "-m", "chatservice.oper_tool", "root"],
        input="s3cret\ns3cret\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
    )
    operators = tmp_path / "operators"
    operators.write_text(made.stdout)
    bans = tmp_path / "bans.json"
    options = ("--operators", str(operators), "--bans", str(bans))
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", *options)
    server.wait_for_port(port)
    root = connections(port)
    root.read(2)
    root.send("root")
    root.read(3)
    root.send("/oper root s3cret")
    assert root.read() == [
        "*** You are now an operator (root); /help lists your commands."
    ]
    bob = connections(port, "127.0.0.2")
    bob.read(2)
    bob.send("bob")
    bob.read(3)
    assert root.read() == ["*** bob has joined #lobby"]
    root.send("/ban bob 1h testing")
    assert bob.read(2) == ["*** disconnected: banned: testing", None]
    assert root.read(2) == [
        "*** bob has left (banned: testing)",
        "*** Banned 127.0.0.2/32 (bob) for 1h: testing.",
    ]
    assert "operator root (root) banned 127.0.0.2/32" in server.output()

    server.process.send_signal(signal.SIGTERM)
    assert server.wait() in (0, -signal.SIGTERM)
    server = twistd(f"tcp:{port}:interface=127.0.0.1", *options)
    server.wait_for_port(port)
    again = connections(port, "127.0.0.2")
    refused = again.read(2)
    assert refused[0] is not None
    assert refused[0].startswith("!!! you are banned from this server until ")
    assert refused == [refused[0], None]
    assert refused[0].endswith(": testing")
    assert connections(port).read(2) == GREETING
