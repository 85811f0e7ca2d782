"""A worker process of the benchmark: its share of the clients, sending and counting.

The parent runs C{python -m chatservice.tools.bench --worker PLAN}; the
worker connects the L{Plan}'s clients, registers them, has its senders say
bench lines at the plan's rate, and reports counts and latencies on its
standard output (L{ParentLink}) until the parent says C{quit}.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.protocol import Protocol
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from zope.interface import implementer

from ...wireparse import Chat, Error, Line, NowIn, Welcome, parse
from ..connect import describe, endpoint_for, load_trust_root
from .plan import (
    DRAIN_TIMEOUT,
    QUIT_TIMEOUT,
    REPORT_INTERVAL,
    SEND_INTERVAL,
    Plan,
    latencies,
)

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
    trust_root = None
    if plan.cafile is not None:
        trust_root = load_trust_root(plan.cafile)
    return endpoint_for(
        reactor,
        plan.host,
        plan.port,
        connect_timeout=plan.connect_timeout,
        tls=plan.tls,
        insecure=plan.insecure,
        trust_root=trust_root,
    )


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
