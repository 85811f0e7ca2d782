"""The IRC front end (issue 18): twisted.words' IRCClient against a real port.

The server runs in the test's reactor with a line port and an IRC port;
IRC users are twisted.words' own L{IRCClient}, line users the harness's
telnet-style L{Client}.  Each test asserts the exact IRC lines a client is
sent.
"""

import gc
import re
import timeit
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import pytest_twisted
from certs import make_ca, make_server_cert
from harness import Client, Harness, wait_until
from processes import Connection, Server, free_port

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import serverFromString
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.internet.ssl import Certificate, optionsForClientTLS
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.words.protocols import irc
from zope.interface.verify import verifyObject

from chatservice import events
from chatservice.config import Settings
from chatservice.errors import NoSuchNickname
from chatservice.factory import ChatFactory, run_at_once
from chatservice.frontends import load_front_ends
from chatservice.frontends.frames import frames
from chatservice.frontends.irc import irc_front_end
from chatservice.frontends.irctable import clean
from chatservice.interfaces import IChatSession, IConnection, IFrontEnd
from chatservice.operators import Operators, hash_password
from chatservice.service import ChatService
from chatservice.testing import FakeConnection, register

LOCAL = "tcp:0:interface=127.0.0.1"


class IRCUser(irc.IRCClient):
    """An IRC client that records every line it is sent, as text."""

    heartbeatInterval = None  # no PING timer left on the reactor

    def __init__(self, nickname: str, caps: Sequence[str] = ()) -> None:
        self.nickname = nickname
        self.lines: list[str] = []
        self.disconnected = False
        self.caps = caps

    def connectionMade(self) -> None:
        if self.caps:
            self.sendLine("CAP LS 302")
            self.sendLine("CAP REQ :" + " ".join(self.caps))
            self.sendLine("CAP END")
        super().connectionMade()

    def lineReceived(self, line: bytes) -> None:
        self.lines.append(line.decode("utf-8"))
        super().lineReceived(line)

    def connectionLost(self, reason: Failure = irc.protocol.connectionDone) -> None:
        self.disconnected = True
        super().connectionLost(reason)

    def send(self, line: str) -> None:
        """Send one raw IRC line."""
        self.sendLine(line)

    def since(self, mark: int) -> list[str]:
        """The lines received after the first C{mark}."""
        return self.lines[mark:]


def start(chat: Harness, irc_endpoint: str = LOCAL, **settings: object) -> int:
    """Start a server with line, IRC and frame ports; return the IRC port.

    C{chat.port} is the line port, C{chat.frame_port} the frame port; the
    IRC port is served on C{irc_endpoint}.
    """
    settings.setdefault("max_connect_rate", 1e6)
    settings.setdefault("resume_grace", 0)
    factory = ChatFactory(Settings(**settings))  # type: ignore[arg-type]
    service = ChatService(
        factory,
        [(LOCAL, serverFromString(reactor, LOCAL))],
        front_ends=[
            (irc_endpoint, serverFromString(reactor, irc_endpoint), irc_front_end),
            (LOCAL, serverFromString(reactor, LOCAL), frames),
        ],
    )
    service.startService()
    chat.services.append(service)
    chat.service, chat.factory = service, factory
    chat.ports = [port.getHost().port for port in service.ports]
    chat.port, chat.frame_port = chat.ports[0], chat.ports[2]
    return chat.ports[1]


async def irc_user(
    chat: Harness,
    port: int,
    nickname: str,
    caps: Sequence[str] = (),
    tls: IOpenSSLClientConnectionCreator | None = None,
) -> IRCUser:
    """Connect an IRC client as C{nickname} and wait for the end of its NAMES."""
    user = IRCUser(nickname, caps)
    await chat.connect(user, port, tls)  # type: ignore[arg-type]
    await wait_until(
        lambda: any(" 366 " in line for line in user.lines), f"{nickname}'s welcome"
    )
    return user


def welcome(nickname: str, others: str = "") -> list[str]:
    """What an IRC client is sent from registration to the end of its NAMES."""
    from chatservice import __version__

    names = " ".join(sorted([nickname, *others.split()], key=str.lower))
    me = f"{nickname}!{nickname}@chatservice"
    return [
        f":chatservice 001 {nickname} :Welcome to chatservice, {nickname}",
        f":chatservice 002 {nickname} :Your host is chatservice, running {__version__}",
        f":chatservice 003 {nickname} :This server speaks chatservice's chat over IRC",
        f":chatservice 004 {nickname} chatservice {__version__} o :",
        f":chatservice 005 {nickname} CASEMAPPING=ascii CHANTYPES=# CHANMODES=,,, "
        "PREFIX= CHANLIMIT=#:50 CHANNELLEN=33 NICKLEN=24 TOPICLEN=300 AWAYLEN=300 "
        "LINELEN=2050 TARGMAX=PRIVMSG:4,NOTICE:4 NETWORK=chatservice :are supported "
        "by this server",
        f":chatservice 422 {nickname} :MOTD File is missing",
        f":{me} JOIN #lobby",
        f":chatservice 353 {nickname} = #lobby :{names}",
        f":chatservice 366 {nickname} #lobby :End of /NAMES list.",
    ]


@pytest_twisted.ensureDeferred
async def test_registration(chat: Harness) -> None:
    """NICK and USER get the welcome numerics, the MOTD's absence and #lobby."""
    port = start(chat)
    alice = await irc_user(chat, port, "alice")
    assert alice.lines == welcome("alice")


@pytest_twisted.ensureDeferred
async def test_registration_waits_for_cap_end(chat: Harness) -> None:
    """CAP LS offers server-time; registration waits for CAP END."""
    port = start(chat)
    alice = await irc_user(chat, port, "alice", caps=["server-time"])
    assert alice.lines[:2] == [
        ":chatservice CAP * LS :server-time",
        ":chatservice CAP * ACK :server-time",
    ]
    assert alice.lines[2:] == welcome("alice")


@pytest_twisted.ensureDeferred
async def test_chat_between_irc_and_telnet(chat: Harness) -> None:
    """Lines and actions cross between an IRC user and a telnet user in #lobby."""
    port = start(chat)
    bob = await chat.user("bob")
    alice = await irc_user(chat, port, "alice")
    assert alice.lines[-2] == ":chatservice 353 alice = #lobby :alice bob"
    await wait_until(lambda: bob.lines[-1] == "*** alice has joined #lobby", "join")
    mark = len(alice.lines)
    bob.send("hello alice")
    bob.send("/me waves")
    await wait_until(lambda: len(alice.lines) == mark + 2, "bob's lines")
    assert alice.since(mark) == [
        ":bob!bob@chatservice PRIVMSG #lobby :hello alice",
        ":bob!bob@chatservice PRIVMSG #lobby :\x01ACTION waves\x01",
    ]
    alice.say("#lobby", "hi bob")
    alice.describe("#lobby", "smiles")
    await wait_until(lambda: bob.lines[-1] == "* alice smiles", "alice's lines")
    assert bob.lines[-2:] == ["<alice> hi bob", "* alice smiles"]


@pytest_twisted.ensureDeferred
async def test_chat_between_irc_and_frames(chat: Harness) -> None:
    """A frame user's lines (several in one frame) reach IRC, and IRC's come back."""
    port = start(chat)
    carol = await chat.frame_user("carol")
    alice = await irc_user(chat, port, "alice")
    mark = len(alice.lines)
    carol.say("two lines\nin one frame")
    carol.say("/me waves")
    await wait_until(lambda: len(alice.lines) == mark + 3, "carol's lines")
    assert alice.since(mark) == [
        ":carol!carol@chatservice PRIVMSG #lobby :two lines",
        ":carol!carol@chatservice PRIVMSG #lobby :in one frame",
        ":carol!carol@chatservice PRIVMSG #lobby :\x01ACTION waves\x01",
    ]
    seen = len(carol.frames)
    alice.say("#lobby", "hi carol")
    await wait_until(lambda: carol.events(seen), "alice's line")
    (event,) = carol.events(seen)
    assert (event["type"], event["room"], event["nick"], event["text"]) == (
        "chat",
        "#lobby",
        "alice",
        "hi carol",
    )


@pytest_twisted.ensureDeferred
async def test_irc_over_tls(chat: Harness, tmp_path: Path) -> None:
    """An IRC listener on ssl: serves IRC encrypted, in the same rooms."""
    cert = make_server_cert(make_ca(tmp_path / "pki"))
    port = start(chat, irc_endpoint=cert.endpoint())
    bob = await chat.user("bob")
    authority = Certificate.loadPEM(cert.ca_path.read_bytes())
    alice = await irc_user(
        chat, port, "alice", tls=optionsForClientTLS("localhost", trustRoot=authority)
    )
    assert alice.lines[-2] == ":chatservice 353 alice = #lobby :alice bob"
    alice.say("#lobby", "encrypted hello")
    await wait_until(lambda: bob.lines[-1] == "<alice> encrypted hello", "the line")


@pytest_twisted.ensureDeferred
async def test_private_messages_both_ways(chat: Harness) -> None:
    """PRIVMSG to a nick reaches a telnet user privately, and /msg comes back."""
    port = start(chat)
    bob = await chat.user("bob")
    alice = await irc_user(chat, port, "alice")
    mark = len(alice.lines)
    alice.msg("bob", "psst")
    await wait_until(lambda: bob.lines[-1] == "*alice* psst", "the message")
    bob.send("/msg alice yes?")
    await wait_until(lambda: len(alice.lines) > mark, "the answer")
    assert alice.since(mark) == [":bob!bob@chatservice PRIVMSG alice :yes?"]


@pytest_twisted.ensureDeferred
async def test_several_channels(chat: Harness) -> None:
    """JOIN adds channels, each line goes to its own channel, PART leaves one."""
    port = start(chat)
    alice = await irc_user(chat, port, "alice")
    carol = await irc_user(chat, port, "carol")
    bob = await chat.user("bob")
    bob.send("/join #a")
    await wait_until(lambda: bob.lines[-1].startswith("*** In #a"), "bob in #a")
    mark = len(alice.lines)
    alice.send("JOIN #a,#B")
    await wait_until(lambda: len(alice.lines) >= mark + 6, "the joins")
    assert alice.since(mark) == [
        ":alice!alice@chatservice JOIN #a",
        ":chatservice 353 alice = #a :alice bob",
        ":chatservice 366 alice #a :End of /NAMES list.",
        ":alice!alice@chatservice JOIN #b",
        ":chatservice 353 alice = #b :alice",
        ":chatservice 366 alice #b :End of /NAMES list.",
    ]
    await wait_until(lambda: bob.lines[-1] == "*** alice has joined #a", "the join")
    carol_mark = len(carol.lines)
    alice.say("#b", "only in b")
    alice.say("#a", "only in a")
    alice.say("#lobby", "only in the lobby")
    await wait_until(lambda: len(carol.lines) > carol_mark, "the lobby's line")
    assert carol.since(carol_mark) == [
        ":alice!alice@chatservice PRIVMSG #lobby :only in the lobby"
    ]
    assert bob.lines[-1] == "<alice> only in a"
    mark = len(alice.lines)
    alice.part("#a", "enough")
    await wait_until(lambda: bob.lines[-1] == "*** alice has left #a (enough)", "part")
    assert alice.since(mark) == [":alice!alice@chatservice PART #a :enough"]
    alice.say("#a", "gone")
    await wait_until(lambda: len(alice.lines) > mark + 1, "the refusal")
    assert alice.lines[-1] == ":chatservice 404 alice #a :Cannot send to channel"


@pytest_twisted.ensureDeferred
async def test_nicknames_are_one_namespace(chat: Harness) -> None:
    """An IRC client cannot take a telnet user's nickname, nor the reverse."""
    port = start(chat)
    bob = await chat.user("bob")
    impostor = IRCUser("Bob")
    await chat.connect(impostor, port)
    await wait_until(lambda: any(" 366 " in x for x in impostor.lines), "a welcome")
    # twisted.words' client tries another nickname on 433, as irssi does.
    assert impostor.lines[0] == ":chatservice 433 * Bob :Nickname is already in use"
    assert impostor.lines[1] == ":chatservice 001 Bob_ :Welcome to chatservice, Bob_"
    await wait_until(lambda: bob.lines[-1] == "*** Bob_ has joined #lobby", "join")
    mark = len(bob.lines)
    bob.send("/nick BOB_")
    await wait_until(lambda: len(bob.lines) > mark, "the refusal")
    assert bob.lines[-1] == "!!! the nickname BOB_ is taken; choose another one"


@pytest_twisted.ensureDeferred
async def test_nick_change_and_quit_seen_everywhere(chat: Harness) -> None:
    """NICK and QUIT from IRC reach telnet users; a telnet /nick reaches IRC."""
    port = start(chat)
    bob = await chat.user("bob")
    alice = await irc_user(chat, port, "alice")
    mark = len(alice.lines)
    alice.setNick("alicia")
    await wait_until(
        lambda: bob.lines[-1] == "*** alice is now known as alicia", "the rename"
    )
    bob.send("/nick robert")
    await wait_until(lambda: len(alice.lines) >= mark + 2, "both renames")
    assert alice.since(mark) == [
        ":alice!alice@chatservice NICK alicia",
        ":bob!bob@chatservice NICK robert",
    ]
    alice.quit("bye now")
    await wait_until(
        lambda: bob.lines[-1] == "*** alicia has left (quit: bye now)", "the quit"
    )
    await wait_until(lambda: alice.disconnected, "the close")
    assert alice.lines[-1] == "ERROR :Closing link: alicia (quit: bye now)"


@pytest_twisted.ensureDeferred
async def test_telnet_quit_is_an_irc_quit(chat: Harness) -> None:
    """A telnet user's /quit reaches IRC users as QUIT with its reason."""
    port = start(chat)
    bob = await chat.user("bob")
    alice = await irc_user(chat, port, "alice")
    mark = len(alice.lines)
    bob.send("/quit lunch")
    await wait_until(lambda: len(alice.lines) > mark, "the quit")
    assert alice.since(mark) == [":bob!bob@chatservice QUIT :quit: lunch"]


@pytest_twisted.ensureDeferred
async def test_ping_pong(chat: Harness) -> None:
    """PING gets PONG with the same token, before and after registration."""
    port = start(chat)
    raw = Client()
    await chat.connect(raw, port)
    raw.send("PING :early bird")
    await wait_until(lambda: raw.lines, "the pong")
    assert raw.lines == [":chatservice PONG chatservice :early bird"]


# Unit tests: StringTransport and a fake clock --------------------------------


def irc_connection(factory: ChatFactory, *lines: str) -> FakeConnection:
    """An IRC client on a StringTransport, having sent C{lines}."""
    connection = FakeConnection(factory, front_end=irc_front_end)
    connection.enter(*lines)
    return connection


def irc_registered(factory: ChatFactory, nickname: str) -> FakeConnection:
    """An IRC client registered as C{nickname}; its output so far dropped."""
    connection = irc_connection(factory, f"NICK {nickname}", f"USER {nickname} 0 * :x")
    assert connection.session.nickname == nickname, connection.lines()
    connection.output()
    return connection


def test_every_chunking_gives_the_same_answers(factory: ChatFactory) -> None:
    """Registration fed at once, or a byte at a time, gets the same bytes."""
    data = b"CAP LS 302\r\nNICK alice\nUSER a 0 * :A\r\nCAP END\r\nPING :x\r\n"
    whole = FakeConnection(factory, front_end=irc_front_end)
    whole.send(data)
    expected = whole.output()
    whole.drop()
    assert b" 001 alice " in expected and expected.endswith(b"PONG chatservice :x\r\n")
    bytewise = FakeConnection(factory, front_end=irc_front_end)
    for i in range(len(data)):
        bytewise.send(data[i : i + 1])
    assert bytewise.output() == expected


def test_malformed_lines_are_ignored(factory: ChatFactory) -> None:
    """Lines twisted's parsemsg cannot parse are ignored; the connection goes on."""
    alice = irc_registered(factory, "alice")
    alice.send(b":prefixonly\r\n:prefix \r\n\r\n   \r\n@tag\r\n\x00\r\nPING :still\r\n")
    assert alice.lines() == [":chatservice PONG chatservice :still"]
    assert not alice.closing


def test_a_long_line_gets_417_and_the_next_is_read(factory: ChatFactory) -> None:
    """A line over the limit gets 417, is dropped whole, and the next one is read."""
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    alice.output()
    alice.send(b"PRIVMSG #lobby :" + b"x" * 5000 + b"\r\nPRIVMSG #lobby :short\r\n")
    assert alice.lines() == [
        ":chatservice 417 alice :Input line was too long (max 2048 bytes)"
    ]
    assert bob.lines() == ["<alice> short"]


def test_an_endless_line_is_bounded(factory: ChatFactory) -> None:
    """A megabyte without a newline gets one 417 and is never held whole."""
    alice = irc_registered(factory, "alice")
    for _ in range(256):
        alice.send(b"y" * 4096)
        assert len(alice.protocol._buffer) <= 2049
    alice.send(b"\r\nPING :after\r\n")
    assert alice.lines() == [
        ":chatservice 417 alice :Input line was too long (max 2048 bytes)",
        ":chatservice PONG chatservice :after",
    ]


def test_invalid_utf8_and_formatting(factory: ChatFactory) -> None:
    """Invalid bytes become U+FFFD; IRC colours and bold are stripped for all."""
    alice = irc_registered(factory, "alice")
    carol = irc_registered(factory, "carol")
    bob = register(factory, "bob")
    carol.output()
    alice.send(b"PRIVMSG #lobby :caf\xe9 \x02bold\x02 \x0304,01red\x03 \xff\r\n")
    assert bob.lines() == ["<alice> caf\ufffd bold red \ufffd"]
    assert carol.lines() == [
        ":alice!alice@chatservice PRIVMSG #lobby :caf\ufffd bold red \ufffd"
    ]


def test_a_broadcast_is_encoded_once_for_every_irc_user(factory: ChatFactory) -> None:
    """Two IRC users are sent the very same bytes object for one line."""
    alice = irc_registered(factory, "alice")
    carol = irc_registered(factory, "carol")
    line = events.chat("bob", "hello", "#lobby")
    first = alice.protocol._encode(line)
    assert first == b":bob!bob@chatservice PRIVMSG #lobby :hello\r\n"
    assert carol.protocol._encode(line) is first


def test_long_lines_from_telnet_are_cut_to_512_bytes(factory: ChatFactory) -> None:
    """A 2,000-byte line from telnet reaches IRC as PRIVMSGs of at most 512 bytes."""
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    alice.output()
    text = "é" * 999 + "!"
    bob.enter(text)
    lines = alice.output().split(b"\r\n")[:-1]
    assert len(lines) == 5
    assert all(len(line) + 2 <= 512 for line in lines)
    head = b":bob!bob@chatservice PRIVMSG #lobby :"
    assert all(line.startswith(head) for line in lines)
    assert b"".join(line[len(head) :] for line in lines).decode() == text


def test_a_quiet_client_is_pinged_then_dropped(
    factory: ChatFactory, clock: Clock
) -> None:
    """After --irc-ping of silence a client is PINGed; silent again, it is dropped."""
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    alice.output()
    clock.advance(119)
    assert alice.lines() == []
    clock.advance(1)
    assert alice.lines() == ["PING :chatservice"]
    alice.enter("PONG :chatservice")
    clock.advance(120)
    assert alice.lines() == ["PING :chatservice"]
    clock.advance(120)
    assert alice.lines() == [
        ":chatservice NOTICE alice :no answer to PING for 120 seconds"
    ]
    assert alice.closing
    assert bob.lines()[-1] == "*** alice has left (idle timeout: no answer to PING)"


@pytest.mark.parametrize(
    ("line", "answer"),
    [
        ("FROB x", "421 alice FROB :Unknown command"),
        ("JOIN", "461 alice JOIN :Not enough parameters"),
        ("USER a 0 * :b", "462 alice :You may not reregister"),
        ("NICK 9lives", "432 alice 9lives :Erroneous nickname"),
        ("NICK", "431 alice :No nickname given"),
        ("PRIVMSG nobody :hi", "401 alice nobody :No such nick/channel"),
        ("PRIVMSG #lobby", "412 alice :No text to send"),
        ("PRIVMSG", "411 alice :No recipient given (PRIVMSG)"),
        ("JOIN bad!", "403 alice bad! :No such channel"),
        ("PART #elsewhere", "442 alice #elsewhere :You're not on that channel"),
        ("PRIVMSG #elsewhere :hi", "404 alice #elsewhere :Cannot send to channel"),
        ("WHOIS nobody", "401 alice nobody :No such nick/channel"),
        ("MODE bob +i", "502 alice :Cant change mode for other users"),
        ("PRIVMSG a,b,c,d,e :hi", "407 alice a,b,c,d,e :Too many targets (at most 4)"),
    ],
)
def test_error_numerics(factory: ChatFactory, line: str, answer: str) -> None:
    """Each mistake gets its standard numeric."""
    alice = irc_registered(factory, "alice")
    alice.enter(line)
    assert alice.lines()[0] == f":chatservice {answer}"


def test_commands_need_registration(factory: ChatFactory) -> None:
    """Before NICK and USER, other commands get 451."""
    alice = irc_connection(factory, "JOIN #a", "PRIVMSG #lobby :hi")
    assert alice.lines() == [
        ":chatservice 451 * :You have not registered",
        ":chatservice 451 * :You have not registered",
    ]


def operator_server(clock: Clock) -> ChatFactory:
    """A server on the fake clock with one operator, root (password s3cret)."""
    factory = ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)
    factory.operators = Operators({"root": hash_password("s3cret")})
    return factory


def test_oper_then_kill(clock: Clock) -> None:
    """OPER with the right password gets 381; KILL then disconnects anyone."""
    factory = operator_server(clock)
    root = irc_registered(factory, "root")
    bob = register(factory, "bob")
    root.enter("KILL bob :too loud")
    assert root.lines()[-1] == (
        ":chatservice 481 root :Permission Denied- You're not an IRC operator"
    )
    root.enter("OPER root wrong")
    assert root.lines() == [":chatservice 464 root :operator login failed"]
    root.enter("OPER root s3cret", "MODE root")
    assert root.lines() == [
        ":chatservice NOTICE root :You are now an operator (root); /help lists "
        "your commands.",
        ":chatservice 381 root :You are now an IRC operator",
        ":chatservice 221 root :+o",
    ]
    root.enter("KILL bob :too loud", "KILL nobody")
    assert bob.lines() == ["*** disconnected: kicked by root: too loud"]
    assert root.lines() == [
        ":bob!bob@chatservice QUIT :kicked by root: too loud",
        ":chatservice NOTICE root :bob was kicked.",
        ":chatservice 401 root nobody :No such nick/channel",
    ]


def test_kick_from_a_channel(clock: Clock) -> None:
    """KICK takes an IRC user out of one channel, and moves a line user to #lobby."""
    factory = operator_server(clock)
    root = irc_registered(factory, "root")
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    root.enter("KICK #lobby alice")
    assert (
        root.lines()[-1] == ":chatservice 482 root #lobby :You're not channel operator"
    )
    root.enter("OPER root s3cret", "JOIN #tea")
    alice.enter("JOIN #tea")
    bob.enter("/join #tea")
    for each in (root, alice, bob):
        each.output()
    root.enter("KICK #tea alice :spam", "KICK #tea bob", "KICK #tea carol")
    assert alice.lines() == [
        ":root!root@chatservice KICK #tea alice :kicked by root: spam",
        ":bob!bob@chatservice JOIN #lobby",
    ]
    assert bob.lines() == [
        "*** alice has left #tea (kicked by root: spam)",
        "*** you were kicked by root; you are in #lobby now",
    ]
    assert root.lines() == [
        ":alice!alice@chatservice PART #tea :kicked by root: spam",
        ":bob!bob@chatservice JOIN #lobby",
        ":bob!bob@chatservice PART #tea :kicked by root",
        ":chatservice 441 root carol #tea :They aren't on that channel",
    ]
    alice.enter("PRIVMSG #tea :back?")
    assert alice.lines() == [":chatservice 404 alice #tea :Cannot send to channel"]


def test_twistd_serves_irc(
    twistd: Callable[..., Server],
    connections: Callable[..., Connection],
    tmp_path: Path,
) -> None:
    """Under twistd -n chat --irc, an IRC user and a telnet user chat."""
    motd = tmp_path / "motd.txt"
    motd.write_text("Be kind.\n", encoding="utf-8")
    line_port, irc_port = free_port(), free_port()
    server = twistd(
        f"tcp:{line_port}:interface=127.0.0.1",
        "--irc",
        f"tcp:{irc_port}:interface=127.0.0.1",
        "--motd",
        str(motd),
    )
    server.wait_for_port(line_port)
    server.wait_for_port(irc_port)
    assert f"listening on --irc tcp:{irc_port}" in server.output()
    bob = connections(line_port)
    bob.read(2)
    bob.send("bob")
    assert bob.read(4)[2:3] == ["*** Be kind."]
    alice = connections(irc_port)
    alice.send("NICK alice")
    alice.send("USER alice 0 * :Alice")
    assert alice.read(11)[5:] == [
        ":chatservice 375 alice :- chatservice Message of the day - ",
        ":chatservice 372 alice :- Be kind.",
        ":chatservice 376 alice :End of /MOTD command.",
        ":alice!alice@chatservice JOIN #lobby",
        ":chatservice 353 alice = #lobby :alice bob",
        ":chatservice 366 alice #lobby :End of /NAMES list.",
    ]
    alice.send("PRIVMSG #lobby :hello from irc")
    assert bob.read(2) == ["*** alice has joined #lobby", "<alice> hello from irc"]
    bob.send("hello from telnet")
    assert alice.read() == [":bob!bob@chatservice PRIVMSG #lobby :hello from telnet"]


def test_queries(clock: Clock) -> None:
    """TOPIC, NAMES, WHO, WHOIS, LIST, AWAY and MODE answer with their numerics."""
    factory = ChatFactory(Settings(flood_burst=100), clock=clock)
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    bob.enter("/away lunch")
    alice.output()
    alice.enter(
        "TOPIC #lobby",
        "TOPIC #lobby :all welcome",
        "TOPIC #lobby",
        "NAMES #lobby",
        "WHO #lobby",
        "WHOIS bob",
        "LIST",
        "AWAY :brb",
        "AWAY",
        "MODE #lobby",
        "MODE #lobby b",
        "MODE alice",
        "MODE alice +i",
    )
    assert alice.lines() == [
        ":chatservice 331 alice #lobby :No topic is set",
        ":alice!alice@chatservice TOPIC #lobby :all welcome",
        ":chatservice 332 alice #lobby :all welcome",
        ":chatservice 353 alice = #lobby :alice bob",
        ":chatservice 366 alice #lobby :End of /NAMES list.",
        ":chatservice 352 alice #lobby alice chatservice chatservice alice H :0 alice",
        ":chatservice 352 alice #lobby bob chatservice chatservice bob G :0 bob",
        ":chatservice 315 alice #lobby :End of /WHO list.",
        ":chatservice 311 alice bob bob chatservice * :bob",
        ":chatservice 312 alice bob chatservice :chatservice",
        ":chatservice 301 alice bob :lunch",
        ":chatservice 318 alice bob :End of /WHOIS list.",
        ":chatservice 321 alice Channel :Users  Name",
        ":chatservice 322 alice #lobby 2 :all welcome",
        ":chatservice 323 alice :End of /LIST",
        ":chatservice 306 alice :You have been marked as being away",
        ":chatservice 305 alice :You are no longer marked as being away",
        ":chatservice 324 alice #lobby :+",
        ":chatservice 368 alice #lobby :End of channel ban list",
        ":chatservice 221 alice :+",
        ":chatservice 501 alice :Unknown MODE flag",
    ]
    assert bob.lines()[-1] == "*** alice set the topic of #lobby: all welcome"


def test_scrollback_as_notices(factory: ChatFactory, clock: Clock) -> None:
    """A channel's last lines come on JOIN as a block of notices, times in UTC."""
    bob = register(factory, "bob")
    bob.enter("/join #tea")
    clock.advance(3600 * 9 + 60 * 5)
    bob.enter("first", "/me pours")
    alice = irc_registered(factory, "alice")
    alice.enter("JOIN #tea")
    assert alice.lines()[3:] == [
        ":chatservice NOTICE #tea :*** Scrollback of #tea, 2 lines, times in UTC:",
        ":chatservice NOTICE #tea :[09:05] <bob> first",
        ":chatservice NOTICE #tea :[09:05] * bob pours",
        ":chatservice NOTICE #tea :*** End of scrollback of #tea.",
    ]


def test_scrollback_with_server_time(factory: ChatFactory, clock: Clock) -> None:
    """A client that asked for server-time gets the lines themselves, time-tagged."""
    bob = register(factory, "bob")
    bob.enter("/join #tea")
    clock.advance(3600 * 9 + 60 * 5 + 0.25)
    bob.enter("first")
    alice = irc_connection(
        factory, "CAP LS 302", "CAP REQ :server-time", "NICK alice", "USER a 0 * :A"
    )
    alice.enter("CAP END")
    alice.output()
    alice.enter("JOIN #tea")
    assert alice.lines()[3:] == [
        "@time=1970-01-01T09:05:00.250Z :bob!bob@chatservice PRIVMSG #tea :first"
    ]
    bob.enter("second")
    (live,) = alice.lines()
    # Stamped with the time the line was said (the event's, from the wall clock).
    assert re.fullmatch(
        r"@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
        r":bob!bob@chatservice PRIVMSG #tea :second",
        live,
    )


def test_a_flooder_is_slowed_not_cut(clock: Clock) -> None:
    """Past the burst, an IRC client's lines wait for the flood rate; none is lost."""
    factory = ChatFactory(Settings(flood_rate=5, flood_burst=10), clock=clock)
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    clock.advance(10)  # the bucket is full again after registering
    alice.enter(*[f"PRIVMSG #lobby :line {n}" for n in range(20)])
    first = bob.lines()
    assert first == [f"<alice> line {n}" for n in range(len(first))]
    assert 10 <= len(first) < 20
    clock.pump([0.2] * 20)
    assert first + bob.lines() == [f"<alice> line {n}" for n in range(20)]
    assert not alice.closing


def test_plugin_commands_as_raw_commands(factory: ChatFactory) -> None:
    """A command IRC lacks (here /users) runs as the line command, answered in NOTICEs."""
    alice = irc_registered(factory, "alice")
    alice.enter("USERS")
    assert alice.lines() == [":chatservice NOTICE alice :Online (1): alice"]


def test_a_refused_client_is_told_why() -> None:
    """A connection refused (server full, banned...) gets IRC's ERROR, then a close."""
    transport = StringTransport()
    refusal = irc_front_end.build_refusal("the server is full (1 connections)")
    refusal.makeConnection(transport)
    assert (
        transport.value()
        == b"ERROR :Closing link: the server is full (1 connections)\r\n"
    )
    assert transport.disconnecting


def test_one_quit_for_several_shared_channels(factory: ChatFactory) -> None:
    """A user sharing several channels with another is seen to QUIT once."""
    alice = irc_registered(factory, "alice")
    carol = irc_registered(factory, "carol")
    alice.enter("JOIN #a,#b")
    carol.enter("JOIN #a,#b")
    carol.output()
    alice.enter("QUIT :done")
    assert carol.lines() == [":alice!alice@chatservice QUIT :quit: done"]


def test_ison_and_userhost(factory: ChatFactory) -> None:
    """ISON names who of those asked is online; USERHOST gives their masks."""
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    bob.enter("/away lunch")
    alice.output()
    alice.enter("ISON nobody BOB alice", "USERHOST bob alice nobody")
    assert alice.lines() == [
        ":chatservice 303 alice :bob alice",
        ":chatservice 302 alice :bob=-bob@chatservice alice=+alice@chatservice",
    ]


def test_the_irc_front_end_keeps_the_contracts(factory: ChatFactory) -> None:
    """The IRC front end is an IFrontEnd plugin, its connection an IConnection."""
    assert load_front_ends()["irc"] is irc_front_end
    assert verifyObject(IFrontEnd, irc_front_end)
    alice = irc_registered(factory, "alice")
    assert verifyObject(IConnection, alice.protocol)
    assert verifyObject(IChatSession, alice.session)


def test_private_lines_carry_server_time(factory: ChatFactory) -> None:
    """A client that asked for server-time gets private lines time-tagged too."""
    alice = irc_connection(
        factory, "CAP REQ :server-time", "NICK alice", "USER a 0 * :A"
    )
    bob = register(factory, "bob")
    alice.output()
    bob.enter("/msg alice psst")
    (line,) = alice.lines()
    assert re.fullmatch(r"@time=\S+Z :bob!bob@chatservice PRIVMSG alice :psst", line), (
        line
    )


def test_tagged_and_plain_users_in_one_channel_each_get_their_own_lines(
    factory: ChatFactory,
) -> None:
    """IRC users with and without server-time, in turn in one channel, each get theirs.

    The fan-out encodes a line once per variant (IRCProtocol.deliver_all),
    switching between the two as the recipients do; a recipient whose
    output is held gets the same line once it reads again.
    """
    users = []
    for n in range(4):
        caps = ["CAP REQ :server-time"] if n % 2 else []
        users.append(irc_connection(factory, *caps, f"NICK u{n}", f"USER u{n} 0 * :x"))
    bob = register(factory, "bob")
    for user in users:
        user.output()
    users[3].stop_reading()
    bob.enter("hello")
    factory.flusher.flush()
    plain = ":bob!bob@chatservice PRIVMSG #lobby :hello"
    tagged = r"@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z " + re.escape(plain)
    assert users[0].lines() == [plain]
    assert users[2].lines() == [plain]
    (line,) = users[1].lines()
    assert re.fullmatch(tagged, line), line
    users[3].resume_reading()
    (line,) = users[3].lines()
    assert re.fullmatch(tagged, line), line


def test_server_time_asked_for_in_a_channel_tags_that_user_s_lines_only(
    factory: ChatFactory,
) -> None:
    """A user who asks for server-time once in a channel gets tags; the others never.

    Before anyone asks, and once the last who asked is gone, the fan-out
    sends every IRC user the same bytes without looking at each one's
    variant; one who asks later, already in the channel, gets its tags.
    """
    plain = irc_connection(factory, "NICK u0", "USER u0 0 * :x")
    later = irc_connection(factory, "NICK u1", "USER u1 0 * :x")
    bob = register(factory, "bob")
    plain.output()
    later.output()
    bob.enter("one")
    said = ":bob!bob@chatservice PRIVMSG #lobby :{}"
    assert plain.lines() == later.lines() == [said.format("one")]
    later.enter("CAP REQ :server-time")
    assert later.lines() == [":chatservice CAP u1 ACK :server-time"]
    bob.enter("two")
    assert plain.lines() == [said.format("two")]
    (line,) = later.lines()
    time = r"@time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z "
    assert re.fullmatch(time + re.escape(said.format("two")), line), line
    later.drop()
    bob.enter("three")
    assert plain.lines()[-1] == said.format("three")
    timed = [
        irc_connection(factory, "CAP REQ :server-time", f"NICK t{n}", "USER t 0 * :x")
        for n in range(2)
    ]
    timed[0].drop()  # one of two who asked
    timed[1].output()
    bob.enter("four")
    assert plain.lines()[-1] == said.format("four")
    (line,) = timed[1].lines()
    assert re.fullmatch(time + re.escape(said.format("four")), line), line


def test_an_irc_client_that_stops_reading_is_dropped(clock: Clock) -> None:
    """Past --max-sendq an IRC reader is dropped; the others see it QUIT."""
    factory = ChatFactory(
        Settings(max_sendq=4096, flood_burst=1000, resume_grace=0), clock=clock
    )
    alice = irc_registered(factory, "alice")
    carol = irc_registered(factory, "carol")
    bob = register(factory, "bob")
    alice.output()
    carol.output()
    alice.stop_reading()
    for n in range(100):
        bob.enter(f"line {n} " + "x" * 100)
        factory.flusher.flush()
    assert alice.closing
    clock.advance(0)  # the registry is left in the next reactor iteration
    said = carol.lines()
    assert said[-1] == ":alice!alice@chatservice QUIT :send queue exceeded"
    assert len(said) == 101


def test_long_topics_and_reasons_fit_in_512_bytes(factory: ChatFactory) -> None:
    """A topic of 300 four-byte characters reaches IRC cut to fit 512 bytes."""
    alice = irc_registered(factory, "alice")
    bob = register(factory, "bob")
    alice.output()
    topic = "\U0001f600" * 300
    bob.enter(f"/topic {topic}", "/topic")
    (line,) = alice.output().split(b"\r\n")[:-1]
    assert len(line) + 2 <= 512
    head = b":bob!bob@chatservice TOPIC #lobby :"
    assert line.startswith(head)
    assert topic.startswith(line[len(head) :].decode("utf-8"))
    alice.enter("TOPIC #lobby")
    (line,) = alice.output().split(b"\r\n")[:-1]
    assert len(line) + 2 <= 512 and line.startswith(b":chatservice 332 alice #lobby :")


@pytest.mark.parametrize(
    ("sent", "said"),
    [
        (
            "\x02bold\x02 \x1ditalic\x1d \x1funder\x1f \x1estrike\x1e",
            "bold italic under strike",
        ),
        ("\x0304red\x03 \x0304,12on blue\x0f done", "red on blue done"),
        ("\x0312,04\x0312,04twice", "twice"),
        ("\x03,5 no colour", ",5 no colour"),
        ("\x031,123 three digits", "3 three digits"),
        ("\x04ff00ff,00ff00hex\x04 \x11mono\x16 reverse", "hex mono reverse"),
    ],
)
def test_formatting_codes_are_removed(sent: str, said: str) -> None:
    """IRC's formatting codes, colours with their numbers, reach nobody."""
    assert clean(sent) == said


def test_removing_formatting_is_cheap() -> None:
    """Formatting is removed in a time like twisted.words' own a tenth of, or less."""
    text = "\x02a\x03b" * 500
    mine = min(timeit.repeat(lambda: clean(text), number=20, repeat=5))
    twisted = min(timeit.repeat(lambda: irc.stripFormatting(text), number=20, repeat=5))
    # Measured: 78 us against 5.9 ms for these 2,000 characters.
    assert mine * 10 < twisted


def test_each_channel_of_a_join_costs_a_flood_token(clock: Clock) -> None:
    """JOIN of 20 channels waits for the flood bucket, then joins them all, in order."""
    factory = ChatFactory(Settings(flood_rate=5, flood_burst=10), clock=clock)
    alice = irc_registered(factory, "alice")
    clock.advance(10)  # the bucket is full again after registering
    channels = [f"#c{n}" for n in range(20)]
    alice.enter("JOIN " + ",".join(channels), "PING :after")
    # The line took 1 token; the 19 more (10 at most: the burst) wait.
    assert alice.lines() == [
        ":chatservice NOTICE alice :flood control: you are sending more than 5 "
        "lines per second; your lines are slowed down, none is lost"
    ]
    clock.pump([0.1] * 6)  # 0.2 s for the 10th token, 0.2 s for the PING
    answers = alice.lines()
    joined = [line for line in answers if " JOIN " in line]
    assert joined == [f":alice!alice@chatservice JOIN {room}" for room in channels]
    assert answers[-1] == ":chatservice PONG chatservice :after"
    assert alice.session.server.registry.local_sizes()[1] == 21


def test_a_batch_reaches_each_irc_user_in_their_own_words(clock: Clock) -> None:
    """A batch (a room's scrollback) answered to IRC users names each, and keeps none."""
    factory = ChatFactory(
        Settings(resume_grace=0), clock=clock, run_in_thread=run_at_once
    )
    batch = events.Batch([events.notice("hello")])
    bob = irc_registered(factory, "bob")
    carol = irc_registered(factory, "carol")
    bob.output()  # carol's arrival
    bob.protocol.answer_all(batch)
    carol.protocol.answer_all(batch)
    assert bob.output() == b":chatservice NOTICE bob :hello\r\n"
    assert carol.output() == b":chatservice NOTICE carol :hello\r\n"
    gone = weakref.ref(bob.protocol)
    bob.drop()
    del bob
    gc.collect()
    assert gone() is None


def _late_errors(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The failures the IRC front end logs from now on."""
    logged: list[object] = []
    monkeypatch.setattr(
        "chatservice.frontends.irctable.log.failure",
        lambda *args, **kwargs: logged.append(args),
    )
    return logged


def test_an_answer_that_comes_after_the_client_left_is_dropped(
    factory: ChatFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A WHOIS answered after the client dropped sends nothing and logs no error."""
    alice = irc_registered(factory, "alice")
    asked: list[Deferred[object]] = []
    monkeypatch.setattr(
        factory.registry, "find", lambda name: asked.append(Deferred()) or asked[-1]
    )
    alice.enter("WHOIS bob", "WHO bob")
    assert len(asked) == 1  # WHO waits for WHOIS's answer
    logged = _late_errors(monkeypatch)
    alice.drop()
    alice.output()
    assert alice.protocol.session is alice.session  # kept while WHOIS waits
    asked[0].errback(Failure(NoSuchNickname("bob")))
    factory.flusher.flush()
    assert alice.output() == b""
    assert logged == []
    assert alice.protocol.session is not alice.session  # then let go (no cycle)


def test_a_join_whose_scrollback_comes_after_the_client_left(
    factory: ChatFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A JOIN whose older lines come after the client dropped sends nothing."""
    alice = irc_registered(factory, "alice")
    read: list[Deferred[object]] = []
    monkeypatch.setattr(
        factory.history,
        "scrollback",
        lambda room, live: read.append(Deferred()) or read[-1],
    )
    alice.enter("JOIN #tea,#cake")
    assert len(read) == 1
    logged = _late_errors(monkeypatch)
    alice.drop()
    alice.output()
    read[0].callback([])
    factory.flusher.flush()
    assert alice.output() == b""
    assert logged == []
