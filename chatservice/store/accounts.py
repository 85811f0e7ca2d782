"""Accounts and the messages kept for them, in the store (migration 2).

L{StoreAccounts} is the L{IAccountStore} of a server with a store: the
same tables on SQLite and PostgreSQL, each method one transaction in the
store's thread pool.  Nothing here is on the path of a registration: the
server reads the accounts' keys once at start (L{StoreAccounts.names}) and
asks for one account only when someone identifies.
"""

from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from ..accounts import Account, Letter
from ..interfaces import IAccountStore
from .base import Store
from .cursor import Cursor


@implementer(IAccountStore)
class StoreAccounts:
    """An L{IAccountStore} in the tables C{accounts} and C{letters}."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def names(self) -> Deferred[list[str]]:
        """See L{IAccountStore.names}."""

        def read(cursor: Cursor) -> list[str]:
            rows = cursor.execute("SELECT key FROM accounts").fetchall()
            return [row[0] for row in rows]

        return self._store.run_interaction(read)

    def get(self, key: str) -> Deferred[Any]:
        """See L{IAccountStore.get}."""

        def read(cursor: Cursor) -> Account | None:
            row = cursor.execute(
                "SELECT nickname, email, password, created FROM accounts WHERE key = ?",
                (key,),
            ).fetchone()
            return None if row is None else Account(*row)

        return self._store.run_interaction(read)

    def create(self, key: str, account: Any) -> Deferred[bool]:
        """See L{IAccountStore.create}."""

        def write(cursor: Cursor) -> bool:
            cursor.execute(
                "INSERT INTO accounts (key, nickname, email, password, created) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (key) DO NOTHING",
                (
                    key,
                    account.nickname,
                    account.email,
                    account.password,
                    account.created,
                ),
            )
            return cursor.rowcount == 1

        return self._store.run_interaction(write)

    def set_password(self, key: str, password: str) -> Deferred[bool]:
        """See L{IAccountStore.set_password}."""

        def write(cursor: Cursor) -> bool:
            cursor.execute(
                "UPDATE accounts SET password = ? WHERE key = ?", (password, key)
            )
            return cursor.rowcount == 1

        return self._store.run_interaction(write)

    def delete(self, key: str) -> Deferred[bool]:
        """See L{IAccountStore.delete}: its letters go with it (cascade)."""

        def write(cursor: Cursor) -> bool:
            cursor.execute("DELETE FROM letters WHERE recipient = ?", (key,))
            cursor.execute("DELETE FROM accounts WHERE key = ?", (key,))
            return cursor.rowcount == 1

        return self._store.run_interaction(write)

    def leave(
        self, key: str, message: Any, max_messages: int, max_bytes: int
    ) -> Deferred[bool]:
        """See L{IAccountStore.leave}: the recipient's row is locked first.

        On PostgreSQL two nodes may leave a letter for one user at once:
        C{FOR UPDATE} makes the second wait for the first's count.  SQLite
        has one writer at a time anyway.
        """
        lock = " FOR UPDATE" if self._store.dialect == "postgresql" else ""

        def write(cursor: Cursor) -> bool:
            found = cursor.execute(
                "SELECT key FROM accounts WHERE key = ?" + lock, (key,)
            ).fetchone()
            if found is None:
                return False
            count, size = cursor.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM letters "
                "WHERE recipient = ?",
                (key,),
            ).fetchone()
            if count >= max_messages or size + message.size > max_bytes:
                return False
            cursor.execute(
                "INSERT INTO letters (recipient, at, sender, text, size) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, message.when, message.sender, message.text, message.size),
            )
            return True

        return self._store.run_interaction(write)

    def take(self, key: str) -> Deferred[list[Any]]:
        """See L{IAccountStore.take}: under the lock L{leave} takes.

        So no letter is left between reading them and deleting them, and
        two nodes never both hand out the same ones.
        """
        lock = " FOR UPDATE" if self._store.dialect == "postgresql" else ""

        def read(cursor: Cursor) -> list[Letter]:
            cursor.execute("SELECT key FROM accounts WHERE key = ?" + lock, (key,))
            rows = cursor.execute(
                "SELECT at, sender, text FROM letters WHERE recipient = ? ORDER BY id",
                (key,),
            ).fetchall()
            cursor.execute("DELETE FROM letters WHERE recipient = ?", (key,))
            return [Letter(*row) for row in rows]

        return self._store.run_interaction(read)
