"""The bans file: JSON, written atomically, read strictly.

The file, given with C{twistd chat --bans PATH}, is::

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
the new one, never a mixture; a stray temporary file is ignored.  Writing
blocks: L{chatservice.bans.BanList} runs L{write_file} in a thread.
"""

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Iterable

from .banspec import Ban, IPNetwork, parse_target

#: The version of the bans file this code reads and writes.
FILE_VERSION = 1

_TEMPORARY_PREFIX = ".bans-"


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


def write_file(path: str, bans: Iterable[Ban]) -> None:
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


def read_file(path: str) -> list[Ban]:
    """The bans in the file C{path}; none if it does not exist yet.

    Blocking: for startup, before the reactor runs.  The directory of a
    missing file must exist, to write the file later.

    @raise BansFileError: If the file cannot be read or is not a valid
        bans file.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        directory = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(directory):
            raise BansFileError(
                path, f": cannot be created: there is no directory {directory}"
            ) from e
        return []
    except OSError as e:
        raise BansFileError.unreadable(path, e) from e
    return parse_file(path, data)


def parse_file(path: str, data: bytes) -> list[Ban]:
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
