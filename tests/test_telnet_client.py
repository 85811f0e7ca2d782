"""The real Debian C{telnet} client, typed into under C{tmux}, against twistd.

Linux C{telnet} answers Ctrl-C by sending C{IAC IP IAC DO TIMING-MARK} and
then shows nothing until the server answers the timing mark: the test
presses Ctrl-C as a user does, asks "are you there" from C{telnet}'s own
prompt, and reads the screen.  C{telnet} and C{tmux} are
Debian packages that C{.ci/run} installs; without them the tests fail.
"""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import Connection, Server, free_port
from tmux import Terminal, opened_terminals


def read_until(connection: Connection, line: str) -> None:
    """Read lines from C{connection} until C{line} (at most 20)."""
    seen = []
    while line not in seen:
        seen += connection.read()
        assert len(seen) < 20 and seen[-1] is not None, seen


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Callable[[list[str]], Terminal]]:
    """Start programs in tmux windows; all of them are stopped after the test."""
    if shutil.which("telnet") is None:
        pytest.fail("telnet not installed: apt-get install telnet (.ci/run does)")
    yield from opened_terminals(lambda command: Terminal(tmp_path, command, height=60))


def bob_and_alice_in_telnet(
    twistd: Callable[[str], Server],
    connections: Callable[[int], Connection],
    terminals: Callable[[list[str]], Terminal],
) -> tuple[Connection, Terminal]:
    """A server with bob on a socket and alice in telnet, both in #lobby."""
    port = free_port()
    twistd(f"tcp:{port}:interface=127.0.0.1").wait_for_port(port)
    bob = connections(port)
    bob.send("bob")
    alice = terminals(["telnet", "127.0.0.1", str(port)])
    alice.wait_for("Choose a nickname")
    alice.keys("alice", "Enter")
    alice.wait_for("*** Welcome, alice! Online (2): alice, bob")
    read_until(bob, "*** alice has joined #lobby")
    return bob, alice


def test_ctrl_c_in_telnet(
    twistd: Callable[[str], Server],
    connections: Callable[[int], Connection],
    terminals: Callable[[list[str]], Terminal],
) -> None:
    """After Ctrl-C, a telnet user still sees the server's lines; nobody else sees a thing."""
    bob, alice = bob_and_alice_in_telnet(twistd, connections, terminals)

    alice.keys("C-c")
    alice.keys("/ping after ctrl-c", "Enter")
    alice.wait_for("*** PONG after ctrl-c")
    alice.keys("C-]")
    alice.wait_for("telnet>")
    alice.keys("send ayt", "Enter")
    alice.wait_for("*** Yes, still here.")
    alice.keys("C-c")
    alice.keys("hello bob", "Enter")
    # Exactly what alice typed: no telnet bytes, no U+FFFD.  Read before the
    # next Ctrl-C: its signal flushes the terminal's input, which may still
    # hold the line if telnet has not read it yet (on a loaded machine).
    assert bob.read() == ["<alice> hello bob"]
    alice.keys("C-c")
    alice.keys("/quit", "Enter")
    screen = alice.wait_for("*** Goodbye.")
    assert "Connection closed by foreign host." in alice.wait_for("Connection closed")
    assert "\ufffd" not in screen
    assert bob.read() == ["*** alice has left (quit)"]


def telnet_prompt(terminal: Terminal, command: str) -> None:
    """Type C{command} at C{telnet}'s own prompt (Ctrl-]), as a user does."""
    terminal.keys("C-]")
    terminal.wait(lambda screen: screen[-1:] == ["telnet>"], "the telnet> prompt")
    terminal.keys(command, "Enter")


def test_telnet_prompt_commands(
    twistd: Callable[[str], Server],
    connections: Callable[[int], Connection],
    terminals: Callable[[list[str]], Terminal],
) -> None:
    """What telnet sends from its prompt, Ctrl-Z, a second character mode and 40 Ctrl-C leave chat as it was.

    C{send synch} sends its DM as TCP urgent data; C{send eof}, C{susp} and
    C{abort} (and Ctrl-Z) are RFC 1184's commands; a second C{mode
    character} asks for ECHO and SGA again, and telnet stays in character
    mode (Enter sends CR NUL, ending no line) until they are refused.
    """
    bob, alice = bob_and_alice_in_telnet(twistd, connections, terminals)

    for command in ["send synch", "send eof", "send susp", "send abort", "send brk"]:
        telnet_prompt(alice, command)
    alice.keys("C-z")
    alice.keys("hello bob", "Enter")
    assert bob.read() == ["<alice> hello bob"]

    telnet_prompt(alice, "send ayt")
    alice.wait_for("*** Yes, still here.")
    telnet_prompt(alice, "send ayt")
    alice.wait(
        lambda screen: screen.count("*** Yes, still here.") == 2, "a second answer"
    )

    # telnet shows its negotiation; a user types once it is over.
    telnet_prompt(alice, "toggle options")
    telnet_prompt(alice, "mode character")
    alice.wait(lambda screen: screen.count("RCVD WONT ECHO") == 1, "ECHO refused")
    alice.keys("one", "Enter")
    assert bob.read() == ["<alice> one"]
    telnet_prompt(alice, "mode line")
    telnet_prompt(alice, "mode character")
    alice.wait(lambda screen: screen.count("RCVD WONT ECHO") == 2, "refused again")
    alice.keys("two", "Enter")
    assert bob.read() == ["<alice> two"]
    alice.keys("/ping three", "Enter")
    alice.wait_for("*** PONG three")

    # Ctrl-C pressed again and again, as on a screen that seems stuck, each
    # time once the last was answered (telnet sends no new DO TIMING-MARK
    # while one waits), so the line gets two commands from each.
    def answered() -> int:
        everything = alice.tmux("capture-pane", "-p", "-S", "-")
        return everything.count("RCVD WONT TIMING MARK")

    before = answered()
    for count in range(1, 41):
        alice.keys("C-c")
        alice.wait(lambda _, n=before + count: answered() == n, f"answer {count}")
    alice.keys("/ping four", "Enter")
    screen = alice.wait_for("*** PONG four")
    assert "\ufffd" not in screen
