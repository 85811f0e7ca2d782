"""The real Debian C{telnet} client, typed into under C{tmux}, against twistd.

Linux C{telnet} answers Ctrl-C by sending C{IAC IP IAC DO TIMING-MARK} and
then shows nothing until the server answers the timing mark: the test
presses Ctrl-C as a user does, asks "are you there" from C{telnet}'s own
prompt, and reads the screen.  C{telnet} and C{tmux} are
Debian packages that C{.ci/run} installs; without them the tests fail.
"""

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import WAIT, Connection, Server, free_port


class Terminal:
    """A C{tmux} window of its own server, running one program."""

    def __init__(self, directory: Path, command: list[str]) -> None:
        self.socket = str(directory / "tmux.sock")
        env = {**os.environ, "TERM": os.environ.get("TERM") or "xterm"}
        # The window stays when its program ends, so its last screen can be
        # read (set in the same call, before the program can end).
        self._tmux(
            *("new-session", "-d", "-x", "100", "-y", "40", *command),
            *(";", "set-option", "-g", "remain-on-exit", "on"),
            env=env,
        )

    def _tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        result = subprocess.run(
            ["tmux", "-S", self.socket, *args],
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=env,
            check=False,
        )
        assert result.returncode == 0, (args, result.stderr)
        return result.stdout

    def type(self, *keys: str) -> None:
        """Press C{keys}, as C{tmux send-keys} names them (C{Enter}, C{C-c})."""
        self._tmux("send-keys", "-t", "0", *keys)

    def screen(self) -> str:
        """What the window shows now."""
        return self._tmux("capture-pane", "-p", "-t", "0")

    def wait_for(self, text: str) -> str:
        """Wait until C{text} is on the screen; return the screen."""
        deadline = time.monotonic() + WAIT
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                pytest.fail(f"{text!r} never appeared on the screen:\n{screen}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the tmux server and its program."""
        subprocess.run(
            ["tmux", "-S", self.socket, "kill-server"],
            capture_output=True,
            timeout=WAIT,
            check=False,
        )


def read_until(connection: Connection, line: str) -> None:
    """Read lines from C{connection} until C{line} (at most 20)."""
    seen = []
    while line not in seen:
        seen += connection.read()
        assert len(seen) < 20 and seen[-1] is not None, seen


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Callable[[list[str]], Terminal]]:
    """Start programs in tmux windows; all of them are stopped after the test."""
    missing = [name for name in ("telnet", "tmux") if shutil.which(name) is None]
    if missing:
        pytest.fail(
            f"{' and '.join(missing)} not installed: apt-get install telnet tmux "
            "(.ci/run does)"
        )
    opened: list[Terminal] = []

    def start(command: list[str]) -> Terminal:
        terminal = Terminal(tmp_path, command)
        opened.append(terminal)
        return terminal

    try:
        yield start
    finally:
        for terminal in opened:
            terminal.close()


def test_ctrl_c_in_telnet(
    twistd: Callable[[str], Server],
    connections: Callable[[int], Connection],
    terminals: Callable[[list[str]], Terminal],
) -> None:
    """After Ctrl-C, a telnet user still sees the server's lines; nobody else sees a thing."""
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1")
    server.wait_for_port(port)
    bob = connections(port)
    bob.send("bob")

    alice = terminals(["telnet", "127.0.0.1", str(port)])
    alice.wait_for("Choose a nickname")
    alice.type("alice", "Enter")
    alice.wait_for("*** Welcome, alice! Online (2): alice, bob")
    read_until(bob, "*** alice has joined #lobby")

    alice.type("C-c")
    alice.type("/ping after ctrl-c", "Enter")
    alice.wait_for("*** PONG after ctrl-c")
    alice.type("C-]")
    alice.wait_for("telnet>")
    alice.type("send ayt", "Enter")
    alice.wait_for("*** Yes, still here.")
    alice.type("C-c")
    alice.type("hello bob", "Enter")
    alice.type("C-c")
    alice.type("/quit", "Enter")
    screen = alice.wait_for("*** Goodbye.")
    assert "Connection closed by foreign host." in alice.wait_for("Connection closed")
    assert "\ufffd" not in screen

    # Exactly what alice typed, and her leaving: no telnet bytes, no U+FFFD.
    assert bob.read(2) == ["<alice> hello bob", "*** alice has left (quit)"]
