"""Events: what the registry fans out, and their line format (issue 16)."""

import json
from collections.abc import Callable
from types import SimpleNamespace
from unittest.mock import ANY

import pytest

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from chatservice import events, wire
from chatservice.config import Settings
from chatservice.events import (
    KINDS,
    Encoder,
    Event,
    SharedEncoding,
    _Fields,
    again,
    from_dict,
    iso_time,
)
from chatservice.factory import ChatFactory, run_at_once
from chatservice.frontends import ircformat
from chatservice.frontends.frames import FrameProtocol
from chatservice.frontends.irc import irc_front_end
from chatservice.frontends.web import WebConnection, web
from chatservice.reasons import CloseReason
from chatservice.testing import FakeConnection, frame_user, register


@pytest.mark.parametrize(
    ("event", "line"),
    [
        (events.notice("hi"), wire.notice("hi")),
        (events.error("no", "usage"), wire.error("no")),
        (events.chat("bob", "hi", "#x"), wire.chat("bob", "hi")),
        (events.action("bob", "waves", "#x"), wire.action("bob", "waves")),
        (events.private("bob", "psst"), wire.private("bob", "psst")),
        (events.private_echo("bob", "psst"), wire.private_echo("bob", "psst")),
        (events.joined("bob", "#x"), wire.joined("bob", "#x")),
        (events.parted("bob", "#x", "bye"), wire.parted("bob", "#x", "bye")),
        (
            events.left("bob", CloseReason.quit("lunch")),
            wire.left("bob", CloseReason.quit("lunch")),
        ),
        (events.lost("bob"), wire.lost("bob")),
        (events.back("bob"), wire.back("bob")),
        (events.renamed("bob", "rob"), wire.renamed("bob", "rob")),
        (events.topic_set("bob", "#x", "t"), wire.topic_set("bob", "#x", "t")),
        (
            events.welcome("bob", "Online (1): bob"),
            wire.welcome("bob", "Online (1): bob"),
        ),
        (events.now_in("#x", "t"), wire.now_in("#x", "t")),
        (events.resumed("bob", "#x", 2), wire.resumed("bob", "#x", 2)),
        (events.resume_token("bob", "tok"), wire.resume_token("bob", "tok")),
        (events.pong("7"), wire.pong("7")),
        (events.disconnected("kicked"), wire.notice("disconnected: kicked")),
    ],
)
def test_line_format_is_wire_format(event: Event, line: bytes) -> None:
    """Each event's line is exactly the line wire.py builds: lines did not change."""
    assert event.line == line


def test_every_kind_has_a_builder_and_a_line() -> None:
    """Every kind of event can be made and has a line."""
    for kind, fields in KINDS.items():
        values = {name: (1 if name == "count" else "x") for name in fields}
        text = values.pop("text", "")
        assert Event(kind, text, **values).line.endswith(b"\r\n")


def test_text_of_several_lines_is_several_wire_lines() -> None:
    """Chat text with newlines is one prefixed line per line of it."""
    assert events.chat("bob", "one\ntwo", "#x").line == b"<bob> one\r\n<bob> two\r\n"
    assert events.notices(["a", "b"]).line == b"*** a\r\n*** b\r\n"


def test_events_are_immutable() -> None:
    """An event handed to every recipient cannot be changed by one of them."""
    event = events.notice("hi")
    with pytest.raises(AttributeError):
        event.text = "changed"  # type: ignore[misc]


def test_as_dict_and_back() -> None:
    """An event as JSON values, and back, is the same event."""
    event = events.chat("bob", "hi\nthere", "#x")
    values = event.as_dict()
    assert values == {
        "type": "chat",
        "time": values["time"],
        "room": "#x",
        "nick": "bob",
        "text": "hi\nthere",
    }
    again = from_dict(values, when=event.time)
    assert (again.kind, again.line, again.time) == ("chat", event.line, event.time)


def test_scrollback_is_stamped_with_when_it_was_said() -> None:
    """A line of history carries its time: the line format prefixes [HH:MM]."""
    stamped = events.chat("bob", "hi\nthere", "#x").stamped(when=3600 * 25 + 120)
    assert stamped.line == b"[01:02] <bob> hi\r\n[01:02] <bob> there\r\n"
    assert stamped.as_dict()["history"] is True


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("dated", [False, True])
def test_stamped_lines_are_each_line_of_the_event_stamped(
    kind: str, dated: bool
) -> None:
    """A line of scrollback, of any kind and of several lines, has each stamped."""
    fields = {name: (1 if name == "count" else "x") for name in KINDS[kind]}
    text = "one\ntwo" if fields.pop("text", None) else ""
    event = Event(kind, text, **fields, when=0.0)  # type: ignore[arg-type]
    said = 3600 * 24 * 365 + 3600 * 13 + 60 * 7
    stamp = b"[1971-01-01 13:07] " if dated else b"[13:07] "
    unstamped = event.line.split(b"\n")[:-1]
    expected = b"".join([stamp + part + b"\n" for part in unstamped])
    once = event.stamped(said, dated)
    assert (once.line, once.time, once.history) == (expected, said, True)
    assert once.as_dict() == {
        **event.as_dict(),
        "time": once.as_dict()["time"],
        "history": True,
    }
    # A line of scrollback stamped again (another day) is stamped once.
    assert once.stamped(said, dated).line == expected
    if not dated:
        assert Event(kind, text, **fields, when=said, history=True).line == expected  # type: ignore[arg-type]


def test_an_unknown_kind_is_refused() -> None:
    """An event of a kind no front end knows is never made."""
    with pytest.raises(ValueError, match="unknown event kind 'shout'"):
        Event("shout", "hi")


def _web_user(factory: ChatFactory, nickname: str, host: str) -> StringTransport:
    """A web user registered as C{nickname}, its WebSocket's transport returned."""
    address = IPv4Address("TCP", host, 40000)
    connection = factory.build_for(web, address)
    assert isinstance(connection, WebConnection)
    transport = StringTransport(peerAddress=address)
    transport.registerProducer(object(), True)  # the HTTP channel, as at takeover
    websocket = SimpleNamespace(
        transport=transport,
        factory=SimpleNamespace(heartbeat=30.0, max_frame=65536),
    )
    connection.opened(websocket)  # type: ignore[arg-type]
    connection.received(
        json.dumps({"frame": "INPUT", "text": nickname}).encode(), False
    )
    assert connection.session.nickname == nickname
    return transport


def _irc_user(
    factory: ChatFactory, nickname: str, host: str, timed: bool
) -> FakeConnection:
    """An IRC user registered as C{nickname}, with server-time tags if C{timed}."""
    user = FakeConnection(factory, host, front_end=irc_front_end)
    caps = ["CAP LS 302", "CAP REQ :server-time", "CAP END"] if timed else []
    user.enter(*caps, f"NICK {nickname}", f"USER {nickname} 0 * :x")
    assert user.session.nickname == nickname
    return user


def test_a_broadcast_is_encoded_once_per_format(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A line said to line, frame, web and IRC users is encoded once per format."""
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    alice = register(factory, "alice")
    lines = [register(factory, f"l{n}", f"192.0.2.{n}") for n in range(3)]
    frames = [frame_user(factory, f"f{n}", f"198.51.100.{n}") for n in range(3)]
    webs = [_web_user(factory, f"w{n}", f"203.0.113.{n}") for n in range(3)]
    ircs = [_irc_user(factory, f"i{n}", f"192.0.2.{10 + n}", False) for n in range(3)]
    timed = [_irc_user(factory, f"t{n}", f"192.0.2.{20 + n}", True) for n in range(3)]
    calls: list[tuple[str, str]] = []

    def counting(name: str, encoder: Encoder) -> Encoder:
        def encode(event: Event) -> bytes:
            calls.append((name, event.text))
            return encoder(event)

        return encode

    for name, encoding in [
        ("frames", FrameProtocol._encode),
        ("web", WebConnection._encode),
        ("irc", ircformat.SHARED),
        ("irc, server-time", ircformat.SHARED_TIMED),
    ]:
        assert isinstance(encoding, SharedEncoding)
        monkeypatch.setattr(encoding, "encoder", counting(name, encoding.encoder))
    clock.advance(0)
    for user in [*lines, *frames, *ircs, *timed]:
        user.transport.clear()
    for transport in webs:
        transport.clear()
    alice.enter("hello everyone")
    factory.flusher.flush()
    assert sorted(calls) == [
        ("frames", "hello everyone"),
        ("irc", "hello everyone"),
        ("irc, server-time", "hello everyone"),
        ("web", "hello everyone"),
    ]
    # Every user of a format is sent the same bytes.
    assert {user.output() for user in lines} == {b"<alice> hello everyone\r\n"}
    assert len({user.transport.value() for user in frames}) == 1
    assert len({transport.value() for transport in webs}) == 1
    assert {user.output() for user in ircs} == {
        b":alice!alice@chatservice PRIVMSG #lobby :hello everyone\r\n"
    }
    (sent,) = {user.output() for user in timed}
    assert sent.startswith(b"@time=")
    assert sent.endswith(
        b" :alice!alice@chatservice PRIVMSG #lobby :hello everyone\r\n"
    )


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (0.0, "1970-01-01T00:00:00.000Z"),
        (1796578503.123456, "2026-12-06T17:35:03.123Z"),
        (1796578503.9994, "2026-12-06T17:35:03.999Z"),
        (1796578503.9999999, "2026-12-06T17:35:04.000Z"),
    ],
)
def test_times_are_iso_8601_utc_with_milliseconds(when: float, text: str) -> None:
    """An event's time in JSON is UTC, to the millisecond below, with a Z."""
    assert iso_time(when) == text


def test_copies_fill_every_field() -> None:
    """Events made by stamped() and again() have every field of Event set.

    They fill an event slot by slot (for speed), as _made does: a field
    added to Event and forgotten in one of them fails here.
    """
    original = events.renamed("alice", "alicia")
    for copy in (original.stamped(), again(original)):
        for name in _Fields.__slots__:
            getattr(copy, name)  # AttributeError: a slot left unset
        assert (copy.kind, copy.nick, copy.new_nick) == (
            original.kind,
            "alice",
            "alicia",
        )


def test_a_shifted_batch_measures_the_bytes_it_gives() -> None:
    """A batch, shifted on, gives each format its lines' bytes, their length and LFs."""
    lines = [events.chat("alice", "x\n" * n) for n in range(1, 6)]
    batch = events.Batch(lines[:3])
    line = SharedEncoding(lambda event: event.line)
    double = SharedEncoding(lambda event: event.line * 2)
    for encoder in (line, double):
        batch.encoded_sized(encoder)
    shifted = batch.shifted(2, lines[3:])
    triple = SharedEncoding(lambda event: event.line * 3)  # first asked for now
    for encoder, times in ((line, 1), (double, 2), (triple, 3)):
        data, size = shifted.encoded_sized(encoder)
        assert data == [event.line * times for event in lines[2:]]
        assert size == sum(map(len, data))
        assert shifted.encoded_sized(encoder) == (data, size)
        assert shifted.encoded_counted(encoder) == (data, size, lf(data))
    assert batch.encoded_counted(line)[2] == lf(batch.encoded(line)) == 2 + 3 + 4


def lf(data: list[bytes]) -> int:
    """The LFs in C{data}."""
    return b"".join(data).count(b"\n")


@pytest.mark.parametrize(
    ("made", "kind", "text", "fields"),
    [
        (lambda: events.notice("hi"), "notice", "hi", {}),
        (lambda: events.notice("a\nb"), "notice", "a\nb", {}),
        (
            lambda: events.chat("bob", "hi", "#a"),
            "chat",
            "hi",
            {"nick": "bob", "room": "#a"},
        ),
        (lambda: events.chat("bob", "a\nb"), "chat", "a\nb", {"nick": "bob"}),
        (lambda: events.joined("bob", "#a"), "join", "", {"nick": "bob", "room": "#a"}),
        (
            lambda: events.left("bob", "quit: a\nb"),
            "quit",
            "",
            {"nick": "bob", "reason": "quit: a\nb"},
        ),
        (
            lambda: events.welcome("bob", "Online (1): bob"),
            "welcome",
            "Online (1): bob",
            {"nick": "bob"},
        ),
    ],
)
def test_a_builder_makes_the_line_of_its_kind(
    made: Callable[[], Event], kind: str, text: str, fields: dict[str, str]
) -> None:
    """A builder that gives its event's line gives the one the kind's format makes."""
    event = made()
    assert event.line == Event(kind, text, **fields).line
    assert event.as_dict() == {**Event(kind, text, **fields).as_dict(), "time": ANY}
