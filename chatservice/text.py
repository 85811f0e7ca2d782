"""Pure functions on text: decoding input, sanitising it, nickname rules.

Everything a client sends passes through L{clean_line} exactly once, so no
layer above the protocol ever sees invalid UTF-8, control characters or
terminal escape sequences.
"""

import re

from .errors import InvalidName

NICKNAME_MAX = 24

# Terminal escape sequences (ECMA-48), in their 7-bit (ESC) and 8-bit (C1)
# forms, removed whole so that their parameters do not show up as text.
# An unterminated sequence is removed to the end of the line, as a terminal
# would swallow it.  Linear: every part is possessive and none can fail once
# its introducer matched, so no character is looked at twice (but for the
# last ESC of a run).  A run of sequences is one match, and a run of ESCs
# one step: a line of nothing else costs a few times a plain line, not one
# Python-level replacement per sequence.
_ESCAPES = re.compile(
    # Controls that start no sequence are part of a run too (they would be
    # removed anyway): a line of ESC NUL pairs is one match, not a thousand
    # (it cost about 30 plain lines; each match is a Python-level step).
    r"(?:[\x00-\x08\x0a-\x1a\x1c-\x1f\x7f-\x8f\x91-\x97\x99\x9a\x9c]"
    r"|\x1b*(?:"
    r"\x1b(?:"
    # CSI: parameters, intermediates, final byte.
    r"\[[0-?]*+[ -/]*+[@-~]?+"
    # OSC, DCS, SOS, PM, APC: a string ended by BEL or ST.
    r"|[\]PX^_][^\x07\x1b\x9c]*+(?:\x07|\x1b\\|\x9c)?+"
    # Any other escape: intermediates and a final byte.
    r"|[ -/]*+[0-~]?+"
    r")"
    # The same CSI and strings in their 8-bit forms.
    r"|\x9b[0-?]*+[ -/]*+[@-~]?+"
    r"|[\x90\x98\x9d-\x9f][^\x07\x1b\x9c]*+(?:\x07|\x1b\\|\x9c)?+"
    r"))++"
)
#: Where an escape sequence may start: most lines that are not all
#: printable (a tab, a no-break space) have none, and skip L{_ESCAPES}.
_ESCAPE_START = re.compile("[\x1b\x90\x98\x9b\x9d-\x9f]")

#: What is left to remove, besides escape sequences: the characters that
#: change how a terminal shows what follows them.  Listed in full, with the
#: reasons, in docs/protocol.md (Sanitising).
REMOVED_CHARACTERS = (
    # C0 controls but tab, DEL, C1 controls (U+0085 NEL is among them).
    "\x00-\x08\x0a-\x1f\x7f-\x9f"
    # Line and paragraph separators: some terminals break the line there.
    "\u2028\u2029"
    # Unicode's Bidi_Control characters, which reorder text: the marks ALM,
    # LRM, RLM, the embeddings and overrides, the isolates.
    "\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
)
_CONTROLS = re.compile(f"[{REMOVED_CHARACTERS}]")

_NICKNAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_ROOM = re.compile(r"#[a-z0-9_-]{1,32}")


def decode(raw: bytes) -> str:
    """Decode one input line as UTF-8.

    Invalid bytes become U+FFFD rather than an error: the sender's text
    survives, and nobody else's terminal sees the raw bytes.  (Telnet
    commands never get this far: L{chatservice.telnet} reads them.)
    """
    return raw.decode("utf-8", errors="replace")


def sanitise(text: str) -> str:
    """Remove control characters and escape sequences from C{text}.

    Removed: whole escape sequences, and L{REMOVED_CHARACTERS}.  Tabs and
    all printable text are kept.  The result can be shown on any
    terminal without changing its state, and C{sanitise(sanitise(t)) ==
    sanitise(t)}.
    """
    if text.isprintable():
        # The common case: nothing to remove (isprintable() is False for
        # every character that either pattern matches: controls, Zl, Zp, Cf).
        return text
    if _ESCAPE_START.search(text):
        text = _ESCAPES.sub("", text)
    return _CONTROLS.sub("", text)


def sanitise_lines(text: str) -> str:
    """L{sanitise} each line of C{text}, keeping the newlines between them."""
    return "\n".join([sanitise(line) for line in text.split("\n")])


def clean_line(raw: bytes) -> str:
    """Turn one framed input line into safe text.

    L{sanitise} of L{decode}, their common case inline: two calls fewer
    for every line read.
    """
    text = raw.decode("utf-8", errors="replace")
    return text if text.isprintable() else sanitise(text)


def check_nickname(name: str) -> str:
    """Return C{name} if it is a valid nickname, else raise L{InvalidName}.

    Nicknames are 1 to 24 characters: an ASCII letter, then ASCII letters,
    digits, C{_} or C{-}.  ASCII only, so that two names that look alike are
    also alike to L{fold}.
    """
    if len(name) <= NICKNAME_MAX and _NICKNAME.fullmatch(name):
        return name  # valid (every registration): what follows says why not
    if not name:
        raise InvalidName("a nickname cannot be empty")
    if len(name.split(None, 1)) > 1:
        # Not quoted: several words are not a nickname typed wrong but a
        # line that is not one (an IRC client's PASS PASSWORD on the line
        # port), which may hold a password.
        raise InvalidName(
            "a nickname is one word: a letter, then letters, digits, _ or -"
        )
    if len(name) > NICKNAME_MAX:
        raise InvalidName(
            f"a nickname is at most {NICKNAME_MAX} characters, "
            f"and {shorten(name)} has {len(name)}"
        )
    if not _NICKNAME.fullmatch(name):
        raise InvalidName(
            f"invalid nickname {shorten(name)}: use a letter first, then "
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
            f"invalid room name {shorten(name)}: use # and then 1 to 32 "
            "letters, digits, _ or -"
        )
    return room


def fold(nickname: str) -> str:
    """The key under which nicknames are compared: unique ignoring case."""
    return nickname.lower()


def shorten(text: str, limit: int = 40) -> str:
    """Quote C{text} for an error line, cut to C{limit} characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return repr(text)
