"""Tests of the welcome: the same lines whether the registry answers at once or not."""

import re
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.fired import then
from chatservice.registry import Registry
from chatservice.testing import FakeConnection, register

#: A resume token, which differs from one welcome to the next.
TOKEN = re.compile(rb"[\w-]{22}")


class WaitingRegistry:
    """The in-memory registry, each of whose answers waits a tenth of a second."""

    def __init__(self, clock: Clock) -> None:
        self._registry = Registry(clock=clock)
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._registry, name)
        if not callable(method):
            return method

        def later(*args: object) -> object:
            result = method(*args)
            if not isinstance(result, Deferred):
                return result
            waiting: Deferred[object] = Deferred()
            self._clock.callLater(0.1, result.chainDeferred, waiting)
            return waiting

        return later


def _factory(clock: Clock, registry: object = None) -> ChatFactory:
    return ChatFactory(
        Settings(), registry=registry, clock=clock, run_in_thread=run_at_once
    )


def _settle(clock: Clock) -> None:
    """Let two seconds pass, a tenth at a time: every answer comes."""
    for _ in range(20):
        clock.advance(0.1)


def _welcome_of(factory: ChatFactory, clock: Clock) -> tuple[bytes, bytes]:
    """What bob sees after C{/nick bob} and a line, and what alice sees."""
    alice = FakeConnection(factory)
    alice.enter("alice")
    _settle(clock)
    alice.enter("first line", "second line")
    _settle(clock)
    alice.output()
    bob = FakeConnection(factory)
    bob.output()
    bob.send(b"/nick bob\r\nhello\r\n")
    _settle(clock)
    return TOKEN.sub(b"TOKEN", bob.output()), alice.output()


def test_welcome_the_same_when_the_registry_waits() -> None:
    """A registry that answers later gives the same welcome, and the next line waits for it."""
    clock = Clock()
    clock.advance(1_800_000_000)
    at_once = _welcome_of(_factory(clock), clock)
    later_clock = Clock()
    later_clock.advance(1_800_000_000)
    waiting = _welcome_of(
        _factory(later_clock, WaitingRegistry(later_clock)), later_clock
    )
    assert waiting == at_once
    welcome, seen = at_once
    assert welcome.startswith(b"*** Welcome, bob! Online (2): alice, bob\r\n")
    assert b"[08:00] <alice> second line\r\n*** End of scrollback" in welcome
    assert seen == b"*** bob has joined #lobby\r\n<bob> hello\r\n"


def test_nick_taken_through_a_waiting_registry() -> None:
    """A nickname in use is refused the same way when the registry answers later."""
    clock = Clock()
    factory = _factory(clock, WaitingRegistry(clock))
    alice = FakeConnection(factory)
    alice.enter("alice")
    _settle(clock)
    bob = FakeConnection(factory)
    bob.output()
    bob.enter("/nick alice", "/nick bob")
    _settle(clock)
    lines = bob.lines()
    assert lines[:2] == [
        "!!! the nickname alice is taken; choose another one",
        "*** Welcome, bob! Online (2): alice, bob",
    ]


def test_then_runs_a_step_at_once_on_a_fired_deferred() -> None:
    """A Deferred that has fired gives its result to the step now."""
    assert then(succeed(2), lambda value, more: value + more, 3) == 5
    assert then(2, lambda value: value * 10) == 20


def test_then_waits_for_a_deferred_that_has_not_fired() -> None:
    """The step runs when the Deferred fires, and the Deferred is returned."""
    d: Deferred[int] = Deferred()
    result = then(d, lambda value: value + 1)
    assert result is d
    d.callback(1)
    assert result.result == 2


def test_then_leaves_a_failure_on_its_deferred() -> None:
    """A failed Deferred does not run the step; its failure stays with it."""
    ran: list[object] = []
    result = then(fail(ValueError("no")), ran.append)
    assert isinstance(result, Deferred)
    failures: list[Failure] = []
    result.addErrback(failures.append)
    assert ran == [] and failures[0].check(ValueError)


def test_registered_user_still_registers(factory: ChatFactory) -> None:
    """The test helper's registration goes through the path that answers at once."""
    alice = register(factory, "alice")
    assert alice.session.nickname == "alice"
