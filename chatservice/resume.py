"""Resuming a session after a dropped connection: no ghosts, no gaps.

Each registered user gets a resume token (128 random bits, URL-safe text).
When a connection ends without C{/quit} (lost, reset, idle timeout, too
slow), the L{SessionKeeper} does not unregister the user: a L{HeldClient}
takes its place in the registry for C{--resume-grace} seconds, keeping the
lines addressed to it (at most C{--resume-buffer}), and the user's rooms
hear C{*** NICK lost connection} once.  A new connection that sends
C{/resume NICK TOKEN} takes the session back, gets the missed lines in
order, and the rooms hear C{*** NICK is back}; if the old connection is
somehow still open (a ghost the server has not noticed yet), it is closed.
When the grace period ends, the user leaves as usual, C{(connection lost)}.
Held sessions count against C{--max-per-ip} and C{--max-clients}: past
either, a new session ends the oldest held one of its address (or of the
server) at once.

In a cluster the L{ISharedSessions} keeps what a node cannot: a digest of
each token (C{store_token}), the lines a held session misses (C{keep_for}),
and the session itself when a user resumes on another node (C{resume}); the
node that held it is told (L{SessionKeeper.moved}).  A server alone shares
nothing (L{LocalSessions}).
"""

import hashlib
import secrets
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from hmac import compare_digest

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater

from . import events
from .commands import Result, command
from .errors import ChatError
from .events import Event
from .held import HeldClient
from .interfaces import IChatClient, IChatSession, IRegistry, ISharedSessions
from .logs import GatedLogger, claimed_nickname, shown
from .reasons import SHUTDOWN, CloseReason
from .shared import LocalSessions
from .text import fold
from .throttle import address_key

# A dropped connection's session is held, and its hold ends, in a session's
# life: with --log-level warn those events are not even made.
log = GatedLogger()

#: Random bytes in a token: 128 bits.
TOKEN_BYTES = 16

#: Why a connection may end with its session held for a resume.
RESUME_FAILED = "resume failed: unknown nickname or wrong token"


@dataclass(slots=True)
class _Record:
    """A registered user's token, and who holds the session now."""

    token: str
    client: IChatClient
    #: The address it counts against (see L{address_key}).
    address: str | None
    timer: IDelayedCall | None = None


@dataclass(frozen=True, slots=True)
class Resumed:
    """What a successful resume gives the new connection."""

    nickname: str
    room: str
    missed: list[Event]
    missed_lines: int
    dropped: int
    token: str


def digest(token: str) -> str:
    """What a cluster keeps of a token: its SHA-256, never the token."""
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


class SessionKeeper:
    """Tokens of registered users, and the sessions held for a resume.

    Registered sessions, live or held, are counted per address: when a new
    session (or one resumed from another address) makes an address have
    more than C{max_per_address}, or the server more than C{max_total}, the
    oldest held session of that address (or of the server) ends at once, as
    if its grace period were over.  A live connection is never refused for a
    held session; and a held session is never ended for a connection that
    has not registered (it may be the one coming to resume it).

    @param grace: seconds a dropped session is held; 0 turns resuming off.
    @param buffer: lines kept for a held session.
    @param max_bytes: bytes kept for a held session.
    @param max_per_address: sessions, live or held, of one address.
    @param max_total: sessions, live or held, in all.
    @param shared: what the other nodes of a cluster see of the sessions;
        by default nothing (L{LocalSessions}).
    """

    def __init__(
        self,
        registry: IRegistry,
        clock: IReactorTime,
        grace: float,
        buffer: int,
        max_bytes: int,
        max_per_address: int | None = None,
        max_total: int | None = None,
        shared: ISharedSessions | None = None,
    ) -> None:
        self._registry = registry
        self._shared = shared if shared is not None else LocalSessions()
        # Whether anyone else keeps the tokens' digests: a server alone
        # (LocalSessions, which keeps nothing) is not made a SHA-256 of each
        # token it issues (0.47 us a registration with resuming on).
        self._shares_tokens = shared is not None
        self._shared.watch_moves(self.moved)
        self._clock = clock
        self._grace = grace
        self._buffer = buffer
        self._max_bytes = max_bytes
        self._max_per_address = max_per_address
        self._max_total = max_total
        # By folded nickname: every registered session's record.
        self._records: dict[str, _Record] = {}
        # Records by address, and the held sessions (oldest first) with the
        # reason each was held for, in all and by address.
        self._per_address: Counter[str | None] = Counter()
        self._held: dict[HeldClient, CloseReason] = {}
        self._held_by_address: dict[str | None, dict[HeldClient, None]] = {}
        self._stopped = False
        #: Called with (the old client, the new session) as a session on
        #: this node is taken over: the accounts carry its identification.
        self.on_take_over: Callable[[IChatClient, IChatSession], None] | None = None

    @property
    def enabled(self) -> bool:
        """Whether sessions are held and resumed at all."""
        return self._grace > 0

    def __len__(self) -> int:
        """How many sessions are held now."""
        return len(self._held)

    def issue(self, session: IChatSession) -> str | None:
        """Give the newly registered C{session} a token (None when off)."""
        if self._grace <= 0:  # not self.enabled: a call less a welcome
            return None
        token = secrets.token_urlsafe(TOKEN_BYTES)
        self._add(fold(session.nickname), _Record(token, session, None), session)
        self._store(session.nickname, token)
        return token

    def _add(self, key: str, record: _Record, session: IChatSession) -> None:
        """Keep C{record}, now C{session}'s; make room for it if need be."""
        old = self._records.pop(key, None)
        if old is not None:
            self._count_out(old)
        self._records[key] = record
        self._count_in(record, session)

    def _count_in(self, record: _Record, session: IChatSession) -> None:
        """C{record} is live, on C{session}: count it against its address."""
        address = record.address = address_key(session.host)
        self._per_address[address] += 1
        # Make room: end the oldest held sessions of the address, then of
        # the server, while there are too many.
        limit = self._max_per_address
        if limit is not None and address is not None:
            while self._per_address[address] > limit and self._release(
                self._held_by_address.get(address), per_address=True
            ):
                pass
        limit = self._max_total
        if limit is not None:
            while len(self._records) > limit and self._release(
                self._held, per_address=False
            ):
                pass

    def _count_out(self, record: _Record) -> None:
        """C{record} is gone, or moves: it no longer counts where it did."""
        self._per_address[record.address] -= 1
        if not self._per_address[record.address]:
            del self._per_address[record.address]
        if isinstance(record.client, HeldClient):
            self._unhold(record)

    def _unhold(self, record: _Record) -> None:
        held: HeldClient = record.client  # type: ignore[assignment]
        del self._held[held]
        by_address = self._held_by_address[record.address]
        del by_address[held]
        if not by_address:
            del self._held_by_address[record.address]

    def _release(
        self, held: "dict[HeldClient, object] | None", per_address: bool
    ) -> bool:
        """End the oldest of C{held}, to keep to a limit; False if none."""
        if not held:
            return False
        oldest = next(iter(held))
        log.info(
            "held session of {nickname} ended early, to keep to {limit}",
            nickname=shown(oldest.nickname),
            limit="--max-per-ip" if per_address else "--max-clients",
        )
        self.expire(oldest, self._held[oldest])
        return True

    def _store(self, nickname: str, token: str) -> None:
        if self._shares_tokens:
            self._shared.store_token(nickname, digest(token))

    def renamed(self, session: IChatSession, old: str, new: str) -> None:
        """C{session} changed its nickname from C{old} to C{new}."""
        record = self._records.get(fold(old))
        if record is not None and record.client is session:
            del self._records[fold(old)]
            self._records[fold(new)] = record

    def hold(
        self, session: IChatSession, reason: CloseReason, unsent: Iterable[Event] = ()
    ) -> bool:
        """Hold C{session}, whose connection is ending; else forget its token.

        A session is held only when resuming is on and C{reason} is one a
        user may come back from (L{CloseReason.holdable}); True if it was.
        Else it left for good (quit, kicked...): its token is dropped.
        C{unsent} is output the connection never sent (it fell too far
        behind): the first missed lines.

        One call and one folding of the nickname for both (they were two
        methods, each folding it): every registered session's end comes
        here, and with resuming off (no tokens) it is one test.
        """
        records = self._records
        if not records:
            return False
        key = fold(session.nickname)
        record = records.get(key)
        if record is None or record.client is not session:
            return False
        if not self.enabled or self._stopped or not reason.holdable:
            del records[key]
            self._count_out(record)
            return False
        held = HeldClient(
            session,
            self,
            self._buffer,
            self._max_bytes,
            self._shared.keep_for,
        )
        held.keep_unsent(unsent)
        self._registry.replace(session, held, events.lost(session.nickname))
        record.client = held
        self._held[held] = reason
        self._held_by_address.setdefault(record.address, {})[held] = None
        record.timer = self._clock.callLater(self._grace, self.expire, held, reason)
        log.info(
            "session of {nickname} held for {grace:g} seconds ({reason})",
            nickname=shown(session.nickname),
            grace=self._grace,
            reason=shown(reason.kind._value_),
        )
        return True

    def forget(self, session: IChatSession) -> None:
        """C{session} left for good (quit, kicked...): drop its token.

        What L{hold} does for a session it does not hold; kept for plugins
        (the server's own close calls L{hold} only).
        """
        if session.nickname is None:
            return
        key = fold(session.nickname)
        record = self._records.get(key)
        if record is not None and record.client is session:
            del self._records[key]
            self._count_out(record)

    def expire(self, held: HeldClient, reason: CloseReason) -> None:
        """End the held session C{held}: the user leaves, for C{reason}."""
        key = fold(held.nickname)
        record = self._records.get(key)
        if record is None or record.client is not held:
            return
        del self._records[key]
        self._count_out(record)
        if record.timer is not None and record.timer.active():
            record.timer.cancel()
        log.info(
            "held session of {nickname} ended ({reason})",
            nickname=shown(held.nickname),
            reason=shown(reason.kind._value_),
        )
        self._registry.unregister(held, reason)

    def resume(
        self, session: IChatSession, nickname: str, token: str
    ) -> "Resumed | None | Deferred[Resumed | None]":
        """Give C{nickname}'s session to C{session}, if C{token} is right.

        A session this node does not have may be on another node of a
        cluster: then the answer comes later.
        """
        record = self._records.get(fold(nickname))
        fresh = secrets.token_urlsafe(TOKEN_BYTES)
        if not self._stopped:
            # A cluster checks and replaces the token in Redis, in one step:
            # a token works once in the whole cluster, never from a copy here.
            d = self._shared.resume(session, nickname, digest(token), digest(fresh))
            if d is not None:
                return d.addCallback(self._resumed_in_cluster, session, nickname, fresh)
        if record is None or not compare_digest(
            record.token.encode("ascii"), token.encode("utf-8", "replace")
        ):
            return None
        return self._take_over(record, session, fresh)

    def _take_over(
        self, record: _Record, session: IChatSession, token: str
    ) -> "Resumed":
        """Give C{record}'s session, held or a ghost, to C{session}."""
        old = record.client
        if self.on_take_over is not None:
            self.on_take_over(old, session)
        # From now on it counts against the new connection's address.  Room
        # is made there first, so that the missed lines tell of it.
        self._count_out(record)
        self._count_in(record, session)
        if isinstance(old, HeldClient):
            if record.timer is not None and record.timer.active():
                record.timer.cancel()
            record.timer = None
            self._registry.replace(old, session, events.back(old.nickname))
            missed, lines = old.missed()
            outcome = (old.nickname, old.room, missed, lines, old.dropped)
        else:
            # A ghost: its connection is still open.  The rooms never heard
            # it was lost, so there is nothing to tell them.
            ghost: IChatSession = old  # type: ignore[assignment]
            outcome = (ghost.nickname, ghost.room, [], 0, 0)
            self._registry.replace(ghost, session, None)
            ghost.hand_over()
        record.client = session
        record.token = token
        return Resumed(*outcome, token=token)

    def _resumed_in_cluster(
        self,
        outcome: "tuple[str, str, list[Event], int] | bool | None",
        session: IChatSession,
        nickname: str,
        token: str,
    ) -> Resumed | None:
        """The cluster took the token and gave C{token} in its place."""
        if outcome is None or outcome is False:
            return None
        if outcome is True:  # this node's session
            record = self._records.get(fold(nickname))
            if record is None:
                return None
            return self._take_over(record, session, token)
        nickname, room, missed, lines = outcome  # type: ignore[misc]
        self._add(fold(nickname), _Record(token, session, None), session)
        return Resumed(nickname, room, missed, lines, 0, token=token)

    def moved(self, client: IChatClient) -> None:
        """C{client}'s session was resumed on another node: let it go here.

        The registry has already taken it out, silently.  A held session
        just ends; a connection still open (a ghost) is closed.
        """
        for key, record in list(self._records.items()):
            if record.client is client:
                del self._records[key]
                self._count_out(record)
                if record.timer is not None and record.timer.active():
                    record.timer.cancel()
        if not isinstance(client, HeldClient):
            client.hand_over()  # type: ignore[attr-defined]

    def end_held_of(self, nickname: str, connection_id: int) -> None:
        """End C{nickname}'s held session if it is connection C{connection_id}'s.

        As if its resume grace had ended: the accounts end it when its
        grace to identify is over (L{chatservice.accounts}).
        """
        record = self._records.get(fold(nickname))
        held = record.client if record is not None else None
        if isinstance(held, HeldClient) and held.connection_id == connection_id:
            self.expire(held, self._held[held])

    def end_held(
        self, host_matches: Callable[[str], bool], reason: CloseReason
    ) -> None:
        """End every held session whose address C{host_matches}, for C{reason}."""
        for record in list(self._records.values()):
            held = record.client
            if (
                isinstance(held, HeldClient)
                and held.host is not None
                and host_matches(held.host)
            ):
                self.expire(held, reason)

    def stop(self) -> None:
        """The server stops: held sessions end now, silently."""
        self._stopped = True
        for record in list(self._records.values()):
            if isinstance(record.client, HeldClient):
                self.expire(record.client, SHUTDOWN)


@command(
    "/resume NICK TOKEN",
    "take back your session after a dropped connection (as your first line)",
    2,
    before_registration=True,
)
def resume_command(session: IChatSession, args: str) -> Result:
    if session.nickname is not None:
        raise ChatError(
            "you already have a nickname; /resume is the first line of a new connection"
        )
    server = session.server
    if not server.sessions.enabled:
        raise ChatError("resume is turned off on this server")
    nickname, token = args.split(None, 1)
    host = session.host
    key = address_key(host)  # an IPv6 /64 is one address
    delay = server.resume_failures.delay(key)
    # Counted as failed until it succeeds, so that attempts made in parallel
    # from one address are slowed down as well.
    server.resume_failures.failed(key)
    waited: Deferred[None] = deferLater(server.clock, delay) if delay else succeed(None)

    def attempt(_: object) -> Deferred[None] | None:
        if session.closing:
            return None  # gone while it waited: the session stays held
        outcome = server.sessions.resume(session, nickname, token.strip())
        if isinstance(outcome, Deferred):
            return outcome.addCallback(finish)
        finish(outcome)
        return None

    def finish(resumed: Resumed | None) -> None:
        if resumed is None:
            log.info(
                "failed /resume as {nickname} by connection {connection_id} "
                "from {host}",
                nickname=shown(claimed_nickname(nickname)),
                connection_id=session.connection_id,
                host=host,
            )
            raise ChatError(RESUME_FAILED)
        server.resume_failures.succeeded(key)
        # An answer: up to --resume-buffer-bytes of missed lines must not
        # count against the new connection's send queue.
        session.answer(
            events.resumed(resumed.nickname, resumed.room, resumed.missed_lines)
        )
        if resumed.dropped:
            session.answer(
                events.notice(
                    "1 older missed line was dropped."
                    if resumed.dropped == 1
                    else f"{resumed.dropped} older missed lines were dropped."
                )
            )
        for event in resumed.missed:
            session.answer(event)
        session.answer(events.notice("End of missed lines."))
        session.answer(events.resume_token(resumed.nickname, resumed.token))
        session.resumed(resumed.nickname, resumed.room)

    return waited.addCallback(attempt)
