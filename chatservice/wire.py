"""The server's side of the line protocol: every line it sends is built here.

Each function returns the finished bytes of one line, UTF-8 with CRLF, ready
to hand to any number of clients unchanged.  This module (and its reading
side, L{chatservice.wireparse}) alone knows the prefixes that let people and
scripts tell lines apart:

  - C{*** } a notice (greeting, joins and leaves, replies to commands)
  - C{!!! } an error (what was wrong and what to do instead)
  - C{<nick> text} a chat line, C{* nick text} an action,
    C{*nick* text} a private message, C{-> *nick* text} its echo to the sender

The programs on the other end (the client, the benchmark, the tests) read
these lines back with L{chatservice.wireparse}, tested as the round trip of
the builders here.

See C{docs/protocol.md} for the whole protocol.
"""

import functools
import time

from .reasons import CloseReason

CRLF = "\r\n"


def _line(text: str) -> bytes:
    return (text + CRLF).encode("utf-8")


def notice(text: str) -> bytes:
    """A C{*** } line: information from the server."""
    return _line("*** " + text)


def error(text: str) -> bytes:
    """A C{!!! } line: what the user did wrong and what to do instead."""
    return _line("!!! " + text)


def chat(nickname: str, text: str) -> bytes:
    """A chat line from C{nickname}."""
    return _line(f"<{nickname}> {text}")


def action(nickname: str, text: str) -> bytes:
    """An action (C{/me}) by C{nickname}."""
    return _line(f"* {nickname} {text}")


def private(sender: str, text: str) -> bytes:
    """A private message from C{sender}, as its recipient sees it."""
    return _line(f"*{sender}* {text}")


def private_echo(recipient: str, text: str) -> bytes:
    """A private message to C{recipient}, as its sender sees it."""
    return _line(f"-> *{recipient}* {text}")


def joined(nickname: str, room: str) -> bytes:
    """Someone arrived."""
    # Made at once, not through notice() and _line(): 170 -> 76 ns, and
    # every registration makes one, as it makes a welcome and a departure.
    return f"*** {nickname} has joined {room}\r\n".encode()


def left(nickname: str, reason: CloseReason | str) -> bytes:
    """Someone left, and why: C{bob has left (quit: lunch)}.

    The server gives a L{CloseReason}; its text, as read back by a client
    (L{chatservice.wireparse}), makes the same line.
    """
    return f"*** {nickname} has left ({reason})\r\n".encode()  # see joined()


def lost(nickname: str) -> bytes:
    """Someone's connection dropped; they may come back (resume)."""
    return notice(f"{nickname} lost connection")


def back(nickname: str) -> bytes:
    """Someone whose connection dropped resumed their session."""
    return notice(f"{nickname} is back")


def resume_token(nickname: str, token: str) -> bytes:
    """The line that gives a user their (new) resume token."""
    return notice(
        f"resume token: {token} (if your connection drops, reconnect and send "
        f"/resume {nickname} {token} as your first line)"
    )


def welcome(nickname: str, online: str) -> bytes:
    """The first line after registration: C{nickname} is ours, who is online."""
    return f"*** Welcome, {nickname}! {online}\r\n".encode()  # see joined()


def now_in(room: str, topic: str) -> bytes:
    """The answer to C{/join}: the session is in C{room} now, and its topic."""
    about = f"Topic: {topic}" if topic else "No topic is set."
    return notice(f"You are now in {room}. {about}")


def resumed(nickname: str, room: str, missed: int) -> bytes:
    """The answer to C{/resume}: back as C{nickname}, C{missed} lines follow."""
    lines = "1 missed line follows" if missed == 1 else f"{missed} missed lines follow"
    return notice(f"Resumed as {nickname} in {room}; {lines}:")


def renamed(old: str, new: str) -> bytes:
    """Someone changed nickname."""
    return notice(f"{old} is now known as {new}")


def pong(token: str) -> bytes:
    """The answer to C{/ping TOKEN}: exactly C{*** PONG TOKEN}."""
    return notice(f"PONG {token}" if token else "PONG")


def parted(nickname: str, room: str, reason: str) -> bytes:
    """Someone left one room (for another, or by choice)."""
    return notice(f"{nickname} has left {room} ({reason})")


def topic_set(nickname: str, room: str, topic: str) -> bytes:
    """Someone set a room's topic."""
    return notice(f"{nickname} set the topic of {room}: {topic}")


def stamped(when: float, line: bytes) -> bytes:
    """A line from the scrollback, prefixed with its UTC time as C{[HH:MM] }."""
    return _stamp(int(when // 60)) + line


def dated(when: float, line: bytes) -> bytes:
    """A line said before today, prefixed with its UTC date and time.

    C{[YYYY-MM-DD HH:MM] }: the scrollback and C{/history} date the lines
    older than the day they are shown on (today's have L{stamped}'s time
    alone).
    """
    return time.strftime("[%Y-%m-%d %H:%M] ", time.gmtime(when)).encode() + line


@functools.lru_cache(maxsize=256)
def _stamp(minute: int) -> bytes:
    # Each newcomer to a room is shown its scrollback: formatting the same
    # few minutes once, not once per line per newcomer, halves the cost.
    return time.strftime("[%H:%M] ", time.gmtime(minute * 60)).encode("ascii")


def utc(when: float) -> str:
    """A moment as users read it in notices: C{2026-11-23 15:00 UTC}."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(when))
