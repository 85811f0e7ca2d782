"""The web front end: the page and the chat over WebSocket (issue 17).

Real sockets on 127.0.0.1, in the test's reactor: the server is an
in-process L{ChatService} with a line listener and a C{--web} listener; the
web clients are autobahn's own Twisted WebSocket client.
"""

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from autobahn.twisted.websocket import (
    WebSocketClientFactory,
    WebSocketClientProtocol,
)
from autobahn.websocket.protocol import PreparedMessage
from certs import make_ca, make_server_cert
from harness import Harness, bounded, wait_until

from twisted.internet import reactor, tcp
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from chatservice import events
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.frontends.frameformat import FrameDecoder, FrameType, encode_frame
from chatservice.frontends.frames import frames
from chatservice.frontends.web import (
    ChatWebSocketFactory,
    client_address,
    event_message,
    origin_allowed,
    web,
    ws_frame,
)
from chatservice.interfaces import IConnection, IServingFrontEnd
from chatservice.service import ChatService


class WebClient(WebSocketClientProtocol):
    """A browser's WebSocket, as a test sees it: every message, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[dict[str, Any]] = []
        self.opened = False
        self.closed: tuple[int | None, str | None] | None = None
        self.gone: Deferred[None] = Deferred()

    def onOpen(self) -> None:
        self.opened = True

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.messages.append(json.loads(payload.decode("utf-8")))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.closed = (code, reason)

    def connectionLost(self, reason: Failure) -> None:
        super().connectionLost(reason)
        if not self.gone.called:
            self.gone.callback(None)

    def send(self, frame: str, **body: object) -> None:
        """Send one JSON message."""
        self.sendMessage(json.dumps({"frame": frame, **body}).encode("utf-8"))

    def say(self, text: str) -> None:
        """Type C{text}, as the page sends it."""
        self.send("INPUT", text=text)

    def events(self, start: int = 0) -> list[tuple[object, ...]]:
        """The messages from C{start} on, without their times."""
        return [
            tuple(v for k, v in message.items() if k != "time")
            for message in self.messages[start:]
        ]


class FrameClient(Protocol):
    """A program on the frame port: every frame's body, in order."""

    def __init__(self) -> None:
        self.decoder = FrameDecoder(1 << 20)
        self.bodies: list[dict[str, Any]] = []

    def dataReceived(self, data: bytes) -> None:
        self.decoder.feed(data)
        for frame in self.decoder:
            self.bodies.append(json.loads(frame.body or b"{}"))

    def say(self, text: str) -> None:
        self.transport.write(encode_frame(FrameType.INPUT, {"text": text}))


class DeafClient(WebClient):
    """A WebSocket whose peer stopped answering: no pong to any ping."""

    def onPing(self, payload: bytes) -> None:
        pass


class WebServer:
    """An in-process chat server with a line port and a web port."""

    def __init__(
        self, chat: Harness, web_endpoint: str | None = None, **settings: object
    ) -> None:
        settings.setdefault("max_connect_rate", 1e6)
        settings.setdefault("resume_grace", 0)
        self.chat = chat
        self.factory = ChatFactory(Settings(**settings))  # type: ignore[arg-type]
        line = "tcp:0:interface=127.0.0.1"
        service = ChatService(
            self.factory,
            [(line, serverFromString(reactor, line))],
            front_ends=[
                ("web", serverFromString(reactor, web_endpoint or line), web),
                ("frames", serverFromString(reactor, line), frames),
            ],
        )
        service.startService()
        chat.services.append(service)
        chat.factory = self.factory
        ports = [p.getHost().port for p in service.ports]
        self.line_port, self.web_port, self.frame_port = ports
        chat.port = self.line_port
        self.clients: list[WebClient] = []

        self.secure = web_endpoint is not None and web_endpoint.startswith("ssl:")

    @property
    def origin(self) -> str:
        scheme = "https" if self.secure else "http"
        return f"{scheme}://127.0.0.1:{self.web_port}"

    async def connect(
        self,
        origin: str | None = "",
        protocols: list[str] | None = None,
        headers: dict[str, str] | None = None,
        kind: type[WebClient] = WebClient,
        tls: object = None,
    ) -> WebClient:
        """Open a WebSocket to C{/ws}, from the page's own origin by default."""
        scheme = "wss" if tls is not None else "ws"
        factory = WebSocketClientFactory(
            f"{scheme}://127.0.0.1:{self.web_port}/ws",
            origin=self.origin if origin == "" else origin,
            protocols=protocols,
            headers=headers,
        )
        factory.protocol = kind
        client: WebClient = factory.buildProtocol(None)
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.web_port, timeout=5)
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)
        await bounded(connectProtocol(endpoint, client))
        self.clients.append(client)
        return client

    async def greeted(self, **options: Any) -> WebClient:
        """A WebSocket that got HELLO and the greeting."""
        client = await self.connect(**options)
        await wait_until(lambda: len(client.messages) >= 2, "HELLO and the greeting")
        return client

    async def user(self, nickname: str) -> WebClient:
        """A web user registered as C{nickname}, with everything before read."""
        client = await self.greeted()
        client.say(nickname)
        client.say("/ping ready")
        await wait_until(
            lambda: client.messages[-1].get("type") == "pong",
            f"{nickname}'s welcome",
        )
        assert client.messages[2]["type"] == "welcome", client.messages
        del client.messages[-1]
        return client

    async def close(self) -> None:
        for client in self.clients:
            if client.transport is not None and not client.gone.called:
                client.transport.abortConnection()
        for client in self.clients:
            await bounded(client.gone)


@pytest_twisted.async_yield_fixture
async def server(chat: Harness):  # type: ignore[no-untyped-def]
    """A server with a web port; its web clients are dropped after the test."""
    servers: list[WebServer] = []

    def start(web_endpoint: str | None = None, **settings: object) -> WebServer:
        servers.append(WebServer(chat, web_endpoint, **settings))
        return servers[-1]

    try:
        yield start
    finally:
        for each in servers:
            await each.close()


class _Answer(Protocol):
    """Sends one raw HTTP request and keeps the whole answer."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.data = b""
        self.done: Deferred[bytes] = Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.done.callback(self.data)


async def get(
    port: int, path: bytes, *headers: bytes
) -> tuple[int, dict[bytes, bytes], bytes]:
    """GET C{path} as it is (no normalising): the status, headers and body."""
    request = b"\r\n".join(
        [
            b"GET " + path + b" HTTP/1.1",
            b"Host: 127.0.0.1",
            b"Connection: close",
            *headers,
        ]
    )
    answer = _Answer(request + b"\r\n\r\n")
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port, timeout=5)
    await bounded(connectProtocol(endpoint, answer))
    data = await bounded(answer.done)
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    fields = {}
    for line in lines:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    return int(status.split()[1]), fields, body


@pytest_twisted.ensureDeferred
async def test_hello_then_the_greeting(server) -> None:  # type: ignore[no-untyped-def]
    """A WebSocket gets HELLO, then the greeting as an EVENT, in JSON."""
    web_server = server()
    alice = await web_server.greeted()
    hello, greeting = alice.messages
    assert hello == {
        "frame": "HELLO",
        "server": "chatservice",
        "version": hello["version"],
        "versions": [1],
        "max_frame": 65536,
        "heartbeat": 30,
        "max_line": 2048,
    }
    assert alice.events(1) == [
        (
            "EVENT",
            "notice",
            "Welcome to chatservice.\n"
            "Choose a nickname: type it in the box below and press Enter.",
        )
    ]


@pytest_twisted.ensureDeferred
async def test_web_line_and_frame_users_talk(chat: Harness, server) -> None:  # type: ignore[no-untyped-def]
    """A web, a telnet and a frame user in one room each see the others' lines."""
    web_server = server()
    carol = FrameClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", web_server.frame_port)
    await bounded(connectProtocol(endpoint, carol))
    carol.say("carol")
    await wait_until(
        lambda: any(b.get("type") == "welcome" for b in carol.bodies), "carol"
    )
    alice = await web_server.user("alice")
    bob = await chat.user("bob")
    await wait_until(lambda: alice.messages[-1].get("type") == "join", "bob's join")
    assert alice.events(-1) == [("EVENT", "join", "#lobby", "bob")]
    mark = len(alice.messages)
    alice.say("hello bob\nhow are you?")
    await wait_until(lambda: len(bob.lines) >= 6, "alice's two lines")
    assert bob.lines[-2:] == ["<alice> hello bob", "<alice> how are you?"]
    bob.send("fine, <b>thanks</b>")
    await wait_until(lambda: len(alice.messages) > mark, "bob's line")
    assert alice.events(mark) == [
        ("EVENT", "chat", "#lobby", "bob", "fine, <b>thanks</b>")
    ]
    carol.say("hi both")
    await wait_until(lambda: len(alice.messages) > mark + 1, "carol's line")
    assert alice.events(mark + 1) == [("EVENT", "chat", "#lobby", "carol", "hi both")]
    await wait_until(lambda: "<carol> hi both" in bob.lines, "carol's line for bob")
    said = [(b["nick"], b["text"]) for b in carol.bodies if b.get("type") == "chat"]
    assert said == [
        ("alice", "hello bob\nhow are you?"),
        ("bob", "fine, <b>thanks</b>"),
    ]
    carol.transport.loseConnection()


@pytest_twisted.ensureDeferred
async def test_a_newcomer_gets_the_scrollback_marked_as_history(
    chat: Harness,
    server,  # type: ignore[no-untyped-def]
) -> None:
    """A web user joining a room gets its last lines, marked history, with their time."""
    web_server = server()
    bob = await chat.user("bob")
    bob.send("said before alice came")
    bob.send("/ping sent")
    await wait_until(lambda: "*** PONG sent" in bob.lines, "bob's line said")
    alice = await web_server.user("alice")
    (said,) = [m for m in alice.messages if m.get("history")]
    assert said["frame"] == "EVENT" and said["type"] == "chat"
    assert (said["nick"], said["text"]) == ("bob", "said before alice came")
    assert said["time"].endswith("Z")


@pytest_twisted.ensureDeferred
async def test_commands_work_as_on_telnet(chat: Harness, server) -> None:  # type: ignore[no-untyped-def]
    """Slash commands typed on the web get the same answers as on telnet."""
    web_server = server()
    alice = await web_server.user("alice")
    bob = await chat.user("bob")
    alice.say("/me waves")
    await wait_until(lambda: "* alice waves" in bob.lines, "alice's action")
    mark = len(alice.messages)
    alice.say("/join #rust")
    alice.say("/topic all about rust")
    alice.say("/msg bob psst")
    alice.say("/nosuchcommand")
    alice.say("/ping done")
    await wait_until(lambda: alice.messages[-1].get("type") == "pong", "the answers")
    answers = alice.events(mark)
    expected = [
        ("EVENT", "room", "#rust", ""),
        ("EVENT", "topic", "#rust", "alice", "all about rust"),
        ("EVENT", "private_sent", "bob", "psst"),
    ]
    assert [a for a in answers if a in expected] == expected, answers
    (error,) = [m for m in alice.messages[mark:] if m["frame"] == "ERROR"]
    assert error["code"] == "unknown_command"
    await wait_until(lambda: "*alice* psst" in bob.lines, "the private message")


@pytest_twisted.ensureDeferred
async def test_a_bad_message_gets_an_error_and_the_connection_goes_on(server) -> None:  # type: ignore[no-untyped-def]
    """Not JSON, binary, or no text: an ERROR bad_frame each, and the chat goes on."""
    web_server = server()
    alice = await web_server.greeted()
    alice.sendMessage(b"hello")
    alice.sendMessage(b'{"frame": "INPUT"}', isBinary=True)
    alice.sendMessage(b'{"frame": "EVENT", "text": "x"}')
    alice.send("INPUT", text=5)
    alice.send("INPUT", text="x" * 2049)
    alice.send("PING", token="17")
    await wait_until(lambda: len(alice.messages) >= 8, "six answers")
    assert [(m["frame"], m.get("code")) for m in alice.messages[2:]] == [
        ("ERROR", "bad_frame"),
        ("ERROR", "bad_frame"),
        ("ERROR", "bad_frame"),
        ("ERROR", "bad_frame"),
        ("ERROR", "line_too_long"),
        ("PONG", None),
    ]
    assert alice.messages[-1] == {"frame": "PONG", "token": "17"}
    assert alice.messages[2]["text"] == "the message is not valid JSON"


@pytest_twisted.ensureDeferred
async def test_an_oversize_message_closes_the_websocket(chat: Harness, server) -> None:  # type: ignore[no-untyped-def]
    """A message over --max-frame: an ERROR frame_too_large, then close code 1009."""
    web_server = server(max_frame=1000, resume_grace=60)
    bob = await chat.user("bob")
    alice = await web_server.user("alice")
    alice.sendMessage(json.dumps({"frame": "INPUT", "text": "x" * 1001}).encode())
    await bounded(alice.gone)
    assert alice.messages[-1] == {
        "frame": "ERROR",
        "code": "frame_too_large",
        "text": "message too large (max 1000 bytes)",
    }
    assert alice.closed is not None and alice.closed[0] == 1009
    await wait_until(lambda: "alice has left" in bob.lines[-1], "alice's leave")
    assert bob.lines[-1] == "*** alice has left (frame error: frame_too_large)"


@pytest_twisted.ensureDeferred
async def test_another_origin_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    """A page from another origin cannot open the chat's WebSocket (403)."""
    web_server = server()
    evil = await web_server.connect(origin="http://evil.example")
    await bounded(evil.gone)
    assert not evil.opened and evil.messages == []
    assert web_server.factory.connections == {}


@pytest_twisted.ensureDeferred
async def test_web_origin_names_the_origins_allowed(server) -> None:  # type: ignore[no-untyped-def]
    """With --web-origin, that origin may connect, and the page's own may not."""
    web_server = server(web_origin=("https://chat.example.com",))
    allowed = await web_server.greeted(origin="https://chat.example.com")
    assert allowed.messages[0]["frame"] == "HELLO"
    own = await web_server.connect()
    await bounded(own.gone)
    assert not own.opened


@pytest.mark.parametrize(
    ("origin", "host", "allowed", "ok"),
    [
        (None, "chat.example.com", (), True),
        ("https://chat.example.com", "chat.example.com", (), True),
        ("http://chat.example.com:8080", "chat.example.com:8080", (), True),
        ("https://CHAT.example.com", "chat.example.com", (), True),
        ("https://chat.example.com", "chat.example.com:8080", (), False),
        ("https://evil.example", "chat.example.com", (), False),
        ("null", "chat.example.com", (), False),
        ("https://chat.example.com.evil.example", "chat.example.com", (), False),
        ("https://a.example", "chat.example.com", ("https://a.example",), True),
        ("https://chat.example.com", "chat.example.com", ("https://a.example",), False),
    ],
)
def test_origin_rule(
    origin: str | None, host: str, allowed: tuple[str, ...], ok: bool
) -> None:
    """An origin is allowed when it is the page's own, or one of --web-origin."""
    assert origin_allowed(origin, host, allowed) is ok


@pytest.mark.parametrize(
    ("peer", "header", "trusted", "client"),
    [
        ("10.0.0.2", "203.0.113.9", (), "10.0.0.2"),
        ("10.0.0.2", "203.0.113.9", ("10.0.0.0/8",), "203.0.113.9"),
        ("198.51.100.1", "203.0.113.9", ("10.0.0.0/8",), "198.51.100.1"),
        ("10.0.0.2", "1.2.3.4, 203.0.113.9, 10.0.0.7", ("10.0.0.0/8",), "203.0.113.9"),
        ("10.0.0.2", "nonsense", ("10.0.0.0/8",), "10.0.0.2"),
        ("10.0.0.2", None, ("10.0.0.0/8",), "10.0.0.2"),
    ],
)
def test_x_forwarded_for_is_believed_only_from_a_trusted_proxy(
    peer: str, header: str | None, trusted: tuple[str, ...], client: str
) -> None:
    """X-Forwarded-For names the client only when a --trusted-proxy sent it."""
    address = client_address(IPv4Address("TCP", peer, 4321), header, trusted)
    assert address.host == client  # type: ignore[attr-defined]


@pytest_twisted.ensureDeferred
async def test_per_address_limits_apply_behind_a_trusted_proxy(server) -> None:  # type: ignore[no-untyped-def]
    """Behind a trusted proxy, --max-per-ip counts the forwarded addresses."""
    web_server = server(max_per_ip=1, trusted_proxy=("127.0.0.1/32",))
    first = await web_server.greeted(headers={"X-Forwarded-For": "203.0.113.9"})
    other = await web_server.greeted(headers={"X-Forwarded-For": "203.0.113.10"})
    again = await web_server.connect(headers={"X-Forwarded-For": "203.0.113.9"})
    await bounded(again.gone)
    assert again.messages == [
        {
            "frame": "ERROR",
            "code": "refused",
            "text": "too many connections from your address (at most 1)",
        }
    ]
    assert again.closed is not None and again.closed[0] == 4000
    hosts = sorted(s.host for s in web_server.factory.connections.values())
    assert hosts == ["203.0.113.10", "203.0.113.9"]
    assert first.opened and other.opened


@pytest_twisted.ensureDeferred
async def test_http_connections_count_against_the_per_address_limit(server) -> None:  # type: ignore[no-untyped-def]
    """A page's connection and a WebSocket count against --max-per-ip: no idle hoard."""
    web_server = server(max_per_ip=1)
    alice = await web_server.user("alice")
    code, _, body = await get(web_server.web_port, b"/")
    assert (code, body) == (
        503,
        b"too many connections from your address (at most 1)\n",
    )
    alice.say("/quit")
    await bounded(alice.gone)
    await wait_until(lambda: not web_server.factory.connections, "alice gone")
    code, _, _ = await get(web_server.web_port, b"/")
    assert code == 200


@pytest_twisted.ensureDeferred
async def test_an_unknown_version_is_refused(server) -> None:  # type: ignore[no-untyped-def]
    """A client asking only for a frame version the server lacks is refused."""
    web_server = server()
    v2 = await web_server.connect(protocols=["chatservice.v2"])
    await bounded(v2.gone)
    assert not v2.opened
    v1 = await web_server.greeted(protocols=["chatservice.v1"])
    assert v1.websocket_protocol_in_use == "chatservice.v1"


@pytest_twisted.ensureDeferred
async def test_resume_after_the_connection_drops(chat: Harness, server) -> None:  # type: ignore[no-untyped-def]
    """A web user whose connection dropped resumes, and gets the missed lines."""
    web_server = server(resume_grace=60)
    alice = await web_server.user("alice")
    (token,) = [m["token"] for m in alice.messages if m.get("type") == "resume_token"]
    bob = await chat.user("bob")
    alice.transport.abortConnection()
    await bounded(alice.gone)
    await wait_until(
        lambda: "*** alice lost connection" in bob.lines[-1:], "alice lost"
    )
    bob.send("you missed this")
    again = await web_server.greeted()
    again.say(f"/resume alice {token}")
    await wait_until(
        lambda: any(m.get("text") == "you missed this" for m in again.messages),
        "the missed line",
    )
    kinds = [m.get("type") for m in again.messages[2:]]
    assert kinds[0] == "resumed" and again.messages[2]["count"] == 1
    assert ("EVENT", "chat", "#lobby", "bob", "you missed this") in again.events()
    await wait_until(lambda: "*** alice is back" in bob.lines[-1:], "alice back")


@pytest_twisted.ensureDeferred
async def test_quit_closes_the_websocket_cleanly(server) -> None:  # type: ignore[no-untyped-def]
    """/quit says goodbye, then the WebSocket is closed normally (1000)."""
    web_server = server()
    alice = await web_server.user("alice")
    alice.say("/quit bye")
    await bounded(alice.gone)
    assert alice.messages[-1]["text"] == "Goodbye."
    assert alice.closed is not None and alice.closed[0] == 1000


def test_the_web_front_end_keeps_its_contracts(clock: Clock) -> None:
    """The plugin is a front end serving its own factory; its connection an IConnection."""
    assert verifyObject(IServingFrontEnd, web)
    factory = ChatFactory(Settings(), clock=clock)
    connection = web.build_protocol(factory, 1, IPv4Address("TCP", "127.0.0.1", 1))
    assert verifyObject(IConnection, connection)
    assert connection.session.connection is connection


@pytest.mark.parametrize(
    "event",
    [
        events.chat("bob", "héllo\nthere", "#lobby"),
        events.error("no such room", "no_such_room"),
        events.notice('ünïcode ✓ \\ "quoted"'),
        events.chat("bob", "old", "#lobby").stamped(when=3600.0),
    ],
    ids=["chat", "error", "notice", "history"],
)
def test_a_web_message_is_the_json_of_its_event(event: events.Event) -> None:
    """A web user's message is the event's JSON with its frame type, as a frame's."""
    payload = event_message(event)
    assert ws_frame(event) == PreparedMessage(payload, False, False, True).payloadHybi


def test_a_broadcast_is_framed_once_for_every_web_user() -> None:
    """An event's WebSocket frame is made once, and is autobahn's prepared frame."""
    event = events.chat("bob", "héllo", "#lobby")
    frame = event.encoded(ws_frame)
    assert event.encoded(ws_frame) is frame
    body = json.dumps(
        {"frame": "EVENT", **event.as_dict()}, ensure_ascii=False, separators=(",", ":")
    ).encode("utf-8")
    assert frame == PreparedMessage(body, False, False, True).payloadHybi


class FakeWebSocket:
    """What a web connection uses of its autobahn protocol."""

    CLOSE_STATUS_CODE_NORMAL = 1000

    def __init__(self) -> None:
        self.transport = StringTransport()
        # The HTTP channel is the transport's producer until the takeover.
        self.transport.registerProducer(object(), True)
        self.factory = ChatWebSocketFactory(ChatFactory(Settings()))
        self.closed: list[int] = []

    def sendClose(self, code: int) -> None:
        self.closed.append(code)


def test_the_send_queue_applies_to_web_output(clock: Clock) -> None:
    """Web output goes through the send queue: framed, and bounded by --max-sendq."""
    factory = ChatFactory(Settings(max_sendq=1000), clock=clock)
    address = IPv4Address("TCP", "127.0.0.1", 1)
    connection = web.build_protocol(factory, 1, address)
    factory.connections[1] = connection.session
    assert connection.session.connection is connection
    websocket = FakeWebSocket()
    connection.opened(websocket)  # type: ignore[arg-type]
    clock.advance(0)
    transport = websocket.transport
    assert transport.value().startswith(b'\x81\x7a{"frame":"HELLO",')
    transport.clear()
    event = events.chat("bob", "hi", "#lobby")
    connection.deliver(event)
    clock.advance(0)
    assert transport.value() == event.encoded(ws_frame)
    # The client stops reading: past --max-sendq, it is disconnected.
    transport.producer.pauseProducing()
    for _ in range(20):
        connection.deliver(events.chat("bob", "x" * 100, "#lobby"))
    assert transport.disconnecting
    clock.advance(0)
    connection.lost(Failure(Exception("gone")))
    assert factory.connections == {}


@pytest_twisted.ensureDeferred
async def test_wss_over_an_ssl_endpoint(chat: Harness, server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """With an ssl: endpoint the page is HTTPS and the chat a wss: WebSocket."""
    cert = make_server_cert(make_ca(tmp_path))
    web_server = server(cert.endpoint())
    authority = Certificate.loadPEM(cert.ca_path.read_bytes())
    tls = optionsForClientTLS("localhost", trustRoot=authority)
    alice = await web_server.greeted(tls=tls)
    alice.say("alice")
    bob = await chat.user("bob")
    bob.send("over TLS")
    chat_line = ("EVENT", "chat", "#lobby", "bob", "over TLS")
    await wait_until(lambda: chat_line in alice.events(), "bob's line")
    alice.say("/quit")
    await bounded(alice.gone)
    assert alice.closed is not None and alice.closed[0] == 1000


@pytest_twisted.ensureDeferred
async def test_a_client_that_answers_no_ping_is_dropped(chat: Harness, server) -> None:  # type: ignore[no-untyped-def]
    """No pong within --heartbeat: the session ends with heartbeat timeout."""
    web_server = server(heartbeat=1.0)
    bob = await chat.user("bob")
    alice = await web_server.greeted(kind=DeafClient)
    alice.say("alice")
    await wait_until(lambda: "*** alice has joined #lobby" in bob.lines, "alice")
    await bounded(alice.gone)
    assert alice.messages[-1]["text"] == (
        "heartbeat timeout: no answer to a ping within 1 seconds; disconnecting"
    )
    await wait_until(lambda: len(bob.lines) > 5, "alice's leave")
    assert bob.lines[-1] == "*** alice has left (heartbeat timeout)"
    # autobahn's timers fire in batches, cancelled or not: let them.
    await wait_until(
        lambda: (
            not [
                call
                for call in reactor.getDelayedCalls()
                if "_BatchedTimer" in repr(call) and call.active()
            ]
        ),
        "autobahn's timers",
    )


@pytest_twisted.ensureDeferred
async def test_a_web_user_who_stops_reading_is_cut_off_and_held(
    chat: Harness,
    server,  # type: ignore[no-untyped-def]
) -> None:
    """Over a small-window link, a page that stops reading overflows --max-sendq and is held."""
    web_server = server(
        max_sendq=64 * 1024,
        resume_grace=60,
        shutdown_timeout=0.5,
        flood_rate=1e6,
        flood_burst=1_000_000,
    )
    made: list[WebClient] = []

    class Factory(WebSocketClientFactory):
        protocol = WebClient

        def buildProtocol(self, addr: object) -> WebClient:
            made.append(super().buildProtocol(addr))
            return made[-1]

    factory = Factory(f"ws://127.0.0.1:{web_server.web_port}/ws")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
        sock.settimeout(5)
        sock.connect(("127.0.0.1", web_server.web_port))
        sock.setblocking(False)
        reactor.adoptStreamConnection(sock.fileno(), socket.AF_INET, factory)
    finally:
        sock.close()
    await wait_until(lambda: made and len(made[0].messages) >= 2, "alice's greeting")
    (alice,) = made
    web_server.clients.append(alice)
    alice.say("alice")
    bob = await chat.user("bob")
    await wait_until(
        lambda: any(m.get("nick") == "bob" for m in alice.messages), "bob's join"
    )
    alice.transport.pauseProducing()  # the page stops reading
    for n in range(200):
        bob.send(f"{n:03d} " + "x" * 2000)
    await wait_until(lambda: "*** alice lost connection" in bob.lines, "alice cut off")
    stats = web_server.factory.stats
    await wait_until(lambda: stats.closed["send queue exceeded"] == 1, "the close")
    assert stats.sendq_high_water <= 64 * 1024


def test_flood_control_slows_web_input(clock: Clock) -> None:
    """Past --flood-burst, messages wait for tokens (a line each), in order; none lost."""
    factory = ChatFactory(
        Settings(flood_burst=3, flood_rate=1.0), clock=clock, run_in_thread=run_at_once
    )
    connection = web.build_protocol(factory, 1, IPv4Address("TCP", "127.0.0.1", 1))
    factory.connections[1] = connection.session
    websocket = FakeWebSocket()
    connection.opened(websocket)  # type: ignore[arg-type]
    transport = websocket.transport
    inputs = ["alice", "hello\nworld", "/ping 3", "/ping 4"]
    for text in inputs:
        connection.received(
            json.dumps({"frame": "INPUT", "text": text}).encode(), False
        )
    clock.advance(0)

    def pongs() -> list[str]:
        return re.findall(
            r'"type":"pong","time":"[^"]*","text":"(\d)"',
            transport.value().decode("utf-8", "replace"),
        )

    # alice and the two-line message took the burst: /ping 3 waits.
    assert pongs() == []
    assert transport.producerState == "paused"
    clock.advance(1)
    assert pongs() == ["3"]
    clock.advance(1)
    assert pongs() == ["3", "4"]
    assert transport.producerState == "producing"
    connection.lost(Failure(Exception("gone")))


# The page ------------------------------------------------------------------


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    ("path", "content_type", "marker"),
    [
        (b"/", b"text/html; charset=utf-8", b"<!doctype html>"),
        (b"/chat.js", b"text/javascript; charset=utf-8", b"websocket"),
        (b"/chat.css", b"text/css; charset=utf-8", b"body"),
    ],
)
async def test_the_page_is_served_with_its_headers(
    server,
    path: bytes,
    content_type: bytes,
    marker: bytes,  # type: ignore[no-untyped-def]
) -> None:
    """Each file has its type, no-cache, an ETag, and a CSP without inline script."""
    web_server = server()
    code, headers, body = await get(web_server.web_port, path)
    assert code == 200
    assert headers[b"content-type"] == content_type
    assert headers[b"cache-control"] == b"no-cache"
    csp = headers[b"content-security-policy"]
    assert b"script-src 'self';" in csp and b"unsafe-inline" not in csp
    assert headers[b"x-content-type-options"] == b"nosniff"
    assert marker in body.lower()
    etag = headers[b"etag"]
    code, _, body = await get(web_server.web_port, path, b"If-None-Match: " + etag)
    assert (code, body) == (304, b"")


@pytest_twisted.ensureDeferred
async def test_pipelined_requests_get_one_answer(server) -> None:  # type: ignore[no-untyped-def]
    """Requests sent in one go get one answer and the close, not one each at once."""
    web_server = server()
    one = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    answer = _Answer(one * 500)
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", web_server.web_port, timeout=5)
    await bounded(connectProtocol(endpoint, answer))
    data = await bounded(answer.done)
    assert data.count(b"HTTP/1.1 200 OK") == 1
    assert b"Connection: close" in data


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "header", [b"Content-Length: 1000000000", b"Transfer-Encoding: chunked"]
)
async def test_a_request_body_is_refused_unread(server, header: bytes) -> None:  # type: ignore[no-untyped-def]
    """A request announcing a body gets 413 before any of it is read."""
    web_server = server()
    code, _, body = await get(web_server.web_port, b"/", header)
    assert (code, body) == (413, b"no request body is accepted here\n")


@pytest_twisted.ensureDeferred
@pytest.mark.parametrize(
    "path",
    [
        b"/index.html",
        b"/static/chat.js",
        b"/../web.py",
        b"/%2e%2e/web.py",
        b"/chat.js/../../web.py",
        b"/..%2fweb.py",
        b"/chat.js/x",
        b"/favicon.ico",
        b"/etc/passwd",
    ],
)
async def test_anything_else_is_not_found(server, path: bytes) -> None:  # type: ignore[no-untyped-def]
    """Paths outside the bundle are 404s: no file outside it is ever served."""
    web_server = server()
    code, headers, body = await get(web_server.web_port, path)
    assert code == 404
    assert b"import" not in body
    assert b"script-src 'self'" in headers[b"content-security-policy"]


@pytest_twisted.ensureDeferred
async def test_web_and_frame_users_are_sent_on_the_socket(
    chat: Harness, server
) -> None:  # type: ignore[no-untyped-def]
    """A web and a frame user's lines go out on their sockets, not transport.write.

    As for a line user (C{tests/test_output.py}): the WebSocket's
    transport, taken over from the HTTP channel, is the TCP connection
    itself, so the send queue's direct-send writer sends on it; this fails
    if the takeover ever wraps the transport (each flush would then cost a
    write through Twisted and two C{epoll_ctl}).
    """
    web_server = server()
    carol = FrameClient()
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", web_server.frame_port)
    await bounded(connectProtocol(endpoint, carol))
    carol.say("carol")
    await wait_until(
        lambda: any(b.get("type") == "welcome" for b in carol.bodies), "carol"
    )
    alice = await web_server.user("alice")
    bob = await chat.user("bob")
    await wait_until(lambda: alice.messages[-1].get("type") == "join", "bob's join")
    writes: list[bytes] = []
    for nickname in ("alice", "carol"):
        transport = chat.server_side(nickname).transport
        assert type(transport) is tcp.Server
        transport.write = writes.append  # type: ignore[method-assign]
    mark = len(alice.messages)
    bob.send("hello")
    await wait_until(lambda: len(alice.messages) > mark, "bob's line for alice")
    await wait_until(
        lambda: any(b.get("text") == "hello" for b in carol.bodies),
        "bob's line for carol",
    )
    assert alice.events(mark) == [("EVENT", "chat", "#lobby", "bob", "hello")]
    assert writes == []
    carol.transport.loseConnection()
