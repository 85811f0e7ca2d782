"""Helpers for testing chatservice and code built on it.

- L{FakeConnection}: one client of a L{ChatFactory} over a
  C{StringTransport}, with the factory's clock, so a test can type lines,
  read exactly what the user sees, stop reading, or drop the connection.
- L{FakeClient}: a bare L{IChatClient} that records what it is given.
- L{RegistryBehaviour}: the behaviour every L{IRegistry} must have, as a
  pytest test class; subclass it with a C{make_registry} method.
- L{memory_store}: an in-memory SQLite store whose interactions run at once
  (a L{ChatFactory} made without a C{store} has one; give it one to look at
  what the server kept, or to keep it between two factories).

Why this module is longer than ~500 lines: two thirds of it is
L{RegistryBehaviour}, one contract as 35 short tests, which reads best as
one class beside the fakes it drives; and a plugin's tests import one
public module.  Split it when a second suite (another seam) joins it.
"""

import itertools
import json
import re
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface import implementer
from zope.interface.verify import verifyObject

from . import events
from .errors import NicknameInUse, NoSuchNickname
from .events import Event, not_an_event
from .factory import ChatFactory
from .frontends.frameformat import FrameDecoder, FrameType, encode_frame
from .frontends.frames import frames
from .frontends.lines import LineProtocol
from .interfaces import (
    IChatClient,
    IFrontEnd,
    IRegistry,
    ISharedBans,
    ISharedSessions,
    RoomInfo,
    UserInfo,
)
from .reasons import (
    CONNECTION_LOST,
    IDLE_TIMEOUT,
    SEND_QUEUE,
    SHUTDOWN,
    CloseReason,
)
from .shared import LocalBans, LocalSessions
from .store import memory_store

__all__ = [
    "FakeClient",
    "FakeConnection",
    "FakeFrames",
    "RegistryBehaviour",
    "frame_user",
    "memory_store",
    "register",
]

#: An event's time in a frame: ISO 8601, UTC, milliseconds.
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


class FakeConnection:
    """A client connected to C{factory} through a C{StringTransport}."""

    _ports = itertools.cycle(range(40000, 65536))

    def __init__(
        self,
        factory: ChatFactory,
        host: str = "127.0.0.1",
        front_end: IFrontEnd | None = None,
    ) -> None:
        address = IPv4Address("TCP", host, next(self._ports))
        self.transport = StringTransport(peerAddress=address)
        self.factory = factory
        # The line front end's, unless another front end is named.
        builder = factory if front_end is None else factory.front_end(front_end)
        self.protocol = builder.buildProtocol(address)
        #: The user's session (what commands and the registry see).
        self.session = getattr(self.protocol, "session", None)
        self.protocol.makeConnection(self.transport)

    def send(self, data: bytes | str) -> None:
        """Receive raw C{data} from the client, as one TCP read."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.protocol.dataReceived(data)

    def enter(self, *lines: str) -> None:
        """Receive each of C{lines}, ended by CRLF as telnet sends them."""
        for line in lines:
            self.send(line.encode("utf-8") + b"\r\n")

    def output(self) -> bytes:
        """What the server wrote since the last call, as raw bytes."""
        self.factory.flusher.flush()  # as the end of a reactor iteration does
        data = self.transport.value()
        self.transport.clear()
        return data

    def lines(self) -> list[str]:
        """What the server wrote since the last call, as lines."""
        data = self.output().decode("utf-8")
        assert data == "" or data.endswith("\r\n"), data
        return data.split("\r\n")[:-1]

    def stop_reading(self) -> None:
        """Act as a client that stopped reading: the transport buffer fills."""
        self.transport.producer.pauseProducing()

    def resume_reading(self) -> None:
        """The transport drained its buffer."""
        self.transport.producer.resumeProducing()

    def drop(self, reason: type[Exception] = ConnectionDone) -> None:
        """The connection ends, for C{reason}, as the reactor would report."""
        self.protocol.connectionLost(Failure(reason()))

    @property
    def closing(self) -> bool:
        """Whether the server closed (or started closing) the connection."""
        return bool(self.transport.disconnecting)

    @property
    def aborted(self) -> bool:
        """Whether the server aborted the connection without flushing."""
        # StringTransport.abortConnection sets "disconnected" (its docstring
        # says "aborted").
        return bool(getattr(self.transport, "disconnected", False))


def register(
    factory: ChatFactory, nickname: str, host: str = "127.0.0.1"
) -> FakeConnection:
    """Connect and register as C{nickname}; output so far is discarded."""
    connection = FakeConnection(factory, host)
    connection.enter(nickname)
    assert isinstance(connection.protocol, LineProtocol)
    assert connection.session.nickname == nickname, connection.lines()
    connection.output()
    return connection


class FakeFrames(FakeConnection):
    """A frame client (C{--frames}) connected through a C{StringTransport}."""

    def __init__(self, factory: ChatFactory, host: str = "127.0.0.1") -> None:
        super().__init__(factory, host, front_end=frames)

    def say(self, *texts: str) -> None:
        """Send an INPUT frame for each of C{texts}, each as one read."""
        for text in texts:
            self.send(encode_frame(FrameType.INPUT, {"text": text}))

    def frames(self) -> list[tuple[int, dict[str, Any]]]:
        """The frames written since the last call; an event's time checked, dropped."""
        decoder = FrameDecoder(max_frame=1 << 24)
        decoder.feed(self.output())
        found = []
        for frame in decoder:
            body = json.loads(frame.body)
            if frame.type == FrameType.EVENT:
                assert _ISO_TIME.fullmatch(body.pop("time")), body
            found.append((frame.type, body))
        assert decoder.buffered == 0
        return found

    def said(self) -> list[str]:
        """The frames since the last call, shortly: C{type: text}, C{!code: text}."""
        shown = []
        for kind, body in self.frames():
            if kind == FrameType.EVENT:
                shown.append(f"{body['type']}: {body.get('text', '')}")
            elif kind == FrameType.ERROR:
                shown.append(f"!{body['code']}: {body['text']}")
            else:
                shown.append(f"{FrameType(kind).name} {body}")
        return shown


def frame_user(
    factory: ChatFactory, nickname: str, host: str = "127.0.0.1"
) -> FakeFrames:
    """A frame client registered as C{nickname}; its output so far dropped."""
    user = FakeFrames(factory, host)
    user.say(nickname)
    assert user.session.nickname == nickname, user.said()
    user.output()
    return user


@implementer(IChatClient)
class FakeClient:
    """An L{IChatClient} that records what it is delivered."""

    _ids = iter(range(1, 1 << 62))

    def __init__(self, host: str | None = None) -> None:
        self.connection_id = next(self._ids)
        self.host = host
        self.received: list[Event] = []
        self.disconnected: list[CloseReason] = []

    @property
    def receiver(self) -> "IChatClient":
        """See L{IChatClient.receiver}: this client itself."""
        return self

    def deliver(self, event: Event) -> None:
        """Record C{event}; anything else is refused, as a real client does."""
        if event.__class__ is not Event:
            raise not_an_event(event)
        self.received.append(event)

    def disconnect(self, reason: CloseReason) -> None:
        """Record C{reason}."""
        self.disconnected.append(reason)

    def lines(self) -> list[str]:
        """Everything delivered since the last call, as lines."""
        if Waiting.settle is not None:
            Waiting.settle()
        data = b"".join([event.line for event in self.received]).decode("utf-8")
        self.received.clear()
        return data.split("\r\n")[:-1]


class RegistryBehaviour:
    """What every L{IRegistry} does; subclass with C{make_registry()}."""

    def make_registry(self, announce_max: int | None = None) -> IRegistry:
        """Return a new, empty registry to test.

        @param announce_max: the most members of a room in which joins and
            leaves are announced; None for every room.
        """
        raise NotImplementedError

    def _with(
        self, *nicknames: str, announce_max: int | None = None
    ) -> tuple[IRegistry, list[FakeClient]]:
        registry = self.make_registry(announce_max=announce_max)
        clients = []
        for nickname in nicknames:
            client = FakeClient()
            _result(registry.register(client, nickname))
            clients.append(client)
        for client in clients:
            client.lines()
        return registry, clients

    def shared_of(self, registry: IRegistry) -> tuple[ISharedSessions, ISharedBans]:
        """What a server is given beside C{registry}: sessions and bans shared.

        A registry of one process shares nothing; override for a cluster.
        """
        return LocalSessions(), LocalBans()

    def test_interface(self) -> None:
        """The registry provides IRegistry."""
        assert verifyObject(IRegistry, self.make_registry())

    def test_shared_interfaces(self) -> None:
        """What is shared beside the registry provides its two interfaces."""
        sessions, bans = self.shared_of(self.make_registry())
        assert verifyObject(ISharedSessions, sessions)
        assert verifyObject(ISharedBans, bans)

    def test_register_announces_to_others(self) -> None:
        """A new user is announced once to everyone else, not to itself."""
        registry, (alice,) = self._with("alice")
        bob = FakeClient()
        assert _result(registry.register(bob, "bob")) == "bob"
        assert alice.lines() == ["*** bob has joined #lobby"]
        assert bob.lines() == []

    def test_nickname_taken_ignoring_case(self) -> None:
        """A nickname differing only in case from a registered one is refused."""
        registry, (alice,) = self._with("alice")
        failure = _failure(registry.register(FakeClient(), "ALICE"))
        assert failure.check(NicknameInUse)
        assert alice.lines() == []

    def test_users_sorted_ignoring_case(self) -> None:
        """Everyone online is listed, sorted ignoring case."""
        registry, _ = self._with("carol", "Bob", "alice")
        assert _names(registry.users()) == ["alice", "Bob", "carol"]
        assert _names(registry.users(registry.lobby)) == ["alice", "Bob", "carol"]

    def test_broadcast_skips_sender(self) -> None:
        """A broadcast reaches every member but its sender, as the same bytes."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")
        data = events.chat("alice", "hi", registry.lobby)
        registry.broadcast(registry.lobby, data, alice)
        assert alice.received == []
        assert bob.received[0] is data
        assert carol.received[0] is data

    def test_unregister_announces_once(self) -> None:
        """Leaving is announced once with its reason; a second time is a no-op."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.unregister(alice, IDLE_TIMEOUT)
        registry.unregister(alice, CONNECTION_LOST)
        assert bob.lines() == ["*** alice has left (idle timeout)"]
        assert alice.lines() == []
        assert _names(registry.users()) == ["bob"]

    def test_unregister_frees_nickname(self) -> None:
        """A nickname can be taken again once its user has left."""
        registry, (alice,) = self._with("alice")
        registry.unregister(alice, CloseReason.quit())
        assert _result(registry.register(FakeClient(), "Alice")) == "Alice"

    def test_rename_announced_to_all_including_self(self) -> None:
        """A nick change is announced to everyone, the renamed user included."""
        registry, (alice, bob) = self._with("alice", "bob")
        assert _result(registry.rename(alice, "alicia")) == "alicia"
        assert alice.lines() == ["*** alice is now known as alicia"]
        assert bob.lines() == ["*** alice is now known as alicia"]
        assert _names(registry.users()) == ["alicia", "bob"]
        assert _result(registry.register(FakeClient(), "alice")) == "alice"

    def test_rename_case_only(self) -> None:
        """A user may change only the case of its own nickname."""
        registry, (alice,) = self._with("alice")
        assert _result(registry.rename(alice, "Alice")) == "Alice"

    def test_rename_to_taken(self) -> None:
        """Renaming to somebody else's nickname fails and changes nothing."""
        registry, (alice, bob) = self._with("alice", "bob")
        assert _failure(registry.rename(alice, "BOB")).check(NicknameInUse)
        assert alice.lines() == bob.lines() == []
        assert _names(registry.users()) == ["alice", "bob"]

    def test_send_private(self) -> None:
        """A private message reaches only its target, found ignoring case."""
        registry, (alice, bob, carol) = self._with("alice", "Bob", "carol")
        found = _result(registry.send_private("BOB", events.private("alice", "psst")))
        assert found == UserInfo("Bob")
        assert bob.lines() == ["*alice* psst"]
        assert alice.lines() == carol.lines() == []

    def test_send_private_unknown(self) -> None:
        """A private message to nobody fails with NoSuchNickname."""
        registry, _ = self._with("alice")
        assert _failure(
            registry.send_private("zed", events.private("alice", "x"))
        ).check(NoSuchNickname)

    def test_unregister_during_broadcast(self) -> None:
        """A member leaving while a broadcast is delivered does not stop it."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")

        def leave(event: Event) -> None:
            registry.unregister(bob, SEND_QUEUE)

        bob.deliver = leave  # type: ignore[method-assign]
        registry.broadcast(registry.lobby, events.chat("alice", "hi"), alice)
        # Both arrive; in which order is up to the registry (one that asks
        # another process tells of the leave once that has answered).
        assert sorted(carol.lines()) == [
            "*** bob has left (send queue exceeded)",
            "<alice> hi",
        ]

    def test_join_creates_room_and_announces(self) -> None:
        """Joining creates a room; its members, not the joiner, are told."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")
        assert _result(registry.join(alice, "#python")) == []
        assert _result(registry.join(bob, "#python")) == []
        assert alice.lines() == ["*** bob has joined #python"]
        assert bob.lines() == carol.lines() == []
        assert _names(registry.users("#python")) == ["alice", "bob"]

    def test_join_twice_changes_nothing(self) -> None:
        """Joining a room one is in already tells nobody."""
        registry, (alice, bob) = self._with("alice", "bob")
        _result(registry.join(alice, registry.lobby))
        assert bob.lines() == []

    def test_part_announces_with_reason(self) -> None:
        """Leaving one room tells that room's members why."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.join(alice, "#x")
        registry.join(bob, "#x")
        alice.lines()
        registry.part(bob, registry.lobby, "joined #x")
        assert alice.lines() == ["*** bob has left #lobby (joined #x)"]
        assert _names(registry.users(registry.lobby)) == ["alice"]

    def test_empty_room_disappears(self) -> None:
        """A room other than the lobby goes, topic and history too, when empty."""
        registry, (alice,) = self._with("alice")
        registry.join(alice, "#x")
        registry.set_topic(alice, "#x", "fun")
        registry.say("#x", events.chat("alice", "hi", "#x"), alice)
        registry.part(alice, "#x", "bye")
        assert [room.name for room in _result(registry.rooms())] == ["#lobby"]
        assert _result(registry.join(alice, "#x")) == []
        assert _result(registry.topic("#x")) == ""

    def test_lobby_stays(self) -> None:
        """The lobby exists even when nobody is in it."""
        registry = self.make_registry()
        assert _result(registry.rooms()) == [RoomInfo(registry.lobby, 0, "")]

    def test_rooms_listed_with_counts_and_topics(self) -> None:
        """Rooms are listed by name, with member counts and topics."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.join(alice, "#b")
        registry.set_topic(alice, "#b", "bees")
        assert _result(registry.rooms()) == [
            RoomInfo("#b", 1, "bees"),
            RoomInfo(registry.lobby, 2, ""),
        ]

    def test_say_only_to_room(self) -> None:
        """A line said in a room reaches only its members."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")
        registry.join(alice, "#x")
        registry.join(bob, "#x")
        alice.lines()
        registry.say("#x", events.chat("alice", "hi", "#x"), alice)
        assert bob.lines() == ["<alice> hi"]
        assert carol.lines() == []

    def test_scrollback_bounded(self) -> None:
        """The scrollback keeps the last lines said, no more."""
        registry, (alice,) = self._with("alice")
        for n in range(120):
            registry.say(registry.lobby, events.chat("alice", str(n)), alice)
        history = _result(registry.join(alice, registry.lobby))
        assert len(history) <= 50
        assert history[-1].event.line == b"<alice> 119\r\n"

    def test_topic_announced_to_room(self) -> None:
        """Setting a topic tells every member, the setter included."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.set_topic(alice, registry.lobby, "welcome all")
        assert (
            alice.lines()
            == bob.lines()
            == ["*** alice set the topic of #lobby: welcome all"]
        )
        assert _result(registry.topic(registry.lobby)) == "welcome all"

    def test_away_shown(self) -> None:
        """An away message shows in lists and to private messages."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.set_away(bob, "lunch")
        assert _result(registry.users()) == [
            UserInfo("alice"),
            UserInfo("bob", "lunch"),
        ]
        assert _result(
            registry.send_private("bob", events.private("alice", "x"))
        ) == UserInfo("bob", "lunch")
        registry.set_away(bob, None)
        assert _result(registry.users())[1] == UserInfo("bob")

    def test_leave_told_in_every_room_once(self) -> None:
        """A user in two rooms leaving is announced once to each neighbour."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")
        registry.join(alice, "#x")
        registry.join(bob, "#x")
        alice.lines()
        registry.unregister(alice, CloseReason.quit())
        assert bob.lines() == ["*** alice has left (quit)"]
        assert carol.lines() == ["*** alice has left (quit)"]

    def test_find(self) -> None:
        """A user is found by nickname, ignoring case, with their address."""
        registry = self.make_registry()
        bob = FakeClient(host="203.0.113.7")
        _result(registry.register(bob, "Bob"))
        found = _result(registry.find("bob"))
        assert (found.nickname, found.host) == ("Bob", "203.0.113.7")
        assert _failure(registry.find("nobody")).check(NoSuchNickname)

    def test_kick(self) -> None:
        """Kicking asks the user's client to disconnect with the reason."""
        registry, (alice, bob) = self._with("alice", "bob")
        kicked = CloseReason.kicked("alice")
        assert _result(registry.kick("BOB", kicked)) == UserInfo("bob")
        assert bob.disconnected == [kicked]
        assert alice.disconnected == []
        assert _failure(registry.kick("nobody", kicked)).check(NoSuchNickname)

    def test_announce_reaches_everyone_once(self) -> None:
        """An announcement reaches every user once, whatever their rooms."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")
        registry.join(bob, "#x")
        registry.join(carol, "#y")
        for client in (alice, bob, carol):
            client.lines()
        registry.announce(events.notice("hear ye"))
        assert alice.lines() == bob.lines() == carol.lines() == ["*** hear ye"]

    def test_said_and_delivered_counted(self) -> None:
        """Chat lines said, and their deliveries, are counted."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")
        said, delivered = registry.said, registry.delivered
        registry.say(registry.lobby, events.chat("alice", "hi"), alice)
        registry.join(bob, "#x")
        registry.say("#x", events.chat("bob", "hi", "#x"), bob)
        assert (registry.said - said, registry.delivered - delivered) == (2, 2)

    def test_replace_keeps_everything_and_tells_once(self) -> None:
        """A replaced client keeps its nickname, rooms and away message."""
        registry, (alice, bob, carol) = self._with("alice", "bob", "carol")
        registry.join(alice, "#x")
        registry.join(bob, "#x")
        registry.set_away(alice, "brb")
        for client in (alice, bob, carol):
            client.lines()
        new = FakeClient(host="198.51.100.1")
        registry.replace(alice, new, events.back("alice"))
        assert bob.lines() == carol.lines() == ["*** alice is back"]
        assert new.lines() == []
        registry.say("#x", events.chat("bob", "hi", "#x"), bob)
        assert new.lines() == ["<bob> hi"]
        assert alice.lines() == []
        assert _result(registry.find("ALICE")).host == "198.51.100.1"
        assert _result(registry.users("#x"))[0] == UserInfo("alice", "brb")
        registry.unregister(alice, CONNECTION_LOST)  # the old client is not registered
        assert bob.lines() == []
        registry.unregister(new, CloseReason.quit())
        assert bob.lines() == ["*** alice has left (quit)"]

    def test_replace_silently(self) -> None:
        """A replace without a line tells nobody anything."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.replace(alice, FakeClient(), None)
        assert bob.lines() == []

    def test_count(self) -> None:
        """The count of registered users follows registrations and leaves."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.join(bob, "#x")
        assert _result(registry.count()) == 2
        registry.unregister(alice, CloseReason.quit())
        assert _result(registry.count()) == 1

    def test_local_sizes(self) -> None:
        """The local sizes follow registrations, joins and leaves."""
        registry, (alice, bob) = self._with("alice", "bob")
        assert registry.local_sizes() == (2, 1)  # #lobby
        _result(registry.join(bob, "#x"))
        assert registry.local_sizes() == (2, 2)
        registry.unregister(bob, CloseReason.quit())  # #x is gone with its last member
        alice.lines()  # a shared registry forgets it once the others know
        assert registry.local_sizes() == (1, 1)
        registry.unregister(alice, CloseReason.quit())
        assert registry.local_sizes() == (0, 1)

    def test_big_rooms_do_not_announce_joins_and_leaves(self) -> None:
        """Above announce_max members, joins, leaves and losses pass quietly.

        Nick changes and chat are still seen by everyone.
        """
        registry, (alice, bob) = self._with("alice", "bob", announce_max=2)
        carol = FakeClient()
        _result(registry.register(carol, "carol"))  # the lobby now has 3
        assert alice.lines() == bob.lines() == []
        registry.replace(carol, carol2 := FakeClient(), events.lost("carol"))
        assert alice.lines() == []
        _result(registry.rename(bob, "bobby"))
        assert alice.lines() == carol2.lines() == ["*** bob is now known as bobby"]
        bob.lines()
        registry.say(registry.lobby, events.chat("alice", "hi"), alice)
        assert carol2.lines() == bob.lines() == ["<alice> hi"]
        registry.unregister(carol2, CloseReason.quit())  # left a room of 3: quiet
        assert alice.lines() == bob.lines() == []
        registry.unregister(alice, CloseReason.quit())  # left a room of 2: told
        assert bob.lines() == ["*** alice has left (quit)"]

    def test_stop_silences_local_leaves(self) -> None:
        """After stop(), local users leave without N-squared announcements."""
        registry, (alice, bob) = self._with("alice", "bob")
        registry.stop()
        registry.unregister(alice, SHUTDOWN)
        assert bob.lines() == []
        assert _names(registry.users()) == ["bob"]


def _names(d) -> list[str]:  # type: ignore[no-untyped-def]
    return [user.nickname for user in _result(d)]


class Waiting:
    """How the behaviour suite waits for a registry that answers later.

    The in-memory registry answers at once, and the suite checks that it
    does.  A registry that talks to another process sets C{block} (wait
    until a Deferred fires: C{pytest_twisted.blockon}) and C{settle} (wait
    until the registry has finished what it started), for its tests only.
    """

    block: Callable[[Deferred[object]], object] | None = None
    settle: Callable[[], None] | None = None


def _wait(d: Deferred[object], results: list[object]) -> None:
    if not results and Waiting.block is not None:
        Waiting.block(d)


def _result(d):  # type: ignore[no-untyped-def]
    results: list[object] = []
    d.addBoth(results.append)
    _wait(d, results)
    assert results, "the Deferred has not fired"
    assert not isinstance(results[0], Failure), results[0]
    return results[0]


def _failure(d) -> Failure:  # type: ignore[no-untyped-def]
    results: list[object] = []
    d.addBoth(results.append)
    _wait(d, results)
    assert results and isinstance(results[0], Failure), results
    return results[0]
