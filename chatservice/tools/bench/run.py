"""The benchmark's parent: the run's phases, its workers' reports, the summary.

L{Run} spawns the workers, tells them when to warm up, measure, drain and
quit, adds up their reports (L{Totals}), fails with one line when anything
goes wrong, and writes the summary.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall
from twisted.python.failure import Failure

from ...stats import Histogram
from .plan import (
    DRAIN_TIMEOUT,
    INTERRUPT_GRACE,
    PROG,
    QUIT_TIMEOUT,
    REGISTER_TIMEOUT,
    SERVER_FLOOD_RATE,
    Options,
    Plan,
    latencies,
    split,
)
from .progress import Progress


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
