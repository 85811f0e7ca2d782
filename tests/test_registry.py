"""The in-memory registry passes the shared registry behaviour suite."""

from hypothesis import given
from hypothesis import strategies as st

from twisted.internet.task import Clock

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


@given(
    history=st.integers(min_value=0, max_value=20),
    script=st.lists(
        st.tuples(st.sampled_from(["say", "join", "part"]), st.integers(0, 2)),
        max_size=200,
    ),
)
def test_scrollback_never_exceeds_bound(
    history: int, script: list[tuple[str, int]]
) -> None:
    """Whatever is said, joined and left, no room keeps more than --history lines."""
    registry = Registry(history=history, clock=Clock())
    rooms = ["#lobby", "#a", "#b"]
    speaker, listener = FakeClient(), FakeClient()
    registry.register(speaker, "speaker")
    registry.register(listener, "listener")
    for step, (action, index) in enumerate(script):
        room = rooms[index]
        if action == "join":
            registry.join(speaker, room)
        elif action == "part" and room != "#lobby":
            registry.part(speaker, room, "bye")
        elif room in {info.name for info in registry.rooms().result}:  # type: ignore[attr-defined]
            registry.join(speaker, room)
            registry.say(room, b"<speaker> %d\r\n" % step, speaker)
        for name in rooms:
            if name in {info.name for info in registry.rooms().result}:  # type: ignore[attr-defined]
                assert len(registry.join(listener, name).result) <= history  # type: ignore[attr-defined]
                if name != "#lobby":
                    registry.part(listener, name, "peek")
