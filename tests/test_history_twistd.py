"""Room history through twistd: a real SQLite file, restarts, and kill -9.

The server runs in the test's temporary directory, where its default store,
C{chatservice.db}, is made.
"""

import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import Server, free_port, opened_by
from test_cluster_twistd import Client

#: How long before a kill a line must have been said to survive it: the
#: batch interval (1 s) and a margin for a loaded machine.
SURVIVES = 1.5


@pytest.fixture
def clients() -> Iterator[Callable[[int], Client]]:
    opened = opened_by(Client)
    yield next(opened)
    opened.close()


class Chat:
    """A twistd server in one directory, started again as often as needed."""

    def __init__(self, twistd: Callable[..., Server], connect: Callable[[int], Client]):
        self.twistd = twistd
        self.connect = connect
        self.port = free_port()
        self.server: Server | None = None

    def start(self) -> None:
        self.server = self.twistd(
            f"tcp:{self.port}:interface=127.0.0.1", "--resume-grace", "0"
        )
        self.server.wait_for_port(self.port)

    def user(self, nickname: str) -> tuple[Client, list[str]]:
        """Register C{nickname}: the client, and the lines of its welcome."""
        client = self.connect(self.port)
        client.read(2)
        client.send(nickname)
        client.name = nickname
        return client, client.sync("welcomed")


@pytest.fixture
def chat(twistd: Callable[..., Server], clients: Callable[[int], Client]) -> Chat:
    return Chat(twistd, clients)


def scrollback(welcome: list[str]) -> list[str]:
    """The lines of a welcome's scrollback, without their [HH:MM] stamps."""
    start = next(
        n for n, line in enumerate(welcome) if line.startswith("*** Scrollback")
    )
    end = welcome.index("*** End of scrollback of #lobby.")
    return [line.split("] ", 1)[1] for line in welcome[start + 1 : end]]


def test_history_survives_a_restart(chat: Chat, tmp_path: Path) -> None:
    """After a stop and a start, newcomers see the scrollback and /history."""
    chat.start()
    alice, _ = chat.user("alice")
    alice.send("before the restart")
    alice.send("/me waves")
    alice.sync("said")
    assert chat.server is not None
    chat.server.process.send_signal(signal.SIGTERM)
    assert chat.server.wait() in (0, -signal.SIGTERM)
    assert (tmp_path / "chatservice.db").exists()

    chat.start()
    bob, welcome = chat.user("bob")
    assert scrollback(welcome) == ["<alice> before the restart", "* alice waves"]
    bob.send("/history 1")
    lines = bob.sync("history")
    assert lines[0] == "*** History of #lobby: the last 1 line, times in UTC:"
    assert lines[1].endswith("] * alice waves")
    bob.send("/search restart")
    assert bob.sync("search")[1].endswith("] <alice> before the restart")


def test_kill_9_loses_at_most_the_last_second(chat: Chat) -> None:
    """Lines said more than a second and a half before a kill -9 are kept."""
    chat.start()
    alice, _ = chat.user("alice")
    for n in range(5):
        alice.send(f"early {n}")
    alice.sync("early")
    time.sleep(SURVIVES)
    alice.send("at the last moment")
    alice.sync("late")
    assert chat.server is not None
    chat.server.process.kill()
    chat.server.wait()

    chat.start()
    bob, welcome = chat.user("bob")
    kept = scrollback(welcome)
    assert kept[:5] == [f"<alice> early {n}" for n in range(5)]
    assert kept[5:] in ([], ["<alice> at the last moment"])
