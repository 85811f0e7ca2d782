"""chatservice: a chat server on Twisted, deployed with ``twistd chat``.

People connect with telnet or netcat, pick a nickname and talk.  The pieces:
L{chatservice.protocol} frames bytes into lines for one connection,
L{chatservice.commands} interprets them, L{chatservice.registry} knows who is
connected and delivers lines, and L{chatservice.service} and
L{chatservice.tap} deploy it all under twistd.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chatservice")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = ["__version__"]
