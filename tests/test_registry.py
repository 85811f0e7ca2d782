"""The in-memory registry passes the shared registry behaviour suite."""

from chatservice.registry import Registry
from chatservice.testing import FakeClient, RegistryBehaviour


class TestRegistry(RegistryBehaviour):
    def make_registry(self) -> Registry:
        return Registry()


def test_broadcast_sends_identical_object_to_all() -> None:
    """Fan-out hands the very same bytes object to 100 recipients."""
    registry = Registry()
    clients = [FakeClient() for _ in range(100)]
    for number, client in enumerate(clients):
        registry.register(client, f"user{number}")
    for client in clients:
        client.received.clear()
    data = b"<user0> hello\r\n"
    registry.broadcast(registry.lobby, data, clients[0])
    assert all(client.received == [data] for client in clients[1:])
    assert all(client.received[0] is data for client in clients[1:])
