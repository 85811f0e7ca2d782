"""Unit tests of the token bucket and the growing delay after failed attempts."""

import pytest

from twisted.internet.task import Clock

from chatservice.throttle import FailureDelay, TokenBucket, address_key


def test_bucket_burst_then_rate() -> None:
    """A full bucket gives its burst at once, then one token per 1/rate s."""
    bucket = TokenBucket(rate=5, burst=3, now=0)
    assert [bucket.take(0) for _ in range(3)] == [0, 0, 0]
    assert bucket.take(0) == 0.2
    assert bucket.take(0.1) == 0.1  # nothing was taken by the refusals
    assert bucket.take(0.2) == 0


def test_bucket_never_holds_more_than_burst() -> None:
    """A long pause refills the bucket only up to its burst."""
    bucket = TokenBucket(rate=1, burst=2, now=0)
    assert bucket.full(100)
    assert [bucket.take(100) for _ in range(3)] == [0, 0, 1]
    assert not bucket.full(100)


def test_free_attempts_then_doubling_to_cap() -> None:
    """Three failures cost nothing; then 1, 2, 4, 8 s, and at most 10 s."""
    delays = FailureDelay(Clock())
    seen = []
    for _ in range(9):
        seen.append(delays.delay("a"))
        delays.failed("a")
    assert seen == [0, 0, 0, 1, 2, 4, 8, 10, 10]


def test_success_starts_over() -> None:
    """A success forgets the failures."""
    delays = FailureDelay(Clock())
    for _ in range(5):
        delays.failed("a")
    delays.succeeded("a")
    assert delays.delay("a") == 0


def test_quiet_address_forgotten() -> None:
    """Fifteen minutes without a failure, an address starts over."""
    clock = Clock()
    delays = FailureDelay(clock)
    for _ in range(5):
        delays.failed("a")
    clock.advance(899)
    assert delays.delay("a") == 4
    clock.advance(1)
    assert delays.delay("a") == 0


def test_keys_are_separate() -> None:
    """One address's failures do not delay another."""
    delays = FailureDelay(Clock())
    for _ in range(5):
        delays.failed("a")
    assert delays.delay("b") == 0


def test_table_bounded() -> None:
    """Addresses whose failures are old are pruned as new ones come."""
    clock = Clock()
    delays = FailureDelay(clock)
    for n in range(5000):
        delays.failed(n)
        clock.advance(1)
    assert len(delays._failures) <= 2048


def test_table_keeps_the_most_recent_keys() -> None:
    """Past its limit, the table forgets the key whose last failure is oldest."""
    clock = Clock()
    delays = FailureDelay(clock, free=1, limit=3)
    for key in ["a", "b", "c", "a", "d"]:
        delays.failed(key)
        clock.advance(1)
    assert len(delays) == 3
    assert [delays.delay(key) > 0 for key in "abcd"] == [True, False, True, True]


@pytest.mark.parametrize(
    "host, key",
    [
        ("203.0.113.5", "203.0.113.5"),
        ("::ffff:203.0.113.5", "203.0.113.5"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("2001:DB8:1:2::1", "2001:db8:1:2::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, None),
    ],
)
def test_address_key(host: str | None, key: str | None) -> None:
    """IPv4 is itself, IPv4-mapped is the IPv4 address, IPv6 is its /64."""
    assert address_key(host) == key
