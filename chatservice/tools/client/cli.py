"""The command line of C{chatservice-client}, and running it.

L{parse_args} checks the command line; L{run} starts a L{Session} on
standard input and output, or on the prompt of a L{Console} at a terminal;
L{main} sets up the reactor (Twisted's asyncio one at a terminal), runs it
and gives the exit status.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import ITransport
from twisted.python.failure import Failure

from ...text import InvalidName, check_nickname
from ..connect import DEFAULT_PORT, DEFAULT_TLS_PORT, endpoint_for, load_trust_root
from .session import PROG, Session
from .stdio import InputProtocol, Output, output_for

if TYPE_CHECKING:
    from .console import Console


# The command line.


@dataclass(frozen=True)
class Options:
    """The command line, checked."""

    host: str
    port: int
    nick: str | None = None
    tls: bool = False
    cafile: str | None = None
    insecure: bool = False
    connect_timeout: float = 10.0
    ping_interval: float = 30.0
    ping_timeout: float = 15.0

    @property
    def address(self) -> str:
        """C{HOST:PORT} for messages, with brackets around an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def split_address(text: str, default_port: int) -> tuple[str, int]:
    """C{HOST}, C{HOST:PORT}, C{[IPV6]:PORT} or C{IPV6} to a host and a port.

    @raise ValueError: With the reason, when C{text} is none of those.
    """
    port_text: str | None = None
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("use [IPV6]:PORT")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text  # a name, or an IPv6 address without a port
    if not host:
        raise ValueError("no host given")
    if port_text is None:
        return host, default_port
    if not port_text.isascii() or not port_text.isdigit():
        raise ValueError(f"the port must be a number, not {port_text!r}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"the port must be 1 to 65535, not {port}")
    return host, port


def _seconds(text: str) -> float:
    """An argparse type: a number of seconds, finite and above 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text!r}")
    return value


def _nickname(text: str) -> str:
    """An argparse type: a valid nickname."""
    try:
        return check_nickname(text)
    except InvalidName as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None = None) -> Options:
    """The checked command line; exits with status 2 and a usage line if wrong."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Connect to a chatservice server: what you type goes to the "
            "server, what it sends is printed. Reconnects and resumes the "
            "session when the link drops. /quit or Ctrl-D ends."
        ),
    )
    parser.add_argument(
        "address",
        metavar="HOST[:PORT]",
        help=f"the server; PORT is {DEFAULT_PORT} by default, "
        f"{DEFAULT_TLS_PORT} with --tls",
    )
    parser.add_argument("--nick", metavar="NAME", type=_nickname, help="the nickname")
    parser.add_argument(
        "--tls",
        action="store_true",
        help="use TLS, checking the certificate and the host name",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="trust the CA certificates in FILE (PEM) instead of the system's",
    )
    parser.add_argument(
        "--insecure",
        action="store_true",
        help="with --tls, do not check the certificate (unsafe)",
    )
    parser.add_argument(
        "--connect-timeout",
        metavar="S",
        type=_seconds,
        default=10.0,
        help="give up a connection attempt after S seconds (default: 10)",
    )
    parser.add_argument(
        "--ping-interval",
        metavar="S",
        type=_seconds,
        default=30.0,
        help="ping the server after S seconds without a line from it, or "
        "without one sent to it (default: 30)",
    )
    parser.add_argument(
        "--ping-timeout",
        metavar="S",
        type=_seconds,
        default=15.0,
        help="reconnect when a ping gets no answer in S seconds (default: 15)",
    )
    args = parser.parse_args(argv)
    if args.cafile is not None and not args.tls:
        parser.error("--cafile needs --tls")
    if args.insecure and not args.tls:
        parser.error("--insecure needs --tls")
    if args.insecure and args.cafile is not None:
        parser.error("--insecure and --cafile contradict each other")
    try:
        host, port = split_address(
            args.address, DEFAULT_TLS_PORT if args.tls else DEFAULT_PORT
        )
    except ValueError as e:
        parser.error(f"invalid HOST[:PORT] {args.address!r}: {e}")
    return Options(
        host=host,
        port=port,
        nick=args.nick,
        tls=args.tls,
        cafile=args.cafile,
        insecure=args.insecure,
        connect_timeout=args.connect_timeout,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
    )


def _status(line: str) -> None:
    """Write a status line to standard error."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # nowhere left to say it


def _session(
    reactor: Any,
    options: Options,
    trust_root: Any,
    output: Output,
    status: Callable[[str], None],
) -> Session:
    """The session the command line asks for, showing its lines on C{output}."""
    return Session(
        reactor,
        endpoint_for(
            reactor,
            options.host,
            options.port,
            connect_timeout=options.connect_timeout,
            tls=options.tls,
            insecure=options.insecure,
            trust_root=trust_root,
        ).connect,
        options.address,
        output,
        status,
        nickname=options.nick,
        connect_timeout=options.connect_timeout,
        ping_interval=options.ping_interval,
        ping_timeout=options.ping_timeout,
    )


def run(
    reactor: Any,
    options: Options,
    trust_root: Any = None,
    *,
    stdin: int = 0,
    stdout: int = 1,
    status: Callable[[str], None] = _status,
    console: Console | None = None,
) -> tuple[Session, Deferred[int]]:
    """Start a session on standard input and output; the exit status to come.

    The returned Deferred fires once the session has ended and standard
    output has been flushed (or L{Session.quit_timeout} seconds later).
    With a C{console} (at a terminal), the console reads and writes
    instead of L{StandardIO}, and it is stopped first, restoring the
    terminal.
    """
    if console is not None:
        return _run_at_terminal(reactor, options, trust_root, console)
    from twisted.internet.stdio import StandardIO

    stdio: list[ITransport] = []

    def write(data: bytes) -> None:
        stdio[0].write(data)

    output = output_for(write, os.isatty(stdout), os.environ)
    session = _session(reactor, options, trust_root, output, status)
    user = InputProtocol(session)
    stdio.append(StandardIO(user, stdin=stdin, stdout=stdout, reactor=reactor))
    session.start()

    def flushed(code: int) -> int | Deferred[int]:
        if user.output_closed:
            return code
        # Written lines may still wait for standard output to take them.
        stdio[0].loseConnection()
        if not user.closed.called:
            user.closed.addTimeout(session.quit_timeout, reactor)
        return user.closed.addBoth(lambda _: code)

    return session, session.done.addCallback(flushed)


def _run_at_terminal(
    reactor: Any, options: Options, trust_root: Any, console: Console
) -> tuple[Session, Deferred[int]]:
    """L{run} with the prompt of a L{Console}, on Twisted's asyncio reactor."""
    output = output_for(console.write, True, os.environ)
    session = _session(reactor, options, trust_root, output, console.status)
    session.start()
    console.start(session)

    def stopped(code: int) -> Deferred[int]:
        return Deferred.fromFuture(console.stop()).addCallback(lambda _: code)

    return session, session.done.addCallback(stopped)


def _use_asyncio_reactor() -> bool:
    """Install Twisted's asyncio reactor, for the console's prompt; whether done.

    prompt_toolkit runs on asyncio: with this reactor both share one event
    loop in one thread.  Not when a reactor is already installed (the client
    run inside another program): the client then reads lines as in a pipe.
    """
    if "twisted.internet.reactor" in sys.modules:
        return False
    import asyncio

    from twisted.internet import asyncioreactor

    loop = asyncio.new_event_loop()
    # The prompt's tasks are created before the loop runs: they must find
    # this loop, not make another one.
    asyncio.set_event_loop(loop)
    asyncioreactor.install(loop)
    return True


def main(argv: list[str] | None = None) -> int:
    """Run the client with C{argv} (default: C{sys.argv[1:]}); the exit status.

    0 after C{/quit} or the end of the input, 1 when the first connection
    fails or the server ends the session, 2 for a mistake on the command
    line, 130 when stopped by a signal (Ctrl-C), after a C{/quit}.
    """
    options = parse_args(argv)
    trust_root = None
    if options.cafile is not None:
        try:
            trust_root = load_trust_root(options.cafile)
        except ValueError as e:
            _status(f"{PROG}: {e}")
            return 2
    if options.insecure:
        _status(
            f"{PROG}: warning: --insecure: the server's certificate is not "
            "checked; anyone between you and the server can read and change "
            "this session"
        )
    # Both a terminal: a prompt (see chatservice.tools.client.console).  Otherwise lines
    # are read and written as they come, for scripts, with the default reactor.
    at_terminal = os.isatty(0) and os.isatty(1) and _use_asyncio_reactor()
    from twisted.internet import reactor
    from twisted.logger import (
        FilteringLogObserver,
        LogLevel,
        LogLevelFilterPredicate,
        globalLogBeginner,
        textFileLogObserver,
    )

    # Errors only (a bug): Twisted's own informational lines are not for
    # the user.
    globalLogBeginner.beginLoggingTo(
        [
            FilteringLogObserver(
                textFileLogObserver(sys.stderr),
                [LogLevelFilterPredicate(defaultLogLevel=LogLevel.error)],
            )
        ],
        redirectStandardIO=False,
    )
    blocking = _blocking_modes()
    codes: list[int] = []
    interrupted: list[bool] = []

    def interrupt() -> None:
        """Ctrl-C at the prompt: leave as on SIGINT."""
        if not interrupted:
            with suppress(ReactorNotRunning):  # already stopping
                reactor.stop()

    def start() -> None:
        try:
            console = None
            if at_terminal:
                from .console import Console

                console = Console(sys.stdout.buffer, sys.stderr.buffer, interrupt)
            session, done = run(reactor, options, trust_root, console=console)
        except Exception:
            Failure().printTraceback(sys.stderr)
            codes.append(1)
            reactor.stop()
            return
        ended: Deferred[None] = Deferred()

        def stop(code: int | Failure) -> None:
            if isinstance(code, Failure):
                code.printTraceback(sys.stderr)
                code = 1
            codes.append(code)
            ended.callback(None)
            if not interrupted:
                reactor.stop()

        def before_shutdown() -> Deferred[None] | None:
            if ended.called:
                return None
            # Stopped by a signal: leave the chat properly first.
            interrupted.append(True)
            session.shutdown()
            return ended

        done.addBoth(stop)
        reactor.addSystemEventTrigger("before", "shutdown", before_shutdown)

    reactor.callWhenRunning(start)
    try:
        reactor.run()
    finally:
        _restore_blocking_modes(blocking)
    if interrupted or not codes:
        return 130
    return codes[0]


def _blocking_modes() -> dict[int, bool]:
    """Whether standard input, output and error block (StandardIO changes it)."""
    modes = {}
    for fd in (0, 1, 2):
        try:
            modes[fd] = os.get_blocking(fd)
        except OSError:
            pass
    return modes


def _restore_blocking_modes(modes: dict[int, bool]) -> None:
    """Leave the terminal as it was: a non-blocking tty breaks the shell."""
    for fd, mode in modes.items():
        try:
            os.set_blocking(fd, mode)
        except OSError:
            pass
