"""A message filter that refuses lines written mostly in capital letters.

A line with at least C{MIN_LETTERS} letters, more than the allowed share
of them capitals, is refused and the sender told why.  The share is a
percentage set by the environment variable C{CHATSERVICE_MAX_CAPS}
(default 70), read when the server starts.
"""

import os

from twisted.plugin import IPlugin
from zope.interface import implementer

from chatservice.errors import ChatError
from chatservice.interfaces import IChatSession, IMessageFilter

MIN_LETTERS = 8


@implementer(IPlugin, IMessageFilter)
class CapsFilter:
    """Refuses shouting."""

    name = "capsfilter"

    def __init__(self, max_percent: float) -> None:
        self.max_percent = max_percent

    def filter(self, session: IChatSession, room: str, text: str) -> str:
        """Pass C{text}, or refuse it when it is mostly capitals."""
        letters = [c for c in text if c.isalpha()]
        if len(letters) >= MIN_LETTERS:
            capitals = sum(c.isupper() for c in letters)
            if capitals * 100 > self.max_percent * len(letters):
                raise ChatError(
                    "please don't shout: your line was not sent "
                    f"(at most {self.max_percent:g}% capital letters)"
                )
        return text


capsfilter = CapsFilter(float(os.environ.get("CHATSERVICE_MAX_CAPS", "70")))
