"""What a server counts about itself, for C{/stats} (and metrics)."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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


class Histogram:
    """Observations counted per bucket, mergeable, with percentiles.

    The buckets are given by their upper bounds, sorted: C{TIME_BUCKETS}
    (seconds) for the server's timings, a log scale for the benchmark's
    latencies (L{chatservice.tools.bench}).  An observation goes to the
    first bucket whose bound is at least as large; the last bucket holds
    those above every bound.  Histograms with the same bounds merge by
    adding their counts, so that workers can send theirs to be added up.
    """

    __slots__ = ("bounds", "counts", "max", "total")

    def __init__(self, bounds: Sequence[float] = TIME_BUCKETS) -> None:
        self.bounds = bounds
        #: Observations per bucket (not cumulative); the last is above them all.
        self.counts = [0] * (len(bounds) + 1)
        #: The sum of all observations.
        self.total: float = 0
        #: The largest observation.
        self.max: float = 0

    def observe(self, value: float) -> None:
        """Count one observation of C{value}."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value
        if value > self.max:
            self.max = value

    @property
    def count(self) -> int:
        """How many observations were counted."""
        return sum(self.counts)

    def merge(self, other: Histogram) -> None:
        """Add the observations of C{other}, which has the same bounds."""
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, percent: float) -> float:
        """The value that C{percent} % of the observations reach, at most.

        It is the upper bound of the bucket that holds that observation,
        and never more than the largest one; 0 when nothing was counted.
        """
        rank = max(1, math.ceil(self.count * percent / 100))
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                if index == len(self.bounds):
                    break
                return min(self.bounds[index], self.max)
        return self.max

    def to_json(self) -> dict[str, Any]:
        """A JSON-friendly form, only the buckets not empty; see L{from_json}."""
        counts = {str(i): c for i, c in enumerate(self.counts) if c}
        return {"counts": counts, "total": self.total, "max": self.max}

    @classmethod
    def from_json(
        cls, data: dict[str, Any], bounds: Sequence[float] = TIME_BUCKETS
    ) -> Histogram:
        """The histogram with C{bounds} that L{to_json} wrote."""
        histogram = cls(bounds)
        for index, count in data["counts"].items():
            histogram.counts[int(index)] = int(count)
        histogram.total = data["total"]
        histogram.max = data["max"]
        return histogram


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
    #: Connections that ended, by the kind of their reason ("quit", "idle
    #: timeout": a L{chatservice.reasons.CloseKind}'s value, never its text).
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
