"""Room history in the store: batched writes, scrollback, /history, /search.

Unit tests: an in-memory SQLite store (chatservice.testing.memory_store)
and a fake clock; a "restart" is a second factory on the same store.
"""

import calendar
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from test_irc import irc_registered

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent

from chatservice import events
from chatservice.config import Settings
from chatservice.factory import ChatFactory
from chatservice.store import Store
from chatservice.store import history as history_module
from chatservice.store.history import (
    CACHE_SECONDS,
    FLUSH_INTERVAL,
    PRUNE_INTERVAL,
    SCROLLBACK_WAIT,
    History,
    _prune,
    _search,
    write_rows,
)
from chatservice.store.migrations import MIGRATIONS
from chatservice.testing import FakeConnection, frame_user, memory_store, register

#: 2026-12-06 09:30:00 UTC: "now" in these tests.
NOW = float(calendar.timegm((2026, 12, 6, 9, 30, 0)))
DAY = 86400.0


def at(text: str) -> float:
    """C{YYYY-MM-DD HH:MM} (UTC) as seconds since the epoch."""
    return float(calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M")))


def server(store: Store, clock: Clock, **settings: Any) -> ChatFactory:
    """A server on C{store}, as after a (re)start, with the clock at C{NOW}."""
    if not clock.seconds():
        clock.advance(NOW)
    return ChatFactory(Settings(**settings), clock=clock, store=store)


def stored(store: Store) -> list[tuple[Any, ...]]:
    """What the store's history holds, oldest first."""
    d = store.run_interaction(
        lambda cursor: cursor.execute(
            "SELECT room, kind, nick, sender, text FROM history ORDER BY at, id"
        ).fetchall()
    )
    return d.result  # type: ignore[no-any-return]


def put(store: Store, *lines: tuple[str, str, str, str]) -> None:
    """Store C{(room, when, nick, text)} chat lines, as a server before did."""
    rows = [
        (room, at(when), "chat", nick, nick.lower(), text)
        for room, when, nick, text in lines
    ]
    store.run_interaction(write_rows, rows).result  # noqa: B018 (raises if it failed)


@pytest.fixture
def store() -> Store:
    return memory_store()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    """A fake clock that events take their time from too (at NOW, once started)."""
    clock = Clock()
    monkeypatch.setattr(events, "_time", clock)
    clock.time = clock.seconds  # type: ignore[attr-defined]
    return clock


def test_lines_are_written_in_one_batch_after_a_second(
    store: Store, clock: Clock
) -> None:
    """Lines said are written together, one second after the first, not before."""
    factory = server(store, clock)
    alice = register(factory, "alice")
    writes = []
    run = store.run_interaction
    store.run_interaction = lambda *a: writes.append(a) or run(*a)  # type: ignore[method-assign]
    alice.enter("one", "/me two", "three")
    clock.advance(FLUSH_INTERVAL - 0.01)
    assert writes == []
    clock.advance(0.01)
    assert len(writes) == 1
    assert stored(store) == [
        ("#lobby", "chat", "alice", "alice", "one"),
        ("#lobby", "action", "alice", "alice", "two"),
        ("#lobby", "chat", "alice", "alice", "three"),
    ]


def test_private_messages_and_notices_are_not_stored(
    store: Store, clock: Clock
) -> None:
    """Only chat lines and actions said in rooms are stored."""
    factory = server(store, clock)
    alice = register(factory, "alice")
    register(factory, "bob")
    alice.enter("/msg bob secret", "/topic tea", "/join #x", "/away lunch")
    clock.advance(FLUSH_INTERVAL)
    assert stored(store) == []


def test_scrollback_after_a_restart(store: Store, clock: Clock) -> None:
    """After a restart, a newcomer sees the room's last lines, read from the store."""
    put(
        store,
        ("#lobby", "2026-12-06 08:00", "bob", "good morning"),
        ("#lobby", "2026-12-06 08:05", "alice", "hi bob"),
        ("#tea", "2026-12-06 08:06", "carol", "elsewhere"),
    )
    carol = FakeConnection(server(store, clock))
    carol.enter("carol")
    assert carol.lines()[-5:-1] == [
        "*** Scrollback of #lobby, 2 lines, times in UTC:",
        "[08:00] <bob> good morning",
        "[08:05] <alice> hi bob",
        "*** End of scrollback of #lobby.",
    ]


def test_older_lines_are_dated(store: Store, clock: Clock) -> None:
    """A line said before today shows its date; today's keep their format."""
    put(
        store,
        ("#lobby", "2026-11-30 23:59", "bob", "last month"),
        ("#lobby", "2026-12-05 23:59", "bob", "yesterday"),
        ("#lobby", "2026-12-06 00:00", "bob", "today"),
    )
    carol = FakeConnection(server(store, clock))
    carol.send(b"carol\r\n")
    assert (
        b"*** Scrollback of #lobby, 3 lines, times in UTC:\r\n"
        b"[2026-11-30 23:59] <bob> last month\r\n"
        b"[2026-12-05 23:59] <bob> yesterday\r\n"
        b"[00:00] <bob> today\r\n"
        b"*** End of scrollback of #lobby.\r\n*** resume token: "
    ) in carol.output()


def test_scrollback_keeps_its_length(store: Store, clock: Clock) -> None:
    """Older lines from the store and newer ones in memory make --history lines."""
    put(
        store, *[("#lobby", f"2026-12-06 08:0{n}", "bob", f"old {n}") for n in range(5)]
    )
    factory = server(store, clock, history=3)
    alice = register(factory, "alice")
    alice.enter("new")
    carol = FakeConnection(factory)
    carol.enter("carol")
    assert carol.lines()[-6:-1] == [
        "*** Scrollback of #lobby, 3 lines, times in UTC:",
        "[08:03] <bob> old 3",
        "[08:04] <bob> old 4",
        "[09:30] <alice> new",
        "*** End of scrollback of #lobby.",
    ]


def test_registrations_do_not_each_read_the_store(store: Store, clock: Clock) -> None:
    """The scrollback read from the store is kept: one read, not one per newcomer."""
    put(store, ("#lobby", "2026-12-06 08:00", "bob", "hello"))
    factory = server(store, clock)
    reads = []
    run = store.run_interaction
    store.run_interaction = lambda *a: reads.append(a) or run(*a)  # type: ignore[method-assign]
    for n in range(5):
        user = FakeConnection(factory)
        user.enter(f"user{n}")
        assert "[08:00] <bob> hello" in user.lines()
    assert len(reads) == 1


def test_a_room_made_again_shows_its_lines(store: Store, clock: Clock) -> None:
    """A room that emptied and was made again shows what was said before."""
    factory = server(store, clock)
    alice = register(factory, "alice")
    alice.enter("/join #tea", "first", "/join #lobby")
    clock.advance(60)
    alice.output()
    alice.enter("/join #tea")
    assert alice.lines()[-3:] == [
        "*** Scrollback of #tea, 1 line, times in UTC:",
        "[09:30] <alice> first",
        "*** End of scrollback of #tea.",
    ]


def test_the_last_second_is_written_at_stop(store: Store, clock: Clock) -> None:
    """Stopping the history writes what was queued, at once."""
    factory = server(store, clock)
    register(factory, "alice").enter("last words")
    factory.history.stop()
    assert stored(store) == [("#lobby", "chat", "alice", "alice", "last words")]


def test_old_lines_are_pruned_at_start_and_daily(store: Store, clock: Clock) -> None:
    """Lines older than --history-days go at start, then once a day."""
    put(
        store,
        ("#lobby", "2026-11-05 09:29", "bob", "31 days ago"),
        ("#lobby", "2026-11-06 10:00", "bob", "not yet 30"),
    )
    factory = server(store, clock, history_days=30)
    factory.history.start()
    assert [row[4] for row in stored(store)] == ["not yet 30"]
    clock.advance(PRUNE_INTERVAL)
    assert stored(store) == []
    factory.history.stop()


def test_pruning_is_done_in_batches(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pruning deletes the oldest lines a batch per transaction, and logs once."""
    monkeypatch.setattr(history_module, "PRUNE_BATCH", 10, raising=False)
    put(store, *[("#lobby", f"2026-10-01 10:{i:02}", "bob", f"{i}") for i in range(25)])
    put(store, ("#lobby", "2026-12-06 09:00", "bob", "today"))
    factory = server(store, clock, history_days=30)
    deleted = []
    run = store.run_interaction

    def counted(function: Any, *args: object) -> Deferred[Any]:
        d = run(function, *args)
        if function.__name__ == "_prune":
            d.addCallback(lambda count: (deleted.append(count), count)[1])
        return d

    monkeypatch.setattr(store, "run_interaction", counted)
    assert factory.history.prune().result == 25
    assert deleted == [10, 10, 5]
    assert [row[4] for row in stored(store)] == ["today"]


# /history ------------------------------------------------------------------


def test_history_last_lines(store: Store, clock: Clock) -> None:
    """/history N shows the room's last N lines, the older ones dated."""
    put(
        store,
        ("#lobby", "2026-12-04 10:00", "bob", "one"),
        ("#lobby", "2026-12-05 10:00", "bob", "two"),
    )
    alice = register(server(store, clock), "alice")
    alice.enter("three")
    alice.enter("/history 2")
    assert alice.lines() == [
        "*** History of #lobby: the last 2 lines, times in UTC:",
        "[2026-12-05 10:00] <bob> two",
        "[09:30] <alice> three",
        "*** End of history of #lobby; /history since YYYY-MM-DD shows the lines "
        "from a day on.",
    ]


def test_history_of_an_empty_room(store: Store, clock: Clock) -> None:
    """/history in a room where nothing was said says so."""
    alice = register(server(store, clock), "alice")
    alice.enter("/join #new", "/history")
    assert alice.lines()[-1] == "*** #new has no history."


def test_history_since_pages(store: Store, clock: Clock) -> None:
    """/history since DATE shows 100 lines a page, and says how to see the next."""
    put(
        store,
        *[
            ("#lobby", f"2026-12-05 {n // 60:02d}:{n % 60:02d}", "bob", f"line {n}")
            for n in range(150)
        ],
    )
    alice = register(server(store, clock), "alice")
    alice.enter("/history since 2026-12-05")
    first = alice.lines()
    assert (
        first[0] == "*** History of #lobby since 2026-12-05: 100 lines, times in UTC:"
    )
    assert first[1] == "[2026-12-05 00:00] <bob> line 0"
    assert first[100] == "[2026-12-05 01:39] <bob> line 99"
    assert first[101] == "*** \N{HORIZONTAL ELLIPSIS} more: /history since 2026-12-05 2"
    alice.enter("/history since 2026-12-05 2")
    second = alice.lines()
    assert second[0] == (
        "*** History of #lobby since 2026-12-05, page 2: 50 lines, times in UTC:"
    )
    assert second[1] == "[2026-12-05 01:40] <bob> line 100"
    assert second[-1] == "*** End of history of #lobby."
    alice.enter("/history since 2026-12-05T02:29")
    assert alice.lines() == [
        "*** History of #lobby since 2026-12-05T02:29: 1 line, times in UTC:",
        "[2026-12-05 02:29] <bob> line 149",
        "*** End of history of #lobby.",
    ]
    alice.enter("/history since 2026-12-05 3")
    assert alice.lines() == ["*** There is no page 3 of /history since 2026-12-05."]
    alice.enter("/history since 2026-12-06")
    assert alice.lines() == ["*** No lines in #lobby since 2026-12-06."]


@pytest.mark.parametrize(
    ("args", "error"),
    [
        ("0", "!!! usage: /history [N | since YYYY-MM-DD[THH:MM] [PAGE]]"),
        ("-1", "!!! usage: /history [N | since YYYY-MM-DD[THH:MM] [PAGE]]"),
        ("lots", "!!! usage: /history [N | since YYYY-MM-DD[THH:MM] [PAGE]]"),
        ("since", "!!! usage: /history [N | since YYYY-MM-DD[THH:MM] [PAGE]]"),
        (
            "since 5/12/2026",
            "!!! usage: /history [N | since YYYY-MM-DD[THH:MM] [PAGE]]",
        ),
        (
            "since 2026-12-05 0",
            "!!! usage: /history [N | since YYYY-MM-DD[THH:MM] [PAGE]]",
        ),
        (
            "101",
            "!!! /history shows at most 100 lines at a time; /history since "
            "YYYY-MM-DD shows more, page by page",
        ),
        (
            "since 2026-02-30",
            "!!! there is no such moment as 2026-02-30 (YYYY-MM-DD or "
            "YYYY-MM-DDTHH:MM, in UTC)",
        ),
        (
            "since 2026-12-05T24:00",
            "!!! there is no such moment as 2026-12-05T24:00 (YYYY-MM-DD or "
            "YYYY-MM-DDTHH:MM, in UTC)",
        ),
    ],
)
def test_history_bad_arguments(
    store: Store, clock: Clock, args: str, error: str
) -> None:
    """/history with arguments it cannot read says what it takes."""
    alice = register(server(store, clock), "alice")
    alice.enter(f"/history {args}")
    assert alice.lines() == [error]


def test_history_is_rate_limited_per_address(store: Store, clock: Clock) -> None:
    """An address may ask /history 5 times at once, then once a second."""
    factory = server(store, clock)
    alice = register(factory, "alice", host="203.0.113.7")
    again = register(factory, "alicia", host="203.0.113.7")
    alice.lines()
    alice.enter(*["/history"] * 3)
    again.enter(*["/history"] * 3)
    refused = (
        "!!! too many /history requests (at most 5 at once, then 1 a second); "
        "try again in 1 second"
    )
    assert alice.lines() == ["*** #lobby has no history."] * 3
    assert again.lines()[-3:] == ["*** #lobby has no history."] * 2 + [refused]
    clock.advance(1)
    again.enter("/history")
    assert again.lines() == ["*** #lobby has no history."]


def test_histories_at_once_are_bounded(store: Store, clock: Clock) -> None:
    """At most 4 /history requests wait for the store at once, whoever asks."""
    factory = server(store, clock)
    users = [register(factory, f"u{n}", host=f"192.0.2.{n}") for n in range(5)]
    for user in users:
        user.lines()
    run = store.run_interaction
    store.run_interaction = lambda *a: Deferred()  # type: ignore[method-assign]
    for user in users:
        user.enter("/history")
    assert users[4].lines() == [
        "!!! the server is busy with other /history requests; try again in a "
        "few seconds"
    ]
    store.run_interaction = run  # type: ignore[method-assign]
    clock.advance(factory.settings.command_timeout)
    users[4].enter("/history")
    assert users[4].lines() == ["*** #lobby has no history."]


# /search -------------------------------------------------------------------


def test_search_finds_lines_with_every_word(store: Store, clock: Clock) -> None:
    """/search shows the room's lines that have all the words, oldest first."""
    put(
        store,
        ("#lobby", "2026-12-05 10:00", "bob", "the Twisted reactor"),
        ("#lobby", "2026-12-05 11:00", "bob", "a reactor"),
        ("#tea", "2026-12-05 12:00", "bob", "twisted reactor elsewhere"),
        ("#lobby", "2026-12-06 09:00", "carol", "reactor? twisted, yes"),
    )
    alice = register(server(store, clock), "alice")
    alice.enter("/search reactor TWISTED")
    assert alice.lines() == [
        "*** Lines of #lobby with reactor TWISTED: 2 lines (all), times in UTC:",
        "[2026-12-05 10:00] <bob> the Twisted reactor",
        "[09:00] <carol> reactor? twisted, yes",
        "*** End of search.",
    ]
    alice.enter("/search teapot")
    assert alice.lines() == ["*** No line in #lobby has all of: teapot"]


@pytest.mark.parametrize(
    "words",
    ['"', 'a" OR "b', "NEAR(a b)", "*", "a*", "text:secret", "^a", "-a", "(", "'"],
)
def test_search_takes_any_input_literally(
    store: Store, clock: Clock, words: str
) -> None:
    """Words that are FTS5 query syntax are searched for, never an error."""
    put(store, ("#lobby", "2026-12-06 09:00", "bob", "nothing to see"))
    alice = register(server(store, clock), "alice")
    alice.enter(f"/search {words}")
    assert alice.lines() == [f"*** No line in #lobby has all of: {words}"]


def test_search_is_rate_limited(store: Store, clock: Clock) -> None:
    """An address may search 3 times at once, then once every 5 seconds."""
    alice = register(server(store, clock), "alice")
    alice.enter(*["/search tea"] * 4)
    assert alice.lines() == ["*** No line in #lobby has all of: tea"] * 3 + [
        "!!! too many searches (at most 3 at once, then one every 5 seconds); "
        "try again in 5 seconds"
    ]
    clock.advance(5)
    alice.enter("/search tea")
    assert alice.lines() == ["*** No line in #lobby has all of: tea"]


def test_search_costs_about_a_read_of_the_room(store: Store) -> None:
    """A search of 8 words common in the room costs about one read of its lines.

    Before, SQLite asked the full-text index once for each line of the
    room: 1.4 s here (1,000 times the read), 21 s in a room of 180,000
    lines, with the store's one thread held all that time.
    """
    rows = [
        (
            "#lobby",
            float(i),
            "chat",
            "bob",
            "bob",
            "alpha beta gamma delta" if i % 2 else "eta zeta mu nu",
        )
        for i in range(4000)
    ]
    store.run_interaction(write_rows, rows).result  # noqa: B018 (raises if it failed)

    def read(cursor: Any) -> object:
        return cursor.execute(
            "SELECT at, kind, nick, text FROM history WHERE room = '#lobby'"
        ).fetchall()

    def cost(interaction: Any, *args: object) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            store.run_interaction(interaction, *args).result  # noqa: B018
            best = min(best, time.perf_counter() - start)
        return best

    words = "alpha beta gamma delta eta zeta mu nu".split()
    assert store.run_interaction(_search, "#lobby", words, 20).result == []
    assert cost(_search, "#lobby", words, 20) < 20 * cost(read)


def test_search_limit_is_per_address(store: Store, clock: Clock) -> None:
    """Reconnecting, or another nickname, gives an address no new searches."""
    factory = server(store, clock)
    alice = register(factory, "alice", host="203.0.113.7")
    alice.enter(*["/search tea"] * 3)
    alice.lines()
    alice.enter("/quit")
    again = register(factory, "alicia", host="203.0.113.7")
    other = register(factory, "bob", host="198.51.100.1")
    again.lines()
    again.enter("/search tea")
    other.enter("/search tea")
    assert again.lines() == [
        "!!! too many searches (at most 3 at once, then one every 5 seconds); "
        "try again in 5 seconds"
    ]
    assert other.lines() == ["*** No line in #lobby has all of: tea"]


def test_searches_at_once_are_bounded(store: Store, clock: Clock) -> None:
    """At most 2 searches wait for the store at once, whoever makes them."""
    factory = server(store, clock)
    users = [register(factory, f"u{n}", host=f"192.0.2.{n}") for n in range(3)]
    for user in users:
        user.lines()
    run = store.run_interaction
    answers: list[Deferred[object]] = []

    def slow(*args: object) -> Deferred[object]:
        answers.append(Deferred().addCallback(lambda _: run(*args)))
        return answers[-1]

    store.run_interaction = slow  # type: ignore[method-assign]
    for user in users:
        user.enter("/search tea")
    assert users[2].lines() == [
        "!!! the server is busy with other searches; try again in a few seconds"
    ]
    store.run_interaction = run  # type: ignore[method-assign]
    for answer in answers:
        answer.callback(None)
    users[2].enter("/search tea")
    assert [user.lines() for user in users] == [
        ["*** No line in #lobby has all of: tea"]
    ] * 3


def test_search_bounds(store: Store, clock: Clock) -> None:
    """/search needs words, at most 8 of at most 64 characters."""
    alice = register(server(store, clock), "alice")
    alice.enter("/search", "/search " + "a " * 9, "/search " + "a" * 65)
    assert alice.lines() == [
        "!!! usage: /search WORDS",
        "!!! /search takes at most 8 words",
        "!!! /search takes words of at most 64 characters",
    ]


# Other front ends ----------------------------------------------------------


def test_history_on_irc(store: Store, clock: Clock) -> None:
    """An IRC user's HISTORY is /history, its answers NOTICEs."""
    put(store, ("#lobby", "2026-12-05 10:00", "bob", "hello"))
    alice = irc_registered(server(store, clock), "alice")
    alice.enter("HISTORY 1")
    assert alice.lines() == [
        ":chatservice NOTICE alice :History of #lobby: the last 1 line, times in UTC:",
        ":chatservice NOTICE alice :[2026-12-05 10:00] <bob> hello",
        ":chatservice NOTICE alice :End of history of #lobby; /history since "
        "YYYY-MM-DD shows the lines from a day on.",
    ]


# On the real databases, through the pool -----------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def real_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An opened store on a SQLite file, or on a new PostgreSQL database."""
    if request.param == "sqlite":
        url = f"sqlite:{tmp_path / 'chat.db'}"
    else:
        url = request.getfixturevalue("postgres")
    opened = Store(url)
    opened.open()
    yield opened
    opened.close()


@pytest_twisted.ensureDeferred
async def test_history_on_each_database(real_store: Store) -> None:
    """Writing, /history's queries, /search and pruning work on both databases."""
    from twisted.internet import reactor

    history = History(real_store, reactor, 50, 30)
    now = time.time()
    said = [
        events.Event("chat", text, nick=nick, room=room, when=now - age)
        for room, nick, text, age in [
            ("#lobby", "Bob", "the Twisted reactor", 40 * DAY),
            ("#lobby", "bob", "a reactor, 100% twisted's", 3 * DAY),
            ("#tea", "carol", "twisted reactor elsewhere", 2 * DAY),
            ("#lobby", "carol", "no match here", DAY),
            ("#lobby", "alice", 'quotes " and ? and %s', 60.0),
        ]
    ]
    for event in said:
        history.record(event.room or "", event)
    await history.flush()

    def texts(lines: list[Any]) -> list[str]:
        return [line.event.text for line in lines]

    assert texts(await history.last("#lobby", 2)) == [
        "no match here",
        'quotes " and ? and %s',
    ]
    assert texts(await history.since("#lobby", now - 3.5 * DAY, 1, 2)) == [
        "no match here",
        'quotes " and ? and %s',
    ]
    assert texts(await history.search("#lobby", ["TWISTED", "reactor"], 20)) == [
        "the Twisted reactor",
        "a reactor, 100% twisted's",
    ]
    assert texts(await history.search("#lobby", ['"', "OR", "*"], 20)) == []
    assert await history.prune() == 1
    assert texts(await history.last("#lobby", 50))[0] == "a reactor, 100% twisted's"
    await history.stop()


def test_a_hanging_store_bounds_the_queue(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a write hangs, at most QUEUED_MAX lines wait; the oldest are dropped."""
    from chatservice.store import history as module

    monkeypatch.setattr(module, "QUEUED_MAX", 3)
    factory = server(store, clock)
    alice = register(factory, "alice")
    hanging: Deferred[object] = Deferred()
    run = store.run_interaction
    store.run_interaction = lambda *a: hanging  # type: ignore[method-assign]
    alice.enter("first")
    clock.advance(FLUSH_INTERVAL)  # its write hangs
    alice.enter(*[f"line {n}" for n in range(5)])
    clock.advance(FLUSH_INTERVAL)
    store.run_interaction = run  # type: ignore[method-assign]
    hanging.errback(RuntimeError("the store went away"))
    clock.advance(FLUSH_INTERVAL)
    assert [row[4] for row in stored(store)] == ["line 2", "line 3", "line 4"]
    assert factory.history.lost == 1 + 2


def test_a_hanging_store_delays_a_join_two_seconds(store: Store, clock: Clock) -> None:
    """With the store hung, /join shows the room without older lines after 2 s.

    It failed after --command-timeout (30 s) before, leaving the user a
    member of the room it did not show: its events reached them.
    """
    factory = server(store, clock)
    alice = register(factory, "alice")
    bob = register(factory, "bob")
    alice.lines()
    store.run_interaction = lambda *a: Deferred()  # type: ignore[method-assign]
    alice.enter("/join #new")
    clock.advance(SCROLLBACK_WAIT)
    assert alice.lines() == [
        "*** You are now in #new. No topic is set.",
        "*** In #new (1): alice",
    ]
    bob.enter("hello #lobby")
    assert alice.lines() == []


def test_lines_said_while_the_store_is_down_are_written_when_it_is_back(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the store refuses writes (full, unreachable), lines wait, in order.

    The log has one traceback, then a line a minute, then says it is back.
    They were lost before, each second's batch with its traceback.
    """
    factory = server(store, clock)
    alice = register(factory, "alice")
    run = store.run_interaction

    def full(*args: object) -> Deferred[object]:
        return fail(sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(store, "run_interaction", full)
    with capturedLogs() as logged:
        for second in range(125):
            alice.enter(f"line {second}")
            clock.advance(FLUSH_INTERVAL)
        monkeypatch.setattr(store, "run_interaction", run)
        alice.enter("back")
        clock.advance(FLUSH_INTERVAL)
    assert [row[4] for row in stored(store)] == [
        *(f"line {second}" for second in range(125)),
        "back",
    ]
    logged = [e for e in logged if e["log_namespace"] == "chatservice.store.history"]
    assert [formatEvent(event) for event in logged] == [
        "the store could not write 1 line(s) of history; they are kept and "
        "written again every second",
        "the store still fails (database or disk is full): 61 line(s) of "
        "history waiting",
        "the store still fails (database or disk is full): 121 line(s) of "
        "history waiting",
        "the store is back: 126 line(s) of history written, 0 lost in all",
    ]
    assert [bool(event.get("log_failure")) for event in logged] == [
        True,
        False,
        False,
        False,
    ]


def test_reading_from_a_store_that_is_down(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/history and /search say the store is down, and log no traceback each."""
    alice = register(server(store, clock), "alice")

    def down(*args: object) -> Deferred[object]:
        return fail(sqlite3.OperationalError("unable to open database file"))

    monkeypatch.setattr(store, "run_interaction", down)
    with capturedLogs() as logged:
        alice.enter("/history", "/history since 2026-12-01", "/search tea")
    assert (
        alice.lines()
        == [
            "!!! the history of #lobby cannot be read now (the store is "
            "unavailable); try again later"
        ]
        * 3
    )
    assert [event for event in logged if event.get("log_failure")] == []


def test_a_join_that_times_out_leaves_the_user_in_one_room(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A /join cancelled by --command-timeout leaves its user in the new room only.

    They were left a member of both rooms, shown the old one, sent the
    events of the new one.
    """
    factory = server(store, clock)
    alice = register(factory, "alice")
    bob = register(factory, "bob")
    monkeypatch.setattr(factory.history, "scrollback", lambda *a: Deferred())
    alice.enter("/join #new")
    clock.advance(factory.settings.command_timeout)
    bob.enter("hello #lobby")
    alice.enter("/who")
    assert alice.lines()[-2:] == [
        "!!! /join failed: it took too long and was cancelled",
        "*** In #new (1): alice",
    ]


def test_a_hanging_store_bounds_the_queued_text(
    store: Store, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a write hangs, at most QUEUED_CHARS of text wait; the oldest go."""
    from chatservice.store import history as module

    monkeypatch.setattr(module, "QUEUED_CHARS", 250, raising=False)
    factory = server(store, clock)
    alice = register(factory, "alice")
    hanging: Deferred[object] = Deferred()
    run = store.run_interaction
    store.run_interaction = lambda *a: hanging  # type: ignore[method-assign]
    alice.enter("first")
    clock.advance(FLUSH_INTERVAL)  # its write hangs
    alice.enter(*[f"{n}" * 100 for n in range(5)])
    clock.advance(FLUSH_INTERVAL)
    store.run_interaction = run  # type: ignore[method-assign]
    hanging.errback(RuntimeError("the store went away"))
    clock.advance(FLUSH_INTERVAL)
    assert [row[4][0] for row in stored(store)] == ["3", "4"]
    assert factory.history.lost == 1 + 3


def test_history_on_frames(store: Store, clock: Clock) -> None:
    """A frame client's /history gets the lines as chat events marked as history."""
    put(store, ("#lobby", "2026-12-05 10:00", "bob", "hello"))
    alice = frame_user(server(store, clock), "alice")
    alice.say("/history 1")
    frames = alice.frames()
    assert [body for _, body in frames][1] == {
        "type": "chat",
        "room": "#lobby",
        "nick": "bob",
        "text": "hello",
        "history": True,
    }
    assert [body.get("text") for _, body in frames] == [
        "History of #lobby: the last 1 line, times in UTC:",
        "hello",
        "End of history of #lobby; /history since YYYY-MM-DD shows the lines "
        "from a day on.",
    ]


def test_lines_written_elsewhere_are_read_again(store: Store, clock: Clock) -> None:
    """What another node wrote reaches the scrollback within CACHE_SECONDS."""
    factory = server(store, clock)
    register(factory, "alice")  # the lobby's scrollback is read, and kept
    put(store, ("#lobby", "2026-12-06 09:29", "bob", "from another node"))
    carol = FakeConnection(factory)
    carol.enter("carol")
    assert "[09:29] <bob> from another node" not in carol.lines()
    clock.advance(CACHE_SECONDS)
    dave = FakeConnection(factory)
    dave.enter("dave")
    assert "[09:29] <bob> from another node" in dave.lines()


@pytest_twisted.ensureDeferred
async def test_a_database_indexed_by_trigger_is_searched_and_pruned_after_migration_3(
    tmp_path: Path,
) -> None:
    """Lines written before migration 3 (indexed by a trigger) and after are found and pruned."""
    url = f"sqlite:{tmp_path / 'chat.db'}"
    old = Store(url, migrations=MIGRATIONS[:2])
    old.open()
    await old.run_interaction(
        lambda cursor: cursor.execute(
            "INSERT INTO history (room, at, kind, nick, sender, text) "
            "VALUES ('#lobby', 1.0, 'chat', 'bob', 'bob', 'apple before')"
        )
    )
    old.close()
    new = Store(url)
    new.open()
    try:
        rows = [("#lobby", 2.0, "chat", "bob", "bob", "apple after")]
        await new.run_interaction(write_rows, rows)
        found = await new.run_interaction(_search, "#lobby", ["apple"], 10)
        assert sorted(row[-1] for row in found) == ["apple after", "apple before"]
        assert await new.run_interaction(_prune, 3.0, 10) == 2
        assert await new.run_interaction(_search, "#lobby", ["apple"], 10) == []
    finally:
        new.close()


@pytest_twisted.ensureDeferred
async def test_lines_indexed_before_migration_4_are_searched_and_pruned_after_it(
    tmp_path: Path,
) -> None:
    """A database of migration 3 keeps its lines searchable, and prunable, once upgraded."""
    url = f"sqlite:{tmp_path / 'chat.db'}"
    old = Store(url, migrations=MIGRATIONS[:3])
    old.open()
    before = [
        ("#lobby", float(n), "chat", "bob", "bob", f"apple before {n}")
        for n in range(1, 4)
    ]
    await old.run_interaction(write_rows, before)
    old.close()
    new = Store(url)
    new.open()
    try:
        after = [("#lobby", 10.0, "chat", "bob", "bob", "apple after")]
        await new.run_interaction(write_rows, after)
        found = await new.run_interaction(_search, "#lobby", ["apple"], 10)
        assert [row[-1] for row in found] == [
            "apple before 1",
            "apple before 2",
            "apple before 3",
            "apple after",
        ]
        assert await new.run_interaction(_prune, 3.0, 10) == 2
        found = await new.run_interaction(_search, "#lobby", ["apple"], 10)
        assert [row[-1] for row in found] == ["apple before 3", "apple after"]

        def checked(cursor: Any) -> None:
            # FTS5 raises if its index and the lines it indexes disagree.
            cursor.execute(
                "INSERT INTO history_words (history_words) VALUES ('integrity-check')"
            )

        await new.run_interaction(checked)
    finally:
        new.close()


@pytest_twisted.ensureDeferred
async def test_pruning_finds_every_old_line_in_any_order(real_store: Store) -> None:
    """Pruning deletes exactly the lines older than the limit, in any room and order."""
    ats = [50.0, 5.0, 40.0, 1.0, 60.0, 7.0, 30.0, 2.0, 9.0]
    rooms = ["#b", "#a", "#c", "#b", "#a", "#c", "#b", "#a", "#d"]
    rows = [
        (room, at, "chat", "bob", "bob", f"line at {at:g}")
        for room, at in zip(rooms, ats, strict=True)
    ]
    await real_store.run_interaction(write_rows, rows)
    deleted = []
    while not deleted or deleted[-1] == 2:
        deleted.append(await real_store.run_interaction(_prune, 10.0, 2))
    assert sum(deleted) == 5
    left = await real_store.run_interaction(
        lambda cursor: cursor.execute(
            "SELECT room, at FROM history ORDER BY at"
        ).fetchall()
    )
    assert [(room, float(at)) for room, at in left] == [
        ("#b", 30.0),
        ("#c", 40.0),
        ("#b", 50.0),
        ("#a", 60.0),
    ]
    found = await real_store.run_interaction(_search, "#b", ["line"], 10)
    assert [row[-1] for row in found] == ["line at 30", "line at 50"]
