"""C{--store} URLs: C{sqlite:PATH}, C{sqlite::memory:}, C{postgresql://...}."""

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit, urlunsplit

#: What C{--store} is when not given: a file in twistd's working directory.
DEFAULT_STORE = "sqlite:chatservice.db"

#: The path that keeps a SQLite database in memory, as SQLite names it.
MEMORY = ":memory:"


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A checked C{--store} URL.

    @ivar dialect: C{"sqlite"} or C{"postgresql"}.
    @ivar target: the SQLite file's path (or C{:memory:}), or the
        PostgreSQL connection URL, as libpq takes it.
    @ivar shown: the URL as logs and errors show it: without its password.
    """

    dialect: str
    target: str
    shown: str
    #: The password as written and as libpq reads it, for L{hide}.
    secrets: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def hide(self, text: str) -> str:
        """C{text} (a database's error) with the password replaced by C{***}.

        libpq quotes a bad part of the URL back, the password included
        (C{invalid percent-encoded token: "PASSWORD"}).
        """
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    @property
    def in_memory(self) -> bool:
        """Whether nothing is kept: C{sqlite::memory:}."""
        return self.dialect == "sqlite" and self.target == MEMORY


# USER:PASSWORD@ after the scheme, to the last @ (a password may hold one),
# and a password given as a query parameter.
_USERINFO = re.compile(r"^([^:]*://[^:/?#@]*:)(.*)@", re.DOTALL)
_QUERY_PASSWORD = re.compile(r"(?i)(\bpassword=)([^&#]*)")


def hide_password(text: str) -> str:
    """C{text}, a C{--store} URL, valid or not, without its password."""
    text = _USERINFO.sub(r"\1***@", text, count=1)
    return _QUERY_PASSWORD.sub(r"\1***", text)


def _secrets(text: str) -> tuple[str, ...]:
    found = [m.group(2) for m in _USERINFO.finditer(text)]
    found += [m.group(2) for m in _QUERY_PASSWORD.finditer(text)]
    secrets = {s for p in found for s in (p, unquote(p)) if s}
    return tuple(sorted(secrets, key=len, reverse=True))


def parse_store_url(text: str) -> StoreURL:
    """Check C{text}; raise C{ValueError} saying what is wrong with it.

    Neither the error nor the L{StoreURL}'s C{shown} holds the password.
    """
    written = hide_password(text)
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() == "sqlite":
        if not rest:
            raise ValueError(f"{written!r} names no file (sqlite:PATH)")
        if rest.startswith("//"):
            raise ValueError(
                f"{written!r}: write sqlite:PATH (sqlite:chatservice.db, "
                "sqlite:/var/lib/chat/chat.db), without //"
            )
        return StoreURL("sqlite", rest, f"sqlite:{rest}")
    if colon and scheme.lower() in ("postgresql", "postgres"):
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (raises ValueError when not a number)
        except ValueError as error:
            # urllib quotes the part it could not read, which is the
            # password's when that holds a / (then read as the port).
            detail = (
                "a / : @ or % in the password is written %2F %3A %40 %25"
                if written != text
                else str(error)
            )
            raise ValueError(f"{written!r} is not a PostgreSQL URL: {detail}") from None
        if not rest.startswith("//") or not parts.path.strip("/"):
            raise ValueError(
                f"{written!r} names no database "
                "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
            )
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
        shown = urlunsplit(parts._replace(netloc=netloc, query=""))
        return StoreURL("postgresql", text, shown, _secrets(text))
    raise ValueError(
        f"{written!r} is not a store URL (sqlite:PATH, sqlite::memory: or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
    )
