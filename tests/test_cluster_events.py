"""What nodes read from each other: typed messages carrying checked chat events."""

import json
from typing import get_args

import pytest

from twisted.internet.task import Clock

from chatservice import events
from chatservice.cluster.accounts import ClusterAccounts
from chatservice.cluster.bans import ClusterBans
from chatservice.cluster.events import (
    VALUE_MAX,
    AccountChange,
    Ban,
    Handed,
    HandOver,
    Malformed,
    Message,
    ToEveryone,
    ToRooms,
    ToUser,
    Unban,
    checked,
    clean_event,
    dumped,
    fitted,
    loaded,
)
from chatservice.cluster.inbox import Inbox
from chatservice.cluster.node import Node
from chatservice.cluster.sessions import ClusterSessions
from chatservice.frontends import ircformat
from chatservice.testing import FakeClient

#: A chat line said in #a by bob, as the stream carries it.
CHAT = (
    '{"type": "chat", "time": 1796000000.25, "room": "#a", "nick": "bob", "text": "hi"}'
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ('{"o": "n1", "ho": "alice", "n": "n2"}', HandOver("alice", "n2")),
        ('{"o": "n1", "handed": "alice"}', Handed("alice")),
        (
            '{"o": "n1", "ban": ["10.0.0.0/8", null, "spam", "Op"]}',
            Ban("10.0.0.0/8", None, "spam", "Op"),
        ),
        ('{"o": "n1", "unban": "10.0.0.0/8"}', Unban("10.0.0.0/8")),
        ('{"o": "n1", "acct": ["alice", 1]}', AccountChange("alice", True)),
        ('{"o": "n1", "acct": ["alice", 0]}', AccountChange("alice", False)),
    ],
)
def test_messages_are_typed(message: str, expected: Message) -> None:
    """Each kind of message is read into its typed value, with readable fields."""
    assert checked(message) == expected


def test_messages_carry_typed_events() -> None:
    """A message for rooms, a user or everyone carries a chat event, fields and time."""
    to_rooms = checked(f'{{"o": "n1", "r": ["#a"], "ev": {CHAT}, "s": "bob", "h": 1}}')
    assert isinstance(to_rooms, ToRooms)
    assert (to_rooms.rooms, to_rooms.sender, to_rooms.said) == (["#a"], "bob", True)
    assert to_rooms.event.as_dict() == {
        "type": "chat",
        "time": "2026-11-30T00:53:20.250Z",
        "room": "#a",
        "nick": "bob",
        "text": "hi",
    }
    assert to_rooms.event.line == b"<bob> hi\r\n"
    to_user = checked(f'{{"o": "n1", "to": "alice", "ev": {CHAT}}}')
    assert isinstance(to_user, ToUser)
    assert to_user.key == "alice" and to_user.event is not None
    assert to_user.event.line == b"<bob> hi\r\n"
    everyone = checked(f'{{"o": "n1", "a": 1, "ev": {CHAT}}}')
    assert isinstance(everyone, ToEveryone) and everyone.event.time == 1796000000.25


@pytest.mark.parametrize(
    "event",
    [
        events.chat("bob", "hi\nthere", "#a"),
        events.action("bob", "waves", "#a"),
        events.private("bob", "psst"),
        events.notice("the server restarts soon"),
        events.joined("bob", "#a"),
        events.parted("bob", "#a", "bored"),
        events.left("bob", "quit: lunch"),
        events.lost("bob"),
        events.back("bob"),
        events.renamed("bob", "robert"),
        events.topic_set("bob", "#a", "cats"),
    ],
)
def test_events_read_back(event: events.Event) -> None:
    """An event a node shares reads back the same: kind, fields, time, line."""
    again = loaded(dumped(event), "test")
    assert again.as_dict() == event.as_dict()
    assert again.line == event.line
    assert abs(again.time - event.time) < 0.001


@pytest.mark.parametrize(
    "message",
    [
        ToEveryone(events.notice("the server restarts soon")),
        ToRooms(["#a", "#b"], events.chat("bob", "hi", "#a"), "bob", said=True),
    ],
)
def test_published_messages_read_back(message: ToEveryone | ToRooms) -> None:
    """What a node publishes, another reads back: the same rooms and event."""
    again = checked(json.dumps({"o": "n1", **message.fields()}))
    assert type(again) is type(message)
    assert again.event.as_dict() == message.event.as_dict()
    if isinstance(message, ToRooms):
        assert isinstance(again, ToRooms)
        assert (again.rooms, again.sender, again.said) == (
            message.rooms,
            message.sender,
            message.said,
        )


def test_bans_read_back() -> None:
    """A ban and an unban a node publishes read back as the same values."""
    for message in (Ban("10.0.0.0/8", 1e9, "spam", "Op"), Unban("10.0.0.0/8")):
        assert checked(json.dumps({"o": "n1", **message.fields()})) == message


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("x" * 10_000, "x"),
        ('"' * 10_000, '"'),  # two bytes each in JSON
        ("\\" * 10_000, "\\"),
        ("\ufffd" * 4000, "\ufffd"),
    ],
)
def test_long_texts_are_cut_to_fit(text: str, kept: str) -> None:
    """A text too long to share is cut, ending in an ellipsis, to fit VALUE_MAX."""
    value, dumped_text = fitted(events.chat("bob", text, "#a"))
    size = len(dumped_text.encode("utf-8"))
    assert VALUE_MAX - 8 <= size <= VALUE_MAX
    assert value["text"] == kept * (len(value["text"]) - 1) + "\u2026"
    assert loaded(dumped_text, "test").line.endswith("\u2026\r\n".encode())


def test_a_long_reason_is_cut_to_fit() -> None:
    """A leave's reason too long to share is cut like a text."""
    value, text = fitted(events.left("bob", "quit: " + "z" * 9000))
    assert len(text.encode("utf-8")) <= VALUE_MAX
    assert value["reason"].endswith("z\u2026")


def _chat(**changes: object) -> dict:
    value = json.loads(CHAT)
    value.update(changes)
    return {name: v for name, v in value.items() if v is not None}


@pytest.mark.parametrize(
    "message",
    [
        '{"acct": ["Alice", 1]}',
        '{"acct": ["alice", 2]}',
        '{"acct": ["alice"]}',
        '{"acct": "alice"}',
        '{"acct": ["a\\u001b[2J", 1]}',
    ],
)
def test_malformed_account_changes_are_refused(message: str) -> None:
    """An account change that is not [folded nickname, 0 or 1] is refused."""
    with pytest.raises(Malformed) as raised:
        checked(message)
    assert raised.value.kind == "account"


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("<bob> hi\r\n", "an event that is not an object"),
        (_chat(type="welcome"), "an event of no kind nodes share"),
        (_chat(type="resume_token"), "an event of no kind nodes share"),
        (_chat(type="nonsense"), "an event of no kind nodes share"),
        (_chat(type=None), "an event of no kind nodes share"),
        (_chat(reason="x"), "an event with fields its kind has not"),
        (_chat(history=True), "an event with fields its kind has not"),
        (_chat(text=None), "an event without its text"),
        (_chat(text=7), "text that is not a string of at most 7 KiB"),
        (
            _chat(text="x" * (VALUE_MAX + 1)),
            "text that is not a string of at most 7 KiB",
        ),
        (_chat(nick=["bob"]), "not a short string"),
        (_chat(nick="b" * 65), "not a short string"),
        (_chat(time="2026-12-10T07:33:20.250Z"), "not a finite number"),
        (_chat(time=True), "not a finite number"),
        (_chat(time=1e300), "an event at no time that can be shown"),
        (_chat(time=-1), "an event at no time that can be shown"),
        (_chat(type="resumed", count=True), "an event of no kind nodes share"),
    ],
)
def test_malformed_events_are_refused(value: object, why: str) -> None:
    """An event of the wrong shape, type or size is refused, saying why."""
    with pytest.raises(Malformed) as raised:
        clean_event(value, "test")
    assert raised.value.why == why


def test_every_text_field_is_sanitised() -> None:
    """Escapes and stray line breaks are taken out of every text field, not only text."""
    event = clean_event(
        {
            "type": "part",
            "time": 1796000000,
            "room": "#a\x1b[2J",
            "nick": "mal\x9b31mlory",
            "reason": "bye\r\n<alice> I owe mallory\x07",
        },
        "test",
    )
    assert event.line == b"*** mallory has left #a (bye<alice> I owe mallory)\r\n"
    chat = clean_event(_chat(text="one\x1b]0;pwned\x07\ntwo\u202e\r"), "test")
    assert chat.text == "one\ntwo"
    assert chat.line == b"<bob> one\r\n<bob> two\r\n"
    # A lone surrogate (JSON's \ud800) is not UTF-8: it would fail the line.
    odd = loaded(CHAT.replace('"hi"', '"h\\ud800i"'), "test")
    assert odd.line == "<bob> h\ufffd\ufffd\ufffdi\r\n".encode()


def test_a_topic_of_lines_is_one_line() -> None:
    """A topic from another node that kept a newline is one line for line and IRC users."""
    topic = clean_event(
        {
            "type": "topic",
            "time": 1796000000,
            "room": "#a",
            "nick": "mallory",
            "text": "hi\n<alice> I owe mallory",
        },
        "test",
    )
    assert (
        topic.line == b"*** mallory set the topic of #a: hi <alice> I owe mallory\r\n"
    )
    assert ircformat.shared(topic) == (
        b":mallory!mallory@chatservice TOPIC #a :hi <alice> I owe mallory\r\n"
    )
    assert events.now_in("#a", topic.text).line == (
        b"*** You are now in #a. Topic: hi <alice> I owe mallory\r\n"
    )


def _inbox() -> tuple[Node, Inbox]:
    node = Node("test", "n1", Clock(), 10, None, 1024)
    inbox = Inbox(node, ClusterSessions(node), ClusterBans(node), ClusterAccounts(node))
    return node, inbox


def test_every_kind_has_a_handler() -> None:
    """The inbox's table has a handler for every kind of message."""
    node, inbox = _inbox()
    notice = events.notice("x")
    samples: list[Message] = [
        HandOver("alice"),
        Handed("alice"),
        Ban("10.0.0.0/8", None, "", "Op"),
        Unban("10.0.0.0/8"),
        AccountChange("alice", True),
        ToUser("alice", event=notice),
        ToEveryone(notice),
        ToRooms(["#lobby"], notice),
    ]
    assert {type(message) for message in samples} == set(get_args(Message))
    for message in samples:
        inbox.act(message)  # nobody here: nothing happens, nothing raises


def test_an_event_for_rooms_reaches_this_nodes_members_once() -> None:
    """An event for two rooms reaches each member here once, the same object."""
    node, inbox = _inbox()
    alice, bob = FakeClient(), FakeClient()
    for client, nickname in [(alice, "alice"), (bob, "bob")]:
        node.index.add(client, nickname)
        node.index.enter(client, "#a")
    node.index.enter(alice, "#b")
    said = CHAT.replace('"bob"', '"carol"')
    inbox.received("n2", f'{{"o": "n2", "r": ["#a", "#b"], "ev": {said}, "h": 1}}')
    assert alice.received[0] is bob.received[0]
    assert alice.lines() == bob.lines() == ["<carol> hi"]
    # A line said is kept in each room's scrollback, with its time.
    (kept,) = node.index.rooms["#b"].history
    assert kept.when == 1796000000.25
    assert kept.stamped.line == b"[00:53] <carol> hi\r\n"
