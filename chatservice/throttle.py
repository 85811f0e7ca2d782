"""Rate limits: token buckets, a growing delay after failures, address keys.

L{TokenBucket} limits how fast something may happen (lines of one
connection, new connections from one address).  L{FailureDelay} slows down
guessing (C{/oper} passwords, resume tokens): a few mistakes cost nothing;
after that each attempt from the same address waits longer, up to a cap,
until the address has been quiet for a while.  L{SerialChecks} runs slow
checks (C{/oper}'s scrypt) one at a time per address, each after that
address's delay, and few at once in all.

Every per-address table is keyed by L{address_key}: an IPv6 client usually
holds a whole /64, so the /64 is one address; an IPv4-mapped IPv6 address
(C{::ffff:192.0.2.1}) is the IPv4 address.
"""

import functools
from collections import OrderedDict, deque
from collections.abc import Callable
from ipaddress import IPv6Address, IPv6Network, ip_address
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

#: The most addresses a L{FailureDelay} remembers (about 200 bytes each).
FAILURES_MAX = 10_000


def address_key(host: str | None) -> str | None:
    """The key of C{host} in per-address tables and limits.

    An IPv4 address is itself; an IPv6 address is its /64, written
    C{2001:db8:1:2::/64}; an IPv4-mapped IPv6 address is the IPv4 address.
    C{None} (a UNIX socket) and anything that is not an IP address are
    returned as they are.
    """
    if host is None or ":" not in host:
        return host  # IPv4 (or no address): the common case costs nothing
    return _ipv6_key(host)


@functools.lru_cache(maxsize=4096)
def _ipv6_key(host: str) -> str:
    try:
        address = ip_address(host)
    except ValueError:
        return host
    if not isinstance(address, IPv6Address):
        return host
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    # The scope of a link-local address (fe80::1%eth0) is dropped: the /64
    # is what one host can choose addresses from.
    return str(IPv6Network((int(address) >> 64 << 64, 64)))


class TokenBucket:
    """At most C{burst} tokens, refilled at C{rate} per second.

    Times are given by the caller (its clock's seconds), so one clock call
    can serve several buckets.
    """

    __slots__ = ("_rate", "_burst", "_tokens", "_counted")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._tokens = self._burst
        self._counted = now

    def take(self, now: float, count: float = 1.0) -> float:
        """Take C{count} tokens: 0 if there were, else the seconds until then.

        Nothing is taken when too few are left.  More than the burst counts
        as the burst (it could never be there).
        """
        burst = self._burst
        if count > burst:
            count = burst
        tokens = self._tokens + (now - self._counted) * self._rate
        if tokens > burst:
            tokens = burst
        self._counted = now
        # The tolerance absorbs rounding: a timer set to fire when a token
        # is back must find it there, or it would be set again and again.
        if tokens > count - 0.000_001:
            # Not max(): a call less on every line read and connection.
            tokens -= count
            self._tokens = tokens if tokens > 0.0 else 0.0
            return 0.0
        self._tokens = tokens
        return max((count - tokens) / self._rate, 0.001)

    def full(self, now: float) -> bool:
        """Whether the bucket is full again: as good as a new one."""
        return self._tokens + (now - self._counted) * self._rate >= self._burst


class FailureDelay:
    """Per key (a peer address), how long the next attempt must wait.

    The table is bounded: past C{limit} keys, the one whose last failure is
    the oldest is forgotten.  An attacker who owns that many addresses gets
    the free attempts of each anyway, so forgetting the quietest costs
    nothing an active guesser could use: its own key is the newest.

    @param clock: the time source.
    @param free: failures allowed before attempts are delayed.
    @param cap: the longest delay, in seconds.
    @param forget: seconds without a failure after which a key starts over.
    @param limit: the most keys remembered.
    """

    def __init__(
        self,
        clock: IReactorTime,
        free: int = 3,
        cap: float = 10.0,
        forget: float = 900.0,
        limit: int = FAILURES_MAX,
    ) -> None:
        self._clock = clock
        self._free = free
        self._cap = cap
        self._forget = forget
        self._limit = limit
        # key -> (failures, time of the last one), oldest failure first
        self._failures: OrderedDict[object, tuple[int, float]] = OrderedDict()

    def __len__(self) -> int:
        """How many keys are remembered."""
        return len(self._failures)

    def delay(self, key: object) -> float:
        """Seconds the next attempt from C{key} must wait before it is tried."""
        failures = self._count(key)
        if failures < self._free:
            return 0.0
        return min(self._cap, 2.0 ** (failures - self._free))

    def failed(self, key: object) -> None:
        """Record a failed attempt from C{key}."""
        failures = self._failures
        failures[key] = (self._count(key) + 1, self._clock.seconds())
        failures.move_to_end(key)
        # The oldest entries are at the front: drop those past their time,
        # and any beyond the limit.
        now = self._clock.seconds()
        while failures:
            oldest, (_, last) = next(iter(failures.items()))
            if len(failures) <= self._limit and now - last < self._forget:
                break
            del failures[oldest]

    def succeeded(self, key: object) -> None:
        """Record a successful attempt: C{key} starts over."""
        self._failures.pop(key, None)

    def _count(self, key: object) -> int:
        failures, last = self._failures.get(key, (0, 0.0))
        if failures and self._clock.seconds() - last >= self._forget:
            del self._failures[key]
            return 0
        return failures


class TooManyAttempts(Exception):
    """An address already has as many checks under way as it may."""


class _Attempt:
    """One check waiting or running in L{SerialChecks}."""

    __slots__ = ("key", "function", "args", "result", "timer", "state")

    def __init__(
        self,
        key: object,
        function: Callable[..., object],
        args: tuple[object, ...],
        result: "Deferred[Any]",
    ) -> None:
        self.key = key
        self.function = function
        self.args = args
        self.result = result
        self.timer: IDelayedCall | None = None
        # queued (behind its key's check) -> delayed (its key's delay) ->
        # ready (waiting for a thread) -> running -> done
        self.state = "queued"


class SerialChecks:
    """Slow checks of guesses, one at a time per key, few at once in all.

    C{check(key, function, *args)} runs C{function(*args)} in a thread (with
    C{run_in_thread}) once every earlier check of C{key} has finished and
    C{key}'s L{FailureDelay} has passed; a true result counts as a success,
    anything else as a failure.  So one address makes at most one guess per
    delay, however many connections it opens.  At most C{at_once} checks
    run at once in all (each costs memory: 16 MiB for scrypt), and a key
    may have at most C{per_key} checks waiting or running: one more raises
    L{TooManyAttempts}.

    Cancelling the Deferred of a check that has not started withdraws it; a
    check already running in its thread finishes, and counts, but its
    result is dropped.
    """

    def __init__(
        self,
        clock: IReactorTime,
        failures: FailureDelay,
        run_in_thread: Callable[..., "Deferred[Any]"],
        at_once: int = 1,
        per_key: int = 2,
    ) -> None:
        self._clock = clock
        self.failures = failures
        self._run_in_thread = run_in_thread
        self._at_once = at_once
        self._per_key = per_key
        self._queues: dict[object, deque[_Attempt]] = {}
        self._ready: deque[_Attempt] = deque()
        self._running = 0

    def check(
        self, key: object, function: Callable[..., object], *args: object
    ) -> "Deferred[Any]":
        """Run C{function(*args)} for C{key} when its turn comes.

        @raise TooManyAttempts: if C{key} already has C{per_key} checks.
        """
        queue = self._queues.setdefault(key, deque())
        if len(queue) >= self._per_key:
            raise TooManyAttempts()
        result: Deferred[Any] = Deferred(lambda _: self._withdraw(attempt))
        attempt = _Attempt(key, function, args, result)
        queue.append(attempt)
        if len(queue) == 1:
            self._start(attempt)
        return attempt.result

    def _start(self, attempt: _Attempt) -> None:
        """C{attempt} is first for its key: wait for the key's delay."""
        delay = self.failures.delay(attempt.key)
        if delay:
            attempt.state = "delayed"
            attempt.timer = self._clock.callLater(delay, self._delayed, attempt)
        else:
            self._delayed(attempt)

    def _delayed(self, attempt: _Attempt) -> None:
        attempt.timer = None
        attempt.state = "ready"
        self._ready.append(attempt)
        self._run_ready()

    def _run_ready(self) -> None:
        while self._ready and self._running < self._at_once:
            attempt = self._ready.popleft()
            attempt.state = "running"
            self._running += 1
            d = self._run_in_thread(attempt.function, *attempt.args)
            d.addBoth(self._finished, attempt)

    def _finished(self, result: object, attempt: _Attempt) -> None:
        self._running -= 1
        if result is True:
            self.failures.succeeded(attempt.key)
        else:
            self.failures.failed(attempt.key)
        self._done(attempt)
        if not attempt.result.called:
            if isinstance(result, Failure):
                attempt.result.errback(result)
            else:
                attempt.result.callback(result)
        self._run_ready()

    def _withdraw(self, attempt: _Attempt) -> None:
        """The caller gave up on C{attempt} (it cancelled the Deferred)."""
        if attempt.state == "running":
            return  # it finishes in its thread, and counts; see _finished
        if attempt.timer is not None:
            attempt.timer.cancel()
            attempt.timer = None
        if attempt.state == "ready":
            self._ready.remove(attempt)
        self._done(attempt)

    def _done(self, attempt: _Attempt) -> None:
        """Take C{attempt} out of its key's queue; start the next one."""
        if attempt.state == "done":
            return
        first = attempt.state != "queued"
        attempt.state = "done"
        queue = self._queues[attempt.key]
        queue.remove(attempt)
        if not queue:
            del self._queues[attempt.key]
        elif first:
            self._start(queue[0])


class Allowances:
    """A budget per key (a recipient), spent C{cost} units at a time.

    Each key has a token bucket of C{burst} units, refilled at C{rate} a
    second, made on first use; once the table has grown past C{prune_at} keys, the
    buckets that are full again (as good as new) are forgotten, so it holds
    only the keys spent from in the last C{burst / rate} seconds.
    """

    def __init__(self, rate: float, burst: float, prune_at: int = 4096) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._min_prune = self._prune_at = prune_at

    def spend(self, key: str, cost: float, now: float) -> float:
        """Spend C{cost} from C{key}'s budget, if it has that much.

        Returns 0 when it had, else the seconds until it has (and nothing is
        spent).
        A cost above the whole budget costs the whole budget.
        """
        cost = min(cost, self._burst)
        tokens, when = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - when) * self._rate)
        if tokens + 1e-6 < cost:
            self._buckets[key] = (tokens, now)
            return max((cost - tokens) / self._rate, 0.001)
        self._buckets[key] = (tokens - cost, now)
        if len(self._buckets) > self._prune_at:
            self._prune(now)
        return 0.0

    def _prune(self, now: float) -> None:
        burst, rate = self._burst, self._rate
        self._buckets = {
            key: (tokens, when)
            for key, (tokens, when) in self._buckets.items()
            if tokens + (now - when) * rate < burst
        }
        # Pruning is linear: let the table double before the next time.
        self._prune_at = max(self._min_prune, 2 * len(self._buckets))

    def __len__(self) -> int:
        """How many keys are remembered now."""
        return len(self._buckets)
