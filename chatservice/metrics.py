"""Prometheus metrics: the server's live counters, served at C{/metrics}.

A L{ChatCollector} reads the factory's state when it is scraped, so nothing
is counted twice and nothing is kept in step: it is the same state C{/stats}
shows.  The page is rendered by C{prometheus_client.generate_latest} in the
reactor thread (the state it reads is the reactor's), on a registry of its
own rather than the process-wide default one.
"""

from collections import Counter
from collections.abc import Iterator
from ipaddress import ip_address
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

from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from .httpchannel import BodilessChannel, answer
from .logs import gate
from .stats import TIME_BUCKETS, Histogram
from .throttle import address_key

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
        # Counted, not listed: a scrape costs the same with 10 users or
        # 10,000 (listing and sorting them took 6.4 ms with 10,000 users, on
        # the event loop, at every scrape).  A cluster node counts its own
        # users and rooms: asking Redis would make a scrape wait, and each
        # node's numbers add up.
        users, rooms = registry.local_sizes()
        yield GaugeMetricFamily(
            "chatservice_users",
            "Registered users now, held sessions included.",
            value=users,
        )
        yield GaugeMetricFamily(
            "chatservice_rooms", "Rooms that exist now.", value=rooms
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
            "chatservice_history_written",
            "Chat lines and actions written to the store's room history.",
            value=factory.history.written,
        )
        yield CounterMetricFamily(
            "chatservice_history_lost",
            "Chat lines and actions the store's room history failed to keep.",
            value=factory.history.lost,
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


#: Connections served at once on the metrics port, in all.  Prometheus
#: needs one per scrape, at most a few.
MAX_CONNECTIONS = 32
#: Connections served at once from one address (an IPv6 /64 counts as one).
MAX_PER_ADDRESS = 4
#: Seconds a connection has to send a whole request, counted from the
#: connection or from the end of the previous answer: an idle connection
#: closes after this long, and so does one sending a byte now and then.
REQUEST_TIMEOUT = 10.0
#: The most bytes of a request's line and headers (a scrape sends < 1 KiB).
MAX_REQUEST_HEAD = 8192
#: The most headers in a request (Prometheus sends about 6).
MAX_HEADERS = 64


_TOO_MANY = answer(b"503 Service Unavailable", b"too many connections to /metrics\n")


class _MetricsChannel(BodilessChannel):
    """Twisted's HTTP/1.1 channel, for small body-less requests on a deadline.

    Twisted already bounds a request's head (C{totalHeadersSize},
    C{maxHeaders}, the line length); here those bounds are tighter, the
    timeout is not restarted by every read, and bodies and pipelined
    requests are refused (L{BodilessChannel}).
    """

    totalHeadersSize = MAX_REQUEST_HEAD
    maxHeaders = MAX_HEADERS
    MAX_LENGTH = MAX_REQUEST_HEAD  # one line, before its end is seen
    #: Seconds given to a client that does not read its answer to a timeout.
    abortTimeout = 5
    #: What the site counts this connection under (see L{_MetricsSite}).
    address_key: str | None = None
    site: "_MetricsSite"

    def dataReceived(self, data: bytes) -> None:
        """Parse C{data}, without restarting the timeout as Twisted does."""
        LineReceiver.dataReceived(self, data)

    def connectionLost(self, reason: Failure) -> None:
        """Let the site count this connection out."""
        super().connectionLost(reason)
        self.site.ended(self.address_key)

    def timeoutConnection(self) -> None:
        """Close, quietly: Twisted would log every idle connection it closes."""
        if self.abortTimeout is not None:
            self._abortingCall = self.callLater(self.abortTimeout, self._abort)
        self.loseConnection()

    def _abort(self) -> None:
        """Cut off a client that did not read its answer to a timeout."""
        self._abortingCall = None  # called: connectionLost must not cancel it
        self.transport.abortConnection()


class _Refusal(Protocol):
    """Answers C{503} and closes: the metrics port has no room for this one."""

    def connectionMade(self) -> None:
        """Say why, and close."""
        self.transport.write(_TOO_MANY)
        self.transport.loseConnection()


class _MetricsSite(Site):
    """A L{Site} for Prometheus: limited connections, no access log."""

    protocol = _MetricsChannel  # type: ignore[assignment]  # HTTP/1.1 only

    def __init__(
        self,
        resource: IResource,
        reactor: IReactorTime,
        max_connections: int = MAX_CONNECTIONS,
        max_per_address: int = MAX_PER_ADDRESS,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:
        super().__init__(resource, reactor=reactor, timeout=timeout)
        self.noisy = False
        self.max_connections = max_connections
        self.max_per_address = max_per_address
        self.connections = 0
        self.per_address: Counter[str] = Counter()

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        """A channel, or a refusal past the total or per-address limit."""
        # UNIX sockets have no host: only the total limit applies to them.
        key = address_key(getattr(addr, "host", None))
        if self.connections >= self.max_connections or (
            key is not None and self.per_address[key] >= self.max_per_address
        ):
            return _Refusal()
        channel: _MetricsChannel = super().buildProtocol(addr)
        channel.address_key = key
        self.connections += 1
        if key is not None:
            self.per_address[key] += 1
        return channel

    def ended(self, key: str | None) -> None:
        """A connection counted under C{key} ended."""
        self.connections -= 1
        if key is not None:
            self.per_address[key] -= 1
            if not self.per_address[key]:
                del self.per_address[key]

    def log(self, request: Request) -> None:
        """Log nothing: a scrape every 15 s is noise."""


def metrics_site(factory: "ChatFactory", reactor: IReactorTime) -> Site:
    """The HTTP site that serves C{/metrics} for C{factory}; other paths 404."""
    root = _Tree()
    root.putChild(b"metrics", MetricsPage(collector_registry(factory)))
    return _MetricsSite(root, reactor)


def warn_if_exposed(address: IAddress) -> None:
    """Warn when the metrics port listens on more than loopback."""
    host = getattr(address, "host", None)
    if not isinstance(host, str):
        return  # a UNIX socket: its file's permissions decide
    try:
        loopback = ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        log.warn(
            "--metrics listens on {host}, not only on loopback: anyone who "
            "reaches it sees the server's counters; bind it to 127.0.0.1 or "
            "to a private interface only Prometheus reaches",
            host=host,
        )
