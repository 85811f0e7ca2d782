"""The store's schema, as an ordered list of migrations run at start.

Migration N brings a database from schema version N-1 to N, in one
transaction (both databases change their schema in transactions), and
writes N into the C{schema_version} table's one row.  At start every
migration the database lacks runs, in order; a database whose version is
higher than the last migration here was written by a newer chatservice,
and the server refuses to start (one line) rather than guess.

A released migration never changes: a change to the schema is a new
migration at the end.  Each has the SQL of each dialect; a statement
takes no parameters.  Numbers are 1, 2, 3... with no gap (checked).

  1. C{meta} (key -> value) and room history (L{chatservice.store.history}):
     C{history}, and its full-text index (an FTS5 table on SQLite, a
     C{tsvector} column with a GIN index on PostgreSQL).
  2. Accounts and the messages kept for them (L{chatservice.store.accounts}):
     C{accounts} and C{letters}, deleted with their account.
  3. SQLite's full-text index filled once a batch, not by a trigger.
  4. SQLite's full-text index without the lines' sizes (C{columnsize=0}).

Nodes of a cluster may start together on one PostgreSQL database: each
migration takes a transaction-wide advisory lock first, and reads the
version again under it, so one node migrates and the others find it done.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .cursor import Cursor


class StoreError(Exception):
    """The store cannot be opened; the message is one line for the operator."""


@dataclass(frozen=True)
class Migration:
    """One step of the schema: its number, what it does, its SQL."""

    number: int
    summary: str
    sqlite: tuple[str, ...]
    postgresql: tuple[str, ...]

    def statements(self, dialect: str) -> tuple[str, ...]:
        """The statements of C{dialect}."""
        return self.sqlite if dialect == "sqlite" else self.postgresql


HISTORY = Migration(
    1,
    "meta, and room history with its full-text index",
    sqlite=(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # at: seconds since the epoch (UTC); sender: the nickname folded
        # (chatservice.text.fold), to find one user's lines.
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            room TEXT NOT NULL,
            at REAL NOT NULL,
            kind TEXT NOT NULL,
            nick TEXT NOT NULL,
            sender TEXT NOT NULL,
            text TEXT NOT NULL
        )""",
        "CREATE INDEX history_room_at ON history (room, at)",
        "CREATE INDEX history_at ON history (at)",
        # An external-content FTS5 index of the text, kept by triggers.
        "CREATE VIRTUAL TABLE history_words USING fts5("
        "text, content='history', content_rowid='id')",
        "CREATE TRIGGER history_words_insert AFTER INSERT ON history BEGIN "
        "INSERT INTO history_words (rowid, text) VALUES (new.id, new.text); END",
        "CREATE TRIGGER history_words_delete AFTER DELETE ON history BEGIN "
        "INSERT INTO history_words (history_words, rowid, text) "
        "VALUES ('delete', old.id, old.text); END",
    ),
    postgresql=(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
        # 'simple': words as written, in any language (no stemming), like
        # SQLite's unicode61 tokenizer.
        """CREATE TABLE history (
            id BIGSERIAL PRIMARY KEY,
            room TEXT NOT NULL,
            at DOUBLE PRECISION NOT NULL,
            kind TEXT NOT NULL,
            nick TEXT NOT NULL,
            sender TEXT NOT NULL,
            text TEXT NOT NULL,
            words TSVECTOR GENERATED ALWAYS AS (to_tsvector('simple', text)) STORED
        )""",
        "CREATE INDEX history_room_at ON history (room, at)",
        "CREATE INDEX history_at ON history (at)",
        "CREATE INDEX history_words ON history USING GIN (words)",
    ),
)

_ACCOUNTS = """CREATE TABLE accounts (
    key TEXT PRIMARY KEY,
    nickname TEXT NOT NULL,
    email TEXT,
    password TEXT NOT NULL,
    created {real} NOT NULL
)"""
# recipient: the account's key; at: seconds since the epoch (UTC); size:
# what the letter counts against its recipient's mailbox (its sender's and
# text's UTF-8 bytes).
_LETTERS = """CREATE TABLE letters (
    id {serial} PRIMARY KEY,
    recipient TEXT NOT NULL REFERENCES accounts (key) ON DELETE CASCADE,
    at {real} NOT NULL,
    sender TEXT NOT NULL,
    text TEXT NOT NULL,
    size INTEGER NOT NULL
)"""

ACCOUNTS = Migration(
    2,
    "accounts, and the private messages kept for them while offline",
    sqlite=(
        _ACCOUNTS.format(real="REAL"),
        _LETTERS.format(serial="INTEGER", real="REAL"),
        "CREATE INDEX letters_recipient ON letters (recipient, id)",
    ),
    postgresql=(
        _ACCOUNTS.format(real="DOUBLE PRECISION"),
        _LETTERS.format(serial="BIGSERIAL", real="DOUBLE PRECISION"),
        "CREATE INDEX letters_recipient ON letters (recipient, id)",
    ),
)

#: SQLite's full-text index is filled once a batch (L{history._insert}:
#: one C{INSERT ... SELECT} of the rows just written), not by a trigger
#: for each row: 4.5 us a line against 17 on the development machine,
#: and a line is written for every line said (issue 19's fan100 cell said
#: 37,000 a second).  The trigger for deletions stays: FTS5's external
#: content needs the deleted text.
HISTORY_WORDS_BY_BATCH = Migration(
    3,
    "the full-text index filled once a batch, not a row at a time",
    sqlite=("DROP TRIGGER history_words_insert",),
    postgresql=(),
)

#: SQLite's full-text index without its table of each line's length in
#: words (FTS5's C{columnsize=0}): that is for ranking (C{bm25}), which
#: C{/search} does not do (it finds every line with the words, newest
#: first), and it was a row more written for every line said: 5.5 -> 5.0
#: us a line written (C{scripts/history_writes.py}, 5 alternating runs).
#: The index is made again from the lines kept (C{rebuild}: 0.3 s for
#: 200,000 lines, once, at the first start after the upgrade); the trigger
#: for deletions is the
#: same, made again after the index it writes to.
HISTORY_WORDS_WITHOUT_SIZES = Migration(
    4,
    "the full-text index without the lines' sizes (only ranking needs them)",
    sqlite=(
        "DROP TRIGGER history_words_delete",
        "DROP TABLE history_words",
        "CREATE VIRTUAL TABLE history_words USING fts5("
        "text, content='history', content_rowid='id', columnsize=0)",
        "INSERT INTO history_words (history_words) VALUES ('rebuild')",
        "CREATE TRIGGER history_words_delete AFTER DELETE ON history BEGIN "
        "INSERT INTO history_words (history_words, rowid, text) "
        "VALUES ('delete', old.id, old.text); END",
    ),
    postgresql=(),
)

#: Every migration, in order; a new one goes at the end.
MIGRATIONS: tuple[Migration, ...] = (
    HISTORY,
    ACCOUNTS,
    HISTORY_WORDS_BY_BATCH,
    HISTORY_WORDS_WITHOUT_SIZES,
)

#: The lock every node takes to migrate a PostgreSQL database ("chat").
_LOCK = 0x63686174


def check_numbers(migrations: Sequence[Migration]) -> None:
    """Raise C{ValueError} unless the migrations are numbered 1, 2, 3..."""
    numbers = [migration.number for migration in migrations]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3...: {numbers}")


check_numbers(MIGRATIONS)


def migrate(
    connection: Any, dialect: str, migrations: Sequence[Migration] = MIGRATIONS
) -> tuple[int, int]:
    """Bring the database of C{connection} up to date, one transaction each.

    Returns its version before and after.  On SQLite, C{connection} is in
    autocommit mode (C{isolation_level=None}).

    @raise StoreError: the database's version is newer than the last of
        C{migrations}.
    """
    check_numbers(migrations)
    latest = len(migrations)
    first: int | None = None
    while True:
        cursor = Cursor(connection.cursor(), dialect)
        try:
            if dialect == "sqlite":
                cursor.execute("BEGIN IMMEDIATE")
            else:
                cursor.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            row = cursor.execute("SELECT version FROM schema_version").fetchone()
            if row is None:
                cursor.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = 0
            else:
                version = int(row[0])
            if first is None:
                first = version
            if version > latest:
                raise StoreError(
                    f"the database's schema is version {version}, newer than "
                    f"this chatservice knows ({latest}): it was written by a "
                    "newer chatservice; run that one, or restore a backup"
                )
            if version == latest:
                # A write, which changes nothing: a database that can be
                # read but not written (a read-only file, a PostgreSQL
                # standby) is refused now, not found out by every batch
                # of history failing later, a traceback a second.
                cursor.execute("UPDATE schema_version SET version = version")
                connection.commit()
                return first, version
            migration = migrations[version]
            for statement in migration.statements(dialect):
                cursor.execute(statement)
            cursor.execute("UPDATE schema_version SET version = ?", (migration.number,))
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
