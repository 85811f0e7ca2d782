"""Unit tests of the factory: admission limits, ids, and stopping."""

from twisted.internet.address import UNIXAddress
from twisted.internet.error import ConnectionAborted
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface.verify import verifyObject

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.frontends.lines import LineProtocol
from chatservice.interfaces import IChatServer
from chatservice.testing import FakeConnection, register


def test_connection_ids_unique_and_increasing(factory: ChatFactory) -> None:
    """Every connection gets a new, larger id, even from the same address."""
    ids = [FakeConnection(factory).protocol.connection_id for _ in range(5)]
    assert ids == sorted(set(ids))


def test_max_clients(clock: Clock) -> None:
    """A connection over --max-clients is told why in one line and closed."""
    factory = ChatFactory(Settings(max_clients=2), clock=clock)
    first, _ = FakeConnection(factory, "10.0.0.1"), FakeConnection(factory, "10.0.0.2")
    refused = FakeConnection(factory, "10.0.0.3")
    assert refused.lines() == ["!!! the server is full (2 connections)"]
    assert refused.closing
    first.drop()
    assert FakeConnection(factory, "10.0.0.3").lines()[0].startswith("*** Welcome")


def test_max_per_ip(clock: Clock) -> None:
    """A connection over --max-per-ip is refused; other addresses are not."""
    factory = ChatFactory(Settings(max_per_ip=2), clock=clock)
    first = FakeConnection(factory, "10.0.0.1")
    FakeConnection(factory, "10.0.0.1")
    refused = FakeConnection(factory, "10.0.0.1")
    assert refused.lines() == ["!!! too many connections from your address (at most 2)"]
    assert refused.closing
    assert FakeConnection(factory, "10.0.0.2").lines()[0].startswith("*** Welcome")
    first.drop()
    assert FakeConnection(factory, "10.0.0.1").lines()[0].startswith("*** Welcome")


def test_unix_connections_have_no_per_ip_limit(clock: Clock) -> None:
    """Connections over a UNIX socket have no address, so no per-address limit."""
    factory = ChatFactory(Settings(max_per_ip=1), clock=clock)
    for _ in range(3):
        address = UNIXAddress(None)
        protocol = factory.buildProtocol(address)
        assert isinstance(protocol, LineProtocol)
        protocol.makeConnection(StringTransport())
    assert len(factory.connections) == 3


def test_stop_tells_everyone_and_closes(factory: ChatFactory) -> None:
    """Stopping tells every connection, registered or not, and closes each."""
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    waiting = FakeConnection(factory)
    waiting.output()
    stopped = factory.stop()
    for client in (alice, bob, waiting):
        assert client.lines() == ["*** server shutting down"]
        assert client.closing
    assert not stopped.called
    for client in (alice, bob, waiting):
        client.drop()
    assert stopped.called
    assert (alice.lines(), bob.lines()) == ([], [])


def test_stop_refuses_new_connections(factory: ChatFactory) -> None:
    """While stopping, a new connection is refused."""
    FakeConnection(factory)
    factory.stop()
    assert FakeConnection(factory).lines() == ["!!! the server is shutting down"]


def test_stop_aborts_stragglers_at_deadline(clock: Clock) -> None:
    """Clients that do not read are aborted after --shutdown-timeout."""
    factory = ChatFactory(Settings(shutdown_timeout=2), clock=clock)
    alice = register(factory, "alice")
    alice.stop_reading()
    stopped = factory.stop()
    clock.advance(1.9)
    assert not alice.aborted
    clock.advance(0.1)
    assert alice.aborted
    alice.drop(ConnectionAborted)
    assert stopped.called


def test_stop_with_nobody(factory: ChatFactory) -> None:
    """Stopping with no connections is done at once."""
    assert factory.stop().called


def test_factory_is_a_chat_server(clock: Clock) -> None:
    """The factory provides IChatServer, what sessions and front ends see."""
    assert verifyObject(IChatServer, ChatFactory(Settings(), clock=clock))
