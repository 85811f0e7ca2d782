"""Tests of the frame format: the decoder in every chunking, errors, encoding."""

import json
import re
import struct
from pathlib import Path
from time import perf_counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chatservice import events
from chatservice.frontends.frameformat import (
    HEADER_SIZE,
    MAGIC,
    BadFrame,
    BadMagic,
    ClientFrame,
    Frame,
    FrameDecoder,
    FrameError,
    FrameTooLarge,
    FrameType,
    UnsupportedVersion,
    decode_body,
    encode_error,
    encode_event,
    encode_frame,
    encode_hello,
    looks_like_text,
    parse_client_frame,
)

PROPERTY = settings(max_examples=300, deadline=None)

INPUT = encode_frame(FrameType.INPUT, {"text": "/join #x"})
PING = encode_frame(FrameType.PING, {"token": "t1"})
#: Two frames back to back: every split point of this is tried.
STREAM = INPUT + PING


def header(version: int = 1, kind: int = 2, length: int = 0) -> bytes:
    """A frame header with these fields and the right magic."""
    return struct.pack("!2sBBI", MAGIC, version, kind, length)


def drain(decoder: FrameDecoder) -> list[Frame]:
    """Every complete frame the decoder holds, in order."""
    return list(decoder)


def decode_chunks(chunks: list[bytes], max_frame: int = 65536) -> list[Frame]:
    """The frames of C{chunks} fed one after the other, taken after each."""
    decoder = FrameDecoder(max_frame)
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        frames.extend(drain(decoder))
    return frames


EXPECTED = [
    Frame(1, FrameType.INPUT, b'{"text":"/join #x"}'),
    Frame(1, FrameType.PING, b'{"token":"t1"}'),
]


# Encoding ------------------------------------------------------------------


def test_input_frame_bytes() -> None:
    """An INPUT frame is the magic, version 1, type 2, the length, the JSON."""
    assert encode_frame(FrameType.INPUT, {"text": "hello bob"}) == (
        b'\xfa\xce\x01\x02\x00\x00\x00\x14{"text":"hello bob"}'
    )


def test_hello_frame() -> None:
    """The HELLO names the server, its versions, the frame limit, the heartbeat."""
    frame = encode_hello("1.2.3", 4096, 30)
    assert frame[:8] == b"\xfa\xce\x01\x01" + struct.pack("!I", len(frame) - 8)
    assert json.loads(frame[8:]) == {
        "server": "chatservice",
        "version": "1.2.3",
        "versions": [1],
        "max_frame": 4096,
        "heartbeat": 30,
    }


def test_text_is_utf8_not_escaped() -> None:
    """Non-ASCII text is sent as UTF-8, not as JSON escapes."""
    frame = encode_frame(FrameType.EVENT, {"text": "héllo ☃"})
    assert "héllo ☃".encode() in frame


def test_lone_surrogate_is_escaped() -> None:
    """A lone surrogate (no UTF-8 for it) is sent as a JSON escape."""
    frame = encode_frame(FrameType.EVENT, {"text": "a\ud800b"})
    assert frame[8:] == b'{"text":"a\\ud800b"}'
    assert json.loads(frame[8:]) == {"text": "a\ud800b"}


def test_event_frame() -> None:
    """An event becomes an EVENT frame holding its as_dict()."""
    event = events.chat("alice", "one\ntwo", "#lobby")
    frame = encode_event(event)
    assert frame[3] == FrameType.EVENT
    assert json.loads(frame[8:]) == event.as_dict()
    assert json.loads(frame[8:])["text"] == "one\ntwo"


def test_error_event_is_error_frame() -> None:
    """An error event becomes an ERROR frame with its code and text."""
    frame = encode_event(events.error("no such room", code="no_such_room"))
    assert frame[3] == FrameType.ERROR
    assert json.loads(frame[8:]) == {"code": "no_such_room", "text": "no such room"}


def test_event_encoded_once() -> None:
    """Encoding an event twice with Event.encoded gives the very same bytes."""
    event = events.notice("hi")
    assert event.encoded(encode_event) is event.encoded(encode_event)


def test_error_frame_fields() -> None:
    """encode_error puts extra fields beside the code and the text."""
    frame = encode_error("unsupported_version", "only 1", versions=[1])
    assert json.loads(frame[8:]) == {
        "code": "unsupported_version",
        "text": "only 1",
        "versions": [1],
    }


def doc_hex(heading: str) -> bytes:
    """The bytes of the hex dump under C{heading} in docs/frames.md."""
    doc = (Path(__file__).parent.parent / "docs" / "frames.md").read_text()
    block = re.search(re.escape(heading) + r".*?```text\n(.*?)```", doc, re.S)
    assert block is not None, heading
    rows = [re.split(r"\s{3,}", row)[0] for row in block[1].splitlines()]
    return bytes.fromhex(" ".join(rows))


def test_doc_input_example() -> None:
    """The INPUT frame shown byte by byte in docs/frames.md is the real one."""
    assert doc_hex("### An INPUT frame") == encode_frame(
        FrameType.INPUT, {"text": "hello bob"}
    )


def test_doc_hello_example() -> None:
    """The HELLO frame shown byte by byte in docs/frames.md is the real one."""
    assert doc_hex("### A HELLO frame") == encode_hello("0.1.0", 65536, 30.0)


# Chunking ------------------------------------------------------------------


def test_one_read() -> None:
    """Several frames in one read all come out, in order."""
    assert decode_chunks([STREAM]) == EXPECTED


def test_one_byte_at_a_time() -> None:
    """Frames fed one byte at a time come out whole."""
    assert decode_chunks([bytes([b]) for b in STREAM]) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_every_split_point(split: int) -> None:
    """A two-frame stream split at any point gives both frames."""
    assert decode_chunks([STREAM[:split], STREAM[split:]]) == EXPECTED


@pytest.mark.parametrize("split", range(1, HEADER_SIZE))
def test_header_split(split: int) -> None:
    """A header split across reads waits for its end, keeping nothing else."""
    decoder = FrameDecoder()
    decoder.feed(INPUT[:split])
    assert decoder.next_frame() is None
    decoder.feed(INPUT[split:])
    assert decoder.next_frame() == EXPECTED[0]
    assert decoder.buffered == 0


def test_empty_body() -> None:
    """A frame with an empty body is a frame."""
    assert decode_chunks([header(kind=5)]) == [Frame(1, 5, b"")]


def test_paused_frames_wait_in_order() -> None:
    """Frames not taken yet wait, and come after in order, with later ones."""
    decoder = FrameDecoder()
    decoder.feed(STREAM + INPUT[:5])
    assert decoder.next_frame() == EXPECTED[0]
    # Paused here: the front end takes nothing for a while.
    decoder.feed(INPUT[5:])
    assert drain(decoder) == [EXPECTED[1], EXPECTED[0]]
    assert decoder.buffered == 0
    assert decoder.frames == 3


def test_body_of_max_frame() -> None:
    """A body of exactly max_frame bytes is accepted."""
    body = b"x" * 100
    assert decode_chunks([header(length=100) + body], max_frame=100) == [
        Frame(1, 2, body)
    ]


def test_one_byte_reads_are_linear() -> None:
    """A big body sent a byte at a time costs about what small frames do.

    The same bytes, a byte per read, as one 256 KiB frame and as 10-byte
    frames: a decoder that copied its buffer on every read would pay
    32 GiB of copying for the big one.
    """
    size = 256 * 1024

    def cost(data: bytes, frames: int) -> float:
        best = float("inf")
        for _ in range(3):
            decoder = FrameDecoder(max_frame=size)
            started = perf_counter()
            for i in range(len(data)):
                decoder.feed(data[i : i + 1])
                decoder.next_frame()
            best = min(best, perf_counter() - started)
            assert decoder.frames == frames
        return best

    big = header(length=size - HEADER_SIZE) + b"x" * (size - HEADER_SIZE)
    small = (header(length=2) + b"xx") * (size // 10)
    assert cost(big, 1) / cost(small, size // 10) < 2.5


# Errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [b"hello\r\n", b"h", b"/nick alice\n", b"\xff\xfb\x01", "héllo".encode()[:2]],
)
def test_typed_text(data: bytes) -> None:
    """Someone typing (telnet, netcat) is bad magic that looks like text."""
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(BadMagic) as caught:
        decoder.next_frame()
    assert caught.value.first
    assert caught.value.looks_like_text
    assert caught.value.code == "bad_magic"


@pytest.mark.parametrize(
    "data", [b"\x16\x03\x01\x02\x00", b"\x00\x00\x00\x05", b"\xfa\x00", b"\x1b[A"]
)
def test_binary_bad_magic(data: bytes) -> None:
    """Bad magic that does not look like text (TLS, binary) says so."""
    decoder = FrameDecoder()
    decoder.feed(data)
    with pytest.raises(BadMagic) as caught:
        decoder.next_frame()
    assert not caught.value.looks_like_text


def test_bad_magic_after_a_frame() -> None:
    """Bad magic after a good frame is a client out of step, not someone typing."""
    decoder = FrameDecoder()
    decoder.feed(INPUT + b"hello\r\n")
    assert decoder.next_frame() == EXPECTED[0]
    with pytest.raises(BadMagic) as caught:
        decoder.next_frame()
    assert not caught.value.first


def test_after_a_fatal_error_nothing() -> None:
    """After a fatal error the decoder keeps nothing and gives no frame."""
    decoder = FrameDecoder()
    decoder.feed(b"GET / HTTP/1.1\r\n")
    with pytest.raises(BadMagic):
        decoder.next_frame()
    decoder.feed(INPUT)
    assert decoder.next_frame() is None
    assert decoder.buffered == 0
    assert isinstance(decoder.failed, BadMagic)


@pytest.mark.parametrize("version", [0, 2, 255])
def test_bad_version(version: int) -> None:
    """Another version fails at its byte, naming the supported ones."""
    decoder = FrameDecoder()
    decoder.feed(header(version=version)[:3])
    with pytest.raises(UnsupportedVersion) as caught:
        decoder.next_frame()
    assert caught.value.code == "unsupported_version"
    assert caught.value.versions == (1,)
    assert str(caught.value) == f"frame version {version} is not supported (only 1)"


def test_oversize() -> None:
    """A body longer than max_frame fails when its header is complete."""
    decoder = FrameDecoder(max_frame=100)
    decoder.feed(header(length=101))
    with pytest.raises(FrameTooLarge) as caught:
        decoder.next_frame()
    assert caught.value.code == "frame_too_large"
    assert str(caught.value) == "frame body of 101 bytes is too large (max 100)"


def test_four_gib_header_allocates_nothing() -> None:
    """A header declaring 4 GiB fails at once; nothing more is kept after it."""
    decoder = FrameDecoder()
    decoder.feed(header(length=2**32 - 1) + b"x" * 1000)
    assert decoder.buffered == HEADER_SIZE + 1000  # only what arrived
    with pytest.raises(FrameTooLarge):
        decoder.next_frame()
    for _ in range(100):
        decoder.feed(b"x" * 10_000)
    assert decoder.buffered == 0


def test_large_declared_length_waits_without_allocating() -> None:
    """A declared length within the limit keeps only the bytes that came."""
    decoder = FrameDecoder(max_frame=2**31)
    decoder.feed(header(length=2**31) + b"abc")
    assert decoder.next_frame() is None
    assert decoder.buffered == HEADER_SIZE + 3


def test_truncated_body_at_close() -> None:
    """An unfinished frame at the end of input is dropped and counted."""
    decoder = FrameDecoder()
    decoder.feed(INPUT + PING[:-3])
    assert drain(decoder) == [EXPECTED[0]]
    assert decoder.close() == len(PING) - 3
    assert decoder.buffered == 0


def test_close_with_nothing_pending() -> None:
    """Closing between frames drops nothing."""
    decoder = FrameDecoder()
    decoder.feed(INPUT)
    drain(decoder)
    assert decoder.close() == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"hello", True),
        (b"\t/quit\r\n", True),
        ("日本語".encode(), True),
        ("日本".encode()[:4], True),  # a character cut by the read
        (b"\xff\xfd\x18", True),  # telnet negotiation
        (b"\x00\x01", False),
        (b"\xfa\xce", False),
        (b"\xc3\x28", False),  # invalid UTF-8
        (b"", False),
    ],
)
def test_looks_like_text(data: bytes, expected: bool) -> None:
    """Printable UTF-8 or a telnet command looks like text; binary does not."""
    assert looks_like_text(data) is expected


# Bodies ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "body", "expected"),
    [
        (2, b'{"text":"hi\\nthere"}', ClientFrame(FrameType.INPUT, "hi\nthere")),
        (2, b'{"text":"","extra":1}', ClientFrame(FrameType.INPUT, "")),
        (5, b'{"token":"abc"}', ClientFrame(FrameType.PING, "abc")),
        (5, b"", ClientFrame(FrameType.PING, "")),
        (6, b"{}", ClientFrame(FrameType.PONG, "")),
    ],
)
def test_client_frames(kind: int, body: bytes, expected: ClientFrame) -> None:
    """A client's INPUT, PING and PONG frames are read as their text or token."""
    assert parse_client_frame(Frame(1, kind, body)) == expected


@pytest.mark.parametrize(
    ("kind", "body", "text"),
    [
        (2, b"", "the frame has no body; it must be a JSON object"),
        (2, b'{"text":1}', 'an INPUT frame needs {"text": "..."}, a string'),
        (2, b"{}", 'an INPUT frame needs {"text": "..."}, a string'),
        (2, b'["text"]', "the frame body must be a JSON object"),
        (2, b'"hi"', "the frame body must be a JSON object"),
        (2, b"{", "the frame body is not valid JSON"),
        (2, b'{"text":"\xff"}', "the frame body is not UTF-8"),
        (2, '{"text":"hi"}'.encode("utf-16"), "the frame body is not UTF-8"),
        (2, b"[" * 100_000, "the frame body is not valid JSON"),
        (2, b'{"n":' + b"1" * 10_000 + b"}", "the frame body is not valid JSON"),
        (5, b'{"token":5}', "a PING frame's token must be a string"),
        (0, b"{}", "unknown frame type 0"),
        (9, b"{}", "unknown frame type 9"),
        (1, b"{}", "a client does not send HELLO frames (type 1)"),
        (3, b"{}", "a client does not send EVENT frames (type 3)"),
        (4, b"{}", "a client does not send ERROR frames (type 4)"),
    ],
)
def test_bad_client_frames(kind: int, body: bytes, text: str) -> None:
    """A badly made frame is a BadFrame, not fatal, saying what is wrong."""
    with pytest.raises(BadFrame) as caught:
        parse_client_frame(Frame(1, kind, body))
    assert str(caught.value) == text
    assert caught.value.code == "bad_frame"
    assert not caught.value.fatal


def test_decode_body() -> None:
    """A body is read as its JSON object."""
    assert decode_body(Frame(1, 3, '{"a":"é"}'.encode())) == {"a": "é"}


# Properties -----------------------------------------------------------------

FRAMES = st.lists(
    st.tuples(st.sampled_from([2, 5, 6]), st.text(max_size=40)), max_size=6
)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    """C{data} cut at the points C{cuts} (in any order, repeats allowed)."""
    points = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)]


@PROPERTY
@given(FRAMES, st.lists(st.integers(min_value=0), max_size=20))
def test_any_chunking_gives_the_same_frames(
    frames: list[tuple[int, str]], cuts: list[int]
) -> None:
    """Good frames, cut anywhere, come out exactly as they were made."""
    data = b"".join(encode_frame(k, {"text": t}) for k, t in frames)
    decoded = decode_chunks(split(data, cuts))
    assert [(f.type, json.loads(f.body)["text"]) for f in decoded] == frames


#: Byte streams likely to hold headers, good and bad.
STREAMS = st.lists(
    st.one_of(
        st.binary(max_size=300),
        st.builds(
            header,
            st.sampled_from([1, 1, 1, 2]),
            st.integers(0, 255),
            st.one_of(st.integers(0, 300), st.integers(0, 2**32 - 1)),
        ),
        st.just(INPUT),
        st.just(MAGIC),
    ),
    max_size=12,
).map(b"".join)


@PROPERTY
@given(STREAMS, st.lists(st.integers(min_value=0), max_size=20))
def test_any_bytes_only_typed_errors_and_bounded(data: bytes, cuts: list[int]) -> None:
    """Any bytes, cut anywhere: only FrameErrors, and never more kept than a frame.

    After the frames of a read are taken, what is kept is at most a header
    and max_frame bytes of body.
    """
    max_frame = 200
    decoder = FrameDecoder(max_frame)
    for chunk in split(data, cuts):
        decoder.feed(chunk)
        try:
            for frame in decoder:
                assert len(frame.body) <= max_frame
                try:
                    parse_client_frame(frame)
                except BadFrame:
                    pass
        except FrameError as error:
            assert error.fatal
        assert decoder.buffered <= HEADER_SIZE + max_frame
    decoder.close()
    assert decoder.buffered == 0
