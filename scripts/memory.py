"""Memory per registered idle connection, and where it goes (tracemalloc).

Usage::

    python3 scripts/memory.py            # 5,000 connections
    python3 scripts/memory.py 10000 --top 30

It runs a chat server in this process on a free port of 127.0.0.1, opens N
plain sockets to it from this process, registers each with ``/nick uN``,
and once all are registered compares a tracemalloc snapshot with one taken
before the first connection.  It prints the bytes traced per connection in
all, then the lines of code that allocated most of them.  The client
sockets are this process's too: a few lines (``socket.py`` under
``create_connection``, about 90 bytes) are the probe's own.

This is for finding what to trim; the figure to compare with other servers
is the ``idle10k`` cell of the shared benchmark (RSS per connection), see
docs/performance.md.
"""

import argparse
import gc
import resource
import socket
import tracemalloc
from collections.abc import Generator

from twisted.internet import reactor, task
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import serverFromString

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.service import ChatService

LISTEN = "tcp:0:interface=127.0.0.1"


def main() -> None:
    """Measure, print, stop."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("connections", type=int, nargs="?", default=5000)
    parser.add_argument("--top", type=int, default=20, help="lines to show")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.connections + 100
    if hard < need:
        raise SystemExit(f"memory.py: needs {need} open files; the limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    settings = Settings(
        max_clients=args.connections + 10,
        max_per_ip=args.connections + 10,
        max_connect_rate=1e9,
        resume_grace=0,
    )
    factory = ChatFactory(settings)
    service = ChatService(factory, [(LISTEN, serverFromString(reactor, LISTEN))], None)
    service.startService()
    port = service.ports[0].getHost().port
    failures: list[object] = []

    def run() -> Generator[Deferred[object], object, None]:
        clients = []
        gc.collect()
        tracemalloc.start(4)
        before = tracemalloc.take_snapshot()
        for n in range(args.connections):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            sock.send(b"/nick u%d\n" % n)
            clients.append(sock)
            if n % 20 == 0:  # let the server accept: its backlog is small
                yield task.deferLater(reactor, 0.001, lambda: None)
        while sum(p.nickname is not None for p in factory.connections.values()) < len(
            clients
        ):
            for sock in clients:  # drain what the server sends
                try:
                    while sock.recv(65536):
                        pass
                except BlockingIOError:
                    pass
            yield task.deferLater(reactor, 0.05, lambda: None)
        yield task.deferLater(reactor, 0.2, lambda: None)
        gc.collect()
        after = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        n = len(clients)
        total = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
        print(f"{n} registered idle connections: {total / n:,.0f} bytes each (traced)")
        for stat in after.compare_to(before, "lineno")[: args.top]:
            frame = stat.traceback[0]
            where = frame.filename.split("site-packages/")[-1]
            print(
                f"{stat.size_diff / n:8.1f} B {stat.count_diff / n:5.2f} objects"
                f"  {where}:{frame.lineno}"
            )
        for sock in clients:
            sock.close()

    def start() -> None:
        d = inlineCallbacks(run)()
        d.addErrback(failures.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(start)
    reactor.run()
    if failures:
        raise SystemExit(f"memory.py: {failures[0]}")


if __name__ == "__main__":
    main()
