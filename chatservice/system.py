"""What the server asks of the operating system for its connections.

TCP keepalive with real timers (L{keepalive_options}, L{set_socket_options}):
liveness finds dead peers, not quiet people.  A person who only reads sends
nothing for hours and must stay; a peer whose cable was pulled must go, and
with the kernel's defaults (a first probe after two hours) it would hold its
nickname for more than two hours.

Urgent data kept in line (C{SO_OOBINLINE}, L{set_socket_options}): the
Synch of a telnet client (C{send synch} at C{telnet}'s prompt) sends the
C{DM} of its C{IAC DM} as TCP urgent data, and Linux takes that byte out of
the stream unless told otherwise, leaving a lone C{IAC} that reads as data
(see L{chatservice.telnet}).

Accepting without the standard library's detour (L{set_listener_options}):
C{socket.accept} makes each connection's socket from its listener's
C{family} and C{type}, two properties that turn the numbers into enums.

Enough file descriptors for C{--max-clients} (L{fit_open_files}): the usual
soft limit of 1024 is far below the default of 10,000 clients, and past it
Twisted closes new connections without a word.
"""

import math
import resource
import socket
from dataclasses import dataclass
from functools import lru_cache
from weakref import WeakKeyDictionary

from twisted.internet import tcp

#: Keepalive probes sent, unanswered, before a peer is given up.
KEEPALIVE_PROBES = 3

#: Descriptors the server needs besides one per connection and listener:
#: standard streams, the log file, the reactor's own (epoll, waker), Redis,
#: files read at start or on SIGHUP, metrics scrapes.
SPARE_FILES = 100

_INET = (socket.AF_INET, socket.AF_INET6)


@dataclass(frozen=True, slots=True)
class Keepalive:
    """The timers derived from C{--keepalive SECONDS}; see L{keepalive_options}."""

    #: Seconds without traffic before the first probe (C{TCP_KEEPIDLE}).
    idle: int
    #: Seconds between probes (C{TCP_KEEPINTVL}).
    interval: int
    #: Unanswered probes before the peer is dropped (C{TCP_KEEPCNT}).
    probes: int
    #: Milliseconds output may stay unacknowledged (C{TCP_USER_TIMEOUT}).
    user_timeout_ms: int

    @property
    def bound(self) -> int:
        """The seconds after which a vanished peer is dropped, at most."""
        return self.idle + self.probes * self.interval


@lru_cache(maxsize=4)
def keepalive_options(seconds: int) -> Keepalive:
    """Derive every timer from the one C{--keepalive} number.

    The first probe goes after C{seconds} of silence on the link, then one
    every third of that (at least a second); after three unanswered probes
    the kernel drops the connection.  So a peer that vanished while the
    link was quiet is dropped at most C{seconds + 3 * ceil(seconds / 3)}
    seconds (about twice C{seconds}: 120 for the default 60) after it was
    last heard from.  Output it no longer acknowledges gets the same bound
    (C{TCP_USER_TIMEOUT}), since keepalive sends no probe while data is
    unacknowledged; Linux then also uses that time, not the probe count,
    to end a keepalive that goes unanswered, which is the same moment.
    """
    interval = max(1, math.ceil(seconds / 3))
    bound = seconds + KEEPALIVE_PROBES * interval
    return Keepalive(seconds, interval, KEEPALIVE_PROBES, bound * 1000)


def tcp_socket(transport: object) -> socket.socket | None:
    """The TCP socket under C{transport}, or None (UNIX, or a test's fake).

    TLS wraps TCP: the TLS transport's own transport is the TCP one.  A
    UNIX connection is a C{tcp.Connection} too (Twisted's C{unix.Server}
    subclasses it), hence the check of the address family.
    """
    if type(transport) is tcp.Server:
        # Accepted by a tcp.Port, on IPv4 or IPv6: no need to ask the family
        # (socket.family, an enum made in Python, is 2 us a connection).
        return transport.getHandle()  # type: ignore[no-any-return]
    for _ in range(3):
        if isinstance(transport, tcp.Connection):
            handle = transport.getHandle()
            if isinstance(handle, socket.socket) and handle.family in _INET:
                return handle
            return None
        transport = getattr(transport, "transport", None)
    return None


def set_socket_options(transport: object, keepalive: float) -> None:
    """Set a new TCP connection's options: urgent data in line, no Nagle, keepalive.

    Keepalive is turned on with C{keepalive_options(keepalive)}; 0 leaves
    it as the system made it (off).  Nothing is set on a connection that
    is not TCP.  An option this system lacks (they are Linux's) is left out.

    A connection accepted on a listener given the same options
    (L{set_listener_options}) has them already: Linux copies them from
    the listening socket when it makes the connection's.  One
    C{getsockopt} of the option the listener was given last tells; only a
    connection made before the listener had them all (or on a system that
    does not copy them) is given them here, six C{setsockopt} calls that
    were 4 % of a short session's server CPU.  Once one connection of a
    listener is seen with them, the later ones are not asked: the kernel
    accepts in the order the handshakes completed, so every connection
    made before the listener had its options has been accepted already
    (0.6 us a connection, the C{getsockopt} and finding the socket, for
    0.2 looking the listener up).
    """
    seconds = int(keepalive)
    listener = None
    if type(transport) is tcp.Server:
        listener = transport.server  # type: ignore[attr-defined]
    if listener is not None and _copying.get(listener) == seconds:
        return
    sock = tcp_socket(transport)
    if sock is None:
        return
    options = _socket_options(seconds)
    level, option, value = options[-1]
    if sock.getsockopt(level, option) == value:
        if listener is not None:
            _copying[listener] = seconds
        return
    for level, option, value in options:
        sock.setsockopt(level, option, value)


#: The listeners (C{tcp.Port}) one of whose connections was seen with the
#: options of C{--keepalive} (the value), copied from the listener.
_copying: "WeakKeyDictionary[object, int]" = WeakKeyDictionary()


def set_listener_options(port: object, keepalive: float) -> None:
    """Give a TCP listener the options of its connections, for them to copy.

    C{port} is a listening port (Twisted's C{tcp.Port}); anything else
    (a UNIX socket) is left as it is.  The options are set in the order
    L{set_socket_options} expects: the one it checks last.

    It is also given an C{accept} that makes the connection's socket as
    C{socket.accept} does, but with the listener's family known once, as
    a number (see L{_accepting}): 3.8-4.0 against 2.2-2.4 us an accept
    (500 connections waiting on 127.0.0.1, the best of 5), 8 Python
    calls fewer.
    """
    sock = getattr(port, "socket", None)
    if not isinstance(sock, socket.socket) or sock.family not in _INET:
        return
    for level, option, value in _socket_options(int(keepalive)):
        sock.setsockopt(level, option, value)
    accepting = _ACCEPTING.get((sock.family, sock.type))
    if type(sock) is socket.socket and accepting is not None:
        sock.__class__ = accepting


def _accepting(family: int) -> type[socket.socket]:
    """A listening TCP socket of C{family} whose C{accept} skips the enums.

    C{socket.socket.accept} reads its own C{family} and C{type} to make the
    new socket, and each read is a property that turns the number into an
    enum (C{socket.AddressFamily(2)}).  This C{accept} makes the same
    socket (family, type, protocol, descriptor) with the numbers known,
    and, as the standard one does for a listener without a timeout
    (Twisted's never has one), leaves its blocking mode as the system
    made it.
    """

    class _Accepting(socket.socket):
        __slots__ = ()

        def accept(self) -> tuple[socket.socket, object]:
            """Accept a connection: (its socket, the peer's address)."""
            fd, address = self._accept()  # type: ignore[attr-defined]
            return socket.socket(family, socket.SOCK_STREAM, self.proto, fd), address

    _Accepting.__qualname__ = _Accepting.__name__ = f"_Accepting{int(family)}"
    return _Accepting


#: By a listener's (family, type): its class with the quicker accept.
_ACCEPTING = {(family, socket.SOCK_STREAM): _accepting(family) for family in _INET}


@lru_cache(maxsize=4)
def _socket_options(seconds: int) -> tuple[tuple[int, int, int], ...]:
    """The C{setsockopt} calls for C{--keepalive seconds}, worked out once.

    The last one is the one L{set_socket_options} checks: with keepalive
    on, the time output may stay unacknowledged (or the probe count),
    whose value is ours, not a system's default.
    """
    # No Nagle delay: the flusher already writes a connection's output once
    # a reactor iteration; held until the last segment was acknowledged,
    # a line waited for the client's delayed acknowledgement, up to 40 ms
    # (docs/performance.md, "fan100 and Nagle").
    options = [
        (socket.SOL_SOCKET, socket.SO_OOBINLINE, 1),
        (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    ]
    if not seconds:
        return tuple(options)
    timers = keepalive_options(seconds)
    options.append((socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1))
    for name, value in (
        ("TCP_KEEPIDLE", timers.idle),
        ("TCP_KEEPINTVL", timers.interval),
        ("TCP_KEEPCNT", timers.probes),
        ("TCP_USER_TIMEOUT", timers.user_timeout_ms),
    ):
        option = getattr(socket, name, None)
        if option is not None:
            options.append((socket.IPPROTO_TCP, option, value))
    return tuple(options)


def fit_open_files(needed: int) -> tuple[int, int, int]:
    """Raise the soft limit of open files towards C{needed}, up to the hard one.

    Returns the soft limit before and after, and the hard limit.  Never
    lowers anything, and raises nothing when the soft limit suffices.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft, soft, hard
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (OSError, ValueError):
            # e.g. above the kernel's nr_open: keep what there is.
            return soft, soft, hard
    return soft, max(soft, target), hard


__all__ = [
    "KEEPALIVE_PROBES",
    "Keepalive",
    "SPARE_FILES",
    "fit_open_files",
    "keepalive_options",
    "set_listener_options",
    "set_socket_options",
    "tcp_socket",
]
