"""Session hooks: plugins that observe each session's life, and their dispatcher.

A hooks plugin provides L{ISessionHooks} (see there for when each hook is
called); L{SessionHooks} is a base class whose hooks do nothing, so a
plugin writes only the ones it needs.  The server holds one L{Hooks}
(C{server.hooks}), made from the plugins found at start, and sessions call
it at each event; it calls every plugin's hook in name order, and logs
what a hook raises without letting it reach the session.

A server without hooks plugins must not pay for them where it is busy: each
event keeps a tuple of the hooks to call (C{on_said}...), only those a
plugin actually wrote (overrode), so the hot path (a chat line) tests that
tuple before calling: 10 ns a line when it is empty, against 40 ns for
calling the dispatcher with nothing to call, and 300 ns with one plugin's
trivial hook (C{scripts/hooks_cost.py}, timeit on the shared 2-core
machine; relaying a line to one recipient costs microseconds).  The hooks
called once per connection are called without that test (30 to 40 ns).
"""

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from .interfaces import ISessionHooks
from .logs import gate, shown
from .reasons import CloseReason

if TYPE_CHECKING:
    from .interfaces import IChatSession

log = Logger(observer=gate)

#: The hooks, in the order a session's life calls them.
EVENTS = (
    "connected",
    "registered",
    "joined",
    "left",
    "said",
    "acted",
    "nick_changed",
    "disconnected",
)

#: At most one traceback per hook and event in this many seconds; the
#: failures in between are counted, and the count is logged with the next.
FAILURE_LOG_INTERVAL = 60.0


@implementer(IPlugin, ISessionHooks)
class SessionHooks:
    """A hooks plugin whose hooks do nothing: subclass it, set C{name}.

    Override the hooks you need; the others cost nothing, as the dispatcher
    does not call a hook a subclass left as it is here.  The plugin scan
    finds an instance bound at module level, not the class.
    """

    name = "unnamed"

    def connected(self, session: "IChatSession") -> None:
        """See L{ISessionHooks.connected}."""

    def registered(self, session: "IChatSession") -> None:
        """See L{ISessionHooks.registered}."""

    def joined(self, session: "IChatSession", room: str) -> None:
        """See L{ISessionHooks.joined}."""

    def left(self, session: "IChatSession", room: str, reason: str) -> None:
        """See L{ISessionHooks.left}."""

    def said(self, session: "IChatSession", room: str, text: str) -> None:
        """See L{ISessionHooks.said}."""

    def acted(self, session: "IChatSession", room: str, text: str) -> None:
        """See L{ISessionHooks.acted}."""

    def nick_changed(self, session: "IChatSession", old: str, new: str) -> None:
        """See L{ISessionHooks.nick_changed}."""

    def disconnected(self, session: "IChatSession", reason: CloseReason) -> None:
        """See L{ISessionHooks.disconnected}."""


#: One hook to call: the plugin's name, and its bound method.
Call = tuple[str, Callable[..., object]]


def _calls(plugins: Iterable[ISessionHooks], event: str) -> tuple[Call, ...]:
    """The hooks for C{event} that do something, in the plugins' order."""
    calls = []
    for plugin in plugins:
        method = getattr(plugin, event)
        if getattr(type(plugin), event, None) is getattr(SessionHooks, event):
            continue  # SessionHooks' own: it does nothing
        calls.append((str(plugin.name), method))
    return tuple(calls)


class Hooks:
    """Calls every hooks plugin's hook for each event of a session.

    One per server (C{server.hooks}).  Each method is an L{ISessionHooks}
    hook without the plugin: it calls that hook of each plugin, in name
    order, and catches, logs and forgets whatever one raises, so the next
    is called all the same and the caller never sees it.  C{on_EVENT} is
    the tuple of (name, hook) called for EVENT: empty when no plugin wrote
    that hook, which a busy caller tests first.

    It keeps the order L{ISessionHooks} promises, whatever the order its
    callers call it in (a registry's answer may come after the connection
    has closed): nothing before L{connected} or after L{disconnected},
    L{registered} once, L{joined} only once registered, L{left} only for a
    room joined, and the rooms still joined left before L{disconnected}.
    """

    def __init__(
        self,
        plugins: Iterable[ISessionHooks] = (),
        clock: IReactorTime | None = None,
        core: "ISessionHooks | None" = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        #: The server's own observer of registrations, renames and ends (its
        #: accounts, L{chatservice.accounts.Accounts}), called before the
        #: plugins, whatever they are, and without the per-session record
        #: the plugins' order needs (140 bytes a session: an idle server's
        #: users are most of its memory).  Its errors are not contained.
        self.core = core
        #: The plugins, in name order.
        self.plugins = tuple(sorted(plugins, key=lambda plugin: str(plugin.name)))
        self.on_connected = _calls(self.plugins, "connected")
        self.on_registered = _calls(self.plugins, "registered")
        self.on_joined = _calls(self.plugins, "joined")
        self.on_left = _calls(self.plugins, "left")
        self.on_said = _calls(self.plugins, "said")
        self.on_acted = _calls(self.plugins, "acted")
        self.on_nick_changed = _calls(self.plugins, "nick_changed")
        self.on_disconnected = _calls(self.plugins, "disconnected")
        # The sessions between their connected and disconnected hooks: None
        # until registered, then the rooms they are in, in the order joined
        # (so that leaving them can be told when the connection ends).
        # Kept only when there are plugins: about 140 bytes a session.
        self._sessions: dict[IChatSession, list[str] | None] = {}
        # Per (plugin, event): when its last traceback was logged, and how
        # many failures were not logged since.
        self._failures: dict[tuple[str, str], tuple[float, int]] = {}

    def __repr__(self) -> str:
        names = ", ".join(str(plugin.name) for plugin in self.plugins)
        return f"<Hooks [{names}]>"

    def connected(self, session: "IChatSession") -> None:
        """See L{ISessionHooks.connected}; the session's hooks begin."""
        if self.plugins:
            self._sessions[session] = None
            self._call(self.on_connected, "connected", session)

    def registered(self, session: "IChatSession") -> None:
        """See L{ISessionHooks.registered}; then L{joined} its room.

        That room is the lobby, or the room of the session it resumed.
        """
        if self.core is not None:
            self.core.registered(session)
        if session in self._sessions and self._sessions[session] is None:
            self._sessions[session] = []
            self._call(self.on_registered, "registered", session)
            self.joined(session, session.room)

    def joined(self, session: "IChatSession", room: str) -> None:
        """See L{ISessionHooks.joined}."""
        rooms = self._sessions.get(session)
        if rooms is not None and room not in rooms:
            rooms.append(room)
            self._call(self.on_joined, "joined", session, room)

    def left(self, session: "IChatSession", room: str, reason: str) -> None:
        """See L{ISessionHooks.left}."""
        rooms = self._sessions.get(session)
        if rooms is not None and room in rooms:
            rooms.remove(room)
            self._call(self.on_left, "left", session, room, reason)

    def said(self, session: "IChatSession", room: str, text: str) -> None:
        """See L{ISessionHooks.said}."""
        if self._sessions.get(session) is not None:
            self._call(self.on_said, "said", session, room, text)

    def acted(self, session: "IChatSession", room: str, text: str) -> None:
        """See L{ISessionHooks.acted}."""
        if self._sessions.get(session) is not None:
            self._call(self.on_acted, "acted", session, room, text)

    def nick_changed(self, session: "IChatSession", old: str, new: str) -> None:
        """See L{ISessionHooks.nick_changed}."""
        if self.core is not None:
            self.core.nick_changed(session, old, new)
        if self._sessions.get(session) is not None:
            self._call(self.on_nick_changed, "nick_changed", session, old, new)

    def disconnected(self, session: "IChatSession", reason: CloseReason) -> None:
        """See L{ISessionHooks.disconnected}; L{left} each room first.

        The rooms it is still in are those L{joined} and not L{left}.  The
        session's hooks end here.
        """
        if self.core is not None:
            self.core.disconnected(session, reason)
        if session not in self._sessions:
            return
        rooms = self._sessions.pop(session)
        if rooms:
            why = str(reason)
            for room in rooms:
                self._call(self.on_left, "left", session, room, why)
        self._call(self.on_disconnected, "disconnected", session, reason)

    def _call(self, calls: tuple[Call, ...], event: str, *args: object) -> None:
        for name, hook in calls:
            try:
                result = hook(*args)
            except Exception:
                self._failed(Failure(), name, event)
                continue
            if isinstance(result, Deferred):
                result.addErrback(self._failed, name, event)

    def _failed(self, failure: Failure, name: str, event: str) -> None:
        """Log a hook's failure: one traceback a minute per hook and event."""
        key = (name, event)
        now = self.clock.seconds()
        last, untold = self._failures.get(key, (None, 0))
        if last is not None and now - last < FAILURE_LOG_INTERVAL:
            self._failures[key] = (last, untold + 1)
            return
        self._failures[key] = (now, 0)
        log.failure(
            "hooks plugin {plugin}: its {event} hook failed"
            + (" ({count} more failures since the last one logged)" if untold else ""),
            failure,
            plugin=shown(name),
            event=shown(event),
            count=untold,
        )


__all__ = ["EVENTS", "FAILURE_LOG_INTERVAL", "Hooks", "SessionHooks"]
