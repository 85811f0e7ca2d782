"""In-process cost of one chat line's fan-out, without sockets.

Usage::

    python3 scripts/fanout.py            # 1,000 users in one room
    python3 scripts/fanout.py 100
    python3 scripts/fanout.py --irc      # the listeners are IRC users
    python3 scripts/fanout.py --web      # the listeners are web (WebSocket) users
    python3 scripts/fanout.py --frames   # the listeners are frame users
    python3 scripts/fanout.py --mix      # line, frame, web, IRC users in turn
    python3 scripts/fanout.py --mix --profile /tmp/fanout.prof   # with cProfile
    python3 scripts/fanout.py --mix --sockets --batch 60 --rounds 30

It registers N users over StringTransports (chatservice.testing), has one
say a line, and flushes every connection's output, as a reactor iteration
would: what the server itself spends per line, the send() of each
recipient's socket left out.  It prints the best of 7 rounds of 20 lines
(C{--rounds} more), in CPU time of its thread: time the machine gave
other processes is not counted, so runs on a shared machine compare.
Run it from two checkouts (each with its own .venv) to compare versions;
the shared benchmark (bench/, docs/performance.md) is what measures the
server with real sockets.

C{--batch K} has K lines said between two flushes, as under load, when a
reactor iteration reads many lines (C{fan1000} and C{fanmix} flush some 70
lines a recipient at a time): the fan-out's own cost then shows, the
flush's is shared by K lines.  With C{--sockets}, every listener's output
goes to a real TCP connection on 127.0.0.1 (its transport a
C{tcp.Server}, written to by the direct-send writer, as in the server;
the other ends are read between rounds), and it prints the CPU per
delivery, the system's share (the kernel's C{send}) included: what the
benchmark's cells cost the server per delivery, without the reading of
the senders' lines.
"""

import argparse
import json
import resource
import socket
import time
from types import SimpleNamespace

from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.frontends.irc import irc_front_end
from chatservice.frontends.web import web
from chatservice.testing import FakeConnection, frame_user, register

#: The front ends --mix spreads the listeners over, in turn.
MIX = ("lines", "frames", "web", "irc")


def main() -> None:
    """Print the microseconds one line to N users costs, best of the rounds."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("users", type=int, nargs="?", default=1000)
    parser.add_argument(
        "--irc", action="store_true", help="every user but the speaker is an IRC user"
    )
    parser.add_argument(
        "--web", action="store_true", help="every user but the speaker is a web user"
    )
    parser.add_argument(
        "--frames",
        action="store_true",
        help="every user but the speaker is a frame user",
    )
    parser.add_argument(
        "--mix",
        action="store_true",
        help="the users but the speaker are line, frame, web and IRC users in turn",
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds of 20 flushes")
    parser.add_argument("--batch", type=int, default=1, help="lines said per flush")
    parser.add_argument(
        "--sockets",
        action="store_true",
        help="the listeners' output goes to TCP connections on 127.0.0.1",
    )
    parser.add_argument("--profile", help="write a cProfile of the rounds here")
    arguments = parser.parse_args()
    users = arguments.users
    kind = (
        "irc"
        if arguments.irc
        else "web"
        if arguments.web
        else "frames"
        if arguments.frames
        else "lines"
    )
    factory = ChatFactory(
        Settings(
            max_clients=users + 10,
            max_per_ip=users + 10,
            max_connect_rate=1e9,
            flood_rate=1e9,
            flood_burst=1e9,
            announce_max=0,
        ),
        clock=_UnsortedClock(),
    )
    connections = [register(factory, "u0", host="10.0.0.0")]
    for n in range(1, users):
        host = f"10.0.{n // 250}.{n % 250}"
        each = MIX[n % len(MIX)] if arguments.mix else kind
        if each == "irc":
            connection = FakeConnection(factory, host, front_end=irc_front_end)
            connection.enter(f"NICK u{n}", f"USER u{n} 0 * :u{n}")
        elif each == "web":
            connection = _web_user(factory, n, host)
        elif each == "frames":
            connection = frame_user(factory, f"u{n}", host=host)
        else:
            connection = register(factory, f"u{n}", host=host)
        connections.append(connection)
    speaker = connections[0]
    readers = _on_sockets(factory, speaker) if arguments.sockets else []
    batch = arguments.batch
    profile = None
    if arguments.profile:
        import cProfile

        profile = cProfile.Profile()
        profile.enable()
    best = float("inf")
    # The system's share, over all the rounds: the kernel counts it in
    # ticks of a few milliseconds.
    total = system = 0.0
    for _ in range(arguments.rounds):
        for connection in connections:
            connection.transport.clear()
        spent = kernel = 0.0
        for n in range(20):
            _read_all(readers)  # not counted: the clients' work
            before = resource.getrusage(resource.RUSAGE_THREAD).ru_stime
            start = time.thread_time()
            for each in range(batch):
                speaker.enter(f"hello {n} {each}")
            factory.flusher.flush()
            spent += time.thread_time() - start
            kernel += resource.getrusage(resource.RUSAGE_THREAD).ru_stime - before
        total += spent
        system += kernel
        best = min(best, spent / 20 / batch)
    if profile is not None:
        profile.disable()
        profile.dump_stats(arguments.profile)
    who = {
        "irc": "IRC users",
        "web": "web users",
        "frames": "frame users",
        "lines": "users",
    }[kind]
    if arguments.mix:
        who = "users of " + ", ".join(MIX) + " in turn"
    per = f"{batch} lines a flush, " if batch > 1 else ""
    print(
        f"one line to {users} {who}: {best * 1e6:.0f} us "
        f"({per}best of {arguments.rounds} rounds of 20 flushes)"
    )
    if readers:
        share = min(system / total, 1.0) if total else 0.0
        print(
            f"{best / (users - 1) * 1e9:.0f} ns of CPU a delivery, "
            f"about {share:.0%} of it the system's"
        )


def _on_sockets(factory: ChatFactory, speaker: object) -> list[socket.socket]:
    """Give every listener a TCP connection on 127.0.0.1; the reading ends."""
    from twisted.internet import reactor

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * len(factory.connections) + 100
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    readers = []
    mine = getattr(speaker, "session", None)
    for number, session in enumerate(list(factory.connections.values())):
        if session is mine:
            continue
        reader = socket.create_connection(listener.getsockname())
        reader.setblocking(False)
        readers.append(reader)
        accepted, peer = listener.accept()
        connection = session.connection  # type: ignore[attr-defined]
        connection.transport = tcp.Server(
            accepted, connection, peer, None, number, reactor
        )
        connection._start_output()  # the direct-send writer, as in the server
    listener.close()
    return readers


def _read_all(readers: list[socket.socket]) -> None:
    """Read what the listeners were sent, so that no buffer fills."""
    for reader in readers:
        try:
            while reader.recv(1 << 20):
                pass
        except BlockingIOError:
            pass


class _UnsortedClock(Clock):
    """A C{Clock} that does not sort its calls at every C{callLater}.

    The reactor keeps its timers in a heap; C{task.Clock} sorts them all at
    every C{callLater}, which would bill the frame and IRC users' heartbeat
    timers to the flush of every line (and C{list.remove}, cancelling the
    flusher's call, would scan them all).  Nothing here advances the clock.
    """

    def _sortCalls(self) -> None:
        # The call just made first if it is due now (the flusher's
        # callLater(0)): cancelling it (the flush below is called directly)
        # then finds it at once, where it would scan past every heartbeat.
        calls = self.calls
        if calls and calls[-1].time <= self.rightNow:
            calls.insert(0, calls.pop())


def _web_user(factory: ChatFactory, n: int, host: str) -> SimpleNamespace:
    """A web user u{n}, its WebSocket's transport a StringTransport."""
    address = IPv4Address("TCP", host, 40000 + n)
    connection = factory.build_for(web, address)
    transport = StringTransport(peerAddress=address)
    transport.registerProducer(object(), True)  # the HTTP channel, as at takeover
    settings = factory.settings
    websocket = SimpleNamespace(
        transport=transport,
        factory=SimpleNamespace(
            heartbeat=settings.heartbeat, max_frame=settings.max_frame
        ),
    )
    connection.opened(websocket)
    message = json.dumps({"frame": "INPUT", "text": f"u{n}"}).encode()
    connection.received(message, False)
    return SimpleNamespace(transport=transport)


if __name__ == "__main__":
    main()
