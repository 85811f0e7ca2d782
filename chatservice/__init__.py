"""chatservice: a chat server on Twisted, deployed with ``twistd chat``.

People connect with telnet, netcat or a program speaking frames, pick a
nickname and talk.  The pieces: a front end (L{chatservice.frontends})
turns one connection's bytes into inputs for its L{chatservice.session},
which L{chatservice.commands} interprets; L{chatservice.registry} knows who
is connected and fans out L{chatservice.events}, which each front end
encodes once for its wire; L{chatservice.service} and L{chatservice.tap}
deploy it all under twistd.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("chatservice")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0+unknown"

__all__ = ["__version__"]
