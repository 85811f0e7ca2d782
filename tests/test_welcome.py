"""Tests of the welcome: the same lines whether the registry answers at once or not."""

import json
import re
from types import SimpleNamespace
from typing import Any

import pytest
from test_web import FakeWebSocket

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from chatservice import events
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.fired import then
from chatservice.frontends.frameformat import FrameDecoder
from chatservice.frontends.web import web
from chatservice.interfaces import Scrollback
from chatservice.reasons import CloseReason
from chatservice.registry import Registry
from chatservice.testing import FakeConnection, FakeFrames, register
from chatservice.welcome import ShownScrollback

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


@pytest.mark.parametrize("value", ["Online", ["a"], ("a",), {"a": 1}, 0, None])
def test_then_passes_a_plain_value_on_at_once(value: object) -> None:
    """A value that is not a Deferred goes to the step as it is, now."""
    assert then(value, lambda given: [given]) == [value]


class _MyDeferred(Deferred[int]):
    """A subclass of Deferred, as a plugin's registry might return."""


def test_then_waits_for_a_deferred_of_a_subclass() -> None:
    """A Deferred of another class that has not fired is waited for too."""
    d = _MyDeferred()
    assert then(d, lambda value: value + 1) is d
    d.callback(1)
    assert d.result == 2


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


# The scrollback a newcomer is shown, kept between newcomers -----------------

#: 2027-01-15 23:57 UTC: three minutes before a new day.
BEFORE_MIDNIGHT = 1_800_057_420.0


def _newcomer(
    factory: ChatFactory, clock: Clock, front_end: str, nickname: str
) -> bytes:
    """All that a newcomer on C{front_end} is sent when it registers as C{nickname}."""
    if front_end == "web":
        connection = web.build_protocol(
            factory, 10_000 + int(clock.seconds()), IPv4Address("TCP", "127.0.0.1", 1)
        )
        websocket = FakeWebSocket()
        connection.opened(websocket)  # type: ignore[arg-type]
        connection.session.received(f"/nick {nickname}")
        clock.advance(0)
        data = websocket.transport.value()
        connection.session.close(CloseReason.quit())
        return data
    user = FakeFrames(factory) if front_end == "frames" else FakeConnection(factory)
    if front_end == "frames":
        user.say(f"/nick {nickname}")
    else:
        user.enter(f"/nick {nickname}")
    data = user.output()
    user.drop()
    return data


def _newcomers_see(
    shown: ShownScrollback, monkeypatch: pytest.MonkeyPatch
) -> list[bytes]:
    """What newcomers on each front end are sent while lines are said, over midnight."""
    clock = Clock()
    clock.advance(BEFORE_MIDNIGHT)
    # The events' times too are the fake clock's: the same in every run.
    monkeypatch.setattr(events, "_time", SimpleNamespace(time=clock.seconds))
    factory = ChatFactory(
        Settings(history=4, resume_grace=0), clock=clock, run_in_thread=run_at_once
    )
    factory.shown_scrollback = shown
    alice = register(factory, "alice")
    seen = []
    said = 0
    for minute in range(6):
        for _ in range(minute % 3):  # none, one line, or two, then again
            said += 1
            alice.enter(f"line {said}")
        for front_end in ("lines", "frames", "web", "lines"):
            seen.append(_newcomer(factory, clock, front_end, f"{front_end}{minute}"))
            clock.advance(1)
        clock.advance(56)
    return seen


def test_kept_scrollback_is_byte_for_byte_the_one_made_anew(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Newcomers on every front end are sent the same bytes as when nothing is kept."""
    kept = _newcomers_see(ShownScrollback(), monkeypatch)
    made_anew = _newcomers_see(ShownScrollback(rooms=0), monkeypatch)
    assert kept == made_anew
    # The last minute's newcomers, after midnight: lines, frames, web, lines.
    assert (
        b"\r\n[2027-01-15 23:59] <alice> line 3\r\n[00:01] <alice> line 4\r\n"
        in (kept[-1])
    )
    for data in kept[-3:-1]:
        assert data.count(b'"history":true') == 4, data


def test_a_line_said_is_in_the_next_newcomers_scrollback(factory: ChatFactory) -> None:
    """The scrollback kept for a room is shifted when lines are said: old ones go."""
    factory = ChatFactory(
        Settings(history=2), clock=factory.clock, run_in_thread=run_at_once
    )
    alice = register(factory, "alice")
    alice.enter("one", "two")
    first = _newcomer(factory, factory.clock, "lines", "bob")
    alice.enter("three")
    second = _newcomer(factory, factory.clock, "lines", "carol")
    shown = b"times in UTC:\r\n[00:00] <alice> %s\r\n[00:00] <alice> %s\r\n*** End"
    assert shown % (b"one", b"two") in first
    assert shown % (b"two", b"three") in second


def test_many_lines_said_since_the_last_newcomer(factory: ChatFactory) -> None:
    """After more lines than are shifted, the next newcomer sees the latest ones."""
    factory = ChatFactory(
        Settings(history=20, flood_burst=100),
        clock=factory.clock,
        run_in_thread=run_at_once,
    )
    alice = register(factory, "alice")
    alice.enter(*[f"line {n}" for n in range(1, 26)])
    _newcomer(factory, factory.clock, "lines", "bob")
    alice.enter(*[f"line {n}" for n in range(26, 43)])
    shown = _newcomer(factory, factory.clock, "lines", "carol").split(b"\r\n")
    start = shown.index(b"*** Scrollback of #lobby, 20 lines, times in UTC:")
    assert shown[start + 1 : start + 22] == [
        *[b"[00:00] <alice> line %d" % n for n in range(23, 43)],
        b"*** End of scrollback of #lobby.",
    ]


def test_a_new_day_dates_the_kept_scrollback(clock: Clock) -> None:
    """After midnight (UTC) the next newcomer sees yesterday's lines with their date."""
    clock.advance(BEFORE_MIDNIGHT)
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    alice = register(factory, "alice")
    alice.enter("late")
    before = _newcomer(factory, clock, "lines", "bob")
    clock.advance(180)
    after = _newcomer(factory, clock, "lines", "carol")
    assert b"\r\n[23:57] <alice> late\r\n" in before
    assert b"\r\n[2027-01-15 23:57] <alice> late\r\n" in after


def test_a_room_forgotten_is_made_anew() -> None:
    """Past its number of rooms, the least recently shown room's lines are dropped."""
    shown = ShownScrollback(rooms=1)
    line = Scrollback(0.0, events.chat("alice", "hi", "#a"))
    first = shown.batch("#a", [line], 60.0)
    assert shown.batch("#a", [line], 60.0) is first
    shown.batch("#b", [line], 60.0)
    again = shown.batch("#a", [line], 60.0)
    assert again is not first
    assert [event.line for event in again] == [b"[00:00] <alice> hi\r\n"]


def test_a_scrollback_as_long_with_the_same_first_line_is_compared_whole() -> None:
    """Lines as many as last shown, the first the same, show the ones that differ."""
    shown = ShownScrollback()
    first = Scrollback(0.0, events.chat("alice", "hi", "#a"))
    kept = shown.batch("#a", [first, Scrollback(60.0, events.chat("bob", "yo"))], 90.0)
    other = shown.batch(
        "#a", [first, Scrollback(60.0, events.chat("carol", "o"))], 90.0
    )
    assert other is not kept
    assert [event.line for event in other] == [
        b"[00:00] <alice> hi\r\n",
        b"[00:01] <carol> o\r\n",
    ]


def test_welcome_lists_everyone_ignoring_case(factory: ChatFactory) -> None:
    """The welcome's list is sorted ignoring case, and shows who is away."""
    register(factory, "bob")
    zed = register(factory, "Zed")
    register(factory, "alice")
    zed.enter("/away lunch")
    carol = FakeConnection(factory)
    carol.output()
    carol.enter("/nick Carol")
    assert carol.lines()[0] == (
        "*** Welcome, Carol! Online (4): alice, bob, Carol, Zed (away)"
    )


def _online_line(factory: ChatFactory, nickname: str) -> str:
    """The first line of C{nickname}'s welcome (who is online), who then leaves."""
    newcomer = FakeConnection(factory)
    newcomer.output()
    newcomer.enter(f"/nick {nickname}")
    line = newcomer.lines()[0]
    newcomer.enter("/quit")
    return line


def test_welcome_list_follows_arrivals_departures_renames_and_away(
    factory: ChatFactory,
) -> None:
    """The list of everyone, kept between welcomes, shows each change since the last."""
    bob = register(factory, "bob")
    assert _online_line(factory, "x") == "*** Welcome, x! Online (2): bob, x"
    alice = register(factory, "Alice")
    assert _online_line(factory, "x") == "*** Welcome, x! Online (3): Alice, bob, x"
    bob.enter("/away lunch")
    assert _online_line(factory, "y") == (
        "*** Welcome, y! Online (3): Alice, bob (away), y"
    )
    bob.enter("/nick zed")  # renamed: keeps the away mark, moves in the order
    assert _online_line(factory, "y") == (
        "*** Welcome, y! Online (3): Alice, y, zed (away)"
    )
    bob.enter("/away")  # back
    alice.enter("/join #elsewhere")  # everyone online, whatever the room
    assert _online_line(factory, "a") == "*** Welcome, a! Online (3): a, Alice, zed"
    alice.enter("/quit")
    assert _online_line(factory, "a") == "*** Welcome, a! Online (2): a, zed"
    bob.drop()  # held for a resume: still online (--resume-grace)
    assert _online_line(factory, "a") == "*** Welcome, a! Online (2): a, zed"


def _frames_welcome(factory: ChatFactory, nickname: str) -> list[dict[str, Any]]:
    """The events a frame newcomer is sent, with their times, who then leaves."""
    user = FakeFrames(factory)
    user.say(f"/nick {nickname}")
    decoder = FrameDecoder(max_frame=1 << 24)
    decoder.feed(user.output())
    sent = [json.loads(frame.body) for frame in decoder]
    user.say("/quit")
    return [body for body in sent if "type" in body]


def test_notices_said_again_carry_the_time_now_and_the_motd_read_last(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The help, MOTD and scrollback notices each newcomer gets are as of then."""
    clock.advance(BEFORE_MIDNIGHT)
    monkeypatch.setattr(events, "_time", SimpleNamespace(time=clock.seconds))
    factory = ChatFactory(
        Settings(resume_grace=0), clock=clock, run_in_thread=run_at_once
    )
    factory.motd = ("Be nice.",)
    register(factory, "alice").enter("hi")
    first = _frames_welcome(factory, "bob")
    clock.advance(61.5)
    factory.motd = ("New rules.",)  # as --motd is read again on SIGHUP
    register(factory, "carol").enter("there")
    second = _frames_welcome(factory, "dan")
    shown = [(body["type"], body.get("text"), body["time"]) for body in second]
    assert shown[1][0] == "welcome"
    assert shown[2:6] == [
        (
            "notice",
            "Type /help for the commands.\nNew rules.",
            "2027-01-15T23:58:01.500Z",
        ),
        (
            "notice",
            "Scrollback of #lobby, 2 lines, times in UTC:",
            "2027-01-15T23:58:01.500Z",
        ),
        ("chat", "hi", "2027-01-15T23:57:00.000Z"),
        ("chat", "there", "2027-01-15T23:58:01.500Z"),
    ]
    assert shown[6] == (
        "notice",
        "End of scrollback of #lobby.",
        "2027-01-15T23:58:01.500Z",
    )
    assert [body.get("text") for body in first][2:4] == [
        "Type /help for the commands.\nBe nice.",
        "Scrollback of #lobby, 1 line, times in UTC:",
    ]


def test_a_motd_changed_in_place_is_shown_as_it_is_now(factory: ChatFactory) -> None:
    """A MOTD that is a list changed in place (by a plugin) is shown as changed."""
    motd = ["Be nice."]
    factory.motd = motd  # type: ignore[assignment]
    first = FakeConnection(factory)
    first.enter("/nick bob")
    motd[0] = "Be kind."
    second = FakeConnection(factory)
    second.enter("/nick carol")
    assert "*** Be nice." in first.lines()
    assert "*** Be kind." in second.lines()


def test_each_factory_shows_its_own_motd_made_once(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two servers in one process, one MOTD a list, each show theirs, made once each."""
    made = []
    notices = events.notices

    def counted(lines: list[str]) -> events.Event:
        made.append(lines[1:])
        return notices(lines)

    monkeypatch.setattr(events, "notices", counted)
    first = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    second = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    first.motd = ("Be nice.",)
    second.motd = ["Be kind."]  # type: ignore[assignment]
    for n in range(2):
        for factory, motd in ((first, "*** Be nice."), (second, "*** Be kind.")):
            user = FakeConnection(factory)
            user.enter(f"/nick user{n}")
            assert motd in user.lines()
    assert made == [["Be nice."], ["Be kind."]]


def test_scrollback_notices_kept_for_the_rooms_last_shown() -> None:
    """Past its number of rooms, the least recently shown room's notices are dropped."""
    shown = ShownScrollback(rooms=2)
    first = shown.notices("#a", 1)[0]
    shown.notices("#b", 1)
    shown.notices("#a", 1)
    shown.notices("#c", 1)  # #b is forgotten, not #a
    assert shown.notices("#a", 1)[0].text is first.text


def test_answers_at_once_only_without_overrides_below_the_twins() -> None:
    """A registry class that overrides an asked method (not its twin) is asked through it."""
    from chatservice.registry import Registry
    from chatservice.welcome import answers_at_once

    class Counting(Registry):
        def count(self):  # type: ignore[no-untyped-def]
            return super().count()

    class Both(Registry):
        def join(self, client, room):  # type: ignore[no-untyped-def]
            return super().join(client, room)

        def join_now(self, client, room):  # type: ignore[no-untyped-def]
            return super().join_now(client, room)

    class Below(Counting):
        def count_now(self):  # type: ignore[no-untyped-def]
            return super().count_now()

    assert answers_at_once(Registry)
    assert not answers_at_once(Counting)
    assert answers_at_once(Both)
    assert answers_at_once(Below)
