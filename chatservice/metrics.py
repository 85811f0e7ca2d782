"""Prometheus metrics: the server's live counters, served at C{/metrics}.

A L{ChatCollector} reads the factory's state when it is scraped, so nothing
is counted twice and nothing is kept in step: it is the same state C{/stats}
shows.  The page is rendered by C{prometheus_client.generate_latest} in the
reactor thread (the state it reads is the reactor's), on a registry of its
own rather than the process-wide default one.
"""

from collections.abc import Iterator
from itertools import accumulate
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from .logs import gate
from .stats import TIME_BUCKETS, Histogram

if TYPE_CHECKING:
    from .factory import ChatFactory

log = Logger(observer=gate)


class ChatCollector(Collector):
    """Yields the metric families of one L{ChatFactory} when scraped."""

    def __init__(self, factory: "ChatFactory") -> None:
        self.factory = factory

    def collect(self) -> Iterator[Metric]:
        """Read the factory's counters now, as Prometheus metric families."""
        factory = self.factory
        stats = factory.stats
        registry = factory.registry
        yield GaugeMetricFamily(
            "chatservice_connections",
            "Connections open now, registered or not.",
            value=len(factory.connections),
        )
        yield GaugeMetricFamily(
            "chatservice_peak_connections",
            "The most connections open at once since the start.",
            value=stats.peak_connections,
        )
        # A cluster node counts its own users and rooms: asking Redis would
        # make a scrape wait, and each node's numbers add up.
        local_users = getattr(registry, "local_users", None)
        users = (
            local_users()
            if local_users is not None
            else _at_once(registry.users(), "users")
        )
        if users is not None:
            yield GaugeMetricFamily(
                "chatservice_users",
                "Registered users now, held sessions included.",
                value=len(users),
            )
        local_rooms = getattr(registry, "local_rooms", None)
        rooms = (
            local_rooms()
            if local_rooms is not None
            else _at_once(registry.rooms(), "rooms")
        )
        if rooms is not None:
            yield GaugeMetricFamily(
                "chatservice_rooms", "Rooms that exist now.", value=len(rooms)
            )
        yield GaugeMetricFamily(
            "chatservice_held_sessions",
            "Dropped sessions held now for a /resume.",
            value=len(factory.sessions),
        )
        yield CounterMetricFamily(
            "chatservice_lines_received",
            "Input lines acted on, commands included.",
            value=stats.lines_in,
        )
        yield CounterMetricFamily(
            "chatservice_chat_lines",
            "Chat lines and actions relayed to a room.",
            value=registry.said,
        )
        yield CounterMetricFamily(
            "chatservice_chat_deliveries",
            "Copies of chat lines handed to recipients.",
            value=registry.delivered,
        )
        yield CounterMetricFamily(
            "chatservice_lines_sent",
            "Lines sent to clients (handed to their sockets), of every kind.",
            value=stats.lines_out,
        )
        yield CounterMetricFamily(
            "chatservice_sent_bytes",
            "Bytes sent to clients (handed to their sockets).",
            value=stats.bytes_out,
        )
        yield GaugeMetricFamily(
            "chatservice_send_queue_high_water_bytes",
            "The largest send queue counted against --max-sendq for one "
            "client since the start.",
            value=stats.sendq_high_water,
        )
        yield _histogram(
            "chatservice_fanout_seconds",
            "Time to hand one chat line to every member of its room.",
            stats.fanout,
        )
        yield _histogram(
            "chatservice_flush_seconds",
            "Time to send the output of one reactor iteration to its clients.",
            stats.flush,
        )
        yield _by_reason(
            "chatservice_disconnects", "Connections that ended.", stats.closed
        )
        yield _by_reason(
            "chatservice_refused", "Connections refused at connect.", stats.refused
        )
        yield GaugeMetricFamily(
            "chatservice_uptime_seconds",
            "Seconds since the server started.",
            value=factory.clock.seconds() - stats.started,
        )


def _by_reason(name: str, documentation: str, counts: dict[str, int]) -> Metric:
    family = CounterMetricFamily(name, documentation, labels=["reason"])
    for reason, count in sorted(counts.items()):
        family.add_metric([reason], count)
    return family


def _histogram(name: str, documentation: str, histogram: Histogram) -> Metric:
    cumulative = list(accumulate(histogram.counts))
    buckets = [
        (repr(bound), count)
        for bound, count in zip(TIME_BUCKETS, cumulative, strict=False)
    ]
    buckets.append(("+Inf", cumulative[-1]))
    return HistogramMetricFamily(
        name, documentation, buckets=buckets, sum_value=histogram.total
    )


def _at_once(d: Deferred[list[object]], what: str) -> list[object] | None:
    """The result of C{d} if it has one now; None (and a log line) if not.

    The in-memory registry answers at once.  A scrape must not wait on a
    registry that does not, so that metric is left out of this scrape.
    """
    outcome: list[object] = []
    d.addBoth(outcome.append)
    if not outcome:
        d.cancel()
        # Cancelling may fire it with a CancelledError, appended: drop it.
        return None
    (result,) = outcome
    if isinstance(result, Failure):
        log.failure(
            "metrics: the registry could not list the {what}", result, what=what
        )
        return None
    return result  # type: ignore[return-value]


def collector_registry(factory: "ChatFactory") -> CollectorRegistry:
    """A Prometheus registry holding only the metrics of C{factory}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ChatCollector(factory))
    return registry


class _Tree(Resource):
    """A resource whose unknown children are 404 pages.

    C{Resource}'s own default is a deprecated, unescaped C{NoResource}.
    """

    def getChild(self, path: bytes, request: Request) -> IResource:
        """Any path not put here is not found."""
        return notFound()


class MetricsPage(_Tree):
    """The Prometheus text exposition of one L{CollectorRegistry}."""

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self.registry = registry

    def render_GET(self, request: Request) -> bytes:
        """Render every metric now, in the reactor thread."""
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return generate_latest(self.registry)


class _QuietSite(Site):
    """A L{Site} that writes no access log: a scrape every 15 s is noise."""

    def log(self, request: Request) -> None:
        """Log nothing."""


def metrics_site(factory: "ChatFactory", reactor: IReactorTime) -> Site:
    """The HTTP site that serves C{/metrics} for C{factory}; other paths 404."""
    root = _Tree()
    root.putChild(b"metrics", MetricsPage(collector_registry(factory)))
    site = _QuietSite(root, reactor=reactor)
    site.noisy = False
    return site
