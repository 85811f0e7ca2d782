"""The ban list: networks refused at connect, kept in a file written atomically.

Operators ban an address or a network (L{parse_target}) for a while or for
ever (L{parse_duration}); L{BanList.match} is asked on every new connection.
With C{twistd chat --bans PATH} the list survives restarts: it is read once
at startup (L{BanList.load}) and written again after every change, in a
thread, never on the reactor.  The file is JSON::

    {
      "version": 1,
      "bans": [
        {
          "network": "203.0.113.0/24",
          "reason": "spam",
          "by": "alice",
          "created": 1763895600.0,
          "expires": null
        }
      ]
    }

C{created} and C{expires} are seconds since the epoch, and a null
C{expires} is a ban until it is lifted.  A write goes to a temporary
C{.bans-*} file in the same directory, is flushed to disk, and then
replaces the file in one step, so a crash leaves either the old file or
the new one, never a mixture; a stray temporary file is ignored.
"""

import contextlib
import ipaddress
import json
import math
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from .logs import gate

IPNetwork: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The version of the bans file this code reads and writes.
FILE_VERSION = 1

#: The shortest prefix a ban may have, by IP version: banning a whole /4 or
#: a /3 of IPv6 is surely a typing mistake.
MIN_PREFIX = {4: 8, 6: 16}

#: The longest ban with an end; longer ones are meant to be permanent.
MAX_DURATION = 10 * 365 * 86400

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_PERMANENT = frozenset({"forever", "permanent"})
_NUMBER = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?[smhdw]\s*)+")
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdw])")

_TEMPORARY_PREFIX = ".bans-"

log = Logger(observer=gate)


def parse_target(text: str) -> IPNetwork:
    """The network an operator means by C{text}: an address or a CIDR.

    A single address is a /32 (IPv4) or /128 (IPv6) network, and an
    IPv4-mapped IPv6 address or network (C{::ffff:1.2.3.4}) is taken as the
    IPv4 one.

    @raise ValueError: With a short message for the operator, if C{text} is
        not an address or network, has host bits set (C{10.0.0.1/8}), or is
        broader than a /8 (IPv4) or a /16 (IPv6).
    """
    spec = text.strip()
    if "%" in spec:
        # A scoped (link-local) address: the scope means nothing to a ban.
        raise ValueError(f"{_shorten(text)} is not an IP address or network")
    try:
        network = ipaddress.ip_network(spec)
    except ValueError:
        try:
            loose = ipaddress.ip_network(spec, strict=False)
        except ValueError:
            raise ValueError(
                f"{_shorten(text)} is not an IP address or network"
            ) from None
        raise ValueError(f"{spec} has host bits set; did you mean {loose}?") from None
    network = _unmap(network)
    shortest = MIN_PREFIX[network.version]
    if network.prefixlen < shortest:
        raise ValueError(
            f"{network} is too broad: an IPv{network.version} ban must be "
            f"/{shortest} or narrower"
        )
    return network


def parse_duration(text: str) -> float | None:
    """The seconds a ban of C{text} lasts, or C{None} for a permanent one.

    C{30s}, C{10m}, C{2h}, C{7d}, C{1w}, or several of them (C{1h30m},
    C{2h 05m}); a bare number is seconds.  C{0} (of any unit), C{forever}
    and C{permanent} mean permanent.  Case is ignored.

    @raise ValueError: With a short message, if C{text} is not a duration or
        is longer than ten years.
    """
    spec = text.strip().lower()
    if spec in _PERMANENT:
        return None
    if _NUMBER.fullmatch(spec):
        seconds = float(spec)
    elif _DURATION.fullmatch(spec):
        seconds = sum(
            float(number) * _UNITS[unit]
            for number, unit in _DURATION_PART.findall(spec)
        )
    else:
        raise ValueError(
            f"{_shorten(text)} is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"
        )
    if seconds == 0:
        return None
    if seconds > MAX_DURATION:
        raise ValueError(
            f"{_shorten(text)} is longer than 10 years: use forever for a permanent ban"
        )
    return seconds


def format_duration(seconds: float) -> str:
    """C{seconds} for people: its two largest units (C{2h 05m}, C{3d 4h}).

    A partial second counts as a whole one, so time that is left never
    shows as C{0s}; a zero second unit is left out (C{2h}, C{7d}).
    """
    if not math.isfinite(seconds):
        return "forever" if seconds > 0 else "0s"
    # Less a hair, so that float noise (7200.0000001) does not add a second.
    total = max(0, math.ceil(seconds - 1e-6))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"


@dataclass(frozen=True, slots=True)
class Ban:
    """One ban: the addresses of C{network} may not connect.

    C{created} and C{expires} are seconds since the epoch, on the clock of
    the L{BanList}; C{expires} is C{None} for a ban until it is lifted.
    """

    #: The banned addresses.
    network: IPNetwork
    #: Why, as the operator said it (may be empty); shown to the banned.
    reason: str
    #: The name of the operator who made the ban.
    by: str
    #: When the ban was made.
    created: float
    #: When the ban ends, or C{None} for never.
    expires: float | None

    def matches(self, host: str) -> bool:
        """Whether the address C{host} is in the banned network.

        An IPv4-mapped IPv6 address (C{::ffff:1.2.3.4}, as a dual-stack
        listener reports IPv4 peers) is also taken as its IPv4 address.
        A C{host} that is not an IP address matches nothing.
        """
        return any(address in self.network for address in _host_addresses(host))

    def expired(self, now: float) -> bool:
        """Whether the ban is over at the time C{now}."""
        return self.expires is not None and self.expires <= now


class BansFileError(Exception):
    """The bans file cannot be used; C{str(error)} is one line saying why.

    The server refuses to start rather than start without the bans.
    C{BansFileError(path, problem)} makes the line from what follows
    C{--bans PATH} in it; L{invalid} and L{unreadable} make the usual ones.
    """

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"chatservice: --bans {path}{problem}")
        #: The file, as given.
        self.path = path

    @classmethod
    def invalid(cls, path: str, reason: str) -> "BansFileError":
        """The file is not a bans file this code can read, for C{reason}."""
        return cls(path, f" is not a valid bans file ({reason}); fix or remove it")

    @classmethod
    def unreadable(cls, path: str, error: OSError) -> "BansFileError":
        """The file cannot be read: C{error} says why."""
        return cls(path, f": cannot be read: {error.strerror or error}")


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
        path = self._path
        if path is None:
            return
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError as e:
            directory = os.path.dirname(os.path.abspath(path))
            if not os.path.isdir(directory):
                raise BansFileError(
                    path, f": cannot be created: there is no directory {directory}"
                ) from e
            bans: list[Ban] = []
        except OSError as e:
            raise BansFileError.unreadable(path, e) from e
        else:
            bans = _parse_file(path, data)
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
        ban = Ban(_unmap(network), reason, by, now, expires)
        old = self._bans.get(_key(ban.network))
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
        ban = self._bans.get(_key(_unmap(network)))
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
        for address in _host_addresses(host):
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
        return _sorted(self._bans.values())

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
        self._bans[_key(ban.network)] = ban
        self._lengths[ban.network.version, ban.network.prefixlen] += 1

    def _discard(self, ban: Ban) -> None:
        """Remove C{ban} from the index; L{_update_prefixes} must follow."""
        del self._bans[_key(ban.network)]
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
            ban for ban in _sorted(self._bans.values()) if not ban.expired(now)
        )
        changes = self._changes
        self._saving = True
        saving = maybeDeferred(self._run_in_thread, _write_file, path, bans)
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


def _write_file(path: str, bans: Iterable[Ban]) -> None:
    """Write C{bans} to C{path} atomically; blocking, so run it in a thread.

    The document goes to a temporary file in the same directory, which is
    flushed to disk and then renamed over C{path}; the directory is synced
    so that the rename lasts too.  On failure the temporary file is removed
    and C{path} is left as it was.

    @raise OSError: If any step fails.
    """
    data = _serialise(bans)
    directory = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=_TEMPORARY_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory: str) -> None:
    """Flush the entries of C{directory} (a rename in it) to disk."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _serialise(bans: Iterable[Ban]) -> bytes:
    """The bans file holding C{bans}: indented JSON, ASCII only."""
    document = {
        "version": FILE_VERSION,
        "bans": [
            {
                "network": str(ban.network),
                "reason": ban.reason,
                "by": ban.by,
                "created": ban.created,
                "expires": ban.expires,
            }
            for ban in bans
        ],
    }
    # ASCII, so that no reason can make the file unwritable (or unreadable).
    return (json.dumps(document, indent=2, ensure_ascii=True) + "\n").encode("ascii")


def _parse_file(path: str, data: bytes) -> list[Ban]:
    """The bans in the bans file C{data}; raise L{BansFileError} if invalid."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise BansFileError.invalid(path, f"line {line}: not UTF-8 text") from None
    if not text.strip():
        # An empty file, made ready for the server to fill.
        return []
    try:
        document = json.loads(text)
    except json.JSONDecodeError as e:
        raise BansFileError.invalid(path, f"line {e.lineno}: {e.msg}") from None
    if not isinstance(document, dict) or "version" not in document:
        raise BansFileError.invalid(
            path, 'expected a JSON object {"version": 1, "bans": [...]}'
        )
    version = document["version"]
    if version != FILE_VERSION or isinstance(version, bool):
        raise BansFileError.invalid(
            path,
            f"version {json.dumps(version)} is not supported; this chatservice "
            f"reads version {FILE_VERSION}",
        )
    entries = document.get("bans")
    if not isinstance(entries, list):
        raise BansFileError.invalid(path, '"bans" must be a list')
    bans: list[Ban] = []
    seen: dict[IPNetwork, int] = {}
    for number, entry in enumerate(entries, start=1):
        try:
            ban = _parse_ban(entry)
        except ValueError as e:
            raise BansFileError.invalid(path, f"ban {number}: {e}") from None
        if ban.network in seen:
            raise BansFileError.invalid(
                path,
                f"ban {number}: {ban.network} is already banned by ban "
                f"{seen[ban.network]}",
            )
        seen[ban.network] = number
        bans.append(ban)
    return bans


def _parse_ban(entry: object) -> Ban:
    """One entry of the C{"bans"} list; raise C{ValueError} saying what is wrong."""
    if not isinstance(entry, dict):
        raise ValueError("expected an object")
    for name in ("network", "reason", "by", "created", "expires"):
        if name not in entry:
            raise ValueError(f'"{name}" is missing')
    for name in ("network", "reason", "by"):
        if not isinstance(entry[name], str):
            raise ValueError(f'"{name}" must be a string')
    created, expires = entry["created"], entry["expires"]
    if not _is_time(created):
        raise ValueError('"created" must be a number')
    if expires is not None and not _is_time(expires):
        raise ValueError('"expires" must be a number or null')
    network = parse_target(entry["network"])
    return Ban(network, entry["reason"], entry["by"], float(created), _float(expires))


def _is_time(value: object) -> bool:
    """Whether C{value} is a finite JSON number (not a boolean)."""
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


def _float(value: float | None) -> float | None:
    """C{value} as a float, keeping C{None}."""
    return None if value is None else float(value)


def _key(network: IPNetwork) -> tuple[int, int, int]:
    """The index key of C{network}: version, prefix length, network bits."""
    shift = network.max_prefixlen - network.prefixlen
    return network.version, network.prefixlen, int(network.network_address) >> shift


def _sorted(bans: Iterable[Ban]) -> list[Ban]:
    """C{bans} sorted by network, IPv4 before IPv6."""
    return sorted(bans, key=lambda ban: (ban.network.version, ban.network))


def _unmap(network: IPNetwork) -> IPNetwork:
    """The IPv4 network for an IPv4-mapped IPv6 one; others unchanged."""
    if network.version == 6 and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _host_addresses(host: str) -> tuple[IPAddress, ...]:
    """The addresses under which C{host} is matched; none if not an address.

    An IPv4-mapped IPv6 address is its IPv4 address first, then itself.
    """
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return ()
    if address.version == 6:
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped, address
    return (address,)


def _shorten(text: str, limit: int = 40) -> str:
    """Quote C{text} for an error line, cut to C{limit} characters."""
    if len(text) > limit:
        text = text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return repr(text)
