"""The ban list: networks refused at connect, kept in a file written atomically.

Operators ban an address or a network (L{parse_target}) for a while or for
ever (L{parse_duration}); L{BanList.match} is asked on every new connection.
With C{twistd chat --bans PATH} the list survives restarts: it is read once
at startup (L{BanList.load}) and written again after every change, in a
thread, never on the reactor.  What a ban is and matches is in
L{chatservice.banspec}; the file's format and its atomic write in
L{chatservice.bansfile}.  Their public names are importable from here too.
"""

import ipaddress
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .bansfile import FILE_VERSION, BansFileError, read_file, write_file
from .banspec import (
    MAX_DURATION,
    MIN_PREFIX,
    Ban,
    IPAddress,
    IPNetwork,
    by_network,
    format_duration,
    host_addresses,
    index_key,
    parse_duration,
    parse_target,
    unmap,
)
from .logs import gate

__all__ = [
    "FILE_VERSION",
    "MAX_DURATION",
    "MIN_PREFIX",
    "Ban",
    "BanList",
    "BansFileError",
    "IPAddress",
    "IPNetwork",
    "format_duration",
    "parse_duration",
    "parse_target",
]

log = Logger(observer=gate)


def _defer_to_thread(function: Callable[..., object], *args: object) -> Deferred[Any]:
    """Run C{function(*args)} in the reactor's thread pool."""
    from twisted.internet.threads import deferToThread

    return deferToThread(function, *args)


class BanList:
    """The bans in force, saved to a file after every change.

    The list in memory is authoritative: a save that fails is logged, and
    the next change (or L{saved}) tries again with everything.  Saves run
    one at a time in a thread; changes made while one runs are written
    together by a single save after it.

    C{path} is the file, or C{None} to keep bans in memory only; C{clock}
    tells the time; C{run_in_thread(f, *args)} returns a Deferred of
    C{f(*args)} run off the reactor thread (by default in the reactor's
    thread pool).
    """

    def __init__(
        self,
        path: str | None,
        clock: IReactorTime,
        run_in_thread: Callable[..., Deferred[Any]] | None = None,
    ) -> None:
        self._path = path
        self._clock = clock
        self._run_in_thread = run_in_thread or _defer_to_thread
        # Keyed by (IP version, prefix length, network bits), so that an
        # address is matched by one dict lookup per prefix length in use.
        self._bans: dict[tuple[int, int, int], Ban] = {}
        self._lengths: Counter[tuple[int, int]] = Counter()
        # By IP version, the prefix lengths in use, longest first.
        self._prefixes: dict[int, tuple[int, ...]] = {}
        # Changes made, and how many of them are known to be on disk.
        self._changes = 0
        self._on_disk = 0
        self._saving = False
        # saved() callers: the change count each waits for.
        self._waiters: list[tuple[int, Deferred[None]]] = []

    def load(self) -> None:
        """Read the bans file, replacing the bans in memory.

        Synchronous: call it once at startup, before the reactor runs.  A
        missing file is no bans (its directory must exist, to write it
        later); bans that have ended are dropped.

        @raise BansFileError: If the file cannot be read or is not a valid
            bans file: the server must not start without its bans.
        """
        if self._path is None:
            return
        bans = read_file(self._path)
        now = self._clock.seconds()
        self._bans.clear()
        self._lengths.clear()
        for ban in bans:
            if not ban.expired(now):
                self._insert(ban)
        self._update_prefixes()
        # What is in memory is what the file says (less ended bans, which
        # the file may keep until the next change).
        self._on_disk = self._changes

    def add(
        self, network: IPNetwork, duration: float | None, reason: str, by: str
    ) -> Ban:
        """Ban C{network} for C{duration} seconds (C{None}: until lifted).

        A ban of the same network is replaced.  The file is saved in the
        background.

        @param network: As L{parse_target} returns; an IPv4-mapped IPv6
            network is taken as the IPv4 one.
        @param reason: Why, shown to those refused; may be empty.
        @param by: The operator's name.
        @return: The new ban.
        @raise ValueError: If C{duration} is not a positive number.
        """
        if not isinstance(network, ipaddress.IPv4Network | ipaddress.IPv6Network):
            raise TypeError(f"a ban is of an IP network, not {network!r}")
        if duration is not None and not (math.isfinite(duration) and duration > 0):
            raise ValueError(f"a ban cannot last {duration!r} seconds")
        now = self._clock.seconds()
        expires = None if duration is None else now + duration
        ban = Ban(unmap(network), reason, by, now, expires)
        old = self._bans.get(index_key(ban.network))
        if old is not None:
            self._discard(old)
        self._insert(ban)
        self._update_prefixes()
        self._changed()
        return ban

    def remove(self, network: IPNetwork) -> Ban | None:
        """Lift the ban of exactly C{network}; return it, or C{None} if none.

        A ban that had already ended is removed too, but C{None} is
        returned: it was not in force.
        """
        ban = self._bans.get(index_key(unmap(network)))
        if ban is None:
            return None
        self._discard(ban)
        self._update_prefixes()
        self._changed()
        return None if ban.expired(self._clock.seconds()) else ban

    def match(self, host: str) -> Ban | None:
        """The ban in force for the address C{host}, or C{None}.

        The narrowest matching network wins.  Ended bans met on the way are
        removed.  Cheap: a few dict lookups, as it runs for every new
        connection.
        """
        if not self._bans:
            return None
        found = None
        ended = []
        now = self._clock.seconds()
        for address in host_addresses(host):
            value = int(address)
            bits = address.max_prefixlen
            for length in self._prefixes.get(address.version, ()):
                ban = self._bans.get(
                    (address.version, length, value >> (bits - length))
                )
                if ban is None:
                    continue
                if ban.expired(now):
                    ended.append(ban)
                    continue
                found = ban
                break
            if found is not None:
                break
        if ended:
            for ban in ended:
                self._discard(ban)
            self._update_prefixes()
            self._changed()
        return found

    def active(self) -> list[Ban]:
        """The bans in force, sorted by network (IPv4 first).

        Ended bans are removed.
        """
        now = self._clock.seconds()
        ended = [ban for ban in self._bans.values() if ban.expired(now)]
        if ended:
            for ban in ended:
                self._discard(ban)
            self._update_prefixes()
            self._changed()
        return by_network(self._bans.values())

    def saved(self) -> Deferred[None]:
        """A Deferred that fires once every change so far is on disk.

        If the last save failed and nothing has changed since, it is tried
        again now.  The Deferred fails with the save's error if the bans
        could not be written.  With no file it has already fired.
        """
        if self._path is None or self._on_disk >= self._changes:
            return succeed(None)
        waiter: Deferred[None] = Deferred()
        self._waiters.append((self._changes, waiter))
        self._save_if_needed()
        return waiter

    def _insert(self, ban: Ban) -> None:
        """Add C{ban} to the index; L{_update_prefixes} must follow."""
        self._bans[index_key(ban.network)] = ban
        self._lengths[ban.network.version, ban.network.prefixlen] += 1

    def _discard(self, ban: Ban) -> None:
        """Remove C{ban} from the index; L{_update_prefixes} must follow."""
        del self._bans[index_key(ban.network)]
        self._lengths[ban.network.version, ban.network.prefixlen] -= 1

    def _update_prefixes(self) -> None:
        """Recompute which prefix lengths L{match} has to look up."""
        prefixes: dict[int, list[int]] = {4: [], 6: []}
        for (version, length), count in self._lengths.items():
            if count > 0:
                prefixes[version].append(length)
        # New tuples, so that a match() iterating the old ones is undisturbed.
        self._prefixes = {
            version: tuple(sorted(lengths, reverse=True))
            for version, lengths in prefixes.items()
        }

    def _changed(self) -> None:
        """Note a change, and save it if no save is running."""
        self._changes += 1
        self._save_if_needed()

    def _save_if_needed(self) -> None:
        """Start a save of the present bans, unless one runs or none is due."""
        path = self._path
        if path is None or self._saving or self._on_disk >= self._changes:
            return
        now = self._clock.seconds()
        bans = tuple(
            ban for ban in by_network(self._bans.values()) if not ban.expired(now)
        )
        changes = self._changes
        self._saving = True
        saving = maybeDeferred(self._run_in_thread, write_file, path, bans)
        saving.addBoth(self._save_done, changes, len(bans))

    def _save_done(self, result: object, changes: int, count: int) -> None:
        """A save of the first C{changes} changes ended with C{result}."""
        self._saving = False
        failure = result if isinstance(result, Failure) else None
        if failure is None:
            self._on_disk = max(self._on_disk, changes)
            log.debug("{count} ban(s) saved to {path}", count=count, path=self._path)
        elif failure.check(OSError):
            log.error(
                "could not save the bans to {path}: {error}; they stay in force, "
                "and the next change saves them again",
                path=self._path,
                error=failure.getErrorMessage(),
            )
        else:
            log.failure(
                "could not save the bans to {path}; they stay in force, and the "
                "next change saves them again",
                failure,
                path=self._path,
            )
        if failure is None or self._changes > changes:
            # Changes made during the save: one more save writes them all.
            self._save_if_needed()
        # Settle the waiters after the state is final, as their callbacks
        # may change the list again.
        done: list[Deferred[None]] = []
        failed: list[Deferred[None]] = []
        waiting: list[tuple[int, Deferred[None]]] = []
        for target, d in self._waiters:
            if target <= self._on_disk:
                done.append(d)
            elif failure is not None and not self._saving:
                # Nothing more will be written until the next change.
                failed.append(d)
            else:
                waiting.append((target, d))
        self._waiters = waiting
        for d in done:
            if not d.called:
                d.callback(None)
        for d in failed:
            if not d.called:
                d.errback(failure)
