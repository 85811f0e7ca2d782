"""Rate limits: token buckets, and a growing delay after failures.

L{TokenBucket} limits how fast something may happen (lines of one
connection, new connections from one address).  L{FailureDelay} slows down
guessing (C{/oper} passwords, resume tokens): a few mistakes cost nothing;
after that each attempt from the same address waits longer, up to a cap,
until the address has been quiet for a while.
"""

from twisted.internet.interfaces import IReactorTime


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

    def take(self, now: float) -> float:
        """Take a token: 0 if there was one, else the seconds until one is back.

        Nothing is taken when none is left.
        """
        tokens = self._tokens + (now - self._counted) * self._rate
        if tokens > self._burst:
            tokens = self._burst
        self._counted = now
        # The tolerance absorbs rounding: a timer set to fire when a token
        # is back must find it there, or it would be set again and again.
        if tokens > 0.999_999:
            self._tokens = max(tokens - 1, 0.0)
            return 0.0
        self._tokens = tokens
        return max((1 - tokens) / self._rate, 0.001)

    def full(self, now: float) -> bool:
        """Whether the bucket is full again: as good as a new one."""
        return self._tokens + (now - self._counted) * self._rate >= self._burst


class FailureDelay:
    """Per key (a peer address), how long the next attempt must wait.

    @param clock: the time source.
    @param free: failures allowed before attempts are delayed.
    @param cap: the longest delay, in seconds.
    @param forget: seconds without a failure after which a key starts over.
    """

    def __init__(
        self,
        clock: IReactorTime,
        free: int = 3,
        cap: float = 10.0,
        forget: float = 900.0,
    ) -> None:
        self._clock = clock
        self._free = free
        self._cap = cap
        self._forget = forget
        # key -> (failures, time of the last one)
        self._failures: dict[object, tuple[int, float]] = {}
        self._prune_at = 1024

    def delay(self, key: object) -> float:
        """Seconds the next attempt from C{key} must wait before it is tried."""
        failures = self._count(key)
        if failures < self._free:
            return 0.0
        return min(self._cap, 2.0 ** (failures - self._free))

    def failed(self, key: object) -> None:
        """Record a failed attempt from C{key}."""
        now = self._clock.seconds()
        self._failures[key] = (self._count(key) + 1, now)
        if len(self._failures) > self._prune_at:
            self._failures = {
                key: entry
                for key, entry in self._failures.items()
                if now - entry[1] < self._forget
            }
            # Pruning is linear: let the table double before the next time.
            self._prune_at = max(1024, 2 * len(self._failures))

    def succeeded(self, key: object) -> None:
        """Record a successful attempt: C{key} starts over."""
        self._failures.pop(key, None)

    def _count(self, key: object) -> int:
        failures, last = self._failures.get(key, (0, 0.0))
        if failures and self._clock.seconds() - last >= self._forget:
            del self._failures[key]
            return 0
        return failures
