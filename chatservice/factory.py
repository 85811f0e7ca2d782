"""The factory: one registry and one set of settings for every connection.

It admits or refuses each new connection (C{--max-clients},
C{--max-per-ip}, C{--max-connect-rate}), gives it a unique increasing id,
counts what is open, and closes everything, with a deadline, when the server
stops.
"""

import itertools
from collections import Counter
from collections.abc import Callable

from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IAddress, IReactorTime
from twisted.internet.protocol import Protocol, ServerFactory
from twisted.logger import Logger
from zope.interface import implementer

from . import events, wire
from .accounts import Accounts
from .bans import Ban, BanList, parse_target
from .config import Settings
from .deadlines import Deadlines
from .extensions import Extensions, load_extensions
from .frontends.lines import lines as line_front_end
from .hooks import Hooks
from .interfaces import (
    IAccountStore,
    IChatServer,
    IChatSession,
    IFrontEnd,
    IRegistry,
    IServingFrontEnd,
    ISharedAccounts,
    ISharedBans,
    ISharedSessions,
)
from .logs import SessionLog, format_peer, gate, shown
from .operators import Operators
from .output import Flusher
from .reasons import CloseReason
from .registry import Registry
from .resume import SessionKeeper
from .shared import LocalBans
from .stats import Stats
from .store import Store, memory_store
from .store.accounts import StoreAccounts
from .store.history import History
from .text import clean_line
from .throttle import (
    Allowances,
    FailureDelay,
    SerialChecks,
    TokenBucket,
    address_key,
)
from .welcome import ShownScrollback

log = Logger(observer=gate)

#: Addresses whose connect rate is tracked before idle ones are forgotten.
_PRUNE_CONNECTS = 4096

#: The most addresses whose connect rate is tracked; past it the oldest is
#: forgotten even if it connected a moment ago (about 200 bytes each).
CONNECTS_MAX = 4 * _PRUNE_CONNECTS


class FrontEndFactory(ServerFactory):
    """What one front end's listeners serve: its protocols, over one core.

    The chat core (L{ChatFactory}) admits or refuses each connection, for
    every front end alike; the front end builds the protocol.
    """

    def __init__(self, server: "ChatFactory", front_end: IFrontEnd) -> None:
        self.server = server
        self.front_end = front_end

    def buildProtocol(self, addr: IAddress) -> Protocol:
        """Admit the connection from C{addr} on this front end, or refuse it."""
        return self.server.build_for(self.front_end, addr)


@implementer(IChatServer)
class ChatFactory(ServerFactory):
    """The chat core: admits connections, and is what sessions see.

    It is the L{IChatServer} that sessions, commands and plugins see, shared
    by every front end (L{FrontEndFactory}); as a factory itself it serves
    the line front end.

    @param shared_sessions: the resume tokens and held sessions every node
        of a cluster sees; by default none (L{LocalSessions}).
    @param shared_bans: the bans every node of a cluster holds; by default
        none (L{LocalBans}).
    @param account_store: where accounts are kept; by default in C{store}.
    @param shared_accounts: tells the other nodes of a cluster of accounts
        registered here; by default nobody.
    @param store: the database kept across restarts (L{chatservice.store});
        by default an in-memory one, for tests (L{memory_store}).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        registry: IRegistry | None = None,
        clock: IReactorTime | None = None,
        extensions: Extensions | None = None,
        run_in_thread: Callable[..., Deferred[object]] | None = None,
        shared_sessions: ISharedSessions | None = None,
        shared_bans: ISharedBans | None = None,
        account_store: IAccountStore | None = None,
        shared_accounts: ISharedAccounts | None = None,
        store: Store | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.settings = settings if settings is not None else Settings()
        if registry is None:
            registry = Registry(
                history=self.settings.history,
                clock=clock,
                announce_max=self.settings.announce_max,
            )
        self.registry = registry
        self.clock = clock
        #: What is kept across restarts; opened when the service starts.
        self.store = store if store is not None else memory_store()
        #: The rooms' lines, kept in the store (see L{History}).
        self.history = History(
            self.store, clock, self.settings.history, self.settings.history_days
        )
        #: Each room's stamped scrollback, as a newcomer is shown it.
        self.shown_scrollback = ShownScrollback()
        #: The message of the day, as lines; see L{load_motd}.
        self.motd: tuple[str, ...] = ()
        if extensions is None:
            extensions = load_extensions(self.settings.disabled_plugins)
            for problem in extensions.problems:
                log.error("{problem}", problem=problem)
        self.commands = extensions.commands
        self.filters = extensions.filters
        if run_in_thread is None:
            run_in_thread = _in_thread_pool
        self.run_in_thread = run_in_thread
        #: Registered nicknames, who proved theirs, the messages kept.
        self.accounts = Accounts(
            account_store if account_store is not None else StoreAccounts(self.store),
            clock,
            run_in_thread,
            self.settings.identify_grace,
            shared_accounts,
        )
        #: Tells the accounts and the session hooks plugins of each
        #: session's events.
        self.hooks = Hooks(extensions.hooks, clock, core=self.accounts)
        #: The open connections' sessions, by connection id.
        self.connections: dict[int, IChatSession] = {}
        #: Who may become an operator; see L{load_operators}.
        self.operators = Operators()
        #: The addresses refused at connect; see L{load_bans}.
        self.bans = BanList(self.settings.bans, clock, run_in_thread)
        #: Failed /oper attempts, by peer address.
        self.oper_failures = FailureDelay(clock)
        #: The /oper checks: one at a time per address, one at once in all.
        self.oper_checks = SerialChecks(clock, self.oper_failures, run_in_thread)
        #: Resume tokens, and sessions held for a resume.
        self.sessions = SessionKeeper(
            registry,
            clock,
            self.settings.resume_grace,
            self.settings.resume_buffer,
            self.settings.resume_buffer_bytes,
            # Held sessions count against the connection limits.
            max_per_address=self.settings.max_per_ip,
            max_total=self.settings.max_clients,
            shared=shared_sessions,
        )
        # A resumed session stays identified (see Accounts.taken_over).
        self.sessions.on_take_over = self.accounts.taken_over
        self.accounts.resume_grace = self.settings.resume_grace
        #: The bans the other nodes of a cluster are told of, and tell.
        self.shared_bans = shared_bans if shared_bans is not None else LocalBans()
        self.shared_bans.watch_bans(self._banned_elsewhere, self._unbanned_elsewhere)
        #: Failed /resume attempts, by peer address.
        self.resume_failures = FailureDelay(clock)
        #: Bytes of private messages each recipient may still be sent.
        self.private_allowance = Allowances(
            self.settings.private_rate, self.settings.private_burst
        )
        # Per address (see address_key): the connections open.
        self._per_host: Counter[str] = Counter()
        #: What the server counts about itself; see L{Stats}.
        self.stats = Stats(started=clock.seconds())
        #: Sends the connections' output once per reactor iteration.
        self.flusher = Flusher(clock, self.stats)
        #: Logs each session's registration and end.
        self.session_log = SessionLog(clock)
        #: Every session's timeout, on one timer of the clock.
        self.deadlines = Deadlines(clock)
        # Per address: a token bucket of new connections, oldest first.
        self._connects: dict[str, TokenBucket] = {}
        self._prune_connects_at = _PRUNE_CONNECTS
        self._ids = itertools.count(1)
        self._stopping = False
        self._all_closed: Deferred[None] | None = None

    def load_motd(self) -> None:
        """(Re-)read the C{--motd} file; raises C{OSError} if it can't.

        Its text is decoded and sanitised like user input, so a stray escape
        sequence in the file cannot reach anyone's terminal either.
        """
        path = self.settings.motd
        if path is None:
            return
        with open(path, "rb") as motd:
            data = motd.read(64 * 1024)
        self.motd = tuple(clean_line(line) for line in data.splitlines())
        log.info("message of the day read from {path}", path=path)

    def load_operators(self) -> None:
        """(Re-)read the C{--operators} file; raises L{OperatorsFileError}."""
        path = self.settings.operators
        if path is None:
            return
        self.operators = Operators.from_file(path)
        log.info(
            "{count} operator(s) read from {path}",
            count=len(self.operators),
            path=path,
        )
        # Someone taken out of the file loses the rights they logged in to.
        for protocol in self.connections.values():
            if protocol.operator is not None and protocol.operator not in (
                self.operators
            ):
                log.info(
                    "operator {operator} ({nickname}) is no longer in {path}; "
                    "rights withdrawn",
                    operator=shown(protocol.operator),
                    nickname=shown(protocol.nickname),
                    path=path,
                )
                protocol.operator = None
                protocol.deliver(events.notice("Your operator rights were withdrawn."))

    def load_bans(self) -> None:
        """Read the C{--bans} file; raises L{BansFileError}."""
        if self.settings.bans is None:
            return
        self.bans.load()
        log.info(
            "{count} ban(s) read from {path}",
            count=len(self.bans.active()),
            path=self.settings.bans,
        )

    def ban(self, network: object, duration: float | None, reason: str, by: str) -> Ban:
        """See L{IChatServer.ban}."""
        ban = self._enforce(self.bans.add(network, duration, reason, by))
        self.shared_bans.share_ban(str(ban.network), ban.expires, reason, by)
        return ban

    def unban(self, network: object) -> Ban | None:
        """See L{IChatServer.unban}."""
        ban = self.bans.remove(network)
        self.shared_bans.share_unban(str(network))
        return ban

    def _enforce(self, ban: Ban) -> Ban:
        """Close the connections and end the held sessions C{ban} matches."""
        why = CloseReason.banned(ban.reason)
        for protocol in list(self.connections.values()):
            if protocol.host is not None and ban.matches(protocol.host):
                protocol.disconnect(why)
        self.sessions.end_held(ban.matches, why)
        return ban

    def _banned_elsewhere(
        self, network: str, expires: float | None, reason: str, by: str
    ) -> None:
        """Another node of the cluster made a ban: it holds here too."""
        duration = None if expires is None else expires - self.clock.seconds()
        if duration is not None and duration <= 0:
            return
        log.info(
            "ban of {network} by {by} made on another node",
            network=shown(network),
            by=shown(by),
        )
        self._enforce(self.bans.add(parse_target(network), duration, reason, by))

    def _unbanned_elsewhere(self, network: str) -> None:
        """Another node of the cluster lifted a ban."""
        self.bans.remove(parse_target(network))

    def buildProtocol(self, addr: IAddress) -> Protocol:
        """Admit the connection from C{addr} on the line front end."""
        return self.build_for(line_front_end, addr)

    def front_end(self, front_end: IFrontEnd) -> ServerFactory:
        """The factory for C{front_end}'s listeners, over this core.

        A front end that serves a protocol of its own first (the web one:
        HTTP) gives its own factory, and asks for admission itself.
        """
        if IServingFrontEnd.providedBy(front_end):
            return front_end.build_factory(self)  # type: ignore[no-any-return]
        return FrontEndFactory(self, front_end)

    def build_for(self, front_end: IFrontEnd, addr: IAddress) -> Protocol:
        """Admit the connection from C{addr}, or refuse it with a reason."""
        host = getattr(addr, "host", None)
        key = address_key(host)
        settings = self.settings
        ban = self.bans.match(host) if host is not None else None
        if self._stopping:
            why, kind = "the server is shutting down", "shutting down"
        elif ban is not None:
            why, kind = _refusal_for(ban), "banned"
        elif key is not None and not self._may_connect(key):
            why = (
                f"too many new connections from your address "
                f"(at most {settings.max_connect_rate:g} per second); "
                f"try again in a moment"
            )
            kind = "connect rate"
        elif len(self.connections) >= settings.max_clients:
            why = f"the server is full ({settings.max_clients} connections)"
            kind = "server full"
        elif key is not None and self._per_host[key] >= settings.max_per_ip:
            why = (
                f"too many connections from your address "
                f"(at most {settings.max_per_ip})"
            )
            kind = "too many from one address"
        else:
            protocol = front_end.build_protocol(self, next(self._ids), addr)
            session = protocol.session  # type: ignore[attr-defined]
            self.connections[session.connection_id] = session
            if key is not None:
                self._per_host[key] += 1
            if len(self.connections) > self.stats.peak_connections:
                self.stats.peak_connections = len(self.connections)
            return protocol
        self.stats.refused[kind] += 1
        log.info(
            "refused a connection from {peer}: {why}",
            peer=format_peer(host, addr),
            why=shown(why),
        )
        return front_end.build_refusal(why)  # type: ignore[no-any-return]

    def _may_connect(self, key: str) -> bool:
        """Take a token from C{key}'s connect-rate bucket, if it has one."""
        now = self.clock.seconds()
        bucket = self._connects.get(key)
        if bucket is None:
            rate = self.settings.max_connect_rate
            bucket = self._connects[key] = TokenBucket(rate, max(rate, 1.0), now)
            if len(self._connects) > self._prune_connects_at:
                self._prune_connects(now)
        return not bucket.take(now)

    def _prune_connects(self, now: float) -> None:
        """Forget addresses whose bucket is full again: they are like new.

        If that leaves too many (a flood from more addresses than
        C{CONNECTS_MAX} in the time a bucket takes to refill), the ones
        added first are forgotten too: the table's memory stays bounded.
        """
        kept = [
            (key, bucket)
            for key, bucket in self._connects.items()
            if not bucket.full(now)
        ]
        self._connects = dict(kept[-CONNECTS_MAX // 2 :])
        # Pruning is linear: let the table double before the next time.
        self._prune_connects_at = max(_PRUNE_CONNECTS, 2 * len(self._connects))

    def connection_closed(self, session: IChatSession, reason: CloseReason) -> None:
        """Forget C{session}'s connection; called once, by the session."""
        # A closed set of labels.  (_value_, the member's own attribute: the
        # value property is two calls through enum.py, 76 ns more.)
        self.stats.closed[reason.kind._value_] += 1
        del self.connections[session.connection_id]
        key = address_key(session.host)
        if key is not None:
            self._per_host[key] -= 1
            if not self._per_host[key]:
                del self._per_host[key]
        if self._all_closed is not None and not self.connections:
            self._all_closed, done = None, self._all_closed
            done.callback(None)

    def stop(self) -> Deferred[None]:
        """Tell every connection the server is stopping, and close them all.

        Fires once every connection is closed: each is aborted if its client
        has not read everything after C{shutdown_timeout} seconds.
        """
        self._stopping = True
        self.registry.stop()
        self.sessions.stop()
        if not self.connections:
            return succeed(None)
        self._all_closed = Deferred()
        all_closed = self._all_closed
        for protocol in list(self.connections.values()):
            protocol.server_stopping()
        return all_closed


def _refusal_for(ban: Ban) -> str:
    """What a banned address is told when it connects."""
    why = "you are banned from this server"
    if ban.expires is not None:
        why += f" until {wire.utc(ban.expires)}"
    return why + (f": {ban.reason}" if ban.reason else "")


def _in_thread_pool(function: Callable[..., object], *args: object) -> Deferred[object]:
    """Run C{function(*args)} in the reactor's thread pool."""
    from twisted.internet import reactor
    from twisted.internet.threads import deferToThreadPool

    return deferToThreadPool(reactor, reactor.getThreadPool(), function, *args)


def run_at_once(function: Callable[..., object], *args: object) -> Deferred[object]:
    """Run C{function(*args)} right here: for tests, where nothing may wait."""
    return maybeDeferred(function, *args)
