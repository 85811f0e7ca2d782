"""Rooms as a line client sees them: /join, /rooms, /who, /topic, /away."""

import random
from typing import Any

import pytest

from twisted.internet.task import Clock

from chatservice import events
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.frontends.irc import irc_front_end
from chatservice.interfaces import UserInfo
from chatservice.rooms import Room, Rooms, User, say_in
from chatservice.testing import FakeClient, FakeConnection, frame_user, register

Trio = tuple[FakeConnection, FakeConnection, FakeConnection]


@pytest.fixture
def trio(factory: ChatFactory) -> Trio:
    """Alice, Bob and Carol in the lobby, output so far discarded."""
    people = tuple(register(factory, name) for name in ["alice", "bob", "carol"])
    for person in people:
        person.output()
    return people  # type: ignore[return-value]


def test_join_moves_between_rooms(trio: Trio) -> None:
    """/join tells the old room and the new one, and shows the room."""
    alice, bob, carol = trio
    bob.enter("/join #python")
    alice.lines(), bob.lines(), carol.lines()
    alice.enter("/join #Python")
    assert alice.lines() == [
        "*** You are now in #python. No topic is set.",
        "*** In #python (2): alice, bob",
    ]
    assert bob.lines() == ["*** alice has joined #python"]
    assert carol.lines() == ["*** alice has left #lobby (joined #python)"]


def test_chat_stays_in_room(trio: Trio) -> None:
    """Chat, actions and nick changes reach only the speaker's room."""
    alice, bob, carol = trio
    alice.enter("/join #x")
    bob.enter("/join #x")
    alice.lines(), bob.lines(), carol.lines()
    alice.enter("hello", "/me waves", "/nick alicia")
    assert bob.lines() == [
        "<alice> hello",
        "* alice waves",
        "*** alice is now known as alicia",
    ]
    assert carol.lines() == []


def test_private_messages_cross_rooms(trio: Trio) -> None:
    """/msg reaches a user in another room."""
    alice, bob, _ = trio
    alice.enter("/join #x")
    alice.lines()
    alice.enter("/msg bob over here")
    assert bob.lines()[-1] == "*alice* over here"


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (
            "/join python",
            "!!! invalid room name 'python': use # and then 1 to 32 letters, digits, _ or -",
        ),
        (
            "/join #",
            "!!! invalid room name '#': use # and then 1 to 32 letters, digits, _ or -",
        ),
        (
            "/join #" + "a" * 33,
            "!!! invalid room name '#aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa': use # and then 1 to 32 letters, digits, _ or -",
        ),
        (
            "/join #a.b",
            "!!! invalid room name '#a.b': use # and then 1 to 32 letters, digits, _ or -",
        ),
        ("/join #LOBBY", "!!! you are already in #lobby"),
        ("/join", "!!! usage: /join #ROOM"),
        ("/who #nowhere", "!!! there is no room #nowhere; try /rooms"),
    ],
)
def test_room_errors(trio: Trio, line: str, error: str) -> None:
    """A bad room name or a pointless join says why."""
    alice, bob, _ = trio
    alice.enter(line)
    assert alice.lines() == [error]
    assert bob.lines() == []


def test_rooms_listing(trio: Trio) -> None:
    """/rooms lists every room with its member count and topic."""
    alice, bob, _ = trio
    bob.enter("/join #b", "/topic all about bees")
    alice.lines()
    alice.enter("/rooms")
    assert alice.lines() == [
        "*** Rooms (2):",
        "*** #b (1): all about bees",
        "*** #lobby (2)",
    ]


def test_who_and_users(trio: Trio) -> None:
    """/who lists your room, /who #room another, /users everyone."""
    alice, bob, _ = trio
    bob.enter("/join #b", "/away lunch")
    alice.lines()
    alice.enter("/who", "/who #b", "/users")
    assert alice.lines() == [
        "*** In #lobby (2): alice, carol",
        "*** In #b (1): bob (away: lunch)",
        "*** Online (3): alice, bob (away), carol",
    ]


def test_room_disappears_when_empty(trio: Trio) -> None:
    """A room other than #lobby goes when its last member leaves."""
    alice, _, _ = trio
    alice.enter("/join #tmp", "/topic temporary", "/join #lobby", "/rooms")
    assert alice.lines()[-2:] == ["*** Rooms (1):", "*** #lobby (3)"]


def test_topic(trio: Trio) -> None:
    """/topic shows the topic; /topic TEXT sets it and tells the room."""
    alice, bob, _ = trio
    alice.enter("/topic")
    assert alice.lines() == ["*** #lobby has no topic; set one with /topic TEXT"]
    alice.enter("/topic Be \x1b[31mnice")
    assert (
        alice.lines() == bob.lines() == ["*** alice set the topic of #lobby: Be nice"]
    )
    bob.enter("/topic")
    assert bob.lines() == ["*** Topic of #lobby: Be nice"]
    bob.enter("/join #x")
    bob.lines()
    bob.enter("/join #lobby")
    assert bob.lines()[0] == "*** You are now in #lobby. Topic: Be nice"


def test_away(trio: Trio) -> None:
    """/away TEXT marks you away; /msg senders are told; /away clears it."""
    alice, bob, _ = trio
    bob.enter("/away gone fishing")
    assert bob.lines() == ["*** You are marked as away: gone fishing"]
    alice.enter("/msg bob hi")
    assert alice.lines() == ["-> *bob* hi", "*** bob is away: gone fishing"]
    bob.enter("/away")
    assert bob.lines()[-1] == "*** You are no longer marked as away."
    alice.enter("/msg bob back?")
    assert alice.lines() == ["-> *bob* back?"]


def test_scrollback_on_join(clock: Clock) -> None:
    """Joining shows the room's last lines, stamped in UTC and framed."""
    factory = ChatFactory(Settings(history=2, idle_timeout=10**6), clock=clock)
    alice = register(factory, "alice")
    alice.enter("/join #x")
    clock.advance(3600 * 13 + 60 * 7)  # 13:07 UTC on day one
    alice.enter("one", "/me two", "three", "/nick al")
    bob = register(factory, "bob")
    bob.enter("/join #x")
    assert bob.lines() == [
        "*** You are now in #x. No topic is set.",
        "*** In #x (2): al, bob",
        "*** Scrollback of #x, 2 lines, times in UTC:",
        "[13:07] * alice two",
        "[13:07] <alice> three",
        "*** End of scrollback of #x.",
    ]


def test_scrollback_of_lobby_on_registration(factory: ChatFactory) -> None:
    """Registering shows the lobby's scrollback after the welcome."""
    alice = register(factory, "alice")
    alice.enter("hi all")
    bob = FakeConnection(factory)
    bob.output()
    bob.enter("bob")
    assert bob.lines()[2:-1] == [
        "*** Scrollback of #lobby, 1 line, times in UTC:",
        "[00:00] <alice> hi all",
        "*** End of scrollback of #lobby.",
    ]


def test_history_zero_disables(clock: Clock) -> None:
    """--history 0 keeps no scrollback."""
    factory = ChatFactory(Settings(history=0), clock=clock)
    alice = register(factory, "alice")
    alice.enter("hi")
    bob = FakeConnection(factory)
    bob.output()
    bob.enter("bob")
    assert not any("Scrollback" in line for line in bob.lines())


def test_motd_after_registration(tmp_path, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    """The message of the day follows the welcome, and can be re-read."""
    motd = tmp_path / "motd.txt"
    motd.write_text("Be kind.\nNo \x1b[5mblinking.\n")
    factory = ChatFactory(Settings(motd=str(motd)), clock=clock)
    factory.load_motd()
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("alice")
    assert alice.lines()[:-1] == [
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
        "*** Be kind.",
        "*** No blinking.",
    ]
    motd.write_text("New rules.\n")
    factory.load_motd()
    bob = FakeConnection(factory)
    bob.output()
    bob.enter("bob")
    assert bob.lines()[2:-1] == ["*** New rules."]


def test_welcome_counts_a_crowd(factory: ChatFactory) -> None:
    """Beyond 20 users the welcome gives the count; /users lists them all."""
    for n in range(20):
        register(factory, f"user{n:02}", host=f"192.0.2.{n}")
    alice = FakeConnection(factory)
    alice.output()
    alice.enter("alice")
    assert alice.lines()[0] == "*** Welcome, alice! Online (21): /users lists them"
    alice.enter("/users")
    (listing,) = alice.lines()
    assert listing.startswith("*** Online (21): alice, user00, user01,")


def test_big_room_is_quiet(clock: Clock) -> None:
    """Joins, parts and leaves are not announced in rooms above --announce-max."""
    factory = ChatFactory(Settings(announce_max=2), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    assert alice.lines() == ["*** bob has joined #lobby"]
    carol = register(factory, "carol")
    assert alice.lines() == bob.lines() == []
    carol.enter("hello")
    assert alice.lines() == bob.lines() == ["<carol> hello"]
    carol.enter("/join #x")  # leaves a lobby of 3: quietly
    assert alice.lines() == bob.lines() == []
    carol.output()
    bob.enter("/join #x")  # leaves a lobby of 2, joins a room of 2: told
    assert alice.lines() == ["*** bob has left #lobby (joined #x)"]
    assert carol.lines() == ["*** bob has joined #x"]


def test_user_info_follows_changes() -> None:
    """A user's info, kept between lists, shows each change of nickname, away, host."""
    user = User("alice", "10.0.0.1")
    assert user.info() == UserInfo("alice", None, "10.0.0.1")
    user.away = "lunch"
    assert user.info() == UserInfo("alice", "lunch", "10.0.0.1")
    user.nickname = "Alice"
    assert user.info().nickname == "Alice"
    user.host = "10.0.0.2"
    assert user.info().host == "10.0.0.2"
    user.away = None
    assert user.info() == UserInfo("Alice", None, "10.0.0.2")


class _OtherFrontEnd(FakeClient):
    """A client of another front end (another class of receiver)."""


def test_arrivals_are_each_told_a_line_once() -> None:
    """Members who arrive between lines each get the next line, once, by front end."""
    room = Room("#r", 0)
    first, second, other, last = (
        FakeClient(),
        FakeClient(),
        _OtherFrontEnd(),
        FakeClient(),
    )
    said = 0
    for client in (first, second, other, last):
        room.add(client)
        said += 1
        say_in(room, events.chat("alice", f"line {said}", "#r"), None)
    assert room.recipients == (first, second, other, last)
    # Grouped by front end (class), each group in the order of arrival.
    assert room.receivers == (first, second, last, other)
    assert [len(client.lines()) for client in (first, second, other, last)] == [
        4,
        3,
        2,
        1,
    ]


def test_a_member_who_left_is_told_nothing_more() -> None:
    """Members who leave between lines get no later line; the others get each once."""
    room = Room("#r", 0)
    clients = [FakeClient(), _OtherFrontEnd(), FakeClient(), _OtherFrontEnd()]
    for client in clients:
        room.add(client)
    say_in(room, events.chat("alice", "everyone", "#r"), None)
    room.discard(clients[1])
    room.discard(clients[2])
    room.discard(clients[2])  # again: nothing happens
    say_in(room, events.chat("alice", "two left", "#r"), None)
    room.add(clients[2])
    say_in(room, events.chat("alice", "one is back", "#r"), None)
    assert [client.lines() for client in clients] == [
        ["<alice> everyone", "<alice> two left", "<alice> one is back"],
        ["<alice> everyone"],
        ["<alice> everyone", "<alice> one is back"],
        ["<alice> everyone", "<alice> two left", "<alice> one is back"],
    ]
    assert room.recipients == (clients[0], clients[3], clients[2])


def test_a_member_added_again_is_told_a_line_once() -> None:
    """Adding a member twice lists it once: it gets each line once."""
    room = Room("#r", 0)
    first, other = FakeClient(), _OtherFrontEnd()
    room.add(first)
    room.add(other)
    say_in(room, events.chat("alice", "once", "#r"), None)
    assert room.recipients == (first, other)
    room.add(other)  # the last member again, of the last one's front end
    say_in(room, events.chat("alice", "twice?", "#r"), None)
    assert [client.lines() for client in (first, other)] == [
        ["<alice> once", "<alice> twice?"],
        ["<alice> once", "<alice> twice?"],
    ]
    assert room.recipients == (first, other)


def test_a_big_room_makes_its_tuples_when_a_line_needs_them() -> None:
    """Above KEPT_MOST, arrivals and departures cost no copy; a line reaches each once."""
    room = Room("#r", 0)
    clients = [FakeClient() if n % 3 else _OtherFrontEnd() for n in range(600)]
    for client in clients[:10]:
        room.add(client)
    say_in(room, events.chat("alice", "small", "#r"), None)
    assert room.recipients == tuple(clients[:10])
    for client in clients[10:]:
        room.add(client)
    # Past KEPT_MOST the tuples were dropped, not copied at each arrival.
    assert room._recipients is None and room._receivers is None
    for client in clients[500:]:
        room.discard(client)
    assert room._recipients is None
    say_in(room, events.chat("alice", "big", "#r"), None)
    assert room.recipients == tuple(clients[:500])
    for client in clients[Room.KEPT_MOST :]:
        room.discard(client)
    room.add(clients[0])  # a member already
    say_in(room, events.chat("alice", "small again", "#r"), None)
    assert [len(client.lines()) for client in clients[:3]] == [3, 3, 3]
    assert [client.lines() for client in clients[Room.KEPT_MOST : 500]] == [
        ["<alice> big"]
    ] * (500 - Room.KEPT_MOST)
    assert [client.lines() for client in clients[500:]] == [[]] * 100
    assert room.recipients == tuple(clients[: Room.KEPT_MOST])


def test_line_and_frame_users_arriving_in_turn_all_hear_a_line(
    factory: ChatFactory,
) -> None:
    """Line and frame users who arrive in turn each get each later line once."""
    speaker = register(factory, "speaker")
    line_user = register(factory, "lineuser")
    speaker.enter("one")
    frames = frame_user(factory, "frameuser")
    speaker.enter("two")
    late = register(factory, "late")
    speaker.enter("three")
    assert line_user.lines() == [
        "<speaker> one",
        "*** frameuser has joined #lobby",
        "<speaker> two",
        "*** late has joined #lobby",
        "<speaker> three",
    ]
    assert frames.said() == [
        "chat: two",
        "join: ",
        "chat: three",
    ]
    assert late.lines() == ["<speaker> three"]


def test_a_line_is_sent_in_the_order_users_connected_whatever_their_client(
    factory: ChatFactory,
) -> None:
    """In a room of line, frame and IRC users, a line goes out to them in the order they connected."""
    speaker = register(factory, "speaker")
    users: list[tuple[str, Any]] = []
    for n in range(3):
        irc_user = FakeConnection(factory, front_end=irc_front_end)
        irc_user.enter(f"NICK irc{n}", f"USER irc{n} 0 * :irc{n}", "JOIN #lobby")
        users.append((f"irc{n}", irc_user))
        users.append((f"line{n}", register(factory, f"line{n}")))
        users.append((f"frames{n}", frame_user(factory, f"frames{n}")))
    for _, user in users:
        user.output()
    sent: list[str] = []
    for name, user in users:
        user.transport.write = lambda data, name=name: sent.append(name)
    speaker.enter("hello")
    factory.flusher.flush()
    assert sent == [name for name, _ in users]


@pytest.mark.parametrize("most", [1000, 12])
def test_list_of_everyone_kept_as_made_anew(most: int) -> None:
    """The index's list of everyone, kept between lists, is the one sorted anew."""
    rooms = Rooms(history=0, announce_max=None)
    rooms.LISTED_MOST = most  # beyond it, not kept: sorted when asked for
    chooser = random.Random(19)
    clients: list[FakeClient] = []
    sizes = []
    for step in range(400):
        action = chooser.randrange(6)
        if 150 <= step < 300 and action <= 1:  # fewer again, then more
            action = 2
        if action <= 1 or not clients:
            client = FakeClient(host=f"10.0.0.{step % 7}")
            rooms.add(client, chooser.choice(["a", "B", "c"]) + f"{step}")
            clients.append(client)
        elif action == 2:
            client = clients.pop(chooser.randrange(len(clients)))
            rooms.remove(client)
        elif action == 3:
            client = chooser.choice(clients)
            rooms.rename(client, chooser.choice(["A", "b", "C"]) + f"{step}")
        elif action == 4:  # as a registry, or a cluster's hand-over, sets it
            rooms.users[chooser.choice(clients)].away = chooser.choice([None, "x"])
        else:  # resumed from another address
            old = clients.pop(chooser.randrange(len(clients)))
            clients.append(FakeClient(host=f"10.1.0.{step % 5}"))
            rooms.swap(old, clients[-1])
        made_anew = sorted(
            (user.nickname.lower(), user.nickname, user.away, user.host)
            for user in rooms.users.values()
        )
        assert [
            (info.nickname.lower(), info.nickname, info.away, info.host)
            for info in rooms.user_infos()
        ] == made_anew
        sizes.append(len(rooms.users))
    if most == 12:  # past it, back below it: kept again
        assert max(sizes[:150]) > most > min(sizes[150:300])


def test_users_sent_many_lines_in_one_flush_each_get_their_own() -> None:
    """Many lines at once to a room: each member gets exactly its own, however alike.

    Under load a flush joins a member's many lines once for every member
    sent the same (chatservice.output.OutputMixin._flush); one who joined
    partway, or was also sent a private message, still gets exactly what
    was meant for it.
    """
    factory = ChatFactory(
        Settings(flood_rate=1e9, flood_burst=10**9),
        clock=Clock(),
        run_in_thread=run_at_once,
    )
    speakers = [register(factory, f"s{n}") for n in range(2)]
    alike = [register(factory, f"alike{n}") for n in range(3)]
    private = register(factory, "private")
    for user in (*speakers, *alike, private):
        user.output()
    said = [f"line {n}" for n in range(12)]
    expected = [f"<s0> {text}" for text in said]
    for n, text in enumerate(said):
        speakers[0].enter(text)
        if n == 6:
            speakers[1].enter("/msg private psst")
            late = FakeConnection(factory)
            late.enter("late")  # no flush: its welcome waits with the rest
    for user in alike:
        assert user.lines() == [
            *expected[:7],
            "*** late has joined #lobby",
            *expected[7:],
        ]
    assert private.lines() == [
        *expected[:7],
        "*s1* psst",
        "*** late has joined #lobby",
        *expected[7:],
    ]
    assert late.lines()[-5:] == expected[7:]
