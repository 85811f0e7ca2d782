"""Unit tests of flood control, connect-rate limits and wrong-protocol clients."""

from twisted.internet.task import Clock

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.testing import FakeConnection, register

FLOOD_NOTICE = (
    "*** flood control: you are sending more than 5 lines per second; "
    "your lines are slowed down, none is lost"
)


def test_burst_then_throttled(factory: ChatFactory, clock: Clock) -> None:
    """Past the burst, lines wait (the sender is told once) and none is lost."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    clock.advance(10)  # alice's bucket is full again after registering
    alice.output()
    alice.send(b"".join(b"line %d\n" % n for n in range(30)))
    assert bob.lines() == [f"<alice> line {n}" for n in range(10)]
    assert alice.lines() == [FLOOD_NOTICE]
    clock.advance(1)
    assert bob.lines() == [f"<alice> line {n}" for n in range(10, 15)]
    clock.pump([0.2] * 15)
    assert bob.lines() == [f"<alice> line {n}" for n in range(15, 30)]
    assert alice.lines() == []


def test_throttled_connection_is_not_read(factory: ChatFactory, clock: Clock) -> None:
    """While throttled the transport is paused, so TCP slows the sender down."""
    alice = register(factory, "alice")
    clock.advance(10)
    alice.send(b"x\n" * 11)
    assert alice.transport.producerState == "paused"
    clock.advance(1)
    assert alice.transport.producerState == "producing"


def test_steady_rate_is_never_throttled(factory: ChatFactory, clock: Clock) -> None:
    """A client sending at the flood rate for a minute is never slowed."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    for n in range(300):
        alice.enter(f"line {n}")
        assert bob.lines() == [f"<alice> line {n}"]
        clock.advance(0.2)
    assert alice.lines() == []


def test_others_unaffected_by_a_flooder(factory: ChatFactory, clock: Clock) -> None:
    """A throttled flooder does not slow anyone else down."""
    alice, bob, carol = (register(factory, n) for n in ["alice", "bob", "carol"])
    clock.advance(10)
    alice.send(b"flood\n" * 1000)
    bob.output()
    carol.enter("still here")
    assert bob.lines() == ["<carol> still here"]


def test_flood_lines_after_a_command_keep_order(
    factory: ChatFactory, clock: Clock
) -> None:
    """Commands and chat in a flood are acted on in the order they were sent."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    clock.advance(10)
    alice.send(b"a\n" * 10 + b"/join #other\nb\n")
    assert bob.lines()[-1] == "<alice> a"
    clock.advance(1)
    assert bob.lines() == ["*** alice has left #lobby (joined #other)"]


def test_unregistered_clients_are_throttled_too(
    factory: ChatFactory, clock: Clock
) -> None:
    """Flood control applies before registration as well."""
    client = FakeConnection(factory)
    client.output()
    client.send(b"/ping\n" * 12)
    assert client.lines() == ["*** PONG"] * 10 + [FLOOD_NOTICE]
    clock.advance(1)
    assert client.lines() == ["*** PONG"] * 2


def test_flood_settings(clock: Clock) -> None:
    """--flood-rate and --flood-burst set the bucket."""
    factory = ChatFactory(Settings(flood_rate=1, flood_burst=2), clock=clock)
    client = FakeConnection(factory)
    client.output()
    client.send(b"/ping\n" * 4)
    assert client.lines()[:2] == ["*** PONG"] * 2
    clock.advance(1)
    assert client.lines() == ["*** PONG"]
    clock.advance(1)
    assert client.lines() == ["*** PONG"]


def test_flood_timer_cancelled_on_disconnect(clock: Clock) -> None:
    """A throttled client that goes away leaves no timer behind."""
    factory = ChatFactory(Settings(resume_grace=0), clock=clock)
    alice = register(factory, "alice")
    alice.send(b"x\n" * 20)
    alice.drop()
    factory.flusher.flush()  # the end of the reactor iteration
    factory.history.flush()  # the lines it said are written, not in a second
    assert [call for call in clock.getDelayedCalls() if call.active()] == []


# Connect rate ----------------------------------------------------------------


def test_connect_rate_per_address(factory: ChatFactory, clock: Clock) -> None:
    """Past --max-connect-rate, an address is refused with one line, then let in."""
    for _ in range(10):
        FakeConnection(factory, "203.0.113.5")
    refused = FakeConnection(factory, "203.0.113.5")
    assert refused.lines() == [
        "!!! too many new connections from your address (at most 10 per "
        "second); try again in a moment"
    ]
    assert refused.closing
    other = FakeConnection(factory, "203.0.113.6")
    assert other.lines()[0] == "*** Welcome to chatservice."
    clock.advance(0.1)
    again = FakeConnection(factory, "203.0.113.5")
    assert again.lines()[0] == "*** Welcome to chatservice."


def test_connect_rate_setting(clock: Clock) -> None:
    """--max-connect-rate sets the rate."""
    factory = ChatFactory(Settings(max_connect_rate=2), clock=clock)
    FakeConnection(factory)
    FakeConnection(factory)
    assert FakeConnection(factory).lines()[0].startswith("!!! too many new")


def test_connect_rate_table_stays_small(factory: ChatFactory, clock: Clock) -> None:
    """Addresses that stopped connecting are forgotten."""
    for n in range(5000):
        FakeConnection(factory, f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}").drop()
        clock.advance(0.01)
    assert len(factory._connects) < 5000


# Wrong protocols ---------------------------------------------------------------


def test_http_request_refused(factory: ChatFactory) -> None:
    """A web browser gets one clear line and is closed."""
    client = FakeConnection(factory)
    client.output()
    client.send(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert client.lines() == ["!!! this is a chat server, not an HTTP server"]
    assert client.closing


def test_http_like_line_later_is_chat(factory: ChatFactory) -> None:
    """Only a first line is taken for an HTTP request."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.enter("GET / HTTP/1.1")
    assert bob.lines() == ["<alice> GET / HTTP/1.1"]


def test_tls_hello_closed_at_once(factory: ChatFactory) -> None:
    """A TLS ClientHello on the plain port is closed without waiting."""
    client = FakeConnection(factory)
    client.output()
    client.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40)
    assert client.output() == b""
    assert client.closing


# Half-close ------------------------------------------------------------------


def half_close(connection: FakeConnection) -> None:
    """The client shuts down its sending side, as the reactor reports it."""
    connection.protocol.readConnectionLost()


def test_half_close_delivers_last_line(factory: ChatFactory) -> None:
    """A last line without a newline is still said before the client leaves."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.send(b"first\nlast words")
    half_close(alice)
    assert bob.lines() == [
        "<alice> first",
        "<alice> last words",
        "*** alice lost connection",
    ]
    assert alice.closing


def test_half_close_still_answers(factory: ChatFactory) -> None:
    """A client that sends a command and half-closes still reads the answer."""
    client = FakeConnection(factory)
    client.output()
    client.send(b"/ping hi\n")
    half_close(client)
    assert client.lines() == ["*** PONG hi"]
    assert client.closing and not client.aborted


def test_half_close_while_throttled(factory: ChatFactory, clock: Clock) -> None:
    """Lines waiting for flood control are still said after a half-close."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    clock.advance(10)
    alice.send(b"line\n" * 12)
    half_close(alice)  # as if the reactor had read it already
    assert not alice.closing
    clock.advance(1)
    assert bob.lines() == ["<alice> line"] * 12 + ["*** alice lost connection"]
    assert alice.closing
