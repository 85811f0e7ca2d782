"""Prometheus metrics: the collector's text, /metrics over HTTP, and its limits."""

import re
import sys
from collections.abc import Iterator

import pytest
import pytest_twisted
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from twisted.internet import reactor
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
)
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.web.client import Agent, readBody
from twisted.web.server import Site

from chatservice.config import Settings
from chatservice.errors import StartupError
from chatservice.factory import ChatFactory
from chatservice.metrics import (
    _MetricsChannel,
    collector_registry,
    metrics_site,
    warn_if_exposed,
)
from chatservice.service import ChatService
from chatservice.testing import FakeClient, FakeConnection, FakeFrames, register
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
        "# HELP chatservice_history_written_total Chat lines and actions written to the store's room history.\n"
        "# TYPE chatservice_history_written_total counter\n"
        "chatservice_history_written_total 1.0\n"
        "# HELP chatservice_history_lost_total Chat lines and actions the store's room history failed to keep.\n"
        "# TYPE chatservice_history_lost_total counter\n"
        "chatservice_history_lost_total 0.0\n"
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


def test_sent_lines_count_each_line_of_every_piece(factory: ChatFactory) -> None:
    """Lines sent count every line a line client got, and one per frame.

    Counted without reading the bytes sent: a frame user's chat of two
    lines told to line users, a newcomer's scrollback after more was
    said, /help, telnet's answers (no line), and output held while a
    client did not read, then sent.
    """
    people = [FakeConnection(factory) for _ in range(2)]
    for person, name in zip(people, ["alice", "bob"], strict=True):
        person.enter(name)
    dave = FakeFrames(factory)
    dave.say("dave")
    received = b"".join(person.output() for person in people)
    dave.say("one\ntwo", "three")
    people[0].enter("/help", "hello")
    people[1].send(b"\xff\xfd\x18\xff\xfb\x1f")  # DO TERMINAL-TYPE, WILL NAWS
    people[1].stop_reading()
    dave.say("four\nfive")
    people[0].enter("again")
    carol = FakeConnection(factory)
    carol.enter("carol")
    received += b"".join(person.output() for person in people)
    people[1].resume_reading()
    received += b"".join(person.output() for person in [*people, carol])
    frames = len(dave.frames())
    assert factory.stats.lines_out == received.count(b"\n") + frames
    assert b"<dave> one\r\n<dave> two\r\n" in received
    assert b"\xff" in received  # telnet was answered


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
    assert bob.closing
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


# The metrics port's limits -------------------------------------------------------


def _connect_http(
    site: Site, host: str = "127.0.0.1", port: int = 40000
) -> tuple[Protocol, StringTransport]:
    """A connection to C{site} from C{host}, on a StringTransport."""
    address = (IPv6Address if ":" in host else IPv4Address)("TCP", host, port)
    protocol = site.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    return protocol, transport


@pytest.fixture
def site(factory: ChatFactory, clock: Clock) -> Iterator[Site]:
    """The metrics site of C{factory}, on the test's clock."""
    site = metrics_site(factory, clock)
    site.startFactory()
    yield site
    site.stopFactory()


def _status(transport: StringTransport) -> bytes:
    return transport.value().split(b"\r\n", 1)[0]


def test_get_served(site: Site) -> None:
    """A scrape, with or without an empty body, is answered 200."""
    for head in [b"", b"Content-Length: 0\r\n"]:
        channel, transport = _connect_http(site)
        channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n")
        assert _status(transport) == b"HTTP/1.1 200 OK"
        assert b"chatservice_connections 0.0" in transport.value()
        channel.connectionLost(Failure(ConnectionDone()))


def test_pipelined_requests_get_one_answer(site: Site) -> None:
    """Requests sent together are answered once, with Connection: close, then closed."""
    channel, transport = _connect_http(site)
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 1000)
    assert transport.value().count(b"HTTP/1.1 ") == 1
    assert _status(transport) == b"HTTP/1.1 200 OK"
    head = transport.value().split(b"\r\n\r\n", 1)[0].lower()
    assert b"\r\nconnection: close" in head
    assert transport.disconnecting  # nothing more is read
    channel.connectionLost(Failure(ConnectionDone()))


def test_a_kept_alive_connection_serves_the_next_scrape(site: Site) -> None:
    """A request sent after the answer to the one before is served on the same connection."""
    channel, transport = _connect_http(site)
    for _ in range(3):
        channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        assert not transport.disconnecting
    assert transport.value().count(b"HTTP/1.1 200 OK") == 3
    channel.connectionLost(Failure(ConnectionDone()))


NO_BODY = (
    b"HTTP/1.1 413 Content Too Large\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 33\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"no request body is accepted here\n"
)


@pytest.mark.parametrize(
    "head",
    [
        b"Content-Length: 52428800\r\n",
        b"Content-Length: 1\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Content-Length: 52428800\r\nExpect: 100-continue\r\n",
    ],
)
def test_a_body_is_refused_unread(site: Site, head: bytes) -> None:
    """A request announcing a body gets 413 at once; none of it is stored."""
    channel, transport = _connect_http(site)
    channel.dataReceived(
        b"POST /metrics HTTP/1.1\r\nHost: x\r\n" + head + b"\r\n" + b"x" * 65536
    )
    assert transport.value() == NO_BODY  # no "100 Continue" either
    assert transport.disconnecting  # nothing more is read
    (request,) = channel.requests
    assert request.content is None  # Twisted's body buffer was never made
    channel.connectionLost(Failure(ConnectionDone()))


def test_a_long_request_head_is_refused(site: Site) -> None:
    """A request head past 8 KiB is answered 400 and the connection closed."""
    channel, transport = _connect_http(site)
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\n")
    sent = 0
    while not transport.disconnecting:  # a real transport stops reading
        channel.dataReceived(b"X-Padding: " + b"p" * 1000 + b"\r\n")
        sent += 1
    assert sent == 9  # 8 KiB
    assert transport.value() == b"HTTP/1.1 400 Bad Request\r\n\r\n"
    channel.connectionLost(Failure(ConnectionDone()))


def test_a_request_has_a_deadline(site: Site, clock: Clock) -> None:
    """A byte now and then does not hold a connection past 10 seconds."""
    channel, transport = _connect_http(site)
    for byte in b"GET /metr":
        clock.advance(1)
        channel.dataReceived(bytes([byte]))
    clock.advance(0.5)
    channel.dataReceived(b"i")
    assert not transport.disconnecting
    clock.advance(0.5)  # 10 s after the connection, with a byte 0.5 s ago
    assert transport.disconnecting
    assert transport.value() == b""
    clock.advance(5)  # a client that does not read is cut off
    assert transport.disconnected  # StringTransport's word for aborted
    channel.connectionLost(Failure(ConnectionDone()))


def test_an_idle_connection_closes_after_its_answer(site: Site, clock: Clock) -> None:
    """A kept-alive connection gets 10 s for its next request, then closes."""
    channel, transport = _connect_http(site)
    clock.advance(9)
    channel.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _status(transport) == b"HTTP/1.1 200 OK"
    clock.advance(9.5)  # 18.5 s after the connection
    assert not transport.disconnecting
    clock.advance(0.5)
    assert transport.disconnecting
    channel.connectionLost(Failure(ConnectionDone()))


TOO_MANY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 33\r\n"
    b"Connection: close\r\n"
    b"\r\n"
    b"too many connections to /metrics\n"
)


@pytest.mark.parametrize(
    ("first", "same"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"),  # one /64
        ("::ffff:192.0.2.1", "192.0.2.1"),
    ],
)
def test_connections_per_address(site: Site, first: str, same: str) -> None:
    """The fifth connection from one address is answered 503 and closed."""
    kept = [_connect_http(site, first)[0]]
    kept += [_connect_http(site, same)[0] for _ in range(3)]
    refused, transport = _connect_http(site, same)
    assert transport.value() == TOO_MANY
    assert transport.disconnecting
    refused.connectionLost(Failure(ConnectionDone()))
    _, other = _connect_http(site, "198.51.100.1")
    assert other.value() == b""
    kept[0].connectionLost(Failure(ConnectionDone()))
    _, again = _connect_http(site, same)
    assert again.value() == b""  # a place was freed


def test_connections_in_all(site: Site) -> None:
    """Past 32 connections in all, any address is answered 503."""
    for n in range(32):
        _, transport = _connect_http(site, f"192.0.2.{n}")
        assert transport.value() == b""
    _, transport = _connect_http(site, "198.51.100.1")
    assert transport.value() == TOO_MANY


@pytest.mark.parametrize(
    ("address", "warned"),
    [
        (IPv4Address("TCP", "0.0.0.0", 9100), True),
        (IPv4Address("TCP", "192.168.1.10", 9100), True),
        (IPv6Address("TCP", "::", 9100), True),
        (IPv4Address("TCP", "127.0.0.1", 9100), False),
        (IPv4Address("TCP", "127.0.0.2", 9100), False),
        (IPv6Address("TCP", "::1", 9100), False),
        (UNIXAddress(b"/run/chat/metrics.sock"), False),
    ],
)
def test_warning_when_not_on_loopback(address: IAddress, warned: bool) -> None:
    """Listening on anything but loopback is warned about, naming the address."""
    with capturedLogs() as events:
        warn_if_exposed(address)
    texts = [formatEvent(event) for event in events]
    if warned:
        assert texts == [
            f"--metrics listens on {address.host}, not only on loopback: anyone "  # type: ignore[attr-defined]
            "who reaches it sees the server's counters; bind it to 127.0.0.1 or to "
            "a private interface only Prometheus reaches"
        ]
        assert events[0]["log_level"] == LogLevel.warn
    else:
        assert texts == []


def _calls_to_render(users: int) -> int:
    """Python and C function calls made by one scrape with C{users} users."""
    factory = ChatFactory(Settings(), clock=Clock())
    for n in range(users):
        client = FakeClient("10.0.0.1")
        factory.registry.register(client, f"user{n}")
        if n % 10 == 0:
            factory.registry.join(client, f"#room{n}")
    registry = collector_registry(factory)
    generate_latest(registry)  # warm up
    calls = 0

    def count(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(count)
    try:
        generate_latest(registry)
    finally:
        sys.setprofile(None)
    return calls


def test_scrape_cost_does_not_grow_with_users() -> None:
    """A scrape with 10,000 users makes no more calls than one with 10."""
    assert _calls_to_render(10_000) <= _calls_to_render(10) + 20


class _Raw(Protocol):
    """A client that records what the server sends, and when it closes."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = data
        self.received = b""
        self.closed = False

    def connectionMade(self) -> None:
        if self.data:
            self.transport.write(self.data)

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True


async def _open(port: int, source: str, data: bytes = b"") -> _Raw:
    """A raw TCP connection to C{port} from the loopback address C{source}."""
    endpoint = TCP4ClientEndpoint(
        reactor, "127.0.0.1", port, timeout=WAIT, bindAddress=(source, 0)
    )
    return await bounded(connectProtocol(endpoint, _Raw(data)), WAIT)


@_READ_BODY_WARNING
@pytest_twisted.ensureDeferred
async def test_idle_connections_past_the_caps_are_refused(chat: Harness) -> None:
    """Idle connections hold at most 4 places per address and 32 in all."""
    chat.start(metrics="tcp:0:interface=127.0.0.1")
    site = chat.service.metrics_port.factory
    port = chat.metrics_port
    clients = []
    try:
        clients += [await _open(port, "127.0.0.1") for _ in range(6)]
        for n in range(2, 10):  # 8 more addresses, 4 connections each
            clients += [await _open(port, f"127.0.0.{n}") for _ in range(4)]
        await wait_until(lambda: sum(c.closed for c in clients) == 6, "6 refusals")
        refused = [c for c in clients if c.closed]
        assert [c.received for c in refused] == [TOO_MANY] * 6
        # Accepted in order: 2 of the first address's 6, then 4 past 32.
        assert sum(c.closed for c in clients[:6]) == 2
        assert site.connections == 32
        late = await _open(
            port, "127.0.0.10", b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        await wait_until(lambda: late.closed, "the late scrape to be refused")
        assert late.received == TOO_MANY
    finally:
        for client in clients:
            client.transport.abortConnection()
    await wait_until(lambda: site.connections == 0, "the idle connections to end")
    code, _, _ = await scrape(port)
    assert code == 200


@_READ_BODY_WARNING
@pytest_twisted.ensureDeferred
async def test_a_big_body_is_not_read(
    chat: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request announcing 50 MiB is cut off after one read of it, at most two."""
    chat.start(metrics="tcp:0:interface=127.0.0.1")
    read = []
    data_received = _MetricsChannel.dataReceived

    def counted(channel: _MetricsChannel, data: bytes) -> None:
        read.append(len(data))
        data_received(channel, data)

    monkeypatch.setattr(_MetricsChannel, "dataReceived", counted)
    head = b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 52428800\r\n\r\n"
    client = await _open(chat.metrics_port, "127.0.0.1", head + b"x" * (8 << 20))
    await wait_until(lambda: client.closed, "the server to close")
    assert sum(read) <= 2 * 65536  # Twisted reads 64 KiB at a time
    # The answer may be lost to the reset that unread data causes.
    assert client.received in (NO_BODY, b"")
    code, _, _ = await scrape(chat.metrics_port)
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_the_service_checks_where_metrics_listen(
    chat: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start, the metrics port's address (only that one) is checked."""
    checked: list[IAddress] = []
    monkeypatch.setattr("chatservice.service.warn_if_exposed", checked.append)
    chat.start(metrics="tcp:0:interface=127.0.0.1")
    assert checked == [IPv4Address("TCP", "127.0.0.1", chat.metrics_port)]
