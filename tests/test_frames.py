"""Unit tests of the frame front end: input cleaning, the heartbeat, the protocol."""

import random
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_plugins import use_examples

from twisted.internet.task import Clock

from chatservice import __version__, events
from chatservice.config import Settings
from chatservice.errors import ChatError
from chatservice.factory import ChatFactory, run_at_once
from chatservice.frontends.frameformat import (
    TEXT_REFUSAL,
    Code,
    FrameType,
    encode_frame,
    encode_hello,
)
from chatservice.frontends.frames import (
    Heartbeat,
    LineTooLong,
    clean_input,
)
from chatservice.reasons import HEARTBEAT_TIMEOUT
from chatservice.testing import FakeFrames, frame_user, register


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", ("hello", 1)),
        ("one\ntwo", ("one\ntwo", 2)),
        ("one\r\ntwo\r\n", ("one\ntwo", 2)),
        ("\n\none\n\ntwo\n\n", ("one\n\ntwo", 3)),
        ("a\x1b[31mred\x07\nb\u202e", ("ared\nb", 2)),
        ("bad \ud800 half", ("bad \ufffd half", 1)),
        ("", ("", 1)),
        ("\n \n", ("", 1)),
    ],
)
def test_clean_input(text: str, expected: tuple[str, int]) -> None:
    """Each line is sanitised; blank lines around are dropped; lines counted."""
    assert clean_input(text, 2048) == expected


def test_each_line_within_max_line() -> None:
    """Lines of max_line bytes each pass, however many there are."""
    text = "\n".join(["é" * 5] * 100)  # 10 bytes a line
    assert clean_input(text, 10) == (text, 100)


@pytest.mark.parametrize("text", ["x" * 11, "ok\n" + "é" * 6, "€€€€"])
def test_line_too_long(text: str) -> None:
    """A line longer than max_line bytes (as UTF-8) refuses the whole text."""
    with pytest.raises(LineTooLong) as caught:
        clean_input(text, 10)
    assert str(caught.value) == "line too long (max 10 bytes)"


class Beats:
    """A heartbeat on a fake clock, recording its pings and its expiry."""

    def __init__(self, interval: float = 30, give_up: bool = True) -> None:
        self.clock = Clock()
        self.pings: list[str] = []
        self.expired = 0
        self.give_up = give_up
        self.heartbeat = Heartbeat(
            self.clock, interval, self.pings.append, self._expire
        )
        self.heartbeat.start()

    def _expire(self) -> bool:
        self.expired += 1
        return self.give_up


def test_ping_after_quiet() -> None:
    """A peer quiet for the interval is pinged, once, with a token."""
    beats = Beats()
    beats.clock.advance(29.9)
    assert beats.pings == []
    beats.clock.advance(0.1)
    assert beats.pings == ["1"]
    beats.clock.advance(29.9)
    assert (beats.pings, beats.expired) == (["1"], 0)


def test_expired_without_answer() -> None:
    """A peer that sends nothing within the interval after the ping expires."""
    beats = Beats()
    beats.clock.advance(30)
    beats.clock.advance(30)
    assert (beats.pings, beats.expired) == (["1"], 1)
    assert beats.clock.getDelayedCalls() == []


def test_frames_keep_it_quiet() -> None:
    """A peer that sends something within every interval is never pinged."""
    beats = Beats()
    for _ in range(10):
        beats.clock.advance(20)
        beats.heartbeat.heard()
    assert (beats.pings, beats.expired) == ([], 0)


def test_ping_counts_from_last_frame() -> None:
    """The ping comes an interval after the last frame, not after the start."""
    beats = Beats()
    beats.clock.advance(20)
    beats.heartbeat.heard()
    beats.clock.advance(29)
    assert beats.pings == []
    beats.clock.advance(1)
    assert beats.pings == ["1"]


def test_answer_saves_it() -> None:
    """Anything heard after the ping saves the connection; pings go on."""
    beats = Beats()
    beats.clock.advance(30)
    beats.clock.advance(10)
    beats.heartbeat.heard()
    beats.clock.advance(25)
    assert (beats.pings, beats.expired) == (["1"], 0)
    beats.clock.advance(5)
    assert beats.pings == ["1", "2"]
    beats.clock.advance(30)
    assert beats.expired == 1


def test_not_given_up() -> None:
    """A peer not given up on at the deadline is counted from then on."""
    beats = Beats(give_up=False)
    beats.clock.advance(30)
    beats.clock.advance(30)
    assert (beats.pings, beats.expired) == (["1"], 1)
    beats.clock.advance(29)
    assert beats.pings == ["1"]
    beats.clock.advance(1)
    assert beats.pings == ["1", "2"]


def test_stop() -> None:
    """A stopped heartbeat leaves no timer and does nothing more."""
    beats = Beats()
    beats.clock.advance(30)
    beats.heartbeat.stop()
    assert beats.clock.getDelayedCalls() == []
    beats.clock.advance(100)
    assert (beats.pings, beats.expired) == (["1"], 0)


# The front end, on a StringTransport -------------------------------------------


def make_server(clock: Clock, **settings: Any) -> ChatFactory:
    """A server on C{clock}, holding no session, checking passwords at once."""
    settings.setdefault("resume_grace", 0)
    return ChatFactory(Settings(**settings), clock=clock, run_in_thread=run_at_once)


@pytest.fixture
def server(clock: Clock) -> ChatFactory:
    """A server with default settings (no resume) on the fake clock."""
    return make_server(clock)


def test_hello_then_greeting(server: ChatFactory) -> None:
    """A frame client gets the HELLO first, then the greeting as one notice."""
    user = FakeFrames(server)
    server.flusher.flush()
    data = user.transport.value()
    assert data.startswith(encode_hello(__version__, 65536, 30))
    assert user.frames()[1:] == [
        (
            FrameType.EVENT,
            {
                "type": "notice",
                "text": "Welcome to chatservice.\nChoose a nickname: send it "
                'as the text of an INPUT frame ({"text": "alice"}), or /nick NAME.',
            },
        )
    ]


def test_frames_and_lines_in_one_room(server: ChatFactory) -> None:
    """A frame user and a line user see each other's chat, each in its format."""
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    assert alice.lines() == ["*** bob has joined #lobby"]
    alice.enter("hi bob")
    assert bob.frames() == [
        (
            FrameType.EVENT,
            {"type": "chat", "room": "#lobby", "nick": "alice", "text": "hi bob"},
        )
    ]
    bob.say("hello alice")
    assert alice.lines() == ["<bob> hello alice"]
    assert bob.frames() == []  # no echo, as for lines


def test_multi_line_chat(server: ChatFactory) -> None:
    """Chat of several lines: one line each for line users, whole for frame users."""
    alice = register(server, "alice")
    carol = frame_user(server, "carol")
    bob = frame_user(server, "bob")
    alice.output()
    carol.output()
    bob.say("first\r\n\x1b[31msecond\n\n  third\n")
    assert alice.lines() == ["<bob> first", "<bob> second", "<bob> ", "<bob>   third"]
    assert carol.said() == ["chat: first\nsecond\n\n  third"]


def test_commands_through_frames(server: ChatFactory) -> None:
    """Commands work as typed; their errors come as ERROR frames with codes."""
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    bob.say("/msg alice two\nlines", "/join #rust", "/nosuch", "/msg zed hi")
    assert alice.lines() == [
        "*bob* two",
        "*bob* lines",
        "*** bob has left #lobby (joined #rust)",
    ]
    assert bob.frames() == [
        (
            FrameType.EVENT,
            {"type": "private_sent", "nick": "alice", "text": "two\nlines"},
        ),
        (FrameType.EVENT, {"type": "room", "room": "#rust", "text": ""}),
        (FrameType.EVENT, {"type": "notice", "text": "In #rust (1): bob"}),
        (
            FrameType.ERROR,
            {
                "code": "unknown_command",
                "text": "unknown command /nosuch; type /help for the list",
            },
        ),
        (
            FrameType.ERROR,
            {
                "code": "no_such_nickname",
                "text": "nobody called zed is online; try /who",
            },
        ),
    ]


def test_plugin_command(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """A plugin's command (the example dice) works through frames."""
    use_examples(monkeypatch)
    server = make_server(clock)
    from chatservice.plugins import dice  # type: ignore[attr-defined]

    monkeypatch.setattr(dice, "rng", random.Random(7))
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    bob.say("/roll 2d6", "/roll lots")
    expected = random.Random(7)
    rolls = [expected.randint(1, 6) for _ in range(2)]
    line = f"bob rolls 2d6: {' + '.join(map(str, rolls))} = {sum(rolls)}"
    assert alice.lines() == [f"*** {line}"]
    assert bob.said() == [
        f"notice: {line}",
        "!error: cannot roll 'lots': write dice as NdM, e.g. 2d6",
    ]


def test_one_line_arguments(server: ChatFactory) -> None:
    """A newline in a topic, away message or quit reason is a space: no forged lines."""
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    bob.say(
        "/topic hi\n<carol> I am carol",
        "/away gone\n*** carol has left (quit)",
        "/me waves\nagain",
    )
    alice.enter("/who")
    assert alice.output() == (
        b"*** bob set the topic of #lobby: hi <carol> I am carol\r\n"
        b"* bob waves\r\n* bob again\r\n"
        b"*** In #lobby (2): alice, bob (away: gone *** carol has left (quit))\r\n"
    )
    assert bob.said()[0] == "topic: hi <carol> I am carol"
    bob.say("/quit bye\n<carol> fake")
    bob.drop()
    assert alice.lines() == ["*** bob has left (quit: bye <carol> fake)"]


def test_filters_keep_lines(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """With a message filter, chat of several lines stays several lines."""
    use_examples(monkeypatch)
    server = make_server(clock)
    assert [f.name for f in server.filters] == ["capsfilter"]
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    bob.say("first line\nsecond line", "/me waves\nagain")
    alice.enter("one\x1b[31m line")
    assert alice.lines() == [
        "<bob> first line",
        "<bob> second line",
        "* bob waves",
        "* bob again",
    ]
    assert bob.said() == ["chat: one line"]


def test_blank_lines_cost_tokens(server: ChatFactory) -> None:
    """Blank lines of spaces around a text cost a token each, as they cost work."""
    assert clean_input("\n" * 60_000 + "x\r\n", 2048) == ("x", 1)
    assert clean_input(" \n" * 30_000 + "x", 2048) == ("x", 30_001)


def test_ping_pong(server: ChatFactory) -> None:
    """A PING gets a PONG with its token; a PONG gets nothing."""
    bob = frame_user(server, "bob")
    bob.send(encode_frame(FrameType.PING, {"token": "abc"}))
    bob.send(encode_frame(FrameType.PING))
    bob.send(encode_frame(FrameType.PONG, {"token": "1"}))
    assert bob.frames() == [
        (FrameType.PONG, {"token": "abc"}),
        (FrameType.PONG, {"token": ""}),
    ]


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\xfa\xce\x01\x02\x00\x00\x00\x02[]", "the frame body must be a JSON object"),
        (
            b"\xfa\xce\x01\x03\x00\x00\x00\x02{}",
            "a client does not send EVENT frames (type 3)",
        ),
        (
            b'\xfa\xce\x01\x02\x00\x00\x00\x0a{"text":1}',
            'an INPUT frame needs {"text": "..."}, a string',
        ),
    ],
)
def test_bad_frame_goes_on(server: ChatFactory, data: bytes, text: str) -> None:
    """A well framed but bad frame gets an ERROR; the connection goes on."""
    bob = frame_user(server, "bob")
    bob.send(data)
    bob.say("/ping x")
    assert bob.said() == [f"!bad_frame: {text}", "pong: x"]
    assert not bob.closing


def test_input_line_too_long(clock: Clock) -> None:
    """An INPUT with a line over --max-line is refused whole; others pass."""
    server = make_server(clock, max_line=10)
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    bob.say("short\n" + "x" * 11, "ten bytes!\nok")
    assert bob.said() == ["!line_too_long: line too long (max 10 bytes)"]
    assert alice.lines() == ["<bob> ten bytes!", "<bob> ok"]


def test_unsupported_version(server: ChatFactory) -> None:
    """Another version: an ERROR naming the versions, a close, a leave told."""
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    bob.send(b"\xfa\xce\x02\x02\x00\x00\x00\x02{}")
    assert bob.frames() == [
        (
            FrameType.ERROR,
            {
                "code": "unsupported_version",
                "text": "frame version 2 is not supported (only 1)",
                "versions": [1],
            },
        )
    ]
    assert bob.closing
    assert alice.lines() == ["*** bob has left (frame error: unsupported_version)"]


def test_frame_too_large(clock: Clock) -> None:
    """A body over --max-frame: an ERROR and a close, before the body comes."""
    server = make_server(clock, max_frame=100)
    bob = frame_user(server, "bob")
    bob.send(b"\xfa\xce\x01\x02\x00\x00\x00\x65")
    assert bob.said() == [
        "!frame_too_large: frame body of 101 bytes is too large (max 100)"
    ]
    assert bob.closing
    bob.drop()
    assert server.stats.closed["frame error"] == 1


def test_bad_magic_later(server: ChatFactory) -> None:
    """Bytes that are not a header after good frames: an ERROR and a close."""
    bob = frame_user(server, "bob")
    bob.send(b"hello\r\n")
    assert bob.said() == ["!bad_magic: not a chatservice frame (bad magic bytes)"]
    assert bob.closing


def test_typing_at_the_frame_port(server: ChatFactory) -> None:
    """Text first: after the HELLO and greeting, one plain line, then the close."""
    user = FakeFrames(server)
    greeting = user.output()
    user.send(b"alice\r\n")
    assert user.output() == TEXT_REFUSAL
    assert user.closing
    assert greeting.startswith(b"\xfa\xce\x01\x01")
    assert server.stats.closed["wrong protocol (not frames)"] == 0
    user.drop()
    assert server.stats.closed["wrong protocol (not frames)"] == 1


def test_binary_at_the_frame_port(server: ChatFactory) -> None:
    """Binary that is no frame (a TLS handshake) is closed without a word."""
    user = FakeFrames(server)
    user.output()
    user.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
    assert user.output() == b""
    assert user.closing


def test_frames_in_any_chunking(server: ChatFactory) -> None:
    """Frames split anywhere, and several in one read, are all acted on in order."""
    alice = register(server, "alice")
    bob = FakeFrames(server)
    alice.output()
    data = b"".join(
        encode_frame(FrameType.INPUT, {"text": text})
        for text in ["bob", "one", "two\nthree"]
    )
    for i in range(len(data)):
        bob.send(data[i : i + 1])
    assert alice.lines() == [
        "*** bob has joined #lobby",
        "<bob> one",
        "<bob> two",
        "<bob> three",
    ]


# Flood control, timeouts ----------------------------------------------------------


def test_flood_counts_lines(clock: Clock) -> None:
    """An INPUT takes a token per line: frames cannot out-talk line users."""
    server = make_server(clock, flood_rate=5, flood_burst=10)
    alice = register(server, "alice")
    bob = frame_user(server, "bob")  # the nickname took a token
    alice.output()
    bob.say("\n".join(["x"] * 9), "y\nz")
    assert len(alice.lines()) == 9
    clock.advance(0.39)
    assert alice.lines() == []
    clock.advance(0.01)
    assert alice.lines() == ["<bob> y", "<bob> z"]


def test_flood_longer_than_the_burst(clock: Clock) -> None:
    """An INPUT of more lines than the burst waits until all are paid for."""
    server = make_server(clock, flood_rate=5, flood_burst=10)
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    clock.advance(1)  # the bucket is full again
    alice.output()
    bob.say("\n".join(["x"] * 25))
    clock.pump([0.1] * 29)  # 10 at once, 10 more after 2 s, 5 after 1 s more
    assert alice.lines() == []
    clock.advance(0.1)
    assert len(alice.lines()) == 25


def test_heartbeat_timeout(clock: Clock) -> None:
    """Quiet for --heartbeat: a PING; quiet as long again: closed, leave told."""
    server = make_server(clock, heartbeat=30)
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    clock.advance(29)
    assert bob.frames() == []
    clock.advance(1)
    assert bob.frames() == [(FrameType.PING, {"token": "1"})]
    clock.advance(29.9)
    assert not bob.closing
    clock.advance(0.1)
    assert bob.said() == [
        "notice: heartbeat timeout: no answer to a PING within 30 seconds; "
        "disconnecting"
    ]
    assert bob.closing
    assert alice.lines() == ["*** bob has left (heartbeat timeout)"]
    bob.drop()
    assert server.stats.closed["heartbeat timeout"] == 1


def test_heartbeat_answered(clock: Clock) -> None:
    """A client that answers the PINGs stays, however long it is quiet."""
    server = make_server(clock, heartbeat=30)
    bob = frame_user(server, "bob")
    for _ in range(10):
        clock.advance(30)
        ((kind, body),) = bob.frames()
        assert kind == FrameType.PING
        clock.advance(5)
        bob.send(encode_frame(FrameType.PONG, body))
    assert not bob.closing


def test_stalled_in_a_frame(clock: Clock) -> None:
    """A client trickling a frame's bytes, never finishing it, is closed."""
    server = make_server(clock, heartbeat=30)
    bob = frame_user(server, "bob")
    bob.send(b"\xfa\xce\x01\x02\x00\x00\xff\xff")
    for _ in range(60):
        clock.advance(1)
        bob.send(b"x")
    assert bob.closing
    assert bob.session.close_reason == HEARTBEAT_TIMEOUT


def test_no_heartbeat(clock: Clock) -> None:
    """--heartbeat 0: no PING, no timer."""
    server = make_server(clock, heartbeat=0)
    bob = frame_user(server, "bob")
    clock.advance(3600)
    assert bob.frames() == []
    assert not bob.closing


def test_registration_timeout(server: ChatFactory, clock: Clock) -> None:
    """A frame client that chooses no nickname is closed like a line user."""
    user = FakeFrames(server)
    user.output()
    clock.advance(30)
    assert user.said() == [
        "PING {'token': '1'}",
        "notice: registration timeout: no nickname chosen within 30 seconds; "
        "disconnecting",
    ]
    assert user.closing


def test_truncated_frame_at_close(server: ChatFactory) -> None:
    """A frame cut short by the close is dropped; the user leaves as usual."""
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    alice.output()
    bob.send(encode_frame(FrameType.INPUT, {"text": "never said"})[:-3])
    bob.drop()
    assert alice.lines() == ["*** bob has left (connection lost)"]


def test_resume_over_frames(clock: Clock) -> None:
    """A frame client's dropped session is resumed from a new frame connection."""
    server = make_server(clock, resume_grace=60)
    alice = register(server, "alice")
    bob = FakeFrames(server)
    bob.say("bob")
    (token,) = [b["token"] for t, b in bob.frames() if b.get("type") == "resume_token"]
    bob.drop()
    alice.enter("are you there?")
    alice.output()
    again = FakeFrames(server)
    again.output()
    again.say(f"/resume bob {token}")
    said = again.said()
    assert said[:2] == ["resumed: ", "chat: are you there?"], said


def test_every_error_code_is_documented() -> None:
    """docs/frames.md lists every code an ERROR frame can carry."""
    doc = (Path(__file__).parent.parent / "docs" / "frames.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)` +\|", doc, re.M))
    errors, codes = [ChatError], set()
    while errors:
        error = errors.pop()
        codes.add(error.code)
        errors.extend(error.__subclasses__())
    codes |= {v for k, v in vars(Code).items() if k.isupper()}
    codes |= {"server_error", "refused"}
    assert codes <= documented, codes - documented


def test_idle_timeout_counts_inputs_not_pings(clock: Clock) -> None:
    """INPUT frames restart --idle-timeout; PINGs and PONGs do not."""
    server = make_server(clock, idle_timeout=100, heartbeat=0)
    bob = frame_user(server, "bob")
    clock.advance(90)
    bob.say("/away")
    clock.advance(90)
    bob.send(encode_frame(FrameType.PING, {"token": "t"}))
    assert not bob.closing
    clock.advance(10)
    assert bob.said()[-1] == (
        "notice: idle timeout: no input for 100 seconds; disconnecting"
    )
    assert bob.closing


def test_refused_with_an_error_frame(clock: Clock) -> None:
    """A connection over the caps gets one ERROR frame, no HELLO, and the close."""
    server = make_server(clock, max_clients=1)
    frame_user(server, "bob")
    refused = FakeFrames(server)
    ((kind, body),) = refused.frames()
    assert kind == FrameType.ERROR
    assert body["code"] == "refused"
    assert refused.closing


def test_send_queue_over_frames(clock: Clock) -> None:
    """A frame user who stops reading is closed past --max-sendq, like a line user."""
    server = make_server(clock, max_sendq=4096, flood_burst=1000)
    alice = register(server, "alice")
    bob = frame_user(server, "bob")
    bob.stop_reading()
    for i in range(100):
        alice.enter(f"line {i} " + "x" * 100)
    clock.advance(0)
    assert bob.closing
    assert bob.session.close_reason is not None
    assert str(bob.session.close_reason) == "send queue exceeded"


def test_half_close_acts_then_closes(server: ChatFactory) -> None:
    """A client that sends its frames and shuts its side is heard, then closed."""
    alice = register(server, "alice")
    bob = FakeFrames(server)
    alice.output()
    bob.say("bob", "bye all", "/quit done")
    bob.protocol.readConnectionLost()
    assert alice.lines() == [
        "*** bob has joined #lobby",
        "<bob> bye all",
        "*** bob has left (quit: done)",
    ]
    assert bob.closing


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=200),
            st.sampled_from(
                [
                    encode_frame(FrameType.INPUT, {"text": "hi\nthere"}),
                    encode_frame(FrameType.INPUT, {"text": "/who"}),
                    encode_frame(FrameType.PING, {"token": "x"}),
                    b"\xfa\xce\x01\x02\x00\x00\x00\x05[1,2]",
                    b"\xfa\xce\x01\x02\x00\x01\x00\x00",
                    b"\xfa\xce\x01",
                ]
            ),
        ),
        max_size=12,
    )
)
def test_any_bytes_after_registering(chunks: list[bytes]) -> None:
    """Whatever a registered frame client sends, the server only answers or closes.

    Nothing raises, and the decoder never keeps more than one frame's worth
    (a header and --max-frame) beyond the read it was just given.
    """
    server = make_server(Clock(), flood_burst=10**6, max_frame=1024)
    bob = frame_user(server, "bob")
    for chunk in chunks:
        bob.send(chunk)
        assert bob.protocol._decoder.buffered <= 8 + 1024
    bob.output()
    bob.drop()


def test_frames_sent_are_counted_as_lines(server: ChatFactory) -> None:
    """The lines-sent metric counts a frame client's frames, not its 0x0A bytes."""
    user = frame_user(server, "bob")
    before = server.stats.lines_out
    user.protocol.deliver(events.notice("one\ntwo\n\n\n\n\n\n\n\n\n"))
    user.protocol.deliver(events.chat("alice", "hi", "#lobby"))
    server.flusher.flush()
    assert server.stats.lines_out - before == 2
