"""What a benchmark run is: its options, each worker's plan, its timings.

Shared by the parent (L{chatservice.tools.bench.run}) and its workers
(L{chatservice.tools.bench.worker}); a L{Plan} goes from one to the other
as JSON on the worker's command line, and the latencies come back as the
JSON of a L{chatservice.stats.Histogram} (L{latencies}).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...stats import Histogram
from ..connect import DEFAULT_PORT

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
