r"""Naive Twisted chat server: the LineReceiver pattern from Twisted's docs.

The factory keeps a dict name -> protocol. A new connection is asked
"What's your name?"; the first line is the name; every later line is sent
with sendLine() to every *other* user as "<name> text".

Deviations from the docs example, for this benchmark only:
  * delimiter is b"\\n" (the docs use LineReceiver's default b"\\r\\n"),
    because the benchmark speaks newline-terminated lines;
  * listens on 127.0.0.1:PORT given on the command line.

Known weakness (on purpose): transport.write() buffers without bound, so a
client that stops reading makes the server's memory grow.

Usage: python naive_twisted.py PORT
"""

import sys

from twisted.internet import reactor
from twisted.internet.protocol import Factory
from twisted.protocols.basic import LineReceiver


class Chat(LineReceiver):
    """One user: the first line is the name, every later one is said."""

    delimiter = b"\n"

    def __init__(self, users):
        self.users = users
        self.name = None
        self.state = "GETNAME"

    def connectionMade(self):
        """Ask for the name."""
        self.sendLine(b"What's your name?")

    def connectionLost(self, reason):
        """Forget the user."""
        if self.name in self.users and self.users[self.name] is self:
            del self.users[self.name]

    def lineReceived(self, line):
        """A name or a chat line, by state."""
        if self.state == "GETNAME":
            self.handle_GETNAME(line)
        else:
            self.handle_CHAT(line)

    def handle_GETNAME(self, name):
        """Take the name unless it is taken."""
        name = name.decode("utf-8", "replace").strip()
        if name in self.users:
            self.sendLine(b"Name taken, please choose another.")
            return
        self.sendLine(f"Welcome, {name}!".encode())
        self.name = name
        self.users[name] = self
        self.state = "CHAT"

    def handle_CHAT(self, message):
        """Send the line to every other user."""
        message = b"<" + self.name.encode("utf-8") + b"> " + message
        for name, protocol in self.users.items():  # noqa: B007 (as in the docs)
            if protocol != self:
                protocol.sendLine(message)


class ChatFactory(Factory):
    """The users, by name."""

    def __init__(self):
        self.users = {}  # maps user names to Chat instances

    def buildProtocol(self, addr):
        """A new user sharing the dict of users."""
        return Chat(self.users)


def main():
    """Listen on 127.0.0.1:PORT and run."""
    if len(sys.argv) != 2:
        sys.exit("usage: naive_twisted.py PORT")
    reactor.listenTCP(int(sys.argv[1]), ChatFactory(), interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
