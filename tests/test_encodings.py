"""Property tests (hypothesis): the per-broadcast encoders write what they wrote.

L{chatservice.events.iso_time}, the frame format's L{encode_event}, the
WebSocket's L{ws_frame} and IRC's L{ircformat.shared} (with
L{ircformat.text_message} and L{ircformat.action_message}) were made faster
(issue 19); each is compared here with its earlier implementation, copied
below as the reference, over arbitrary events: every kind, unicode,
control characters, quotes, backslashes, lone surrogates, times near a
second's end, negative and far away, scrollback's history mark.  Either
both give the same bytes, or both raise the same type of exception.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from autobahn.websocket.protocol import PreparedMessage
from hypothesis import example, given, settings
from hypothesis import strategies as st

from chatservice.events import KINDS, Event, _made, iso_time
from chatservice.frontends import ircformat
from chatservice.frontends.frameformat import HEADER, MAGIC, VERSION, encode_event
from chatservice.frontends.web import ws_frame

PROPERTY = settings(max_examples=400, deadline=None)

# The reference: the encoders as they were (main at 5e12478) ---------------------


def old_iso_time(when: float) -> str:
    moment = datetime.fromtimestamp(when, UTC)
    return moment.isoformat(timespec="milliseconds")[:-6] + "Z"


def old_as_dict(event: Event) -> dict[str, Any]:
    out: dict[str, Any] = {"type": event.kind, "time": old_iso_time(event.time)}
    for name in KINDS[event.kind]:
        value = getattr(event, name)
        out[name] = "" if value is None and name != "count" else value
    if event.history:
        out["history"] = True
    return out


_OLD_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def old_encode_frame(kind: int, body: dict[str, Any]) -> bytes:
    text = _OLD_JSON.encode(body)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        data = json.dumps(body, separators=(",", ":")).encode("ascii")
    return HEADER.pack(MAGIC, VERSION, kind, len(data)) + data


def old_encode_event(event: Event) -> bytes:
    if event.kind == "error":
        return old_encode_frame(4, {"code": event.code or "error", "text": event.text})
    return old_encode_frame(3, old_as_dict(event))


def old_ws_frame(event: Event) -> bytes:
    body = old_encode_event(event)[8:]
    frame = b'{"frame":"ERROR",' if event.kind == "error" else b'{"frame":"EVENT",'
    return PreparedMessage(frame + body[1:], False, False, True).payloadHybi


def old_text_message(prefix: str, command: str, target: str, text: str) -> bytes:
    head = f":{prefix} {command} {target} :"
    budget = ircformat.LINE_MAX - len(head.encode("utf-8"))
    return b"".join(
        [
            (head + chunk + "\r\n").encode("utf-8")
            for line in text.split("\n")
            for chunk in ircformat.chunks(line, budget)
        ]
    )


def old_action_message(prefix: str, target: str, text: str) -> bytes:
    head = f":{prefix} PRIVMSG {target} :\x01ACTION "
    budget = ircformat.LINE_MAX - len(head.encode("utf-8")) - 1
    return b"".join(
        [
            (head + chunk + "\x01\r\n").encode("utf-8")
            for line in text.split("\n")
            for chunk in ircformat.chunks(line, budget)
        ]
    )


def old_shared(event: Event) -> bytes:
    kind = event.kind
    nick = event.nick or ""
    room = event.room or ""
    mask = ircformat.mask
    message = ircformat.message
    if kind == "chat":
        return old_text_message(mask(nick), "PRIVMSG", room, event.text)
    if kind == "action":
        return old_action_message(mask(nick), room, event.text)
    if kind == "join":
        return message(mask(nick), "JOIN", room, trailing=False)
    if kind == "part":
        return message(mask(nick), "PART", room, event.reason or "")
    if kind == "quit":
        return message(mask(nick), "QUIT", event.reason or "")
    if kind == "nick":
        return message(mask(nick), "NICK", event.new_nick or "", trailing=False)
    if kind == "topic":
        return message(mask(nick), "TOPIC", room, event.text)
    raise ValueError(f"not an event every IRC user is sent alike: {event.kind}")


# What the encoders are given ---------------------------------------------------

#: Characters JSON, UTF-8 and IRC care about, and %-formatting.
AWKWARD = st.sampled_from(
    list('"\\/%\x00\x01\x1f\x7f\x80\t\r\n :!@#{}')
    + ["%s", "\u2028", "\ufeff"]
    + ["\ud800", "\udfff", "\U0001f600", "é", "日本", "\x01ACTION "]
)
TEXT = st.lists(
    st.one_of(AWKWARD, st.text(st.characters(exclude_categories=()), max_size=8)),
    max_size=12,
).map("".join)
#: Sometimes long: IRC cuts a line of more than 510 bytes.
LONG = st.builds(lambda piece, times: piece * times, TEXT, st.integers(0, 300))
FIELD = st.one_of(st.none(), TEXT, st.integers(-5, 10**20), st.booleans())
#: Times: any float datetime takes, and the edges of a second and a millisecond.
TIME = st.one_of(
    st.floats(-2e9, 2.5e11, allow_nan=False),
    st.builds(
        lambda second, fraction: second + fraction,
        st.integers(-100_000, 2**35),
        st.sampled_from(
            [
                0.0,
                0.0005,
                0.9995,
                0.9994999,
                0.9995001,
                0.999999,
                0.9999995,
                0.99999949,
                0.9999999,
                1e-7,
                5e-7,
                0.5,
            ]
        ),
    ),
    st.builds(lambda second: -second, st.floats(0, 1e9)),
)


@st.composite
def events(draw: st.DrawFn) -> Event:
    """An event of any kind, its fields anything a plugin might put there."""
    kind = draw(st.sampled_from([*KINDS, "unknown"]))
    text = draw(st.one_of(TEXT, LONG))  # a string, always (from_dict's "")
    fields = {
        name: draw(FIELD)
        for name in ("nick", "room", "reason", "new_nick", "token", "count", "code")
    }
    # _made with a line given: an Event would make its line, and a lone
    # surrogate cannot be made a line of UTF-8.
    return _made(
        kind,
        text,
        when=draw(TIME),
        history=draw(st.booleans()),
        line=b"a line\r\n",
        **fields,
    )


def outcome(encode: Callable[..., object], *arguments: object) -> object:
    """What C{encode} gives: its result, or the type of what it raised."""
    try:
        return encode(*arguments)
    except Exception as error:  # noqa: BLE001 - the type is what is compared
        return type(error)


# The properties ------------------------------------------------------------------


@PROPERTY
@given(TIME)
@example(1733543000.9995)
@example(1733543000.9999995)
@example(1733543000.99999949)
@example(-0.0000001)
@example(-1.5)
@example(-1e-9)
@example(0.0)
@example(253402300799.9999)
@example(253402300800.0)
@example(1e20)
@example(float("inf"))
@example(float("nan"))
def test_iso_time(when: float) -> None:
    """iso_time writes what datetime's isoformat wrote, whatever came before."""
    before = outcome(iso_time, when)  # whatever second iso_time last kept
    assert before == outcome(old_iso_time, when)
    assert outcome(iso_time, when) == before  # and with its own second kept
    assert outcome(iso_time, int(when) if abs(when) < 1e18 else when) == outcome(
        old_iso_time, int(when) if abs(when) < 1e18 else when
    )


@PROPERTY
@given(st.lists(TIME, min_size=2, max_size=6))
def test_iso_time_in_turn(times: list[float]) -> None:
    """Times one after another, in one second or not, each as isoformat wrote it."""
    for when in times:
        assert outcome(iso_time, when) == outcome(old_iso_time, when)


@PROPERTY
@given(events())
def test_encode_event(event: Event) -> None:
    """A frame user is sent the bytes encode_frame(as_dict()) made."""
    assert outcome(encode_event, event) == outcome(old_encode_event, event)


@PROPERTY
@given(events())
def test_ws_frame(event: Event) -> None:
    """A web user is sent the WebSocket frame it was sent before."""
    assert outcome(ws_frame, event) == outcome(old_ws_frame, event)


def _said(kind: str, text: str) -> Event:
    """A chat line or action by C{n} in C{#r}: 29 or 38 bytes besides C{text}."""
    return _made(kind, text, "n", "#r", when=0.0, line=b"a line\r\n")


@PROPERTY
@given(events())
@example(_said("chat", "x" * 481))
@example(_said("chat", "x" * 482))
@example(_said("chat", "x" * 480 + "é"))
@example(_said("action", "x" * 472))
@example(_said("action", "x" * 473))
def test_irc_shared(event: Event) -> None:
    """An IRC user is sent the lines it was sent before, of every shared kind."""
    assert outcome(ircformat.shared, event) == outcome(old_shared, event)


@PROPERTY
@given(TEXT, TEXT, st.one_of(TEXT, LONG))
# ":n!n@chatservice PRIVMSG #r :" is 29 bytes, with "\x01ACTION " and the
# closing "\x01" 38: these texts fill a line of 510 bytes, or are one
# byte (or one half of a character) over.
@example("n!n@chatservice", "#r", "x" * 481)
@example("n!n@chatservice", "#r", "x" * 482)
@example("n!n@chatservice", "#r", "x" * 480 + "é")
@example("n!n@chatservice", "#r", "x" * 472)
@example("n!n@chatservice", "#r", "x" * 473)
@example("n!n@chatservice", "#r", "x" * 471 + "é")
@example("x" * 600, "#r", "")
def test_text_and_action_messages(prefix: str, target: str, text: str) -> None:
    """PRIVMSG, NOTICE and ACTION lines are cut where they were, the same bytes."""
    for command in ("PRIVMSG", "NOTICE"):
        assert outcome(ircformat.text_message, prefix, command, target, text) == (
            outcome(old_text_message, prefix, command, target, text)
        )
    assert outcome(ircformat.action_message, prefix, target, text) == outcome(
        old_action_message, prefix, target, text
    )


def test_the_reference_can_tell() -> None:
    """The comparison fails for bytes that differ (a millisecond rounded up)."""
    when = 1733543000.9996
    assert iso_time(when).endswith(".999Z")
    assert encode_event(Event("join", nick="a", room="#r", when=when)) != (
        old_encode_event(Event("join", nick="a", room="#r", when=when + 0.001))
    )
