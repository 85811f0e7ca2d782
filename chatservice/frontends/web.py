"""The web front end: the chat page, and the frame format's JSON over WebSocket.

C{--web ENDPOINT} serves, over HTTP (or HTTPS with an C{ssl:} endpoint), the
chat page at C{/} (L{chatservice.frontends.webpage}) and a WebSocket at
C{/ws}.  The WebSocket speaks the JSON bodies of the frame format
(docs/frames.md), one JSON object per text message, its frame type in a
C{"frame"} field (docs/web.md):

    {"frame": "EVENT", "type": "chat", "time": "...", "room": "#lobby", ...}

The WebSocket protocol itself (handshake, framing, masking, close, ping) is
autobahn's (L{autobahn.twisted.websocket}); see docs/web.md for why.  What
this module owns:

  - Admission.  The chat core admits a WebSocket as it admits a telnet
    connection (C{--max-clients}, C{--max-per-ip}, bans, connect rate), in
    C{onConnect}, once the C{Origin} is checked (L{origin_allowed}) and the
    client's address known (L{client_address}: C{X-Forwarded-For} only from
    a C{--trusted-proxy}).  The page itself is not a chat connection.
  - Output, through the send queue of L{chatservice.output.OutputMixin},
    bounded by C{--max-sendq} as for every front end.  A server's WebSocket
    frame is not masked, so an event's whole frame is the same bytes for
    every recipient: it is made once per broadcast (L{ws_frame}, cached by
    L{Event.encoded}) and written as it is, as autobahn's C{PreparedMessage}
    does.  Compression (C{permessage-deflate}) is never accepted: it would
    make the bytes differ per connection.
  - Input: INPUT, PING and PONG messages, read in order; paused as the
    session asks (flood control, a command under way), the messages already
    read waiting.  An INPUT takes one flood token per line of its text.
  - Limits: a message longer than C{--max-frame} bytes closes the
    connection (WebSocket close code 1009); autobahn pings a client silent
    for C{--heartbeat} seconds (browsers answer by themselves) and drops it
    if no pong comes within as long again.
"""

import ipaddress
import json
from collections import Counter, deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import (
    WebSocketServerFactory,
    WebSocketServerProtocol,
)
from autobahn.websocket.protocol import PreparedMessage
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IAddress
from twisted.internet.protocol import Protocol, connectionDone
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site
from zope.interface import implementer

from .. import __version__, events
from ..events import SharedEncoding
from ..httpchannel import BodilessChannel, answer
from ..interfaces import IConnection, IServingFrontEnd
from ..logs import format_peer
from ..output import OUTPUT_SLOTS
from ..reasons import HEARTBEAT_TIMEOUT, CloseKind, CloseReason
from ..session import Session
from ..system import set_socket_options
from ..throttle import address_key
from .connection import SessionConnection
from .frameformat import HEADER_SIZE, VERSIONS, Code, encode_event
from .frames import LineTooLong, clean_input
from .webpage import page_root

if TYPE_CHECKING:
    from ..events import Event
    from ..interfaces import IChatServer

#: The WebSocket subprotocol of each frame-format version: a client may ask
#: for one (C{new WebSocket(url, "chatservice.v1")}); none means version 1.
SUBPROTOCOLS = {f"chatservice.v{version}": version for version in VERSIONS}
#: The message types a client sends.
CLIENT_FRAMES = frozenset({"INPUT", "PING", "PONG"})
#: Why a connection is not being read: no reason, as almost always.
_NO_PAUSES: frozenset[str] = frozenset()
#: The WebSocket close code of a refused connection (autobahn, as the RFC,
#: lets an application close only with 1000 or a code of its own, 3000+).
CLOSE_REFUSED = 4000
#: How a web user is greeted: the page has a box to type in.
GREETING = events.notices(
    [
        "Welcome to chatservice.",
        "Choose a nickname: type it in the box below and press Enter.",
    ]
)


def message(frame: str, body: dict[str, Any]) -> bytes:
    """The JSON of one WebSocket message: C{body} with its C{frame} type."""
    value = {"frame": frame, **body}
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: escape it, as JSON may
        return json.dumps(value, separators=(",", ":")).encode("ascii")


def _frame_of(payload: bytes) -> bytes:
    """C{payload} as one whole unmasked WebSocket text frame (a server's)."""
    prepared = PreparedMessage(payload, False, False, True)
    return prepared.payloadHybi  # type: ignore[no-any-return]


def event_message(event: "Event") -> bytes:
    """C{event}'s JSON message: an ERROR for an error, else an EVENT."""
    if event.kind == "error":
        return message("ERROR", {"code": event.code or "error", "text": event.text})
    return message("EVENT", event.as_dict())


def ws_frame(event: "Event") -> bytes:
    """C{event} as the WebSocket frame sent to every web user.

    An encoder for L{Event.encoded}: made once per broadcast.  The JSON is
    the frame format's body for the event (L{encode_event}, made once and
    kept on the event too, as frame users are sent it) with the C{"frame"}
    field first: the same bytes as L{event_message}'s (both write JSON
    alike), without a second C{as_dict} and C{json.dumps} per broadcast
    when frame and web users are in one room.
    """
    body = event.encoded(encode_event)[HEADER_SIZE + 1 :]
    frame = b'{"frame":"ERROR",' if event.kind == "error" else b'{"frame":"EVENT",'
    return _frame_of(frame + body)


def origin_allowed(
    origin: str | None, host: str | None, allowed: Iterable[str]
) -> bool:
    """Whether a browser page from C{origin} may open a WebSocket here.

    No C{Origin} header: not a browser (a browser always sends one), so
    nothing to protect.  With C{allowed} (C{--web-origin}), the origin must
    be one of them, exactly (C{https://chat.example.com}); else it must be
    the page's own: its host and port those of the C{Host} header (the rule
    of gorilla/websocket's C{checkSameOrigin}), whatever the scheme, as a
    TLS proxy in front changes the scheme but not the host.
    """
    if origin is None:
        return True
    origin = origin.strip().lower()
    allowed = list(allowed)
    if allowed:
        return origin in {each.strip().lower().rstrip("/") for each in allowed}
    if host is None:
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and parts.netloc == host.strip().lower()


def client_address(
    peer: IAddress, forwarded_for: str | None, trusted: Iterable[str]
) -> IAddress:
    """The client's address: C{peer}, or from C{X-Forwarded-For} if trusted.

    Only a peer within C{trusted} (C{--trusted-proxy} addresses or
    networks) is believed; then the client is the last address of the
    header that is not itself a trusted proxy (each proxy appends the
    address it got the request from, so earlier ones may be forged).
    """
    host = getattr(peer, "host", None)
    networks = [ipaddress.ip_network(each, strict=False) for each in trusted]
    if host is None or not forwarded_for or not networks:
        return peer

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    if not is_trusted(host):
        return peer
    for each in reversed(forwarded_for.split(",")):
        address = each.strip()
        if is_trusted(address):
            continue
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return peer  # garbage from a proxy we trust: keep the proxy's
        kind = IPv6Address if ip.version == 6 else IPv4Address
        return kind("TCP", str(ip), 0)
    return peer


class BadMessage(ValueError):
    """A client's message that is not one it may send; the connection goes on."""

    code = Code.BAD_FRAME


def _nothing() -> None:
    """What a PONG asks for."""


def parse_message(payload: bytes, binary: bool) -> tuple[str, str]:
    """A client's message: its frame type and its string (text or token)."""
    if binary:
        raise BadMessage("binary messages are not read: send JSON text messages")
    try:
        value = json.loads(payload.decode("utf-8"))
    except (ValueError, RecursionError):
        raise BadMessage("the message is not valid JSON") from None
    if not isinstance(value, dict):
        raise BadMessage("the message must be a JSON object")
    frame = value.get("frame")
    if frame not in CLIENT_FRAMES:
        raise BadMessage(f'"frame" must be one of {", ".join(sorted(CLIENT_FRAMES))}')
    if frame == "INPUT":
        text = value.get("text")
        if not isinstance(text, str):
            raise BadMessage('an INPUT message needs "text", a string')
        return frame, text
    token = value.get("token", "")
    if not isinstance(token, str):
        raise BadMessage(f"a {frame} message's token must be a string")
    return frame, token


@implementer(IConnection)
class WebConnection(SessionConnection):
    """One web user's connection, as its session sees it; see the module docstring.

    Made when the chat core admits the WebSocket (C{onConnect}); it starts
    when the WebSocket is open (L{opened}), on the TCP (or TLS) transport
    the WebSocket took over from the HTTP channel.
    """

    __slots__ = (
        *OUTPUT_SLOTS,
        "transport",
        "factory",
        "connection_id",
        "session",
        "websocket",
        "_pauses",
        "_waiting",
        "_front",
        "_reading",
        "_burst",
        "_failing",
    )

    _encode = SharedEncoding(ws_frame)

    _counts_events = True  # one frame per event: see OutputMixin

    def __init__(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> None:
        self.transport: Any = None
        #: The chat core (what output.py reads as C{factory}: its stats).
        self.factory = server
        self.connection_id = connection_id
        self._init_output(server.flusher, server.settings.max_sendq)
        self._pauses = _NO_PAUSES
        # Messages read and not yet acted on (payload, binary), in order.
        self._waiting: deque[tuple[bytes, bool]] = deque()
        # The first of them, checked: the flood tokens it still owes, and
        # what to do for it.
        self._front: tuple[int, Any] | None = None
        # Whether messages are being acted on (a command may resume input).
        self._reading = False
        self._burst = server.settings.flood_burst
        # Whether autobahn is failing the connection (it sends the close).
        self._failing = False
        self.websocket: ChatWebSocket | None = None
        host: str | None = getattr(address, "host", None)
        #: The user's session: all that is not bytes.
        self.session = Session(
            server, self, connection_id, host, format_peer(host, address)
        )

    def __repr__(self) -> str:
        return f"<WebConnection {self.session!r}>"

    def opened(self, websocket: "ChatWebSocket") -> None:
        """The WebSocket is open: start the output, say HELLO, greet."""
        self.websocket = websocket
        transport = self.transport = websocket.transport
        # The HTTP channel was the transport's producer; the WebSocket took
        # the transport over, and the send queue watches it now.
        transport.unregisterProducer()
        set_socket_options(transport, self.factory.settings.keepalive)
        self._start_output()
        settings = self.factory.settings
        heartbeat = websocket.factory.heartbeat
        self._answer_raw(
            _frame_of(
                message(
                    "HELLO",
                    {
                        "server": "chatservice",
                        "version": __version__,
                        "versions": list(VERSIONS),
                        "max_frame": websocket.factory.max_frame,
                        "heartbeat": int(heartbeat)
                        if heartbeat == int(heartbeat)
                        else heartbeat,
                        "max_line": settings.max_line,
                    },
                )
            )
        )
        self.session.connected(GREETING)

    def lost(self, reason: Failure) -> None:
        """The connection is gone: drop what is unsent, and let the session leave."""
        self._drop_output()
        self._waiting.clear()
        self._front = None
        self.session.connection_lost(reason)
        self._let_go_of_session()

    def heartbeat_expired(self) -> None:
        """No pong to a ping within C{--heartbeat}: close (resumable)."""
        session = self.session
        if session._close_reason is not None:
            return
        seconds = self.factory.settings.heartbeat
        self.deliver(
            events.notice(
                f"{HEARTBEAT_TIMEOUT}: no answer to a ping within {seconds:g} "
                "seconds; disconnecting"
            )
        )
        session.close(HEARTBEAT_TIMEOUT)

    def too_large(self, limit: int) -> None:
        """The client sent a message over C{limit} bytes: it is told, then closed.

        What is queued and the ERROR are sent now, before autobahn's close.
        """
        session = self.session
        if session._close_reason is not None:
            return
        self.answer(
            events.error(f"message too large (max {limit} bytes)", Code.FRAME_TOO_LARGE)
        )
        self._failing = True  # autobahn sends the close frame: see close()
        session.close(CloseReason(CloseKind.FRAME_ERROR, detail=Code.FRAME_TOO_LARGE))

    # Input ------------------------------------------------------------------

    def received(self, payload: bytes, binary: bool) -> None:
        """One message from the client: acted on in order, when not paused."""
        if self.session._close_reason is not None:
            return
        self._waiting.append((payload, binary))
        if not self._pauses:
            self._act()

    def _act(self) -> None:
        """Act on the messages waiting, in order, until none is left or paused."""
        if self._reading:
            return  # a command resumed input while a message was acted on
        self._reading = True
        session = self.session
        try:
            while not self._pauses and session._close_reason is None:
                front = self._front
                if front is None:
                    if not self._waiting:
                        break
                    front = self._checked(*self._waiting.popleft())
                tokens, act = front
                # Paid before it is acted on, in bucketfuls, as a frame's
                # lines are (see chatservice.frontends.frames).
                while tokens > 0:
                    step = min(tokens, self._burst)
                    if not session.take_token(step):
                        break
                    tokens -= step
                if tokens > 0:
                    self._front = (tokens, act)  # until reading resumes
                    break
                self._front = None
                session.resetTimeout()
                act()
        finally:
            self._reading = False

    def _checked(self, payload: bytes, binary: bool) -> tuple[int, Any]:
        """What a message costs in flood tokens, and what to do for it."""
        session = self.session
        try:
            frame, value = parse_message(payload, binary)
            if frame == "INPUT":
                text, lines = clean_input(value, self.factory.settings.max_line)
                return lines, lambda: self._input(text, lines)
        except (BadMessage, LineTooLong) as error:
            text, code = str(error), error.code
            return 1, lambda: session.refuse(text, code)
        if frame == "PING":
            pong = _frame_of(message("PONG", {"token": value}))
            return 1, lambda: self._answer_raw(pong)
        return 1, _nothing  # a PONG

    def _input(self, text: str, lines: int) -> None:
        """Hand an INPUT's text to the session: what a telnet user would type."""
        self.factory.stats.lines_in += lines
        self.session.received(text)

    # IConnection ------------------------------------------------------------

    def pause_input(self, why: str) -> None:
        """See L{IConnection.pause_input}."""
        if not self._pauses and self.transport is not None:
            self.transport.pauseProducing()
        self._pauses |= {why}

    def resume_input(self, why: str) -> None:
        """See L{IConnection.resume_input}."""
        if why not in self._pauses:
            return
        self._pauses -= {why}
        if self._pauses or self.session._close_reason is not None:
            return
        if self.transport is not None:
            self.transport.resumeProducing()
        self._act()

    # What output.py calls its pauses.
    _pause = pause_input
    _resume = resume_input

    def close(self, flush: bool) -> None:
        """See L{IConnection.close}: the WebSocket's close follows the output."""
        websocket = self.websocket
        if websocket is None:
            return  # not open yet: the handshake's end closes it
        if flush:
            self._send_rest()  # from now on deliver() drops everything
            if not self._failing:
                websocket.sendClose(websocket.CLOSE_STATUS_CODE_NORMAL)
        else:
            self.transport.loseConnection()

    def abort(self) -> None:
        """See L{IConnection.abort}."""
        if self.transport is not None:
            self.transport.abortConnection()

    def _overflowed(self) -> None:
        """The send queue overflowed (see L{OutputMixin._overflow})."""
        self.session.overflowed()


class _Refused:
    """What the chat core builds for a refused WebSocket: why."""

    def __init__(self, why: str) -> None:
        self.why = why


class ChatWebSocket(WebSocketServerProtocol):
    """The WebSocket at C{/ws}: autobahn's protocol, a L{WebConnection} inside."""

    factory: "ChatWebSocketFactory"

    def __init__(self) -> None:
        super().__init__()
        #: The admitted connection, or why it was refused; None before.
        self.connection: WebConnection | _Refused | None = None

    def onConnect(self, request: ConnectionRequest) -> str | None:
        """Check the origin and version, and let the chat core admit it."""
        factory = self.factory
        headers = request.headers
        if not origin_allowed(
            headers.get("origin"), headers.get("host"), factory.origins
        ):
            raise ConnectionDeny(403, "this page's origin may not open the chat")
        subprotocol = None
        if request.protocols:
            known = [p for p in request.protocols if p in SUBPROTOCOLS]
            if not known:
                names = ", ".join(SUBPROTOCOLS)
                raise ConnectionDeny(
                    400, f"unsupported version: this server speaks {names}"
                )
            subprotocol = known[-1]
        address = client_address(
            self.transport.getPeer(),
            headers.get("x-forwarded-for"),
            factory.server.settings.trusted_proxy,
        )
        built = factory.server.build_for(web, address)
        if isinstance(built, WebConnection):
            self.connection = built
        else:
            self.connection = built  # type: ignore[assignment]
        return subprotocol

    def onOpen(self) -> None:
        """Start the session, or say why it was refused and close."""
        connection = self.connection
        if isinstance(connection, WebConnection):
            connection.opened(self)
        elif isinstance(connection, _Refused):
            self.sendMessage(
                message("ERROR", {"code": "refused", "text": connection.why})
            )
            self.sendClose(CLOSE_REFUSED, connection.why[:120])

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        """Hand the message to the connection."""
        connection = self.connection
        if isinstance(connection, WebConnection):
            connection.received(payload, isBinary)

    def _fail_connection(self, code: int = 1001, reason: str = "going away") -> None:
        """When autobahn fails the connection, a message too large is a frame error.

        As on the frame port: an ERROR C{frame_too_large}, then the close
        (autobahn's, with code 1009), the session ending with C{frame
        error}.  (autobahn's own method, not public: if it is ever renamed,
        the close is a plain one and C{tests/test_web.py} says so.)
        """
        connection = self.connection
        if code == self.CLOSE_STATUS_CODE_MESSAGE_TOO_BIG and isinstance(
            connection, WebConnection
        ):
            connection.too_large(self.factory.max_frame)
        super()._fail_connection(code, reason)

    def onAutoPingTimeout(self) -> None:
        """No pong came: the session ends with C{heartbeat timeout}, then the drop."""
        connection = self.connection
        if isinstance(connection, WebConnection):
            connection.heartbeat_expired()
        super().onAutoPingTimeout()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Let autobahn clean up, then the session leave."""
        transport = self.transport
        super().connectionLost(reason)
        # autobahn has fired is_closed with this protocol as its result: the
        # protocol and its Deferred refer to each other, a cycle that would
        # wait for Python's cyclic garbage collector with the transport and
        # all autobahn holds.  Nothing here waits on it.
        self.is_closed = None
        site = self.factory.site
        if site is not None:
            site.ended(transport)
        connection = self.connection
        if isinstance(connection, WebConnection):
            self.connection = None
            connection.lost(reason)


class ChatWebSocketFactory(WebSocketServerFactory):
    """autobahn's factory for the chat's WebSockets, over one chat core."""

    protocol = ChatWebSocket

    def __init__(self, server: "IChatServer") -> None:
        super().__init__(server="chatservice")
        self.server = server
        #: The site whose connections this factory's WebSockets took over.
        self.site: _WebSite | None = None
        settings = server.settings
        #: The longest message a client may send (C{--max-frame}).
        self.max_frame: int = settings.max_frame
        #: Seconds of silence before a WebSocket ping (C{--heartbeat}).
        self.heartbeat: float = settings.heartbeat
        #: The origins whose pages may connect (C{--web-origin}), or none:
        #: the page's own.
        self.origins: tuple[str, ...] = settings.web_origin
        self.noisy = False
        self.setProtocolOptions(
            maxFramePayloadSize=self.max_frame,
            maxMessagePayloadSize=self.max_frame,
            # Fail with a close frame that says why (1009: too big), not by
            # dropping the TCP connection without a word.
            failByDrop=False,
            webStatus=False,
            autoPingInterval=self.heartbeat or None,
            autoPingTimeout=self.heartbeat or None,
        )


@implementer(IPlugin, IServingFrontEnd)
class WebFrontEnd:
    """The web front end, on C{--web}: the page and its WebSocket."""

    name = "web"
    option = "web"
    help = (
        "where the web front end (the chat page at /, its WebSocket at /ws) "
        "listens: an endpoint string as for --port; repeatable"
    )
    default = ()

    def build_protocol(
        self, server: "IChatServer", connection_id: int, address: IAddress
    ) -> WebConnection:
        """See L{IFrontEnd.build_protocol}: a WebSocket admitted."""
        return WebConnection(server, connection_id, address)

    def build_refusal(self, why: str) -> _Refused:
        """See L{IFrontEnd.build_refusal}: the WebSocket says why, and closes."""
        return _Refused(why)

    def build_factory(self, server: "IChatServer") -> Site:
        """See L{IServingFrontEnd.build_factory}: the page and C{/ws}."""
        root = page_root()
        factory = ChatWebSocketFactory(server)
        root.putChild(b"ws", _ChatWebSocketResource(factory))
        site = factory.site = _WebSite(root, server)
        return site


class _ChatWebSocketResource(WebSocketResource):
    """autobahn's resource at C{/ws}, which lets go of the upgrade's request.

    autobahn takes the HTTP channel's transport over for the WebSocket;
    the request is never finished, so the channel keeps it in its queue,
    and the request refers to the channel: a reference cycle, freed only
    by Python's cyclic garbage collector, with the request's headers and
    the transport, once per WebSocket.  Nothing uses either afterwards
    (the channel's transport is None and it reads no more).
    """

    def render(self, request: Request) -> bytes | int:
        """Let autobahn take the connection over, then drop the request."""
        result: bytes | int = super().render(request)
        if result is NOT_DONE_YET:
            requests = request.channel.requests
            if request in requests:
                requests.remove(request)
        return result


class _WebChannel(BodilessChannel):
    """Twisted's HTTP channel, counted by the site while its connection lasts.

    Bodies and pipelined requests are refused (L{BodilessChannel}).
    """

    site: "_WebSite"

    def connectionMade(self) -> None:
        """Count the connection in (its transport stays, after a WebSocket)."""
        super().connectionMade()
        self.site.started(self.transport, self.address_key)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        """Count the connection out (not called once a WebSocket took it over)."""
        transport = self.transport
        super().connectionLost(reason)
        self.site.ended(transport)

    address_key: str | None = None


class _Refusal(Protocol):
    """Answers C{503} and closes: no room for another connection."""

    def __init__(self, why: str) -> None:
        self.why = why

    def connectionMade(self) -> None:
        """Say why, and close."""
        text = self.why.encode("utf-8") + b"\n"
        self.transport.write(answer(b"503 Service Unavailable", text))
        self.transport.loseConnection()


class _WebSite(Site):
    """Twisted's site, its connections limited, without an access log.

    Every connection, a page's or a WebSocket's (the same TCP connection,
    taken over), counts against C{--max-per-ip} (except from a
    C{--trusted-proxy}) and C{--max-clients}, as a telnet connection does:
    idle HTTP connections cannot take every descriptor.  A WebSocket is
    admitted as a chat connection on top of that (see L{ChatWebSocket}).

    No access log: chat connections are logged by their session (the
    registration, the close and why, never text); a line per page load
    would be noise, and a URL or user agent is the visitor's own text.
    """

    protocol = _WebChannel  # type: ignore[assignment]  # HTTP/1.1 only

    def __init__(self, resource: Resource, server: "IChatServer") -> None:
        super().__init__(resource, reactor=server.clock)
        self.noisy = False
        settings = server.settings
        self.max_connections = settings.max_clients
        self.max_per_address = settings.max_per_ip
        self.trusted = [ipaddress.ip_network(each) for each in settings.trusted_proxy]
        self.per_address: Counter[str] = Counter()
        self.open: dict[object, str | None] = {}

    def buildProtocol(self, addr: IAddress) -> Protocol | None:
        """A channel, or a C{503} past the total or per-address limit."""
        host = getattr(addr, "host", None)
        key = address_key(host)
        if host is not None and self._trusted(host):
            key = None  # a proxy: its users are counted by the chat core
        if len(self.open) >= self.max_connections:
            return _Refusal("the server is full")
        if key is not None and self.per_address[key] >= self.max_per_address:
            return _Refusal(
                f"too many connections from your address "
                f"(at most {self.max_per_address})"
            )
        channel: _WebChannel = super().buildProtocol(addr)  # type: ignore[assignment]
        channel.address_key = key
        return channel

    def _trusted(self, host: str) -> bool:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    def started(self, transport: object, key: str | None) -> None:
        """A connection on C{transport}, counted under C{key}, began."""
        self.open[transport] = key
        if key is not None:
            self.per_address[key] += 1

    def ended(self, transport: object) -> None:
        """The connection on C{transport} ended (counted once)."""
        if transport not in self.open:
            return
        key = self.open.pop(transport)
        if key is not None:
            self.per_address[key] -= 1
            if not self.per_address[key]:
                del self.per_address[key]

    def log(self, request: object) -> None:
        """Log nothing."""


#: The web front end, found as a plugin (see chatservice.plugins.builtin).
web = WebFrontEnd()
