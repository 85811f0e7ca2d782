"""Accounts across a restart of twistd, in the default SQLite file."""

import signal
from collections.abc import Callable
from pathlib import Path

from processes import Connection, Server, free_port, poll_until


def read_until(user: Connection, last: str) -> list[str | None]:
    """The lines C{user} is sent, up to and including C{last}."""
    lines: list[str | None] = []
    while not lines or lines[-1] != last:
        (line,) = user.read()
        assert line is not None, lines
        lines.append(line)
    return lines


def started(twistd: Callable[..., Server], port: int, restarts: int) -> Server:
    """A twistd serving C{port}, once it has read the accounts."""
    server = twistd(f"tcp:{port}:interface=127.0.0.1")
    server.wait_for_port(port)
    poll_until(
        lambda: server.output().count("registered nickname(s)") >= 1,
        f"the accounts read ({restarts})",
    )
    return server


def test_account_and_kept_messages_survive_a_restart(
    twistd: Callable[..., Server],
    connections: Callable[..., Connection],
    tmp_path: Path,
) -> None:
    """A registered nickname and a message kept for it are there after a restart."""
    port = free_port()
    server = started(twistd, port, 0)
    alice = connections(port)
    alice.send("alice")
    read_until(alice, "*** Type /help for the commands.")
    alice.send("/register alice@example.org wonderland")
    read_until(alice, REGISTERED)
    alice.send("/quit")
    bob = connections(port, "127.0.0.2")
    bob.send("bob")
    read_until(bob, "*** Type /help for the commands.")
    bob.send("/msg alice see you after the restart")
    read_until(bob, KEPT)
    output = server.output()
    assert "wonderland" not in output

    server.process.send_signal(signal.SIGTERM)
    assert server.wait() in (0, -signal.SIGTERM)
    assert (tmp_path / "chatservice.db").exists()
    server = started(twistd, port, 1)
    assert "1 registered nickname(s)" in server.output()

    impostor = connections(port, "127.0.0.3")
    impostor.send("alice")
    assert read_until(impostor, CHALLENGE)[-1] == CHALLENGE
    impostor.send("/quit")
    again = connections(port)
    again.send("/nick alice wonderland")
    lines = read_until(again, "*** End of the messages that came while you were away.")
    assert "*** You are now identified as alice." in lines
    assert any(
        line is not None and line.endswith("] *bob* see you after the restart")
        for line in lines
    ), lines
    assert CHALLENGE not in lines
    assert "wonderland" not in server.output()


REGISTERED = (
    "*** alice is now registered to you; on later connections prove it with "
    "/identify PASSWORD"
)
KEPT = (
    "*** alice is offline: your message was kept, and will be delivered when "
    "they identify"
)
CHALLENGE = (
    "*** alice is a registered nickname: if it is yours, type /identify "
    "PASSWORD within 30 seconds; otherwise you will be renamed to a guest name"
)
