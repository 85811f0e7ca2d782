"""The store: what the server keeps across restarts, in a SQL database.

C{--store URL} names it: C{sqlite:PATH} (the default, C{sqlite:chatservice.db},
a file in twistd's working directory), C{sqlite::memory:} (nothing kept: for
tests), or C{postgresql://USER:PASSWORD@HOST:PORT/DATABASE} (shared by the
nodes of a cluster; SQLite with C{--redis} is refused).

The API, for whoever keeps something there (room history,
L{chatservice.store.history}; accounts):

  - C{store.run_interaction(function, *args)} runs C{function(cursor, *args)}
    in a thread of the store's pool, in one transaction, and returns a
    Deferred of its result: committed if it returns, rolled back if it
    raises.  The reactor never waits for the database; never call it on a
    path taken for every line or every registration (queue, and write in
    batches, as L{chatservice.store.history} does).
  - C{cursor.execute(sql, params=())}, C{cursor.executemany(sql, rows)},
    C{cursor.fetchone()}, C{cursor.fetchall()}, C{cursor.rowcount}: the
    DB-API's, with one way of writing parameters on both databases: C{?}
    (SQLite's own; turned into psycopg's C{%s}, and a C{%} into C{%%}, on
    PostgreSQL).  So a C{?} never appears inside a quoted literal of the
    SQL (a C{%} may): pass values as parameters.  A new row's id: use
    C{INSERT ... RETURNING id} (both have it).
  - C{store.dialect} (and C{cursor.dialect}): C{"sqlite"} or
    C{"postgresql"}, for the few statements that differ.
  - The schema is changed only by L{chatservice.store.migrations}, which
    run at start, in order, each in one transaction.

The store is opened (L{Store.open}) when the service starts, before it
serves anyone; opening connects, brings the schema up to date, and refuses
a database newer than the code with one line (L{StoreError}).  Unit tests
use L{memory_store}, an in-memory SQLite database whose interactions run at
once, in the caller's thread, so that C{successResultOf} sees their result.
"""

from .base import Cursor, Store, StoreError, memory_store
from .url import StoreURL, parse_store_url

__all__ = [
    "Cursor",
    "Store",
    "StoreError",
    "StoreURL",
    "memory_store",
    "parse_store_url",
]
