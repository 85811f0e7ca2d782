"""The seams of chatservice, as zope interfaces.

Each contract is written here (MUST / MUST NOT); every implementation is
checked against it with C{verifyObject} and, for registries, with the shared
behaviour suite in L{chatservice.testing}.
"""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from zope.interface import Attribute, Interface

from .events import Event
from .reasons import CloseReason

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from twisted.internet.defer import Deferred


class IChatClient(Interface):
    """One connected user, as the registry sees it.

    The registry knows nothing of sockets or framing: it hands a client
    events (L{chatservice.events.Event}), which the client's front end
    encodes for its wire, and asks it to go.
    """

    connection_id = Attribute(
        "An int unique to this connection in this process, increasing with "
        "each new connection; for logs and internals, never shown as identity."
    )
    host = Attribute(
        "The peer's IP address as text, or None when there is none (a UNIX "
        "socket); for bans and logs, never shown to other users."
    )
    receiver = Attribute(
        "The object whose deliver() a room's fan-out calls for this client: "
        "the client itself, or (a session) its connection, whose deliver() "
        "is the session's.  MUST NOT change while the client is registered. "
        "(A call through it is the fan-out's inner step: a method of its "
        "class, found by Python's fast path, not a callable in an attribute.) "
        "Its class MAY have a static deliver_all(receivers, event, skip), "
        "which a room's fan-out then calls once for the receivers of that "
        "class instead: it MUST do what deliver(event) of each of them but "
        "skip would, in their order."
    )

    def deliver(event: Event) -> None:
        """Queue C{event} (a L{chatservice.events.Event}) for this client.

        MUST NOT block or wait for the client, and MUST NOT raise for an
        C{Event}: a client that cannot keep up is disconnected later, by its
        own connection.  Anything else (bytes, text: a plugin's mistake)
        MUST raise C{TypeError} at once, not fail later where the
        connection's output is sent.
        The same event object goes to every recipient: encode it with
        L{Event.encoded} (once per format), never change it.
        """

    def disconnect(reason: CloseReason) -> None:
        """Close this client's connection; others are told C{reason}.

        C{reason} is a L{chatservice.reasons.CloseReason}; the client is
        told C{*** disconnected: REASON}.
        """


@dataclass(frozen=True, slots=True)
class UserInfo:
    """A user as lists show it."""

    nickname: str
    #: The away message, or None when the user is not away.
    away: str | None = None
    #: The user's IP address, for operators' bans; never shown in lists.
    host: str | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class RoomInfo:
    """A room as C{/rooms} and C{/join} show it."""

    name: str
    members: int
    topic: str = ""


class Scrollback:
    """One line of a room's history: when it was said, and the event.

    C{stamped} is the event as a newcomer is shown it, marked as history
    with the time it was said (the line format prefixes C{[HH:MM] }): made
    for the first newcomer, then kept, not made again for each, nor for
    lines no newcomer sees (it cost 2 us a line said, a sixth of a line's
    fan-out to 100 users).
    """

    __slots__ = ("when", "event", "_stamped", "_dated")

    def __init__(self, when: float, event: Event) -> None:
        self.when = when
        self.event = event
        self._stamped: Event | None = None
        self._dated: Event | None = None

    def __repr__(self) -> str:
        return f"Scrollback(when={self.when!r}, event={self.event!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scrollback):
            return NotImplemented
        return (self.when, self.event) == (other.when, other.event)

    __hash__ = None  # type: ignore[assignment]

    @property
    def stamped(self) -> Event:
        """The event as a line of scrollback (see the class docstring)."""
        stamped = self._stamped
        if stamped is None:
            stamped = self._stamped = self.event.stamped(self.when)
        return stamped

    @property
    def dated(self) -> Event:
        """The event as a line of scrollback said before today: with its date."""
        dated = self._dated
        if dated is None:
            dated = self._dated = self.event.stamped(self.when, dated=True)
        return dated


class IHeldClient(IChatClient):
    """A session held for a resume, standing in the registry for its user.

    What it was sent while its user was away goes to the connection that
    resumes it, on this node or on another (a cluster hands it over).
    """

    def missed() -> tuple[list[Event], int]:
        """What was kept for the user, in order, and how many lines that is."""


class IRegistry(Interface):
    """Who is connected under which nickname, in which rooms; fan-out.

    The only place that knows where a line must go.  Nicknames are unique
    ignoring case (L{chatservice.text.fold}); room names are lower case.
    A user's rooms are a set (a line client uses one at a time; other front
    ends may hold several).  The room C{#lobby} always exists; any other
    room exists while it has members.  Methods that may need another process
    to answer return L{Deferred}s; an in-memory implementation fires them at
    once.

    Joins and leaves (and a held session's loss and return, L{replace}) are
    announced only in rooms small enough: a registry may be given a largest
    room size for that (C{--announce-max}); in bigger rooms they pass
    silently.
    """

    lobby = Attribute("The name of the room every user starts in.")

    def register(client: IChatClient, nickname: str) -> "Deferred[str]":
        """Give C{client} the (valid) C{nickname} and put it in the lobby.

        Fires with the nickname as registered.  Every other member of the
        lobby is told C{*** NICK has joined #lobby} exactly once (if the
        lobby is small enough, see above); C{client} is not.  Fails with
        L{chatservice.errors.NicknameInUse} if another client has the
        nickname, ignoring case.  MUST NOT be called twice for one client.
        """

    def rename(client: IChatClient, nickname: str) -> "Deferred[str]":
        """Change a registered client's nickname to the valid C{nickname}.

        Everyone who shares a room with C{client}, and C{client} itself, is
        told C{*** OLD is now known as NEW} exactly once.  A change of case
        only is allowed.  Fails with L{chatservice.errors.NicknameInUse}
        if another client has the nickname, ignoring case.
        """

    def unregister(client: IChatClient, reason: CloseReason) -> None:
        """Remove C{client} from the registry and from all its rooms.

        Everyone who shared a room with it gets C{*** NICK has left
        (REASON)} exactly once (in rooms small enough, see above), REASON
        being C{str(reason)} (L{wire.left}).
        Idempotent: unregistering a client that is not registered (any more)
        does nothing and tells nobody.
        """

    def join(client: IChatClient, room: str) -> "Deferred[list[Scrollback]]":
        """Add a registered C{client} to the (valid, lower-case) C{room}.

        Creates the room if needed.  The other members (of a room small
        enough, see above) are told C{*** NICK has joined ROOM}.  Fires
        with the room's scrollback, oldest first.  Joining a room one is in
        already changes nothing and tells nobody.
        """

    def part(client: IChatClient, room: str, reason: str) -> None:
        """Remove C{client} from C{room}; the others are told C{reason}.

        They get C{*** NICK has left ROOM (REASON)}, if the room is small
        enough (see above).  A room other than the lobby is deleted, topic
        and scrollback with it, when it empties.
        """

    def broadcast(room: str, event: Event, sender: IChatClient | None) -> None:
        """Deliver C{event} to every member of C{room} except C{sender}.

        MUST hand the same C{event} object to every recipient, and MUST NOT
        wait for any of them.  A recipient that is unregistered while the
        broadcast is under way may or may not get C{data}; the others all
        do.  Anything but an L{Event} MUST raise C{TypeError}, before
        anyone is handed anything.
        """

    def say(room: str, event: Event, sender: IChatClient) -> None:
        """Broadcast a chat line or action, and keep it in the scrollback.

        The scrollback keeps the room's last lines said, at most as many as
        the registry was configured for (none when that is 0).
        """

    def send_private(nickname: str, event: Event) -> "Deferred[UserInfo]":
        """Deliver C{event} to the user called C{nickname}, ignoring case.

        Fires with that user, or fails with
        L{chatservice.errors.NoSuchNickname}.
        """

    def find(nickname: str) -> "Deferred[UserInfo]":
        """Fire with the user called C{nickname}, ignoring case.

        Fails with L{chatservice.errors.NoSuchNickname}.
        """

    def kick(nickname: str, reason: CloseReason) -> "Deferred[UserInfo]":
        """Disconnect the user called C{nickname}, ignoring case, for C{reason}.

        The user's client is asked to L{IChatClient.disconnect}, so its
        rooms hear C{reason} when it leaves.  Fires with that user, or fails
        with L{chatservice.errors.NoSuchNickname}.
        """

    def replace(old: IChatClient, new: IChatClient, event: Event | None) -> None:
        """Put C{new} in the registered C{old}'s place: nickname, rooms, away.

        Used when a connection drops and its session is held, and when a new
        connection resumes it.  Everyone who shares a room with it (small
        enough, see above) is told C{event}, if given, once; C{new} is not.
        Nobody is told of a leave or a join.
        """

    def announce(event: Event) -> None:
        """Deliver C{event} to every registered user, in every room, once."""

    def count() -> "Deferred[int]":
        """Fire with how many users are registered: cheap, unlike L{users}."""

    def local_sizes() -> "tuple[int, int]":
        """How many users (held sessions included) and rooms there are here.

        Answered at once, at a cost that MUST NOT grow with the number of
        users or rooms (the metrics ask at every scrape).  A registry shared
        with other servers counts this server's users and the rooms they are
        in.
        """

    said = Attribute("How many chat lines and actions local users said.")
    delivered = Attribute("How many of those lines were handed to recipients.")

    def users(room: "str | None" = None) -> "Deferred[list[UserInfo]]":
        """Fire with the users in C{room}, or everyone when C{None}.

        Sorted by nickname ignoring case; an unknown room has nobody.
        """

    def rooms() -> "Deferred[list[RoomInfo]]":
        """Fire with every room, sorted by name."""

    def topic(room: str) -> "Deferred[str]":
        """Fire with C{room}'s topic, C{""} when it has none."""

    def set_topic(client: IChatClient, room: str, topic: str) -> None:
        """Set C{room}'s topic; all members, C{client} included, are told."""

    def set_away(client: IChatClient, message: str | None) -> None:
        """Mark C{client} away with C{message}, or back when C{None}."""

    def start() -> None:
        """The server starts: connect to whatever the registry shares.

        Called once, before the first client registers.  A registry held in
        memory has nothing to do.
        """

    def close() -> "Deferred[object]":
        """The server has stopped and every local user has left: let go.

        Fires once the registry is done (a shared one has left the others).
        A registry held in memory fires at once.
        """

    def stop() -> None:
        """Prepare for every local user leaving at once: the server stops.

        After this, the leaves of local users MUST NOT be announced to other
        local users (they are all leaving at once; telling each about each
        would be a number of lines that grows with the square of the users).
        A registry shared with other servers SHOULD still announce them
        there.
        """


class IRegistryAtOnce(IRegistry):
    """An L{IRegistry} that answers the welcome's questions at once, in memory.

    Its L{IRegistry} methods' Deferreds fire before they are returned; the
    welcome (L{chatservice.welcome}) asks these instead, and gets the same
    answers without a Deferred each (a fired Deferred and the step taking
    its result cost ~0.4 us: four a welcome).  Each does what the method of
    the same name without C{_now} does, and returns what its Deferred
    would fire with, or raises what it would fail with.  A subclass that
    overrides C{register}, C{count}, C{users} or C{join} (to make the
    answers wait: a test's, a registry over a network) is asked through
    them, not through the C{_now} twins it inherits: the welcome sees the
    override (L{chatservice.welcome.answers_at_once}).
    """

    def register_now(client: IChatClient, nickname: str) -> str:
        """L{IRegistry.register}; raises L{chatservice.errors.NicknameInUse}."""

    def count_now() -> int:
        """L{IRegistry.count}."""

    def users_now(room: "str | None" = None) -> "list[UserInfo]":
        """L{IRegistry.users}."""

    def join_now(client: IChatClient, room: str) -> "list[Scrollback]":
        """L{IRegistry.join}."""


class ISharedSessions(Interface):
    """Resume tokens and held sessions, as every node of a cluster sees them.

    Only a cluster shares them: a server alone is given
    L{chatservice.shared.LocalSessions}, which shares nothing, and its
    L{chatservice.resume.SessionKeeper} checks tokens itself.
    """

    def store_token(nickname: str, token_digest: str) -> None:
        """Keep the digest of C{nickname}'s first resume token for all nodes."""

    def keep_for(nickname: str, event: Event, limit: int) -> None:
        """Keep C{event}, sent to C{nickname}'s held session, for all nodes.

        At most C{limit} lines are kept.  MUST NOT wait.
        """

    def resume(
        client: IChatClient, nickname: str, token_digest: str, new_digest: str
    ) -> "Deferred[tuple[str, str, list[Event], int] | bool | None] | None":
        """Resume C{nickname}'s session for C{client}, wherever it is held.

        Returns None when sessions are not shared: the caller checks the
        token itself.  Otherwise the token is checked, and replaced by
        C{new_digest}, for every node at once, and the Deferred fires with
        True if the session is held here (the caller resumes it), with
        (nickname, room, missed lines, their count) once it has moved here
        from another node, or with None if the token is wrong.
        """

    def watch_moves(moved: "Callable[[IChatClient], None]") -> None:
        """Call C{moved(client)} when a session here is resumed elsewhere.

        The registry has already taken C{client} out, silently.
        """


class ISharedBans(Interface):
    """Bans made on one node of a cluster and held on every node.

    A server alone is given L{chatservice.shared.LocalBans}, which shares
    nothing.
    """

    def share_ban(network: str, expires: "float | None", reason: str, by: str) -> None:
        """Tell the other nodes of a ban of C{network} made here."""

    def share_unban(network: str) -> None:
        """Tell the other nodes of the ban of C{network} lifted here."""

    def watch_bans(
        banned: "Callable[[str, float | None, str, str], None]",
        unbanned: "Callable[[str], None]",
    ) -> None:
        """Call C{banned} (as L{share_ban}) or C{unbanned} for the others' bans."""


class ICommand(Interface):
    """One slash command.

    Commands are plugins: an object providing this interface and
    C{twisted.plugin.IPlugin}, at module level in a module of the
    C{chatservice.plugins} package, is a command.  The built-in commands are
    found the same way.
    """

    name = Attribute("The command's name, lower case, without the slash.")
    usage = Attribute("How to call it, e.g. C{/msg NICK TEXT}.")
    help = Attribute("What it does, in one line.")
    before_registration = Attribute("True if it works before a nickname.")
    operator_only = Attribute("True if only operators may use it.")
    min_args = Attribute("How many space-separated arguments it needs.")

    def __call__(session: "IChatSession", args: str) -> "Deferred[object] | None":
        """Run the command for C{session} with the text after its name.

        C{args} has no leading or trailing spaces and at least C{min_args}
        words, and is one line: a newline in what a frame user sent is a
        space in it, unless the command has a true C{multi_line} attribute
        (optional; the built-in C{/msg} and C{/me} have it).  Raise (or
        fail with) L{chatservice.errors.ChatError} to show the user a
        C{!!! } line.  Any other exception, or a Deferred that
        takes longer than the server's command timeout, gets the user a
        C{!!! } line naming the command, and is logged.  The connection reads
        no further lines until the returned Deferred fires, so a slow
        command delays only its caller, never the reactor.  MUST NOT block.
        """


class IMessageFilter(Interface):
    """Sees every chat line and action before it is relayed to a room.

    Filters are plugins, found like L{ICommand}s.  They run in name order.
    """

    name = Attribute("The filter's name, for --disable-plugin and logs.")

    def filter(session: "IChatSession", room: str, text: str) -> "str | Deferred[str]":
        """Return the text to relay: C{text}, or a changed version of it.

        Raise (or fail with) L{chatservice.errors.ChatError} to refuse the
        line; the sender sees its message as a C{!!! } line and nobody else
        sees anything.  The text returned is sanitised again.  MUST NOT
        block.
        """


class ISessionHooks(Interface):
    """Observes the life of every session on this server: a hooks plugin.

    Hooks plugins are found like L{ICommand}s (an object providing this
    interface and C{twisted.plugin.IPlugin} at module level in a module of
    C{chatservice.plugins}); C{--disable-plugin NAME} leaves one out.  Every
    hook is called, in name order, for every session of this server.
    Subclass L{chatservice.hooks.SessionHooks}, whose methods do nothing,
    and write only the methods you need.

    A session is one connection.  Its hooks come in this order, each event
    exactly once: L{connected}; then, if it gets a nickname, L{registered}
    and L{joined} for its room (the lobby, or a resumed session's); then
    any number of L{joined}, L{left}, L{said}, L{acted} and
    L{nick_changed}; then, when the connection ends, L{left} for each room
    it is still in, and L{disconnected}, last.
    Every L{joined} is matched by one L{left}.  The order holds even when
    a registry answers late (after the connection closed): nothing is
    called before L{connected} or after L{disconnected}.  A session held for
    C{/resume} is not a session: its connection's session has left its
    rooms and disconnected; the connection that resumes it is a new
    session, which is L{registered} (by C{/resume}) and L{joined}.  (When
    the old connection was still open, the new session may be registered
    before the old one has disconnected: two sessions have the nickname
    for a moment.)

    Only this node's sessions: in a cluster (C{--redis}) each node tells its
    own plugins about its own users, so a plugin that wants the whole
    cluster runs on every node (and shares what it learns itself).

    Every hook MUST return quickly and MUST NOT block: it runs in the
    reactor, inside the session's own work (a chat line is relayed, then
    its L{said} hooks run).  A hook that must wait starts the work and
    returns (it may return a L{Deferred}; a failure of it is logged).  A
    hook SHOULD NOT raise: an exception is caught and logged (at most one
    traceback a minute per hook and event, then a count of those not shown),
    and never costs the user their line or connection, nor stops the hooks
    after it.  The C{session} is an L{IChatSession}; a hook may read it and
    send it events (C{session.deliver}), but MUST NOT keep it after
    L{disconnected}.
    """

    name = Attribute("The plugin's name, for --disable-plugin, logs and order.")

    def connected(session: "IChatSession") -> None:
        """A connection was accepted; it has no nickname yet.

        Called once the greeting is queued.
        """

    def registered(session: "IChatSession") -> None:
        """The session got its nickname (C{session.nickname}).

        By its first line or C{/nick}, once the welcome is queued; or by
        C{/resume}, once the missed lines are.  Followed at once by
        L{joined} for its room (the lobby, or the resumed session's).
        """

    def joined(session: "IChatSession", room: str) -> None:
        """The session entered C{room}: the lobby at registration, C{/join}."""

    def left(session: "IChatSession", room: str, reason: str) -> None:
        """The session left C{room}; C{reason} is what the room is told.

        On C{/join} elsewhere, C{joined #OTHER} (after L{joined} for the
        new room); when the connection ends, C{str()} of its
        L{chatservice.reasons.CloseReason} (C{quit: lunch}), before
        L{disconnected}.
        """

    def said(session: "IChatSession", room: str, text: str) -> None:
        """The session said C{text} in C{room}, and it was relayed.

        C{text} is as the room got it: after the message filters, sanitised.
        A line a filter refused is not said.  Private messages are not.  A
        frame user's text may hold newlines: it is said once, whole.
        """

    def acted(session: "IChatSession", room: str, text: str) -> None:
        """Like L{said}, for an action (C{/me TEXT}), with its C{TEXT}."""

    def nick_changed(session: "IChatSession", old: str, new: str) -> None:
        """The session's nickname changed from C{old} to C{new} (C{/nick}).

        C{session.nickname} is C{new} already.
        """

    def disconnected(session: "IChatSession", reason: CloseReason) -> None:
        """The connection ended, for C{reason}: the session's last hook.

        Called for every session that was L{connected}, registered or not,
        once its rooms are left.
        """


class IChatServer(Interface):
    """What a session (and so a command or filter) may know of its server."""

    settings = Attribute("The L{chatservice.config.Settings} in force.")
    clock = Attribute("The L{IReactorTime} that timers must use.")
    registry = Attribute("The L{IRegistry}.")
    motd = Attribute("The message of the day: a sequence of lines of text.")
    shown_scrollback = Attribute(
        "Each room's stamped scrollback as last shown to a newcomer, and the "
        "welcome's help and MOTD (L{chatservice.welcome.ShownScrollback})."
    )
    commands = Attribute("A mapping of command names to L{ICommand}s.")
    filters = Attribute("A sequence of L{IMessageFilter}s, in the order applied.")
    hooks = Attribute(
        "The L{chatservice.hooks.Hooks} that tells every L{ISessionHooks} plugin "
        "of each session's events."
    )
    stats = Attribute("The server's L{chatservice.stats.Stats} counters.")
    connections = Attribute("The open connections, by connection id.")
    operators = Attribute("The L{chatservice.operators.Operators} who may /oper.")
    bans = Attribute("The L{chatservice.bans.BanList}.")
    sessions = Attribute("The L{chatservice.resume.SessionKeeper}.")
    resume_failures = Attribute(
        "A L{chatservice.throttle.FailureDelay} for /resume, by peer address."
    )
    oper_failures = Attribute(
        "A L{chatservice.throttle.FailureDelay} for /oper, by peer address."
    )
    oper_checks = Attribute(
        "The L{chatservice.throttle.SerialChecks} that run /oper's checks."
    )
    accounts = Attribute(
        "The L{chatservice.accounts.Accounts}: registered nicknames, who "
        "proved theirs, and the messages kept for those offline."
    )
    store = Attribute(
        "The L{chatservice.store.Store}: the database kept across restarts."
    )
    history = Attribute(
        "The rooms' L{chatservice.store.history.History}, in the store."
    )
    private_allowance = Attribute(
        "A L{chatservice.throttle.Allowances} of the bytes of private messages "
        "each user may still be sent, by folded nickname."
    )

    flusher = Attribute(
        "The L{chatservice.output.Flusher} that sends every connection's "
        "output once per reactor iteration: a front end's connections use it."
    )
    session_log = Attribute(
        "The L{chatservice.logs.SessionLog}: each session's registration and "
        "end in the log."
    )
    deadlines = Attribute(
        "The L{chatservice.deadlines.Deadlines} every session's timeout is "
        "one of, on one timer of C{clock}."
    )

    def connection_closed(session: "IChatSession", reason: str) -> None:
        """Forget C{session}'s connection: called once, by the connection."""

    def run_in_thread(function: object, *args: object) -> "Deferred[object]":
        """Run the blocking C{function(*args)} off the reactor thread."""

    def ban(network: object, duration: "float | None", reason: str, by: str) -> object:
        """Ban C{network} and close its connections; returns the new ban.

        In a cluster the ban holds on every node.
        """

    def unban(network: object) -> object:
        """Lift the ban of exactly C{network}; returns it, or C{None}."""

    def build_for(front_end: "IFrontEnd", address: object) -> object:
        """Admit a connection from C{address} on C{front_end}, or refuse it.

        Returns C{front_end}'s C{build_protocol} (counted as open from now
        on, until its session calls L{connection_closed}) or its
        C{build_refusal} with the reason (a ban, a limit, the stop).
        """


class IChatSession(IChatClient):
    """One user's connection, as commands see it.

    Commands read and change the session only through this interface, so a
    second framing of the protocol can reuse every command unchanged.
    """

    server = Attribute("The L{IChatServer} this session belongs to.")
    registry = Attribute("The server's L{IRegistry}.")
    nickname = Attribute("The registered nickname, or C{None} before that.")
    room = Attribute("The room the user's plain lines go to.")

    def registered(nickname: str) -> str:
        """Record that the registry accepted C{nickname}; returns it."""

    def renamed(nickname: str) -> str:
        """Record that the registry renamed this user; returns C{nickname}."""

    operator = Attribute(
        "The operator name this session logged in as with /oper, or None."
    )
    closing = Attribute("True once the connection has started to close.")

    def answer(event: Event) -> None:
        """Queue C{event}, the answer to one of this session's own commands.

        Like L{IChatClient.deliver}, but an answer never counts toward the
        send-queue limit, so asking can never get a user disconnected:
        while the client is behind in reading, the answer waits, and its
        next lines are not read until it has caught up (it cannot ask for
        more than it reads).  Answers MUST be bounded in size (a page of a
        long list, not the list).
        """

    def answer_all(events: "Sequence[Event]") -> None:
        """L{answer} each of C{events}, in order, in one call (a scrollback).

        Nothing is queued if one of them is not an L{Event}.
        """

    def quit(reason: CloseReason) -> None:
        """Leave: the others are told C{reason}; then close the connection.

        C{/quit} gives L{CloseReason.quit}; the user is told C{*** Goodbye.}
        """

    def resumed(nickname: str, room: str) -> None:
        """Record that this connection took over C{nickname}'s session."""

    def hand_over() -> None:
        """Another connection resumed this session: close, without leaving."""


class IConnection(Interface):
    """A front end's connection, as its L{IChatSession} sees it.

    The session decides (what to send, when to stop reading, when to go);
    the connection does it in its own wire format.  Every front end's
    connection provides this; L{chatservice.output.OutputMixin} gives the
    send queue.
    """

    def deliver(event: Event) -> None:
        """Queue C{event} for the client; see L{IChatClient.deliver}."""

    def answer(event: Event) -> None:
        """Queue the answer C{event}; see L{IChatSession.answer}."""

    def answer_all(events: "Sequence[Event]") -> None:
        """Queue the answers C{events}; see L{IChatSession.answer_all}."""

    def pause_input(why: str) -> None:
        """Stop acting on input for reason C{why} ("flood", "command", ...).

        What was read already MUST wait, in order, and the transport SHOULD
        stop being read, so that TCP slows the sender down.
        """

    def resume_input(why: str) -> None:
        """Reason C{why} to stop is gone: go on if it was the last."""

    def close(flush: bool) -> None:
        """Close the connection, after sending what is queued if C{flush}.

        From now on what is delivered is dropped.  A client that does not
        read is aborted by the session's deadline (L{abort}).  The
        connection MAY be lost before this returns (its session's
        C{connection_lost} called), when nothing is left to send or read.
        """

    def abort() -> None:
        """Close the connection at once, whatever is unsent."""

    def take_rescued() -> "list[Event] | None":
        """What a send-queue overflow kept for a resume, once; None if none."""


class IFrontEnd(Interface):
    """A wire format the server can be reached with: a plugin.

    An object providing this and C{twisted.plugin.IPlugin}, at module level
    in a module of the C{chatservice.plugins} package, is a front end; the
    built-in line (telnet) and frame front ends are found the same way.
    Every front end's users share one chat core (an L{IChatServer}): the
    same users, rooms, limits and plugins.
    """

    name = Attribute("The front end's name, lower case: C{lines}, C{frames}.")
    option = Attribute(
        "The twistd option that lists its endpoints, without dashes "
        "(C{frames} for C{--frames ENDPOINT}, repeatable); C{port} for the "
        "line front end."
    )
    help = Attribute("The option's help, in one line.")
    default = Attribute(
        "The endpoints it listens on when its option is not given: a tuple "
        "of endpoint strings, empty for none."
    )

    def build_protocol(
        server: IChatServer, connection_id: int, address: object
    ) -> object:
        """A protocol for one admitted connection from C{address}.

        It makes its L{IChatSession} with C{server} (for instance a
        L{chatservice.session.Session}) and registers nothing itself: the
        server has admitted the connection and counts it.
        """

    def build_refusal(why: str) -> object:
        """A protocol that tells a refused client C{why}, then closes."""


class IServingFrontEnd(IFrontEnd):
    """A front end whose listeners serve a protocol of their own first.

    The web front end's listeners speak HTTP: they serve a page, and only a
    WebSocket opened there becomes a chat connection.  Its listeners serve
    L{build_factory}'s factory instead of one that admits every connection;
    it asks the chat core to admit each chat connection itself
    (C{IChatServer.build_for}), which then calls L{build_protocol} or
    L{build_refusal} as for any front end.
    """

    def build_factory(server: IChatServer) -> object:
        """The protocol factory (C{IProtocolFactory}) of its listeners."""


class IAccountStore(Interface):
    """Where accounts (registered nicknames) and the messages left for them live.

    Every key is a folded nickname (L{chatservice.text.fold}).  Every
    method returns a Deferred and MUST NOT block the reactor: a database
    runs in a thread pool.  The in-memory one is
    L{chatservice.accounts.MemoryAccountStore}; the shared conformance
    suite is L{chatservice.testing_accounts.AccountStoreBehaviour}.
    """

    def names() -> "Deferred[list[str]]":
        """The keys of every account, read once at start."""

    def get(key: str) -> "Deferred[object]":
        """The L{chatservice.accounts.Account} of C{key}, or None."""

    def create(key: str, account: object) -> "Deferred[bool]":
        """Make C{account} under C{key}: False (nothing changed) if one exists."""

    def set_password(key: str, password: str) -> "Deferred[bool]":
        """Replace the password hash of C{key}'s account: False if none."""

    def delete(key: str) -> "Deferred[bool]":
        """Delete C{key}'s account and its messages: False if it had none."""

    def leave(
        key: str, message: object, max_messages: int, max_bytes: int
    ) -> "Deferred[bool]":
        """Keep C{message} (a L{chatservice.accounts.Letter}) for C{key}.

        False, and nothing kept, when C{key} has no account or when its
        messages would then be more than C{max_messages}, or their texts
        and senders more than C{max_bytes} of UTF-8 together.  The check
        and the write MUST be one transaction (two nodes may write at
        once).
        """

    def take(key: str) -> "Deferred[list[object]]":
        """The messages kept for C{key}, oldest first, deleted as they are read."""


class ISharedAccounts(Interface):
    """Which nicknames are registered, as every node of a cluster learns it.

    A server alone is given L{chatservice.accounts.LocalAccounts}, which
    tells nobody.
    """

    def share_account(key: str, registered: bool) -> None:
        """Tell the other nodes C{key} was registered (or is no longer)."""

    def watch_accounts(changed: "Callable[[str, bool], None]") -> None:
        """Call C{changed(key, registered)} for each change on another node."""
