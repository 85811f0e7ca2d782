"""Property tests (hypothesis) of framing, the sanitiser, the command parser, a metric.

Each property is checked through the public pieces a client's bytes pass:
L{chatservice.testing.FakeConnection} for whole connections, and the pure
functions of L{chatservice.text}.  Flood control is switched off (a huge
burst) so that every line read is acted on at once.
"""

import json
import re
import unicodedata
from collections.abc import Callable
from time import perf_counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from chatservice import telnet
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.frontends.frameformat import FrameDecoder, FrameType, encode_frame
from chatservice.frontends.frames import frames
from chatservice.frontends.irc import irc_front_end
from chatservice.frontends.web import web
from chatservice.testing import FakeConnection, register
from chatservice.text import clean_line, decode, sanitise
from tests.test_web import FakeWebSocket

#: Modest, so that the whole file runs in seconds.
PROPERTY = settings(max_examples=200, deadline=None)

#: Unicode's Bidi_Control characters, which reorder text, and the line and
#: paragraph separators, which some terminals break lines at.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
    "\u2028\u2029"
)


def make_factory(max_line: int = 2048) -> ChatFactory:
    """A factory on a fake clock whose flood control never applies."""
    # Password checks run at once, not in the reactor's threads: a test
    # line may be /oper.
    return ChatFactory(
        Settings(flood_burst=10**9, max_line=max_line),
        clock=Clock(),
        run_in_thread=run_at_once,
    )


# Framing -----------------------------------------------------------------

#: Pieces that make framing interesting: line ends in every form, runs of
#: them, telnet commands, invalid and partial UTF-8, escapes, commands.
SPECIAL = st.sampled_from(
    [
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\r",
        b"\r\r\n",
        b"\xff",
        b"\xff\xfb\x01",
        b"\xff\xfa\x18\x01\xff\xf0",
        b"\xc3",
        b"\xa9",
        b"\xe2\x82",
        b"\xf0\x9f\x98\x80",
        b"\x1b[31m",
        b"\x1b",
        b"\t",
        b" ",
        b"/",
        b"//",
        b"/ping ",
        b"/me ",
        b"/nick alice2 ",
        b"/join #x",
        b"/who",
        b"hello",
    ]
)
#: Telnet commands, whole and in part: negotiation (DO TIMING-MARK, DO with
#: an LF as its option), IP, AYT, subnegotiation, the escaped 0xFF, RFC
#: 1184's EOF and SUSP, and 0xFF before 0xEB (data, no command).
TELNET = st.sampled_from(
    [b"\xff\xfd\x06", b"\xff\xf4", b"\xff\xf6", b"\xff\xfa", b"\xff\xf0"]
    + [b"\xff\xfb\x01", b"\xff\xfd\x01", b"\xff\xfd\n", b"\xff\xff", b"\xff\xfd"]
    + [b"\xff\xfa\x18\x00xterm\xff\xf0", b"\xff\xfe\x03", b"\xff"]
    + [b"\xff\xec", b"\xff\xed", b"\xff\xeb"]
)
RUN = st.builds(
    lambda piece, count: piece * count,
    st.sampled_from(
        [
            b"a",
            b"\n",
            b"\r",
            b"\r\n",
            b"\xff",
            b" ",
            b"\xe9",
            b"\xff\xf1",
            b"\xff\xfd\x06",
        ]
    ),
    st.integers(min_value=1, max_value=80),
)
PIECES = st.lists(st.one_of(SPECIAL, TELNET, RUN, st.binary(max_size=24)), max_size=30)
#: The same without "/": every line is chat, or blank.
PLAIN_PIECES = st.lists(
    st.one_of(
        TELNET,
        st.sampled_from([b"\r", b"\n", b"\r\n", b"\xc3", b"\xa9", b"\t", b" ", b"x"]),
        RUN,
        st.binary(max_size=24).map(lambda b: b.replace(b"/", b"_")),
    ),
    max_size=30,
)
MAX_LINE = st.sampled_from([1, 4, 16, 2048])


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """C{data} cut at each offset in C{cuts} (taken modulo its length + 1)."""
    offsets = sorted({cut % (len(data) + 1) for cut in cuts})
    return [
        data[a:b] for a, b in zip([0, *offsets], [*offsets, len(data)], strict=True)
    ]


def run(max_line: int, reads: list[bytes]) -> tuple[bytes, bytes, bool]:
    """What a sender and a receiver see when the sender's reads are C{reads}."""
    factory = make_factory(max_line)
    # One-letter nicknames, so that they fit in the shortest max_line.
    sender, receiver = register(factory, "a"), register(factory, "b")
    sender.output()
    for data in reads:
        sender.send(data)
    return sender.output(), receiver.output(), sender.closing


@PROPERTY
@given(pieces=PIECES, cuts=st.lists(st.integers(min_value=0)), max_line=MAX_LINE)
def test_any_chunking_same_as_one_read(
    pieces: list[bytes], cuts: list[int], max_line: int
) -> None:
    """Any bytes give sender and receiver the same output in any chunking."""
    data = b"".join(pieces)
    whole = run(max_line, [data])
    assert run(max_line, pieces) == whole
    assert run(max_line, split(data, cuts)) == whole
    assert run(max_line, [data[i : i + 1] for i in range(len(data))]) == whole


def read_input(data: bytes, max_line: int) -> list[tuple[str, bytes]]:
    """The documented input rules, byte by byte: what the server reads.

    A slow and plain model of the framing and telnet rules of
    C{docs/protocol.md}, to compare the server with.  Returns, in order,
    C{("line", LINE)} for each line within the limit (less its line end),
    C{("too long", b"")} for each line refused by length, C{("too many",
    b"")} for each refused for its number of telnet commands, and
    C{("answer", BYTES)} for each telnet answer sent.
    """
    events: list[tuple[str, bytes]] = []
    line, raw, sb, discarding, commands = bytearray(), 0, False, False, 0
    i = 0
    while i < len(data):
        byte = data[i]
        if discarding:
            discarding = byte != 0x0A
            i += 1
            continue
        if byte == 0x0A:  # in a subnegotiation too: it ends there
            if line.endswith(b"\r"):
                del line[-1]
                raw -= 1
            events.append(
                ("too long", b"") if raw > max_line else ("line", bytes(line))
            )
            line, raw, sb, commands = bytearray(), 0, False, 0
            i += 1
            continue
        # The next unit: a byte of data or of a subnegotiation, or a command.
        if byte != 0xFF or raw == max_line + 1:
            size = 1  # (or more: too long either way)
        elif i + 1 == len(data):
            break  # which it is depends on the next byte, still to come
        else:
            command = data[i + 1]
            if sb and command not in (0xF0, 0xFF):
                sb = False  # IAC and a command end a subnegotiation
            size = 3 if 0xFB <= command <= 0xFE else 2 if command >= 0xEC else 1
        if raw + size > max_line + 1:
            events.append(("too long", b""))
            line, raw, sb, discarding, commands = bytearray(), 0, False, True, 0
            continue
        if i + size > len(data):
            break
        if data[i : i + size] == b"\xff\xf4":  # IP: the line is dropped
            line, raw, sb, commands = bytearray(), 0, False, 0
            i += size
            continue
        if size > 1:
            if commands == 64:
                events.append(("too many", b""))
                line, raw, sb, discarding, commands = bytearray(), 0, False, True, 0
                continue
            commands += 1
        unit = data[i : i + size]
        if sb:
            sb = unit != b"\xff\xf0"
        elif size == 1 or unit == b"\xff\xff":
            line.append(byte)
        elif unit == b"\xff\xfa":
            sb = True
        elif unit == b"\xff\xf6":
            events.append(("answer", b"*** Yes, still here.\r\n"))
        elif size == 3 and unit[1] in (0xFB, 0xFD):
            refusal = {0xFB: 0xFE, 0xFD: 0xFC}[unit[1]]  # WILL: DONT, DO: WONT
            events.append(("answer", bytes([0xFF, refusal, unit[2]])))
        raw += size
        i += size
    return events


def expected_lines(data: bytes, max_line: int) -> tuple[bytes, list[str]]:
    """What a sender and a receiver get for chat C{data}, by the rules.

    The sender gets the telnet answers and an error for each line refused:
    longer than C{max_line} bytes as sent, or once decoded; the receiver
    gets each other line that does not clean to blank.
    """
    to_sender, to_receiver = [], []
    too_long = f"!!! line too long (max {max_line} bytes)\r\n".encode()
    decoded_too_long = (
        f"!!! line too long (max {max_line} bytes once decoded: "
        "each invalid byte becomes U+FFFD, 3 bytes)\r\n"
    ).encode()
    for kind, value in read_input(data, max_line):
        if kind == "answer":
            to_sender.append(value)
        elif kind == "too many":
            to_sender.append(
                b"!!! line refused: more than 64 telnet commands in it\r\n"
            )
        elif kind == "too long":
            to_sender.append(too_long)
        elif len(clean_line(value).encode()) > max_line:
            to_sender.append(decoded_too_long)
        elif clean_line(value).strip():
            to_receiver.append(f"<a> {clean_line(value)}")
    return b"".join(to_sender), to_receiver


def as_lines(output: bytes) -> list[str]:
    """Output as lines; it must be whole CRLF-terminated UTF-8 lines."""
    text = output.decode("utf-8")
    assert text == "" or text.endswith("\r\n"), text
    return text.split("\r\n")[:-1]


@PROPERTY
@given(pieces=PLAIN_PIECES, cuts=st.lists(st.integers(min_value=0)), max_line=MAX_LINE)
def test_chat_lines_framed_by_the_rules(
    pieces: list[bytes], cuts: list[int], max_line: int
) -> None:
    """Chat bytes in any chunking give exactly the lines the framing rules say."""
    data = b"".join(pieces)
    to_sender, to_receiver, closing = run(max_line, split(data, cuts))
    assert (to_sender, as_lines(to_receiver)) == expected_lines(data, max_line)
    assert not closing


# The sanitiser -------------------------------------------------------------


def is_kept(char: str) -> bool:
    """Whether the sanitiser must keep C{char} wherever it is not in an escape."""
    return (
        char == "\t" or unicodedata.category(char) != "Cc"
    ) and char not in BIDI_CONTROLS


def assert_safe(text: str) -> None:
    """No control character but tab, and no bidi control, is in C{text}."""
    bad = [c for c in text if not is_kept(c)]
    assert not bad, (text, bad)


#: Characters kept as they are: everything but C0/C1 controls (tab is kept),
#: DEL and the bidi controls.  Surrogates are left out: decoding never makes
#: them.
KEPT = st.characters(exclude_categories=["Cs"]).filter(is_kept)

#: Complete, self-terminating things the sanitiser removes whole: controls
#: that start no sequence, bidi controls, and terminated escape sequences.
REMOVED = st.one_of(
    st.sampled_from(
        [
            chr(c)
            for c in [*range(0x00, 0x09), *range(0x0A, 0x20), *range(0x7F, 0xA0)]
            if c not in {0x1B, 0x90, 0x98, 0x9B, 0x9D, 0x9E, 0x9F}
        ]
    ),
    st.sampled_from(sorted(BIDI_CONTROLS)),
    # CSI, 7-bit and 8-bit: parameters, intermediates, a final byte.
    st.builds(
        lambda intro, params, inter, final: intro + params + inter + final,
        st.sampled_from(["\x1b[", "\x9b"]),
        st.text(alphabet="0123456789:;<=>?", max_size=8),
        st.text(alphabet=" !\"#$%&'()*+,-./", max_size=2),
        st.sampled_from("@ABCDHJKLmhlsu~"),
    ),
    # OSC, DCS, SOS, PM, APC strings, ended by BEL or ST.
    st.builds(
        lambda intro, body, end: intro + body + end,
        st.sampled_from(
            ["\x1b]", "\x1bP", "\x1bX", "\x1b^", "\x1b_", "\x90", "\x98", "\x9d"]
            + ["\x9e", "\x9f"]
        ),
        st.text(max_size=12).map(lambda t: re.sub("[\x07\x1b\x9c]", "", t)),
        st.sampled_from(["\x07", "\x1b\\", "\x9c"]),
    ),
    # Any other escape: intermediates and a final byte.
    st.builds(
        lambda inter, final: "\x1b" + inter + final,
        st.text(alphabet=" !\"#$%&'()*+,-./", max_size=2),
        st.sampled_from("0789=>@ABcDEFGHMNOZ`az{|}~"),
    ),
)


@PROPERTY
@given(text=st.text())
def test_sanitised_text_is_safe(text: str) -> None:
    """Sanitised text has no control character but tab, and no bidi control."""
    assert_safe(sanitise(text))


@PROPERTY
@given(raw=st.binary())
def test_clean_line_is_safe(raw: bytes) -> None:
    """Any input bytes clean to text without controls (but tab) or bidi controls."""
    assert_safe(clean_line(raw))


@PROPERTY
@given(text=st.text(alphabet=KEPT))
def test_kept_text_unchanged(text: str) -> None:
    """Text made only of kept characters is left exactly as it is."""
    assert sanitise(text) == text
    assert clean_line(text.encode("utf-8")) == text


@PROPERTY
@given(parts=st.lists(st.tuples(st.text(alphabet=KEPT), REMOVED)))
def test_only_controls_and_escapes_removed(parts: list[tuple[str, str]]) -> None:
    """Between removed controls and escape sequences, all other text survives."""
    text = "".join(kept + removed for kept, removed in parts)
    assert sanitise(text) == "".join(kept for kept, _ in parts)


@PROPERTY
@given(text=st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_valid_utf8_decoded_unchanged(text: str) -> None:
    """Valid UTF-8 decodes to exactly its text."""
    assert decode(text.encode("utf-8")) == text


@PROPERTY
@given(text=st.one_of(st.text(), st.lists(st.one_of(REMOVED, KEPT)).map("".join)))
def test_sanitise_idempotent(text: str) -> None:
    """Sanitising twice gives what sanitising once gave."""
    once = sanitise(text)
    assert sanitise(once) == once


@PROPERTY
@given(raw=st.binary())
def test_clean_line_idempotent(raw: bytes) -> None:
    """A cleaned line, sent again as UTF-8, cleans to itself."""
    once = clean_line(raw)
    assert clean_line(once.encode("utf-8")) == once


# The command parser ----------------------------------------------------------


#: The server's test for a first line that is an HTTP request.
HTTP_REQUEST = re.compile(rb"[A-Z]{3,10} \S+ HTTP/\d(\.\d)?\r?")


def received_lines(data: bytes, max_line: int) -> list[bytes]:
    """The whole lines in C{data}, less line ends, not refused as too long."""
    return [line for kind, line in read_input(data, max_line) if kind == "line"]


def quits(data: bytes, max_line: int, registered: bool = True) -> bool:
    """Whether any line in C{data} is a C{/quit} command (any arguments).

    A bare upper-case C{QUIT} is one too (what simple chat clients send to
    leave), with spaces around it only before registration, where a line
    is a nickname, stripped.
    """
    for line in received_lines(data, max_line):
        text = clean_line(line)
        if (text if registered else text.strip()) == "QUIT":
            return True
        if text.strip() and text[:1] == "/" and text[:2] != "//":
            if text[1:].partition(" ")[0].lower() == "quit":
                return True
    return False


def assert_well_formed(output: bytes) -> None:
    """Output is whole CRLF lines of UTF-8, safe to show, with no server error.

    Telnet refusals (C{IAC WONT x}, C{IAC DONT x}) aside.
    """
    output = re.sub(rb"\xff[\xfc\xfe][\x00-\xff]", b"", output)
    for line in as_lines(output):
        assert "\r" not in line and "\n" not in line, line
        assert_safe(line)
        assert "server error" not in line, line


def assert_still_served(connection: FakeConnection) -> None:
    """An open connection still answers; a closing one says nothing more."""
    connection.send(b"/ping still there\r\n")
    expected = [] if connection.closing else ["*** PONG still there"]
    assert connection.lines() == expected


#: Starts of lines that reach each command, its arguments and its errors.
#: (/oper is left out: it checks its password in a thread, which nothing
#: runs here.)
PREFIXES = st.sampled_from(
    ["/", "//", "/ ", "/nick ", "/NICK b", "/join ", "/join #", "/who ", "/users"]
    + ["/rooms", "/topic ", "/away ", "/me ", "/msg ", "/msg b ", "/ping ", "/quit"]
    + ["/QUIT ", "/help ", "/help /", "/kick ", "/ban ", "GET / HTTP/1.1"]
)
LINES = st.one_of(
    st.text().map(lambda t: t.encode("utf-8")),
    st.binary(),
    st.builds(lambda p, t: (p + t).encode("utf-8"), PREFIXES, st.text()),
)


@PROPERTY
@given(line=LINES)
@example(line=b"QUIT")
@example(line=b" QUIT ")
def test_any_line_from_a_registered_user(line: bytes) -> None:
    """Any line from a registered user gets well-formed answers, and only /quit ends it."""
    factory = make_factory()
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    data = line + b"\r\n"
    alice.send(data)
    assert_well_formed(alice.output())
    assert_well_formed(bob.output())
    assert alice.closing == quits(data, 2048)
    assert_still_served(alice)


def ends_unregistered(data: bytes) -> bool:
    """Whether C{data}, a new client's first read, ends its connection."""
    if data[:1] == b"\x16":  # a TLS handshake
        return True
    lines = received_lines(data, 2048)
    if lines and HTTP_REQUEST.fullmatch(lines[0]):
        return True
    return quits(data, 2048, registered=False)


@PROPERTY
@given(line=LINES)
@example(line=b"QUIT")
@example(line=b" QUIT ")
def test_any_line_from_a_new_client(line: bytes) -> None:
    """Any first line gets well-formed answers; only /quit or another protocol ends it."""
    factory = make_factory()
    client = FakeConnection(factory)
    client.output()
    data = line + b"\r\n"
    client.send(data)
    assert_well_formed(client.output())
    assert client.closing == ends_unregistered(data)
    assert_still_served(client)


# The cost of input -------------------------------------------------------------

#: Units that, repeated, made or could make input handling slow: telnet
#: subnegotiation openers (the quadratic regular expression of old), escaped
#: 0xFF, commands, stray 0xFF, escape-sequence openers, invalid UTF-8,
#: escapes between controls (ESC NUL cost 29 plain lines, one match each).
ADVERSARIAL = [
    b"\xff\xfa",
    b"\xff\xff",
    b"\xff\xf1",
    b"\xff\xfd\x01",
    b"\xff\xfd\x06",
    b"\xff\xf6",
    b"\xffa",
    b"\xff\xfa\xff",
    b"\x1b[",
    b"\x1b]",
    b"\x1b[0;",
    b"\x1b",
    b"\x1b ",
    b"\x1b\x00",
    b"\x1b\x07\xc2\x9b",
    b"a\x00",
    b"\xc2\x9b",
    b"\xc2\x9d",
    b"\xc3",
    b"\x80",
    b"\xf0\x9f",
    b"\xe2\x80\xa8",
]


def repeated(unit: bytes, size: int) -> bytes:
    """C{unit} repeated to exactly C{size} bytes."""
    return (unit * (size // len(unit) + 1))[:size]


def best_time(work: Callable[[], object], rounds: int = 7, calls: int = 10) -> float:
    """The least time C{work} took per call over some rounds.

    The least, because the machine's load only ever adds to it.
    """
    best = float("inf")
    for _ in range(rounds):
        start = perf_counter()
        for _ in range(calls):
            work()
        best = min(best, (perf_counter() - start) / calls)
    return best


def read_line(data: bytes) -> str:
    """The whole input path of one line, without limits: telnet, then cleaning."""
    reader = telnet.TelnetReader()
    reader.read(data, 0, len(data) + 1, lambda answer: None)
    return clean_line(b"".join(reader._pieces))


@pytest.mark.parametrize("unit", ADVERSARIAL, ids=repr)
def test_input_cost_linear(unit: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """Twice as much of any adversarial input costs about twice as much (not 4x)."""
    monkeypatch.setattr(telnet, "MAX_COMMANDS", 10**9)  # the parser, unbounded
    small, large = repeated(unit, 32768), repeated(unit, 65536)
    ratios = []
    for _ in range(3):  # a slow round on a busy machine is tried again
        ratio = best_time(lambda: read_line(large)) / best_time(
            lambda: read_line(small)
        )
        ratios.append(ratio)
        if ratio < 3:
            break
    assert min(ratios) < 3, ratios


@pytest.mark.parametrize("unit", ADVERSARIAL, ids=repr)
def test_adversarial_line_cost_bounded(unit: bytes) -> None:
    """A line of 2,046 adversarial bytes costs at most 30 plain lines of that size."""
    factory = make_factory()
    sender, receiver = register(factory, "a"), register(factory, "b")
    plain, adversarial = b"x" * 2046 + b"\r\n", repeated(unit, 2046) + b"\r\n"

    def cost(line: bytes) -> float:
        spent = best_time(lambda: sender.send(line), calls=20)
        sender.output(), receiver.output()
        return spent

    ratios = []
    for _ in range(3):
        ratio = cost(adversarial) / cost(plain)
        ratios.append(ratio)
        if ratio <= 30:
            break
    assert min(ratios) <= 30, ratios


# Lines sent --------------------------------------------------------------


class _User:
    """One client of a front end, of a room of every kind, for the metric."""

    def __init__(self, factory: ChatFactory, kind: str, number: int) -> None:
        self.kind = kind
        self.name = f"{kind[0]}{number}"
        host = f"10.0.{number // 200}.{number % 200 + 1}"
        self.gone = False
        if kind == "web":
            self.web = web.build_protocol(
                factory, 10_000 + number, IPv4Address("TCP", host, 1)
            )
            factory.connections[10_000 + number] = self.web.session
            websocket = FakeWebSocket()
            self.web.opened(websocket)  # type: ignore[arg-type]
            self.transport = websocket.transport
            self.say(self.name)
            return
        front_end = {"lines": None, "frames": frames, "irc": irc_front_end}
        self.connection = FakeConnection(factory, host, front_end[kind.split(",")[0]])
        self.transport = self.connection.transport
        if kind == "irc, server-time":
            self.connection.enter("CAP LS 302", "CAP REQ :server-time", "CAP END")
        if kind.startswith("irc"):
            self.connection.enter(f"NICK {self.name}", f"USER {self.name} 0 * :x")
        else:
            self.say(self.name)

    def say(self, text: str) -> None:
        """Send C{text} as this front end's client types a line (or a message)."""
        if self.kind == "web":
            message = {"frame": "INPUT", "text": text}
            self.web.received(json.dumps(message).encode(), False)
        elif self.kind == "frames":
            self.connection.send(encode_frame(FrameType.INPUT, {"text": text}))
        elif not self.kind.startswith("irc"):
            self.connection.enter(text)
        elif text == "/help":
            self.connection.enter("MOTD", "JOIN #lobby")  # its scrollback again
        elif text.startswith("/msg "):
            _, to, said = text.split(" ", 2)
            self.connection.enter(f"PRIVMSG {to} :{said}")
        elif text == "/quit":
            self.connection.enter("QUIT :bye")
        else:
            for line in text.split("\n"):
                self.connection.enter(f"PRIVMSG #lobby :{line}")

    def reading(self, reading: bool) -> None:
        """The client stops reading (the transport's buffer fills), or resumes.

        Once the connection is closing, nothing is told: the server sends
        nothing more that the client could be behind on.
        """
        valve = self.transport.producer
        if valve is not None:
            valve.resumeProducing() if reading else valve.pauseProducing()

    def drop(self) -> None:
        """The connection is lost."""
        self.gone = True
        if self.kind == "web":
            self.web.lost(Failure(ConnectionDone()))
        else:
            self.connection.drop()

    def lines_got(self) -> int:
        """What the metric counts of this client's bytes: LFs, or frames."""
        data = self.transport.value()
        if self.kind == "frames":
            decoder = FrameDecoder(max_frame=1 << 24)
            decoder.feed(data)
            count = len(list(decoder))
            assert decoder.buffered == 0
            return count
        if self.kind == "web":
            count = at = 0
            while at < len(data):  # WebSocket frames, server to client
                size, at = data[at + 1] & 0x7F, at + 2
                if size >= 126:
                    width = 2 if size == 126 else 8
                    size, at = int.from_bytes(data[at : at + width]), at + width
                at += size
                count += 1
            assert at == len(data)
            return count
        return data.count(b"\n")


#: What users do: say one line or several, a line longer than IRC's, an
#: action, a private message, /help, /quit.
SAID = st.sampled_from(
    ["hi", "one\ntwo", "a\nb\nc", "x" * 700, "/me waves", "/msg {}  hey", "/help"]
    + ["/quit", "/who"]
)
#: Each step: (what, who, said); who is taken modulo the users there are.
STEPS = st.lists(
    st.tuples(
        st.sampled_from(["say"] * 6 + ["new", "stop", "resume", "drop", "flush"]),
        st.integers(min_value=0, max_value=63),
        SAID,
    ),
    max_size=40,
)
KINDS = ("lines", "frames", "web", "irc", "irc, server-time")


@PROPERTY
@given(steps=STEPS)
@example(steps=[("say", 1, "one\ntwo"), ("say", 2, "a\nb\nc")])
@example(steps=[("stop", 0, ""), ("say", 3, "x" * 700), ("say", 1, "one\ntwo")])
@example(steps=[("stop", 3, ""), *[("say", 1, "one\ntwo")] * 20, ("flush", 0, "")])
def test_lines_sent_are_the_lines_handed_to_transports(
    steps: list[tuple[str, int, str]],
) -> None:
    """Lines sent are always the LFs line and IRC clients got, plus one a frame.

    Line, frame, web and IRC users (with server-time tags and without) in
    one room say one line or several, ask for /help, come (and are shown
    the scrollback), stop reading (and overflow) and resume, and go.
    """
    factory = ChatFactory(
        Settings(flood_burst=10**9, max_sendq=3000, max_per_ip=100),
        clock=Clock(),
        run_in_thread=run_at_once,
    )
    users = [_User(factory, kind, n) for n, kind in enumerate(KINDS * 2)]

    def check() -> None:
        factory.flusher.flush()
        for user in users:
            if user.transport.disconnecting and not user.gone:
                user.drop()  # the server closed it: it is lost
        factory.flusher.flush()
        assert factory.stats.lines_out == sum(user.lines_got() for user in users)

    for what, who, said in steps:
        if what == "new":
            users.append(_User(factory, KINDS[who % len(KINDS)], len(users)))
            continue
        if what == "flush":
            check()
            continue
        user = users[who % len(users)]
        if user.gone or user.transport.disconnecting:
            continue
        if what == "say":
            other = users[(who * 7 + 3) % len(users)]
            user.say(said.format(other.name))
        elif what in ("stop", "resume"):
            user.reading(what == "resume")
        elif what == "drop":
            user.drop()
    check()
    for user in users:
        if not user.gone:
            user.reading(True)
    users.extend(_User(factory, kind, len(users) + n) for n, kind in enumerate(KINDS))
    check()  # the newcomers were shown the scrollback
