"""/seen NICK: whether NICK is online here, or when they were last seen.

A third-party chatservice plugin built on session hooks: it watches
sessions come, rename and go (L{chatservice.hooks.SessionHooks}) and
answers C{/seen} from what it saw.  It remembers at most C{MAX_REMEMBERED}
nicknames that are gone (the environment variable
C{CHATSERVICE_SEEN_MAX}, default 10,000, read when the server starts,
about 300 bytes each): past that, the one seen longest ago is forgotten.
Nothing is kept across restarts, and on a cluster each node knows its own
users only.
"""

import os
from collections import OrderedDict
from dataclasses import dataclass
from weakref import WeakKeyDictionary

from chatservice import events
from chatservice.commands import command
from chatservice.errors import ChatError
from chatservice.hooks import SessionHooks
from chatservice.interfaces import IChatServer, IChatSession
from chatservice.reasons import CloseReason
from chatservice.text import fold

MAX_REMEMBERED = int(os.environ.get("CHATSERVICE_SEEN_MAX", "10000"))


@dataclass(frozen=True, slots=True)
class Sighting:
    """The last time a nickname was seen: when, and what it did."""

    nickname: str
    when: float
    #: What it was doing: C{leaving #lobby (quit: lunch)}.
    doing: str


class Memory:
    """What one server's /seen knows: who is online, who was seen going."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        #: The sessions online, by folded nickname.
        self.online: dict[str, IChatSession] = {}
        #: The nicknames gone, by folded nickname, oldest sighting first.
        self.gone: OrderedDict[str, Sighting] = OrderedDict()

    def arrived(self, session: IChatSession) -> None:
        """C{session} is online under its nickname: not gone any more."""
        key = fold(session.nickname)
        self.online[key] = session
        self.gone.pop(key, None)

    def went(self, nickname: str, when: float, doing: str) -> None:
        """C{nickname} was last seen at C{when}, C{doing}; forget the oldest."""
        key = fold(nickname)
        self.online.pop(key, None)
        self.gone.pop(key, None)
        self.gone[key] = Sighting(nickname, when, doing)
        while len(self.gone) > self.limit:
            self.gone.popitem(last=False)  # the one seen longest ago


class Seen(SessionHooks):
    """The hooks that keep each server's L{Memory}."""

    name = "seen"

    def __init__(self, limit: int = MAX_REMEMBERED) -> None:
        self.limit = limit
        self._memories: WeakKeyDictionary[IChatServer, Memory] = WeakKeyDictionary()

    def memory(self, server: IChatServer) -> Memory:
        """What C{server}'s sessions showed this plugin."""
        memory = self._memories.get(server)
        if memory is None:
            memory = self._memories[server] = Memory(self.limit)
        return memory

    def registered(self, session: IChatSession) -> None:
        """A nickname came online (by registering, or resuming)."""
        self.memory(session.server).arrived(session)

    def nick_changed(self, session: IChatSession, old: str, new: str) -> None:
        """The old nickname is gone; the new one is online."""
        memory = self.memory(session.server)
        memory.went(old, session.server.clock.seconds(), f"changing nickname to {new}")
        memory.arrived(session)

    def disconnected(self, session: IChatSession, reason: CloseReason) -> None:
        """A nickname is gone, from its room, for C{reason}."""
        memory = self.memory(session.server)
        nickname = session.nickname
        if nickname is None or memory.online.get(fold(nickname)) is not session:
            # It never had a nickname; or another connection has it now
            # (it resumed this session while this connection was open).
            return
        memory.went(
            nickname,
            session.server.clock.seconds(),
            f"leaving {session.room} ({reason})",
        )


def ago(seconds: float) -> str:
    """How long ago, in words: C{just now}, C{5 minutes ago}, C{2 days ago}."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 else ''} ago"
    return "just now"


#: The hooks, found by the plugin scan; the command below reads their memory.
seen = Seen()


@command("/seen NICK", "say whether NICK is online, or when they were last seen", 1)
def seen_command(session: IChatSession, args: str) -> None:
    """Answer from what the hooks saw on this server."""
    wanted = args.split()[0]
    memory = seen.memory(session.server)
    online = memory.online.get(fold(wanted))
    if online is not None:
        session.answer(events.notice(f"{online.nickname} is online in {online.room}"))
        return
    sighting = memory.gone.get(fold(wanted))
    if sighting is None:
        raise ChatError(f"nobody called {wanted} has been seen")
    when = ago(session.server.clock.seconds() - sighting.when)
    session.answer(
        events.notice(f"{sighting.nickname} was last seen {when}, {sighting.doing}")
    )
