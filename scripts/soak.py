"""A bounded soak run of chatservice: hundreds of users for a few minutes.

Usage::

    python3 scripts/soak.py                  # 300 users, 30 s warm-up + 180 s
    python3 scripts/soak.py --clients 50 --warmup 20 --duration 40
    python3 scripts/soak.py --server-arg=--history=10 --server-arg=--max-line=512
    python3 scripts/soak.py --connect 127.0.0.1:8000 --metrics 127.0.0.1:9100

By default it starts its own server, ``twistd -n chat`` run by this
interpreter, on a free port of 127.0.0.1, with short timeouts (``--idle-
timeout 20``, ``--register-timeout 10``) so that timeouts happen during the
run, a short ``--resume-grace 20`` so that sessions held for a resume come
and go well within the warm-up, ``--metrics`` on a second free port, and
extra ``--server-arg`` options passed on to ``twistd chat``.  The server
logs JSON (``twistd --logger=soak.server_log_observer``) to a file whose
path is printed.  The server is stopped at the end (SIGTERM, then SIGKILL),
on Ctrl-C and on any error too.  With ``--connect HOST:PORT`` it soaks a
server that is already running instead, with nobody else on it; give the
timeouts that server uses (``--idle-timeout 0`` if it has none, its
default; ``--register-timeout``; ``--resume-grace``), ``--metrics`` for its
counts and ``--pid`` for its memory.

Each of the ``--clients`` simulated users lives one session after another.
A session connects from a source address of its own, spread over 127.0.0.2
to 127.0.0.254 (all of 127/8 is loopback on Linux), so the server's
per-address limits do not apply; it registers a unique nickname, chats about
once every 4 seconds, sometimes joins one of ``--rooms`` rooms, sends a
private message to another user or sends ``/who``, ``/rooms`` or ``/ping``,
and after ``--active`` seconds at most ends in one of five ways: ``/quit``,
a clean close, a reset (RST, with SO_LINGER 0, once a ``/ping`` has been
answered so that the server has read everything), going silent until the
server's idle timeout disconnects it, or never registering at all (sending
one ``/ping``, which must not restart the clock), until the registration
timeout does.  A new session of the same
user follows.  No user sends more than one line a second.

Every chat line carries its number and the time it was sent, so the run
measures its latency and checks its delivery: a user that was in the room
when a line was sent, and stayed there for at least 2 s more, must receive it
exactly once, and nobody in another room may; a private message must reach
its recipient alone, exactly once if it stayed 2 s more.

What the server says about itself is read through interfaces meant for
programs, never from the wording of its log: its Prometheus metrics
(``chatservice_disconnects_total`` by ``reason`` and a few counters and
gauges, see docs/operations.md, "Metrics"), scraped before the load and
after the users left, and its JSON log, read by event fields (the
"registration" and "disconnect" events, and every warning or error).
tests/test_soak.py checks both against a real server.

It prints a progress line every 10 s, then the figures: the server's memory
(VmRSS, from /proc) before the load, after the warm-up, at the end of the
load and after the users left; its descriptors and CPU time; lines sent and
received; sessions by how they ended; timeouts; deliveries; latency; and
what the server counted and logged.  It exits with 0 when the memory at the
end is within ``--tolerance`` (10%) of the memory after the warm-up, the
server's counts agree with the clients' and nothing unexpected happened,
and with 1 otherwise, printing why.  ``--summary FILE`` also writes the
figures as JSON.

tests/test_soak.py runs a short soak in the test suite.  Linux only (it
reads /proc and binds 127.0.0.x addresses).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import signal
import socket
import string
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import connectionDone
from twisted.internet.task import LoopingCall
from twisted.logger import (
    LogLevel,
    eventsFromJSONLogFile,
    formatEvent,
    globalLogBeginner,
    jsonFileLogObserver,
)
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from chatservice.wireparse import (
    Action,
    Chat,
    Error,
    Line,
    Notice,
    NowIn,
    Pong,
    Private,
    PrivateEcho,
    Stamped,
    Unknown,
    Welcome,
    parse,
)

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

#: Where the clients connect from when the server is on loopback.
SOURCE_ADDRESSES = [f"127.0.0.{n}" for n in range(2, 255)]

#: How a session ends, with its weight.
ENDINGS = {"quit": 25, "close": 20, "reset": 15, "idle": 25, "unregistered": 15}

#: What a registered user does at each turn, with its weight.
ACTIONS = {"chat": 55, "join": 15, "who": 10, "rooms": 5, "ping": 8, "msg": 7}

#: Seconds between two turns of one user, uniformly: under one line a second.
TURN = (1.5, 6.5)

#: Seconds between the end of one session of a user and its next one.
PAUSE = (0.2, 3.0)

#: Longest wait for an expected reply (greeting, welcome, goodbye, ...).
REPLY_WAIT = 10.0

#: A line sent this long before a user left its room must have reached it.
DELIVERY_MARGIN = 2.0

#: How early a timeout may come, for the clocks of two processes.
TIMEOUT_SLACK = 0.5

#: Seconds between two progress lines.
PROGRESS_EVERY = 10.0

LOBBY = "#lobby"

#: Where a private message goes, in L{Soak.lines}: this and a nickname.
PRIVATE = "a private message to "

WORDS = (
    "deferred reactor protocol factory transport endpoint callback errback "
    "lobby twisted chat hello world soak memory latency line room timeout"
).split()

#: A live chat line, as this script sends them: "<nick> soak ID SENT words".
#: A private message, and its echo to the sender: "*nick* soak ID SENT words".
SOAK_TEXT = re.compile(r"soak (?P<id>\d+) (?P<sent>\d+\.\d+) ")
#: The sender's answer when the recipient has gone (docs/protocol.md).
NOBODY = re.compile(r"nobody called (?P<nick>\S+) is online; try /who")

now = time.monotonic


# --------------------------------------------------------------------------
# Figures


@dataclass
class Tally:
    """Everything the clients counted."""

    #: Lines sent, by kind (nick, chat, join, who, rooms, ping, quit).
    sent: Counter[str] = field(default_factory=Counter)
    #: Lines received, by kind (chat, scrollback, notice, error, other).
    received: Counter[str] = field(default_factory=Counter)
    #: Sessions connected, by how they were meant to end.
    started: Counter[str] = field(default_factory=Counter)
    #: Sessions over, by how they ended.
    ended: Counter[str] = field(default_factory=Counter)
    #: Sessions welcomed by the server; and those closed after sending a
    #: nickname but before the welcome (the server may have registered them).
    registered: int = 0
    registering_closed: int = 0
    #: Delivery checks: delivered, lost, uncertain, unchecked, duplicate, ...
    delivery: Counter[str] = field(default_factory=Counter)
    #: Seconds from sending a chat line to its delivery, after the warm-up.
    latencies: array[float] = field(default_factory=lambda: array("d"))
    #: Seconds of silence before each idle timeout notice.
    idle_waits: array[float] = field(default_factory=lambda: array("d"))
    #: Seconds from connecting to each registration timeout notice.
    register_waits: array[float] = field(default_factory=lambda: array("d"))
    #: Unexpected events, by kind, and the first few of them in words.
    problems: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def problem(self, kind: str, detail: str) -> None:
        """Count an unexpected event; remember the first few."""
        self.problems[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}")


@dataclass
class Probe:
    """What /proc says about the server at one moment."""

    at: float
    rss_kib: int
    fds: int | None
    cpu: float | None


def probe(pid: int | None) -> Probe | None:
    """Read the memory, descriptors and CPU time of process C{pid}."""
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/status") as status:
            rss = next(
                int(line.split()[1]) for line in status if line.startswith("VmRSS:")
            )
    except (OSError, StopIteration, ValueError):
        return None
    try:
        fds: int | None = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        fds = None
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
        cpu: float | None = (int(fields[11]) + int(fields[12])) / os.sysconf(
            "SC_CLK_TCK"
        )
    except (OSError, IndexError, ValueError):
        cpu = None
    return Probe(now(), rss, fds, cpu)


def mib(kib: float | None) -> str:
    """C{kib} KiB as MiB, for people."""
    return "n/a" if kib is None else f"{kib / 1024:.1f} MiB"


def percentile(ordered: list[float], fraction: float) -> float:
    """The value below which C{fraction} of the sorted values C{ordered} lie."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def slope_per_minute(points: list[tuple[float, float]]) -> float | None:
    """The least-squares slope of C{points} (seconds, value), per minute."""
    if len(points) < 3:
        return None
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return None
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 60 * cov / var


# --------------------------------------------------------------------------
# The server, and what it says about itself


class Server:
    """A C{twistd -n chat} process of our own.

    Its log is written as JSON, one event per record (L{server_log_observer},
    given to twistd's C{--logger}), and read back by event fields; its
    metrics are served on a second port of 127.0.0.1.  What twistd writes
    before logging starts goes to C{twistd.out} beside the log.
    """

    def __init__(
        self, port: int, metrics_port: int, args: list[str], log_path: Path
    ) -> None:
        self.port = port
        self.metrics_port = metrics_port
        self.log_path = log_path
        self.output_path = log_path.with_name("twistd.out")
        self.listen = f"tcp:{port}:interface=127.0.0.1"
        self.metrics = f"tcp:{metrics_port}:interface=127.0.0.1"
        self.command = [
            *TWISTD,
            "-n",
            "--pidfile=",
            "--logger=soak.server_log_observer",
            "chat",
            "--port",
            self.listen,
            "--metrics",
            self.metrics,
            *args,
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, wait: float = 20.0) -> None:
        """Start the server; return once it listens, or raise C{RuntimeError}."""
        scripts = str(Path(__file__).resolve().parent)
        path = os.pathsep.join(filter(None, [scripts, os.environ.get("PYTHONPATH")]))
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": path,
            LOG_VARIABLE: str(self.log_path),
        }
        self.log_path.write_bytes(b"")  # not the events of an earlier run
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                self.command,
                cwd=self.log_path.parent,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                # Our own Ctrl-C must not reach it: we stop it ourselves.
                start_new_session=True,
            )
        deadline = now() + wait
        wanted = {self.listen, f"--metrics {self.metrics}"}
        while not wanted <= read_server_events(self.log_path).listening:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.output()}")
            if now() > deadline:
                raise RuntimeError(
                    f"the server did not listen in {wait:g} s:\n{self.output()}"
                )
            time.sleep(0.1)

    @property
    def pid(self) -> int | None:
        """The server's process id, if it was started."""
        return None if self.process is None else self.process.pid

    def exited(self) -> int | None:
        """The exit status if the server is gone, else C{None}."""
        return None if self.process is None else self.process.poll()

    def output(self) -> str:
        """What twistd wrote outside its log, and the log's errors."""
        try:
            text = self.output_path.read_text(errors="replace")
        except OSError:
            text = ""
        return "\n".join([text, *read_server_events(self.log_path).problems])

    def stop(self, wait: float = 15.0) -> int | None:
        """Stop the server: SIGTERM, then SIGKILL after C{wait} seconds."""
        process = self.process
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode


#: The environment variable naming the file L{server_log_observer} writes.
LOG_VARIABLE = "CHATSOAK_LOG"


def server_log_observer() -> Any:
    """For C{twistd --logger}: log every event as JSON to C{$CHATSOAK_LOG}.

    Runs in the server's process.  JSON keeps each event's fields
    (C{connection_id}, C{reason}, ...; see docs/operations.md, "Logging"),
    so the soak reads them without depending on the wording of a message.
    """
    return jsonFileLogObserver(
        open(os.environ[LOG_VARIABLE], "a", encoding="utf-8")  # noqa: SIM115
    )


#: Fields that make a log event a registration, and a disconnect
#: (docs/operations.md, "Logging": "registration" and "disconnect").
REGISTRATION_FIELDS = frozenset({"connection_id", "peer", "nickname"})
DISCONNECT_FIELDS = frozenset({"connection_id", "peer", "reason", "detail"})
THROTTLE_FIELDS = frozenset({"connection_id", "rate"})


@dataclass
class ServerEvents:
    """What the server logged, read by event fields, not by message text."""

    #: The C{description} of every "listening" event.
    listening: set[str] = field(default_factory=set)
    #: Connections registered ("registration" events).
    registrations: int = 0
    #: Connections closed, by C{reason} ("disconnect" events).
    closes: Counter[str] = field(default_factory=Counter)
    #: Connections slowed down by flood control ("flood control" events).
    throttled: int = 0
    #: Warnings, errors and failures, formatted for people.
    problems: list[str] = field(default_factory=list)


def read_server_events(path: Path) -> ServerEvents:
    """Read the JSON log at C{path} (as far as it is written)."""
    summary = ServerEvents()
    try:
        log_file = path.open(encoding="utf-8")
    except OSError:
        return summary
    with log_file:
        for event in eventsFromJSONLogFile(log_file):
            keys = event.keys()
            if event.get("log_namespace") == "chatservice.service" and isinstance(
                event.get("description"), str
            ):
                summary.listening.add(event["description"])
            if DISCONNECT_FIELDS <= keys:
                summary.closes[str(event["reason"])] += 1
                if event.get("registered") is True:  # a short session's one line
                    summary.registrations += 1
            elif REGISTRATION_FIELDS <= keys and "old" not in keys:
                summary.registrations += 1
            elif THROTTLE_FIELDS <= keys:
                summary.throttled += 1
            level = event.get("log_level")
            if "log_failure" in event or (level is not None and level >= LogLevel.warn):
                text = formatEvent(event)
                failure = event.get("log_failure")
                if failure is not None:
                    text += "\n" + failure.getTraceback()
                summary.problems.append(text)
    return summary


#: The metrics the soak reads (docs/operations.md, "Metrics").
CONNECTIONS = "chatservice_connections"
USERS = "chatservice_users"
HELD = "chatservice_held_sessions"
LINES_RECEIVED = "chatservice_lines_received_total"
CHAT_LINES = "chatservice_chat_lines_total"
DELIVERIES = "chatservice_chat_deliveries_total"
DISCONNECTS = "chatservice_disconnects_total"
REFUSED = "chatservice_refused_total"
PLAIN_METRICS = (CONNECTIONS, USERS, HELD, LINES_RECEIVED, CHAT_LINES, DELIVERIES)


@dataclass(frozen=True)
class Scrape:
    """The server's metrics at one moment, as the soak reads them."""

    #: Each of L{PLAIN_METRICS} by name.
    values: dict[str, float]
    #: L{DISCONNECTS} and L{REFUSED}, by their C{reason} label.
    disconnects: Counter[str]
    refused: Counter[str]


def parse_metrics(text: str) -> Scrape:
    """Read a Prometheus text page; C{ValueError} if a metric is missing."""
    values: dict[str, float] = {}
    by_reason: dict[str, Counter[str]] = {DISCONNECTS: Counter(), REFUSED: Counter()}
    counters: set[str] = set()
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            counters.add(f"{family.name}_total")
        for sample in family.samples:
            if sample.name in PLAIN_METRICS and not sample.labels:
                values[sample.name] = sample.value
            elif sample.name in by_reason and set(sample.labels) == {"reason"}:
                by_reason[sample.name][sample.labels["reason"]] += int(sample.value)
    missing = [name for name in PLAIN_METRICS if name not in values]
    missing += [name for name in by_reason if name not in counters]
    if missing:
        raise ValueError(f"the metrics page has no {', '.join(missing)}")
    return Scrape(values, by_reason[DISCONNECTS], by_reason[REFUSED])


def scrape(address: tuple[str, int], timeout: float = 5.0) -> Scrape:
    """Fetch and read C{http://HOST:PORT/metrics}; C{OSError} if it fails."""
    host, port = address
    url = f"http://{host}:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310
        return parse_metrics(answer.read().decode("utf-8"))


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        return int(probe_socket.getsockname()[1])


# --------------------------------------------------------------------------
# The users


class Session(LineReceiver):
    """One session of a simulated user: one connection, from connect to close.

    Its C{phase} is C{connecting}, C{greeting}, C{registering}, C{active},
    then C{quitting}, C{resetting} (waiting for a PONG, then resetting),
    C{silent} (waiting for the idle timeout) or C{waiting} (unregistered,
    waiting for the registration timeout), and C{closing}.
    """

    delimiter = b"\n"
    MAX_LENGTH = 1 << 20

    def __init__(self, user: User, ending: str, nick: str) -> None:
        self.user = user
        self.soak = user.soak
        self.tally = user.soak.tally
        self.ending = ending
        self.nick = nick
        self.phase = "connecting"
        self.connected_at = 0.0
        self.last_sent = 0.0
        self.active_until = 0.0
        #: The room the server confirmed we are in; None once we leave it.
        self.room: str | None = None
        #: When we got the confirmation of C{room}.
        self.room_since = 0.0
        #: When we last left a room (sent /join or /quit, or closed).
        self.left_at = 0.0
        #: Where our next chat line goes: the room of the last /join sent.
        self.target_room = LOBBY
        self.join_pending = False
        #: Lines we must receive: line id -> when it was sent.
        self.pending: dict[int, float] = {}
        self.seen: set[int] = set()
        #: Our private messages not answered yet: (recipient, line id).
        self.messages: deque[tuple[Session, int]] = deque()
        self.ping_token: str | None = None
        #: How the session ended, once that is known.
        self.ended_as: str | None = None
        self._turn: IDelayedCall | None = None
        self._watch: IDelayedCall | None = None

    # Connection ----------------------------------------------------------

    def connectionMade(self) -> None:
        """Wait for the greeting (or leave at once if the run is over)."""
        self.connected_at = now()
        self.tally.started[self.ending] += 1
        if self.soak.stopping:
            self.ended_as = "stopped at end"
            self.phase = "closing"
            self.transport.loseConnection()
            return
        self.phase = "greeting"
        self._expect("greeting", REPLY_WAIT)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Count how the session ended, and let the user start the next one."""
        for timer in (self._turn, self._watch):
            if timer is not None and timer.active():
                timer.cancel()
        self._turn = self._watch = None
        if self.room is not None:
            self._leave_room()
        self.tally.delivery["uncertain"] += len(self.pending)
        self.pending.clear()
        if self.ended_as is None and self.soak.shutting_down:
            self.ended_as = "interrupted"
        elif self.ended_as is None:
            self.tally.problem(
                "unexpected disconnect",
                f"{self.nick} ({self.phase}): {reason.getErrorMessage()}",
            )
            self.ended_as = "failed"
        elif self.ended_as in ("quit", "idle timeout", "registration timeout"):
            if not reason.check(ConnectionDone):
                self.tally.problem(
                    "unclean close by the server",
                    f"{self.nick} after {self.ended_as}: {reason.getErrorMessage()}",
                )
        self.phase = "done"
        self.tally.ended[self.ended_as] += 1
        self.user.session_over()

    def lineLengthExceeded(self, line: bytes) -> None:
        """A server line over 1 MiB: no line of this protocol is that long."""
        self.tally.problem("line too long", f"{self.nick}: {len(line)} bytes")
        self.transport.abortConnection()

    # Input ---------------------------------------------------------------

    def lineReceived(self, line: bytes) -> None:
        """Check and count one line from the server."""
        if not line.endswith(b"\r"):
            self.tally.problem("line without CRLF", repr(line[:80]))
        text = line.rstrip(b"\r").decode("utf-8", "replace")
        at = now()
        received = parse(text)
        if isinstance(received, Chat):
            self._chat_received(received, text, at)
        elif isinstance(received, Private):
            self._private_received(received, text)
        elif isinstance(received, PrivateEcho):
            soak = SOAK_TEXT.match(received.text)
            line_id = None if soak is None else int(soak["id"])
            self._private_answer(received.recipient, line_id, text)
        elif isinstance(received, Stamped) and isinstance(received.line, Chat):
            self.tally.received["scrollback"] += 1
        elif isinstance(received, Error):
            nobody = NOBODY.fullmatch(received.text)
            if nobody is not None and self.messages:
                self._private_answer(nobody["nick"], None, text, refused=True)
            else:
                self.tally.received["error"] += 1
                self.tally.problem("error line", f"{self.nick}: {text}")
        elif isinstance(received, Action | Stamped | Unknown):
            self.tally.received["other"] += 1
            self.tally.problem("unknown line", f"{self.nick}: {text[:80]}")
        else:
            self.tally.received["notice"] += 1
            self._notice(received, at)

    def _private_received(self, received: Private, text: str) -> None:
        """A private message: for us, exactly once."""
        match = SOAK_TEXT.match(received.text)
        if match is None:
            self.tally.received["other"] += 1
            self.tally.problem("unknown line", f"{self.nick}: {text[:80]}")
            return
        self.tally.received["private"] += 1
        line_id = int(match["id"])
        delivery = self.tally.delivery
        to, _, sender = self.soak.lines.get(line_id, ("?", 0.0, "?"))
        if to != f"{PRIVATE}{self.nick}" or sender != received.sender:
            delivery["misrouted"] += 1
            self.tally.problem(
                "misrouted line",
                f"{self.nick} got private message {line_id} from {sender} {to}",
            )
        elif line_id in self.seen:
            delivery["duplicate"] += 1
            self.tally.problem(
                "duplicate line", f"{self.nick} got private message {line_id} again"
            )
        elif self.pending.pop(line_id, None) is not None:
            delivery["delivered"] += 1
            delivery["private delivered"] += 1
        else:
            delivery["unchecked"] += 1
        self.seen.add(line_id)

    def _private_answer(
        self, nick: str, line_id: int | None, text: str, refused: bool = False
    ) -> None:
        """The echo of our /msg (C{line_id}), or the news that C{nick} has gone."""
        if (line_id is None and not refused) or not self.messages:
            self.tally.received["other"] += 1
            self.tally.problem("unexpected line", f"{self.nick}: {text[:80]}")
            return
        recipient, sent_id = self.messages.popleft()
        if nick != recipient.nick or (line_id is not None and line_id != sent_id):
            self.tally.problem(
                "wrong answer to /msg",
                f"{self.nick} sent {sent_id} to {recipient.nick}: {text[:80]}",
            )
        elif refused:
            self.tally.received["error"] += 1
            # Only a recipient whose session is over has gone.
            if recipient.phase in ("active", "silent", "resetting"):
                self.tally.problem(
                    "/msg refused", f"{recipient.nick} is still there: {text}"
                )
            else:
                self.tally.delivery["private to a user gone"] += 1
        else:
            self.tally.received["private echo"] += 1

    def _chat_received(self, received: Chat, text: str, at: float) -> None:
        match = SOAK_TEXT.match(received.text)
        if match is None:
            self.tally.received["other"] += 1
            self.tally.problem("unknown chat line", f"{self.nick}: {text[:80]}")
            return
        self.tally.received["chat"] += 1
        line_id, sent = int(match["id"]), float(match["sent"])
        if self.soak.measuring:
            self.tally.latencies.append(at - sent)
        delivery = self.tally.delivery
        if line_id in self.seen:
            delivery["duplicate"] += 1
            self.tally.problem(
                "duplicate line", f"{self.nick} got line {line_id} again"
            )
            return
        self.seen.add(line_id)
        if self.pending.pop(line_id, None) is not None:
            delivery["delivered"] += 1
            return
        room, _, sender = self.soak.lines.get(line_id, ("?", 0.0, "?"))
        if sender == self.nick:
            delivery["echoed"] += 1
            self.tally.problem("echo", f"{self.nick} got its own line {line_id}")
        elif self.room is not None and self.room != room and self.room_since < sent:
            delivery["misrouted"] += 1
            self.tally.problem(
                "misrouted line",
                f"{self.nick} in {self.room} since before line {line_id} was "
                f"sent got it from {room}",
            )
        else:
            delivery["unchecked"] += 1

    def _notice(self, received: Line, at: float) -> None:
        phase = self.phase
        text = received.text if isinstance(received, Notice) else ""
        if phase == "greeting" and text.startswith("Choose a nickname"):
            if self.ending == "unregistered":
                self.phase = "waiting"
                wait = self.soak.register_timeout + REPLY_WAIT
                self._expect("registration timeout notice", wait)
                # The registration timeout counts from the connection: a
                # line before a nickname must not restart it.
                self._turn = self.soak.reactor.callLater(
                    self.soak.register_timeout / 2, self._ping
                )
            else:
                self.phase = "registering"
                self._send(self.nick, "nick")
                self._expect("welcome", REPLY_WAIT)
        elif (
            phase == "registering"
            and isinstance(received, Welcome)
            and received.nick == self.nick
        ):
            self._unexpect()
            self.tally.registered += 1
            self.phase = "active"
            self._enter_room(LOBBY, at)
            longest = self.soak.options.active
            self.active_until = at + self.soak.random.uniform(longest / 6, longest)
            self._next_turn()
        elif isinstance(received, NowIn) and self.join_pending:
            self._unexpect()
            self.join_pending = False
            room = received.room
            if room != self.target_room:
                self.tally.problem(
                    "wrong room",
                    f"{self.nick} asked for {self.target_room}: {received}",
                )
            # Everything said in the old room before the /join has arrived.
            self._settle(self.left_at - DELIVERY_MARGIN)
            if self.phase == "active":
                self._enter_room(room, at)
        elif text.startswith("idle timeout:"):
            self._timed_out("idle timeout", "silent", at - self.last_sent, at)
        elif text.startswith("registration timeout:"):
            self._timed_out(
                "registration timeout", "waiting", at - self.connected_at, at
            )
        elif text == "Goodbye." and phase == "quitting":
            self._settle(self.left_at - DELIVERY_MARGIN)
            self.ended_as = "quit"
            self.phase = "closing"
            self._expect("close after /quit", REPLY_WAIT)
        elif isinstance(received, Pong):
            if received.token != self.ping_token:
                self.tally.problem("wrong PONG", f"{self.nick}: {self.ping_token!r}")
            self.ping_token = None
            if phase == "resetting":
                self._close("reset", at)
        elif text == "server shutting down":
            self.tally.problem("server shutting down", self.nick)

    def _timed_out(self, kind: str, phase: str, waited: float, at: float) -> None:
        if self.phase != phase:
            self.tally.problem(
                f"unexpected {kind}", f"{self.nick} in phase {self.phase}"
            )
            self.ended_as = "failed"
            return
        soak = self.soak
        limit = soak.idle_timeout if phase == "silent" else soak.register_timeout
        if waited < limit - TIMEOUT_SLACK:
            self.tally.problem(f"early {kind}", f"{self.nick} after {waited:.2f} s")
        waits = (
            self.tally.idle_waits if phase == "silent" else self.tally.register_waits
        )
        waits.append(waited)
        if self.room is not None:
            self._leave_room()
        self._settle(at - DELIVERY_MARGIN)
        self.ended_as = kind
        self.phase = "closing"
        self._expect(f"close after the {kind}", REPLY_WAIT)

    # Output ----------------------------------------------------------------

    def _send(self, text: str, kind: str) -> None:
        self.transport.write(text.encode("utf-8") + b"\r\n")
        self.last_sent = now()
        self.tally.sent[kind] += 1

    def _next_turn(self) -> None:
        delay = self.soak.random.uniform(*TURN)
        self._turn = self.soak.reactor.callLater(delay, self._take_turn)

    def _take_turn(self) -> None:
        self._turn = None
        at = now()
        soak = self.soak
        if at >= self.active_until and not self.join_pending:
            self._finish(at)
            return
        action = soak.random.choices(soak.action_names, soak.action_weights)[0]
        if action == "join" and self.join_pending:
            action = "chat"
        if action == "chat":
            self._chat(at)
        elif action == "join":
            room = soak.random.choice([r for r in soak.rooms if r != self.target_room])
            self._send(f"/join {room}", "join")
            self._leave_room()
            self.target_room = room
            self.join_pending = True
            self._expect(f"reply to /join {room}", REPLY_WAIT)
        elif action == "ping":
            self._ping()
        elif action == "msg":
            self._message(at)
        else:
            self._send(f"/{action}", action)
        self._next_turn()

    def _message(self, at: float) -> None:
        """Send a private message to another user in a room now, if any."""
        soak = self.soak
        others = [
            session
            for user in soak.users
            if (session := user.session) is not None
            and session.phase == "active"
            and session.room is not None
            and session is not self
        ]
        if not others:
            self._chat(at)
            return
        recipient = soak.random.choice(others)
        line_id = soak.next_serial()
        soak.lines[line_id] = (f"{PRIVATE}{recipient.nick}", at, self.nick)
        recipient.pending[line_id] = at
        self.messages.append((recipient, line_id))
        words = " ".join(soak.random.choices(WORDS, k=soak.random.randint(3, 15)))
        self._send(f"/msg {recipient.nick} soak {line_id} {at:.6f} {words}", "msg")

    def _ping(self) -> None:
        self._turn = None
        self.ping_token = f"p{self.soak.next_serial()}"
        self._send(f"/ping {self.ping_token}", "ping")

    def _chat(self, at: float) -> None:
        soak = self.soak
        line_id = soak.next_serial()
        room = self.target_room
        soak.lines[line_id] = (room, at, self.nick)
        for member in soak.members.get(room, ()):
            if member is not self:
                member.pending[line_id] = at
        words = " ".join(soak.random.choices(WORDS, k=soak.random.randint(3, 15)))
        self._send(f"soak {line_id} {at:.6f} {words}", "chat")

    def _finish(self, at: float) -> None:
        """End an active session the way it was meant to end."""
        ending = self.ending
        if ending == "quit":
            self._send("/quit soak", "quit")
            self._leave_room()
            self.phase = "quitting"
            self._expect("goodbye", REPLY_WAIT)
        elif ending == "idle":
            self.phase = "silent"
            self._expect("idle timeout notice", self.soak.idle_timeout + REPLY_WAIT)
        elif ending == "reset":
            # A reset throws away what the server has not read yet: first
            # make sure it has acted on every line (its PONG comes after).
            self._ping()
            self.phase = "resetting"
            self._expect("PONG before the reset", REPLY_WAIT)
        else:
            self._close(ending, at)

    def _close(self, how: str, at: float) -> None:
        """Close from our side: C{how} is close, reset or stopped at end."""
        self._unexpect()
        if self._turn is not None:
            self._turn.cancel()
            self._turn = None
        if self.room is not None:
            self._leave_room()
        self._settle(at - DELIVERY_MARGIN)
        if self.phase == "registering":
            self.tally.registering_closed += 1
        self.ended_as = how
        self.phase = "closing"
        if how == "reset":
            # SO_LINGER 0: close() sends an RST instead of a FIN.
            self.transport.getHandle().setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
            self.transport.abortConnection()
        else:
            self.transport.loseConnection()

    def stop(self, at: float) -> None:
        """The run is over: close now, unless the session is already ending."""
        if self.phase in ("greeting", "registering", "active"):
            self._close("stopped at end", at)

    # Rooms and deliveries --------------------------------------------------

    def _enter_room(self, room: str, at: float) -> None:
        self.room = room
        self.room_since = at
        self.soak.members.setdefault(room, set()).add(self)

    def _leave_room(self) -> None:
        """Expect no more lines from our room (we asked to leave it)."""
        if self.room is not None:
            self.soak.members[self.room].discard(self)
            self.room = None
        self.left_at = now()

    def _settle(self, cutoff: float) -> None:
        """Lines still awaited are lost if sent before C{cutoff}."""
        delivery = self.tally.delivery
        for line_id, sent in self.pending.items():
            if sent < cutoff:
                delivery["lost"] += 1
                room, _, sender = self.soak.lines[line_id]
                self.tally.problem(
                    "lost line",
                    f"{self.nick} never got line {line_id} from {sender} in {room}, "
                    f"sent {cutoff + DELIVERY_MARGIN - sent:.2f} s before it left",
                )
            else:
                delivery["uncertain"] += 1
        self.pending.clear()

    # Watchdog --------------------------------------------------------------

    def _expect(self, what: str, seconds: float) -> None:
        self._unexpect()
        self._watch = self.soak.reactor.callLater(seconds, self._overdue, what, seconds)

    def _unexpect(self) -> None:
        if self._watch is not None and self._watch.active():
            self._watch.cancel()
        self._watch = None

    def _overdue(self, what: str, seconds: float) -> None:
        self._watch = None
        self.tally.problem("no reply", f"{self.nick}: no {what} within {seconds:g} s")
        self.ended_as = "failed"
        self.transport.abortConnection()


class User:
    """One simulated user: sessions one after another until the run ends."""

    def __init__(self, soak: Soak) -> None:
        self.soak = soak
        self.session: Session | None = None
        self._next: IDelayedCall | None = None

    def start(self) -> None:
        """Begin a new session."""
        self._next = None
        soak = self.soak
        ending = soak.random.choices(soak.ending_names, soak.ending_weights)[0]
        session = Session(self, ending, soak.new_nick())
        self.session = session
        endpoint = TCP4ClientEndpoint(
            soak.reactor,
            soak.host,
            soak.port,
            timeout=REPLY_WAIT,
            bindAddress=soak.source_address(),
        )
        connectProtocol(endpoint, session).addErrback(self._not_connected)

    def _not_connected(self, failure: Failure) -> None:
        self.soak.tally.problem("connect failed", failure.getErrorMessage())
        self.soak.tally.ended["not connected"] += 1
        self.session_over()

    def session_over(self) -> None:
        """Start the next session after a pause, or stop."""
        self.session = None
        soak = self.soak
        if soak.stopping:
            soak.check_stopped()
        else:
            self._next = soak.reactor.callLater(soak.random.uniform(*PAUSE), self.start)

    def stop(self, at: float) -> None:
        """Start no new session; end the current one."""
        if self._next is not None:
            self._next.cancel()
            self._next = None
        if self.session is not None:
            self.session.stop(at)


# --------------------------------------------------------------------------
# The run


class Soak:
    """The whole run: its users, its timeline and its figures."""

    def __init__(
        self,
        reactor: Any,
        options: argparse.Namespace,
        host: str,
        port: int,
        pid: int | None,
        server: Server | None,
        bind: bool,
        metrics: tuple[str, int] | None,
    ) -> None:
        self.reactor = reactor
        self.options = options
        self.host = host
        self.port = port
        self.pid = pid
        self.server = server
        self.bind = bind
        #: Where the server's metrics are scraped, if anywhere.
        self.metrics = metrics
        #: The metrics before the load and after the users left.
        self.scrapes: dict[str, Scrape] = {}
        self.idle_timeout: float = options.idle_timeout
        self.register_timeout: float = options.register_timeout
        self.random = random.Random(options.seed)
        self.tally = Tally()
        self.rooms = [LOBBY, *(f"#soak{n}" for n in range(options.rooms))]
        self.members: dict[str, set[Session]] = {}
        #: Every chat line sent: id -> (room, when, sender).
        self.lines: dict[int, tuple[str, float, str]] = {}
        # A server without an idle timeout (the default) never ends a session
        # for silence: nobody waits for one.
        endings = {
            name: weight
            for name, weight in ENDINGS.items()
            if name != "idle" or self.idle_timeout
        }
        self.ending_names = list(endings)
        self.ending_weights = list(endings.values())
        self.action_names = list(ACTIONS)
        self.action_weights = list(ACTIONS.values())
        self._serials = iter(range(1, sys.maxsize))
        self._addresses: Iterator[str] = iter(())
        tag = "".join(self.random.choices(string.ascii_lowercase, k=4))
        self._nick_prefix = f"s{tag}"
        self.users = [User(self) for _ in range(options.clients)]
        self.phase = "warm-up"
        self.measuring = False
        self.stopping = False
        self.started_at = 0.0
        self.samples: list[Probe] = []
        self.marks: dict[str, Probe | None] = {}
        self.failures: list[str] = []
        self.finished = False
        #: The reactor is stopping: connections closing now are not news.
        self.shutting_down = False
        self._stopped_waiting = False
        self._loops: list[LoopingCall] = []
        self._timers: list[IDelayedCall] = []

    # Small services for the users -------------------------------------------

    def next_serial(self) -> int:
        """A number never used before in this run."""
        return next(self._serials)

    def new_nick(self) -> str:
        """A nickname nobody used in this run."""
        return f"{self._nick_prefix}{self.next_serial()}"

    def source_address(self) -> tuple[str, int] | None:
        """The next source address, round robin; None when not binding."""
        if not self.bind:
            return None
        address = next(self._addresses, None)
        if address is None:
            self._addresses = iter(SOURCE_ADDRESSES)
            address = next(self._addresses)
        return (address, 0)

    # Timeline ----------------------------------------------------------------

    def run(self) -> None:
        """Run the whole soak on the reactor; returns when it is over."""
        self.reactor.callWhenRunning(self._begin)
        self.reactor.addSystemEventTrigger("before", "shutdown", self._shutting_down)
        self.reactor.run()

    def _shutting_down(self) -> None:
        self.shutting_down = self.stopping = True

    def _later(self, delay: float, call: Any, *args: Any) -> None:
        self._timers.append(self.reactor.callLater(delay, call, *args))

    def _every(self, interval: float, call: Any) -> None:
        loop = LoopingCall(call)
        loop.clock = self.reactor
        self._loops.append(loop)
        loop.start(interval, now=False)

    def _begin(self) -> None:
        options = self.options
        self.started_at = now()
        self.marks["before load"] = probe(self.pid)
        if self.metrics is not None:
            try:
                self.scrapes["before load"] = scrape(self.metrics)
            except (OSError, ValueError) as problem:
                self._abort(f"cannot read the metrics: {problem}")
                return
        ramp = min(10.0, options.warmup / 3)
        for index, user in enumerate(self.users):
            self._later(ramp * index / len(self.users), user.start)
        self._every(options.sample, self._sample)
        self._every(PROGRESS_EVERY, self._progress)
        self._later(options.warmup, self._warmed_up)
        self._later(options.warmup + options.duration, self._stop_load)
        self._later(options.deadline, self._deadline)

    def _sample(self) -> None:
        sample = probe(self.pid)
        if sample is not None:
            self.samples.append(sample)
        if self.server is not None and (code := self.server.exited()) is not None:
            self._abort(f"the server exited during the run, with status {code}")

    def _progress(self) -> None:
        sessions = [u.session for u in self.users if u.session is not None]
        connected = sum(s.phase not in ("connecting", "done") for s in sessions)
        registered = sum(
            s.phase in ("active", "silent", "quitting", "resetting") for s in sessions
        )
        rss = self.samples[-1].rss_kib if self.samples else None
        tally = self.tally
        print(
            f"[{now() - self.started_at:5.0f} s] {self.phase:<9} "
            f"connected {connected:4} registered {registered:4} | "
            f"sent {sum(tally.sent.values()):7} chat in {tally.received['chat']:8} | "
            f"sessions {sum(tally.started.values()):5} "
            f"ended {sum(tally.ended.values()):5} | "
            f"problems {sum(tally.problems.values())} | rss {mib(rss)}",
            flush=True,
        )

    def _warmed_up(self) -> None:
        self.marks["after warm-up"] = probe(self.pid)
        self.phase = "load"
        self.measuring = True

    def _stop_load(self) -> None:
        self.marks["end of load"] = probe(self.pid)
        self.measuring = False
        self.phase = "stopping"
        self.stopping = True
        at = now()
        for user in self.users:
            user.stop(at)
        self._later(
            max(self.idle_timeout, self.register_timeout) + 2 * REPLY_WAIT,
            self._stop_overdue,
        )
        self.check_stopped()

    def check_stopped(self) -> None:
        """Once every session is over, wait for the server to forget them."""
        if self.shutting_down or self._stopped_waiting:
            return
        if any(u.session for u in self.users):
            return
        self._stopped_waiting = True
        # Sessions dropped at the end are held for a resume this long.
        self._drain(now() + self.options.resume_grace + 15.0)

    def _stop_overdue(self) -> None:
        if self._stopped_waiting:
            return
        left = [u.session for u in self.users if u.session is not None]
        self.tally.problem("sessions still open after the end", str(len(left)))
        for session in left:
            session.ended_as = "failed"
            if session.transport is not None:
                session.transport.abortConnection()

    def _drain(self, deadline: float) -> None:
        """Wait until the server has closed every connection and held session.

        Its metrics say so: connections, users and held sessions back to
        their numbers before the load.  The last scrape is kept.
        """
        if self.metrics is not None:
            try:
                last = scrape(self.metrics)
            except (OSError, ValueError) as problem:
                self._abort(f"cannot read the metrics: {problem}")
                return
            self.scrapes["after users left"] = last
            before = self.scrapes["before load"].values
            back = all(
                last.values[name] == before[name] for name in (CONNECTIONS, USERS, HELD)
            )
            # The scrape's own connection, too, must be closed.
            first, current = self.marks["before load"], probe(self.pid)
            if first and first.fds and current and current.fds:
                back = back and current.fds <= first.fds
            if not back and now() < deadline:
                self.reactor.callLater(0.25, self._drain, deadline)
                return
        self.phase = "done"
        self.marks["after users left"] = probe(self.pid)
        self.finished = True
        self._shut_down()

    def _deadline(self) -> None:
        self._abort(f"the hard deadline of {self.options.deadline:g} s passed")

    def _abort(self, why: str) -> None:
        self.failures.append(why)
        print(f"soak: {why}; giving up", flush=True)
        self._shut_down()

    def _shut_down(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        for timer in self._timers:
            if timer.active():
                timer.cancel()
        if not self.shutting_down:
            self.reactor.stop()


# --------------------------------------------------------------------------
# The report


def report(soak: Soak, events: ServerEvents | None, exit_status: int | None) -> int:
    """Print the figures of C{soak}; return the exit status of the script."""
    options = soak.options
    tally = soak.tally
    failures = list(soak.failures)
    if not soak.finished and not failures:
        failures.append("interrupted")

    print()
    print("== figures ==")
    marks = soak.marks
    warm, end = marks.get("after warm-up"), marks.get("end of load")
    if soak.pid is None:
        print("server memory: not measured (no --pid)")
    else:
        rss = {name: mib(p.rss_kib if p else None) for name, p in marks.items()}
        print("server memory (VmRSS): " + "; ".join(f"{k} {v}" for k, v in rss.items()))
    if soak.samples:
        peak = max(s.rss_kib for s in soak.samples)
        print(f"  peak {mib(peak)} over {len(soak.samples)} samples")
    if warm and end:
        ratio = end.rss_kib / warm.rss_kib
        points = [(s.at, s.rss_kib) for s in soak.samples if warm.at <= s.at <= end.at]
        trend = slope_per_minute(points)
        trend_text = "n/a" if trend is None else f"{trend:+.0f} KiB/min"
        print(
            f"  end of load / after warm-up = {ratio:.3f} "
            f"(limit 1 ± {options.tolerance:g}); trend during the load {trend_text}"
        )
        if abs(ratio - 1) > options.tolerance:
            failures.append(
                f"memory at the end is {ratio:.3f} times the memory after warm-up"
            )
        if warm.cpu is not None and end.cpu is not None:
            busy = (end.cpu - warm.cpu) / (end.at - warm.at)
            print(f"  server CPU during the load: {100 * busy:.0f}% of one core")
    elif soak.pid is not None and soak.finished:
        failures.append("the server's memory could not be read")
    fds = {name: p.fds for name, p in marks.items() if p and p.fds is not None}
    if fds:
        print("server descriptors: " + "; ".join(f"{k} {v}" for k, v in fds.items()))
        before, after = fds.get("before load"), fds.get("after users left")
        if before is not None and after is not None and after > before:
            failures.append(f"descriptors: {before} before the load, {after} after")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(f"client CPU: {usage.ru_utime + usage.ru_stime:.0f} s")

    def counts(counter: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in counter.most_common()) or "none"

    print(f"lines sent: {sum(tally.sent.values())} ({counts(tally.sent)})")
    print(f"lines received: {sum(tally.received.values())} ({counts(tally.received)})")
    print(f"sessions started: {sum(tally.started.values())} ({counts(tally.started)})")
    print(f"sessions ended: {sum(tally.ended.values())} ({counts(tally.ended)})")
    for name, waits in (
        ("idle", tally.idle_waits),
        ("registration", tally.register_waits),
    ):
        if waits:
            print(
                f"{name} timeouts observed: {len(waits)}, after "
                f"{min(waits):.2f} to {max(waits):.2f} s"
            )
        else:
            print(f"{name} timeouts observed: 0")
    delivery = tally.delivery
    print(
        f"deliveries checked: {delivery['delivered'] + delivery['lost']} "
        f"(lost {delivery['lost']}); not checked: {delivery['uncertain']} sent "
        f"within {DELIVERY_MARGIN:g} s of the receiver leaving, "
        f"{delivery['unchecked']} received around a room change; "
        f"duplicates {delivery['duplicate']}, misrouted {delivery['misrouted']}, "
        f"echoed {delivery['echoed']}"
    )
    print(
        f"private messages: {tally.sent['msg']} sent, "
        f"{delivery['private delivered']} checked on arrival, "
        f"{delivery['private to a user gone']} refused as the user had gone"
    )
    if tally.latencies:
        ordered = sorted(tally.latencies)
        print(
            f"chat latency after warm-up ({len(ordered)} deliveries): "
            f"p50 {1000 * percentile(ordered, 0.5):.1f} ms, "
            f"p99 {1000 * percentile(ordered, 0.99):.1f} ms, "
            f"max {1000 * ordered[-1]:.1f} ms"
        )
    if tally.problems:
        total = sum(tally.problems.values())
        failures.append(f"{total} unexpected events ({counts(tally.problems)})")
        for example in tally.examples:
            print(f"  unexpected: {example}")

    check_metrics(soak, failures)
    if events is not None:
        check_server_log(soak, events, exit_status, failures)

    print()
    if failures:
        for failure in failures:
            print(f"FAIL: {failure}")
    else:
        print("PASS")
    if options.summary is not None:
        write_summary(soak, events, failures, options.summary)
    return 1 if failures else 0


def expected_closes(tally: Tally) -> Counter[str] | None:
    """The server's close reasons the clients' sessions must have caused.

    None if a session failed or never connected: then counts cannot agree,
    and the failure is reported already.
    """
    ended = tally.ended
    if ended["failed"] or ended["not connected"] or ended["interrupted"]:
        return None
    expected = Counter(
        {
            "quit": ended["quit"],
            "idle timeout": ended["idle timeout"],
            "registration timeout": ended["registration timeout"],
            "connection lost": ended["close"]
            + ended["reset"]
            + ended["stopped at end"],
        }
    )
    return +expected


def compare_closes(
    source: str, counted: Counter[str], soak: Soak, failures: list[str]
) -> bool:
    """Add to C{failures} where C{source}'s closes disagree with the clients'.

    False if they cannot be compared: the run did not finish, or a session
    failed (see L{expected_closes}).
    """
    if not soak.finished:
        return False
    expected = expected_closes(soak.tally)
    if expected is None:
        return False
    started = soak.tally.started.total()
    if counted.total() != started:
        failures.append(
            f"{source} counted {counted.total()} closes, "
            f"the clients made {started} connections"
        )
    for reason in sorted(set(expected) | set(counted)):
        if counted[reason] != expected[reason]:
            failures.append(
                f"{source} counted {counted[reason]} closes for '{reason}', "
                f"the clients expected {expected[reason]}"
            )
    return True


def check_metrics(soak: Soak, failures: list[str]) -> None:
    """Compare the server's metrics before and after with the clients' counts."""
    before = soak.scrapes.get("before load")
    after = soak.scrapes.get("after users left")
    if before is None or after is None:
        if soak.metrics is None:
            print("server metrics: not read (no --metrics)")
        elif soak.finished:
            failures.append("the server's metrics were not read before and after")
        return
    tally = soak.tally
    change = {name: after.values[name] - before.values[name] for name in PLAIN_METRICS}
    closes = after.disconnects - before.disconnects
    refused = after.refused - before.refused

    def counts(counter: Counter[str]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(counter.items())) or "none"

    print(
        f"server metrics, change over the run: disconnects {closes.total()} "
        f"({counts(closes)}); refused {refused.total()}; lines received "
        f"{change[LINES_RECEIVED]:.0f}; chat lines {change[CHAT_LINES]:.0f}, "
        f"deliveries {change[DELIVERIES]:.0f}"
    )
    left = {name: change[name] for name in (CONNECTIONS, USERS, HELD) if change[name]}
    if left:
        failures.append(
            "after the users left the server still had "
            + ", ".join(f"{value:+.0f} {name}" for name, value in left.items())
        )
    if refused:
        failures.append(f"the server refused connections ({counts(refused)})")
    if not compare_closes("the metrics", closes, soak, failures):
        return
    if change[LINES_RECEIVED] != tally.sent.total():
        failures.append(
            f"the metrics counted {change[LINES_RECEIVED]:.0f} lines received, "
            f"the clients sent {tally.sent.total()}"
        )
    if change[CHAT_LINES] != tally.sent["chat"]:
        failures.append(
            f"the metrics counted {change[CHAT_LINES]:.0f} chat lines, "
            f"the clients sent {tally.sent['chat']}"
        )
    # The server also counts copies for sessions held for a resume, and for
    # clients that closed before reading them: at least what arrived.
    if change[DELIVERIES] < tally.received["chat"]:
        failures.append(
            f"the metrics counted {change[DELIVERIES]:.0f} deliveries, "
            f"the clients received {tally.received['chat']} chat lines"
        )


def check_server_log(
    soak: Soak, events: ServerEvents, exit_status: int | None, failures: list[str]
) -> None:
    """Print what the server logged; add to C{failures} where it disagrees."""
    tally = soak.tally
    details = ", ".join(f"{k} {v}" for k, v in sorted(events.closes.items()))
    print(
        f"server log: {events.registrations} registrations, "
        f"{events.closes.total()} closes ({details or 'none'}); "
        f"{events.throttled} throttled, {len(events.problems)} warnings or "
        f"errors; exit status {exit_status}"
    )
    for text in events.problems[:20]:
        print(f"  server: {text}")
    if events.problems:
        failures.append(f"the server logged {len(events.problems)} warnings or errors")
    if events.throttled:
        failures.append(f"the server throttled {events.throttled} connections")
    # twistd exits with the signal that stopped it (-15): not a failure.
    if exit_status not in (0, -signal.SIGTERM):
        failures.append(f"the server exited with status {exit_status}")
    if not compare_closes("the server log", events.closes, soak, failures):
        return
    least, most = tally.registered, tally.registered + tally.registering_closed
    if not least <= events.registrations <= most:
        failures.append(
            f"the server logged {events.registrations} registrations, "
            f"the clients saw {least} welcomes (and closed {most - least} "
            "sessions waiting for one)"
        )


def write_summary(
    soak: Soak, events: ServerEvents | None, failures: list[str], path: Path
) -> None:
    """Write the run's main figures to C{path}, as JSON, for programs."""
    tally = soak.tally
    marks = {
        name: None if p is None else {"rss_kib": p.rss_kib, "fds": p.fds}
        for name, p in soak.marks.items()
    }
    summary = {
        "failures": failures,
        "finished": soak.finished,
        "sent": dict(tally.sent),
        "received": dict(tally.received),
        "started": dict(tally.started),
        "ended": dict(tally.ended),
        "registered": tally.registered,
        "delivery": dict(tally.delivery),
        "idle_timeouts": len(tally.idle_waits),
        "registration_timeouts": len(tally.register_waits),
        "latencies": len(tally.latencies),
        "marks": marks,
        "metrics": {
            name: {
                "values": scraped.values,
                "disconnects": dict(scraped.disconnects),
                "refused": dict(scraped.refused),
            }
            for name, scraped in soak.scrapes.items()
        },
        "log": None
        if events is None
        else {
            "registrations": events.registrations,
            "closes": dict(events.closes),
            "problems": events.problems,
        },
    }
    path.write_text(json.dumps(summary, indent=2) + "\n")


# --------------------------------------------------------------------------
# Command line


def positive(kind: type, zero: bool = False) -> Any:
    """An argparse type: a number of C{kind} greater than 0 (or C{zero})."""

    def convert(text: str) -> Any:
        value = kind(text)
        if not (value > 0 or (zero and value == 0)):
            least = "0 or more" if zero else "greater than 0"
            raise argparse.ArgumentTypeError(f"must be {least}: {text}")
        return value

    return convert


def address(text: str) -> tuple[str, int]:
    """An argparse type: C{HOST:PORT}."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text}")
    return host, int(port)


def parse_options(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked."""
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add(
        "--clients",
        type=positive(int),
        default=300,
        metavar="N",
        help="simulated users at once (%(default)s)",
    )
    add(
        "--duration",
        type=positive(float),
        default=180.0,
        metavar="S",
        help="seconds of load after the warm-up (%(default)g)",
    )
    add(
        "--warmup",
        type=positive(float),
        default=30.0,
        metavar="S",
        help="seconds of warm-up (%(default)g)",
    )
    add(
        "--rooms",
        type=positive(int),
        default=10,
        metavar="N",
        help="rooms besides #lobby (%(default)s)",
    )
    add(
        "--idle-timeout",
        type=positive(float, zero=True),
        default=20.0,
        metavar="S",
        help="the server's --idle-timeout (%(default)g; 0: never, and no user "
        "waits for one)",
    )
    add(
        "--register-timeout",
        type=positive(float),
        default=10.0,
        metavar="S",
        help="the server's --register-timeout (%(default)g)",
    )
    add(
        "--resume-grace",
        type=positive(float),
        default=20.0,
        metavar="S",
        help="the server's --resume-grace (%(default)g); keep it below --warmup",
    )
    add(
        "--tolerance",
        type=positive(float),
        default=0.1,
        metavar="F",
        help="memory change allowed, a fraction (%(default)g)",
    )
    add(
        "--sample",
        type=positive(float),
        default=5.0,
        metavar="S",
        help="seconds between memory samples (%(default)g)",
    )
    add(
        "--deadline",
        type=positive(float),
        metavar="S",
        help="hard limit of the whole run (warm-up + duration + 120)",
    )
    add(
        "--active",
        type=positive(float),
        default=60.0,
        metavar="S",
        help="the longest a registered user stays before its session ends; "
        "the shortest is a sixth of it (%(default)g)",
    )
    add("--seed", type=int, help="seed of the random choices (random)")
    add(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="an extra option for twistd chat; repeat for several",
    )
    add(
        "--server-log",
        type=Path,
        metavar="FILE",
        help="the server's log, JSON (a new file in the temporary directory)",
    )
    add(
        "--summary",
        type=Path,
        metavar="FILE",
        help="also write the figures and failures there, as JSON",
    )
    add(
        "--connect",
        metavar="HOST:PORT",
        help="soak this running server instead of starting one",
    )
    add(
        "--pid",
        type=positive(int),
        help="with --connect: the server's process id, for its memory",
    )
    add(
        "--metrics",
        type=address,
        metavar="HOST:PORT",
        help="with --connect: where the server's --metrics are, for its counts",
    )
    options = parser.parse_args(argv)
    if options.clients > 5000:
        parser.error("--clients: at most 5000")
    if options.warmup + options.duration > 3600:
        parser.error("--warmup + --duration: at most an hour")
    if options.connect is None and options.pid is not None:
        parser.error("--pid goes with --connect")
    if options.connect is None and options.metrics is not None:
        parser.error("--metrics goes with --connect")
    if options.connect is not None and (options.server_arg or options.server_log):
        parser.error("--server-arg and --server-log need a server of our own")
    if options.deadline is None:
        options.deadline = options.warmup + options.duration + 120.0
    if options.seed is None:
        options.seed = random.randrange(1 << 32)
    return options


def watch_twisted_log(tally: Tally) -> None:
    """Print warnings and errors Twisted logs in this process, as problems."""

    def observe(event: dict[str, Any]) -> None:
        level = event.get("log_level")
        if level is not None and level >= LogLevel.warn:
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text += "\n" + failure.getTraceback()
            print(f"soak (client side): {text}", file=sys.stderr, flush=True)
            tally.problem("client-side error", text.splitlines()[0])

    globalLogBeginner.beginLoggingTo([observe], redirectStandardIO=False)


def command_line(pid: int) -> str:
    """The command line of process C{pid}, to show which process is measured."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError as problem:
        raise ValueError(f"--pid {pid}: {problem.strerror}") from None
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def raise_descriptor_limit(clients: int) -> None:
    """Allow this process (and the server it starts) enough descriptors."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 2 * clients + 100
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))


def main(argv: list[str] | None = None) -> int:
    """Run the soak; return the exit status."""
    options = parse_options(argv)
    raise_descriptor_limit(options.clients)
    # SIGTERM before the reactor runs (it has its own handler) stops us
    # through the finally clauses, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    server: Server | None = None
    try:
        if options.connect is None:
            log_path = options.server_log
            if log_path is None:
                log_path = Path(tempfile.mkdtemp(prefix="chatsoak-")) / "twistd.json"
            server_args = [
                "--resume-grace",
                f"{options.resume_grace:g}",
                "--idle-timeout",
                f"{options.idle_timeout:g}",
                "--register-timeout",
                f"{options.register_timeout:g}",
                *options.server_arg,
            ]
            server = Server(free_port(), free_port(), server_args, log_path.resolve())
            print(f"soak: starting {' '.join(server.command[3:])}", flush=True)
            print(f"soak: server log (JSON) {server.log_path}", flush=True)
            server.start()
            host, port, pid = "127.0.0.1", server.port, server.pid
            metrics: tuple[str, int] | None = ("127.0.0.1", server.metrics_port)
        else:
            name, _, port_text = options.connect.rpartition(":")
            host, port, pid = socket.gethostbyname(name), int(port_text), options.pid
            metrics = options.metrics
            if pid is not None:
                print(f"soak: measuring process {pid}: {command_line(pid)}")
        bind = host.startswith("127.")
        from twisted.internet import reactor

        soak = Soak(reactor, options, host, port, pid, server, bind, metrics)
        watch_twisted_log(soak.tally)
        print(
            f"soak: {options.clients} users, {options.warmup:g} s warm-up + "
            f"{options.duration:g} s, {options.rooms} rooms, server {host}:{port} "
            f"pid {pid}, seed {options.seed}",
            flush=True,
        )
        soak.run()
        exit_status = server.stop() if server is not None else None
        events = read_server_events(server.log_path) if server is not None else None
        return report(soak, events, exit_status)
    except (RuntimeError, OSError, ValueError) as problem:
        print(f"soak: {problem}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    sys.exit(main())
