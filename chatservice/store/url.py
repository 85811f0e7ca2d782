"""C{--store} URLs: C{sqlite:PATH}, C{sqlite::memory:}, C{postgresql://...}."""

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

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

    @property
    def in_memory(self) -> bool:
        """Whether nothing is kept: C{sqlite::memory:}."""
        return self.dialect == "sqlite" and self.target == MEMORY


def parse_store_url(text: str) -> StoreURL:
    """Check C{text}; raise C{ValueError} saying what is wrong with it."""
    scheme, colon, rest = text.partition(":")
    if colon and scheme.lower() == "sqlite":
        if not rest:
            raise ValueError(f"{text!r} names no file (sqlite:PATH)")
        if rest.startswith("//"):
            raise ValueError(
                f"{text!r}: write sqlite:PATH (sqlite:chatservice.db, "
                "sqlite:/var/lib/chat/chat.db), without //"
            )
        return StoreURL("sqlite", rest, f"sqlite:{rest}")
    if colon and scheme.lower() in ("postgresql", "postgres"):
        try:
            parts = urlsplit(text)
            parts.port  # noqa: B018 (raises ValueError when not a number)
        except ValueError as error:
            raise ValueError(f"{text!r} is not a PostgreSQL URL: {error}") from None
        if not rest.startswith("//") or not parts.path.strip("/"):
            raise ValueError(
                f"{text!r} names no database "
                "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
            )
        netloc = parts.netloc
        if parts.password is not None:
            netloc = netloc.replace(f":{parts.password}@", ":***@", 1)
        shown = urlunsplit(parts._replace(netloc=netloc, query=""))
        return StoreURL("postgresql", text, shown)
    raise ValueError(
        f"{text!r} is not a store URL (sqlite:PATH, sqlite::memory: or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
    )
