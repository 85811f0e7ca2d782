"""Front ends: wire formats as plugins over one chat core (issue 16)."""

import os
from collections.abc import Callable
from pathlib import Path

from processes import Connection, Server, free_port

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.frontends import load_front_ends
from chatservice.frontends.lines import LineProtocol, lines
from chatservice.interfaces import IChatSession, IConnection, IFrontEnd
from chatservice.testing import register

#: docs/plugins.md, where a third party's front end is shown.
PLUGINS_DOC = Path(__file__).resolve().parent.parent / "docs" / "plugins.md"


def shouting_front_end() -> str:
    """The example front end of docs/plugins.md, as written there."""
    doc = PLUGINS_DOC.read_text()
    section = doc[doc.index("## Writing a front end") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_the_line_front_end_is_a_plugin() -> None:
    """The built-in line front end is found by the plugin scan, first."""
    found = load_front_ends()
    assert next(iter(found)) == "lines"
    assert found["lines"] is lines
    for front_end in found.values():
        assert verifyObject(IFrontEnd, front_end)


def test_a_session_is_apart_from_its_connection(clock: Clock) -> None:
    """A line user's session and its connection are two objects, each complete."""
    alice = register(ChatFactory(Settings(), clock=clock), "alice")
    assert isinstance(alice.protocol, LineProtocol)
    assert alice.session is not alice.protocol
    assert alice.session.connection is alice.protocol
    assert verifyObject(IChatSession, alice.session)
    assert verifyObject(IConnection, alice.protocol)


def test_a_third_party_front_end_shares_the_rooms(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """The front end docs/plugins.md shows gets its option and shares the rooms."""
    plugins = tmp_path / "site" / "chatservice" / "plugins"
    plugins.mkdir(parents=True)
    (plugins / "shouting_front_end.py").write_text(shouting_front_end())
    path = [plugins.parent.parent, *filter(None, [os.environ.get("PYTHONPATH")])]
    line_port, shouting_port = free_port(), free_port()
    server = twistd(
        f"tcp:{line_port}:interface=127.0.0.1",
        "--shouting",
        f"tcp:{shouting_port}:interface=127.0.0.1",
        env={"PYTHONPATH": os.pathsep.join(map(str, path))},
    )
    server.wait_for_port(line_port)
    server.wait_for_port(shouting_port)
    alice, bob = connections(line_port), connections(shouting_port)
    assert bob.read(2) == [
        "*** WELCOME TO CHATSERVICE.",
        "*** CHOOSE A NICKNAME: TYPE IT AND PRESS ENTER (OR USE /NICK NAME).",
    ], server.output()
    alice.read(2)
    alice.send("alice")
    alice.read(3)
    bob.send("bob")
    bob.read(3)
    assert alice.read() == ["*** bob has joined #lobby"]
    alice.send("hello bob")
    assert bob.read() == ["<ALICE> HELLO BOB"]
    bob.send("hi alice")
    assert alice.read() == ["<bob> hi alice"]
    assert "listening on --shouting tcp:" in server.output()
