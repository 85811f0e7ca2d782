"""Integration tests: an in-process server on a real port, real TCP clients.

The server runs in the test's reactor (pytest-twisted), so every client is a
Twisted client too (see L{harness}).  Every wait has a deadline; nothing
sleeps.
"""

import socket

import pytest
import pytest_twisted
from harness import Harness, bounded, wait_until

from twisted.internet import reactor
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import LoopingCall, deferLater


@pytest_twisted.ensureDeferred
async def test_nickname_race(chat: Harness) -> None:
    """Of two clients sending the same nickname at once, exactly one gets it."""
    chat.start()
    first, second = await chat.greeted(), await chat.greeted()
    first.send("alice")
    second.send("alice")
    await wait_until(
        lambda: len(first.lines) > 2 and len(second.lines) > 2, "both answers"
    )
    winner, loser = (first, second) if "Welcome" in first.lines[2] else (second, first)

    loser_mark = len(loser.lines)
    loser.send("bob")
    await wait_until(lambda: len(loser.lines) >= loser_mark + 2, "bob's welcome")
    await wait_until(lambda: len(winner.lines) >= 5, "bob's arrival")

    assert winner.since(2) == [
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
        "*** bob has joined #lobby",
    ]
    assert loser.since(2) == [
        "!!! the nickname alice is taken; choose another one",
        "*** Welcome, bob! Online (2): alice, bob",
        "*** Type /help for the commands.",
    ]


@pytest_twisted.ensureDeferred
async def test_broadcast_to_fifty(chat: Harness) -> None:
    """A line reaches each of 49 other users exactly once, and not its sender."""
    chat.start()
    users = [await chat.user(f"user{i:02d}") for i in range(50)]
    # Each user hears of everyone who arrived after it; wait for the last.
    await wait_until(
        lambda: all(u.lines[-1] == "*** user49 has joined #lobby" for u in users[:-1]),
        "every join",
    )
    marks = [len(u.lines) for u in users]
    sender, second = users[0], users[1]

    sender.send("hello everyone")
    # A later line from another user, relayed to all (sender included), shows
    # that nothing more of the first line is still on its way.
    await wait_until(
        lambda: all("<user00> hello everyone" in u.lines for u in users[1:]),
        "the broadcast",
    )
    second.send("second line")
    await wait_until(
        lambda: all(
            "<user01> second line" in u.lines for u in users if u is not second
        ),
        "the second line",
    )

    assert sender.since(marks[0]) == ["<user01> second line"]
    assert second.since(marks[1]) == ["<user00> hello everyone"]
    for user, mark in zip(users[2:], marks[2:], strict=True):
        assert user.since(mark) == ["<user00> hello everyone", "<user01> second line"]


@pytest_twisted.ensureDeferred
async def test_stalled_reader_dropped_others_unaffected(chat: Harness) -> None:
    """A client that stops reading is dropped; the others miss nothing meanwhile."""
    chat.start(max_sendq=65536, flood_burst=100_000)
    slow = await chat.user("slow")
    talker = await chat.user("talker")
    watcher = await chat.user("watcher")
    await wait_until(lambda: len(talker.lines) == 5, "watcher's arrival")
    talker_mark, watcher_mark = len(talker.lines), len(watcher.lines)
    slow.transport.pauseProducing()

    left = "*** slow has left (send queue exceeded)"
    filler = "x" * 1490
    sent = 0
    # Each batch (60 kB) fits in max_sendq, and the next is sent only once the
    # watcher has it all: the watcher is never far enough behind to be
    # dropped too, however slowly this process runs.
    batch = 40
    # The kernel absorbs a few MB for the stalled client before the server
    # has to queue anything; 40 MB is far more than enough.
    while left not in watcher.lines:
        assert sent < 40 * 1024 * 1024 // 1500, "the stalled client was never dropped"
        for i in range(sent, sent + batch):
            talker.send(f"{i:06d} {filler}")
        sent += batch
        # Every batch must reach the watcher promptly, stalled client or not.
        await wait_until(
            lambda sent=sent: len(watcher.lines) - watcher_mark >= sent,
            f"lines up to {sent} at the watcher",
            timeout=5,
        )
    talker.send("after")
    await wait_until(lambda: watcher.lines[-1] == "<talker> after", "the last line")

    chat_lines = [f"<talker> {i:06d} {filler}" for i in range(sent)] + [
        "<talker> after"
    ]
    received = watcher.since(watcher_mark)
    assert [line for line in received if not line.startswith("<talker> ")] == [left]
    assert [line for line in received if line.startswith("<talker> ")] == chat_lines
    assert talker.since(talker_mark) == [left]
    # Reading again, the stalled client finds its connection closed.
    slow.transport.resumeProducing()
    await wait_until(lambda: slow.disconnected, "the stalled client's close")


@pytest_twisted.ensureDeferred
async def test_ten_megabytes_without_newline(chat: Harness) -> None:
    """10 MB without a newline gets one error, reaches nobody, and is forgotten."""
    chat.start()
    flooder = await chat.user("flood")
    watcher = await chat.user("watcher")
    await wait_until(lambda: len(flooder.lines) == 5, "watcher's arrival")
    flooder_mark, watcher_mark = len(flooder.lines), len(watcher.lines)
    server_side = chat.server_side("flood")
    buffered: list[int] = []
    sampler = LoopingCall(lambda: buffered.append(len(server_side._buffer)))
    sampler.start(0)
    try:
        chunk = b"a" * 65536
        for i in range(160):
            flooder.transport.write(chunk)
            if i % 16 == 15:
                await deferLater(reactor, 0, lambda: None)
        flooder.transport.write(b"\n")
        flooder.send("back to normal")
        await wait_until(
            lambda: watcher.lines[-1:] == ["<flood> back to normal"],
            "the line after the flood",
        )
    finally:
        sampler.stop()
    flooder.send("/ping end")
    await wait_until(lambda: flooder.lines[-1:] == ["*** PONG end"], "the pong")

    assert flooder.since(flooder_mark) == [
        "!!! line too long (max 2048 bytes)",
        "*** PONG end",
    ]
    assert watcher.since(watcher_mark) == ["<flood> back to normal"]
    assert len(buffered) > 10, "the server's buffer was hardly sampled"
    # Between reads the server keeps at most one unfinished line (and a CR).
    assert max(buffered) <= 2048 + 1


@pytest_twisted.ensureDeferred
async def test_keepalive_enabled(chat: Harness) -> None:
    """TCP keepalive is switched on for an accepted connection."""
    chat.start()
    await chat.greeted()
    (session,) = chat.factory.connections.values()
    handle = session.connection.transport.getHandle()
    assert handle.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) != 0


@pytest.mark.parametrize(
    ("settings", "refusal"),
    [
        ({"max_per_ip": 2}, "!!! too many connections from your address (at most 2)"),
        ({"max_clients": 2}, "!!! the server is full (2 connections)"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_connection_limit(
    chat: Harness, settings: dict[str, int], refusal: str
) -> None:
    """A connection over a limit gets one line saying which limit, and is closed."""
    chat.start(**settings)
    admitted = [await chat.greeted(), await chat.greeted()]
    third = await chat.connect()
    await wait_until(lambda: third.disconnected, "the refused client's close")
    assert third.lines == [refusal]
    assert [client.disconnected for client in admitted] == [False, False]


@pytest_twisted.ensureDeferred
async def test_graceful_stop(chat: Harness) -> None:
    """Stopping tells every client the server is shutting down, then closes it."""
    service = chat.start()
    alice, bob = await chat.user("alice"), await chat.user("bob")
    newcomer = await chat.greeted()
    await wait_until(lambda: len(alice.lines) == 5, "bob's arrival")
    clients = [alice, bob, newcomer]
    marks = [len(client.lines) for client in clients]

    await bounded(service.stopService())
    await wait_until(lambda: all(c.disconnected for c in clients), "every close")

    for client, mark in zip(clients, marks, strict=True):
        assert client.since(mark) == ["*** server shutting down"]


@pytest_twisted.ensureDeferred
async def test_stopped_server_refuses_connections(chat: Harness) -> None:
    """Once stopped, the server accepts no new connection."""
    service = chat.start()
    await bounded(service.stopService())
    with pytest.raises(ConnectionRefusedError):
        await chat.connect()


@pytest_twisted.ensureDeferred
async def test_graceful_stop_with_stalled_client(chat: Harness) -> None:
    """A client that does not read delays stopping by no more than the deadline."""
    service = chat.start(shutdown_timeout=1.0, flood_burst=100_000)
    slow = await chat.user("slow")
    talker = await chat.user("talker")
    slow_side = chat.server_side("slow")
    # Small kernel buffers on both ends, which also stops the kernel from
    # growing them later: what the server holds for the stalled client must
    # not be able to drain into the kernel once the server starts closing.
    slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    handle = slow_side.transport.getHandle()
    handle.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    slow.transport.pauseProducing()
    filler = "x" * 1490
    rounds = backed_up = 0
    # Until the server's own buffer for the stalled client has stayed full
    # for a few rounds of traffic (well below the default max_sendq).
    while backed_up < 3:
        assert rounds < 200, "the stalled client's output never backed up"
        for _ in range(100):
            talker.send(filler)
        talker.send(f"/ping {rounds}")
        await wait_until(
            lambda pong=f"*** PONG {rounds}": pong in talker.lines,
            f"pong {rounds}",
            timeout=5,
        )
        rounds += 1
        backed_up = backed_up + 1 if slow_side.transport.producerPaused else 0
    talker_mark = len(talker.lines)

    started = reactor.seconds()
    await bounded(service.stopService(), timeout=5)
    elapsed = reactor.seconds() - started

    assert 0.9 <= elapsed <= 3.0, elapsed
    await wait_until(lambda: talker.disconnected, "the talker's close")
    assert talker.since(talker_mark) == ["*** server shutting down"]


PAYLOAD = "p" * 1400


@pytest_twisted.ensureDeferred
async def test_quit_when_far_behind_closes_cleanly(chat: Harness) -> None:
    """A client far behind that quits gets everything, then a clean close."""
    chat.start(shutdown_timeout=30.0, flood_burst=100_000)
    slow = await chat.user("slow")
    talker = await chat.user("talker")
    slow_side = chat.server_side("slow")
    slow.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow_side.transport.getHandle().setsockopt(
        socket.SOL_SOCKET, socket.SO_SNDBUF, 4096
    )
    slow.transport.pauseProducing()
    sent = 0
    while (
        slow_side._held is None
        or sum(len(item.line) for item in slow_side._held) < 100_000
    ):
        assert sent < 2000, "the stalled client's output never backed up"
        for _ in range(50):
            talker.send(f"line {sent} {PAYLOAD}")
            sent += 1
        talker.send("/ping")
        await wait_until(
            lambda n=sent: talker.lines.count("*** PONG") == n // 50, "pong"
        )
    slow.send("/quit")
    slow.transport.resumeProducing()
    started = reactor.seconds()
    await wait_until(lambda: slow.disconnected, "the quitter's close", timeout=10)
    assert reactor.seconds() - started < 5
    assert slow.reason is not None and slow.reason.check(ConnectionDone), slow.reason
    chat_lines = [line for line in slow.lines if line.startswith("<talker> ")]
    assert chat_lines == [f"<talker> line {n} {PAYLOAD}" for n in range(sent)]
    assert slow.lines[-1] == "*** Goodbye."


@pytest_twisted.ensureDeferred
async def test_cut_off_then_resume_nothing_missed(chat: Harness) -> None:
    """A user the server cuts off resumes on a new connection and misses nothing."""
    chat.start(resume_grace=30)
    alice = await chat.user("alice")
    await wait_until(
        lambda: alice.lines[-1].startswith("*** resume token: "), "alice's token"
    )
    token = alice.lines[-1].split()[3]
    bob = await chat.user("bob")
    server_side = chat.server_side("alice")
    mark = len(bob.lines)  # before: bob may hear it before alice sees the drop
    server_side.transport.abortConnection()  # as a network failure would
    await wait_until(lambda: alice.disconnected, "alice's connection to drop")
    await wait_until(lambda: "*** alice lost connection" in bob.since(mark), "lost")
    for n in range(5):
        bob.send(f"line {n}")
    bob.send("/msg alice call me")
    await wait_until(lambda: len(bob.since(mark)) >= 2, "bob's echo")

    again = await chat.greeted()
    again.send(f"/resume alice {token}")
    await wait_until(lambda: len(again.lines) >= 11, "the missed lines")
    assert again.lines[2:10] == [
        "*** Resumed as alice in #lobby; 6 missed lines follow:",
        *[f"<bob> line {n}" for n in range(5)],
        "*bob* call me",
        "*** End of missed lines.",
    ]
    assert again.lines[10].startswith("*** resume token: ")
    await wait_until(lambda: "*** alice is back" in bob.since(mark), "back")
    again.send("thanks")
    await wait_until(lambda: "<alice> thanks" in bob.since(mark), "alice's line")


@pytest_twisted.ensureDeferred
async def test_reader_pausing_gets_everything_in_order(chat: Harness) -> None:
    """A reader that falls megabytes behind, then reads, misses nothing.

    Its output first goes straight to its socket, then (once the kernel's
    buffers are full) waits in the transport, then goes straight again.
    """
    chat.start(max_sendq=64 * 1024 * 1024, flood_burst=100_000)
    reader = await chat.user("reader")
    talker = await chat.user("talker")
    await wait_until(
        lambda: "*** talker has joined #lobby" in reader.lines, "the talker's arrival"
    )
    mark = len(reader.lines)
    reader.transport.pauseProducing()
    filler = "y" * 1000
    count = 8000  # 8 MB: more than loopback's kernel buffers hold
    for i in range(count):
        talker.send(f"{i:05d} {filler}")
    server_side = chat.server_side("reader")
    await wait_until(
        lambda: server_side.transport.dataBuffer or server_side._held is not None,
        "output waiting in the server",
    )
    reader.transport.resumeProducing()
    await wait_until(
        lambda: len(reader.lines) - mark == count, "every line", timeout=30
    )
    assert reader.since(mark) == [f"<talker> {i:05d} {filler}" for i in range(count)]
    talker.send("after")
    await wait_until(lambda: reader.lines[-1] == "<talker> after", "a line after")
