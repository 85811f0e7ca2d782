"""What a server counts about itself, for C{/stats} (and metrics)."""

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field

#: Why connections end, as C{/stats} and the metrics count them: a closed
#: set, so that no user's text (a nickname, a kick or quit reason, an event
#: from another node) ever becomes a label.  A reason is counted by the kind
#: it starts with (C{"kicked by root: spam"} is C{"kicked"}); one not listed
#: here is counted as C{"other"}.  A new way out adds its kind here.
CLOSE_REASONS = frozenset(
    {
        "quit",
        "kicked",
        "banned",
        "connection lost",
        "idle timeout",
        "registration timeout",
        "send queue exceeded",
        "server shutting down",
        "resumed elsewhere",
        "nickname taken elsewhere",
        "wrong protocol (TLS on a plain port)",
        "wrong protocol (HTTP)",
    }
)


def close_kind(reason: str) -> str:
    """The kind of C{reason} a connection ended for: one of L{CLOSE_REASONS}.

    A reason is its kind, maybe followed by C{" by WHO"} and C{": DETAIL"}.
    """
    kind = reason.partition(":")[0].split(" by ")[0]
    return kind if kind in CLOSE_REASONS else "other"


#: Upper bounds (seconds) of the buckets of the timing histograms.
TIME_BUCKETS = (
    0.000_01,
    0.000_03,
    0.000_1,
    0.000_3,
    0.001,
    0.003,
    0.01,
    0.03,
    0.1,
    0.3,
    1.0,
)


@dataclass(slots=True)
class Histogram:
    """How long something took, counted per bucket of L{TIME_BUCKETS}."""

    #: Observations per bucket (not cumulative); the last is above them all.
    counts: list[int] = field(default_factory=lambda: [0] * (len(TIME_BUCKETS) + 1))
    #: The sum of all observations.
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        """Count one observation of C{seconds}."""
        self.counts[bisect_left(TIME_BUCKETS, seconds)] += 1
        self.total += seconds


@dataclass(slots=True)
class Stats:
    """Counters of one server process since it started.

    Chat lines said and delivered are counted by the registry (see
    L{chatservice.interfaces.IRegistry}); everything else is here.
    """

    #: When the server started (its clock's seconds).
    started: float
    #: Input lines received, commands included.
    lines_in: int = 0
    #: The most connections open at once.
    peak_connections: int = 0
    #: Connections that ended, by reason ("quit", "idle timeout", ...).
    closed: Counter[str] = field(default_factory=Counter)
    #: Connections refused at connect, by reason ("banned", ...).
    refused: Counter[str] = field(default_factory=Counter)
    #: Lines and bytes handed to the clients' sockets (or transports).
    lines_out: int = 0
    bytes_out: int = 0
    #: The most output ever held for one client that does not read fast
    #: enough, beyond the transport's buffer (C{--max-sendq} bounds it).
    sendq_high_water: int = 0
    #: Time to hand one chat line to every member of its room.
    fanout: Histogram = field(default_factory=Histogram)
    #: Time to send the output of one reactor iteration (L{Flusher}).
    flush: Histogram = field(default_factory=Histogram)
