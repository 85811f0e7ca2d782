"""The real Debian C{irssi} IRC client, typed into under C{tmux}, against twistd.

irssi registers (CAP, NICK, USER), joins a channel, syncs it (WHO, MODE)
and chats with a telnet-style socket client, exactly as a user would with
it.  C{irssi} and C{tmux} are Debian packages that C{.ci/run} installs;
without them the test fails.
"""

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import Connection, Server, free_port
from tmux import Terminal, opened_terminals


def read_until(connection: Connection, line: str) -> list[str | None]:
    """Read lines from C{connection} until C{line} (at most 30); all of them."""
    seen: list[str | None] = []
    while line not in seen:
        seen += connection.read()
        assert len(seen) < 30 and seen[-1] is not None, seen
    return seen


@pytest.fixture
def terminals(tmp_path: Path) -> Iterator[Callable[[list[str]], Terminal]]:
    """Start programs in tmux windows; all of them are stopped after the test."""
    if shutil.which("irssi") is None:
        pytest.fail("irssi not installed: apt-get install irssi (.ci/run does)")
    yield from opened_terminals(lambda command: Terminal(tmp_path, command, height=40))


def test_irssi_chats_with_telnet(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    terminals: Callable[[list[str]], Terminal],
    tmp_path: Path,
) -> None:
    """The irssi client joins a channel and chats with a telnet user, both ways."""
    line_port, irc_port = free_port(), free_port()
    server = twistd(
        f"tcp:{line_port}:interface=127.0.0.1",
        "--irc",
        f"tcp:{irc_port}:interface=127.0.0.1",
    )
    server.wait_for_port(line_port)
    server.wait_for_port(irc_port)
    bob = connections(line_port)
    bob.send("bob")
    bob.send("/join #tea")
    read_until(bob, "*** In #tea (1): bob")
    home = tmp_path / "irssi"
    home.mkdir()
    alice = terminals(["irssi", f"--home={home}", "-n", "alice"])
    alice.wait_for("Irssi v")
    # irssi paces its own commands (2.2 s apart after a burst of 5): the
    # server would take them faster, and the test need not wait.
    alice.keys("/set cmd_queue_speed 0", "Enter")
    alice.keys(f"/connect 127.0.0.1 {irc_port}", "Enter")
    alice.wait_for("Welcome to chatservice, alice")
    alice.keys("/join #tea", "Enter")
    read_until(bob, "*** alice has joined #tea")
    # irssi shows the channel's names once it has them: the join is done.
    alice.wait_for("Total of 2 nicks")
    bob.send("hello from telnet")
    alice.wait_for("bob> hello from telnet")
    alice.type("hi from irssi")
    alice.keys("Enter")
    assert read_until(bob, "<alice> hi from irssi")[-1] == "<alice> hi from irssi"
    alice.type("/me waves")
    alice.keys("Enter")
    read_until(bob, "* alice waves")
    bob.send("/me bows")
    alice.wait_for("* bob bows")
    alice.type("/quit see you")
    alice.keys("Enter")
    read_until(bob, "*** alice has left (quit: see you)")
    assert "\ufffd" not in "\n".join(alice.screen())
