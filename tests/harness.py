"""Shared helpers for tests against an in-process server on a real port.

The server runs in the test's reactor (pytest-twisted), so every client is a
Twisted client too: a blocking socket would stop the reactor that serves it.
Every wait has a deadline; nothing sleeps.  The C{chat} fixture (in
C{conftest.py}) gives each test a L{Harness} and cleans it up.
"""

import json
import socket
from collections.abc import Callable, Sequence

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import (
    TCP4ClientEndpoint,
    connectProtocol,
    serverFromString,
    wrapClientTLS,
)
from twisted.internet.interfaces import IDelayedCall, IOpenSSLClientConnectionCreator
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import deferLater
from twisted.protocols.basic import LineReceiver
from twisted.python.failure import Failure

from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.frontends.frameformat import (
    FrameDecoder,
    FrameError,
    FrameType,
    encode_frame,
)
from chatservice.frontends.frames import frames as frames_front_end
from chatservice.frontends.lines import LineProtocol
from chatservice.service import ChatService
from chatservice.wireparse import Welcome, parse

#: The longest any single wait may take before the test fails.
WAIT = 10.0

GREETING = [
    "*** Welcome to chatservice.",
    "*** Choose a nickname: type it and press Enter (or use /nick NAME).",
]


class Client(LineReceiver):
    """A chat user: records every line the server sends, in order."""

    delimiter = b"\r\n"
    MAX_LENGTH = 1 << 20

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.disconnected = False

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line.decode("utf-8"))

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.disconnected = True
        self.reason = reason

    def send(self, text: str) -> None:
        """Type one line, ended by CRLF as telnet sends it."""
        self.transport.write(text.encode("utf-8") + b"\r\n")

    def since(self, mark: int) -> list[str]:
        """The lines received after the first C{mark} lines."""
        return self.lines[mark:]


class FrameClient(Protocol):
    """A frame client: records every frame the server sends, decoded.

    C{frames} holds C{(type, body)} pairs, the body as its JSON value;
    C{raw} every byte received (for what is not frames).  It answers the
    server's PINGs, as a program should, unless C{answer_pings} is false.
    """

    def __init__(self, answer_pings: bool = True) -> None:
        self.frames: list[tuple[int, dict]] = []
        self.raw = b""
        self.disconnected = False
        self.answer_pings = answer_pings
        self._decoder = FrameDecoder(max_frame=1 << 24)

    def dataReceived(self, data: bytes) -> None:
        self.raw += data
        self._decoder.feed(data)
        try:
            for frame in self._decoder:
                body = json.loads(frame.body or b"{}")
                self.frames.append((frame.type, body))
                if frame.type == FrameType.PING and self.answer_pings:
                    self.send(FrameType.PONG, body)
        except FrameError:
            pass  # not frames (the server's line to someone typing): see raw

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.disconnected = True
        self.reason = reason

    def send(self, kind: int, body: dict | None = None) -> None:
        """Send one frame of type C{kind} with C{body}."""
        self.transport.write(encode_frame(kind, body))

    def say(self, text: str) -> None:
        """Send an INPUT frame: what a line user would type."""
        self.send(FrameType.INPUT, {"text": text})

    def events(self, since: int = 0) -> list[dict]:
        """The bodies of the EVENT frames from the C{since}th frame on."""
        return [b for t, b in self.frames[since:] if t == FrameType.EVENT]

    def texts(self, since: int = 0) -> list[str]:
        """What the EVENT and ERROR frames say, as C{type: text} or C{!code: text}."""
        shown = []
        for kind, body in self.frames[since:]:
            if kind == FrameType.EVENT:
                shown.append(f"{body['type']}: {body.get('text', '')}")
            elif kind == FrameType.ERROR:
                shown.append(f"!{body['code']}: {body['text']}")
        return shown


class SlowLink(Client):
    """A client on an Internet-like link, not loopback's megabyte buffers.

    Its socket is made with a 1,400-byte MSS and a 16 KiB receive buffer
    before it connects (L{Harness.connect_slow}), and it reads at about
    C{rate} bytes a second: after each read it stops reading for as long
    as that read takes at that rate.  L{stop} stops reading altogether
    until L{go}.
    """

    def __init__(self, rate: float = 400_000) -> None:
        super().__init__()
        self.rate = rate
        self.stopped = False
        self._later: IDelayedCall | None = None

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self.stopped and self._later is None and not self.disconnected:
            self.transport.pauseProducing()
            self._later = reactor.callLater(len(data) / self.rate, self._read_on)

    def _read_on(self) -> None:
        self._later = None
        if not self.stopped:
            self.transport.resumeProducing()

    def stop(self) -> None:
        """Read nothing until L{go}."""
        self.stopped = True
        self.transport.pauseProducing()

    def go(self) -> None:
        """Read again, at C{rate}."""
        self.stopped = False
        if self._later is None:
            self.transport.resumeProducing()

    def connectionLost(self, reason: Failure | None = None) -> None:
        if self._later is not None:
            self._later.cancel()
            self._later = None
        super().connectionLost(reason)


async def wait_until(
    predicate: Callable[[], object], what: str, timeout: float = WAIT
) -> None:
    """Let the reactor run until C{predicate()} is true, at most C{timeout} s."""
    deadline = reactor.seconds() + timeout
    while not predicate():
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await deferLater(reactor, 0.002, lambda: None)


async def bounded(d: Deferred, timeout: float = WAIT) -> object:
    """Wait for C{d}, failing with TimeoutError after C{timeout} seconds.

    The wait is on a proxy, because cancelling C{d} itself need not stop
    it: a C{DeferredList} that has fired, as C{stopService} returns, ignores
    C{cancel()} even while it waits on a Deferred returned by a callback.
    """
    proxy: Deferred = Deferred()

    def forward(result: object) -> None:
        if not proxy.called:
            if isinstance(result, Failure):
                proxy.errback(result)
            else:
                proxy.callback(result)

    d.addBoth(forward)
    return await proxy.addTimeout(timeout, reactor)


class Harness:
    """Starts chat servers and connects clients; cleans all of it up."""

    def __init__(self) -> None:
        self.services: list[ChatService] = []
        self.clients: list[Client] = []

    def start(
        self,
        listen: Sequence[str] = ("tcp:0:interface=127.0.0.1",),
        metrics: str | None = None,
        frames: Sequence[str] = (),
        **settings: object,
    ) -> ChatService:
        """Start a server on the endpoints C{listen}, with C{settings}.

        By default it listens on 127.0.0.1 and a free port.  C{self.ports}
        holds the port numbers bound, in order; C{self.port} is the first.
        Every test client comes from 127.0.0.1, so the per-address connect
        rate is lifted unless a test sets it.  With C{metrics}, an endpoint
        string, it also serves metrics there; C{self.metrics_port} is its port
        number.  With C{frames}, endpoint strings, it serves the frame front
        end there too; C{self.frame_port} is the first one's port number.
        """
        settings.setdefault("max_connect_rate", 1e6)
        # A dropped user leaves at once, as before resuming existed, unless
        # the test is about resuming.
        settings.setdefault("resume_grace", 0)
        factory = ChatFactory(Settings(**settings))  # type: ignore[arg-type]
        endpoints = [(each, serverFromString(reactor, each)) for each in listen]
        metrics_endpoint = None
        if metrics is not None:
            metrics_endpoint = (metrics, serverFromString(reactor, metrics))
        front_ends = [
            (each, serverFromString(reactor, each), frames_front_end) for each in frames
        ]
        service = ChatService(factory, endpoints, metrics_endpoint, None, front_ends)
        service.startService()
        self.services.append(service)
        self.service = service
        self.factory = factory
        self.ports = [
            port.getHost().port
            for port in service.ports
            if port is not service.metrics_port
        ]
        if service.metrics_port is not None:
            self.metrics_port = service.metrics_port.getHost().port
        self.port = self.ports[0]
        if frames:
            self.frame_port = self.ports[len(listen)]
        return service

    async def connect(
        self,
        client: Client | None = None,
        port: int | None = None,
        tls: IOpenSSLClientConnectionCreator | None = None,
    ) -> Client:
        """Connect C{client} (by default a new L{Client}) to the last server.

        It connects to C{port} (by default the first one), over TLS with the
        options C{tls} if given.  The connection is made once TCP is; a TLS
        handshake goes on after that, and may still fail.
        """
        endpoint = TCP4ClientEndpoint(
            reactor, "127.0.0.1", self.port if port is None else port, timeout=5
        )
        if tls is not None:
            endpoint = wrapClientTLS(tls, endpoint)
        if client is None:
            client = Client()
        await bounded(connectProtocol(endpoint, client))
        self.clients.append(client)
        return client

    def connect_slow(self, client: SlowLink) -> SlowLink:
        """Connect C{client} to the last server over an Internet-like link.

        The options must be set before C{connect()} for the MSS and the
        window to be negotiated with them.  A blocking connect is safe
        here: the kernel completes the handshake from the listen backlog,
        without the reactor.
        """
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 1400)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", self.port))
            sock.setblocking(False)
            reactor.adoptStreamConnection(
                sock.fileno(), socket.AF_INET, Factory.forProtocol(lambda: client)
            )
        finally:
            sock.close()  # the reactor has its own copy of the descriptor
        self.clients.append(client)
        return client

    async def frame_user(
        self, nickname: str, client: FrameClient | None = None
    ) -> FrameClient:
        """Connect a frame client to the first frame port, registered as C{nickname}."""
        client = client or FrameClient()
        await self.connect(client, self.frame_port)  # type: ignore[arg-type]
        client.say(nickname)
        await wait_until(
            lambda: any(b.get("type") == "welcome" for b in client.events()),
            f"{nickname}'s welcome",
        )
        return client

    async def greeted(
        self,
        client: Client | None = None,
        port: int | None = None,
        tls: IOpenSSLClientConnectionCreator | None = None,
    ) -> Client:
        """Connect a new client and wait for the server's greeting."""
        client = await self.connect(client, port, tls)
        await wait_until(lambda: len(client.lines) >= 2, "the greeting")
        assert client.lines == GREETING
        return client

    async def user(
        self,
        nickname: str,
        client: Client | None = None,
        port: int | None = None,
        tls: IOpenSSLClientConnectionCreator | None = None,
    ) -> Client:
        """Connect a new client and register it as C{nickname}."""
        client = await self.greeted(client, port, tls)
        client.send(nickname)
        await wait_until(lambda: len(client.lines) >= 4, f"{nickname}'s welcome")
        welcome = parse(client.lines[2])
        assert isinstance(welcome, Welcome), client.lines
        assert (welcome.nick, welcome.online[:8]) == (nickname, "Online ("), welcome
        assert client.lines[3] == "*** Type /help for the commands."
        return client

    def server_side(self, nickname: str) -> LineProtocol:
        """The server's protocol for the user called C{nickname}."""
        (session,) = [
            s for s in self.factory.connections.values() if s.nickname == nickname
        ]
        return session.connection  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Drop every client, stop every server, and wait until all is closed."""
        for client in self.clients:
            if not client.disconnected:
                client.transport.abortConnection()
        await wait_until(
            lambda: all(c.disconnected for c in self.clients), "clients to close"
        )
        for service in self.services:
            if service.running:
                await bounded(service.stopService())
