"""Long answers in pages: C{/who}, C{/users}, C{/rooms}, C{/bans}.

An answer is bounded in size (see L{chatservice.interfaces.IChatSession.answer}):
a long list is shown a page at a time, and says how to ask for the next.
"""

from collections.abc import Sequence
from typing import TypeVar

from .errors import ChatError, UsageError


def is_page_number(word: str) -> bool:
    """Whether C{word} is a page number: 1 to 6 ASCII digits."""
    return 0 < len(word) <= 6 and word.isascii() and word.isdigit()


def page_number(args: Sequence[str], usage: str) -> int:
    """The page number asked for (1 when none), or a usage error."""
    if not args:
        return 1
    if len(args) > 1 or not is_page_number(args[0]) or int(args[0]) == 0:
        raise UsageError(usage)
    return int(args[0])


Item = TypeVar("Item")


def paged(
    items: Sequence[Item], page: int, size: int, command: str
) -> tuple[Sequence[Item], str, list[str]]:
    """Page C{page} of C{items}, C{size} to a page.

    Returns the slice, a C{", page N"} label for pages after the first, and
    the notes that say how to see the rest (none on the last page).
    """
    pages = max(1, -(-len(items) // size))
    if page > pages:
        raise ChatError(
            f"there is no page {page}: {command} has "
            f"{pages} page{'s' if pages != 1 else ''}"
        )
    start = (page - 1) * size
    shown = items[start : start + size]
    rest = len(items) - start - len(shown)
    note = (
        [f"\N{HORIZONTAL ELLIPSIS} and {rest} more; {command} {page + 1}"]
        if rest
        else []
    )
    return shown, (f", page {page}" if page > 1 else ""), note
