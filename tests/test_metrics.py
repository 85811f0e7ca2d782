"""Prometheus metrics: the collector's text, and /metrics scraped over HTTP."""

import re

import pytest
import pytest_twisted
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.task import Clock, deferLater
from twisted.web.client import Agent, readBody

from chatservice.config import Settings
from chatservice.errors import StartupError
from chatservice.factory import ChatFactory
from chatservice.metrics import collector_registry
from chatservice.service import ChatService
from chatservice.testing import FakeConnection, register
from tests.harness import WAIT, Harness, bounded, wait_until


def test_collector_text(factory: ChatFactory, clock: Clock) -> None:
    """The collector renders the factory's live counters, one line each."""
    clock.advance(100)
    alice = register(factory, "alice")
    register(factory, "bob")
    FakeConnection(factory)  # connected, not registered
    alice.enter("hello")
    alice.drop()  # held for a /resume
    clock.advance(20.5)
    text = generate_latest(collector_registry(factory)).decode("utf-8")
    # The timing histograms measure real time: see test_timing_histograms.
    text = "".join(
        line
        for line in text.splitlines(keepends=True)
        if not re.search(r"chatservice_(fanout|flush)_seconds", line)
    )
    assert text == (
        "# HELP chatservice_connections Connections open now, registered or not.\n"
        "# TYPE chatservice_connections gauge\n"
        "chatservice_connections 2.0\n"
        "# HELP chatservice_peak_connections The most connections open at once since the start.\n"
        "# TYPE chatservice_peak_connections gauge\n"
        "chatservice_peak_connections 3.0\n"
        "# HELP chatservice_users Registered users now, held sessions included.\n"
        "# TYPE chatservice_users gauge\n"
        "chatservice_users 2.0\n"
        "# HELP chatservice_rooms Rooms that exist now.\n"
        "# TYPE chatservice_rooms gauge\n"
        "chatservice_rooms 1.0\n"
        "# HELP chatservice_held_sessions Dropped sessions held now for a /resume.\n"
        "# TYPE chatservice_held_sessions gauge\n"
        "chatservice_held_sessions 1.0\n"
        "# HELP chatservice_lines_received_total Input lines acted on, commands included.\n"
        "# TYPE chatservice_lines_received_total counter\n"
        "chatservice_lines_received_total 3.0\n"
        "# HELP chatservice_chat_lines_total Chat lines and actions relayed to a room.\n"
        "# TYPE chatservice_chat_lines_total counter\n"
        "chatservice_chat_lines_total 1.0\n"
        "# HELP chatservice_chat_deliveries_total Copies of chat lines handed to recipients.\n"
        "# TYPE chatservice_chat_deliveries_total counter\n"
        "chatservice_chat_deliveries_total 1.0\n"
        "# HELP chatservice_lines_sent_total Lines sent to clients (handed to their sockets), of every kind.\n"
        "# TYPE chatservice_lines_sent_total counter\n"
        "chatservice_lines_sent_total 15.0\n"
        "# HELP chatservice_sent_bytes_total Bytes sent to clients (handed to their sockets).\n"
        "# TYPE chatservice_sent_bytes_total counter\n"
        "chatservice_sent_bytes_total 800.0\n"
        "# HELP chatservice_send_queue_high_water_bytes The largest send queue counted against --max-sendq for one client since the start.\n"
        "# TYPE chatservice_send_queue_high_water_bytes gauge\n"
        "chatservice_send_queue_high_water_bytes 0.0\n"
        "# HELP chatservice_disconnects_total Connections that ended.\n"
        "# TYPE chatservice_disconnects_total counter\n"
        'chatservice_disconnects_total{reason="connection lost"} 1.0\n'
        "# HELP chatservice_refused_total Connections refused at connect.\n"
        "# TYPE chatservice_refused_total counter\n"
        "# HELP chatservice_uptime_seconds Seconds since the server started.\n"
        "# TYPE chatservice_uptime_seconds gauge\n"
        "chatservice_uptime_seconds 120.5\n"
    )


def _metric(factory: ChatFactory, name: str) -> float:
    text = generate_latest(collector_registry(factory)).decode("utf-8")
    (line,) = [each for each in text.splitlines() if each.startswith(name + " ")]
    return float(line.split()[-1])


def test_sent_lines_and_bytes_are_what_clients_got(factory: ChatFactory) -> None:
    """Lines and bytes sent add up to everything the clients received."""
    people = [FakeConnection(factory) for _ in range(3)]
    for person, name in zip(people, ["alice", "bob", "carol"], strict=True):
        person.enter(name)
    people[0].enter("hello", "/who")
    people[1].enter("/me waves", "/join #x")
    people[2].enter("/quit")
    received = b"".join(person.output() for person in people)
    assert _metric(factory, "chatservice_sent_bytes_total") == len(received)
    assert _metric(factory, "chatservice_lines_sent_total") == received.count(b"\n")


def test_send_queue_high_water(clock: Clock) -> None:
    """Output held for a client that stops reading shows in the high-water mark."""
    factory = ChatFactory(Settings(max_sendq=10_000, flood_burst=1000), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    assert _metric(factory, "chatservice_send_queue_high_water_bytes") == 0
    bob.stop_reading()
    alice.enter(*["x" * 100] * 20)
    high = _metric(factory, "chatservice_send_queue_high_water_bytes")
    assert 20 * 100 < high < 10_000
    alice.enter(*["x" * 100] * 200)  # bob is dropped past max-sendq
    assert bob.aborted
    assert _metric(factory, "chatservice_send_queue_high_water_bytes") == 10_000


def test_timing_histograms(factory: ChatFactory) -> None:
    """Each chat line's fan-out is timed once; each flush once; buckets add up."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.enter("one", "two", "/me three", "/who")
    bob.lines()
    text = generate_latest(collector_registry(factory)).decode("utf-8")
    for name in ("chatservice_fanout_seconds", "chatservice_flush_seconds"):
        buckets = [
            float(line.split()[-1])
            for line in text.splitlines()
            if line.startswith(name + "_bucket")
        ]
        assert buckets == sorted(buckets)  # cumulative
        assert buckets[-1] == _metric(factory, name + "_count")
        assert _metric(factory, name + "_sum") > 0
    assert _metric(factory, "chatservice_fanout_seconds_count") == 3


def test_refusals_by_reason(clock: Clock) -> None:
    """Refused connections are counted under their reason, sorted."""
    factory = ChatFactory(Settings(max_per_ip=1), clock=clock)
    FakeConnection(factory)
    FakeConnection(factory)
    text = generate_latest(collector_registry(factory)).decode("utf-8")
    assert 'chatservice_refused_total{reason="too many from one address"} 1.0\n' in text


def scrape_line(text: str, name: str) -> str:
    (line,) = [each for each in text.splitlines() if each.startswith(name + " ")]
    return line


async def scrape(port: int, path: str = "/metrics") -> tuple[int, bytes, bytes]:
    """GET C{path} from the metrics port: status, content type and body."""
    agent = Agent(reactor)
    url = f"http://127.0.0.1:{port}{path}".encode("ascii")
    response = await bounded(agent.request(b"GET", url), WAIT)
    body = await bounded(readBody(response), WAIT)
    (content_type,) = response.headers.getRawHeaders(b"content-type")
    return response.code, content_type, body


# Twisted's own Agent response transport lacks abortConnection, and readBody
# warns about it; that is Twisted's business, not this test's.
_READ_BODY_WARNING = pytest.mark.filterwarnings(
    "ignore:Using readBody with a transport that does not have an "
    "abortConnection method:DeprecationWarning"
)


@_READ_BODY_WARNING
@pytest_twisted.ensureDeferred
async def test_scrape_over_http(chat: Harness) -> None:
    """/metrics over HTTP shows the connected user and the lines it sent."""
    chat.start(metrics="tcp:0:interface=127.0.0.1")
    alice = await chat.user("alice")
    bob = await chat.user("bob")
    alice.send("hi bob")
    await wait_until(lambda: "<alice> hi bob" in bob.lines, "bob to hear alice")
    code, content_type, body = await scrape(chat.metrics_port)
    assert code == 200
    assert content_type == CONTENT_TYPE_LATEST.encode("ascii")
    text = body.decode("utf-8")
    assert scrape_line(text, "chatservice_connections") == "chatservice_connections 2.0"
    assert scrape_line(text, "chatservice_users") == "chatservice_users 2.0"
    assert scrape_line(text, "chatservice_rooms") == "chatservice_rooms 1.0"
    assert (
        scrape_line(text, "chatservice_lines_received_total")
        == "chatservice_lines_received_total 3.0"
    )
    assert (
        scrape_line(text, "chatservice_chat_deliveries_total")
        == "chatservice_chat_deliveries_total 1.0"
    )


@_READ_BODY_WARNING
@pytest_twisted.ensureDeferred
async def test_other_paths_not_found(chat: Harness) -> None:
    """Only /metrics is served; any other path is 404."""
    chat.start(metrics="tcp:0:interface=127.0.0.1")
    for path in ["/", "/metrics/", "/stats"]:
        code, _, _ = await scrape(chat.metrics_port, path)
        assert code == 404, path


@pytest_twisted.ensureDeferred
async def test_metrics_port_in_use(busy_port: int) -> None:
    """A busy metrics port is one line naming --metrics; the chat port closes."""
    busy = f"tcp:{busy_port}:interface=127.0.0.1"
    chat_endpoint = "tcp:0:interface=127.0.0.1"
    service = ChatService(
        ChatFactory(Settings()),
        [(chat_endpoint, serverFromString(reactor, chat_endpoint))],
        (busy, serverFromString(reactor, busy)),
    )
    with pytest.raises(StartupError) as caught:
        service.privilegedStartService()
    assert str(caught.value) == (
        f"chatservice: cannot listen on --metrics {busy}: address already in use"
    )
    assert service.ports == []
    assert service.metrics_port is None
    # Let the reactor close the chat port that stopListening let go of.
    await deferLater(reactor, 0.01, lambda: None)
