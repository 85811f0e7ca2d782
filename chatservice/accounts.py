"""Accounts: registered nicknames, proving them, and messages left for them.

A user claims their nickname with C{/register [EMAIL] PASSWORD}; on a later
connection they prove it with C{/identify PASSWORD} (or C{/nick NAME
PASSWORD}, IRC's C{PASS}, SASL PLAIN).  Whoever takes a registered nickname
without proving it within C{--identify-grace} seconds is renamed to a guest
name (L{Accounts}, which the server's hooks call at every registration,
rename and end of a session, so every front end gets the same behaviour);
the grace is an address's for a nickname, not renewed by taking it again
(L{GRACE_MEMORY}), and the owner may take the nickname back sooner
(L{Accounts.evict}).
The commands are in L{chatservice.accountcommands}.

Passwords are kept as scrypt hashes with the operators' parameters
(L{chatservice.operators.hash_password}), hashed and checked in the
thread pool, never on the reactor thread.  Guesses are slowed down per
address and per account (L{chatservice.throttle.SerialChecks}, as for
C{/oper}), and at most one scrypt per address runs at once.

Registering a nickname costs no database round trip: the folded
registered nicknames are kept in memory (L{Accounts.known}), read from the
store at start and kept current here and, in a cluster, from the other
nodes' announcements (L{ISharedAccounts}).

A private message to a registered user who is offline is kept in the
store (L{Letter}; at most L{MAILBOX_MESSAGES} or L{MAILBOX_BYTES} per
recipient) and delivered, with its date, when they identify.
"""

import random
import re
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from math import ceil
from typing import Any

from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from zope.interface import implementer

from . import events, wire
from .errors import ChatError, NicknameInUse
from .hooks import SessionHooks
from .interfaces import IAccountStore, IChatSession, ISharedAccounts
from .logs import gate, shown
from .operators import DEFAULT_N, DEFAULT_P, DEFAULT_R, hash_password, verify_password
from .reasons import CloseReason
from .text import fold
from .throttle import (
    Allowances,
    FailureDelay,
    SerialChecks,
    TooManyAttempts,
    address_key,
)

log = Logger(observer=gate)

#: A password's length, in characters.  One word: no spaces.
PASSWORD_MIN = 8
PASSWORD_MAX = 128
#: The longest e-mail address (RFC 5321's path limit).
EMAIL_MAX = 254
#: What one registered user may be left while offline, at most.
MAILBOX_MESSAGES = 100
MAILBOX_BYTES = 64 * 1024
#: Of those, what one address may leave one recipient in a day (a burst
#: of this many, then one every 86400 / LETTERS_PER_ADDRESS seconds), so
#: that one sender cannot fill a mailbox and have everyone else refused.
LETTERS_PER_ADDRESS = 20
#: Guest names: C{Guest} and five digits.  They cannot be registered.
GUEST = re.compile(r"guest[0-9]+")
#: Nicknames nobody may keep (folded): IRC clients send passwords there.
RESERVED = frozenset({"nickserv"})
#: Failures of one account's password before its checks are slowed down,
#: and the longest wait then (per account, whatever the address).
ACCOUNT_FREE = 5
ACCOUNT_CAP = 10.0

#: Seconds an address's grace for a nickname is remembered after it ran
#: out: within them, that address taking the nickname again (by /nick back
#: and forth, a reconnection or a resume) gets what was left of its grace,
#: not a new one, so nobody keeps a registered nickname by renaming.
GRACE_MEMORY = 600.0
#: The most (address, nickname) graces remembered.
GRACES_MAX = 10_000

#: New accounts one address may register in an hour (a burst of this many,
#: then one every 3600 / REGISTRATIONS seconds): a registration costs a
#: scrypt hash and a row kept until it is unregistered.
REGISTRATIONS = 5

#: Addresses remembered per account as its owner's (registered or proven
#: from, since the server started): their checks skip the account's queue.
TRUSTED = 4

#: The answer to every failed identification, whatever was wrong.
IDENTIFY_FAILED = "identification failed: wrong password"
#: The answer when an address or an account has as many checks under way
#: as it may.
TOO_MANY = (
    "too many password attempts under way for this nickname or from your "
    "address; try again when they are answered"
)


@dataclass(frozen=True, slots=True)
class Account:
    """One registered nickname: as registered, its e-mail, its password hash."""

    nickname: str
    email: str | None
    password: str
    created: float


@dataclass(frozen=True, slots=True)
class Letter:
    """A private message kept for a registered user who was offline."""

    when: float
    sender: str
    text: str

    @property
    def size(self) -> int:
        """What it counts against its recipient's L{MAILBOX_BYTES}."""
        return len(self.sender.encode("utf-8")) + len(self.text.encode("utf-8"))


def check_password(password: str, nickname: str) -> str:
    """Return C{password} if it may be an account's, else raise L{ChatError}."""
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        raise ChatError(
            f"a password is {PASSWORD_MIN} to {PASSWORD_MAX} characters, "
            "without spaces",
            "bad_password",
        )
    if any(c.isspace() for c in password):
        raise ChatError("a password is one word, without spaces", "bad_password")
    if fold(password) == fold(nickname):
        raise ChatError("a password must not be the nickname", "bad_password")
    return password


def check_email(email: str) -> str:
    """Return C{email} if it looks like an e-mail address, else raise."""
    local, at, domain = email.rpartition("@")
    if not (at and local and "." in domain and len(email) <= EMAIL_MAX):
        # Not quoted: a password typed first would be shown back.
        raise ChatError(
            "with two words, the first must be an e-mail address: "
            "/register [EMAIL] PASSWORD",
            "bad_email",
        )
    return email


@implementer(IAccountStore)
class MemoryAccountStore:
    """An L{IAccountStore} in memory: for tests, and a server without a store."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}
        self.mailboxes: dict[str, list[Letter]] = {}

    def names(self) -> Deferred[list[str]]:
        """See L{IAccountStore.names}."""
        return succeed(list(self.accounts))

    def get(self, key: str) -> Deferred[Any]:
        """See L{IAccountStore.get}."""
        return succeed(self.accounts.get(key))

    def create(self, key: str, account: Any) -> Deferred[bool]:
        """See L{IAccountStore.create}."""
        if key in self.accounts:
            return succeed(False)
        self.accounts[key] = account
        return succeed(True)

    def set_password(self, key: str, password: str) -> Deferred[bool]:
        """See L{IAccountStore.set_password}."""
        account = self.accounts.get(key)
        if account is None:
            return succeed(False)
        self.accounts[key] = Account(
            account.nickname, account.email, password, account.created
        )
        return succeed(True)

    def delete(self, key: str) -> Deferred[bool]:
        """See L{IAccountStore.delete}."""
        self.mailboxes.pop(key, None)
        return succeed(self.accounts.pop(key, None) is not None)

    def leave(
        self, key: str, message: Any, max_messages: int, max_bytes: int
    ) -> Deferred[bool]:
        """See L{IAccountStore.leave}."""
        if key not in self.accounts:
            return succeed(False)
        box = self.mailboxes.setdefault(key, [])
        size = sum(letter.size for letter in box) + message.size
        if len(box) >= max_messages or size > max_bytes:
            return succeed(False)
        box.append(message)
        return succeed(True)

    def take(self, key: str) -> Deferred[list[Any]]:
        """See L{IAccountStore.take}."""
        return succeed(self.mailboxes.pop(key, []))


@implementer(ISharedAccounts)
class LocalAccounts:
    """The L{ISharedAccounts} of a server alone: nobody to tell."""

    def share_account(self, key: str, registered: bool) -> None:
        """See L{ISharedAccounts.share_account}."""

    def watch_accounts(self, changed: Callable[[str, bool], None]) -> None:
        """See L{ISharedAccounts.watch_accounts}: no other node registers."""


class Accounts(SessionHooks):
    """The accounts of a server: who is registered, who proved it, the grace.

    The server's hooks (L{chatservice.hooks.Hooks}) call it as their core,
    before any plugin: a session that takes a registered nickname, at
    registration or with C{/nick}, is challenged (told to identify, and
    renamed after C{grace} seconds if it has not); a session's state is
    forgotten when it ends.

    @param store: where accounts and their messages are kept.
    @param clock: the server's clock.
    @param run_in_thread: runs the scrypt work off the reactor thread.
    @param grace: seconds to identify before a guest name is given.
    @param shared: tells (and hears from) the other nodes of a cluster.
    @param cost: scrypt's N, R and P for new hashes (tests make them cheap).
    """

    name = "accounts"

    def __init__(
        self,
        store: IAccountStore,
        clock: IReactorTime,
        run_in_thread: Callable[..., Deferred[Any]],
        grace: float = 30.0,
        shared: ISharedAccounts | None = None,
        cost: tuple[int, int, int] = (DEFAULT_N, DEFAULT_R, DEFAULT_P),
    ) -> None:
        self.store = store
        self.clock = clock
        self.grace = grace
        self.shared = shared if shared is not None else LocalAccounts()
        self.shared.watch_accounts(self._changed_elsewhere)
        self.cost = cost
        #: The folded registered nicknames: read at start, kept current.
        self.known: set[str] = set()
        # By connection id: the folded nickname proven, the grace timer,
        # and a password given before registration (IRC PASS, /nick N P).
        self._proven: dict[int, str] = {}
        self._timers: dict[int, IDelayedCall] = {}
        # By connection id: the grace of a session held for a resume.
        self._held_timers: dict[int, IDelayedCall] = {}
        self._pending: dict[int, str] = {}
        # Connections that proved an account with SASL, not yet welcomed.
        self._early: set[int] = set()
        # By connection id, of identified sessions that ended: what they had
        # proven and when, for a resume within resume_grace (oldest first).
        self._departed: dict[int, tuple[str, float]] = {}
        #: Seconds a dropped session may be resumed (--resume-grace).
        self.resume_grace = 60.0
        # (address key, folded nickname) -> when that address's grace for it
        # ends: set by its first challenge, kept GRACE_MEMORY after.
        self._graces: OrderedDict[tuple[str | None, str], float] = OrderedDict()
        # Folded nickname -> the last TRUSTED addresses (keys) it was
        # registered or proven from since the server started.
        self._trusted: dict[str, list[str | None]] = {}
        # Sessions that took a nickname while the accounts were being read.
        self._waiting: list[IChatSession] | None = None
        self._random = random.SystemRandom()
        #: Failed guesses, by address (as /oper counts them).
        self.address_failures = FailureDelay(clock)
        #: Failed guesses, by account, from any address.
        self.account_failures = FailureDelay(clock, free=ACCOUNT_FREE, cap=ACCOUNT_CAP)
        self._address_checks = SerialChecks(clock, self.address_failures, run_in_thread)
        self._account_checks = SerialChecks(
            clock, self.account_failures, self._address_stage
        )
        #: Letters left, by address and recipient: L{LETTERS_PER_ADDRESS} a day.
        self.letters = Allowances(LETTERS_PER_ADDRESS / 86400, LETTERS_PER_ADDRESS)
        #: Registrations, by address: L{REGISTRATIONS} an hour.
        self.registrations = Allowances(REGISTRATIONS / 3600, REGISTRATIONS)
        # New hashes (/register, /password): one at a time per address, one
        # at once in all; they never slow anyone down.
        self._hashing = SerialChecks(
            clock, FailureDelay(clock, free=2**62), run_in_thread, per_key=1
        )

    def start(self) -> Deferred[None]:
        """Read the registered nicknames from the store.

        Sessions that take a nickname before they are read are challenged
        (or not) once they are.
        """
        self._waiting = []

        def read(names: list[str]) -> None:
            self.known.update(names)
            log.info("{count} registered nickname(s)", count=len(names))

        def done(result: object) -> object:
            waiting, self._waiting = self._waiting or [], None
            for session in waiting:
                if not session.closing and session.nickname is not None:
                    self._arrived(session)
            return result

        return self.store.names().addCallback(read).addBoth(done)

    # What commands ask -------------------------------------------------------

    def is_registered(self, nickname: str) -> bool:
        """Whether C{nickname} is registered (on this node's knowledge)."""
        return fold(nickname) in self.known

    @property
    def ready(self) -> bool:
        """Whether the registered nicknames have been read from the store."""
        return self._waiting is None

    def is_identified(self, session: IChatSession) -> bool:
        """Whether C{session} proved its current nickname."""
        nickname = session.nickname
        return nickname is not None and self._proven.get(session.connection_id) == fold(
            nickname
        )

    def is_identified_early(self, session: IChatSession) -> bool:
        """Whether C{session} proved an account before taking a nickname."""
        return session.connection_id in self._early

    def proven_early(self, session: IChatSession, key: str) -> None:
        """C{session} proved C{key} before registration (IRC's SASL).

        It is identified once it takes that nickname; its messages are
        delivered then.
        """
        self._proven[session.connection_id] = key
        self._early.add(session.connection_id)
        self._pending.pop(session.connection_id, None)

    def expect(self, session: IChatSession, password: str) -> None:
        """Check C{password} for the nickname C{session} is about to take."""
        self._pending[session.connection_id] = password

    def check(
        self, session: IChatSession, nickname: str, password: str
    ) -> Deferred[bool]:
        """Whether C{password} is C{nickname}'s: slowed down, in the pool.

        Fails with L{ChatError} (L{TOO_MANY}) when the address or the
        account already has as many checks under way as it may.
        """
        key = fold(nickname)
        address = address_key(session.host)

        def verify(account: Account | None) -> Deferred[bool]:
            encoded = account.password if account is not None else _dummy()
            args = (password, encoded, account is not None)
            try:
                if address in self._trusted.get(key, ()):
                    # An address the account was proven from: guesses from
                    # elsewhere neither queue nor slow it down (they could
                    # lock the owner out); its own are slowed as any.
                    d = self._address_checks.check(address, _verify, *args)
                else:
                    d = self._account_checks.check(key, _verify, address, *args)
            except TooManyAttempts:
                raise ChatError(TOO_MANY) from None
            return d.addErrback(_too_many)

        return self.store.get(key).addCallback(verify)

    def _address_stage(
        self, function: Callable[..., object], address: object, *args: object
    ) -> Deferred[Any]:
        """Run an account's check once its address's turn comes too."""
        try:
            return self._address_checks.check(address, function, *args)
        except TooManyAttempts:
            return fail(TooManyAttempts())

    def may_register(self, session: IChatSession) -> None:
        """Count a registration from C{session}'s address, or raise L{ChatError}."""
        address = address_key(session.host) or ""
        wait = self.registrations.spend(address, 1, self.clock.seconds())
        if wait:
            minutes = ceil(wait / 60)
            raise ChatError(
                f"your address has registered as many nicknames as it may "
                f"({REGISTRATIONS} an hour); try again in {minutes} "
                f"minute{'s' if minutes != 1 else ''}",
                "too_many_registrations",
            )

    def new_hash(self, session: IChatSession, password: str) -> Deferred[str]:
        """The scrypt hash of C{password}, made in the pool."""
        made: list[str] = []
        n, r, p = self.cost

        def work() -> bool:
            made.append(hash_password(password, n=n, r=r, p=p))
            return True

        try:
            d = self._hashing.check(address_key(session.host), work)
        except TooManyAttempts:
            raise ChatError(TOO_MANY) from None
        return d.addCallback(lambda _: made[0])

    # What commands change ----------------------------------------------------

    def proven(self, session: IChatSession) -> Deferred[None]:
        """C{session} proved its nickname: stop the grace, hand it its messages.

        The Deferred fires once they are handed, and never fails (a store
        that fails is logged).  A command must not return it: the command's
        timeout would cancel the read, whose thread deletes the messages
        all the same.
        """
        key = fold(session.nickname)
        cid = session.connection_id
        self._proven[cid] = key
        self._cancel(cid)
        self._trust(key, session)
        log.info(
            "connection {connection_id} identified as {nickname}",
            connection_id=cid,
            nickname=shown(session.nickname),
        )
        session.answer(events.notice(f"You are now identified as {session.nickname}."))
        d = self.store.take(key).addCallback(self._hand_letters, session, key)
        return d.addErrback(
            lambda failure: log.failure(
                "the messages kept for {nickname} could not be read",
                failure,
                nickname=shown(session.nickname),
            )
        )

    def _hand_letters(
        self, letters: list[Letter], session: IChatSession, key: str
    ) -> Deferred[Any] | None:
        """Answer C{session} with its letters; keep them again if it has gone.

        The store deleted them as it read them: a session that closed
        meanwhile (the read takes a thread's turn) would lose them.
        """
        if not letters:
            return None
        if not session.closing:
            _hand_letters(letters, session)
            return None
        # Put back without a bound: they were all there a moment ago.
        puts = [self.store.leave(key, letter, 2**31, 2**62) for letter in letters]
        return gatherResults(puts).addCallback(lambda _: None)

    def registered_now(self, session: IChatSession, account: Account) -> None:
        """C{session} registered its nickname: it is known, and proven."""
        key = fold(account.nickname)
        self.known.add(key)
        self._proven[session.connection_id] = key
        self._cancel(session.connection_id)
        self._trust(key, session)
        self.shared.share_account(key, True)

    def _trust(self, key: str, session: IChatSession) -> None:
        """C{session}'s address proved C{key}: no grace kept, not slowed."""
        address = address_key(session.host)
        self._graces.pop((address, key), None)
        trusted = self._trusted.setdefault(key, [])
        if address in trusted:
            trusted.remove(address)
        trusted.append(address)
        del trusted[:-TRUSTED]

    def forget(self, key: str) -> None:
        """C{key}'s account is gone: nobody is identified as it any more."""
        self.known.discard(key)
        self._trusted.pop(key, None)
        for cid in [cid for cid, proven in self._proven.items() if proven == key]:
            del self._proven[cid]
        self.shared.share_account(key, False)

    def _changed_elsewhere(self, key: str, registered: bool) -> None:
        """Another node registered (or dropped) C{key}."""
        if registered:
            self.known.add(key)
        else:
            self.known.discard(key)
            self._trusted.pop(key, None)
            for cid in [cid for cid, proven in self._proven.items() if proven == key]:
                del self._proven[cid]

    # Session hooks -----------------------------------------------------------

    def registered(self, session: IChatSession) -> None:
        """A session took its first nickname: challenge it if it is registered."""
        self._arrived(session)

    def nick_changed(self, session: IChatSession, old: str, new: str) -> None:
        """A session renamed itself: challenge it if the new name is registered."""
        self._cancel(session.connection_id)
        self._arrived(session)

    def _arrived(self, session: IChatSession) -> None:
        """C{session} took a nickname: check the password it gave, or challenge."""
        if session.closing:
            return  # it went while the registry was deciding
        if self._waiting is not None:
            self._waiting.append(session)
            return
        password = self._pending.pop(session.connection_id, None)
        nickname = session.nickname
        key = fold(nickname)  # once: every registration comes here
        if key in RESERVED:
            self._to_guest(
                session,
                nickname,
                tries=5,
                why=f"{nickname} is the name of a service, not a user's",
            )
            return
        if session.connection_id in self._early:
            self._early.discard(session.connection_id)
            if self.is_identified(session):
                self.proven(session)
                return
        if key not in self.known:
            if password is not None:
                session.answer(
                    events.notice(
                        f"{nickname} is not registered: your password was not "
                        "used (/register PASSWORD claims it)"
                    )
                )
            return
        if self.is_identified(session):
            return
        if password is None:
            self._challenge(session)
            return
        # A password given with the nickname (IRC PASS, /nick NAME PASSWORD).
        d = self.check(session, nickname, password)
        d.addCallback(self._checked_at_registration, session, nickname)
        d.addErrback(self._failed_at_registration, session)

    def expect_nothing(self, session: IChatSession) -> None:
        """Forget a password given for a nickname C{session} did not get."""
        self._pending.pop(session.connection_id, None)

    def _checked_at_registration(
        self, ok: bool, session: IChatSession, nickname: str
    ) -> Deferred[None] | None:
        if session.closing or session.nickname != nickname:
            return None
        if ok:
            return self.proven(session)
        # Logged as /identify's failures are: guesses by /nick NAME PASSWORD
        # or IRC's PASS must show in the log too.
        log.warn(
            "failed identification as {nickname} by connection {connection_id} "
            "from {host}",
            nickname=shown(nickname),
            connection_id=session.connection_id,
            host=session.host,
        )
        session.answer(events.error(IDENTIFY_FAILED, "identify_failed"))
        self._challenge(session)
        return None

    def _failed_at_registration(self, failure: Any, session: IChatSession) -> None:
        failure.trap(ChatError)
        session.answer(events.error(failure.getErrorMessage(), failure.value.code))
        if not session.closing:
            self._challenge(session)

    def disconnected(self, session: IChatSession, reason: CloseReason) -> None:
        """Forget the session; keep its proof while it may be resumed.

        A session held for a resume during its grace is ended when the
        grace is over, so that it does not keep the nickname longer.
        """
        cid = session.connection_id
        # (Its timer taken here and the time read only when needed: every
        # session's end comes here, and few have a timer or a proof.)
        timer = self._timers.pop(cid, None)
        if timer is not None and timer.active():
            if session.nickname is not None and reason.holdable:
                # (Else it is not held: nothing to end.)
                left = max(timer.getTime() - self.clock.seconds(), 0.0)
                self._held_timers[cid] = self.clock.callLater(
                    left, self._held_grace_over, session.server.sessions, session
                )
            timer.cancel()
        proven = self._proven.pop(cid, None)
        departed = self._departed
        if proven is not None or departed:
            now = self.clock.seconds()
            if proven is not None and self.resume_grace > 0:
                departed[cid] = (proven, now)
            # Oldest first: those whose session can no longer be resumed go.
            while departed:
                first = next(iter(departed))
                if now - departed[first][1] <= self.resume_grace:
                    break
                del departed[first]
        self._pending.pop(cid, None)
        self._early.discard(cid)

    def taken_over(self, old: Any, new: IChatSession) -> None:
        """C{new} resumed the session of C{old} (held, or a ghost).

        The resume token proved it is the same user: if the old connection
        had identified, so has the new one (on this node; a session resumed
        on another node of a cluster identifies again).
        """
        cid = old.connection_id
        timer = self._held_timers.pop(cid, None)
        if timer is not None and timer.active():
            timer.cancel()  # the new session is challenged for what is left
        entry = self._departed.pop(cid, None)
        key = entry[0] if entry is not None else self._proven.get(cid)
        if key is not None:
            self._proven[new.connection_id] = key

    def _held_grace_over(self, keeper: Any, session: IChatSession) -> None:
        """The grace of C{session}, held since its connection dropped, is over."""
        self._held_timers.pop(session.connection_id, None)
        if fold(session.nickname) in self.known:
            keeper.end_held_of(session.nickname, session.connection_id)

    # The grace -----------------------------------------------------------------

    def _challenge(self, session: IChatSession) -> None:
        """Tell C{session} to identify; rename it after the grace.

        The grace is its address's for that nickname: taken again within
        L{GRACE_MEMORY} of the first challenge's end, the nickname gets
        what was left of it, and none once it ran out.
        """
        nickname = session.nickname
        key = fold(nickname)
        cid = session.connection_id
        self._cancel(cid)
        left = self._grace_left(address_key(session.host), key)
        if left < 0.05:
            self._to_guest(
                session,
                nickname,
                tries=5,
                why=(
                    f"{nickname} is a registered nickname and your address did "
                    f"not identify within {self.grace:g} seconds of taking it"
                ),
            )
            return
        session.answer(
            events.notice(
                f"{nickname} is a registered nickname: if it is yours, type "
                f"/identify PASSWORD within {round(left, 1):g} seconds; otherwise "
                "you will be renamed to a guest name"
            )
        )
        self._timers[cid] = self.clock.callLater(left, self._expired, session, key)

    def _grace_left(self, address: str | None, key: str) -> float:
        """Seconds left of C{address}'s grace for C{key}, starting it if new."""
        now = self.clock.seconds()
        graces = self._graces
        # Oldest first (a grace's end is its start plus the same grace):
        # forget those remembered long enough, and any beyond the bound.
        while graces:
            first, ends = next(iter(graces.items()))
            if now - ends < GRACE_MEMORY and len(graces) < GRACES_MAX:
                break
            del graces[first]
        ends = graces.get((address, key))
        if ends is None:
            graces[address, key] = ends = now + self.grace
        return ends - now

    def _cancel(self, cid: int) -> None:
        timer = self._timers.pop(cid, None)
        if timer is not None and timer.active():
            timer.cancel()

    def _expired(self, session: IChatSession, key: str) -> None:
        """The grace is over: a session still unproven gets a guest name."""
        self._timers.pop(session.connection_id, None)
        nickname = session.nickname
        if (
            session.closing
            or nickname is None
            or fold(nickname) != key
            or key not in self.known  # unregistered meanwhile
            or self.is_identified(session)
        ):
            return
        self._to_guest(session, nickname, tries=5)

    def unproven_holder(self, nickname: str) -> IChatSession | None:
        """The session on this node holding C{nickname} in its grace, if any.

        Live, or held for a resume: every such session has a grace timer.
        """
        key = fold(nickname)
        for timer in [*self._timers.values(), *self._held_timers.values()]:
            session = timer.args[0] if timer.func == self._expired else timer.args[1]
            if session.nickname is not None and fold(session.nickname) == key:
                return session
        return None

    def evict(self, holder: IChatSession, owner: IChatSession) -> Deferred[None]:
        """The owner proved the nickname C{holder} holds: give C{holder} a guest name.

        A held session (its connection gone) is ended instead.  Fires once
        the nickname is free (or could not be freed).
        """
        cid = holder.connection_id
        nickname = holder.nickname
        self._cancel(cid)
        held = self._held_timers.pop(cid, None)
        log.info(
            "connection {connection_id} took {nickname} back from connection {holder}",
            connection_id=owner.connection_id,
            nickname=shown(nickname),
            holder=shown(cid),
        )
        if held is not None:
            if held.active():
                held.cancel()
            owner.server.sessions.end_held_of(nickname, cid)
            return succeed(None)
        return self._to_guest(
            holder,
            nickname,
            tries=5,
            why=f"the owner of {nickname} identified and took it back",
        )

    def _to_guest(
        self, session: IChatSession, old: str, tries: int, why: str | None = None
    ) -> Deferred[None]:
        guest = f"Guest{self._random.randrange(10_000, 100_000)}"
        if why is None:
            why = (
                f"{old} is a registered nickname and you did not identify "
                f"within {self.grace:g} seconds"
            )

        def renamed(new: str) -> None:
            if getattr(session.connection, "channels", None) == set():
                # An IRC user in no channel hears of it from nobody else.
                session.deliver(events.renamed(old, new))
            session.renamed(new)
            session.deliver(events.notice(f"{why}: you are now {new}"))

        def taken(failure: Any) -> Deferred[None] | None:
            failure.trap(NicknameInUse)
            if tries > 1 and not session.closing:
                return self._to_guest(session, old, tries - 1, why)
            session.disconnect(
                CloseReason.kicked("server", f"{old} is a registered nickname")
            )
            return None

        d = session.registry.rename(session, guest).addCallbacks(renamed, taken)
        return d.addErrback(
            lambda failure: log.failure("a guest rename failed", failure)
        )


def _verify(password: str, encoded: str, exists: bool) -> bool:
    """Whether C{password} is the one hashed: as long for no account."""
    return verify_password(password, encoded) and exists


def _dummy() -> str:
    from .operators import _dummy_hash

    return _dummy_hash()


def _too_many(failure: Any) -> None:
    failure.trap(TooManyAttempts)
    raise ChatError(TOO_MANY)


def _hand_letters(letters: list[Letter], session: IChatSession) -> None:
    """Answer C{session} with the messages kept for it, dated."""
    # Oldest first, whatever order the store kept them in (one put back
    # after a session closed is after the newer ones there).
    letters = sorted(letters, key=lambda letter: letter.when)
    count = len(letters)
    shown_lines: list[events.Event] = [
        events.notice(
            f"{count} message{'s' if count != 1 else ''} came while you were "
            "away, times in UTC:"
        )
    ]
    day = None
    for letter in letters:
        date = wire.utc(letter.when)[:10]
        if date != day:
            day = date
            shown_lines.append(events.notice(f"{date}:"))
        shown_lines.append(
            events.Event(
                "private",
                letter.text,
                nick=letter.sender,
                when=letter.when,
                history=True,
            )
        )
    shown_lines.append(
        events.notice("End of the messages that came while you were away.")
    )
    session.answer_all(shown_lines)
