"""The in-memory registry passes the shared registry behaviour suite."""

from hypothesis import given
from hypothesis import strategies as st

from twisted.internet.task import Clock

from chatservice import events
from chatservice.registry import Registry
from chatservice.testing import FakeClient, RegistryBehaviour


class TestRegistry(RegistryBehaviour):
    def make_registry(self, announce_max: int | None = None) -> Registry:
        return Registry(announce_max=announce_max)


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
            registry.say(room, events.chat("speaker", str(step), room), speaker)
        for name in rooms:
            if name in {info.name for info in registry.rooms().result}:  # type: ignore[attr-defined]
                assert len(registry.join(listener, name).result) <= history  # type: ignore[attr-defined]
                if name != "#lobby":
                    registry.part(listener, name, "peek")
