"""Tests for the reading side of the line protocol (L{chatservice.wireparse}).

Each kind of line is the round trip of its builder in L{chatservice.wire}:
C{parse(x.build()) == x}; and what the server really sends, through
L{chatservice.testing.FakeConnection}, reads back as the kind it is.
"""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from twisted.internet.task import Clock

from chatservice import wire
from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.testing import FakeConnection, register
from chatservice.wireparse import (
    Action,
    Back,
    Chat,
    Error,
    Joined,
    Left,
    Line,
    Lost,
    Notice,
    NowIn,
    Parted,
    Pong,
    Private,
    PrivateEcho,
    Renamed,
    Resumed,
    ResumeToken,
    Stamped,
    TopicSet,
    Unknown,
    Welcome,
    parse,
)

NICKS = st.from_regex(r"[A-Za-z][A-Za-z0-9_-]{0,23}", fullmatch=True)
ROOMS = st.from_regex(r"#[a-z0-9_-]{1,32}", fullmatch=True)
#: Text as the server relays it: sanitised, so no controls nor line breaks.
TEXTS = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")))
TOKENS = st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True)

#: A value of every kind but the catch-alls (L{Notice}, L{Error}, L{Unknown}),
#: whose text may happen to have a more specific form.
KNOWN = st.one_of(
    st.builds(Chat, NICKS, TEXTS),
    st.builds(Action, NICKS, TEXTS),
    st.builds(Private, NICKS, TEXTS),
    st.builds(PrivateEcho, NICKS, TEXTS),
    st.builds(Joined, NICKS, ROOMS),
    st.builds(Left, NICKS, TEXTS),
    st.builds(Parted, NICKS, ROOMS, TEXTS),
    st.builds(Lost, NICKS),
    st.builds(Back, NICKS),
    st.builds(Renamed, NICKS, NICKS),
    st.builds(TopicSet, NICKS, ROOMS, TEXTS),
    st.builds(Welcome, NICKS, TEXTS),
    st.builds(NowIn, ROOMS, TEXTS),
    st.builds(Resumed, NICKS, ROOMS, st.integers(min_value=0, max_value=10**6)),
    st.builds(ResumeToken, NICKS, TOKENS),
    st.builds(Pong, TEXTS),
)


@given(KNOWN)
def test_round_trip(line: Line) -> None:
    """Every kind of line reads back as the value it was built from."""
    assert parse(line.build()) == line


@given(KNOWN, st.floats(min_value=0, max_value=4e9))
def test_scrollback_round_trip(line: Line, when: float) -> None:
    """A line of the scrollback reads back as its stamp and the line itself."""
    built = wire.stamped(when, line.build())
    assert parse(built) == Stamped(built[1:6].decode("ascii"), line)
    assert parse(built).build() == built


@given(
    st.sampled_from([wire.notice, wire.error, lambda text: (text + "\r\n").encode()]),
    TEXTS,
)
def test_any_line_builds_back_the_same(build: object, text: str) -> None:
    """Whatever its text, a line read back builds the very same bytes again."""
    raw = build(text)  # type: ignore[operator]
    assert parse(raw).build() == raw
    assert str(parse(raw)) == raw.decode().removesuffix("\r\n")


@given(NICKS, ROOMS, TEXTS)
def test_lines_made_at_once_are_notices(nick: str, room: str, text: str) -> None:
    """A join, a departure and a welcome, made without notice(), are its lines."""
    assert wire.joined(nick, room) == wire.notice(f"{nick} has joined {room}")
    assert wire.left(nick, text) == wire.notice(f"{nick} has left ({text})")
    assert wire.welcome(nick, text) == wire.notice(f"Welcome, {nick}! {text}")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"*** Welcome to chatservice.\r\n", Notice("Welcome to chatservice.")),
        (b"!!! unknown command /x\r\n", Error("unknown command /x")),
        (b"<alice> caf\xc3\xa9 \xff\n", Chat("alice", "café \ufffd")),
        ("* bob waves", Action("bob", "waves")),
        ("-> *bob* hi", PrivateEcho("bob", "hi")),
        ("*** PONG", Pong("")),
        ("<not a nick> hi", Unknown("<not a nick> hi")),
        ("[12:00]", Unknown("[12:00]")),
        ("", Unknown("")),
    ],
)
def test_examples(raw: bytes | str, expected: Line) -> None:
    """Bytes or text, with or without the line end, invalid UTF-8 replaced."""
    assert parse(raw) == expected


def test_what_the_server_sends() -> None:
    """The server's own lines read back as their kinds, fields and all."""
    factory = ChatFactory(Settings(), clock=Clock())
    bob = register(factory, "bob")
    alice = FakeConnection(factory)
    assert [parse(line) for line in alice.lines()] == [
        Notice("Welcome to chatservice."),
        Notice("Choose a nickname: type it and press Enter (or use /nick NAME)."),
    ]
    alice.enter("alice")
    welcome, *_, token = map(parse, alice.lines())
    assert welcome == Welcome("alice", "Online (2): alice, bob")
    assert isinstance(token, ResumeToken) and token.nick == "alice"
    alice.enter("/join #tea", "/topic green", "/ping 42", "/msg bob hi")
    assert [parse(line) for line in alice.lines()] == [
        NowIn("#tea", ""),
        Notice("In #tea (1): alice"),
        TopicSet("alice", "#tea", "green"),
        Pong("42"),
        PrivateEcho("bob", "hi"),
    ]
    assert [parse(line) for line in bob.lines()] == [
        Joined("alice", "#lobby"),
        Parted("alice", "#lobby", "joined #tea"),
        Private("alice", "hi"),
    ]
    alice.drop()
    again = FakeConnection(factory)
    again.output()
    again.enter(f"/resume alice {token.token}")
    assert parse(again.lines()[0]) == Resumed("alice", "#tea", 0)
