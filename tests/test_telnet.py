"""Tests for telnet commands in the input (chatservice.telnet), on fakes.

What a telnet user's client gets back, and that nobody else ever sees the
commands; every test feeds its bytes in every chunking.  The real Debian
C{telnet} client is driven in C{tests/test_telnet_client.py}.
"""

from collections.abc import Iterator

import pytest

from twisted.internet.task import Clock

from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.testing import FakeConnection, register

IAC, WILL, WONT, DO, DONT = b"\xff", b"\xfb", b"\xfc", b"\xfd", b"\xfe"
SB, SE, IP, AYT, NOP = b"\xfa", b"\xf0", b"\xf4", b"\xf6", b"\xf1"
#: RFC 1184's EOF, SUSP and ABORT: telnet's C{send eof}, C{susp}, C{abort}.
EOF, SUSP, ABORT = b"\xec", b"\xed", b"\xee"
TIMING_MARK, ECHO, SGA, NAWS, TTYPE = b"\x06", b"\x01", b"\x03", b"\x1f", b"\x18"
#: What Linux telnet sends when the user presses Ctrl-C.
CTRL_C = IAC + IP + IAC + DO + TIMING_MARK
AYT_ANSWER = b"*** Yes, still here.\r\n"


def chunkings(data: bytes) -> Iterator[list[bytes]]:
    """C{data} in one read, byte by byte, and cut in two at every offset."""
    yield [data]
    yield [data[i : i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]


def make_factory(**settings: object) -> ChatFactory:
    """A factory on a fake clock, flood control out of the way."""
    return ChatFactory(
        Settings(flood_burst=10**6, **settings),  # type: ignore[arg-type]
        clock=Clock(),
        run_in_thread=run_at_once,
    )


def chat(data: bytes, **settings: object) -> Iterator[tuple[bytes, bytes]]:
    """For each chunking of C{data} from alice: what alice and bob get."""
    for reads in chunkings(data):
        factory = make_factory(**settings)
        alice, bob = register(factory, "alice"), register(factory, "bob")
        alice.output()
        for read in reads:
            alice.send(read)
        yield alice.output(), bob.output()


@pytest.mark.parametrize(
    ("sent", "answer"),
    [
        (CTRL_C, IAC + WONT + TIMING_MARK),
        (IAC + DO + ECHO + IAC + WILL + NAWS, IAC + WONT + ECHO + IAC + DONT + NAWS),
        (
            (IAC + DO + SGA) * 2 + (IAC + WILL + TTYPE) * 2,
            (IAC + WONT + SGA) * 2 + (IAC + DONT + TTYPE) * 2,
        ),
        (IAC + WONT + ECHO + IAC + DONT + SGA, b""),
        (CTRL_C * 3, (IAC + WONT + TIMING_MARK) * 3),
        (IAC + AYT + IAC + AYT, AYT_ANSWER * 2),
        (IAC + NOP + IAC + b"\xf9" + IAC + SE + IAC + b"\xef", b""),
        (IAC + EOF + IAC + SUSP + IAC + ABORT, b""),
    ],
    ids=[
        "ctrl-c",
        "refused",
        "refused-every-time",
        "wont-dont-unanswered",
        "every-timing-mark",
        "every-ayt",
        "others-dropped",
        "linemode-eof-susp-abort-dropped",
    ],
)
def test_answers(sent: bytes, answer: bytes) -> None:
    """Negotiation is answered as RFC 1143 says, in any chunking; others see nothing."""
    for to_alice, to_bob in chat(sent + b"hi\r\n"):
        assert (to_alice, to_bob) == (answer, b"<alice> hi\r\n")


def test_refused_again_on_a_later_line() -> None:
    """An option asked for again later is refused again: telnet waits for the answer.

    Linux telnet's second C{mode character} asks for ECHO and SGA again;
    unanswered, it would stay in character mode, where Enter sends CR NUL.
    """
    factory = make_factory()
    client = FakeConnection(factory)
    client.output()
    client.send(IAC + DO + ECHO + b"alice\r\n")
    assert client.output().startswith(IAC + WONT + ECHO + b"*** Welcome, alice!")
    client.send(IAC + DO + SGA + IAC + DO + ECHO + b"/ping\r\n")
    assert client.output() == IAC + WONT + SGA + IAC + WONT + ECHO + b"*** PONG\r\n"


def test_before_registration() -> None:
    """A telnet client's opening negotiation is answered and the nickname taken."""
    for reads in chunkings(IAC + WILL + TTYPE + IAC + DO + SGA + CTRL_C + b"alice\r\n"):
        factory = make_factory()
        client = FakeConnection(factory)
        client.output()
        for read in reads:
            client.send(read)
        assert client.output().startswith(
            IAC
            + DONT
            + TTYPE
            + IAC
            + WONT
            + SGA
            + IAC
            + WONT
            + TIMING_MARK
            + b"*** Welcome, alice! Online (1): alice\r\n"
        )


def test_answered_in_order_with_lines() -> None:
    """The timing mark is answered after the replies to the lines before it."""
    for to_alice, _ in chat(b"/ping one\r\n" + CTRL_C + b"/ping two\r\n"):
        assert to_alice == (
            b"*** PONG one\r\n" + IAC + WONT + TIMING_MARK + b"*** PONG two\r\n"
        )


def test_answered_without_a_newline() -> None:
    """Ctrl-C is answered at once, before the user types anything more."""
    factory = make_factory()
    alice = register(factory, "alice")
    alice.send(CTRL_C)
    assert alice.output() == IAC + WONT + TIMING_MARK


@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        (b"a" + IAC + IAC + b"b", "a\ufffdb"),  # the data byte 0xFF
        (b"a\xffb", "a\ufffdb"),  # nc: a stray 0xFF is data
        (b"a\xff", "a\ufffd"),  # ... at the end of the line too
        (b"a\xff\xff\xffb", "a\ufffd\ufffdb"),
        (b"a" + IAC + SB + TTYPE + b"\x00xterm" + IAC + SE + b"b", "ab"),
        (b"a" + IAC + SB + NAWS + b"\x00\x50\x00\x18" + IAC + SE + b"b", "ab"),
        (b"a" + IAC + SB + IAC + IAC + IAC + SE + b"b", "ab"),
        (b"a" + IAC + DO + b"\nb", "ab"),  # an LF as an option is no line end
        (b"a" + IAC + SB + b"x" + IAC + NOP + b"b", "ab"),  # SB never ended
    ],
)
def test_others_see_only_text(sent: bytes, seen: str) -> None:
    """What others see of a line: its text, never telnet commands."""
    for _, to_bob in chat(sent + b"\r\n"):
        assert to_bob.decode() == f"<alice> {seen}\r\n"


def test_endless_subnegotiation_bounded() -> None:
    """An unterminated subnegotiation is refused like a long line, then all is normal."""
    factory = make_factory()
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.send(b"hello " + IAC + SB + TTYPE)
    for _ in range(100):  # 6.4 MiB
        alice.send(b"z" * 65536)
        assert len(alice.protocol._buffer) <= 2
    alice.send(b"\nback to normal\r\n")
    assert alice.output() == b"!!! line too long (max 2048 bytes)\r\n"
    assert bob.output() == b"<alice> back to normal\r\n"


def test_subnegotiation_ends_at_lf() -> None:
    """A stray IAC SB from nc costs its own line only: the LF ends it."""
    for to_alice, to_bob in chat(b"a\xff\xfab\r\nnext\r\n"):
        assert (to_alice, to_bob) == (b"", b"<alice> a\r\n<alice> next\r\n")


def test_too_many_commands_refused() -> None:
    """A line of more than 64 commands is refused whole; the next one is read."""
    for to_alice, to_bob in chat(b"x" + (IAC + NOP) * 65 + b"y\r\nnext\r\n"):
        assert to_alice == b"!!! line refused: more than 64 telnet commands in it\r\n"
        assert to_bob == b"<alice> next\r\n"


def test_64_commands_allowed() -> None:
    """A line of 64 commands and text is read."""
    for to_alice, to_bob in chat(b"x" + (IAC + NOP) * 63 + IAC + AYT + b"y\r\n"):
        assert (to_alice, to_bob) == (AYT_ANSWER, b"<alice> xy\r\n")


def test_commands_count_towards_max_line() -> None:
    """Commands are part of the line's length: more than --max-line is refused."""
    line = b"x" * 8 + IAC + NOP
    for to_alice, to_bob in chat(line + b"\r\n" + line + b"y\r\n", max_line=10):
        assert to_alice == b"!!! line too long (max 10 bytes)\r\n"
        assert to_bob == b"<alice> xxxxxxxx\r\n"


def test_decoded_line_limit() -> None:
    """A line within --max-line as bytes but longer once decoded is refused."""
    factory = make_factory()
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.send(b"\xc3" * 683 + b"\r\n")  # 2,049 bytes once decoded
    alice.send(b"\xc3" * 682 + b"\r\n")  # 2,046
    assert alice.output() == (
        b"!!! line too long (max 2048 bytes once decoded: each invalid byte "
        b"becomes U+FFFD, 3 bytes)\r\n"
    )
    assert bob.output() == "<alice> {}\r\n".format("\ufffd" * 682).encode()


def test_last_line_after_half_close() -> None:
    """A last line with commands and no newline still counts at a half-close."""
    factory = make_factory()
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.send(b"bye" + IAC + NOP)
    alice.protocol.readConnectionLost()
    assert bob.output() == b"<alice> bye\r\n*** alice lost connection\r\n"


def test_throttled_line_answered_in_turn() -> None:
    """A timing mark behind lines held by flood control is answered in turn."""
    clock = Clock()
    factory = ChatFactory(
        Settings(flood_burst=1, flood_rate=1.0), clock=clock, run_in_thread=run_at_once
    )
    alice = register(factory, "alice")
    clock.advance(10)
    alice.send(b"/ping 1\r\n/ping 2\r\n" + CTRL_C + b"/ping 3\r\n")
    assert alice.output().startswith(b"*** PONG 1\r\n*** flood control")
    clock.advance(1)
    assert alice.output() == b"*** PONG 2\r\n"
    clock.advance(1)  # IAC IP: it ends a line (empty), which takes a token
    assert alice.output() == b""
    clock.advance(1)
    assert alice.output() == IAC + WONT + TIMING_MARK + b"*** PONG 3\r\n"


def test_ctrl_c_drops_the_line_under_way() -> None:
    """Ctrl-C drops what was typed before it on the line, as at a shell prompt."""
    for to_alice, to_bob in chat(b"abc" + CTRL_C + b"hi\r\n"):
        assert (to_alice, to_bob) == (IAC + WONT + TIMING_MARK, b"<alice> hi\r\n")


def test_ctrl_c_pressed_many_times() -> None:
    """Every timing mark of Ctrl-C pressed 100 times is answered, and the next line read.

    Each Ctrl-C starts a new line, so they never add up to the limit of
    commands a line may hold (past which telnet, its timing marks
    unanswered, would show nothing more).
    """
    factory = make_factory()
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.send(CTRL_C * 100)
    assert alice.output() == (IAC + WONT + TIMING_MARK) * 100
    alice.send(b"hi\r\n/ping\r\n")
    assert alice.output() == b"*** PONG\r\n"
    assert bob.output() == b"<alice> hi\r\n"


def test_answers_never_cut_the_asker_off() -> None:
    """A client behind in reading is read no further, not disconnected, by its answers."""
    factory = make_factory(max_sendq=1024)
    alice = register(factory, "alice")
    alice.stop_reading()
    alice.send((CTRL_C + b"\r\n") * 2000)  # 6,000 bytes of answers
    assert not alice.closing
    answers = b""
    for _ in range(2000):
        alice.resume_reading()
        answers += alice.output()
        if len(answers) == 6000:
            break
    assert answers == (IAC + WONT + TIMING_MARK) * 2000
