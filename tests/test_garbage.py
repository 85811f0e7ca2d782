"""A closed session leaves nothing for Python's cyclic garbage collector.

Objects that refer to each other in a cycle (a connection and its session, a
Deferred whose result is its owner, a Failure whose traceback holds the frame
that holds the Failure) are freed only when the collector runs, and every
collection walks all the young objects.  A short session is the benchmark's
weakest cell (issue 19): each must be freed by reference counting alone, on
every front end, however it ends.

The clients are plain blocking sockets in a thread of the reactor's pool
(not in the reactor's thread, which serves them), so that the only objects
made in this process's reactor are the server's.
"""

import base64
import collections
import gc
import json
import os
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from certs import make_ca, make_server_cert
from harness import Harness, bounded, wait_until

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.frontends.frameformat import FrameType, encode_frame
from chatservice.frontends.frames import frames
from chatservice.frontends.irc import irc_front_end
from chatservice.frontends.web import web
from chatservice.service import ChatService

LOCAL = "tcp:0:interface=127.0.0.1"

#: Sessions of each kind run with the collector off.
SESSIONS = 5


#: Opens a connection to the server's port under test.
Connect = Callable[[], socket.socket]


def _until(sock: socket.socket, needle: bytes, seen: bytes = b"") -> bytes:
    """Read until C{needle} has come; fail if the server closes first."""
    while needle not in seen:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed before {needle!r}: {seen[-300:]!r}")
        seen += data
    return seen


def _drain(sock: socket.socket) -> None:
    """Read until the server closes the connection, then close ours."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass  # autobahn aborts a WebSocket's TCP after its close handshake
    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with a reset (SO_LINGER 0): a dropped connection."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def lines_churn(connect: Connect, n: int) -> None:
    """The benchmark's churn: /nick, the welcome, a line, a half-close."""
    sock = connect()
    sock.sendall(b"/nick L%d\n" % n)
    _until(sock, b"Welcome, L%d!" % n)
    sock.sendall(b"churn\n")
    sock.shutdown(socket.SHUT_WR)
    _drain(sock)


def lines_quit(connect: Connect, n: int) -> None:
    """A room joined, a line, an action, a private line, then /quit."""
    sock = connect()
    sock.sendall(b"/nick Q%d\n" % n)
    _until(sock, b"Welcome, Q%d!" % n)
    sock.sendall(b"/join #garbage\nhello\n/me waves\n/msg Q%d hi\n/quit bye\n" % n)
    _drain(sock)


def lines_dropped(connect: Connect, n: int) -> None:
    """A registered user whose connection is reset."""
    sock = connect()
    sock.sendall(b"/nick R%d\n/ping x\n" % n)
    _until(sock, b"PONG")
    _reset(sock)


def lines_refused_nickname(connect: Connect, n: int) -> None:
    """A nickname refused, then one taken, then a half-close."""
    sock = connect()
    sock.sendall(b"bad nick!\n")
    _until(sock, b"!!! ")
    sock.sendall(b"/nick N%d\n" % n)
    _until(sock, b"Welcome, N%d!" % n)
    sock.shutdown(socket.SHUT_WR)
    _drain(sock)


def frames_churn(connect: Connect, n: int) -> None:
    """A frame client registers, says a line, pings, and half-closes."""
    sock = connect()
    sock.sendall(encode_frame(FrameType.INPUT, {"text": f"F{n}"}))
    _until(sock, b'"welcome"')
    sock.sendall(
        encode_frame(FrameType.INPUT, {"text": "hello"})
        + encode_frame(FrameType.PING, {"token": "t"})
    )
    sock.shutdown(socket.SHUT_WR)
    _drain(sock)


def irc_quit(connect: Connect, n: int) -> None:
    """An IRC client registers, joins, speaks, and quits."""
    sock = connect()
    sock.sendall(b"CAP LS 302\r\nNICK I%d\r\nUSER i 0 * :i\r\nCAP END\r\n" % n)
    _until(sock, b" 366 ")
    sock.sendall(b"JOIN #garbage\r\nPRIVMSG #garbage :hello\r\nQUIT :bye\r\n")
    _drain(sock)


def _ws_frame(payload: bytes, opcode: int = 0x81) -> bytes:
    """A client's (masked) WebSocket frame of under 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([opcode, 0x80 | len(payload)]) + mask + masked


def _web_user(connect: Connect, nickname: str) -> socket.socket:
    """A WebSocket to C{/ws}, registered as C{nickname}."""
    sock = connect()
    key = base64.b64encode(os.urandom(16))
    sock.sendall(
        b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
        b"Sec-WebSocket-Version: 13\r\nOrigin: http://127.0.0.1:%d\r\n\r\n"
        % (sock.getpeername()[1], key, sock.getpeername()[1])
    )
    seen = _until(sock, b"\r\n\r\n")
    sock.sendall(_ws_frame(json.dumps({"frame": "INPUT", "text": nickname}).encode()))
    _until(sock, b'"welcome"', seen)
    return sock


def web_quit(connect: Connect, n: int) -> None:
    """A web user quits; the WebSocket's close handshake is answered."""
    sock = _web_user(connect, f"W{n}")
    sock.sendall(_ws_frame(json.dumps({"frame": "INPUT", "text": "/quit"}).encode()))
    _until(sock, b"\x88\x02\x03\xe8")  # the server's close frame: 1000
    sock.sendall(_ws_frame(b"\x03\xe8", 0x88))
    _drain(sock)


def web_dropped(connect: Connect, n: int) -> None:
    """A web user's connection is reset."""
    _reset(_web_user(connect, f"V{n}"))


def web_page(connect: Connect, n: int) -> None:
    """The page and its script, two requests on one connection."""
    sock = connect()
    sock.sendall(
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
        b"GET /chat.js HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    _drain(sock)


Session = Callable[[Connect, int], None]

#: Each kind of session, with the front end it uses.
KINDS: dict[str, tuple[str, Session]] = {
    "lines churn": ("lines", lines_churn),
    "lines /quit": ("lines", lines_quit),
    "lines dropped": ("lines", lines_dropped),
    "lines nickname refused": ("lines", lines_refused_nickname),
    "frames": ("frames", frames_churn),
    "irc": ("irc", irc_quit),
    "web /quit": ("web", web_quit),
    "web dropped": ("web", web_dropped),
    "web page": ("web", web_page),
}


def start(
    chat: Harness, listen: str = LOCAL, resume_grace: float = 0
) -> tuple[ChatFactory, dict[str, int]]:
    """A server with every front end on C{listen}; the port of each."""
    factory = ChatFactory(Settings(max_connect_rate=1e6, resume_grace=resume_grace))
    service = ChatService(
        factory,
        [(listen, serverFromString(reactor, listen))],
        front_ends=[
            (listen, serverFromString(reactor, listen), front_end)
            for front_end in (frames, irc_front_end, web)
        ],
    )
    service.startService()
    chat.services.append(service)
    ports = [port.getHost().port for port in service.ports]
    return factory, dict(zip(["lines", "frames", "irc", "web"], ports, strict=True))


def in_thread(function: Callable[[], None]) -> Deferred[None]:
    """Run C{function} in a thread of its own; fire when it returns.

    A plain thread: Twisted's thread pool leaves a closure cycle behind
    for every call (its C{inContext} refers to itself).
    """
    done: Deferred[None] = Deferred()

    def run() -> None:
        try:
            function()
        except BaseException as error:  # noqa: BLE001 (handed to the test)
            reactor.callFromThread(done.errback, error)
        else:
            reactor.callFromThread(done.callback, None)

    threading.Thread(target=run, daemon=True).start()
    return done


async def garbage_after(
    factory: ChatFactory, session: Session, connect: Connect
) -> collections.Counter[str]:
    """What C{SESSIONS} sessions leave for the cyclic collector, by type.

    One session runs first, with the collector on, for what is made once
    and kept (caches, interned values); then the others with it off.  Only
    objects made meanwhile count: what earlier tests in this process still
    held then (their clients, closing) may become garbage meanwhile too.
    """

    def ended() -> bool:
        return not factory.connections and not len(factory.sessions)

    await bounded(in_thread(lambda: session(connect, SESSIONS)))
    await wait_until(ended, "the first session's end")
    gc.collect()
    # Kept alive (not only their ids) so that no new object can take the
    # id of one that died meanwhile and go uncounted.
    alive = gc.get_objects()
    before = {id(o) for o in alive}
    gc.disable()
    try:
        await bounded(in_thread(lambda: [session(connect, n) for n in range(SESSIONS)]))
        await wait_until(ended, "the sessions' end")
        gc.set_debug(gc.DEBUG_SAVEALL)
        gc.collect()
        return collections.Counter(
            f"{type(o).__module__}.{type(o).__qualname__}"
            for o in gc.garbage
            if id(o) not in before
        )
    finally:
        del alive
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


@pytest.mark.parametrize("kind", list(KINDS))
@pytest_twisted.ensureDeferred
async def test_a_closed_session_leaves_no_cyclic_garbage(
    chat: Harness, kind: str
) -> None:
    """Sessions that ended leave nothing that only the cyclic collector frees."""
    front_end, session = KINDS[kind]
    factory, ports = start(chat)
    address = ("127.0.0.1", ports[front_end])
    found = await garbage_after(
        factory, session, lambda: socket.create_connection(address)
    )
    assert found == {}, f"{SESSIONS} sessions left cyclic garbage: {dict(found)}"


@pytest.mark.parametrize("kind", ["lines dropped", "frames", "web dropped"])
@pytest_twisted.ensureDeferred
async def test_a_session_held_for_resume_leaves_no_cyclic_garbage(
    chat: Harness, kind: str
) -> None:
    """A dropped session held for /resume, then given up, leaves no cycle."""
    front_end, session = KINDS[kind]
    factory, ports = start(chat, resume_grace=0.2)
    address = ("127.0.0.1", ports[front_end])
    found = await garbage_after(
        factory, session, lambda: socket.create_connection(address)
    )
    assert found == {}, f"{SESSIONS} held sessions left cyclic garbage: {dict(found)}"


@pytest.mark.parametrize(
    "kind", ["lines churn", "lines dropped", "frames", "web /quit"]
)
@pytest_twisted.ensureDeferred
async def test_a_closed_tls_session_leaves_none_of_ours_for_the_collector(
    chat: Harness, kind: str, tmp_path: Path
) -> None:
    """Over TLS, none of chatservice's own objects waits for the cyclic collector.

    Twisted's TLS itself leaves a cycle when the client closes without a
    TLS close alert (a Failure kept in a local of the frame its traceback
    holds, in C{TLSMemoryBIOProtocol._flushReceiveBIO}), with the
    transports and the producer registered on them (the send queue's valve,
    which lets go of its connection when told the connection is gone); the
    connection, its session and their objects are not in it.
    """
    front_end, session = KINDS[kind]
    certificate = make_server_cert(make_ca(tmp_path))
    factory, ports = start(chat, certificate.endpoint())
    address = ("127.0.0.1", ports[front_end])
    context = ssl.create_default_context(cafile=str(certificate.ca_path))

    def connect() -> socket.socket:
        return context.wrap_socket(
            socket.create_connection(address), server_hostname="127.0.0.1"
        )

    found = await garbage_after(factory, session, connect)
    ours = {
        kind: n
        for kind, n in found.items()
        if kind.startswith("chatservice.") and kind != "chatservice.output._OutputValve"
    }
    assert ours == {}, f"{SESSIONS} TLS sessions left cyclic garbage: {dict(found)}"
