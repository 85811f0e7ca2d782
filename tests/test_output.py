"""The output path: the direct-send writer on real TCP, and output's type."""

import pytest
import pytest_twisted
from harness import Harness, wait_until

from twisted.internet import tcp
from twisted.internet.task import Clock

from chatservice import events
from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.held import HeldClient
from chatservice.testing import register


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
