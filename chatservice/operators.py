"""Operator credentials: scrypt password hashes and the operators file.

A password is kept as C{scrypt$N$R$P$SALT$HASH}: the scrypt cost parameters
in decimal, then the salt and the derived key in unpadded URL-safe base64.
The operators file (C{twistd chat --operators PATH}) has one operator a line,
C{NAME HASH}; C{chatservice-oper NAME} (L{chatservice.tools.oper}) makes such a
line.  Plain-text passwords are refused when the file is read.

Checking a password costs tens of milliseconds of CPU on purpose, so
L{Operators.check} is synchronous and touches nothing of Twisted's: the
server runs it in a thread pool, never on the reactor thread, through a
L{chatservice.throttle.SerialChecks}: one check at a time per address and
one at a time in all, so that guesses cost one core and one check's memory
at most, however many connections make them.
"""

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from .text import shorten

SCHEME = "scrypt"

#: The default scrypt cost: 16 MiB of memory and some 50 ms of one core.
DEFAULT_N = 2**14
DEFAULT_R = 8
DEFAULT_P = 1

#: The bounds a stored hash's parameters must keep to.  The upper ones stop
#: a mistyped hash from costing gigabytes of memory or minutes of CPU at
#: every check.
MIN_N = 2**10
MAX_N = 2**20
MAX_R = 32
MAX_P = 16
MAX_MEMORY = 2**30

SALT_BYTES = 16
MIN_SALT_BYTES = 8
HASH_BYTES = 32
MIN_HASH_BYTES = 16
MAX_HASH_BYTES = 64

NAME_MAX = 32

# Printable ASCII other than space: what survives splitting a line on spaces.
_NAME = re.compile(rf"[!-~]{{1,{NAME_MAX}}}")
_DECIMAL = re.compile(r"[0-9]{1,10}")
_BASE64 = re.compile(r"[A-Za-z0-9_-]+")


class OperatorsFileError(Exception):
    """The operators file cannot be used; C{str(error)} is one line saying why.

    The line names the file and, where there is one, the line number, so
    that the server can stop with it and the operator can fix the file.
    """

    def __init__(self, path: str, problem: str, line: int | None = None) -> None:
        where = (
            f"--operators {path}" if line is None else f"--operators {path} line {line}"
        )
        super().__init__(f"chatservice: {where}: {problem}")
        #: The file, as given.
        self.path = path
        #: The number of the offending line, counting from 1, if there is one.
        self.line = line
        #: What is wrong, without the file and line.
        self.problem = problem


def hash_password(
    password: str,
    *,
    salt: bytes | None = None,
    n: int = DEFAULT_N,
    r: int = DEFAULT_R,
    p: int = DEFAULT_P,
) -> str:
    """Hash C{password} with scrypt; return C{scrypt$N$R$P$SALT$HASH}.

    @param salt: By default 16 bytes from C{os.urandom}; give one only to
        make a test repeatable.
    @param n: The CPU and memory cost: a power of two from 2**10 to 2**20.
    @param r: The block size, 1 to 32.
    @param p: The parallelism, 1 to 16.
    @raise ValueError: If the parameters are out of those bounds.
    """
    problem = _check_parameters(n, r, p)
    if problem is not None:
        raise ValueError(problem)
    if salt is None:
        salt = os.urandom(SALT_BYTES)
    elif len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"the salt is shorter than {MIN_SALT_BYTES} bytes")
    key = _scrypt(password, salt, n, r, p, HASH_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64encode(salt)}${_b64encode(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether C{password} is the one C{encoded} was made from.

    C{encoded} is what L{hash_password} returned, and its own parameters are
    used.  A malformed C{encoded} gives C{False}, never an exception.
    """
    try:
        parsed = _parse_hash(encoded)
        key = _scrypt(
            password, parsed.salt, parsed.n, parsed.r, parsed.p, len(parsed.key)
        )
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(key, parsed.key)


def check_operator_name(name: str) -> str:
    """Return C{name} if it can name an operator, else raise C{ValueError}.

    An operator name is 1 to 32 printable ASCII characters other than space,
    not starting with C{#} (a line starting with C{#} is a comment).  Names
    are case-sensitive.
    """
    if not _NAME.fullmatch(name) or name.startswith("#"):
        raise ValueError(
            f"invalid operator name {shorten(name)}: use 1 to {NAME_MAX} "
            "printable ASCII characters, without spaces and not starting with #"
        )
    return name


def load_operators(path: str) -> dict[str, str]:
    """Read the operators file at C{path}: a C{dict} of name to hash.

    Each line is C{NAME HASH} separated by whitespace; blank lines and lines
    starting with C{#} are ignored.  Every hash is checked to be a
    well-formed scrypt hash, so a plain-text password is refused.

    @raise OperatorsFileError: If the file cannot be read, or any line is
        wrong; the message names the first such line.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise OperatorsFileError(path, f"cannot be read: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise OperatorsFileError(path, "the line is not UTF-8 text", line) from e

    operators: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) != 2:
            raise OperatorsFileError(
                path,
                f"expected 2 fields, NAME and HASH, but found {len(fields)}",
                number,
            )
        name, encoded = fields
        try:
            check_operator_name(name)
        except ValueError as e:
            raise OperatorsFileError(path, str(e), number) from None
        if name in operators:
            raise OperatorsFileError(
                path,
                f"the operator {name} is already on line {first_seen[name]}",
                number,
            )
        remedy = f"make a line with: chatservice-oper {name}"
        if not encoded.startswith(SCHEME + "$"):
            raise OperatorsFileError(
                path,
                f"the password of {name} is not a scrypt hash "
                f"(plain-text passwords are refused); {remedy}",
                number,
            )
        try:
            _parse_hash(encoded)
        except ValueError as e:
            raise OperatorsFileError(
                path,
                f"the password of {name} is a malformed scrypt hash ({e}); {remedy}",
                number,
            ) from None
        operators[name] = encoded
        first_seen[name] = number
    return operators


class Operators:
    """The operators of a server, and the check of their passwords.

    L{check} is synchronous and slow on purpose (scrypt): run it in a
    thread, not on the reactor.  It takes as long for a name that does not
    exist as for one that does, so that timing does not tell which names
    are operators.

    C{Operators(entries)} takes name to hash, as L{load_operators} returns,
    and raises C{ValueError} if a name or a hash is not well-formed;
    C{Operators()} has no operators at all.
    """

    def __init__(self, entries: Mapping[str, str] | None = None) -> None:
        entries = dict(entries or {})
        for name, encoded in entries.items():
            check_operator_name(name)
            try:
                _parse_hash(encoded)
            except ValueError as e:
                raise ValueError(f"the password of {name}: {e}") from None
        self._entries = entries
        # Made now rather than at the first unknown name, so that even that
        # first check takes no longer than the others.
        self._dummy = _dummy_hash()

    @classmethod
    def from_file(cls, path: str) -> "Operators":
        """The operators listed in the file at C{path}.

        @raise OperatorsFileError: As L{load_operators}.
        """
        return cls(load_operators(path))

    def check(self, name: str, password: str) -> bool:
        """Whether C{name} is an operator and C{password} is theirs.

        Synchronous and CPU-bound: call it from a thread pool.
        """
        encoded = self._entries.get(name)
        if encoded is None:
            # Spend the same time as for a real name, then refuse.
            verify_password(password, self._dummy)
            return False
        return verify_password(password, encoded)

    def names(self) -> list[str]:
        """The operator names, sorted."""
        return sorted(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())


@dataclass(frozen=True, slots=True)
class _Hash:
    """The parts of a parsed C{scrypt$N$R$P$SALT$HASH}."""

    n: int
    r: int
    p: int
    salt: bytes
    key: bytes


def _parse_hash(encoded: str) -> _Hash:
    """Split and check C{encoded}; raise C{ValueError} saying what is wrong."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise ValueError("expected scrypt$N$R$P$SALT$HASH")
    _, n_text, r_text, p_text, salt_text, key_text = parts
    if not all(_DECIMAL.fullmatch(t) for t in (n_text, r_text, p_text)):
        raise ValueError("N, R and P must be decimal numbers")
    n, r, p = int(n_text), int(r_text), int(p_text)
    problem = _check_parameters(n, r, p)
    if problem is not None:
        raise ValueError(problem)
    salt = _b64decode(salt_text, "salt")
    if len(salt) < MIN_SALT_BYTES:
        raise ValueError(f"the salt is shorter than {MIN_SALT_BYTES} bytes")
    key = _b64decode(key_text, "hash")
    if not MIN_HASH_BYTES <= len(key) <= MAX_HASH_BYTES:
        raise ValueError(
            f"the hash is {len(key)} bytes, not {MIN_HASH_BYTES} to {MAX_HASH_BYTES}"
        )
    return _Hash(n, r, p, salt, key)


def _check_parameters(n: int, r: int, p: int) -> str | None:
    """What is wrong with the scrypt parameters, or C{None}."""
    if not (MIN_N <= n <= MAX_N and n & (n - 1) == 0):
        return f"N must be a power of two from {MIN_N} to {MAX_N}"
    if not 1 <= r <= MAX_R:
        return f"R must be from 1 to {MAX_R}"
    if not 1 <= p <= MAX_P:
        return f"P must be from 1 to {MAX_P}"
    if 128 * r * n > MAX_MEMORY:
        return f"N and R need more than {MAX_MEMORY // 2**20} MiB of memory"
    return None


def _memory(n: int, r: int, p: int) -> int:
    """The bytes OpenSSL's scrypt needs, as it counts them (C{maxmem})."""
    return 128 * r * (n + p + 2)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    """The scrypt key of C{password}, with just enough C{maxmem}."""
    return hashlib.scrypt(
        password.encode("utf-8", "surrogatepass"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        # OpenSSL refuses anything above maxmem, 32 MiB by default; allow
        # what these parameters need and a little more.
        maxmem=_memory(n, r, p) + 2**20,
        dklen=length,
    )


def _b64encode(data: bytes) -> str:
    """Unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str, what: str) -> bytes:
    """Decode unpadded URL-safe base64 strictly, in its one canonical form."""
    problem = ValueError(f"the {what} is not unpadded URL-safe base64")
    if not _BASE64.fullmatch(text) or len(text) % 4 == 1:
        raise problem
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise problem from None
    # Refuse other spellings of the same bytes (non-zero unused bits).
    if _b64encode(data) != text:
        raise problem
    return data


@functools.cache
def _dummy_hash() -> str:
    """A hash of a random password, made once, for names that do not exist."""
    return hash_password(base64.b64encode(os.urandom(16)).decode("ascii"))
