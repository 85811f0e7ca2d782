"""The in-memory registry passes the shared registry behaviour suite."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted.internet.task import Clock
from zope.interface.verify import verifyObject

from chatservice import events
from chatservice.errors import NicknameInUse
from chatservice.interfaces import IRegistryAtOnce
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


def test_answers_at_once_are_those_its_deferreds_fire_with() -> None:
    """The in-memory registry's answers at once are its Deferreds' answers."""
    at_once, deferred = Registry(clock=Clock()), Registry(clock=Clock())
    assert verifyObject(IRegistryAtOnce, at_once)
    watchers = [FakeClient(), FakeClient()]
    at_once.register(watchers[0], "watcher")
    deferred.register(watchers[1], "watcher")
    alice, bob = FakeClient(), FakeClient()
    assert (
        at_once.register_now(alice, "Alice") == deferred.register(bob, "Alice").result
    )  # type: ignore[attr-defined]
    with pytest.raises(NicknameInUse):
        at_once.register_now(FakeClient(), "ALICE")
    assert deferred.register(FakeClient(), "ALICE").result.check(NicknameInUse)  # type: ignore[attr-defined]
    at_once.say("#lobby", events.chat("Alice", "hi", "#lobby"), alice)
    deferred.say("#lobby", events.chat("Alice", "hi", "#lobby"), bob)
    assert (
        watchers[0].lines()
        == watchers[1].lines()
        == [
            "*** Alice has joined #lobby",
            "<Alice> hi",
        ]
    )
    assert at_once.count_now() == deferred.count().result == 2  # type: ignore[attr-defined]
    assert at_once.users_now() == deferred.users().result  # type: ignore[attr-defined]
    assert [line.event.text for line in at_once.join_now(alice, "#a")] == []
    assert (
        [line.event.text for line in at_once.join_now(alice, "#lobby")]
        == [
            line.event.text
            for line in deferred.join(bob, "#lobby").result  # type: ignore[attr-defined]
        ]
        == ["hi"]
    )
