"""C{chatservice-bench}: load a chat server with many clients, and measure it.

For operators sizing a deployment.  The parent process spawns worker
processes (C{python -m chatservice.tools.bench --worker PLAN}), so that the load
can come from more than one CPU.  Each worker connects its share of the
clients, registers them (C{/nick PREFIXn}, then C{/join ROOM} if asked), and
its share of the senders then says chat lines at its share of the rate.
Every client of every worker counts the lines it receives and how long they
took.

A chat line carries its run, its number and the moment it was sent
(C{time.time_ns()}: every worker is on the same machine, so the clocks
agree)::

    ~b:RUN:SEQ:NANOSECONDS:m xxxx...

C{m} marks a line of the measured period, C{w} one of the warm-up.  The
parent talks to each worker over its standard input (one command a line:
C{warmup}, C{measure}, C{drain}, C{quit}) and reads its standard output:
one JSON object a line, a report every L{REPORT_INTERVAL} seconds with the
counts so far and a L{Histogram} of the latencies since the last report,
which the parent merges.  When a worker's standard input ends (the parent is
gone), the worker ends too.

Precise comparisons between servers use the shared Go load generator
(C{../shared/bench}); this tool is for a quick, honest answer on one setup.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ProcessDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import ProcessProtocol, Protocol
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ..errors import InvalidName
from ..stats import Histogram
from ..text import check_nickname, check_room
from ..wireparse import Chat, Error, Line, NowIn, Welcome, parse
from .client import DEFAULT_PORT

PROG = "chatservice-bench"


#: Seconds between two reports of a worker to the parent.
REPORT_INTERVAL = 0.25

#: Seconds between two sending rounds of a worker.
SEND_INTERVAL = 0.01

#: After the last line is sent, how long the parent waits for the rest of
#: the deliveries; the workers count those that arrive later as lost.
DRAIN_TIMEOUT = 5.0

#: How long the workers may take to say /quit and close, after which they
#: are killed.
QUIT_TIMEOUT = 5.0

#: After Ctrl-C or SIGTERM, how long the workers may take to say /quit and
#: close, after which they are killed.
INTERRUPT_GRACE = 2.0

#: How long each client may take to register once connected.
REGISTER_TIMEOUT = 15.0

#: The server's default --flood-rate: lines a second per connection.
SERVER_FLOOD_RATE = 5.0

#: What to raise on the server, by the start of its refusal.
_REFUSAL_HINTS = [
    ("too many new connections", "--max-connect-rate (or use a lower --connect-rate)"),
    ("too many connections", "--max-per-ip"),
    ("the server is full", "--max-clients"),
]


def refusal_hint(refusal: Error) -> str:
    """What to do about the server's C{refusal}, for the error message."""
    for start, option in _REFUSAL_HINTS:
        if refusal.text.startswith(start):
            return f"for a benchmark, start the server with a higher {option}"
    return (
        "for a benchmark, raise the server's limits: --max-per-ip, "
        "--max-connect-rate, --flood-rate and --flood-burst"
    )


# Latencies.


#: The upper bounds (microseconds) of the latency histograms' buckets: a
#: log scale, each bound 2 % above the last, from 1.02 µs to 1,000 s, so
#: that every percentile is exact to 2 percent.
LATENCY_BUCKETS = tuple(1.02**i for i in range(1, 1048))


def latencies(data: dict[str, Any] | None = None) -> Histogram:
    """A histogram of latencies in microseconds: empty, or read from C{data}.

    C{data} is what L{Histogram.to_json} wrote, in a worker's report.
    """
    if data is None:
        return Histogram(LATENCY_BUCKETS)
    return Histogram.from_json(data, LATENCY_BUCKETS)


def split(total: int, parts: int) -> list[int]:
    """C{total} shared out into C{parts} shares that differ by at most one."""
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# The worker: clients, senders, counting.


@dataclass(frozen=True)
class Plan:
    """What one worker does; the parent passes it as JSON on the command line."""

    worker: int
    host: str
    port: int
    first: int  # the number of its first client: nicknames are PREFIX<n>
    clients: int
    senders: int
    rate: float  # lines per second, all of this worker's senders together
    run: str
    prefix: str = "bench"
    room: str | None = None
    connect_rate: float = 50.0
    connect_timeout: float = 10.0
    payload: int = 0
    tls: bool = False
    insecure: bool = False
    cafile: str | None = None
    deadline: float = 600.0  # seconds: the worker ends itself after this


class BenchClient(LineReceiver):
    """One chat user of a worker: registers, then counts bench lines."""

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, worker: Worker, nickname: str) -> None:
        self.worker = worker
        self.nickname = nickname
        self.registered = False
        self.open = False
        self._joining = False

    def connectionMade(self) -> None:
        """Ask for the nickname at once: the server reads lines in order."""
        self.open = True
        self.send(f"/nick {self.nickname}")

    def send(self, line: str) -> None:
        """Send one line, ended by CRLF."""
        self.transport.write(line.encode("utf-8") + b"\r\n")

    def lineReceived(self, line: bytes) -> None:
        """Register, then count the bench lines among the others."""
        parsed = parse(line)
        if self.registered:
            if isinstance(parsed, Error):
                self.worker.server_error(parsed)
            else:
                self.worker.maybe_delivery(parsed)
            return
        if isinstance(parsed, Error):
            self.worker.refused(self, parsed)
        elif isinstance(parsed, Welcome) and parsed.nick == self.nickname:
            room = self.worker.plan.room
            if room is None:
                self._registered()
            else:
                self._joining = True
                self.send(f"/join {room}")
        elif self._joining and isinstance(parsed, NowIn):
            self._registered()

    def _registered(self) -> None:
        self.registered = True
        self.worker.client_registered(self)

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Tell the worker."""
        self.open = False
        self.worker.client_lost(self, reason)


class Worker:
    """Connects one worker's share of the clients and drives its senders.

    C{emit} gets each JSON-able message for the parent; C{done} fires with
    the worker's exit status.
    """

    def __init__(
        self,
        reactor: Any,
        plan: Plan,
        emit: Callable[[dict[str, Any]], None],
        endpoint: Any,
    ) -> None:
        self.reactor = reactor
        self.plan = plan
        self.emit = emit
        self.endpoint = endpoint
        self.done: Deferred[int] = Deferred()
        self.clients: list[BenchClient] = []
        self.senders: list[BenchClient] = []
        self.connected = 0
        self.registered = 0
        self.sent = 0  # measured lines sent
        self.received = 0  # measured lines received
        self.seen = 0  # bench lines received, warm-up included
        self.errors = 0
        self.first_error = ""
        self.hist = latencies()  # measured, since the last report
        self.window = latencies()  # everything, since the last report
        self.flag = "w"
        self.scheduled = 0
        self.started_sending = 0.0
        self.drain_deadline: float | None = None  # measured lines after: lost
        self.quitting = False
        self._exit = 0
        self._abort_later: Any = None
        self._next = 0
        self._pattern = re.compile(rf"~b:{re.escape(plan.run)}:\d+:(\d+):([mw])")
        self._connector = LoopingCall.withCount(self._connect_some)
        self._connector.clock = reactor
        self._pending: list[Deferred[Any]] = []
        self._sender = LoopingCall(self._send_due)
        self._sender.clock = reactor
        self._reporter = LoopingCall(self.report)
        self._reporter.clock = reactor
        self._deadline = reactor.callLater(
            plan.deadline, self.fail, "the worker ran past its deadline"
        )

    # Connecting and registering.

    def start(self) -> None:
        """Start connecting, at most C{connect_rate} connections a second."""
        self._reporter.start(REPORT_INTERVAL, now=False)
        self._connector.start(1 / self.plan.connect_rate, now=True)

    def _connect_some(self, count: int) -> None:
        for _ in range(count):
            if self._next >= self.plan.clients:
                if self._connector.running:
                    self._connector.stop()
                return
            number = self.plan.first + self._next
            self._next += 1
            client = BenchClient(self, f"{self.plan.prefix}{number}")
            self.clients.append(client)
            if len(self.senders) < self.plan.senders:
                self.senders.append(client)
            d = connectProtocol(self.endpoint, client)
            self._pending.append(d)
            d.addCallbacks(self._connected, self._not_connected)

    def _connected(self, protocol: Protocol) -> None:
        self.connected += 1

    def _not_connected(self, reason: Failure) -> None:
        if reason.check(CancelledError):
            return  # we gave up on it: the worker is ending
        self.fail(f"cannot connect to {self.address}: {describe(reason)}")

    @property
    def address(self) -> str:
        """C{HOST:PORT} for messages."""
        host = f"[{self.plan.host}]" if ":" in self.plan.host else self.plan.host
        return f"{host}:{self.plan.port}"

    def refused(self, client: BenchClient, error: Error) -> None:
        """The server answered a client with an error before registering it."""
        text = str(error)
        if " is taken" in error.text:
            text += (
                " (a run that just ended may still hold it, for the server's "
                "--resume-grace; or use another --prefix)"
            )
        else:
            text += f" ({refusal_hint(error)}; see docs/bench.md)"
        self.fail(f"the server refused {client.nickname}: {text}")

    def client_registered(self, client: BenchClient) -> None:
        """One more client is registered (and in the room)."""
        self.registered += 1
        if self.registered == self.plan.clients:
            self.report()
            self.emit({"event": "ready"})

    def client_lost(self, client: BenchClient, reason: Failure | None) -> None:
        """A connection ended: expected when quitting, a failure otherwise."""
        if self.quitting or self.done.called:
            if all(not c.open for c in self.clients):
                self.finish(self._exit)
            return
        if not client.registered:
            self.fail(
                f"the server closed the connection of {client.nickname} "
                "before it was registered"
            )
        else:
            why = describe(reason) if reason is not None else "closed"
            self.fail(f"the connection of {client.nickname} ended: {why}")

    # Sending and counting.

    def command(self, line: str) -> None:
        """A command from the parent."""
        if line in ("warmup", "measure"):
            self.flag = "m" if line == "measure" else "w"
            if not self._sender.running and self.plan.rate > 0 and self.senders:
                self.started_sending = self.reactor.seconds()
                self._sender.start(SEND_INTERVAL, now=True)
        elif line == "drain":
            self.drain_deadline = self.reactor.seconds() + DRAIN_TIMEOUT
            if self._sender.running:
                self._sender.stop()
            self.report()
            self.emit({"event": "drained"})
        elif line == "quit":
            self.quit()

    def _send_due(self) -> None:
        elapsed = self.reactor.seconds() - self.started_sending
        due = int(elapsed * self.plan.rate) - self.scheduled
        for _ in range(due):
            client = self.senders[self.scheduled % len(self.senders)]
            self.scheduled += 1
            head = f"~b:{self.plan.run}:{self.scheduled}:{time.time_ns()}:{self.flag}"
            padding = self.plan.payload - len(head) - 1
            if padding > 0:
                head = f"{head} {'x' * padding}"
            client.transport.write(head.encode("ascii") + b"\r\n")
            if self.flag == "m":
                self.sent += 1

    def maybe_delivery(self, line: Line) -> None:
        """Count C{line} if it is a bench line of this run, said live.

        Not a line of the scrollback (L{Stamped}): that was said before
        this client came.
        """
        if not isinstance(line, Chat):
            return
        match = self._pattern.match(line.text)
        if match is None:
            return
        micros = max(0, (time.time_ns() - int(match.group(1))) // 1000)
        self.seen += 1
        self.window.observe(micros)
        late = (
            self.drain_deadline is not None
            and self.reactor.seconds() > self.drain_deadline
        )
        if match.group(2) == "m" and not late:
            self.received += 1
            self.hist.observe(micros)

    def server_error(self, error: Error) -> None:
        """The server sent a registered client an error line."""
        self.errors += 1
        if not self.first_error:
            self.first_error = str(error)

    def report(self) -> None:
        """Tell the parent the counts so far, and the latencies since last time."""
        self.emit(
            {
                "event": "report",
                "connected": self.connected,
                "registered": self.registered,
                "sent": self.sent,
                "received": self.received,
                "seen": self.seen,
                "errors": self.errors,
                "first_error": self.first_error,
                "hist": self.hist.to_json(),
                "window": self.window.to_json(),
            }
        )
        self.hist = latencies()
        self.window = latencies()

    # Ending.

    def quit(self) -> None:
        """The parent says the run is over: close every connection, end with 0."""
        self._close(0)

    def fail(self, message: str) -> None:
        """Tell the parent what went wrong, close everything and end with 1."""
        if self.quitting or self.done.called:
            return
        self.emit({"event": "error", "message": message})
        self._close(1)

    def _close(self, code: int) -> None:
        """Say /quit on every registered connection, close all, end with C{code}.

        Saying /quit frees the nicknames at once; a dropped connection would
        hold its nickname for the server's --resume-grace.
        """
        if self.quitting or self.done.called:
            return
        self.quitting = True
        self._exit = code
        self._stop_loops()
        if code == 0:
            self.report()
        for d in self._pending:
            if not d.called:
                d.cancel()
        open_ = [c for c in self.clients if c.open]
        for client in open_:
            if client.registered:
                client.send("/quit benchmark done")
            client.transport.loseConnection()
        if not open_:
            self.finish(code)
            return
        self._abort_later = self.reactor.callLater(QUIT_TIMEOUT / 2, self.abort_all)

    def abort_all(self) -> None:
        """Drop every connection at once."""
        for d in self._pending:
            if not d.called:
                d.cancel()
        for client in self.clients:
            if client.open:
                client.transport.abortConnection()

    def _stop_loops(self) -> None:
        for loop in (self._connector, self._sender, self._reporter):
            if loop.running:
                loop.stop()

    def finish(self, code: int) -> None:
        """End the worker with exit status C{code}."""
        if self.done.called:
            return
        self._stop_loops()
        for call in (self._deadline, self._abort_later):
            if call is not None and call.active():
                call.cancel()
        self.done.callback(code)


@implementer(IHalfCloseableProtocol)
class ParentLink(LineReceiver):
    """The worker's standard input and output: commands in, JSON lines out."""

    delimiter = b"\n"

    def __init__(self) -> None:
        self.worker: Worker | None = None
        self.closed: Deferred[None] = Deferred()

    def send(self, message: dict[str, Any]) -> None:
        """Write one JSON line for the parent."""
        if self.transport is not None:
            self.transport.write(json.dumps(message).encode() + b"\n")

    def lineReceived(self, line: bytes) -> None:
        """One command from the parent."""
        if self.worker is not None:
            self.worker.command(line.decode("ascii", "replace").strip())

    def readConnectionLost(self) -> None:
        """Our input ended: the parent is gone, so end at once."""
        if self.worker is not None and not self.worker.done.called:
            self.worker.quitting = True
            self.worker.abort_all()
            self.worker.finish(1)

    def writeConnectionLost(self) -> None:
        """Nobody reads our reports: the parent is gone."""
        self.readConnectionLost()

    def connectionLost(self, reason: Failure | None = None) -> None:
        """Standard input and output are both closed."""
        if not self.closed.called:
            self.closed.callback(None)


def endpoint_for_plan(reactor: Any, plan: Plan) -> Any:
    """The client endpoint for the plan: TCP, or TLS as the console client does."""
    from . import client

    options = client.Options(
        host=plan.host,
        port=plan.port,
        tls=plan.tls,
        insecure=plan.insecure,
        cafile=plan.cafile,
        connect_timeout=plan.connect_timeout,
    )
    trust_root = None
    if plan.cafile is not None:
        trust_root = client.load_trust_root(plan.cafile)
    return client.endpoint_for(reactor, options, trust_root)


async def run_worker(reactor: Any, plan_json: str) -> None:
    """Run one worker until the parent says quit; exit 1 if it failed."""
    from twisted.internet import stdio

    # Ctrl-C reaches the whole process group: the parent takes it, and tells
    # the workers to quit (or they end with their standard input).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    plan = Plan(**json.loads(plan_json))
    link = ParentLink()
    stdio.StandardIO(link, reactor=reactor)
    try:
        endpoint = endpoint_for_plan(reactor, plan)
    except ValueError as e:
        link.send({"event": "error", "message": str(e)})
        code = 1
    else:
        worker = Worker(reactor, plan, link.send, endpoint)
        link.worker = worker
        worker.start()
        code = await worker.done
    # Let what is written reach the parent before the process ends.
    link.transport.loseConnection()
    await link.closed.addTimeout(2, reactor)
    if code:
        raise SystemExit(code)  # task.react exits 0 whatever main returns


# The parent: workers, progress, summary.


@dataclass
class WorkerState:
    """What the parent knows of one worker, from its last report."""

    connected: int = 0
    registered: int = 0
    sent: int = 0
    received: int = 0
    seen: int = 0
    errors: int = 0
    first_error: str = ""
    ready: bool = False
    drained: bool = False
    ended: bool = False


class WorkerProcess(ProcessProtocol):
    """The parent's end of one worker process."""

    def __init__(self, index: int, run: Run) -> None:
        self.index = index
        self.run = run
        self._buffer = b""
        self.stderr = b""

    def send(self, command: str) -> None:
        """Write one command line to the worker."""
        if self.transport is not None and not self.run.states[self.index].ended:
            try:
                self.transport.write(command.encode("ascii") + b"\n")
            except Exception:
                pass  # its input is already closed: it is ending anyway

    def outReceived(self, data: bytes) -> None:
        """JSON lines from the worker, each handed to the run."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                text = line[:80].decode("utf-8", "replace")
                self.run.fail(f"worker {self.index} wrote {text!r}, not a report")
                continue
            self.run.message(self.index, message)

    def errReceived(self, data: bytes) -> None:
        """Keep the end of what the worker writes to stderr, to show if it dies."""
        self.stderr = (self.stderr + data)[-4000:]

    def processEnded(self, reason: Failure) -> None:
        """Tell the run how the worker ended."""
        code = getattr(reason.value, "exitCode", None)
        signal = getattr(reason.value, "signal", None)
        if reason.check(ProcessDone):
            code = 0
        self.run.ended(self.index, code, signal, self.stderr)


@dataclass
class Options:
    """The checked command line."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls: bool = False
    insecure: bool = False
    cafile: str | None = None
    clients: int = 100
    senders: int = 10
    rate: float = 50.0
    duration: float = 10.0
    warmup: float = 2.0
    workers: int = 1
    room: str | None = None
    prefix: str = "bench"
    connect_rate: float = 50.0
    connect_timeout: float = 10.0
    payload: int = 0
    progress: bool = True

    @property
    def address(self) -> str:
        """C{HOST:PORT} for messages."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass
class Totals:
    """The counts of all workers together."""

    connected: int = 0
    registered: int = 0
    sent: int = 0
    received: int = 0
    seen: int = 0
    errors: int = 0
    first_error: str = ""
    hist: Histogram = field(default_factory=latencies)


class Run:
    """One benchmark run, seen from the parent: phases, deadlines, output.

    C{spawn(index, plan, protocol)} starts a worker; C{out} and C{err}
    write a line (or, for C{err}, a progress update) to standard output and
    standard error.  C{done} fires with the exit status.
    """

    def __init__(
        self,
        reactor: Any,
        options: Options,
        spawn: Callable[[int, Plan, WorkerProcess], Any],
        progress: Progress,
        out: Callable[[str], None],
    ) -> None:
        self.reactor = reactor
        self.options = options
        self.spawn = spawn
        self.progress = progress
        self.out = out
        self.done: Deferred[int] = Deferred()
        self.run_id = secrets.token_hex(3)
        self.states: list[WorkerState] = []
        self.processes: list[WorkerProcess] = []
        self.hist = latencies()  # measured, all workers
        self.window = latencies()  # everything, since the last progress line
        self.phase = "connecting"
        self.failure: str | None = None
        self.failure_code = 1  # the exit status when failure is set
        self.code: int | None = None
        self._timers: list[Any] = []
        self._ticker = LoopingCall(self._tick)
        self._ticker.clock = reactor
        self._last_seen = 0  # deliveries seen at the last progress line
        self._last_tick = 0.0  # when the last progress line was, or its phase began
        self._phase_started = 0.0

    def plans(self) -> list[Plan]:
        """The plan of each worker."""
        o = self.options
        clients = split(o.clients, o.workers)
        senders = split(o.senders, o.workers)
        deadline = self.connect_bound() + o.warmup + o.duration + DRAIN_TIMEOUT + 30
        plans = []
        first = 0
        for worker in range(o.workers):
            plans.append(
                Plan(
                    worker=worker,
                    host=o.host,
                    port=o.port,
                    first=first,
                    clients=clients[worker],
                    senders=senders[worker],
                    rate=o.rate * senders[worker] / o.senders,
                    run=self.run_id,
                    prefix=o.prefix,
                    room=o.room,
                    connect_rate=o.connect_rate,
                    connect_timeout=o.connect_timeout,
                    payload=o.payload,
                    tls=o.tls,
                    insecure=o.insecure,
                    cafile=o.cafile,
                    deadline=deadline,
                )
            )
            first += clients[worker]
        return plans

    def connect_bound(self) -> float:
        """How long connecting and registering may take, in seconds."""
        per_worker = math.ceil(self.options.clients / self.options.workers)
        return (
            per_worker / self.options.connect_rate
            + self.options.connect_timeout
            + REGISTER_TIMEOUT
        )

    def start(self) -> Deferred[int]:
        """Spawn the workers and start the run."""
        for plan in self.plans():
            process = WorkerProcess(plan.worker, self)
            self.states.append(WorkerState())
            self.processes.append(process)
            self.spawn(plan.worker, plan, process)
        self._phase_started = self.reactor.seconds()
        self._after(self.connect_bound(), self._connect_timed_out)
        self._ticker.start(1.0, now=False)
        return self.done

    # Messages from workers.

    def message(self, index: int, message: dict[str, Any]) -> None:
        """A JSON line from worker C{index}."""
        state = self.states[index]
        event = message.get("event")
        if event == "report":
            for name in ("connected", "registered", "sent", "received", "seen"):
                setattr(state, name, int(message[name]))
            state.errors = int(message["errors"])
            state.first_error = str(message["first_error"])
            self.hist.merge(latencies(message["hist"]))
            self.window.merge(latencies(message["window"]))
            if self.phase == "drain":
                self._maybe_drained()
        elif event == "ready":
            state.ready = True
            if self.phase == "connecting" and all(s.ready for s in self.states):
                self._all_ready()
        elif event == "drained":
            state.drained = True
            self._maybe_drained()
        elif event == "error":
            self.fail(str(message["message"]))

    def ended(
        self, index: int, code: int | None, signal: int | None, stderr: bytes
    ) -> None:
        """Worker C{index} ended."""
        self.states[index].ended = True
        if self.phase != "quit" and self.failure is None:
            lines = stderr.decode("utf-8", "replace").strip().splitlines()
            last = f": {lines[-1].strip()}" if lines else ""
            how = f"signal {signal}" if signal else f"exit status {code}"
            self.fail(f"worker {index} died ({how}){last}")
        if all(s.ended for s in self.states):
            self._cancel_timers()
            if self.failure is not None:
                self._end(self.failure_code)
                return
            code = 1  # if the summary cannot be written
            try:
                code = 0 if self._summary() else 1
            finally:
                self._end(code)

    # Phases.

    def totals(self) -> Totals:
        """The counts of all workers added up."""
        totals = Totals(hist=self.hist)
        for s in self.states:
            totals.connected += s.connected
            totals.registered += s.registered
            totals.sent += s.sent
            totals.received += s.received
            totals.seen += s.seen
            totals.errors += s.errors
            totals.first_error = totals.first_error or s.first_error
        return totals

    def _all_ready(self) -> None:
        self._cancel_timers()
        self._tick()
        if self.options.warmup > 0:
            self._enter("warmup")
            self._after(self.options.warmup, self._measure)
        else:
            self._measure()

    def _measure(self) -> None:
        self._enter("measure")
        self._after(self.options.duration, self._drain)

    def _drain(self) -> None:
        self._enter("drain")
        self._after(DRAIN_TIMEOUT, self._quit)

    def _maybe_drained(self) -> None:
        if all(s.drained for s in self.states):
            totals = self.totals()
            if totals.received >= totals.sent * (self.options.clients - 1):
                self._quit()

    def _quit(self) -> None:
        if self.phase == "quit":
            return
        self._cancel_timers()
        self._enter("quit")
        self._after(QUIT_TIMEOUT, self._kill)

    def _enter(self, phase: str) -> None:
        now = self.reactor.seconds()
        if self.phase in ("warmup", "measure") and now - self._last_tick >= 0.5:
            self._tick()  # the last second of the phase that ends
        self.phase = phase
        self._phase_started = now
        if phase in ("warmup", "measure", "drain"):
            # Each progress line is one second of one phase, from its start.
            if self._ticker.running:
                self._ticker.stop()
            self._last_seen = self.totals().seen
            self._last_tick = now
            self.window = latencies()
            self._ticker.start(1.0, now=False)
        for process in self.processes:
            process.send(phase)

    def _connect_timed_out(self) -> None:
        t = self.totals()
        self.fail(
            f"timed out connecting: {t.connected}/{self.options.clients} "
            f"connected, {t.registered} registered after "
            f"{self.connect_bound():.0f} s"
        )

    def fail(self, message: str) -> None:
        """End the run with C{message} on standard error and exit status 1."""
        if self.failure is not None or self.code is not None:
            return
        self.failure = message
        self._cancel_timers()
        self.progress.clear()
        self.progress.error(f"{PROG}: {message}")
        self.phase = "failed"
        for process, state in zip(self.processes, self.states, strict=True):
            if not state.ended:
                process.send("quit")
        self._after(QUIT_TIMEOUT, self._kill)
        if all(s.ended for s in self.states):
            self._end(1)

    def interrupt(self, code: int) -> None:
        """Ctrl-C or SIGTERM: tell the workers to quit, end with C{code}.

        The workers get L{INTERRUPT_GRACE} seconds to say /quit, which frees
        their nicknames at once; then they are killed.  A second signal
        kills them at once.
        """
        if self.code is not None:
            return
        if self.phase == "interrupted":
            self._kill()
            return
        self._cancel_timers()
        if self.failure is None:
            self.progress.clear()
            self.progress.error(f"{PROG}: interrupted")
        self.failure = "interrupted"
        self.failure_code = code
        self.phase = "interrupted"
        for process, state in zip(self.processes, self.states, strict=True):
            if not state.ended:
                process.send("quit")
        self._after(INTERRUPT_GRACE, self._kill)
        if all(s.ended for s in self.states):
            self._end(code)

    def _kill(self) -> None:
        for process, state in zip(self.processes, self.states, strict=True):
            if not state.ended and process.transport is not None:
                try:
                    process.transport.signalProcess("KILL")
                except Exception:
                    pass  # it ended meanwhile
        if self.failure is None and self.phase == "quit":
            self.fail("the workers did not end in time after the run")

    def kill_all(self) -> None:
        """Kill every worker still running (the parent is ending)."""
        self._cancel_timers()
        self._kill()

    def _end(self, code: int) -> None:
        self._cancel_timers()
        if self._ticker.running:
            self._ticker.stop()
        if self.code is None:
            self.code = code
            self.done.callback(code)

    def _after(self, seconds: float, what: Callable[[], None]) -> None:
        self._timers.append(self.reactor.callLater(seconds, what))

    def _cancel_timers(self) -> None:
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        self._timers = []

    # Output.

    def _tick(self) -> None:
        """One progress line: connecting, or deliveries/s and latencies."""
        t = self.totals()
        now = self.reactor.seconds()
        if self.phase == "connecting":
            self.progress.update(
                f"connecting {t.connected}/{self.options.clients}, "
                f"registered {t.registered}"
            )
            return
        if self.phase not in ("warmup", "measure", "drain"):
            return
        interval = now - self._last_tick
        rate = round((t.seen - self._last_seen) / interval) if interval > 0 else 0
        self._last_seen = t.seen
        self._last_tick = now
        elapsed = now - self._phase_started
        if self.phase == "warmup":
            where = f"warm-up {elapsed:.0f}/{self.options.warmup:g} s"
        elif self.phase == "measure":
            where = f"measuring {elapsed:.0f}/{self.options.duration:g} s"
        else:
            where = "draining"
        self.progress.update(
            f"{where}: {rate} deliveries/s, "
            f"p50 {self.window.percentile(50) / 1000:.2f} ms, "
            f"p99 {self.window.percentile(99) / 1000:.2f} ms"
        )
        self.window = latencies()

    def _summary(self) -> bool:
        """Write the summary; C{False} if standard output is gone."""
        o = self.options
        t = self.totals()
        self.progress.clear()
        expected = t.sent * (o.clients - 1)
        lost = max(expected - t.received, 0)
        loss = 100 * lost / expected if expected else 0.0
        seconds = o.duration
        h = t.hist
        room = o.room or "#lobby"
        lines = [
            f"{PROG}: {o.address}, {o.workers} worker"
            f"{'s' if o.workers != 1 else ''}, {room}, "
            f"{o.duration:g} s measured after {o.warmup:g} s of warm-up",
            f"clients:       {o.clients}",
            f"senders:       {o.senders}",
            f"offered rate:  {o.rate:g} lines/s",
            f"lines sent:    {t.sent}",
            f"deliveries:    {t.received} of {expected} expected ({loss:.2f}% lost)",
            f"deliveries/s:  {t.received / seconds:.1f}",
            f"latency (ms):  p50 {h.percentile(50) / 1000:.2f}  "
            f"p90 {h.percentile(90) / 1000:.2f}  "
            f"p99 {h.percentile(99) / 1000:.2f}  max {h.max / 1000:.2f}",
        ]
        if t.errors:
            lines.append(f"server errors: {t.errors} (first: {t.first_error})")
        per_sender = o.rate / o.senders
        if per_sender > SERVER_FLOOD_RATE:
            lines.append(
                f"note: each sender said {per_sender:g} lines/s, more than the "
                f"server's default --flood-rate of {SERVER_FLOOD_RATE:g}: unless "
                "the server's was raised, the latency includes its throttling"
            )
        try:
            for line in lines:
                self.out(line)
        except (OSError, ValueError):
            return False  # standard output is closed: say nothing more
        return True


class Progress:
    """The progress display on standard error: in place on a terminal."""

    def __init__(self, stream: Any, enabled: bool = True) -> None:
        self.stream = stream
        self.enabled = enabled
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self._shown = False

    def update(self, text: str) -> None:
        """Show C{text} as the current progress."""
        if not self.enabled:
            return
        if self.tty:
            self._write(f"\r{text}\x1b[K")
            self._shown = True
        else:
            self._write(text + "\n")

    def clear(self) -> None:
        """End the in-place line, so that what follows starts on its own."""
        if self._shown:
            self._write("\n")
            self._shown = False

    def error(self, text: str) -> None:
        """Write an error line."""
        self.clear()
        self._write(text + "\n")

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):
            pass  # nowhere left to say it


# The command line.


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{PROG}: {message} (see {PROG} --help)\n")
        sys.exit(1)


def _number(kind: Callable[[str], float], minimum: float, strict: bool) -> Any:
    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        low = value > minimum if strict else value >= minimum
        if not (math.isfinite(value) and low):
            sign = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {sign} {minimum:g}: {text!r}")
        return value

    return coerce


def parse_args(argv: list[str] | None = None) -> Options:
    """The checked command line; one line and exit status 1 if wrong."""
    cpus = os.cpu_count() or 1
    parser = _Parser(
        prog=PROG,
        description=(
            "Connect many clients to a chatservice server, register them, say "
            "chat lines at a given rate and measure deliveries/s and latency. "
            "Precise comparisons between servers use the shared Go load "
            "generator; see docs/bench.md."
        ),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="the server (default: 127.0.0.1)")
    add(
        "--port",
        type=_number(int, 0, strict=True),
        default=DEFAULT_PORT,
        help=f"its port (default: {DEFAULT_PORT})",
    )
    add("--tls", action="store_true", help="connect with TLS")
    add("--cafile", help="with --tls, trust the CA certificates in this PEM file")
    add(
        "--insecure",
        action="store_true",
        help="with --tls, do not check the server's certificate",
    )
    add(
        "--clients",
        type=_number(int, 2, strict=False),
        default=100,
        help="clients to connect (default: 100)",
    )
    add(
        "--senders",
        type=_number(int, 1, strict=False),
        default=None,
        help="how many of the clients say chat lines (default: 10, at most --clients)",
    )
    add(
        "--rate",
        type=_number(float, 0, strict=True),
        default=50.0,
        help="chat lines per second, all senders together (default: 50)",
    )
    add(
        "--duration",
        type=_number(float, 0, strict=True),
        default=10.0,
        help="seconds measured (default: 10)",
    )
    add(
        "--warmup",
        type=_number(float, 0, strict=False),
        default=2.0,
        help="seconds of load before measuring (default: 2)",
    )
    add(
        "--workers",
        type=_number(int, 1, strict=False),
        default=None,
        help=f"worker processes (default: the number of CPUs, {cpus}, "
        "at most --clients)",
    )
    add("--room", help="/join this room after registering (default: stay in #lobby)")
    add(
        "--prefix",
        default="bench",
        help="nicknames are PREFIX0, PREFIX1, ... (default: bench)",
    )
    add(
        "--connect-rate",
        type=_number(float, 0, strict=True),
        default=50.0,
        help="new connections per second, per worker (default: 50)",
    )
    add(
        "--connect-timeout",
        type=_number(float, 0, strict=True),
        default=10.0,
        help="seconds a connection attempt may take (default: 10)",
    )
    add(
        "--payload",
        type=_number(int, 0, strict=False),
        default=0,
        help="pad each chat line to this many bytes (default: 0, no padding: "
        "about 40 bytes)",
    )
    add(
        "--no-progress",
        action="store_true",
        help="no progress display on standard error",
    )
    args = parser.parse_args(argv)
    if args.senders is None:
        args.senders = min(10, args.clients)
    if args.senders > args.clients:
        parser.error(f"--senders {args.senders} is more than --clients {args.clients}")
    if (args.cafile or args.insecure) and not args.tls:
        parser.error("--cafile and --insecure need --tls")
    if args.port > 65535:
        parser.error(f"--port must be 1 to 65535, not {args.port}")
    try:
        check_nickname(f"{args.prefix}{args.clients - 1}")
    except InvalidName as e:
        parser.error(f"--prefix {args.prefix!r} makes bad nicknames: {e}")
    room = None
    if args.room is not None:
        try:
            room = check_room(args.room)
        except InvalidName as e:
            parser.error(f"--room: {e}")
        if room == "#lobby":
            room = None
    workers = args.workers if args.workers is not None else cpus
    return Options(
        host=args.host,
        port=args.port,
        tls=args.tls,
        insecure=args.insecure,
        cafile=args.cafile,
        clients=args.clients,
        senders=args.senders,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        workers=min(workers, args.clients),
        room=room,
        prefix=args.prefix,
        connect_rate=args.connect_rate,
        connect_timeout=args.connect_timeout,
        payload=args.payload,
        progress=not args.no_progress,
    )


def describe(reason: Failure) -> str:
    """Why a connection failed or ended, in a few words."""
    from .client import describe as client_describe

    return client_describe(reason)


def spawner(reactor: Any) -> Callable[[int, Plan, WorkerProcess], Any]:
    """Start workers as C{python -m chatservice.tools.bench --worker PLAN}."""

    def spawn(index: int, plan: Plan, process: WorkerProcess) -> Any:
        args = [
            sys.executable,
            "-m",
            "chatservice.tools.bench",
            "--worker",
            json.dumps(asdict(plan)),
        ]
        return reactor.spawnProcess(
            process,
            sys.executable,
            args,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r"},
        )

    return spawn


def write_line(line: str) -> None:
    """Print C{line} on standard output at once.

    If standard output is closed (C{chatservice-bench | head -1}), the
    error goes up to the caller, and standard output is pointed at
    C{/dev/null} so that Python's own flush when it exits fails no more.
    """
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        raise


async def run_parent(reactor: Any, options: Options) -> None:
    """Run the benchmark described by C{options}; exit 1 if it failed."""
    run = Run(
        reactor,
        options,
        spawner(reactor),
        Progress(sys.stderr, options.progress),
        write_line,
    )

    def interrupted(number: int, frame: Any) -> None:
        # Exit as a shell reports a process killed by the signal: 128 + it.
        reactor.callFromThread(run.interrupt, 128 + number)

    # Ctrl-C or SIGTERM: the workers quit, then the run ends.  Once the
    # reactor runs, since it installs its own handlers when it starts.
    handlers = [signal.SIGINT, signal.SIGTERM]
    previous: list[Any] = []

    def install() -> None:
        previous.extend(signal.signal(number, interrupted) for number in handlers)

    reactor.callWhenRunning(install)
    # Anything else that stops the reactor: take the workers down too.
    trigger = reactor.addSystemEventTrigger("before", "shutdown", run.kill_all)
    try:
        code = await run.start()
    finally:
        reactor.removeSystemEventTrigger(trigger)
        for number, handler in zip(handlers, previous, strict=False):
            signal.signal(number, handler)
    if code:
        raise SystemExit(code)  # task.react exits 0 whatever main returns


def main(argv: Iterable[str] | None = None) -> None:
    """The console script C{chatservice-bench}; exits with the status."""
    from twisted.internet import task

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--worker"] and len(args) == 2:
        # Before the reactor starts, so that it leaves SIGINT alone.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        task.react(run_worker, [args[1]])
    options = parse_args(args)
    task.react(run_parent, [options])


if __name__ == "__main__":
    main()
