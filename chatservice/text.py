"""Pure functions on text: decoding input, sanitising it, nickname rules.

Everything a client sends passes through L{clean_line} exactly once, so no
layer above the protocol ever sees invalid UTF-8, control characters or
terminal escape sequences.
"""

import re

from .errors import InvalidName

NICKNAME_MAX = 24

# Telnet negotiation (RFC 854): IAC and a command byte; WILL, WONT, DO and
# DONT take an option byte, and SB opens a subnegotiation ended by IAC SE.
# Only complete sequences are removed: any other 0xFF byte is invalid UTF-8
# and becomes U+FFFD like the rest.
_TELNET = re.compile(rb"\xff(?:[\xfb-\xfe].|\xfa.*?\xff\xf0|[\xf0-\xf9])", re.DOTALL)

# Terminal escape sequences (ECMA-48), in their 7-bit (ESC) and 8-bit (C1)
# forms, removed whole so that their parameters do not show up as text.
# An unterminated sequence is removed to the end of the line, as a terminal
# would swallow it.
_ESCAPES = re.compile(
    # CSI: parameters, intermediates, final byte.
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    # OSC, DCS, SOS, PM, APC: a string ended by BEL or ST.
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d-\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)?"
    # Any other escape: intermediates and a final byte.
    r"|\x1b[ -/]*[0-~]?"
)

# What is left to remove: C0 controls except tab, DEL, C1 controls, and the
# bidi embeddings, overrides and isolates that reorder what follows them.
_CONTROLS = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

_NICKNAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ROOM = re.compile(r"#[a-z0-9_-]{1,32}")


def decode(raw: bytes) -> str:
    """Decode one input line as UTF-8, dropping telnet negotiation.

    Invalid bytes become U+FFFD rather than an error: the sender's text
    survives, and nobody else's terminal sees the raw bytes.
    """
    if b"\xff" in raw:
        raw = _TELNET.sub(b"", raw)
    return raw.decode("utf-8", errors="replace")


def sanitise(text: str) -> str:
    """Remove control characters and escape sequences from C{text}.

    Tabs and all printable text are kept.  The result can be shown on any
    terminal without changing its state, and C{sanitise(sanitise(t)) ==
    sanitise(t)}.
    """
    if text.isprintable():
        # The common case: nothing to remove (isprintable() is False for
        # every character that either pattern matches).
        return text
    return _CONTROLS.sub("", _ESCAPES.sub("", text))


def clean_line(raw: bytes) -> str:
    """Turn one framed input line into safe text."""
    return sanitise(decode(raw))


def check_nickname(name: str) -> str:
    """Return C{name} if it is a valid nickname, else raise L{InvalidName}.

    Nicknames are 1 to 24 characters: an ASCII letter, then ASCII letters,
    digits, C{_} or C{-}.  ASCII only, so that two names that look alike are
    also alike to L{fold}.
    """
    if not name:
        raise InvalidName("a nickname cannot be empty")
    if len(name) > NICKNAME_MAX:
        raise InvalidName(
            f"a nickname is at most {NICKNAME_MAX} characters, "
            f"and {_shorten(name)} has {len(name)}"
        )
    if not _NICKNAME.fullmatch(name):
        raise InvalidName(
            f"invalid nickname {_shorten(name)}: use a letter first, then "
            "letters, digits, _ or -"
        )
    return name


def check_room(name: str) -> str:
    """Return the room C{name} in lower case, or raise L{InvalidName}.

    A room name is C{#} and 1 to 32 of C{a-z 0-9 _ -}, ignoring case.
    """
    room = name.lower()
    if not _ROOM.fullmatch(room):
        raise InvalidName(
            f"invalid room name {_shorten(name)}: use # and then 1 to 32 "
            "letters, digits, _ or -"
        )
    return room


def fold(nickname: str) -> str:
    """The key under which nicknames are compared: unique ignoring case."""
    return nickname.lower()


def _shorten(text: str, limit: int = 40) -> str:
    """Quote C{text} for an error line, cut to C{limit} characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return repr(text)
