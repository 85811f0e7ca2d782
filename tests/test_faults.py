"""Fault tests: real sockets against an in-process server, clients misbehaving.

Clients here reset mid-line, half-close, vanish while being written to, come
two thousand at once, connect and leave five thousand times, and flood.  The
server runs in the test's reactor (see L{harness}), so the test can look at
what it logged and what it still holds; what is asserted is what users see.
"""

import contextlib
import gc
import os
import resource
import socket
import struct
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest
import pytest_twisted
from harness import WAIT, Client, Harness, bounded, wait_until

from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.internet.task import LoopingCall
from twisted.logger import LogLevel, globalLogPublisher
from zope.interface import implementer


def reset(client: Client) -> None:
    """Drop C{client}'s connection with a TCP reset, as a crashed peer does."""
    client.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
    )
    client.transport.abortConnection()


def left(nickname: str) -> str:
    """What the others see when C{nickname}'s connection is lost."""
    return f"*** {nickname} has left (connection lost)"


@pytest.fixture
def logged() -> Iterator[list[dict[str, Any]]]:
    """Every log event emitted during the test."""
    events: list[dict[str, Any]] = []
    observer = events.append
    globalLogPublisher.addObserver(observer)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observer)


def errors(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The events that report an error or a traceback."""
    return [
        event
        for event in events
        if "log_failure" in event
        or event.get("log_level") in (LogLevel.error, LogLevel.critical)
    ]


def close_detail(events: list[dict[str, Any]], connection_id: int) -> list[str]:
    """How the server logged the end of connection C{connection_id}.

    Read by the disconnect event's fields (docs/operations.md): a short
    session's one line is a disconnect too.
    """
    return [
        f"{event['reason']}; {event['detail']}"
        for event in events
        if event.get("log_namespace") == "chatservice.session"
        and "reason" in event
        and "detail" in event
        and event.get("connection_id") == connection_id
    ]


async def all_of(coroutines: list[Any], timeout: float) -> None:
    """Run C{coroutines} concurrently; fail if any fails or all take too long."""
    await bounded(
        gatherResults(
            [Deferred.fromCoroutine(c) for c in coroutines], consumeErrors=True
        ),
        timeout=timeout,
    )


# Resets and half-closes --------------------------------------------------------


@pytest_twisted.ensureDeferred
async def test_reset_mid_line(chat: Harness, logged: list[dict[str, Any]]) -> None:
    """A client reset mid-line is announced once, and its half line reaches nobody."""
    chat.start()
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await wait_until(lambda: len(alice.lines) == 5, "bob's arrival")
    alice_side = chat.server_side("alice")
    mark = len(bob.lines)

    alice.transport.write(b"half a li")
    # The server has read the half line before the reset reaches it.
    await wait_until(lambda: alice_side._buffer == b"half a li", "the half line")
    reset(alice)
    await wait_until(lambda: left("alice") in bob.lines, "alice's leave")
    # Whatever the reset still had on its way to bob has come by now.
    bob.send("/ping after")
    await wait_until(lambda: "*** PONG after" in bob.lines, "bob's pong")

    assert bob.since(mark) == [left("alice"), "*** PONG after"]
    # It was a reset, not a clean close.
    (detail,) = close_detail(logged, alice_side.connection_id)
    assert detail.startswith("connection lost; ")
    assert detail != "connection lost; closed cleanly"
    assert errors(logged) == []


@implementer(IHalfCloseableProtocol)
class HalfClosingClient(Client):
    """A client that can stop sending and go on reading until the server closes."""

    def __init__(self) -> None:
        super().__init__()
        self.server_closed = False

    def readConnectionLost(self) -> None:
        """The server closed its side: close ours too."""
        self.server_closed = True
        self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        """Our side is shut down; the server may still send."""


@pytest_twisted.ensureDeferred
async def test_half_close_after_sending(chat: Harness) -> None:
    """A client that half-closes has its last line said and answers sent, then leaves."""
    chat.start()
    alice = await chat.user("alice", HalfClosingClient())
    bob = await chat.user("bob")
    await wait_until(lambda: len(alice.lines) == 5, "bob's arrival")
    alice_mark, bob_mark = len(alice.lines), len(bob.lines)

    alice.transport.write(b"/ping x\r\nhello\nlast words")
    alice.transport.loseWriteConnection()
    await wait_until(lambda: alice.disconnected, "the server's close")
    await wait_until(lambda: left("alice") in bob.lines, "alice's leave")

    assert bob.since(bob_mark) == [
        "<alice> hello",
        "<alice> last words",
        left("alice"),
    ]
    assert alice.since(alice_mark) == ["*** PONG x"]
    # The server closed its side cleanly, after sending everything.
    assert alice.server_closed
    assert alice.reason is not None and alice.reason.check(ConnectionDone)


# A client that vanishes while the server writes to it -------------------------


@pytest_twisted.ensureDeferred
async def test_vanishes_while_written_to(
    chat: Harness, logged: list[dict[str, Any]]
) -> None:
    """A client reset while output for it waits is announced once; others miss nothing.

    The client stops reading until the server holds output for it (below
    max_sendq, so that it is not dropped for that), then resets.
    """
    chat.start(max_sendq=256 * 1024, flood_burst=100_000)
    slow = await chat.user("slow")
    talker = await chat.user("talker")
    watcher = await chat.user("watcher")
    await wait_until(lambda: len(talker.lines) == 5, "watcher's arrival")
    slow_side = chat.server_side("slow")
    # Small kernel buffers, so that the server soon has to hold output.
    slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_side.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
    )
    slow.transport.pauseProducing()
    talker_mark, watcher_mark = len(talker.lines), len(watcher.lines)
    filler = "x" * 1000
    said: list[str] = []

    async def talk(count: int) -> None:
        """Say C{count} more lines; each batch reaches the watcher promptly."""
        for _ in range(count):
            said.append(f"<talker> {len(said):05d} {filler}")
            talker.send(said[-1].removeprefix("<talker> "))
        await wait_until(
            lambda: (
                sum(line.startswith("<talker> ") for line in watcher.lines) >= len(said)
            ),
            f"{len(said)} lines at the watcher",
            timeout=5,
        )

    while not slow_side._held:
        assert len(said) < 2000, "the server never had to hold output for slow"
        await talk(20)
    reset(slow)
    await talk(50)
    await wait_until(lambda: left("slow") in watcher.lines, "slow's leave")
    await talk(50)
    talker.send("/ping end")
    await wait_until(lambda: "*** PONG end" in talker.lines, "the talker's pong")

    received = watcher.since(watcher_mark)
    assert [line for line in received if line.startswith("<talker> ")] == said
    assert [line for line in received if not line.startswith("<talker> ")] == [
        left("slow")
    ]
    assert talker.since(talker_mark) == [left("slow"), "*** PONG end"]
    (detail,) = close_detail(logged, slow_side.connection_id)
    assert detail.startswith("connection lost; ")
    assert detail != "connection lost; closed cleanly"
    assert errors(logged) == []


# Many clients ----------------------------------------------------------------


@pytest.fixture
def many_files() -> Iterator[None]:
    """Raise the soft limit on open files to the hard limit, for the test."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def need_files(count: int) -> None:
    """Fail at once, and clearly, if this process may not open C{count} files."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < count:
        pytest.fail(
            f"this test needs {count} open files, but the hard limit is "
            f"{hard} (raise it with ulimit -Hn)"
        )


def open_fds() -> dict[int, str]:
    """The open file descriptors of this process, and what each is open on."""
    fds = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            fds[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except FileNotFoundError:  # the directory listdir itself had open
            pass
    return fds


class RoomClient(Client):
    """A client that keeps the chat lines it receives apart, by sender."""

    def __init__(self) -> None:
        super().__init__()
        self.heard: defaultdict[str, list[str]] = defaultdict(list)
        self.heard_count = 0
        self.in_room = False

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"<"):
            text = line.decode("utf-8")
            self.heard[text[1 : text.index(">")]].append(text)
            self.heard_count += 1
            return
        if line.startswith(b"*** In #"):  # /join ends with the room's members
            self.in_room = True
        super().lineReceived(line)


CLIENTS = 2000
ROOMS = 20
BATCH = 50
FILLER = "lorem ipsum dolor sit amet " * 3


@pytest_twisted.ensureDeferred
async def test_two_thousand_clients_chatting(chat: Harness, many_files: None) -> None:
    """2,000 clients at once in 20 rooms each get every line of their room, in order."""
    # Both ends of every connection are in this process.
    need_files(2 * CLIENTS + 100)
    chat.start(max_clients=CLIENTS, max_per_ip=CLIENTS)
    clients = [RoomClient() for _ in range(CLIENTS)]
    nicknames = [f"u{number:04d}" for number in range(CLIENTS)]
    rooms: dict[str, list[int]] = defaultdict(list)

    # In batches: few wait in the lobby at once to hear of each other, and
    # the server's listen backlog (50) never overflows.
    for start in range(0, CLIENTS, BATCH):
        batch = clients[start : start + BATCH]
        await all_of([chat.connect(client) for client in batch], timeout=WAIT)
        for number in range(start, start + BATCH):
            room = f"#room{number % ROOMS:02d}"
            rooms[room].append(number)
            clients[number].send(nicknames[number])
            clients[number].send(f"/join {room}")
        await wait_until(
            lambda batch=batch: all(client.in_room for client in batch),
            f"clients {start} to {start + BATCH - 1} in their rooms",
        )
    assert len(chat.factory.connections) == CLIENTS

    said = [[f"{i} {nickname} {FILLER}" for i in (1, 2)] for nickname in nicknames]
    for client, lines in zip(clients, said, strict=True):
        client.transport.write("".join(line + "\r\n" for line in lines).encode())
    each = 2 * (CLIENTS // ROOMS - 1)
    await wait_until(
        lambda: all(client.heard_count >= each for client in clients),
        "every line at every member of its room",
        timeout=60,
    )

    for members in rooms.values():
        for number in members:
            assert clients[number].heard == {
                nicknames[other]: [
                    f"<{nicknames[other]}> {line}" for line in said[other]
                ]
                for other in members
                if other != number
            }
    # Stopping first spares the room 2,000 announcements of leaving.
    await bounded(chat.service.stopService(), timeout=WAIT)


CYCLES = 5000
AT_ONCE = 50


@pytest_twisted.ensureDeferred
async def test_connect_register_leave_cycles(chat: Harness, many_files: None) -> None:
    """After 5,000 connect-register-leave cycles the server's descriptors and connections are as before."""
    need_files(4 * AT_ONCE + 100)
    chat.start(max_per_ip=10 * AT_ONCE)
    connections_before = len(chat.factory.connections)
    # Garbage from earlier tests (an event loop, say) may still hold a
    # descriptor, to be closed at some later collection: not now.
    gc.collect()
    fds_before = open_fds()

    async def cycle(number: int) -> None:
        """Connect, register, and leave in one of three ways."""
        client = await chat.connect()
        nickname = f"c{number:04d}"
        client.send(nickname)
        way = ("quit", "close", "reset")[number % 3]
        if way == "quit":
            client.send("/quit bye")
        await wait_until(lambda: len(client.lines) >= 4, f"{nickname}'s welcome")
        assert client.lines[2].startswith(f"*** Welcome, {nickname}! Online ("), (
            client.lines
        )
        if way == "close":
            client.transport.loseConnection()
        elif way == "reset":
            reset(client)
        await wait_until(lambda: client.disconnected, f"{nickname}'s close")
        if way == "quit":
            assert client.lines[-1] == "*** Goodbye."
            assert client.reason is not None and client.reason.check(ConnectionDone)

    async def one_after_another(first: int) -> None:
        for number in range(first, CYCLES, AT_ONCE):
            await cycle(number)

    await all_of([one_after_another(first) for first in range(AT_ONCE)], timeout=120)

    await wait_until(
        lambda: len(chat.factory.connections) == connections_before,
        "the server to see every close",
    )
    # The test's own sockets are closed; the server's should follow at once.
    with contextlib.suppress(AssertionError):
        await wait_until(lambda: open_fds() == fds_before, "the server's descriptors")
    assert open_fds() == fds_before
    # Nobody is left registered either.
    probe = await chat.user("probe")
    assert probe.lines[2] == "*** Welcome, probe! Online (1): probe"


class TimedClient(RoomClient):
    """A client that also notes when each chat line arrived, by sender."""

    def __init__(self) -> None:
        super().__init__()
        self.heard_at: defaultdict[str, list[float]] = defaultdict(list)

    def lineReceived(self, line: bytes) -> None:
        if line.startswith(b"<"):
            self.heard_at[line[1 : line.index(b">")].decode()].append(reactor.seconds())
        super().lineReceived(line)


FLOOD = 10_000


@pytest_twisted.ensureDeferred
async def test_flooder_slowed_others_prompt(chat: Harness) -> None:
    """A flooder's 10,000 lines all arrive in order, slowed; another user's arrive within 1 s.

    With flood_rate=5000 and flood_burst=100 the flood takes about 2 s
    (beyond the burst, 9,900 lines at 5,000 per second); at the default 5
    lines per second it would take 2,000 s.
    """
    chat.start(flood_rate=5000, flood_burst=100)
    flooder = await chat.user("flooder")
    talker = await chat.user("talker")
    receiver = await chat.user("receiver", TimedClient())
    await wait_until(lambda: len(flooder.lines) == 6, "everyone's arrival")
    flooder_mark = len(flooder.lines)
    flood = [f"flood {n:05d}" for n in range(FLOOD)]
    sent_at: list[float] = []

    def talk() -> None:
        sent_at.append(reactor.seconds())
        talker.send(f"talk {len(sent_at) - 1}")

    # All of it in one write: the kernel and Twisted cut it as they please.
    flooder.transport.write("".join(line + "\r\n" for line in flood).encode())
    talking = LoopingCall(talk)
    talking.start(0.1)
    try:
        await wait_until(
            lambda: len(receiver.heard["flooder"]) >= FLOOD, "the whole flood", 30
        )
    finally:
        talking.stop()
    await wait_until(
        lambda: len(receiver.heard["talker"]) >= len(sent_at), "the last talk line"
    )

    assert receiver.heard["flooder"] == [f"<flooder> {line}" for line in flood]
    assert receiver.heard["talker"] == [
        f"<talker> talk {n}" for n in range(len(sent_at))
    ]
    delays = [
        arrived - sent
        for sent, arrived in zip(sent_at, receiver.heard_at["talker"], strict=True)
    ]
    assert max(delays) < 1.0, delays
    # The server slowed the flood down, and said so once.
    flood_times = receiver.heard_at["flooder"]
    assert flood_times[-1] - flood_times[0] >= (FLOOD - 100) / 5000 * 0.95
    assert [
        line for line in flooder.since(flooder_mark) if not line.startswith("<talker> ")
    ] == [
        "*** flood control: you are sending more than 5000 lines per second; "
        "your lines are slowed down, none is lost"
    ]
    # The other user was talking all through the flood.
    assert sum(sent < flood_times[-1] for sent in sent_at) >= 15
