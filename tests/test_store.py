"""The store: opening it, its migrations, its one way of writing parameters."""

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import pytest_twisted
from processes import Server, free_port, poll_until

from chatservice.store import Store, StoreError, memory_store, parse_store_url
from chatservice.store.base import Cursor
from chatservice.store.migrations import MIGRATIONS, Migration, migrate


def rows(cursor: Cursor, sql: str, *params: object) -> list[tuple[object, ...]]:
    return cursor.execute(sql, params).fetchall()


def test_memory_store_runs_at_once() -> None:
    """An in-memory store's interactions have fired when they return."""
    store = memory_store()
    d = store.run_interaction(rows, "SELECT ? + 1, ?", 41, "a%b")
    assert d.result == [(42, "a%b")]
    assert store.dialect == "sqlite"


def test_fresh_database_is_at_the_last_version() -> None:
    """A new database gets every migration: its version is the last one's."""
    store = memory_store()
    assert store.run_interaction(rows, "SELECT version FROM schema_version").result == [
        (len(MIGRATIONS),)
    ]


def test_failed_interaction_is_rolled_back() -> None:
    """What an interaction wrote before it raised is not kept."""
    store = memory_store()

    def write_then_fail(cursor: Cursor) -> None:
        cursor.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("k", "v"))
        raise ValueError("no")

    failed = store.run_interaction(write_then_fail)
    assert isinstance(failed.result.value, ValueError)
    failed.addErrback(lambda _: None)
    assert store.run_interaction(rows, "SELECT * FROM meta").result == []


def test_migrations_are_numbered_without_gaps() -> None:
    """A list of migrations with a gap is refused."""
    gap = (MIGRATIONS[0], Migration(3, "three", ("SELECT 1",), ("SELECT 1",)))
    with pytest.raises(ValueError, match="numbered 1, 2, 3"):
        memory_store(gap)


def test_failed_migration_changes_nothing(tmp_path: Path) -> None:
    """A migration that fails leaves its database at the version before it."""
    path = tmp_path / "chat.db"
    Store(f"sqlite:{path}").open()
    broken = Migration(
        len(MIGRATIONS) + 1,
        "broken",
        ("CREATE TABLE half (x INTEGER)", "NOT SQL"),
        ("NOT SQL",),
    )
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:{path}", (*MIGRATIONS, broken)).open()
    assert str(caught.value).startswith(
        f"cannot bring --store sqlite:{path} up to date: "
    )
    with sqlite3.connect(path) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [
            (len(MIGRATIONS),)
        ]
        assert not connection.execute(
            "SELECT name FROM sqlite_master WHERE name = 'half'"
        ).fetchall()


def newer(path: Path) -> None:
    """Make the database at C{path} one written by a newer chatservice."""
    Store(f"sqlite:{path}").open()
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE schema_version SET version = version + 1")


def test_newer_database_refused(tmp_path: Path) -> None:
    """A database whose schema is newer than the code's is not opened."""
    path = tmp_path / "chat.db"
    newer(path)
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:{path}").open()
    assert str(caught.value) == (
        f"--store sqlite:{path}: the database's schema is version "
        f"{len(MIGRATIONS) + 1}, newer than this chatservice knows "
        f"({len(MIGRATIONS)}): it was written by a newer chatservice; run that "
        "one, or restore a backup"
    )


def test_twistd_refuses_a_newer_database(
    twistd: Callable[..., Server], tmp_path: Path
) -> None:
    """The server stops with one line, no traceback, on a database newer than it."""
    newer(tmp_path / "chatservice.db")  # the default --store, in its directory

    server = twistd(f"tcp:{free_port()}:interface=127.0.0.1")

    assert server.wait() != 0
    output = server.output()
    mentions = [line for line in output.splitlines() if "schema" in line]
    assert len(mentions) == 1, output
    assert mentions[0].endswith(
        "chatservice: --store sqlite:chatservice.db: the database's schema is "
        f"version {len(MIGRATIONS) + 1}, newer than this chatservice knows "
        f"({len(MIGRATIONS)}): it was written by a newer chatservice; run that "
        "one, or restore a backup"
    ), output
    assert "Traceback" not in output


def test_twistd_makes_its_database_in_its_directory(
    twistd: Callable[..., Server], tmp_path: Path
) -> None:
    """By default the store is chatservice.db in twistd's working directory."""
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1")
    server.wait_for_port(port)
    # It listens first, then opens the store: wait for the log line.
    poll_until(lambda: "schema version 0 -> " in server.output(), "migration")
    with sqlite3.connect(tmp_path / "chatservice.db") as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [
            (len(MIGRATIONS),)
        ]


def test_unopenable_file(tmp_path: Path) -> None:
    """A store that cannot be opened is one line naming it."""
    path = tmp_path / "missing" / "chat.db"
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:{path}").open()
    assert str(caught.value) == (
        f"cannot open --store sqlite:{path}: unable to open database file"
    )


def test_unreachable_postgresql() -> None:
    """A PostgreSQL nobody answers at is one line, without the password."""
    url = f"postgresql://chat:secret@127.0.0.1:{free_port()}/chat"
    with pytest.raises(StoreError) as caught:
        Store(url).open()
    message = str(caught.value)
    assert message.startswith(
        f"cannot open --store postgresql://chat:***@127.0.0.1:{url.split(':')[3]}"
    )
    assert "secret" not in message and "\n" not in message


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://chat:s3cr/et@host:abc/chat",
        "postgresql://chat:s3cr@et@host:5432",
        "postgres://chat:s3cr:et@host/",
        "postgresql://chat:s3cr/et@[::1:1/chat",
        "mysql://chat:s3cr/et@host/chat",
    ],
)
def test_a_bad_url_is_refused_without_its_password(url: str) -> None:
    """--store's error about a malformed URL does not show its password."""
    with pytest.raises(ValueError) as caught:
        parse_store_url(url)
    assert "s3cr" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("postgresql://chat:s3cr%zzet@127.0.0.1:{port}/chat", "percent-encoded"),
        ("postgresql://chat:s3cr%2Fet@127.0.0.1:{port}/chat?sslmode=x", "sslmode"),
        ("postgresql://chat@127.0.0.1:{port}/chat?password=s3cret&sslmode=x", "ssl"),
    ],
)
def test_libpq_errors_are_shown_without_the_password(url: str, said: str) -> None:
    """What libpq says of the URL (it quotes bad parts back) hides the password."""
    with pytest.raises(StoreError) as caught:
        Store(url.format(port=free_port())).open()
    message = str(caught.value)
    assert said in message and "s3cr" not in message


def test_read_only_database_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that can be read but not written is refused with one line."""
    path = tmp_path / "chat.db"
    made = Store(f"sqlite:{path}")
    made.open()
    made.close()
    connect = sqlite3.connect

    def read_only(target: str, **options: object) -> sqlite3.Connection:
        return connect(f"file:{target}?mode=ro", uri=True, **options)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite3, "connect", read_only)
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:{path}").open()
    assert str(caught.value) == (
        f"cannot bring --store sqlite:{path} up to date: "
        "attempt to write a readonly database"
    )


def test_damaged_file_refused(tmp_path: Path) -> None:
    """A SQLite file damaged inside is refused at start with one line."""
    path = tmp_path / "chat.db"
    made = Store(f"sqlite:{path}")
    made.open()
    made.close()
    with sqlite3.connect(path) as connection:
        connection.executemany(
            "INSERT INTO history (room, at, kind, nick, sender, text) "
            "VALUES ('#lobby', ?, 'chat', 'bob', 'bob', ?)",
            [(float(n), f"line {n} " * 20) for n in range(2000)],
        )
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = path.stat().st_size
    with path.open("r+b") as damaged:  # a run of pages in the middle
        damaged.seek(size // 2 // 4096 * 4096)
        damaged.write(b"\xff" * 4096 * 4)
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:{path}").open()
    message = str(caught.value)
    assert message.startswith(f"--store sqlite:{path} is damaged (")
    assert message.endswith(
        '): stop here, keep a copy of the file, and see "sqlite3 FILE .recover"'
    )
    assert "\n" not in message


def test_run_before_open() -> None:
    """A store not opened yet says so."""
    failed = Store("sqlite::memory:").run_interaction(rows, "SELECT 1")
    assert str(failed.result.value) == "the store sqlite::memory: is not open"
    failed.addErrback(lambda _: None)


@pytest_twisted.ensureDeferred
async def test_file_survives_reopening(tmp_path: Path) -> None:
    """What was written to a SQLite file is there when it is opened again."""
    url = f"sqlite:{tmp_path / 'chat.db'}"
    store = Store(url)
    store.open()
    await store.run_interaction(
        lambda cursor: cursor.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?)", ("said", "hello")
        )
    )
    store.close()
    again = Store(url)
    again.open()
    try:
        assert await again.run_interaction(rows, "SELECT key, value FROM meta") == [
            ("said", "hello")
        ]
    finally:
        again.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_memory_url_through_the_pool() -> None:
    """sqlite::memory: through the pool sees the schema its opening made."""
    store = Store("sqlite::memory:")
    store.open()
    try:
        assert await store.run_interaction(
            rows, "SELECT version FROM schema_version"
        ) == [(len(MIGRATIONS),)]
    finally:
        store.close()


@pytest_twisted.ensureDeferred
async def test_postgresql(postgres: str) -> None:
    """On PostgreSQL: migrated, ? parameters, % in literals, rollback."""
    store = Store(postgres)
    store.open()
    try:
        assert store.dialect == "postgresql"
        assert await store.run_interaction(
            rows, "SELECT version FROM schema_version"
        ) == [(len(MIGRATIONS),)]
        assert await store.run_interaction(rows, "SELECT ? || '%', ?", "50", 7) == [
            ("50%", 7)
        ]

        def write_then_fail(cursor: Cursor) -> None:
            cursor.execute("INSERT INTO meta (key, value) VALUES (?, ?)", ("k", "v"))
            raise ValueError("no")

        with pytest.raises(ValueError):
            await store.run_interaction(write_then_fail)
        assert await store.run_interaction(rows, "SELECT * FROM meta") == []
    finally:
        store.close()


def test_postgresql_nodes_migrate_together(postgres: str) -> None:
    """Nodes starting at once on one new database migrate it once, without error."""
    import psycopg

    errors: list[BaseException] = []
    results: list[tuple[int, int]] = []

    def start() -> None:
        try:
            with psycopg.connect(postgres) as connection:
                results.append(migrate(connection, "postgresql"))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    # Each migration is one transaction: a node may find some done by
    # another and do the rest; every node ends at the latest version, and
    # none ran a migration twice (its CREATE TABLE would have failed).
    assert len(results) == 4
    assert min(before for before, _ in results) == 0
    assert {after for _, after in results} == {len(MIGRATIONS)}
