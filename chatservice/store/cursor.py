"""The store's cursor: SQL written with C{?} parameters on both databases."""

from collections.abc import Iterable, Sequence
from typing import Any


class Cursor:
    """A DB-API cursor whose SQL is written with C{?} parameters on both.

    See L{chatservice.store} for the rules.  C{execute} returns the cursor,
    so that C{cursor.execute(...).fetchall()} reads well.
    """

    __slots__ = ("dialect", "_cursor")

    def __init__(self, cursor: Any, dialect: str) -> None:
        self._cursor = cursor
        #: C{"sqlite"} or C{"postgresql"}.
        self.dialect = dialect

    def _sql(self, sql: str) -> str:
        if self.dialect == "postgresql":
            return sql.replace("%", "%%").replace("?", "%s")
        return sql

    def execute(self, sql: str, params: Sequence[object] = ()) -> "Cursor":
        """Run one statement with C{params} for its C{?}s."""
        self._cursor.execute(self._sql(sql), tuple(params))
        return self

    def executemany(self, sql: str, rows: Iterable[Sequence[object]]) -> "Cursor":
        """Run one statement once for each of C{rows}."""
        self._cursor.executemany(self._sql(sql), [tuple(row) for row in rows])
        return self

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row of the last query, or None."""
        return self._cursor.fetchone()  # type: ignore[no-any-return]

    def fetchall(self) -> list[tuple[Any, ...]]:
        """The remaining rows of the last query."""
        return list(self._cursor.fetchall())

    @property
    def rowcount(self) -> int:
        """How many rows the last statement changed."""
        return self._cursor.rowcount  # type: ignore[no-any-return]
