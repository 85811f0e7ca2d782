"""The store's connection pool, its cursors, and opening it at start.

See the package's docstring (L{chatservice.store}) for the API.
"""

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from twisted.enterprise import adbapi
from twisted.internet.defer import Deferred, fail, maybeDeferred
from twisted.logger import Logger

from ..logs import gate
from .cursor import Cursor
from .migrations import MIGRATIONS, Migration, StoreError, migrate
from .url import StoreURL, parse_store_url

log = Logger(observer=gate)

#: Connections the PostgreSQL pool keeps (one SQLite connection is all
#: SQLite can use to write, so its pool has one).
POSTGRESQL_CONNECTIONS = 4


def _in_transaction(
    transaction: Any,
    dialect: str,
    function: Callable[..., object],
    args: tuple[object, ...],
) -> object:
    """Run C{function(cursor, *args)} in the transaction C{adbapi} opened.

    SQLite's connections are in autocommit mode (C{isolation_level=None},
    so that DDL is transactional too): the transaction is begun here.
    """
    cursor = Cursor(transaction, dialect)
    if dialect == "sqlite":
        cursor.execute("BEGIN")
    return function(cursor, *args)


def _sqlite_setup(connection: sqlite3.Connection) -> None:
    """Set up each SQLite connection the same way.

    WAL: readers (a backup, C{sqlite3 chatservice.db}) and the server's
    writer do not block each other; a commit survives the process being
    killed (C{synchronous=NORMAL} may lose the last commits only on a
    power loss).  C{busy_timeout}: a backup holding a lock delays a write
    instead of failing it.
    """
    connection.execute("PRAGMA busy_timeout = 5000")
    connection.execute("PRAGMA foreign_keys = ON")
    if connection.execute("PRAGMA journal_mode").fetchone()[0] != "memory":
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")


def _sqlite_damage(connection: sqlite3.Connection) -> str | None:
    """What SQLite's C{quick_check} first finds wrong in the file, or None.

    SQLite reads a page only when it needs it: a file damaged inside (a
    disk error, a copy made while written) opened without a word, and then
    every batch of history written to it failed, a traceback each second.
    The check reads the whole file: 0.1 s for 42 MB (200,000 lines).
    """
    result = connection.execute("PRAGMA quick_check(1)").fetchone()[0]
    if result == "ok":
        return None
    lines = [line for line in str(result).splitlines() if not line.startswith("***")]
    return lines[0] if lines else str(result)


class _SQLitePool(adbapi.ConnectionPool):
    """adbapi's pool over the one SQLite connection the store opened at start.

    SQLite writes through one connection at a time anyway; this one is made
    (and migrated) before anyone is served, so the database's files are
    open from the start, and C{sqlite::memory:} is the same database for the
    migrations and the pool.  C{connect} is adbapi's documented way for its
    threads to get a connection.
    """

    def __init__(self, connection: sqlite3.Connection) -> None:
        super().__init__("sqlite3", cp_min=1, cp_max=1)
        self._connection = connection

    def connect(self) -> sqlite3.Connection:
        """The store's connection, for the pool's thread."""
        self.connections[self.threadID()] = self._connection
        return self._connection


class Store:
    """One database, opened at start; see L{chatservice.store}.

    @param url: the C{--store} URL (checked by L{parse_store_url}).
    @param migrations: the schema's migrations (L{MIGRATIONS}); tests give
        others.
    """

    def __init__(
        self,
        url: str | StoreURL,
        migrations: Sequence[Migration] = MIGRATIONS,
    ) -> None:
        self.url = parse_store_url(url) if isinstance(url, str) else url
        #: C{"sqlite"} or C{"postgresql"}.
        self.dialect = self.url.dialect
        self._migrations = migrations
        self._pool: adbapi.ConnectionPool | None = None
        self._run: Callable[..., Deferred[Any]] | None = None
        # The SQLite connection (the pool's, or memory_store's).
        self._keeper: Any = None

    def __repr__(self) -> str:
        return f"<Store {self.url.shown}>"

    @property
    def opened(self) -> bool:
        """Whether L{open} has succeeded (and L{close} not been called)."""
        return self._run is not None

    def open(self) -> None:
        """Connect, bring the schema up to date, start the pool.

        Blocks: called once at start, before anyone is served.

        @raise StoreError: the database cannot be reached or opened, or its
            schema is newer than this code knows.
        """
        if self._run is not None:
            return
        what = f"--store {self.url.shown}"
        try:
            connection = self._connect_now()
        except Exception as error:
            raise StoreError(
                f"cannot open {what}: {self.url.hide(_first_line(error))}"
            ) from None
        if self.dialect == "sqlite" and not self.url.in_memory:
            try:
                damage = _sqlite_damage(connection)
            except Exception as error:
                damage = _first_line(error)
            if damage is not None:
                connection.close()
                raise StoreError(
                    f"{what} is damaged ({damage}): stop here, keep a copy "
                    'of the file, and see "sqlite3 FILE .recover"'
                )
        try:
            before, after = migrate(connection, self.dialect, self._migrations)
        except StoreError as error:
            connection.close()
            raise StoreError(f"{what}: {self.url.hide(str(error))}") from None
        except Exception as error:
            connection.close()
            raise StoreError(
                f"cannot bring {what} up to date: {self.url.hide(_first_line(error))}"
            ) from None
        if before != after:
            log.info(
                "store {store}: schema version {before} -> {after}",
                store=self.url.shown,
                before=before,
                after=after,
            )
        if self.dialect == "sqlite":
            self._pool = _SQLitePool(connection)
            self._keeper = connection  # closed by close(), used or not
        else:
            connection.close()
            self._pool = self._postgresql_pool()
        self._run = self._pool.runInteraction

    def _connect_now(self) -> Any:
        """A connection for the migrations, made in this thread.

        SQLite's is then the pool's (L{_SQLitePool}), used by its thread.
        """
        if self.dialect == "sqlite":
            connection = sqlite3.connect(
                self.url.target, isolation_level=None, check_same_thread=False
            )
            try:
                _sqlite_setup(connection)
            except BaseException:
                connection.close()
                raise
            return connection
        import psycopg

        return psycopg.connect(self.url.target, connect_timeout=10)

    def _postgresql_pool(self) -> adbapi.ConnectionPool:
        return adbapi.ConnectionPool(
            "psycopg",
            self.url.target,
            connect_timeout=10,
            cp_min=1,
            cp_max=POSTGRESQL_CONNECTIONS,
            cp_reconnect=True,
            cp_noisy=False,
        )

    def run_interaction(
        self, function: Callable[..., object], *args: object
    ) -> Deferred[Any]:
        """Run C{function(cursor, *args)} in one transaction, off the reactor.

        Fires with what it returns, once committed; fails with what it
        raised, rolled back.
        """
        if self._run is None:
            return fail(StoreError(f"the store {self.url.shown} is not open"))
        return self._run(_in_transaction, self.dialect, function, args)

    def close(self) -> None:
        """Let the connections go (after the last interaction has fired)."""
        pool, self._pool, self._run = self._pool, None, None
        if pool is not None:
            pool.close()
        keeper, self._keeper = self._keeper, None
        if keeper is not None:
            keeper.close()


class _AtOnce:
    """Runs interactions at once on one connection: L{memory_store}'s pool."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    def __call__(
        self, interaction: Callable[..., object], *args: object
    ) -> Deferred[Any]:
        def run() -> object:
            cursor = self._connection.cursor()
            try:
                result = interaction(cursor, *args)
            except BaseException:
                self._connection.rollback()
                raise
            finally:
                cursor.close()
            self._connection.commit()
            return result

        return maybeDeferred(run)


def memory_store(migrations: Sequence[Migration] = MIGRATIONS) -> Store:
    """An open in-memory SQLite store whose interactions run at once.

    For tests: no thread, no file; the Deferred of C{run_interaction} has
    fired when it returns.  Never for a server, whose reactor must not
    wait for a database.
    """
    store = Store("sqlite::memory:", migrations)
    connection = sqlite3.connect(":memory:", isolation_level=None)
    _sqlite_setup(connection)
    migrate(connection, "sqlite", migrations)
    store._keeper = connection
    store._run = _AtOnce(connection)
    return store


def _first_line(error: BaseException) -> str:
    """The first line of what C{error} says (psycopg's run over several)."""
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
