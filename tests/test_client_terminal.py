"""The console client at a real terminal: C{chatservice-client} in tmux.

The server is C{twistd -n chat} in a subprocess, the other users blocking
sockets (L{processes.Connection}), and the client runs in a tmux pane with
this test's interpreter (C{python -m chatservice.tools.client}), in a
tmux window (L{tmux.Terminal}): what the user sees is read from its
screen, and where the cursor is.
"""

import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import Connection, Server, free_port, poll_until
from tmux import Terminal, opened_terminals

from chatservice.wireparse import Chat, ResumeToken, parse

ROOT = Path(__file__).resolve().parent.parent
PROMPT = "#lobby> "


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    """Run the client with these arguments in a tmux window; it is killed after.

    The window's shell notes the terminal's settings (C{stty -g}) before and
    after the client, and its exit status, in files and on the screen.
    """

    def client(*args: str) -> Terminal:
        client = shlex.join([sys.executable, "-m", "chatservice.tools.client", *args])
        script = tmp_path / "pane.sh"
        script.write_text(
            (
                f"cd {shlex.quote(str(ROOT))}\n"
                f"export PYTHONPATH={shlex.quote(str(ROOT))} LC_ALL=C.UTF-8\n"
                "stty -g > stty.before\n"
                f"{client}\n"
                'echo "EXIT=$?"\n'
                "stty -g > stty.after\n"
                "exec sleep 600\n"
            ).replace("stty.", shlex.quote(str(tmp_path)) + "/stty.")
        )
        return Terminal(tmp_path, ["sh", str(script)])

    yield from opened_terminals(client)


def children(pid: int) -> list[int]:
    """The processes whose parent is C{pid} (from C{/proc})."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # After the command's name in parentheses: state, then parent.
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def chat_server(twistd: Callable[..., Server]) -> int:
    """Start C{twistd -n chat} on a free port; the port."""
    port = free_port()
    twistd(f"tcp:{port}:interface=127.0.0.1").wait_for_port(port)
    return port


def user(connect: Callable[..., Connection], port: int, nickname: str) -> Connection:
    """A user on a plain socket (from C{connections}), registered, the welcome read."""
    connection = connect(port)
    connection.send(nickname)
    until(connection, lambda line: isinstance(parse(line), ResumeToken))
    return connection


def until(connection: Connection, wanted: Callable[[str], bool]) -> list[str]:
    """Read C{connection}'s lines up to the one that is C{wanted}; all of them."""
    lines: list[str] = []
    while True:
        (line,) = connection.read()
        assert line is not None, f"connection closed after {lines}"
        lines.append(line)
        if wanted(line):
            return lines


def test_incoming_line_is_printed_above_the_half_typed_one(
    twistd: Callable[..., Server],
    terminal: Callable[..., Terminal],
    connections: Callable[..., Connection],
) -> None:
    """A line from the server appears above the prompt; the half-typed input stays whole below, the cursor where it was."""
    port = chat_server(twistd)
    pane = terminal("--nick", "alice", f"127.0.0.1:{port}")
    pane.wait(lambda s: s[-1:] == [PROMPT.rstrip()], "the prompt")
    bob = user(connections, port, "bob")
    pane.type("half a li")
    pane.keys("Left", "Left")
    pane.wait(lambda s: s[-1] == PROMPT + "half a li", "the half-typed line")

    bob.send("hello alice")
    # Waited for whole (a redraw may be seen half done), then asserted.
    screen = pane.wait(
        lambda s: "<bob> hello alice" in s and s[-1] == PROMPT + "half a li",
        "bob's line, and the prompt drawn again",
    )
    pane.wait(
        lambda s: pane.cursor() == (len(PROMPT + "half a l") - 1, len(s) - 1),
        "the cursor back in the half-typed line",
    )

    assert screen[-3:] == [
        "*** bob has joined #lobby",
        "<bob> hello alice",
        PROMPT + "half a li",
    ]
    pane.keys("End")
    pane.type("ne")
    pane.keys("Enter")
    said = until(bob, lambda line: isinstance(parse(line), Chat))
    assert said == ["<alice> half a line"]


def test_up_recalls_the_line_typed_before(
    twistd: Callable[..., Server],
    terminal: Callable[..., Terminal],
    connections: Callable[..., Connection],
) -> None:
    """Up brings back the last line sent, to be edited and sent again."""
    port = chat_server(twistd)
    bob = user(connections, port, "bob")
    pane = terminal("--nick", "alice", f"127.0.0.1:{port}")
    pane.wait(lambda s: s[-1:] == [PROMPT.rstrip()], "the prompt")
    pane.type("first line")
    pane.keys("Enter")
    # The line sent stays on the screen, and a new prompt is drawn below it:
    # only then is the new prompt reading keys.  (A bare prompt on the last
    # line may still be the old one being redrawn.)
    pane.wait(
        lambda s: s[-2:] == [PROMPT + "first line", PROMPT.rstrip()], "a new prompt"
    )
    pane.keys("Up")
    pane.wait(lambda s: s[-1] == PROMPT + "first line", "the recalled line")
    pane.keys("BSpace", "BSpace", "BSpace", "BSpace")
    pane.type("é again")
    pane.keys("Enter")
    assert until(bob, lambda line: line == "<alice> first é again")[-2:] == [
        "<alice> first line",
        "<alice> first é again",
    ]


@pytest.mark.parametrize(
    ("how", "status", "last"),
    [
        ("C-d", 0, ["*** Goodbye."]),
        ("C-c", 130, ["*** Goodbye."]),
        # The prompt is ended after the server's last line, and stays drawn.
        ("SIGTERM", 130, ["*** Goodbye.", PROMPT + "half"]),
    ],
    ids=["ctrl-d", "ctrl-c", "sigterm"],
)
def test_leaving_restores_the_terminal(
    twistd: Callable[..., Server],
    terminal: Callable[..., Terminal],
    connections: Callable[..., Connection],
    tmp_path: Path,
    how: str,
    status: int,
    last: list[str],
) -> None:
    """Ctrl-D, Ctrl-C and SIGTERM leave with /quit, as before, and the terminal's settings are as they were."""
    port = chat_server(twistd)
    bob = user(connections, port, "bob")
    pane = terminal("--nick", "alice", f"127.0.0.1:{port}")
    pane.wait(lambda s: s[-1:] == [PROMPT.rstrip()], "the prompt")
    if how == "SIGTERM":
        pane.type("half")
        pane.wait(lambda s: s[-1] == PROMPT + "half", "the half-typed line")
        shell = pane.tmux("display-message", "-p", "#{pane_pid}").strip()
        (client,) = children(int(shell))
        os.kill(client, signal.SIGTERM)
    elif how == "C-c":
        pane.type("half")  # Ctrl-C works on a line being typed too
        pane.keys(how)
    else:
        pane.keys(how)
    screen = pane.wait(
        lambda s: any(line.startswith("EXIT=") for line in s), "the exit"
    )
    assert screen[-len(last) - 1 :] == [*last, f"EXIT={status}"]
    assert until(bob, lambda line: "alice has left" in line)[-1] == (
        "*** alice has left (quit)"
    )
    after = tmp_path / "stty.after"
    poll_until(lambda: after.exists() and after.read_text(), "stty -g after the client")
    assert after.read_text() == (tmp_path / "stty.before").read_text()


def test_rejoins_the_room_after_the_server_restarted(
    twistd: Callable[..., Server],
    terminal: Callable[..., Terminal],
    connections: Callable[..., Connection],
) -> None:
    """The server restarted (the resume token unknown): the client registers again, says so, and is back in its room."""
    port = free_port()
    first = twistd(f"tcp:{port}:interface=127.0.0.1")
    first.wait_for_port(port)
    pane = terminal("--nick", "alice", f"127.0.0.1:{port}")
    pane.wait(lambda s: s[-1:] == [PROMPT.rstrip()], "the prompt")
    pane.type("/join #python")
    pane.keys("Enter")
    pane.wait(lambda s: s[-1:] == ["#python>"], "the prompt in #python")

    first.process.terminate()
    first.wait()
    twistd(f"tcp:{port}:interface=127.0.0.1").wait_for_port(port)
    bob = user(connections, port, "bob")
    bob.send("/join #python")
    screen = pane.wait(
        lambda s: (
            "*** registered as alice again; rejoining #python" in s
            and s.count("*** You are now in #python. No topic is set.") == 2
            and s[-1] == "#python>"
        ),
        "the rejoin",
        timeout=30,  # reconnection attempts back off while twistd starts
    )
    assert "!!! resume failed: unknown nickname or wrong token" in screen
    bob.send("are you back?")
    pane.wait(lambda s: s[-2:] == ["<bob> are you back?", "#python>"], "bob's line")
