"""The IRC wire format of chatservice's events: what an IRC client is sent.

Events that are the same for every IRC recipient (a chat line, a join, a
part, a quit, a nick change, a topic) are encoded by L{shared} (or
L{shared_timed}, with IRCv3 C{server-time} tags, for clients that asked
for them) through L{chatservice.events.Event.encoded}: once per broadcast,
whatever the number of IRC users.  Events meant for one user (a private
message, a notice, an error) name their recipient, and are encoded for
each (L{own}).

Every line is at most 512 bytes with its CRLF, as RFC 1459 says (tags
aside, which IRCv3 gives a budget of their own): a longer chat line, from
a telnet or frame user who may send C{--max-line} bytes, is cut into
several C{PRIVMSG}s at UTF-8 character boundaries (L{chunks}).
"""

from collections.abc import Iterable

from ..events import Event, SharedEncoding, iso_time

#: The name the server gives itself in prefixes and numerics.
SERVER = "chatservice"
#: The host part of every user's mask: no user's address is ever shown.
USER_HOST = "chatservice"
#: The longest IRC line, CRLF excluded (RFC 1459 section 2.3).
LINE_MAX = 510


def mask(nickname: str) -> str:
    """The prefix of a message from C{nickname}: C{nick!nick@chatservice}."""
    return f"{nickname}!{nickname}@{USER_HOST}"


def message(
    prefix: str | None, command: str, *params: str, trailing: bool = True
) -> bytes:
    """One IRC line, CRLF-terminated UTF-8; the last parameter is trailing.

    The last parameter gets its C{:} unless C{trailing} is false (a channel
    or a nickname alone, as in C{JOIN #room}) and it needs none; the others
    never have spaces.  A line that would be longer than L{LINE_MAX} (a
    topic or an away message of 300 characters of 4 bytes each) has its
    last parameter cut, between characters, to fit.
    """
    words = [f":{prefix}", command] if prefix else [command]
    if params:
        *middle, last = params
        words.extend(middle)
        if trailing or not last or " " in last or last[0] == ":":
            last = ":" + last
        words.append(last)
    line = " ".join(words)
    if "\n" in line or "\r" in line:
        # A topic or a reason from elsewhere (a plugin, another node) that
        # kept a newline: one IRC line still, never a line of its author's.
        line = line.replace("\r", " ").replace("\n", " ")
    data = line.encode("utf-8")
    if len(data) > LINE_MAX and params:
        head = len(data) - len(words[-1].encode("utf-8"))  # all but the last
        last = chunks(data[head:].decode("utf-8"), LINE_MAX - head)[0]
        data = data[:head] + last.encode("utf-8")
    return data + b"\r\n"


def text_message(prefix: str, command: str, target: str, text: str) -> bytes:
    """C{PRIVMSG} or C{NOTICE} lines carrying C{text}, each line cut to fit."""
    if "\n" not in text:
        # One line that fits, as almost always: encoded whole, not measured
        # in parts and cut (0.3 against 0.7 us a chat line).
        data = f":{prefix} {command} {target} :{text}\r\n".encode()
        if len(data) <= LINE_MAX + 2:
            return data
    head = f":{prefix} {command} {target} :"
    budget = LINE_MAX - len(head.encode("utf-8"))
    return b"".join(
        [
            (head + chunk + "\r\n").encode("utf-8")
            for line in text.split("\n")
            for chunk in chunks(line, budget)
        ]
    )


def action_message(prefix: str, target: str, text: str) -> bytes:
    """CTCP C{ACTION} lines (C{/me}) carrying C{text}, each cut to fit."""
    if "\n" not in text:  # one line that fits: as text_message
        data = f":{prefix} PRIVMSG {target} :\x01ACTION {text}\x01\r\n".encode()
        if len(data) <= LINE_MAX + 2:
            return data
    head = f":{prefix} PRIVMSG {target} :\x01ACTION "
    budget = LINE_MAX - len(head.encode("utf-8")) - 1
    return b"".join(
        [
            (head + chunk + "\x01\r\n").encode("utf-8")
            for line in text.split("\n")
            for chunk in chunks(line, budget)
        ]
    )


def chunks(text: str, budget: int) -> list[str]:
    """C{text} cut into pieces of at most C{budget} bytes of UTF-8.

    Cut between characters, never inside one; linear in the text.
    """
    data = text.encode("utf-8")
    if len(data) <= budget:
        return [text]
    budget = max(budget, 4)  # room for the longest character
    pieces = []
    start = 0
    while start < len(data):
        end = min(start + budget, len(data))
        while end < len(data) and data[end] & 0xC0 == 0x80:
            end -= 1  # back to the start of the character cut in two
        pieces.append(data[start:end].decode("utf-8"))
        start = end
    return pieces


#: The kinds L{shared} encodes: the same bytes for every IRC recipient.
SHARED_KINDS = frozenset({"chat", "action", "join", "part", "quit", "nick", "topic"})


def shared(event: Event) -> bytes:
    """C{event}, one of L{SHARED_KINDS}, as every IRC user is sent it."""
    kind = event.kind
    nick = event.nick or ""
    room = event.room or ""
    if kind == "chat":
        text = event.text
        if "\n" not in text:  # text_message's one line, without its calls
            data = f":{nick}!{nick}@{USER_HOST} PRIVMSG {room} :{text}\r\n".encode()
            if len(data) <= LINE_MAX + 2:
                return data
        return text_message(mask(nick), "PRIVMSG", room, text)
    if kind == "action":
        return action_message(mask(nick), room, event.text)
    if kind == "join":
        return message(mask(nick), "JOIN", room, trailing=False)
    if kind == "part":
        return message(mask(nick), "PART", room, event.reason or "")
    if kind == "quit":
        return message(mask(nick), "QUIT", event.reason or "")
    if kind == "nick":
        return message(mask(nick), "NICK", event.new_nick or "", trailing=False)
    if kind == "topic":
        return message(mask(nick), "TOPIC", room, event.text)
    raise ValueError(f"not an event every IRC user is sent alike: {event.kind}")


def tagged(when: float, data: bytes) -> bytes:
    """Every line of C{data} with an IRCv3 C{time} tag for C{when}."""
    tag = b"@time=" + iso_time(when).encode("ascii") + b" "
    return b"".join([tag + line + b"\n" for line in data.split(b"\n")[:-1]])


def shared_timed(event: Event) -> bytes:
    """L{shared}, with C{server-time} tags: for clients that asked for them."""
    return tagged(event.time, event.encoded(shared))


#: The two variants of the shared encoding, one for the clients that asked
#: for C{server-time} tags: each a connection's C{_encoder}, remembering the
#: last broadcast it encoded (see L{SharedEncoding}).
SHARED = SharedEncoding(shared)
SHARED_TIMED = SharedEncoding(shared_timed)


def is_shared(event: Event) -> bool:
    """Whether C{event} is sent alike to every IRC user (see L{shared})."""
    kind = event.kind
    return (
        kind in SHARED_KINDS
        and not event.history
        and (bool(event.room) or kind == "quit" or kind == "nick")
    )


def own(event: Event, nickname: str) -> bytes:
    """An event meant for the IRC user C{nickname} alone, in IRC's format."""
    kind = event.kind
    if kind == "private":
        return text_message(mask(event.nick or ""), "PRIVMSG", nickname, event.text)
    if kind == "private_sent":
        return b""  # an IRC client shows what it sent itself
    if kind == "pong":
        return message(SERVER, "PONG", SERVER, event.text)
    if kind == "disconnected":
        return message(None, "ERROR", f"Closing link: {event.reason}")
    if kind in ("notice", "error"):
        return notices(nickname, event.text.split("\n"))
    # Anything else (someone lost and back, a line of a resumed session):
    # its line format, as notices, so that nothing is lost.
    return notices(nickname, event.line.decode("utf-8").split("\r\n")[:-1])


def notices(target: str, lines: Iterable[str]) -> bytes:
    """Server C{NOTICE}s to C{target} (a nickname, C{*} or a channel)."""
    return b"".join([text_message(SERVER, "NOTICE", target, line) for line in lines])
