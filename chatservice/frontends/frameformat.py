"""The frame format: a fixed header, then a UTF-8 JSON body; see docs/frames.md.

Every frame, in either direction, is an 8-byte header and a body::

    magic   2 bytes   FA CE
    version 1 byte    1
    type    1 byte    HELLO 1, INPUT 2, EVENT 3, ERROR 4, PING 5, PONG 6
    length  4 bytes   the body's length in bytes, unsigned, big-endian
    body    length bytes of UTF-8 JSON: an object

0xFA never occurs in UTF-8 text and is not telnet's IAC (0xFF), so the
first byte tells a frame client from someone typing.

This module is pure: bytes in, frames or typed errors out, and frames to
bytes.  L{FrameDecoder} is incremental (feed it bytes in any chunking, take
the complete frames when you want them, in order), never allocates for a
declared length before the bytes have arrived, and never holds more than
one frame (header and at most C{max_frame} bytes of body) beyond the read
it was just fed.

Why not C{twisted.protocols.basic.IntNStringReceiver}: its C{structFormat}
must unpack to the length alone, so a header with magic, version and type
means replacing its C{dataReceived}, which is all of it; that
C{dataReceived} also joins the whole unprocessed buffer to every read
(C{alldata = self._unprocessed + data}), quadratic for a 64 KiB body sent
a byte at a time, and keeps buffering without bound while paused.  What
this decoder keeps of it: the length is checked against the limit as soon
as the header is complete, before any of the body is kept, and a body is
only ever the bytes that arrived.
"""

import json
import struct
from dataclasses import dataclass
from enum import IntEnum
from json.encoder import encode_basestring
from typing import TYPE_CHECKING, Any

from ..events import KINDS, iso_time

if TYPE_CHECKING:
    from ..events import Event

#: The first two bytes of every frame.
MAGIC = b"\xfa\xce"
#: The version this server writes, and the versions it reads.
VERSION = 1
VERSIONS: tuple[int, ...] = (1,)
#: magic, version, type, body length.
HEADER = struct.Struct("!2sBBI")
HEADER_SIZE = HEADER.size
#: The default of C{--max-frame}: the longest body a client may send.
DEFAULT_MAX_FRAME = 65536
#: The longest body the header can declare.
MAX_BODY = 2**32 - 1

#: What someone who types at a frame port (telnet, netcat) reads before the
#: connection is closed.
TEXT_REFUSAL = (
    b"!!! this port speaks chatservice frames (see docs/frames.md); connect "
    b"to the line port to chat with telnet\r\n"
)


class FrameType(IntEnum):
    """The frame types, by their byte in the header."""

    #: Server to client, first: who the server is, versions and limits.
    HELLO = 1
    #: Client to server: what a line user would type ({"text": ...}).
    INPUT = 2
    #: Server to client: an event (chat, join, notice...).
    EVENT = 3
    #: Server to client: an error, with a stable code.
    ERROR = 4
    #: Either way: are you there? ({"token": ...}).
    PING = 5
    #: Either way: the answer to a PING, with its token.
    PONG = 6


#: The types a client may send.
CLIENT_TYPES = frozenset({FrameType.INPUT, FrameType.PING, FrameType.PONG})
#: The types whose body may be empty (meaning {}).
EMPTY_ALLOWED = frozenset({FrameType.PING, FrameType.PONG})


class Code:
    """The stable codes of ERROR frames that are about frames themselves.

    The session's own errors (a taken nickname, an unknown command) have
    codes of their own: see docs/frames.md.
    """

    #: The header does not start with FA CE (a client out of step).
    BAD_MAGIC = "bad_magic"
    #: The header names a version this server does not speak.
    UNSUPPORTED_VERSION = "unsupported_version"
    #: The header declares a body longer than C{--max-frame}.
    FRAME_TOO_LARGE = "frame_too_large"
    #: The body is not a UTF-8 JSON object of the type's shape, or the type
    #: is not one a client sends.
    BAD_FRAME = "bad_frame"
    #: A line of an INPUT frame's text is longer than C{--max-line}.
    LINE_TOO_LONG = "line_too_long"


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame as read: its header's version and type, its body."""

    version: int
    type: int
    body: bytes


class FrameError(Exception):
    """Input that is not a good frame: C{code}, and C{text} for people.

    A fatal one (all but L{BadFrame}) leaves the stream out of step: the
    connection must be closed, as a length cannot be trusted any more.
    """

    code: str = Code.BAD_FRAME
    fatal = True

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class BadMagic(FrameError):
    """The bytes where a header starts do not start with L{MAGIC}."""

    code = Code.BAD_MAGIC

    def __init__(self, first: bool, looks_like_text: bool) -> None:
        super().__init__("not a chatservice frame (bad magic bytes)")
        #: Whether this was the connection's first frame.
        self.first = first
        #: Whether the bytes looked like someone typing (see L{looks_like_text}).
        self.looks_like_text = looks_like_text


class UnsupportedVersion(FrameError):
    """The header names a version that is not in C{versions}."""

    code = Code.UNSUPPORTED_VERSION

    def __init__(self, version: int, versions: tuple[int, ...]) -> None:
        names = ", ".join(str(v) for v in versions)
        super().__init__(f"frame version {version} is not supported (only {names})")
        self.version = version
        self.versions = versions


class FrameTooLarge(FrameError):
    """The header declares a body longer than the limit."""

    code = Code.FRAME_TOO_LARGE

    def __init__(self, length: int, limit: int) -> None:
        super().__init__(f"frame body of {length} bytes is too large (max {limit})")
        self.length = length
        self.limit = limit


class BadFrame(FrameError):
    """A frame, well framed, whose type or body is wrong; the stream goes on."""

    fatal = False


def looks_like_text(data: bytes) -> bool:
    """Whether C{data}, a connection's first bytes, looks like someone typing.

    Printable UTF-8 with tabs and line ends (a multi-byte character may be
    cut at the end), or a telnet command (IAC, 0xFF) first.
    """
    sample = data[:64]
    if sample[:1] == b"\xff":
        return True
    try:
        text = sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.reason != "unexpected end of data":
            return False
        text = sample[: error.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\r\n" for c in text)


class FrameDecoder:
    """Bytes in, in any chunking; complete frames out, in order, when asked.

    L{feed} keeps the bytes; L{next_frame} returns the next complete frame,
    C{None} until one is complete, or raises a fatal L{FrameError} once,
    after which the decoder drops what it holds and ignores what it is fed.
    Whoever is not ready for frames (paused) simply does not ask; the
    bytes wait, in order.  Checks happen as soon as their bytes are there:
    the magic at the first byte, the version at the third, the length when
    the header is complete, before any of the body is kept beyond the read
    it came in.
    """

    __slots__ = ("max_frame", "versions", "frames", "_buffer", "_start", "_error")

    def __init__(
        self, max_frame: int = DEFAULT_MAX_FRAME, versions: tuple[int, ...] = VERSIONS
    ) -> None:
        #: The longest body accepted.
        self.max_frame = max_frame
        self.versions = versions
        #: How many complete frames have been returned.
        self.frames = 0
        # Received bytes, read from _start on.  Consumed bytes are cut off
        # in feed(), before appending: each byte is moved at most once, so a
        # body sent a byte at a time costs time linear in its length.
        self._buffer = bytearray()
        self._start = 0
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """How many received bytes are kept, not yet returned in a frame."""
        return len(self._buffer) - self._start

    @property
    def failed(self) -> FrameError | None:
        """The fatal error raised, if any: no more frames come after it."""
        return self._error

    def feed(self, data: bytes) -> None:
        """Keep C{data}, received after everything fed before."""
        if self._error is not None or not data:
            return
        if self._start:
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_frame(self) -> Frame | None:
        """The next complete frame, or C{None}; raises a fatal L{FrameError}."""
        if self._error is not None:
            return None
        buffer, start = self._buffer, self._start
        available = len(buffer) - start
        if available < HEADER_SIZE:
            if available:
                self._check_start(buffer, start, available)
            return None
        magic, version, kind, length = HEADER.unpack_from(buffer, start)
        if magic != MAGIC:
            self._check_start(buffer, start, available)
        if version not in self.versions:
            self._fail(UnsupportedVersion(version, self.versions))
        if length > self.max_frame:
            self._fail(FrameTooLarge(length, self.max_frame))
        end = start + HEADER_SIZE + length
        if len(buffer) < end:
            return None
        body = bytes(buffer[start + HEADER_SIZE : end])
        if end == len(buffer):
            buffer.clear()
            self._start = 0
        else:
            self._start = end
        self.frames += 1
        return Frame(version, kind, body)

    def __iter__(self) -> "FrameDecoder":
        return self

    def __next__(self) -> Frame:
        """The next complete frame; L{StopIteration} when none is complete."""
        frame = self.next_frame()
        if frame is None:
            raise StopIteration
        return frame

    def close(self) -> int:
        """The input ended: how many bytes of an unfinished frame are dropped."""
        dropped = 0 if self._error is not None else self.buffered
        self._buffer.clear()
        self._start = 0
        return dropped

    def _check_start(self, buffer: bytearray, start: int, available: int) -> None:
        """Fail on a wrong magic or version among the first header bytes."""
        size = min(available, len(MAGIC))
        if buffer[start : start + size] != MAGIC[:size]:
            first = self.frames == 0
            text = first and looks_like_text(bytes(buffer[start : start + 64]))
            self._fail(BadMagic(first, text))
        if available > len(MAGIC) and buffer[start + len(MAGIC)] not in self.versions:
            self._fail(UnsupportedVersion(buffer[start + len(MAGIC)], self.versions))

    def _fail(self, error: FrameError) -> None:
        self._error = error
        self._buffer = bytearray()
        self._start = 0
        raise error


# Encoding ------------------------------------------------------------------


#: How the server writes JSON: what C{json.dumps(body, ensure_ascii=False,
#: separators=(",", ":"))} writes, without making an encoder per call (0.7 us
#: of the 2.5 a broadcast's body took).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def encode_frame(kind: int, body: dict[str, Any] | None = None) -> bytes:
    """One frame of type C{kind} with C{body} as its JSON (no body if None)."""
    if body is None:
        data = b""
    else:
        text = _JSON.encode(body)
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: escape it, as JSON may
            data = json.dumps(body, separators=(",", ":")).encode("ascii")
    if len(data) > MAX_BODY:
        raise ValueError(f"a frame body of {len(data)} bytes does not fit")
    return HEADER.pack(MAGIC, VERSION, kind, len(data)) + data


def encode_event(event: "Event") -> bytes:
    """C{event} as a frame: an ERROR for an error, else an EVENT.

    An encoder for L{chatservice.events.Event.encoded}: a broadcast is
    encoded once for every frame user.  The body is C{encode_frame}'s JSON
    of C{event.as_dict()}, written from its kind's template (L{_TEMPLATES})
    with the strings escaped as C{_JSON} escapes them: 1.1 against 3.9 us
    a chat line (C{as_dict}'s dictionary, the encoder's walk over it).
    Values the template does not know (a field not a string, an int or
    C{None}; a lone surrogate, which UTF-8 cannot hold) take
    L{_encode_event}, the general way.
    """
    kind = event.kind
    if kind == "error":
        code = event.code or "error"
        text = event.text
        if code.__class__ is not str or text.__class__ is not str:
            return _encode_event(event)
        body = f'{{"code":{_string(code)},"text":{_string(text)}}}'
        frame = _ERROR
    else:
        template = _TEMPLATES.get(kind)
        if template is None:
            return _encode_event(event)
        form, names = template
        values = [iso_time(event.time)]
        for name in names:
            value = getattr(event, name)
            if value.__class__ is str:
                values.append(_string(value))
            elif value is None:
                values.append("null" if name == "count" else '""')
            elif value.__class__ is int:
                values.append(int.__repr__(value))
            else:
                return _encode_event(event)
        values.append(',"history":true' if event.history else "")
        body = form % tuple(values)
        frame = _EVENT
    try:
        data = body.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escaped, as encode_frame does
        return _encode_event(event)
    size = len(data)
    if size > MAX_BODY:
        raise ValueError(f"a frame body of {size} bytes does not fit")
    return HEADER.pack(MAGIC, VERSION, frame, size) + data


def _encode_event(event: "Event") -> bytes:
    """L{encode_event}, through C{as_dict} and L{encode_frame}."""
    if event.kind == "error":
        return encode_frame(
            FrameType.ERROR, {"code": event.code or "error", "text": event.text}
        )
    return encode_frame(FrameType.EVENT, event.as_dict())


#: The frame types as plain ints: C{HEADER.pack} takes an IntEnum's value
#: through C{__index__}, 0.07 us a frame.
_EVENT = int(FrameType.EVENT)
_ERROR = int(FrameType.ERROR)
#: A string as JSON, as C{_JSON} writes it (C{ensure_ascii=False}).
_string = encode_basestring
#: By event kind, its EVENT body as a %-template (the ISO time, each field
#: of L{KINDS} as JSON, the C{history} field or nothing), and the fields.
_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    kind: (
        '{"type":'
        + _string(kind).replace("%", "%%")
        + ',"time":"%s"'
        + "".join(f",{_string(name).replace('%', '%%')}:%s" for name in names)
        + "%s}",
        names,
    )
    for kind, names in KINDS.items()
}


def encode_error(code: str, text: str, **fields: Any) -> bytes:
    """An ERROR frame: C{code}, C{text} and any further C{fields}."""
    return encode_frame(FrameType.ERROR, {"code": code, "text": text, **fields})


def encode_hello(
    server_version: str, max_frame: int, heartbeat: float, **fields: Any
) -> bytes:
    """The HELLO frame a server sends first (a whole heartbeat as an integer)."""
    if heartbeat == int(heartbeat):
        heartbeat = int(heartbeat)
    return encode_frame(
        FrameType.HELLO,
        {
            "server": "chatservice",
            "version": server_version,
            "versions": list(VERSIONS),
            "max_frame": max_frame,
            "heartbeat": heartbeat,
            **fields,
        },
    )


# Reading bodies ----------------------------------------------------------------


def decode_body(frame: Frame) -> dict[str, Any]:
    """C{frame}'s body as a JSON object; raises L{BadFrame}.

    Strict UTF-8 (C{json.loads} would also guess UTF-16 or UTF-32 from
    bytes), and only an object; an empty body is C{{}} where the type
    allows it (L{EMPTY_ALLOWED}).
    """
    if not frame.body:
        if frame.type in EMPTY_ALLOWED:
            return {}
        raise BadFrame("the frame has no body; it must be a JSON object")
    try:
        text = frame.body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadFrame("the frame body is not UTF-8") from None
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # nested too deep, huge integers
        raise BadFrame("the frame body is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadFrame("the frame body must be a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """A client's frame, checked: its type and its string field."""

    type: FrameType
    #: INPUT's text, or PING's and PONG's token ("" if none was given).
    value: str


def parse_client_frame(frame: Frame) -> ClientFrame:
    """What a client's C{frame} says; raises L{BadFrame} if it says it wrong.

    INPUT needs C{{"text": string}}; PING and PONG may carry C{{"token":
    string}}.  Other fields are ignored (a later version may add some).
    """
    try:
        kind = FrameType(frame.type)
    except ValueError:
        raise BadFrame(f"unknown frame type {frame.type}") from None
    if kind not in CLIENT_TYPES:
        raise BadFrame(f"a client does not send {kind.name} frames (type {kind})")
    body = decode_body(frame)
    if kind is FrameType.INPUT:
        text = body.get("text")
        if not isinstance(text, str):
            raise BadFrame('an INPUT frame needs {"text": "..."}, a string')
        return ClientFrame(kind, text)
    token = body.get("token", "")
    if not isinstance(token, str):
        raise BadFrame(f"a {kind.name} frame's token must be a string")
    return ClientFrame(kind, token)
