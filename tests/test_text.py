"""Tests for chatservice.text: decoding, sanitising, nickname rules."""

import unicodedata

import pytest

from chatservice.errors import InvalidName
from chatservice.text import check_nickname, clean_line, decode, fold, sanitise


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (b"hello", "hello"),
        ("héllo ☃".encode(), "héllo ☃"),
        (b"bad \xc3( byte", "bad \ufffd( byte"),
        (b"a\xffb", "a\ufffdb"),  # telnet is read before: 0xFF is a bad byte
        (b"\xff\xfa\xff\xf0", "\ufffd" * 4),
    ],
)
def test_decode(raw: bytes, text: str) -> None:
    """Input is UTF-8 with invalid bytes replaced."""
    assert decode(raw) == text


@pytest.mark.parametrize(
    ("text", "clean"),
    [
        ("plain text, tabs\tkept", "plain text, tabs\tkept"),
        ("\x1b[31mred\x1b[0m", "red"),
        ("\x1b[2J\x1b[Hcleared", "cleared"),
        ("\x1b]0;new title\x07after", "after"),
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),
        ("\x9b31mC1 CSI", "C1 CSI"),
        ("bell\x07 bs\x08 nul\x00 del\x7f c1\x85", "bell bs nul del c1"),
        ("cr\rlf\n", "crlf"),
        ("\u202eevil\u202c \u2066iso\u2069", "evil iso"),
        ("line\u2028sep\u2029para", "lineseppara"),
        ("\u200eLRM \u200fRLM \u061cALM", "LRM RLM ALM"),
        ("next line\x85", "next line"),
        # Not removed: Mongolian vowel separator, zero-width (non-)joiners.
        (
            "\u1820\u180e\u1820 \U0001f469\u200d\U0001f4bb a\u200cb",
            "\u1820\u180e\u1820 \U0001f469\u200d\U0001f4bb a\u200cb",
        ),
        ("\x1bc reset", " reset"),
        ("\x1b[31", ""),  # unterminated CSI
        ("\x1b]0;unterminated title", ""),
        (
            "émoji 👍 and CJK 漢字 and NBSP\xa0kept",
            "émoji 👍 and CJK 漢字 and NBSP\xa0kept",
        ),
    ],
)
def test_sanitise(text: str, clean: str) -> None:
    """Controls and escape sequences are removed, printable text is kept."""
    assert sanitise(text) == clean
    assert sanitise(clean) == clean


def test_clean_line_combines() -> None:
    """A raw line is decoded, then sanitised."""
    assert clean_line(b"hi \x1b[1mthere\x1b[0m \xc3\xe2\x80\xa8") == "hi there \ufffd"


def test_removed_characters_complete() -> None:
    """Every bidi control Unicode lists, and both separators, are removed."""
    # Unicode's PropList.txt, Bidi_Control; and the categories Zl and Zp.
    bidi_controls = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    bidi_controls += "\u2066\u2067\u2068\u2069"
    separators = [
        chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) in ("Zl", "Zp")
    ]
    assert separators == ["\u2028", "\u2029"]
    assert sanitise("x".join(bidi_controls + "\u2028\u2029")) == "x" * 13


@pytest.mark.parametrize("name", ["a", "alice", "Bob_2", "x-y", "a" * 24, "Z9_-"])
def test_valid_nicknames(name: str) -> None:
    """Nicknames of 1-24 letters, digits, _ and -, starting with a letter."""
    assert check_nickname(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("", "a nickname cannot be empty"),
        (
            "a" * 25,
            "a nickname is at most 24 characters, and 'aaaaaaaaaaaaaaaaaaaaaaaaa' has 25",
        ),
        (
            "9lives",
            "invalid nickname '9lives': use a letter first, then letters, digits, _ or -",
        ),
        (
            "_x",
            "invalid nickname '_x': use a letter first, then letters, digits, _ or -",
        ),
        (
            "two words",
            "a nickname is one word: a letter, then letters, digits, _ or -",
        ),
        (
            "ålice",
            "invalid nickname 'ålice': use a letter first, then letters, digits, _ or -",
        ),
        (
            "a.b",
            "invalid nickname 'a.b': use a letter first, then letters, digits, _ or -",
        ),
    ],
)
def test_invalid_nicknames(name: str, why: str) -> None:
    """An invalid nickname is refused with a reason."""
    with pytest.raises(InvalidName) as caught:
        check_nickname(name)
    assert str(caught.value) == why


def test_fold_ignores_case() -> None:
    """Nicknames that differ only in case fold alike."""
    assert fold("Alice") == fold("ALICE") == fold("alice")
