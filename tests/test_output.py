"""The output path: the direct-send writer on real TCP, and output's type."""

import gc
import socket
import struct
import weakref
from collections.abc import Callable

import pytest
import pytest_twisted
from harness import GREETING, Harness, wait_until

from twisted.internet import tcp
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from chatservice import events
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.held import HeldClient
from chatservice.output import Flusher, OutputMixin
from chatservice.stats import Stats
from chatservice.testing import register
from tests.test_properties import _User


@pytest_twisted.ensureDeferred
async def test_real_tcp_server_sends_directly(chat: Harness) -> None:
    """On a real TCP connection, lines go out on the socket, not transport.write.

    This fails if Twisted changes what the direct-send writer reads of
    C{tcp.Server} (C{dataBuffer}, C{_tempDataLen}, C{socket}...): the
    output then goes through C{transport.write}.
    """
    chat.start()
    alice, bob = await chat.user("alice"), await chat.user("bob")
    await wait_until(lambda: alice.lines[-1] == "*** bob has joined #lobby", "bob")
    transport = chat.server_side("alice").transport
    assert type(transport) is tcp.Server
    writes: list[bytes] = []
    write = transport.write

    def counted(data: bytes) -> None:
        writes.append(data)
        write(data)

    transport.write = counted  # type: ignore[method-assign]
    mark = len(alice.lines)
    for n in range(3):  # one at a time: three flushes
        bob.send(f"line {n}")
        seen = mark + n + 1
        await wait_until(lambda seen=seen: len(alice.lines) >= seen, f"line {n}")
    assert alice.since(mark) == ["<bob> line 0", "<bob> line 1", "<bob> line 2"]
    assert writes == []


@pytest_twisted.ensureDeferred
async def test_half_closed_client_is_closed_at_once(chat: Harness) -> None:
    """A client that has finished sending is sent everything and closed at once.

    Cleanly, and without C{loseConnection}, which would wait for the
    reactor to report the socket writable once more; this fails if Twisted
    changes what the direct close reads of C{tcp.Server}.
    """
    chat.start(idle_timeout=3600)
    alice, bob = await chat.user("alice"), await chat.user("bob")
    session = chat.server_side("bob").session
    transport = chat.server_side("bob").transport
    loses: list[None] = []
    lose = transport.loseConnection

    def counted() -> None:
        loses.append(None)
        lose()

    transport.loseConnection = counted  # type: ignore[method-assign]
    mark = len(bob.lines)
    bob.send("/ping last")
    bob.send("bye")
    bob.transport.loseWriteConnection()
    await wait_until(lambda: bob.disconnected, "bob's close")
    assert bob.since(mark) == ["*** PONG last"]
    assert bob.reason.check(ConnectionDone), bob.reason
    await wait_until(lambda: len(alice.lines) >= 6, "bob's line and leave")
    assert alice.lines[-2:] == ["<bob> bye", "*** bob has left (connection lost)"]
    assert loses == []
    # No timer is left behind for the connection that is gone.
    assert session._timer is None


def _connect_and_send(port: int, data: bytes) -> socket.socket:
    """A client that sends C{data} before the server has accepted it.

    The connect and the send do not wait for the reactor (the kernel
    completes the handshake from the listen backlog); the server accepts
    only once the test lets the reactor run.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(data)
    sock.setblocking(False)
    return sock


def _reader(sock: socket.socket, received: bytearray) -> Callable[[], bool]:
    """A predicate for wait_until: reads what has come; true once closed."""

    def closed() -> bool:
        try:
            while data := sock.recv(65536):
                received.extend(data)
        except BlockingIOError:
            return False
        return True

    return closed


def _data_segments_in(sock: socket.socket) -> int:
    """How many TCP segments with data C{sock} has received (Linux's count)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("I", info, 152)[0]  # tcpi_data_segs_in


@pytest_twisted.ensureDeferred
async def test_line_sent_before_the_accept_is_answered_with_the_greeting(
    chat: Harness,
) -> None:
    """A nickname sent before the server accepted is answered with the greeting.

    The greeting and the welcome arrive in one TCP segment, in order: the
    line was read when the connection was accepted, not in the reactor's
    next iteration, after the greeting had gone out alone.
    """
    chat.start()
    sock = _connect_and_send(chat.port, b"alice\n")
    received = bytearray()
    try:
        read = _reader(sock, received)
        await wait_until(
            lambda: read() or b"Type /help" in received, "the greeting and welcome"
        )
        lines = received.decode().split("\r\n")
        assert lines[:2] == GREETING
        assert lines[2].startswith("*** Welcome, alice! Online (1): alice")
        assert lines[3:] == ["*** Type /help for the commands.", ""]
        assert _data_segments_in(sock) == 1
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_half_closed_before_the_accept(chat: Harness) -> None:
    """A client that sent a nickname and a line, then half-closed, before the accept.

    It is greeted, welcomed, heard, and closed, as when the server is quick.
    """
    chat.start()
    alice = await chat.user("alice")
    sock = _connect_and_send(chat.port, b"bob\nhello\n")
    sock.shutdown(socket.SHUT_WR)
    received = bytearray()
    try:
        await wait_until(_reader(sock, received), "bob's close")
        lines = received.decode().split("\r\n")
        assert lines[:2] == GREETING
        assert lines[2].startswith("*** Welcome, bob! Online (2): alice, bob")
        assert lines[3:] == ["*** Type /help for the commands.", ""]
        await wait_until(lambda: len(alice.lines) >= 7, "bob's arrival and leave")
        assert alice.lines[4:] == [
            "*** bob has joined #lobby",
            "<bob> hello",
            "*** bob has left (connection lost)",
        ]
        assert chat.factory.connections.keys() == {
            chat.server_side("alice").connection_id
        }
    finally:
        sock.close()


@pytest_twisted.ensureDeferred
async def test_last_line_and_end_of_input_reach_the_others_in_one_segment(
    chat: Harness,
) -> None:
    """A client's last line and its end of input, sent together, go out together.

    The end of input is read in the iteration that read the line: the
    others are sent the line and the departure in one TCP segment, not one
    each, and the client is closed cleanly after what it was sent.
    """
    chat.start()
    alice = _connect_and_send(chat.port, b"alice\n")
    bob = _connect_and_send(chat.port, b"bob\n")
    seen, bob_seen = bytearray(), bytearray()
    try:
        read_alice, read_bob = _reader(alice, seen), _reader(bob, bob_seen)
        await wait_until(
            lambda: read_alice() or b"bob has joined" in seen, "bob's arrival"
        )
        await wait_until(lambda: read_bob() or b"Type /help" in bob_seen, "bob")
        mark, segments = len(seen), _data_segments_in(alice)
        bob.setblocking(True)
        bob.sendall(b"bye\n")
        bob.shutdown(socket.SHUT_WR)
        bob.setblocking(False)
        await wait_until(
            lambda: read_alice() or b"has left" in seen, "bob's line and departure"
        )
        assert bytes(seen[mark:]) == (
            b"<bob> bye\r\n*** bob has left (connection lost)\r\n"
        )
        assert _data_segments_in(alice) == segments + 1
        await wait_until(read_bob, "bob's close")
    finally:
        alice.close()
        bob.close()


@pytest_twisted.ensureDeferred
async def test_an_end_of_input_that_fails_is_logged_and_lost(chat: Harness) -> None:
    """An end of input read with the last line whose handling raises is logged.

    As the reactor does with a half-closeable protocol's: the failure
    logged once, with its connection, and the connection lost; the others
    go on.
    """
    chat.start()
    alice = await chat.user("alice")
    bob = _connect_and_send(chat.port, b"bob\n")
    seen = bytearray()
    logged: list[dict[str, object]] = []
    try:
        read_bob = _reader(bob, seen)
        await wait_until(lambda: read_bob() or b"Type /help" in seen, "bob")
        protocol = chat.server_side("bob")

        def failing() -> None:
            raise RuntimeError("a plugin's hook failed")

        protocol.readConnectionLost = failing  # type: ignore[method-assign]
        globalLogPublisher.addObserver(logged.append)
        bob.setblocking(True)
        bob.sendall(b"bye\n")
        bob.shutdown(socket.SHUT_WR)
        bob.setblocking(False)
        await wait_until(read_bob, "bob's close")
    finally:
        globalLogPublisher.removeObserver(logged.append)
        bob.close()
    failures = [event for event in logged if "log_failure" in event]
    assert [event["log_failure"].getErrorMessage() for event in failures] == [  # type: ignore[attr-defined]
        "a plugin's hook failed"
    ]
    assert failures[0]["connection_id"] == protocol.connection_id
    await wait_until(
        lambda: alice.lines[-1].endswith("has left (connection lost)"), "bob's leave"
    )
    alice.send("/ping")
    await wait_until(lambda: alice.lines[-1] == "*** PONG", "the answer to /ping")


@pytest_twisted.ensureDeferred
async def test_reset_before_the_accept(chat: Harness) -> None:
    """A client that reset before the accept is logged as lost, as before it was read."""
    chat.start()
    alice = await chat.user("alice")
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        sock = _connect_and_send(chat.port, b"")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # a reset
        await wait_until(
            lambda: chat.factory.stats.closed.get("connection lost"), "the close"
        )
    finally:
        globalLogPublisher.removeObserver(logged.append)
    (closed,) = [event for event in logged if "detail" in event]
    assert closed["detail"] == (
        "Connection to the other side was lost in a non-clean fashion."
    )
    assert list(chat.factory.connections.values()) == [
        chat.server_side("alice").session
    ]
    alice.send("/ping")
    await wait_until(lambda: alice.lines[-1] == "*** PONG", "the answer to /ping")


@pytest_twisted.ensureDeferred
async def test_closed_connection_freed_without_the_garbage_collector(
    chat: Harness,
) -> None:
    """A connection is freed when it closes, not by Python's cyclic collector.

    Its session and it refer to each other; once lost, the connection lets
    go of the session, so neither waits for a garbage collection (with the
    transport and all they hold).
    """
    chat.start()
    alice = await chat.user("alice")
    transport = weakref.ref(chat.server_side("alice").transport)
    gc.disable()
    try:
        alice.transport.loseConnection()
        await wait_until(lambda: not chat.factory.connections, "the close")
        await wait_until(lambda: transport() is None, "the transport freed", 2)
    finally:
        gc.enable()


def test_first_input_read_before_the_flush(clock: Clock) -> None:
    """A new connection's first input is read before its output is sent.

    So the answer to it goes out with the greeting, in one flush; a
    reader's own output and others' made by what it read go in that flush.
    """
    done: list[str] = []

    class Connection:
        def __init__(self, name: str) -> None:
            self.name = name
            self.connection_id = 0

        def _read_waiting(self) -> None:
            done.append(f"read {self.name}")
            flusher.add(other)  # what the read made for someone else

        def _flush(self) -> None:
            done.append(f"sent {self.name}")

    flusher = Flusher(clock, Stats(started=0))
    new, other = Connection("new"), Connection("other")
    flusher.add(new)  # the greeting
    flusher.read_first(new)  # type: ignore[arg-type]
    clock.advance(0)
    assert done == ["read new", "sent new", "sent other"]
    assert clock.getDelayedCalls() == []
    clock.advance(0)
    assert done == ["read new", "sent new", "sent other"]  # read once


def test_a_first_read_that_fails_stops_nobody_s_output(clock: Clock) -> None:
    """A new connection whose first read raises is logged; all output goes on."""
    done: list[str] = []
    logged: list[dict[str, object]] = []

    class Connection:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name = name
            self.fail = fail
            self.connection_id = 7

        def _read_waiting(self) -> None:
            if self.fail:
                raise RuntimeError("a plugin's disconnected hook failed")

        def _flush(self) -> None:
            done.append(f"sent {self.name}")

    flusher = Flusher(clock, Stats(started=0))
    broken, new, other = (
        Connection("broken", True),
        Connection("new"),
        Connection("other"),
    )
    globalLogPublisher.addObserver(logged.append)
    try:
        flusher.add(broken)
        flusher.read_first(broken)  # type: ignore[arg-type]
        flusher.read_first(new)  # type: ignore[arg-type]
        flusher.add(new)
        clock.advance(0)
        flusher.add(other)  # later output is still flushed
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert done == ["sent broken", "sent new", "sent other"]
    failures = [event for event in logged if "log_failure" in event]
    assert [event["log_failure"].getErrorMessage() for event in failures] == [  # type: ignore[attr-defined]
        "a plugin's disconnected hook failed"
    ]
    assert failures[0]["connection_id"] == 7
    assert clock.getDelayedCalls() == []


def test_connections_that_cannot_be_ordered_are_still_flushed(clock: Clock) -> None:
    """A plugin's connection without a number is logged; every connection's output is still sent."""
    done: list[str] = []
    logged: list[dict[str, object]] = []

    class Numbered:
        connection_id = 3

        def _flush(self) -> None:
            done.append("numbered")

    class Unnumbered:
        def _flush(self) -> None:
            done.append("unnumbered")

    flusher = Flusher(clock, Stats(started=0))
    globalLogPublisher.addObserver(logged.append)
    try:
        flusher.add(Unnumbered())  # type: ignore[arg-type]
        flusher.add(Numbered())  # type: ignore[arg-type]
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert done == ["unnumbered", "numbered"]  # as queued
    assert [event["log_format"] for event in logged if "log_failure" in event] == [
        "the connections to flush could not be ordered"
    ]
    assert clock.getDelayedCalls() == []


def test_a_connection_read_again_by_its_end_is_not_kept(clock: Clock) -> None:
    """One that the end-of-input read asks to be looked at again is left to the reactor, not kept."""

    class Connection:
        connection_id = 4

        def _read_end(self) -> None:
            flusher.read_end(self)  # more input than two reads take

        def _flush(self) -> None:
            pass

    flusher = Flusher(clock, Stats(started=0))
    connection = Connection()
    flusher.read_end(connection)  # type: ignore[arg-type]
    clock.advance(0)
    assert flusher._ending == []
    assert clock.getDelayedCalls() == []


def test_end_of_input_looked_for_before_the_flush(clock: Clock) -> None:
    """A connection read is asked for its end of input before output is sent.

    After new connections' first reads, once for several reads in a row,
    with a flush scheduled even when the read made no output; what the end
    made for others goes in that flush, and one that raises is logged
    without stopping anyone's output.
    """
    done: list[str] = []
    logged: list[dict[str, object]] = []

    class Connection:
        def __init__(self, name: str, fail: bool = False) -> None:
            self.name = name
            self.fail = fail
            self.connection_id = 3

        def _read_waiting(self) -> None:
            done.append(f"first {self.name}")

        def _read_end(self) -> None:
            if self.fail:
                raise RuntimeError("a plugin's disconnected hook failed")
            done.append(f"end {self.name}")
            flusher.add(other)  # the departure, told to someone else

        def _flush(self) -> None:
            done.append(f"sent {self.name}")

    flusher = Flusher(clock, Stats(started=0))
    broken, done_reading, new, other = (
        Connection("broken", True),
        Connection("done"),
        Connection("new"),
        Connection("other"),
    )
    globalLogPublisher.addObserver(logged.append)
    try:
        flusher.read_end(broken)  # type: ignore[arg-type]
        flusher.read_end(done_reading)  # type: ignore[arg-type]
        flusher.read_end(done_reading)  # type: ignore[arg-type]
        assert len(clock.getDelayedCalls()) == 1
        flusher.read_first(new)  # type: ignore[arg-type]
        flusher.add(new)
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert done == ["first new", "end done", "sent new", "sent other"]
    failures = [event for event in logged if "log_failure" in event]
    assert [event["log_failure"].getErrorMessage() for event in failures] == [  # type: ignore[attr-defined]
        "a plugin's disconnected hook failed"
    ]
    assert clock.getDelayedCalls() == []
    clock.advance(0)
    assert done == ["first new", "end done", "sent new", "sent other"]  # once


def test_text_refused_at_the_call(clock: Clock) -> None:
    """Output that is not an Event raises TypeError where it is delivered.

    The connection's other output is still sent, and so is everyone else's.
    """
    factory = ChatFactory(Settings(), clock=clock)
    alice, bob = register(factory, "alice"), register(factory, "bob")
    alice.output()
    alice.protocol.deliver(events.notice("one"))
    with pytest.raises(
        TypeError, match="must be a chatservice.events.Event .* not str: 'not an event'"
    ):
        alice.protocol.deliver("not an event")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not str"):
        alice.protocol.answer("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not str"):
        factory.registry.broadcast("#lobby", "to all", None)  # type: ignore[arg-type]
    alice.protocol.deliver(events.notice("two"))
    assert alice.lines() == ["*** one", "*** two"]
    assert bob.lines() == []  # alice, first in the room, refused it


def test_text_refused_while_output_is_held(clock: Clock) -> None:
    """Output that is not an Event is refused at the call while the client is behind."""
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    alice.stop_reading()
    with pytest.raises(TypeError, match="not str"):
        alice.protocol.deliver("held")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="not int"):
        alice.protocol.answer(5)  # type: ignore[arg-type]
    alice.protocol.deliver(events.notice("kept"))
    alice.resume_reading()
    assert alice.lines() == ["*** kept"]


def test_text_refused_by_a_held_session(clock: Clock) -> None:
    """A session held for a resume refuses text at the call, keeping what it has."""
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    held = HeldClient(alice.session, None, limit=10, max_bytes=1000)  # type: ignore[arg-type]
    held.deliver(kept := events.notice("kept"))
    with pytest.raises(TypeError, match="not str"):
        held.deliver("lost")  # type: ignore[arg-type]
    assert (held.dropped, held.missed()) == (0, ([kept], 1))


def test_answer_all_is_answer_each(clock: Clock) -> None:
    """Several answers at once are sent as answered one by one, in order."""
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    alice.protocol.answer(events.notice("one"))
    alice.protocol.answer_all([events.notice("two"), events.error("three", "x")])
    alice.protocol.answer_all([])
    alice.protocol.answer(events.notice("four"))
    assert alice.lines() == ["*** one", "*** two", "!!! three", "*** four"]


def test_answer_all_refuses_text_before_queueing_any(clock: Clock) -> None:
    """If one of several answers is not an Event, none of them is sent."""
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    with pytest.raises(TypeError, match="not str"):
        alice.session.answer_all([events.notice("one"), "two"])  # type: ignore[list-item]
    alice.session.answer_all([events.notice("three")])
    assert alice.lines() == ["*** three"]


def test_answer_all_while_output_is_held(clock: Clock) -> None:
    """Answers given at once to a client behind in reading wait for it, in order."""
    factory = ChatFactory(Settings(), clock=clock)
    alice = register(factory, "alice")
    alice.stop_reading()
    alice.protocol.deliver(events.notice("one"))
    alice.session.answer_all([events.notice("two"), events.notice("three")])
    alice.resume_reading()
    assert alice.lines() == ["*** one", "*** two", "*** three"]


@pytest.mark.parametrize("kind", ["lines", "frames", "web", "irc", "irc, server-time"])
def test_after_a_busy_flush_everything_still_goes_out(kind: str) -> None:
    """A user sent many lines in one flush is still sent what comes next, of every kind.

    A connection keeps one output list, emptied by each flush
    (OutputMixin._flush); each way of giving it output (a room's fan-out,
    a private message, answers, a scrollback) must still have it flushed
    once it is empty again.
    """
    factory = ChatFactory(
        Settings(flood_burst=10**9, flood_rate=1e9),
        clock=Clock(),
        run_in_thread=run_at_once,
    )
    speaker = _User(factory, "lines", 0)
    user = _User(factory, kind, 1)
    factory.flusher.flush()

    def sent_after(*said: tuple[_User, str]) -> int:
        before = len(user.transport.value())
        for who, text in said:
            who.say(text)
        factory.flusher.flush()
        return len(user.transport.value()) - before

    burst = [(speaker, f"line {n}") for n in range(12)]
    assert sent_after(*burst) > 0
    assert sent_after((speaker, "one line")) > 0  # the room's fan-out
    assert sent_after(*burst) > 0
    assert sent_after((speaker, f"/msg {user.name} psst")) > 0  # its own
    assert sent_after(*burst) > 0
    assert sent_after((user, "/help")) > 0  # answers; IRC: its scrollback
    assert sent_after(*burst, (user, "/help")) > 0
    assert sent_after((speaker, "and again")) > 0
    connection = _connection_of(user)
    assert sent_after(*burst) > 0
    connection.answer_all([events.notice("a"), events.notice("b")])
    assert sent_after() > 0  # a batch of answers (a scrollback, /history)
    assert sent_after(*burst) > 0
    OutputMixin.deliver(connection, events.notice("c"))  # a plugin's class's
    assert sent_after() > 0
    assert factory.stats.lines_out == speaker.lines_got() + user.lines_got()


def _connection_of(user: _User) -> OutputMixin:
    """The server's side of C{user}'s connection: its send queue."""
    connection = user.web if user.kind == "web" else user.connection.protocol
    assert isinstance(connection, OutputMixin)
    return connection


def test_output_that_cannot_be_joined_does_not_stop_what_comes_after(
    clock: Clock,
) -> None:
    """A flush that fails on a user's many pieces is logged; its later output still goes out."""
    factory = ChatFactory(
        Settings(flood_burst=10**9, flood_rate=1e9),
        clock=clock,
        run_in_thread=run_at_once,
    )
    speaker, alice = register(factory, "speaker"), register(factory, "alice")
    for n in range(10):
        speaker.enter(f"line {n}")
    alice.protocol._out.append("not bytes")  # as a plugin's encoder might
    logged: list[dict[str, object]] = []
    globalLogPublisher.addObserver(logged.append)
    try:
        assert alice.lines() == []  # lost, with the line it came with
    finally:
        globalLogPublisher.removeObserver(logged.append)
    assert [event["log_format"] for event in logged if "log_failure" in event] == [
        "connection {connection_id}: its output could not be sent"
    ]
    speaker.enter("later")
    assert alice.lines() == ["<speaker> later"]
