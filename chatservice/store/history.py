"""Room history in the store: written in batches, read for joins and commands.

Every chat line and action said in a room (not private messages) is
L{History.record}ed where it is said: on the node of its sender, so a
cluster stores each line once.  Recording appends to a list and nothing
more, on the fan-out's path; the lines are written in one transaction at
most L{FLUSH_INTERVAL} seconds after the first of them was queued, from the
store's thread pool, so the fan-out never waits for the disk.  A crash
loses at most the lines of that last second (and of a write under way).
A batch the database cannot take for now (unreachable, full, locked) is
kept and written again with the next, L{QUEUED_MAX} lines at most.

Lines older than C{--history-days} are deleted at start and then daily
(L{History.start}), by the store's threads too.

What is read back:

  - L{History.scrollback}: what a newcomer to a room is shown.  The
    registry keeps each room's last C{--history} lines in memory, as
    before; when it has fewer than that (after a restart, or in a room
    that emptied and was made again), the older ones are read from the
    store, once per room: those read are kept (L{CACHED_ROOMS} rooms at
    most, read again after L{CACHE_SECONDS}), so a registration costs no
    round trip to the database.
  - L{History.last}, L{History.since}: C{/history}.
  - L{History.search}: C{/search}, the full-text index of each database
    (SQLite's FTS5, PostgreSQL's C{tsvector}), with the words quoted so
    that no input is taken for the index's query syntax.
"""

import sqlite3
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any

from twisted.enterprise.adbapi import ConnectionLost
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..events import Event
from ..interfaces import Scrollback
from ..logs import gate, shown
from ..text import fold
from ..throttle import Allowances
from .base import Store
from .cursor import Cursor

log = Logger(observer=gate)

#: The most seconds a line said waits in memory before it is written.
FLUSH_INTERVAL = 1.0

#: The most lines queued while a write is under way; beyond, the oldest
#: are dropped (a store that hangs must not take all the memory).
QUEUED_MAX = 100_000

#: The most characters of text queued (the same): 100,000 lines of the
#: longest (2 KB) took 440 MB before their encodings for the fan-out were
#: counted; 16 million characters are 8,000 such lines, or 250,000 lines
#: of 60.
QUEUED_CHARS = 16_000_000

#: How often lines older than C{--history-days} are deleted.
PRUNE_INTERVAL = 24 * 3600.0

#: The most lines one transaction of pruning deletes.  The store has one
#: SQLite connection (one thread): a single DELETE of a day of a busy
#: server's lines held it, and every history write, account check,
#: C{/history} and C{/search} behind it, for as long as it took (0.65 s for
#: 100,000 lines on the development machine, minutes after C{--history-days}
#: was lowered on a big file).  Batches of this size take 35-70 ms each,
#: and what was queued meanwhile runs between two of them.
PRUNE_BATCH = 5_000

#: Rooms whose older scrollback, read from the store, is kept in memory.
CACHED_ROOMS = 256

#: How long a room's scrollback read from the store is used before it is
#: read again.  On one server it is kept exact (L{History.record}); in a
#: cluster the lines said on other nodes reach the store, not this cache,
#: and a room that emptied everywhere has no scrollback in Redis either:
#: at most one read in this time per room, whoever registers or joins.
CACHE_SECONDS = 10.0

#: The most seconds a newcomer's welcome or C{/join} waits for the older
#: scrollback from the store; then it is shown without them (the read goes
#: on, for those after).  A store that hangs (a PostgreSQL behind a broken
#: network) made every C{/join} to a room not in the cache fail after
#: C{--command-timeout} (30 s), and left the user a member of the room it
#: failed to show (its events reached them in their old room).
SCROLLBACK_WAIT = 2.0

#: While the store refuses writes, how often the log says so (after the
#: first failure's traceback).
FAILING_LOG_INTERVAL = 60.0

#: The kinds of event stored: a room's chat lines and actions.
KINDS = ("chat", "action")

#: Searches per second one address may make over time (C{/search}), and at once.
SEARCH_RATE = 0.2
SEARCH_BURST = 3.0

#: The most searches under way at once, from everyone: the store has one
#: SQLite thread, which history writes and account checks share; the
#: allowance per address alone let a crowd of addresses keep it busy.
SEARCHES_AT_ONCE = 2

#: C{/history} requests one address may make per second over time, and at
#: once; and the most under way at once, from everyone.  Each is a query
#: (1-9 ms on 200,000 lines) and a write of what is queued, on the store's
#: one SQLite thread: flood control alone let one address (100
#: connections, 5 lines a second each) ask for 500 a second, and hold the
#: history's writes and the account checks behind them.
HISTORY_RATE = 1.0
HISTORY_BURST = 5.0
HISTORIES_AT_ONCE = 4

#: A queued line: its room, and the event.
Queued = tuple[str, Event]


def unavailable() -> tuple[type[BaseException], ...]:
    """The errors of a database that cannot be reached or written for now.

    A batch that fails with one of them is written again later; any other
    error (the batch itself refused) loses it.
    """
    import psycopg

    return (
        sqlite3.OperationalError,
        psycopg.OperationalError,
        psycopg.InterfaceError,
        ConnectionLost,
    )


def _first_line(failure: Failure) -> str:
    lines = str(failure.value).strip().splitlines()
    return lines[0] if lines else failure.type.__name__


def _insert(cursor: Cursor, lines: list[Queued]) -> None:
    """Write C{lines}; the rows are made here, in the store's thread."""
    rows = []
    for room, event in lines:
        nick = event.nick or ""
        rows.append((room, event.time, event.kind, nick, fold(nick), event.text))
    write_rows(cursor, rows)


def write_rows(
    cursor: Cursor, rows: Sequence[tuple[str, float, str, str, str, str]]
) -> None:
    """Write C{rows} (room, at, kind, nick, sender, text) with their words indexed.

    On SQLite the full-text index takes the rows in one statement
    (migration 3), a quarter of the cost of a trigger's insert for each;
    every row of C{history} must be in the index, or deleting it breaks
    the index (FTS5's external content), so rows are written here only.
    The store's one connection is the only writer, so the rows after the
    highest id before these are these.
    """
    sqlite = cursor.dialect == "sqlite"
    last = 0
    if sqlite:
        row = cursor.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()
        last = row[0] if row else 0
    cursor.executemany(
        "INSERT INTO history (room, at, kind, nick, sender, text) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        rows,
    )
    if sqlite:
        cursor.execute(
            "INSERT INTO history_words (rowid, text) "
            "SELECT id, text FROM history WHERE id > ?",
            (last,),
        )


def _prune(cursor: Cursor, before: float, count: int) -> int:
    """Delete at most C{count} of the lines said before C{before}, the oldest."""
    return cursor.execute(
        "DELETE FROM history WHERE id IN "
        "(SELECT id FROM history WHERE at < ? ORDER BY at LIMIT ?)",
        (before, count),
    ).rowcount


_COLUMNS = "at, kind, nick, text"


def _last(
    cursor: Cursor, room: str, before: float | None, count: int
) -> list[tuple[Any, ...]]:
    """The C{count} newest lines of C{room} said before C{before}, oldest first."""
    if before is None:
        cursor.execute(
            f"SELECT {_COLUMNS} FROM history WHERE room = ? "
            "ORDER BY at DESC, id DESC LIMIT ?",
            (room, count),
        )
    else:
        cursor.execute(
            f"SELECT {_COLUMNS} FROM history WHERE room = ? AND at < ? "
            "ORDER BY at DESC, id DESC LIMIT ?",
            (room, before, count),
        )
    return cursor.fetchall()[::-1]


def _since(
    cursor: Cursor, room: str, since: float, skip: int, count: int
) -> list[tuple[Any, ...]]:
    """The lines of C{room} from C{since} on, oldest first, after C{skip}."""
    cursor.execute(
        f"SELECT {_COLUMNS} FROM history WHERE room = ? AND at >= ? "
        "ORDER BY at, id LIMIT ? OFFSET ?",
        (room, since, count, skip),
    )
    return cursor.fetchall()


def _search(
    cursor: Cursor, room: str, words: Sequence[str], count: int
) -> list[tuple[Any, ...]]:
    """The C{count} newest lines of C{room} holding every one of C{words}."""
    if cursor.dialect == "sqlite":
        # The index is asked once, for the ids of every line with the words
        # (the subquery), and the room's lines are checked against them
        # newest first.  Joined instead, SQLite's planner walked the room's
        # lines and asked the index about each: 8 common words in a room of
        # 180,000 lines took 21 s (the single store thread held all that
        # time), 20 ms this way.
        cursor.execute(
            f"SELECT {_COLUMNS} FROM history WHERE id IN "
            "(SELECT rowid FROM history_words WHERE history_words MATCH ?) "
            "AND room = ? ORDER BY at DESC, id DESC LIMIT ?",
            (fts5_query(words), room, count),
        )
    else:
        cursor.execute(
            f"SELECT {_COLUMNS} FROM history "
            "WHERE words @@ plainto_tsquery('simple', ?) AND room = ? "
            "ORDER BY at DESC, id DESC LIMIT ?",
            (" ".join(words), room, count),
        )
    return cursor.fetchall()[::-1]


def fts5_query(words: Sequence[str]) -> str:
    """An FTS5 query matching lines with all of C{words}, each taken literally.

    Each word is a quoted string (its quotes doubled), so C{OR}, C{NEAR},
    C{*}, C{:} or a stray quote are words to find, never query syntax.
    """
    return " ".join('"' + word.replace('"', '""') + '"' for word in words)


def _scrollback(row: Sequence[Any], room: str) -> Scrollback:
    at, kind, nick, text = row
    at = float(at)
    return Scrollback(at, Event(kind, text, nick=nick, room=room, when=at))


class History:
    """Room history in C{store}; see the module docstring.

    @param store: where it is kept.
    @param clock: for the batches' timer and the daily pruning.
    @param lines: how many lines a newcomer is shown (C{--history}).
    @param days: how long lines are kept (C{--history-days}).
    """

    def __init__(
        self, store: Store, clock: IReactorTime, lines: int, days: float
    ) -> None:
        self.store = store
        self._clock = clock
        self._lines = lines
        self._days = days
        self._queue: list[Queued] = []
        # The characters of text in the queue (for QUEUED_CHARS).
        self._chars = 0
        # The lines being written.
        self._batch: list[Queued] = []
        self._timer: IDelayedCall | None = None
        self._writing: Deferred[object] | None = None
        self._pruning: LoopingCall | None = None
        # Set by stop(): a pruning under way ends after its batch.
        self._stopped = False
        # By room: its last lines, read from the store for a newcomer, then
        # kept up to date with the lines said here (record: their events).
        self._older: OrderedDict[str, deque[Scrollback | Event]] = OrderedDict()
        self._read_at: dict[str, float] = {}
        self._reading: dict[str, Deferred[object]] = {}
        #: What each address may still search (by its address_key).
        self.searches = Allowances(SEARCH_RATE, SEARCH_BURST)
        #: Searches under way (L{SEARCHES_AT_ONCE} at most are begun).
        self.searching = 0
        #: What each address may still ask of C{/history}, and how many
        #: of those are under way (L{HISTORIES_AT_ONCE} at most are begun).
        self.histories = Allowances(HISTORY_RATE, HISTORY_BURST)
        self.paging = 0
        #: Lines written, and lines lost because a write failed.
        self.written = 0
        self.lost = 0
        # Since when (the last log line about it) the store refuses writes.
        self._failing: float | None = None

    # Writing ---------------------------------------------------------------

    def record(self, room: str, event: Event) -> None:
        """Queue C{event}, a chat line or action said in C{room}, for writing.

        On the fan-out's path: an append or two, the rest is done later
        (the rows made in the store's thread, the scrollback's lines when
        a newcomer needs them).
        """
        self._queue.append((room, event))
        self._chars += len(event.text)
        cached = self._older.get(room)
        if cached is not None:
            cached.append(event)
        if self._timer is None:
            self._timer = self._clock.callLater(FLUSH_INTERVAL, self._flush)

    def _bound(self) -> None:
        """Drop the oldest lines queued beyond L{QUEUED_MAX}.

        A store that hangs or is down must not make the queue grow for ever.
        """
        excess = max(len(self._queue) - QUEUED_MAX, 0)
        if self._chars > QUEUED_CHARS:
            over = self._chars - QUEUED_CHARS
            dropped = 0
            for _, event in self._queue:
                if over <= 0:
                    break
                over -= len(event.text)
                dropped += 1
            excess = max(excess, dropped)
        if excess > 0:
            self._chars -= sum(len(event.text) for _, event in self._queue[:excess])
            del self._queue[:excess]
            self.lost += excess
            log.warn(
                "the store is too slow: {count} line(s) of history dropped",
                count=excess,
            )

    def _later(self) -> None:
        if self._timer is None:
            self._timer = self._clock.callLater(FLUSH_INTERVAL, self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._writing is not None:
            # One write at a time, in order: the next batch when it is done.
            self._bound()
            self._later()
            return
        rows, self._queue, self._chars = self._queue, [], 0
        if not rows:
            return
        self._batch = rows
        d = self._writing = self.store.run_interaction(_insert, rows)

        def written(_: object) -> None:
            self.written += len(rows)
            if self._failing is not None:
                log.info(
                    "the store is back: {count} line(s) of history written, "
                    "{dropped} lost in all",
                    count=len(rows),
                    dropped=self.lost,
                )
                self._failing = None

        def failed(failure: Failure) -> None:
            now = self._clock.seconds()
            if not failure.check(*unavailable()):
                self.lost += len(rows)
                log.failure(
                    "{count} line(s) of history could not be written",
                    failure,
                    count=len(rows),
                )
                return
            # The database is unreachable, full, locked...: the lines are
            # kept, in order, and written again with the next batch.
            self._queue[:0] = rows
            self._chars += sum(len(event.text) for _, event in rows)
            self._bound()
            if self._failing is None:
                log.failure(
                    "the store could not write {count} line(s) of history; "
                    "they are kept and written again every second",
                    failure,
                    count=len(rows),
                )
                self._failing = now
            elif now - self._failing >= FAILING_LOG_INTERVAL:
                # One line a minute while it lasts, not a traceback a second.
                log.warn(
                    "the store still fails ({error}): {count} line(s) of "
                    "history waiting",
                    error=shown(_first_line(failure)),
                    count=len(self._queue),
                )
                self._failing = now
            self._later()

        def done(_: object) -> None:
            self._writing = None
            self._batch = []

        d.addCallbacks(written, failed).addBoth(done)

    def flush(self, _again: bool = True) -> Deferred[None]:
        """Write what is queued now.

        Fires when every line recorded before has been written, or its
        write has failed (the lines are then kept, to be written later).
        """
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writing = self._writing
        if writing is None:
            if not self._queue:
                return succeed(None)
            self._flush()
            writing, _again = self._writing, False
            if writing is None:
                return succeed(None)
        waiting: Deferred[None] = Deferred()
        writing.addBoth(lambda result: (waiting.callback(None), result)[1])
        if _again:  # the write under way; then those queued meanwhile
            return waiting.addCallback(lambda _: self.flush(False))
        return waiting

    # Pruning ---------------------------------------------------------------

    def start(self) -> None:
        """Delete the lines older than C{--history-days} now, then daily."""
        self._pruning = LoopingCall(self.prune)
        self._pruning.clock = self._clock
        self._pruning.start(PRUNE_INTERVAL, now=True)

    def prune(self) -> Deferred[int]:
        """Delete the lines older than C{--history-days}; fires with how many."""
        before = self._clock.seconds() - self._days * 24 * 3600
        d: Deferred[int] = Deferred()
        deleted = 0

        def batch() -> None:
            # One transaction per batch, each queued once the last is done:
            # whatever was queued meanwhile (a history write, an account
            # check) runs between them.
            self.store.run_interaction(_prune, before, PRUNE_BATCH).addCallbacks(
                more, d.errback
            )

        def more(count: int) -> None:
            nonlocal deleted
            deleted += count
            if count < PRUNE_BATCH or self._stopped:
                d.callback(deleted)
            else:
                batch()

        batch()

        def pruned(count: int) -> int:
            if count:
                log.info(
                    "deleted {count} line(s) of history older than {days} days",
                    count=count,
                    days=self._days,
                )
            return count

        def failed(failure: Failure) -> int:
            log.failure("the history could not be pruned", failure)
            return 0

        return d.addCallbacks(pruned, failed)

    def stop(self) -> Deferred[None]:
        """Stop pruning; fire once every line recorded is written."""
        self._stopped = True
        if self._pruning is not None and self._pruning.running:
            self._pruning.stop()
        self._pruning = None

        def stopped(_: None) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            if self._queue:
                self.lost += len(self._queue)
                log.warn(
                    "{count} line(s) of history could not be written before the stop",
                    count=len(self._queue),
                )
                self._queue, self._chars = [], 0

        return self.flush().addCallback(stopped)

    # Reading ---------------------------------------------------------------

    def scrollback_now(
        self, room: str, live: list[Scrollback]
    ) -> list[Scrollback] | None:
        """L{scrollback}'s answer if it needs no reading from the store, else None.

        C{live} itself when it has C{--history} lines (a busy room's, as
        most newcomers see), or with the older lines kept from a recent
        read: the welcome takes it without a Deferred.
        """
        wanted = self._lines
        if len(live) >= wanted or not wanted:
            return live
        cached = self._older.get(room)
        if cached is not None and (
            self._clock.seconds() - self._read_at[room] < CACHE_SECONDS
        ):
            return self._joined(cached, live)
        return None

    def scrollback(
        self, room: str, live: list[Scrollback]
    ) -> Deferred[list[Scrollback]]:
        """What a newcomer to C{room} is shown, from the registry's C{live}.

        Those lines, preceded, if there are fewer than C{--history}, by
        older ones from the store.
        """
        now = self.scrollback_now(room, live)
        if now is not None:
            return succeed(now)
        reading = self._reading.get(room)
        if reading is None:
            reading = self._read(room)
            if not reading.called:  # the next newcomers wait for this read
                self._reading[room] = reading
        d: Deferred[list[Scrollback]] = Deferred()
        timer: IDelayedCall | None = None

        def read(result: object) -> object:
            if timer is not None and timer.active():
                timer.cancel()
            if not d.called:
                cached = self._older.get(room)
                d.callback(live if cached is None else self._joined(cached, live))
            return result

        def late() -> None:
            log.warn(
                "the scrollback of {room} was not read from the store within "
                "{duration} s: shown without its older lines",
                room=shown(room),
                duration=SCROLLBACK_WAIT,
            )
            d.callback(live)

        reading.addBoth(read)
        if not d.called:
            timer = self._clock.callLater(SCROLLBACK_WAIT, late)
        return d

    def _read(self, room: str) -> Deferred[object]:
        """Read C{room}'s last lines into the cache, with those still queued."""
        queued = [event for name, event in self._queue if name == room]
        now = self._clock.seconds()
        d = self.store.run_interaction(_last, room, None, self._lines)

        def read(rows: list[tuple[Any, ...]]) -> None:
            newest = float(rows[-1][0]) if rows else float("-inf")
            # Those queued when the read began, those being written, and
            # those queued since (in order, each once).
            since = [e for name, e in self._batch + self._queue if name == room]
            later = dict.fromkeys(
                event for event in queued + since if event.time > newest
            )
            lines: list[Scrollback | Event] = [_scrollback(row, room) for row in rows]
            lines += later
            self._older[room] = deque(lines, maxlen=self._lines)
            self._older.move_to_end(room)
            self._read_at[room] = now
            while len(self._older) > CACHED_ROOMS:
                del self._read_at[self._older.popitem(last=False)[0]]

        def failed(failure: Failure) -> None:
            log.failure(
                "the scrollback of {room} could not be read",
                failure,
                room=shown(room),
            )

        def done(result: object) -> None:
            self._reading.pop(room, None)

        return d.addCallbacks(read, failed).addBoth(done)

    def _joined(
        self, older: "deque[Scrollback | Event]", live: list[Scrollback]
    ) -> list[Scrollback]:
        """The lines of C{older} said before those of C{live}, then C{live}.

        The events L{record} added to C{older} become L{Scrollback}s here,
        once: each is stamped for the first newcomer, then kept.
        """
        if any(line.__class__ is Event for line in older):
            made = [
                Scrollback(line.time, line) if line.__class__ is Event else line
                for line in older
            ]
            older.clear()
            older.extend(made)
        lines: list[Scrollback] = list(older)  # type: ignore[arg-type]
        if live:
            before = live[0].event.time
            lines = [line for line in lines if line.event.time < before] + live
        return lines[-self._lines :]

    def last(self, room: str, count: int) -> Deferred[list[Scrollback]]:
        """The last C{count} lines of C{room}, oldest first (those queued too)."""
        self.paging += 1
        return (
            self.flush()
            .addCallback(lambda _: self.store.run_interaction(_last, room, None, count))
            .addBoth(self._paged)
            .addCallback(lambda rows: [_scrollback(row, room) for row in rows])
        )

    def _paged(self, result: object) -> object:
        self.paging -= 1
        return result

    def since(
        self, room: str, since: float, skip: int, count: int
    ) -> Deferred[list[Scrollback]]:
        """C{count} lines of C{room} from C{since} on, after the first C{skip}."""
        self.paging += 1
        return (
            self.flush()
            .addCallback(
                lambda _: self.store.run_interaction(_since, room, since, skip, count)
            )
            .addBoth(self._paged)
            .addCallback(lambda rows: [_scrollback(row, room) for row in rows])
        )

    def search(
        self, room: str, words: Sequence[str], count: int
    ) -> Deferred[list[Scrollback]]:
        """The last C{count} lines of C{room} with all of C{words}, oldest first."""
        self.searching += 1

        def done(result: object) -> object:
            self.searching -= 1
            return result

        return (
            self.flush()
            .addCallback(
                lambda _: self.store.run_interaction(_search, room, list(words), count)
            )
            .addBoth(done)
            .addCallback(lambda rows: [_scrollback(row, room) for row in rows])
        )
