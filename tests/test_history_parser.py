"""Property tests for the parser of /history's arguments."""

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from chatservice.errors import ChatError, UsageError
from chatservice.historycommands import (
    HISTORY_DEFAULT,
    HISTORY_MAX,
    Last,
    Since,
    format_moment,
    parse_history,
    parse_moment,
)
from chatservice.store import memory_store
from chatservice.store.history import fts5_query, write_rows

minutes = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59)
).map(lambda moment: moment.replace(second=0, microsecond=0, tzinfo=UTC))


@given(st.text())
def test_any_text_is_read_or_refused_with_a_chat_error(text: str) -> None:
    """Whatever is typed, the parser gives a request or a ChatError, nothing else."""
    try:
        request = parse_history(text)
    except ChatError:
        return
    assert isinstance(request, Last | Since)


@given(
    st.integers(min_value=1, max_value=HISTORY_MAX), st.sampled_from(["", " ", "  "])
)
def test_a_count(count: int, space: str) -> None:
    """N from 1 to the maximum asks for the last N lines, spaces around ignored."""
    assert parse_history(f"{space}{count}{space}") == Last(count)


@given(st.integers(min_value=HISTORY_MAX + 1, max_value=999_999))
def test_too_many(count: int) -> None:
    """A count above the maximum is refused, saying what the maximum is."""
    try:
        parse_history(str(count))
    except UsageError:
        raise AssertionError("a number too big is not a usage error") from None
    except ChatError as error:
        assert f"at most {HISTORY_MAX} lines" in str(error)
    else:
        raise AssertionError("accepted")


def test_nothing_is_the_default() -> None:
    """/history alone asks for the default number of lines."""
    assert parse_history("") == Last(HISTORY_DEFAULT)


@given(minutes, st.sampled_from(["since", "SINCE", "Since"]))
def test_since_a_minute(moment: datetime, word: str) -> None:
    """A since YYYY-MM-DDTHH:MM is that minute, in UTC, on page 1."""
    text = moment.isoformat(timespec="minutes")[:16]  # %Y: no 0 before 999
    assert parse_history(f"{word} {text}") == Since(moment.timestamp(), text, 1)


@given(minutes, st.integers(min_value=1, max_value=999_999))
def test_since_a_day_with_a_page(moment: datetime, page: int) -> None:
    """A since YYYY-MM-DD PAGE is that day's midnight, UTC, on that page."""
    text = moment.date().isoformat()
    midnight = moment.replace(hour=0, minute=0).timestamp()
    assert parse_history(f"since {text} {page}") == Since(midnight, text, page)


@given(minutes)
def test_moments_round_trip(moment: datetime) -> None:
    """A moment formatted for a 'more' hint reads back as the same moment.

    From year 1: strftime's %Y wrote 999 for 0999, and the hint was refused.
    """
    assert parse_moment(format_moment(moment.timestamp())) == moment.timestamp()


@given(
    st.integers(min_value=1000, max_value=9999),
    st.integers(min_value=0, max_value=99),
    st.integers(min_value=0, max_value=99),
)
def test_impossible_dates_are_refused(year: int, month: int, day: int) -> None:
    """A well-formed date that does not exist is refused, not guessed."""
    text = f"{year:04d}-{month:02d}-{day:02d}"
    try:
        exists = datetime(year, month, day)
    except ValueError:
        exists = None
    try:
        request = parse_history(f"since {text}")
    except ChatError as error:
        assert exists is None
        assert str(error).startswith(f"there is no such moment as {text}")
    else:
        assert exists is not None and isinstance(request, Since)


@given(
    st.lists(
        st.text(st.characters(blacklist_categories=["Cs", "Zs", "Cc"]), min_size=1),
        min_size=1,
        max_size=8,
    )
)
def test_any_search_words_are_a_valid_fts5_query(words: list[str]) -> None:
    """Whatever words are searched for, FTS5 takes them literally, never as syntax."""
    store = memory_store()
    store.run_interaction(
        write_rows, [("#lobby", 1.0, "chat", "a", "a", " ".join(words))]
    )
    found = store.run_interaction(
        lambda cursor: cursor.execute(
            "SELECT count(*) FROM history_words WHERE history_words MATCH ?",
            (fts5_query(words),),
        ).fetchall()
    )
    # Each word is found in the line that has them all (a word of only
    # punctuation, which the index does not keep, matches nothing).
    if all(any(c.isalnum() for c in word) for word in words):
        assert found.result == [(1,)]
    else:
        assert found.result in ([(0,)], [(1,)])
