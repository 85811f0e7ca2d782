"""C{chatservice-client HOST[:PORT]}: a console client for chatservice.

It reads what the user types from standard input and writes what the server
sends to standard output, with no threads: through Twisted's L{StandardIO}
when either is a pipe or a file, and at a terminal through a prompt kept
below the incoming lines, with line editing and history (L{console}, on
Twisted's asyncio reactor).  On top of what C{nc} does it:

  - connects over TLS with C{--tls}, checking the certificate and the host
    name (L{optionsForClientTLS}, that is service-identity);
  - says in one line why the first connection failed, and exits with 1;
  - sends C{/ping hb-N} when the server has been quiet, or the client has
    sent nothing, for C{--ping-interval} seconds, and treats a missing
    C{*** PONG hb-N} after C{--ping-timeout} seconds as a dead link;
  - on a dead or lost link, reconnects with exponential backoff and full
    jitter, and resumes the session with the server's resume token
    (C{/resume NICK TOKEN}), so that the user sees the lines said meanwhile
    and keeps the nickname; when the resume is refused, registers the
    nickname again and rejoins the room the session was in;
  - when standard output is a terminal, removes control characters and
    colours nicknames (not with C{NO_COLOR}), and otherwise writes the
    server's lines unchanged, for scripts.

The pieces, each testable on its own with L{twisted.internet.task.Clock} and
L{twisted.internet.testing.StringTransport}: in L{link}, L{Backoff} (the
reconnection delays), L{Heartbeat} (the pings) and L{ClientProtocol}
(framing of the server's lines); in L{session}, L{Session} (what survives
reconnections: nickname, token, what the user typed while disconnected, how
it ends); in L{stdio}, L{InputProtocol}, L{PlainOutput} and
L{TerminalOutput}; in L{console}, the prompt at a terminal.  L{cli.main}
parses the command line and runs the reactor; connecting (TCP or TLS) is in
L{chatservice.tools.connect}, shared with the benchmark.
"""

from .cli import Options, main, parse_args, run
from .link import Backoff, ClientProtocol, Heartbeat
from .session import Session
from .stdio import InputProtocol, PlainOutput, TerminalOutput, colour_of, output_for

__all__ = [
    "Backoff",
    "ClientProtocol",
    "Heartbeat",
    "InputProtocol",
    "Options",
    "PlainOutput",
    "Session",
    "TerminalOutput",
    "colour_of",
    "main",
    "output_for",
    "parse_args",
    "run",
]
