"""The README's example session is what the server really sends."""

import re
from pathlib import Path

from chatservice.factory import ChatFactory
from chatservice.testing import FakeConnection, register

README = Path(__file__).resolve().parent.parent / "README.md"

#: How a line the user typed is marked in the README's transcripts.
TYPED = re.compile(r"^(.*?)\s+# typed$")

#: The resume token, different every time.
TOKEN = re.compile(r"(?<=resume token: )[\w-]+|(?<=/resume alice )[\w-]+")


def transcripts() -> tuple[list[str], list[str]]:
    """The README's two transcripts: alice's session, then bob's."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Connecting\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"^```(\w*)\n(.*?)\n```$", section, re.MULTILINE | re.DOTALL)
    alice, bob = [block for language, block in blocks if not language]
    return alice.splitlines(), bob.splitlines()


class Transcript:
    """One user's screen: what the server sent and what they typed, in order."""

    def __init__(self, connection: FakeConnection) -> None:
        self.connection = connection
        self.screen: list[str] = []

    def read(self) -> None:
        """Add what the server sent since the last read."""
        self.screen += [TOKEN.sub("TOKEN", line) for line in self.connection.lines()]

    def type(self, line: str) -> None:
        """Type C{line}, marked as the README marks it."""
        self.screen.append(f"{line}  # typed")
        self.connection.enter(line)


def test_readme_session(factory: ChatFactory) -> None:
    """Alice's and bob's sessions in the README are exactly what they get."""
    bob = Transcript(register(factory, "bob"))
    alice = Transcript(FakeConnection(factory))
    alice.read()
    for line in ["alice", "hello bob"]:
        alice.type(line)
        alice.read()
        bob.read()
    bob.type("hi alice")
    for line in ["/me waves", "/msg bob are you free at noon?", "/who", "/quit lunch"]:
        alice.read()
        alice.type(line)
        bob.read()
    alice.read()
    bob.read()

    def normalised(lines: list[str]) -> list[str]:
        return [
            TOKEN.sub("TOKEN", TYPED.sub(r"\1  # typed", line).rstrip())
            for line in lines
        ]

    assert (normalised(alice.screen), normalised(bob.screen)) == tuple(
        map(normalised, transcripts())
    )
