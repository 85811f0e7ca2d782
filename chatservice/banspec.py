"""What a ban is: the operator's target and duration, and what a ban matches.

Pure values and functions, no I/O: L{parse_target} and L{parse_duration}
read what an operator types, L{format_duration} writes a duration for
people, and L{Ban} says whether an address is banned.  The list of bans in
force is L{chatservice.bans.BanList}; its file is L{chatservice.bansfile}.
"""

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

from .text import shorten

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
        raise ValueError(f"{shorten(text)} is not an IP address or network")
    try:
        network = ipaddress.ip_network(spec)
    except ValueError:
        try:
            loose = ipaddress.ip_network(spec, strict=False)
        except ValueError:
            raise ValueError(
                f"{shorten(text)} is not an IP address or network"
            ) from None
        raise ValueError(f"{spec} has host bits set; did you mean {loose}?") from None
    network = unmap(network)
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
            f"{shorten(text)} is not a duration: use 30s, 10m, 2h, 7d, 1w or forever"
        )
    if seconds == 0:
        return None
    if seconds > MAX_DURATION:
        raise ValueError(
            f"{shorten(text)} is longer than 10 years: use forever for a permanent ban"
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
        return any(address in self.network for address in host_addresses(host))

    def expired(self, now: float) -> bool:
        """Whether the ban is over at the time C{now}."""
        return self.expires is not None and self.expires <= now


def index_key(network: IPNetwork) -> tuple[int, int, int]:
    """The index key of C{network}: version, prefix length, network bits."""
    shift = network.max_prefixlen - network.prefixlen
    return network.version, network.prefixlen, int(network.network_address) >> shift


def by_network(bans: Iterable[Ban]) -> list[Ban]:
    """C{bans} sorted by network, IPv4 before IPv6."""
    return sorted(bans, key=lambda ban: (ban.network.version, ban.network))


def unmap(network: IPNetwork) -> IPNetwork:
    """The IPv4 network for an IPv4-mapped IPv6 one; others unchanged."""
    if network.version == 6 and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def host_addresses(host: str) -> tuple[IPAddress, ...]:
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
