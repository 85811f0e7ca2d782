"""Tests for chatservice.deadlines: every session's timeout on one clock call."""

import random

import pytest

from twisted.internet.task import Clock

from chatservice.deadlines import Deadlines


def test_a_deadline_passes_at_its_time_not_before() -> None:
    """A deadline's function is called when its time comes, not a moment before."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[float] = []
    deadlines.start(30, lambda: passed.append(clock.seconds()))
    clock.advance(29.999)
    assert passed == []
    clock.advance(0.001)
    assert passed == [30]
    assert clock.getDelayedCalls() == []


def test_a_deadline_moved_later_passes_then() -> None:
    """A deadline whose due time was moved later passes at the new time only."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[float] = []
    entry = deadlines.start(10, lambda: passed.append(clock.seconds()))
    clock.advance(6)
    entry[3] = clock.seconds() + 10
    clock.advance(4)
    assert passed == []
    clock.advance(6)
    assert passed == [16]


def test_a_stopped_deadline_never_passes_and_leaves_no_call() -> None:
    """A stopped deadline is not called, and the clock is left with no call."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[str] = []
    first = deadlines.start(10, lambda: passed.append("first"))
    second = deadlines.start(20, lambda: passed.append("second"))
    deadlines.stop(first)
    clock.advance(15)
    assert passed == []
    deadlines.stop(second)
    assert clock.getDelayedCalls() == []
    clock.advance(100)
    assert passed == []


def test_many_deadlines_one_call() -> None:
    """A thousand running deadlines hold one call of the clock, each passing in turn."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[int] = []
    for n in range(1000):
        deadlines.start(30 + n % 7, lambda n=n: passed.append(n))
    assert len(clock.getDelayedCalls()) == 1
    clock.advance(30)
    assert passed == [n for n in range(1000) if n % 7 == 0]
    clock.advance(10)
    assert sorted(passed) == list(range(1000))
    assert clock.getDelayedCalls() == []


def test_a_sooner_deadline_started_later_passes_on_time() -> None:
    """A deadline sooner than every running one passes at its own time."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[tuple[str, float]] = []
    deadlines.start(600, lambda: passed.append(("long", clock.seconds())))
    deadlines.start(5, lambda: passed.append(("short", clock.seconds())))
    clock.advance(5)
    assert passed == [("short", 5)]
    assert len(clock.getDelayedCalls()) == 1


def test_a_failing_function_does_not_stop_the_others() -> None:
    """A deadline's function that raises is logged; the others due still pass."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[str] = []

    def fails() -> None:
        raise RuntimeError("boom")

    deadlines.start(1, fails)
    deadlines.start(1, lambda: passed.append("after"))
    deadlines.start(2, lambda: passed.append("later"))
    clock.advance(1)
    assert passed == ["after"]
    clock.advance(1)
    assert passed == ["after", "later"]


def test_a_deadline_started_as_one_passes() -> None:
    """A deadline started by a passing one's function passes at its time."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[float] = []

    def again() -> None:
        passed.append(clock.seconds())
        if len(passed) < 3:
            deadlines.start(5, again)

    deadlines.start(5, again)
    clock.advance(5)
    clock.advance(5)
    clock.advance(5)
    assert passed == [5, 10, 15]
    assert clock.getDelayedCalls() == []


def test_stopped_deadlines_do_not_pile_up() -> None:
    """Deadlines started and stopped by the ten thousand, one running, keep little."""
    clock = Clock()
    deadlines = Deadlines(clock)
    deadlines.start(3600, lambda: None)
    for _ in range(10_000):
        deadlines.stop(deadlines.start(3600, lambda: None))
    assert len(deadlines) == 1
    assert len(deadlines._heap) <= 2 * 65


@pytest.mark.parametrize("seed", range(20))
def test_same_times_as_delayed_calls(seed: int) -> None:
    """Deadlines pass at the very clock times DelayedCalls made and reset alike fire, in order of due time."""
    rng = random.Random(seed)
    clock = Clock()
    deadlines = Deadlines(clock)
    ours: list[tuple[int, float]] = []
    theirs: list[tuple[int, float]] = []
    running: dict[int, tuple[list[object], object]] = {}
    due_at: dict[int, float] = {}
    for step in range(300):
        action = rng.random()
        if action < 0.4 or not running:
            seconds = rng.choice([0.1, 0.2, 0.3, 1 / 3, 5, 30, rng.random() * 40])
            entry = deadlines.start(
                seconds, lambda step=step: ours.append((step, clock.seconds()))
            )
            call = clock.callLater(
                seconds, lambda step=step: theirs.append((step, clock.seconds()))
            )
            running[step] = (entry, call)
            due_at[step] = entry[3]  # type: ignore[assignment]
        elif action < 0.6:
            key = rng.choice(list(running))
            entry, call = running.pop(key)
            deadlines.stop(entry)
            if call.active():  # type: ignore[attr-defined]
                call.cancel()  # type: ignore[attr-defined]
        elif action < 0.8:
            key = rng.choice(list(running))
            entry, call = running[key]
            if call.active():  # type: ignore[attr-defined]
                seconds = rng.choice([0.1, 0.7, 5, 30])
                due = clock.seconds() + seconds
                if due >= entry[3]:
                    entry[3] = due  # moved later, as a session's input does
                    call.reset(seconds)  # type: ignore[attr-defined]
                    due_at[key] = due
        else:
            clock.advance(rng.choice([0.1, 0.2, 1 / 3, 1, 7]))
        # What passed is the same, at the same time, in the same order of
        # due times (those due at the same time: in any order).
        assert sorted(ours) == sorted(theirs)
        assert [due_at[s] for s, _ in ours] == [due_at[s] for s, _ in theirs]
    clock.advance(1000)
    assert sorted(ours) == sorted(theirs)
    assert [due_at[s] for s, _ in ours] == [due_at[s] for s, _ in theirs]
    assert clock.getDelayedCalls() == []


def test_a_deadline_moved_later_passes_after_those_due_before_it() -> None:
    """One clock step past two deadlines passes them by due time, the moved one last."""
    clock = Clock()
    deadlines = Deadlines(clock)
    passed: list[str] = []
    a = deadlines.start(3, lambda: passed.append("A"))
    deadlines.start(4, lambda: passed.append("B"))
    clock.advance(1)
    a[3] = clock.seconds() + 4  # an input: A due at 5
    clock.advance(5)
    assert passed == ["B", "A"]
