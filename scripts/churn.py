"""In-process cost of a short session (the benchmark's ``churn`` cell).

Usage::

    python3 scripts/churn.py                      # default settings, info log
    python3 scripts/churn.py --log-level warn     # any twistd chat options
    python3 scripts/churn.py --sessions 3000 --rounds 7 --profile /tmp/churn.prof
    python3 scripts/churn.py --idle 10000         # with 10,000 users in #idle
    python3 scripts/churn.py --text-observer      # now what the default does
    python3 scripts/churn.py --gc                 # and the garbage collections

It runs a chat server in this process, built from ``twistd chat``'s own
options (those of bench/peers.conf.sh, then any given) on a free port of
127.0.0.1, logging as ``twistd --logfile`` does (Twisted's text file
observer, to a temporary file, given chatservice.textlog.format_classic
by the chat service as under twistd).  A client process (this script
again) drives the cycle of the ``churn`` cell: C clients at a time (20) each
connect, send ``/nick NAME``, wait for ``Welcome, NAME!``, say one line,
shut down their sending side, read until the server closes, and close.

For each round it prints the server's CPU time per session (user and
system time of this process, which runs nothing but the server, between
the client's start and end), the client's own, and the sessions per
second; then the median and the spread of the rounds.  With C{--idle N},
N more users (of the client process) stay registered in C{#idle} through
the rounds, as on a big server: they see none of the churn, but their
timers and connections are there.  The server's CPU
per session is the figure to compare between two checkouts (each with its
own .venv), alternating runs; the shared benchmark (bench/,
docs/performance.md) is what compares servers, with the server and the
load generator on cores of their own.
"""

import argparse
import os
import resource
import selectors
import socket
import statistics
import sys
import tempfile
import time

LISTEN = "tcp:0:interface=127.0.0.1"

#: bench/peers.conf.sh's CHAT_OPTIONS: limits raised out of the way.
BENCH_OPTIONS = (
    "--max-clients 20000 --max-per-ip 20000 --max-connect-rate 1000000 "
    "--flood-rate 1000000 --flood-burst 1000000 --resume-grace 0 "
    "--idle-timeout 3600 --register-timeout 600 --max-line 8192"
).split()


# The client (a process of its own) ------------------------------------------


def open_idle(port: int, count: int) -> list[socket.socket]:
    """Register C{count} users who then sit in C{#idle}, reading nothing more."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 100), hard))
    idle = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"/nick idle%d\n/join #idle\n" % n)
        seen = b""
        while b"now in #idle" not in seen:
            data = sock.recv(65536)
            if not data:
                raise SystemExit(f"churn.py: idle user {n} refused: {seen[-200:]!r}")
            seen += data
        idle.append(sock)
    return idle


def client(port: int, sessions: int, concurrency: int, prefix: str, idle: int) -> None:
    """Run C{sessions} churn cycles, C{concurrency} at a time; report."""
    idle_users = open_idle(port, idle)
    selector = selectors.DefaultSelector()
    started = 0
    done = 0
    errors = 0

    def start() -> None:
        nonlocal started
        name = f"{prefix}{started}"
        started += 1
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.connect_ex(("127.0.0.1", port))
        state = {"name": name, "phase": "connect", "buf": b""}
        selector.register(sock, selectors.EVENT_WRITE, state)

    sys.stdout.write("ready\n")
    sys.stdout.flush()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(min(concurrency, sessions)):
        start()
    while done < sessions:
        for key, _ in selector.select(10):
            sock, state = key.fileobj, key.data
            phase = state["phase"]
            try:
                if phase == "connect":
                    sock.send(b"/nick %s\n" % state["name"].encode())
                    state["phase"] = "welcome"
                    state["ready"] = b"Welcome, %s!" % state["name"].encode()
                    selector.modify(sock, selectors.EVENT_READ, state)
                    continue
                data = sock.recv(65536)
                if phase == "welcome":
                    state["buf"] += data
                    if state["ready"] in state["buf"]:
                        sock.send(b"churn %d\n" % time.time_ns())
                        sock.shutdown(socket.SHUT_WR)
                        state["phase"] = "drain"
                    elif data:
                        continue
                    else:
                        raise ConnectionError("closed before the welcome")
                if data:
                    continue
            except OSError:
                errors += 1
            selector.unregister(sock)
            sock.close()
            done += 1
            if started < sessions:
                start()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    sys.stdout.write(f"done {wall} {cpu} {errors}\n")
    sys.stdout.flush()
    if idle_users:
        sys.stdin.read()  # hold them until the server is done


# The server (this process) ----------------------------------------------------


def server(args: argparse.Namespace, chat_options: list[str]) -> None:
    """Run the server, one client process per round, and print the rounds."""
    from twisted.internet import protocol, reactor
    from twisted.logger import globalLogBeginner, textFileLogObserver

    from chatservice import tap

    # A plain file, as twistd's standard output redirected to one (the
    # benchmark's cell): a NamedTemporaryFile's wrapper would add a Python
    # call to every write and flush of the log.
    descriptor, log_path = tempfile.mkstemp(prefix="churn-", suffix=".log")
    log_file = open(descriptor, "w")  # noqa: SIM115
    if args.text_observer:
        # What --logger chatservice.logs.text_observer does, to this file.
        from twisted.logger import FileLogObserver

        from chatservice.logs import format_classic

        observer = FileLogObserver(log_file, format_classic)
    else:
        # What twistd does with --logfile (or -n and stdout to a file).
        observer = textFileLogObserver(log_file)
    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    options = tap.Options()
    options.parseOptions([*BENCH_OPTIONS, "--port", LISTEN, *chat_options])
    service = tap.makeService(options)
    service.startService()
    port = service.ports[0].getHost().port
    rounds: list[tuple[float, float, float]] = []
    profiler = None
    # With --gc: the cyclic garbage collector's work in the measured rounds.
    collections_seen = {0: [0, 0.0, 0], 1: [0, 0.0, 0], 2: [0, 0.0, 0]}
    collecting = {"on": False, "start": 0.0}

    def count_collection(phase: str, info: dict[str, int]) -> None:
        if not collecting["on"]:
            return
        if phase == "start":
            collecting["start"] = time.perf_counter()
            return
        seen = collections_seen[info["generation"]]
        seen[0] += 1
        seen[1] += time.perf_counter() - collecting["start"]
        seen[2] += info["collected"]

    if args.gc:
        import gc

        gc.callbacks.append(count_collection)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()

    class Round(protocol.ProcessProtocol):
        def __init__(self, number: int, sessions: int) -> None:
            self.number = number
            self.sessions = sessions
            self.output = b""

        def outReceived(self, data: bytes) -> None:
            self.output += data
            if b"ready\n" in data:
                if profiler is not None and self.number >= 0:
                    profiler.enable()
                collecting["on"] = self.number >= 0
                self.cpu = time.process_time()
                self.rusage = resource.getrusage(resource.RUSAGE_SELF)
            if b"done" in data:
                cpu = time.process_time() - self.cpu
                rusage = resource.getrusage(resource.RUSAGE_SELF)
                self.system = rusage.ru_stime - self.rusage.ru_stime
                if profiler is not None:
                    profiler.disable()
                collecting["on"] = False
                _, wall, client_cpu, errors = self.output.split()[-4:]
                if int(errors):
                    print(f"round {self.number}: {int(errors)} client errors")
                if self.number >= 0:
                    self.report(cpu, float(wall), float(client_cpu))

        def report(self, cpu: float, wall: float, client_cpu: float) -> None:
            n = self.sessions
            rounds.append((cpu / n * 1e6, client_cpu / n * 1e6, n / wall))
            print(
                f"round {self.number + 1}: server {cpu / n * 1e6:6.1f} us/session "
                f"({self.system / n * 1e6:.0f} in the kernel), "
                f"client {client_cpu / n * 1e6:6.1f} us/session, "
                f"{n / wall:7.0f} sessions/s"
            )
            sys.stdout.flush()

        def processEnded(self, reason: object) -> None:
            if self.number + 1 < args.rounds:
                run(self.number + 1)
            else:
                reactor.stop()

    def run(number: int) -> None:
        sessions = args.sessions if number >= 0 else args.warmup
        reactor.spawnProcess(
            Round(number, sessions),
            sys.executable,
            [
                sys.executable,
                os.path.abspath(__file__),
                "--client",
                str(port),
                str(sessions),
                str(args.concurrency),
                f"c{number + 1}x",
                "0",
            ],
            env=os.environ,
        )

    class Idle(protocol.ProcessProtocol):
        def outReceived(self, data: bytes) -> None:
            if b"ready" in data:
                run(-1)  # a warm-up round first

    idle = None
    if args.idle:
        idle = Idle()
        reactor.callWhenRunning(
            reactor.spawnProcess,
            idle,
            sys.executable,
            [
                sys.executable,
                os.path.abspath(__file__),
                "--client",
                str(port),
                "0",
                "1",
                "i",
                str(args.idle),
            ],
            env=os.environ,
        )
    else:
        reactor.callWhenRunning(run, -1)  # a warm-up round first
    reactor.run()
    if idle is not None:
        idle.transport.closeStdin()  # the idle users' process ends
    service.stopService()
    log_file.close()
    with open(log_path) as written:
        lines = sum(1 for _ in written)
    os.unlink(log_path)
    server_us = [r[0] for r in rounds]
    rates = [r[2] for r in rounds]
    print(
        f"server CPU per session: median {statistics.median(server_us):.1f} us "
        f"(min {min(server_us):.1f}, max {max(server_us):.1f}) over "
        f"{len(rounds)} rounds of {args.sessions}; "
        f"{statistics.median(rates):.0f} sessions/s median; "
        f"{lines} log lines"
    )
    if args.gc:
        total = args.sessions * len(rounds)
        print(
            "garbage collections in the rounds: "
            + ", ".join(
                f"generation {generation} {n} ({ms * 1e3:.1f} ms, {found} found)"
                for generation, (n, ms, found) in collections_seen.items()
            )
            + f"; {sum(c[1] for c in collections_seen.values()) / total * 1e6:.2f} "
            f"us and {sum(c[2] for c in collections_seen.values()) / total:.2f} "
            "objects of cyclic garbage a session"
        )
    if profiler is not None:
        profiler.dump_stats(args.profile)
        print(f"profile of the measured rounds written to {args.profile}")


def main() -> None:
    """Parse the arguments; be the server, or (with --client) the client."""
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        port, sessions, concurrency = map(int, sys.argv[2:5])
        client(port, sessions, concurrency, sys.argv[5], int(sys.argv[6]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        epilog="Other options are passed to the chat server (twistd chat's).",
    )
    parser.add_argument("--sessions", type=int, default=2000, help="per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=300, help="sessions")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument(
        "--idle", type=int, default=0, help="users sitting in #idle meanwhile"
    )
    parser.add_argument("--profile", help="write a cProfile of the rounds here")
    parser.add_argument(
        "--gc",
        action="store_true",
        help="count the cyclic garbage collector's work in the measured rounds",
    )
    parser.add_argument(
        "--text-observer",
        action="store_true",
        help="log as twistd --logger chatservice.logs.text_observer does "
        "(since the chat service formats twistd's own log the same way, "
        "this measures what the default does)",
    )
    args, chat_options = parser.parse_known_args()
    server(args, chat_options)


if __name__ == "__main__":
    main()
