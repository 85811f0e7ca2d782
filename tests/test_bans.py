"""Tests for chatservice.bans: parsing, matching, expiry and the bans file."""

import errno
import json
import os
from collections.abc import Callable
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs

from chatservice.bans import (
    Ban,
    BanList,
    BansFileError,
    format_duration,
    parse_duration,
    parse_target,
)


def at_once(function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """Run C{function} at once, in this thread: saves finish before returning."""
    return defer.maybeDeferred(function, *args)


class HeldThreads:
    """A run_in_thread whose calls wait until the test lets them run."""

    def __init__(self) -> None:
        self.calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self._deferreds: list[defer.Deferred[Any]] = []

    def __call__(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        self.calls.append((function, args))
        d: defer.Deferred[Any] = defer.Deferred()
        self._deferreds.append(d)
        return d

    def finish(self, index: int) -> None:
        """Run call C{index} now and fire its Deferred with the outcome."""
        function, args = self.calls[index]
        defer.maybeDeferred(function, *args).chainDeferred(self._deferreds[index])


def net(text: str) -> Any:
    """The network C{text}, without parse_target's checks."""
    return ip_network(text)


def bans_file(tmp_path: Path) -> str:
    """Where the tests keep their bans file."""
    return str(tmp_path / "bans.json")


def load(path: str, clock: Clock) -> BanList:
    """A ban list read from C{path}."""
    bans = BanList(path, clock, at_once)
    bans.load()
    return bans


def networks(bans: BanList) -> list[str]:
    """The networks banned, in order."""
    return [str(ban.network) for ban in bans.active()]


def leftovers(tmp_path: Path) -> list[str]:
    """Temporary files the saves left behind."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".bans-"))


# parse_target


@pytest.mark.parametrize(
    ("text", "network"),
    [
        ("192.0.2.7", "192.0.2.7/32"),
        ("  192.0.2.7 ", "192.0.2.7/32"),
        ("203.0.113.0/24", "203.0.113.0/24"),
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("10.0.0.0/255.0.0.0", "10.0.0.0/8"),
        ("2001:db8::1", "2001:db8::1/128"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("2001::/16", "2001::/16"),
        ("::ffff:192.0.2.7", "192.0.2.7/32"),
        ("::ffff:192.0.2.0/120", "192.0.2.0/24"),
    ],
)
def test_parse_target(text: str, network: str) -> None:
    """An address is a /32 or /128 network; a CIDR is itself; mapped is IPv4."""
    assert str(parse_target(text)) == network


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("foo", "'foo' is not an IP address or network"),
        ("", "'' is not an IP address or network"),
        ("10.0.0.256", "'10.0.0.256' is not an IP address or network"),
        ("10.0.0.0/33", "'10.0.0.0/33' is not an IP address or network"),
        ("10.0.0.0/", "'10.0.0.0/' is not an IP address or network"),
        ("fe80::1%eth0", "'fe80::1%eth0' is not an IP address or network"),
        (
            "x" * 50,
            "'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…' is not an IP address or network",
        ),
        ("10.0.0.1/8", "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?"),
        (
            "2001:db8::1/32",
            "2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?",
        ),
        ("0.0.0.0/0", "0.0.0.0/0 is too broad: an IPv4 ban must be /8 or narrower"),
        ("10.0.0.0/7", "10.0.0.0/7 is too broad: an IPv4 ban must be /8 or narrower"),
        ("2000::/3", "2000::/3 is too broad: an IPv6 ban must be /16 or narrower"),
        ("::/0", "::/0 is too broad: an IPv6 ban must be /16 or narrower"),
        (
            "::ffff:0.0.0.0/96",
            "0.0.0.0/0 is too broad: an IPv4 ban must be /8 or narrower",
        ),
    ],
)
def test_parse_target_refused(text: str, message: str) -> None:
    """Bad addresses, host bits and too broad networks are refused with a reason."""
    with pytest.raises(ValueError) as caught:
        parse_target(text)
    assert str(caught.value) == message


# Durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("7d", 7 * 86400),
        ("1w", 7 * 86400),
        ("45", 45),
        ("1.5h", 5400),
        ("1h30m", 5400),
        ("2h 05m", 7500),
        ("2H", 7200),
        (" 10m ", 600),
        ("0", None),
        ("0s", None),
        ("0m0s", None),
        ("forever", None),
        ("Permanent", None),
        ("520w", 520 * 7 * 86400),
    ],
)
def test_parse_duration(text: str, seconds: float | None) -> None:
    """Durations have units s, m, h, d and w; zero or forever is permanent."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "'' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("soon", "'soon' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("-5m", "'-5m' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("10 m", "'10 m' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("1e3", "'1e3' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("5y", "'5y' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("1.h", "'1.h' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("inf", "'inf' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("nan", "'nan' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        ("٣m", "'٣m' is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"),
        (
            "600w",
            "'600w' is longer than 10 years: use forever for a permanent ban",
        ),
    ],
)
def test_parse_duration_refused(text: str, message: str) -> None:
    """Anything else is refused with a short reason."""
    with pytest.raises(ValueError) as caught:
        parse_duration(text)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (45, "45s"),
        (0, "0s"),
        (-5, "0s"),
        (0.2, "1s"),
        (59.5, "1m"),
        (60, "1m"),
        (65, "1m 05s"),
        (600, "10m"),
        (7200, "2h"),
        (7200.0000001, "2h"),
        (7500, "2h 05m"),
        (7559, "2h 05m"),
        (86400, "1d"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
        (3 * 86400 + 4 * 3600 + 59 * 60, "3d 4h"),
        (7 * 86400, "7d"),
        (float("inf"), "forever"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    """Durations show their two largest units."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize("text", ["45s", "1m 05s", "2h 05m", "3d 4h", "7d"])
def test_format_then_parse(text: str) -> None:
    """What format_duration shows, parse_duration reads back."""
    seconds = parse_duration(text)
    assert seconds is not None
    assert format_duration(seconds) == text


# Ban.matches


@pytest.mark.parametrize(
    ("network", "host", "matches"),
    [
        ("192.0.2.7/32", "192.0.2.7", True),
        ("192.0.2.7/32", "192.0.2.8", False),
        ("192.0.2.7/32", "::ffff:192.0.2.7", True),
        ("10.0.0.0/8", "::ffff:10.9.8.7", True),
        ("10.0.0.0/8", "11.0.0.1", False),
        ("2001:db8::/32", "2001:db8::42", True),
        ("2001:db8::/32", "2001:db9::42", False),
        ("fe80::/16", "fe80::1%eth0", True),
        ("2001:db8::/32", "192.0.2.7", False),
        ("192.0.2.0/24", "2001:db8::42", False),
        ("192.0.2.7/32", "example.com", False),
        ("192.0.2.7/32", "", False),
    ],
)
def test_ban_matches(network: str, host: str, matches: bool) -> None:
    """A ban matches the addresses of its network, IPv4-mapped ones included."""
    ban = Ban(net(network), "", "alice", 0.0, None)
    assert ban.matches(host) is matches


# BanList in memory


def test_match(clock: Clock) -> None:
    """Banned addresses and networks match; others do not."""
    bans = BanList(None, clock)
    one = bans.add(parse_target("192.0.2.7"), None, "spam", "alice")
    wide = bans.add(parse_target("198.51.100.0/24"), None, "", "bob")
    six = bans.add(parse_target("2001:db8::/32"), None, "", "bob")
    assert bans.match("192.0.2.7") == one
    assert bans.match("::ffff:192.0.2.7") == one
    assert bans.match("198.51.100.200") == wide
    assert bans.match("::ffff:198.51.100.1") == wide
    assert bans.match("2001:db8:1::9") == six
    assert bans.match("192.0.2.8") is None
    assert bans.match("2001:db9::1") is None
    assert bans.match("not an address") is None


def test_narrowest_ban_wins(clock: Clock) -> None:
    """Of several bans that match, the narrowest network's is the answer."""
    bans = BanList(None, clock)
    bans.add(parse_target("10.0.0.0/8"), None, "the net", "alice")
    bans.add(parse_target("10.1.0.0/16"), None, "the subnet", "alice")
    bans.add(parse_target("10.1.2.3"), None, "the host", "alice")
    assert [bans.match(h).reason for h in ("10.1.2.3", "10.1.9.9", "10.9.9.9")] == [  # type: ignore[union-attr]
        "the host",
        "the subnet",
        "the net",
    ]


def test_ban_fields(clock: Clock) -> None:
    """A ban records the reason, the operator, when it was made and when it ends."""
    clock.advance(1000)
    bans = BanList(None, clock)
    ban = bans.add(parse_target("192.0.2.7"), 3600, "spam", "alice")
    assert ban == Ban(net("192.0.2.7/32"), "spam", "alice", 1000.0, 4600.0)
    assert bans.add(parse_target("192.0.2.8"), None, "", "bob").expires is None


def test_add_replaces(clock: Clock) -> None:
    """Banning a banned network again replaces its ban."""
    bans = BanList(None, clock)
    bans.add(parse_target("192.0.2.7"), 60, "first", "alice")
    second = bans.add(parse_target("192.0.2.7"), None, "second", "bob")
    assert bans.active() == [second]
    assert bans.match("192.0.2.7") == second


def test_add_mapped_network(clock: Clock) -> None:
    """A ban of an IPv4-mapped address is a ban of the IPv4 address."""
    bans = BanList(None, clock)
    ban = bans.add(net("::ffff:192.0.2.7/128"), None, "", "alice")
    assert str(ban.network) == "192.0.2.7/32"
    assert bans.match("192.0.2.7") == ban
    assert bans.remove(net("192.0.2.7/32")) == ban


@pytest.mark.parametrize("duration", [0, -1, float("nan"), float("inf")])
def test_add_refuses_bad_duration(clock: Clock, duration: float) -> None:
    """A ban lasts a positive time, or for ever (None)."""
    with pytest.raises(ValueError):
        BanList(None, clock).add(parse_target("192.0.2.7"), duration, "", "alice")


def test_remove(clock: Clock) -> None:
    """Lifting a ban returns it, and the address may connect again."""
    bans = BanList(None, clock)
    ban = bans.add(parse_target("198.51.100.0/24"), None, "", "alice")
    assert bans.remove(parse_target("198.51.100.0/24")) == ban
    assert bans.match("198.51.100.1") is None
    assert bans.remove(parse_target("198.51.100.0/24")) is None
    assert bans.active() == []


def test_remove_needs_the_exact_network(clock: Clock) -> None:
    """Lifting a ban of another network, even a covering one, lifts nothing."""
    bans = BanList(None, clock)
    bans.add(parse_target("198.51.100.0/24"), None, "", "alice")
    assert bans.remove(parse_target("198.51.100.7")) is None
    assert bans.remove(parse_target("198.51.0.0/16")) is None
    assert networks(bans) == ["198.51.100.0/24"]


def test_active_sorted(clock: Clock) -> None:
    """The bans in force are listed by network, IPv4 first."""
    bans = BanList(None, clock)
    for target in ["2001:db8::/32", "10.0.0.0/8", "192.0.2.7", "9.9.9.9", "::1"]:
        bans.add(parse_target(target), None, "", "alice")
    assert networks(bans) == [
        "9.9.9.9/32",
        "10.0.0.0/8",
        "192.0.2.7/32",
        "::1/128",
        "2001:db8::/32",
    ]


def test_expiry(clock: Clock) -> None:
    """A ban ends at its time; a permanent one stays."""
    bans = BanList(None, clock)
    bans.add(parse_target("192.0.2.7"), 60, "", "alice")
    bans.add(parse_target("10.0.0.0/8"), 120, "", "alice")
    bans.add(parse_target("198.51.100.1"), None, "", "alice")
    clock.advance(59.9)
    assert bans.match("192.0.2.7") is not None
    clock.advance(0.1)
    assert bans.match("192.0.2.7") is None
    assert networks(bans) == ["10.0.0.0/8", "198.51.100.1/32"]
    clock.advance(60)
    assert bans.match("10.1.2.3") is None
    clock.advance(10 * 365 * 86400)
    assert networks(bans) == ["198.51.100.1/32"]
    assert bans.match("198.51.100.1") is not None


def test_ended_ban_hides_no_wider_one(clock: Clock) -> None:
    """When a narrow ban ends, a wider one still in force matches."""
    bans = BanList(None, clock)
    bans.add(parse_target("10.0.0.0/8"), None, "wide", "alice")
    bans.add(parse_target("10.1.2.3"), 60, "narrow", "alice")
    clock.advance(60)
    ban = bans.match("10.1.2.3")
    assert ban is not None and ban.reason == "wide"


def test_remove_ended_ban(clock: Clock) -> None:
    """Lifting a ban that has ended says there was none."""
    bans = BanList(None, clock)
    bans.add(parse_target("192.0.2.7"), 60, "", "alice")
    clock.advance(61)
    assert bans.remove(parse_target("192.0.2.7")) is None


def test_memory_only(clock: Clock) -> None:
    """Without a file nothing is written, and saved() has already fired."""

    def no_threads(function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        raise AssertionError("nothing should be saved")

    bans = BanList(None, clock, no_threads)
    bans.load()
    bans.add(parse_target("192.0.2.7"), None, "", "alice")
    bans.remove(parse_target("192.0.2.7"))
    assert bans.saved().called


# The bans file


def test_round_trip(tmp_path: Path, clock: Clock) -> None:
    """Bans saved to the file are the bans read from it."""
    clock.advance(1_700_000_000.25)
    path = bans_file(tmp_path)
    bans = load(path, clock)
    bans.add(parse_target("192.0.2.7"), 3600, 'spam "and" ☃ \\', "alice")
    bans.add(parse_target("2001:db8::/32"), None, "", "Bob")
    bans.add(parse_target("10.0.0.0/8"), 1.5, "", "carol")
    saved = bans.saved()
    assert saved.called and saved.result is None
    assert load(path, clock).active() == bans.active()
    assert leftovers(tmp_path) == []


def test_file_format(tmp_path: Path, clock: Clock) -> None:
    """The file is an indented JSON document with a version."""
    clock.advance(1000)
    path = bans_file(tmp_path)
    bans = BanList(path, clock, at_once)
    bans.add(parse_target("192.0.2.0/24"), 3600, "spam ☃", "alice")
    bans.add(parse_target("2001:db8::1"), None, "", "bob")
    assert Path(path).read_text() == (
        "{\n"
        '  "version": 1,\n'
        '  "bans": [\n'
        "    {\n"
        '      "network": "192.0.2.0/24",\n'
        '      "reason": "spam \\u2603",\n'
        '      "by": "alice",\n'
        '      "created": 1000.0,\n'
        '      "expires": 4600.0\n'
        "    },\n"
        "    {\n"
        '      "network": "2001:db8::1/128",\n'
        '      "reason": "",\n'
        '      "by": "bob",\n'
        '      "created": 1000.0,\n'
        '      "expires": null\n'
        "    }\n"
        "  ]\n"
        "}\n"
    )


def test_missing_file(tmp_path: Path, clock: Clock) -> None:
    """A missing file is no bans, and the first ban creates it."""
    path = bans_file(tmp_path)
    bans = load(path, clock)
    assert bans.active() == []
    assert not os.path.exists(path)
    bans.add(parse_target("192.0.2.7"), None, "", "alice")
    assert networks(load(path, clock)) == ["192.0.2.7/32"]


def test_empty_file(tmp_path: Path, clock: Clock) -> None:
    """An empty file, made ready for the server, is no bans."""
    path = bans_file(tmp_path)
    Path(path).write_text("\n")
    assert load(path, clock).active() == []


def test_load_drops_ended_bans(tmp_path: Path, clock: Clock) -> None:
    """Bans that ended while the server was down are not loaded."""
    path = bans_file(tmp_path)
    bans = load(path, clock)
    bans.add(parse_target("192.0.2.7"), 60, "", "alice")
    bans.add(parse_target("192.0.2.8"), 120, "", "alice")
    clock.advance(90)
    assert networks(load(path, clock)) == ["192.0.2.8/32"]


def test_ended_ban_saved_away(tmp_path: Path, clock: Clock) -> None:
    """A ban found ended when matching is also removed from the file."""
    path = bans_file(tmp_path)
    bans = load(path, clock)
    bans.add(parse_target("192.0.2.7"), 60, "", "alice")
    clock.advance(60)
    assert bans.match("192.0.2.7") is None
    document = json.loads(Path(path).read_text())
    assert document == {"version": 1, "bans": []}


def test_load_replaces(tmp_path: Path, clock: Clock) -> None:
    """Loading replaces the bans in memory with the file's."""
    path = bans_file(tmp_path)
    load(path, clock).add(parse_target("192.0.2.7"), None, "", "alice")
    bans = BanList(path, clock, at_once)
    bans.load()
    assert networks(bans) == ["192.0.2.7/32"]
    assert bans.saved().called


def test_leftover_temporary_file_ignored(tmp_path: Path, clock: Clock) -> None:
    """A temporary file left by a crash during a write is not read."""
    path = bans_file(tmp_path)
    load(path, clock).add(parse_target("192.0.2.7"), None, "", "alice")
    (tmp_path / ".bans-x1y2z3").write_text('{"version": 1, "bans": [{"netw')
    bans = load(path, clock)
    assert networks(bans) == ["192.0.2.7/32"]
    bans.add(parse_target("192.0.2.8"), None, "", "alice")
    assert networks(load(path, clock)) == ["192.0.2.7/32", "192.0.2.8/32"]


@pytest.mark.parametrize("broken", ["replace", "fsync"])
def test_failed_write_keeps_the_old_file(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch, broken: str
) -> None:
    """A write that fails leaves the previous file whole, and is logged."""
    path = bans_file(tmp_path)
    bans = load(path, clock)
    bans.add(parse_target("192.0.2.7"), None, "", "alice")

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, broken, full)
    with capturedLogs() as events:
        ban = bans.add(parse_target("192.0.2.8"), None, "", "alice")
    monkeypatch.undo()

    assert bans.match("192.0.2.8") == ban  # the list in memory is authoritative
    assert networks(load(path, clock)) == ["192.0.2.7/32"]
    assert leftovers(tmp_path) == []
    [event] = events
    assert event["log_level"] == LogLevel.error
    assert event["path"] == path
    assert event["error"] == "[Errno 28] No space left on device"

    # The next change saves everything.
    bans.add(parse_target("192.0.2.9"), None, "", "alice")
    assert networks(load(path, clock)) == [
        "192.0.2.7/32",
        "192.0.2.8/32",
        "192.0.2.9/32",
    ]


def test_saved_fails_when_the_write_fails(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """saved() tries the write again, and fails if it fails again."""
    path = bans_file(tmp_path)
    bans = load(path, clock)

    def denied(*args: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", denied)
    with capturedLogs() as events:
        bans.add(parse_target("192.0.2.8"), None, "", "alice")
        result: list[Any] = []
        bans.saved().addBoth(result.append)
    assert len(events) == 2  # the save, and the retry saved() asked for
    [error] = result
    assert error.check(PermissionError)
    monkeypatch.undo()
    done = bans.saved()
    assert done.called
    assert networks(load(path, clock)) == ["192.0.2.8/32"]


def test_changes_during_a_save_are_coalesced(tmp_path: Path, clock: Clock) -> None:
    """Changes made while a save runs are written by one more save, together."""
    path = bans_file(tmp_path)
    threads = HeldThreads()
    bans = BanList(path, clock, threads)
    bans.add(parse_target("192.0.2.1"), None, "", "alice")
    first = bans.saved()
    bans.add(parse_target("192.0.2.2"), None, "", "alice")
    bans.add(parse_target("192.0.2.3"), 60, "", "alice")
    bans.remove(parse_target("192.0.2.1"))
    everything = bans.saved()
    assert len(threads.calls) == 1  # never two writes at once

    threads.finish(0)
    assert first.called and not everything.called
    assert networks(load(path, clock)) == ["192.0.2.1/32"]
    assert len(threads.calls) == 2

    threads.finish(1)
    assert everything.called
    assert networks(load(path, clock)) == ["192.0.2.2/32", "192.0.2.3/32"]
    assert len(threads.calls) == 2


def test_failed_save_retried_with_later_changes(
    tmp_path: Path, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Changes made during a save that fails are saved, with the failed one's."""
    path = bans_file(tmp_path)
    threads = HeldThreads()
    bans = BanList(path, clock, threads)
    bans.add(parse_target("192.0.2.1"), None, "", "alice")
    bans.add(parse_target("192.0.2.2"), None, "", "alice")
    everything = bans.saved()

    def denied(*args: object) -> None:
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "replace", denied)
    with capturedLogs() as events:
        threads.finish(0)
    monkeypatch.undo()
    assert len(events) == 1
    assert not everything.called
    assert len(threads.calls) == 2

    threads.finish(1)
    assert everything.called
    assert networks(load(path, clock)) == ["192.0.2.1/32", "192.0.2.2/32"]


def test_cancelled_wait(tmp_path: Path, clock: Clock) -> None:
    """Giving up on saved() (a timeout) disturbs nothing."""
    path = bans_file(tmp_path)
    threads = HeldThreads()
    bans = BanList(path, clock, threads)
    bans.add(parse_target("192.0.2.1"), None, "", "alice")
    waiting = bans.saved()
    waiting.cancel()
    waiting.addErrback(lambda f: f.trap(defer.CancelledError))
    threads.finish(0)
    assert bans.saved().called
    assert networks(load(path, clock)) == ["192.0.2.1/32"]


def test_no_save_without_change(tmp_path: Path, clock: Clock) -> None:
    """Reading, matching and listing write nothing."""
    path = bans_file(tmp_path)
    threads = HeldThreads()
    bans = BanList(path, clock, threads)
    bans.load()
    bans.match("192.0.2.1")
    bans.active()
    bans.remove(parse_target("192.0.2.1"))
    assert threads.calls == []
    assert bans.saved().called


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (
            '{"version": 1, "bans": [\n  {"network": "10.0.0.0/8",\n  oops\n]}',
            "line 3: Expecting property name enclosed in double quotes",
        ),
        ('{"version": 1,\n "bans": []', "line 2: Expecting ',' delimiter"),
        ("[]", 'expected a JSON object {"version": 1, "bans": [...]}'),
        ('{"bans": []}', 'expected a JSON object {"version": 1, "bans": [...]}'),
        (
            '{"version": 2, "bans": []}',
            "version 2 is not supported; this chatservice reads version 1",
        ),
        (
            '{"version": "1", "bans": []}',
            'version "1" is not supported; this chatservice reads version 1',
        ),
        ('{"version": 1}', '"bans" must be a list'),
        ('{"version": 1, "bans": {}}', '"bans" must be a list'),
        ('{"version": 1, "bans": [5]}', "ban 1: expected an object"),
        (
            '{"version": 1, "bans": [{"network": "10.0.0.0/8", "reason": "",'
            ' "by": "a", "created": 0}]}',
            'ban 1: "expires" is missing',
        ),
        (
            '{"version": 1, "bans": [{"network": "foo", "reason": "",'
            ' "by": "a", "created": 0, "expires": null}]}',
            "ban 1: 'foo' is not an IP address or network",
        ),
        (
            '{"version": 1, "bans": [{"network": "10.0.0.0/8", "reason": 5,'
            ' "by": "a", "created": 0, "expires": null}]}',
            'ban 1: "reason" must be a string',
        ),
        (
            '{"version": 1, "bans": [{"network": "10.0.0.0/8", "reason": "",'
            ' "by": "a", "created": "yesterday", "expires": null}]}',
            'ban 1: "created" must be a number',
        ),
        (
            '{"version": 1, "bans": [{"network": "10.0.0.0/8", "reason": "",'
            ' "by": "a", "created": NaN, "expires": null}]}',
            'ban 1: "created" must be a number',
        ),
        (
            '{"version": 1, "bans": [{"network": "10.0.0.0/8", "reason": "",'
            ' "by": "a", "created": 0, "expires": true}]}',
            'ban 1: "expires" must be a number or null',
        ),
        (
            '{"version": 1, "bans": [{"network": "10.0.0.0/8", "reason": "",'
            ' "by": "a", "created": 0, "expires": null}, {"network": "10.0.0.0/8",'
            ' "reason": "", "by": "b", "created": 0, "expires": null}]}',
            "ban 2: 10.0.0.0/8 is already banned by ban 1",
        ),
    ],
)
def test_corrupt_file(tmp_path: Path, clock: Clock, text: str, reason: str) -> None:
    """A file that is not a valid bans file stops the server with one line."""
    path = bans_file(tmp_path)
    Path(path).write_text(text)
    with pytest.raises(BansFileError) as caught:
        load(path, clock)
    assert str(caught.value) == (
        f"chatservice: --bans {path} is not a valid bans file ({reason}); "
        "fix or remove it"
    )


def test_file_not_utf8(tmp_path: Path, clock: Clock) -> None:
    """Bytes that are not UTF-8 are a corrupt file."""
    path = bans_file(tmp_path)
    Path(path).write_bytes(b'{"version": 1,\n "bans": ["\xff"]}')
    with pytest.raises(BansFileError) as caught:
        load(path, clock)
    assert str(caught.value) == (
        f"chatservice: --bans {path} is not a valid bans file "
        "(line 2: not UTF-8 text); fix or remove it"
    )


def test_corrupt_file_keeps_nothing(tmp_path: Path, clock: Clock) -> None:
    """A corrupt file is never overwritten by loading it."""
    path = bans_file(tmp_path)
    Path(path).write_text("{")
    bans = BanList(path, clock, at_once)
    with pytest.raises(BansFileError):
        bans.load()
    assert Path(path).read_text() == "{"


def test_unreadable_file(tmp_path: Path, clock: Clock) -> None:
    """A file that cannot be read is one line with the system's reason."""
    with pytest.raises(BansFileError) as caught:
        load(str(tmp_path), clock)
    assert str(caught.value) == (
        f"chatservice: --bans {tmp_path}: cannot be read: Is a directory"
    )


def test_missing_directory(tmp_path: Path, clock: Clock) -> None:
    """A file that could never be written is refused at startup."""
    path = str(tmp_path / "nowhere" / "bans.json")
    with pytest.raises(BansFileError) as caught:
        load(path, clock)
    assert str(caught.value) == (
        f"chatservice: --bans {path}: cannot be created: there is no directory "
        f"{tmp_path / 'nowhere'}"
    )


@pytest_twisted.ensureDeferred
async def test_saved_in_a_thread(tmp_path: Path) -> None:
    """By default the file is written in the reactor's thread pool."""
    from twisted.internet import reactor

    path = bans_file(tmp_path)
    bans = BanList(path, reactor)
    bans.load()
    bans.add(parse_target("192.0.2.7"), None, "spam", "alice")
    bans.add(parse_target("2001:db8::/32"), 3600, "", "bob")
    waiting = bans.saved()
    assert not waiting.called  # the write is not done on the reactor thread
    await waiting.addTimeout(10, reactor)
    again = BanList(path, reactor)
    again.load()
    assert again.active() == bans.active()
