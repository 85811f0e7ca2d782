"""The account commands: C{/register}, C{/identify}, C{/password}, C{/unregister}...

Each is a L{chatservice.commands.Command}, found by the plugin scan through
C{chatservice/plugins/builtin.py}; what they act on is the server's
L{chatservice.accounts.Accounts}.  No password is ever logged, echoed or
put in an error: the log says who registered, identified or failed, and
from where.
"""

import time

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from . import events
from .accounts import (
    GUEST,
    IDENTIFY_FAILED,
    LETTERS_PER_ADDRESS,
    MAILBOX_BYTES,
    MAILBOX_MESSAGES,
    RESERVED,
    Account,
    Accounts,
    Letter,
    check_email,
    check_password,
)
from .commands import Result, command
from .errors import ChatError, NicknameInUse, NoSuchNickname, UsageError
from .interfaces import IChatSession
from .logs import gate, shown
from .text import fold
from .throttle import address_key
from .welcome import choose_nickname

log = Logger(observer=gate)


def _accounts(session: IChatSession) -> Accounts:
    return session.server.accounts  # type: ignore[no-any-return]


@command(
    "/register [EMAIL] PASSWORD",
    "claim your nickname: later, /identify PASSWORD proves it is yours",
    1,
)
def register_command(session: IChatSession, args: str) -> Result:
    words = args.split()
    if len(words) > 2 or (len(words) == 2 and "@" not in words[0]):
        raise UsageError("/register [EMAIL] PASSWORD (a password has no spaces)")
    email = check_email(words[0]) if len(words) == 2 else None
    nickname = session.nickname
    password = check_password(words[-1], nickname)
    accounts = _accounts(session)
    key = fold(nickname)
    if key in accounts.known:
        raise ChatError(f"{nickname} is registered already", "registered_already")
    if GUEST.fullmatch(key):
        raise ChatError("guest names cannot be registered; choose another nickname")
    accounts.may_register(session)

    def create(encoded: str) -> Deferred[bool]:
        account = Account(nickname, email, encoded, time.time())
        return accounts.store.create(key, account).addCallback(created, account)

    def created(ok: bool, account: Account) -> None:
        if not ok:
            raise ChatError(f"{nickname} is registered already", "registered_already")
        accounts.registered_now(session, account)
        log.info(
            "connection {connection_id} from {host} registered {nickname}",
            connection_id=session.connection_id,
            host=session.host,
            nickname=shown(nickname),
        )
        session.answer(
            events.notice(
                f"{nickname} is now registered to you; on later connections "
                "prove it with /identify PASSWORD"
            )
        )

    return accounts.new_hash(session, password).addCallback(create)


@command("/identify PASSWORD", "prove that your registered nickname is yours", 1)
def identify_command(session: IChatSession, args: str) -> Result:
    accounts = _accounts(session)
    nickname = session.nickname
    if accounts.is_identified(session):
        raise ChatError(f"you are identified as {nickname} already")
    if not accounts.is_registered(nickname):
        raise ChatError(
            f"{nickname} is not registered; /register PASSWORD claims it",
            "not_registered_nickname",
        )
    d = accounts.check(session, nickname, args)

    def checked(ok: bool) -> Deferred[object] | None:
        if session.closing:
            return None
        if not ok:
            _log_failure(session, nickname)
            raise ChatError(IDENTIFY_FAILED, "identify_failed")
        if session.nickname != nickname:
            # The grace ended while the password was checked: the owner
            # gets the nickname back, if nobody took it meanwhile, proven
            # as it is taken (as SASL's proof is).
            accounts.proven_early(session, fold(nickname))
            guest = session.nickname
            return session.registry.rename(session, nickname).addCallbacks(
                back, lost_it, callbackArgs=(guest,)
            )
        accounts.proven(session)  # not waited for: see Accounts.proven
        return None

    def back(new: str, guest: str) -> None:
        if getattr(session.connection, "channels", None) == set():
            # An IRC user in no channel hears of it from nobody else.
            session.deliver(events.renamed(guest, new))
        session.renamed(new)

    def lost_it(failure: Failure) -> None:
        failure.trap(NicknameInUse)
        raise ChatError(
            f"your password is right, but you were renamed while it was checked "
            f"and someone took {nickname} meanwhile",
            "identify_failed",
        )

    return d.addCallback(checked)


def regain(
    failure: Failure, session: IChatSession, name: str, password: str
) -> Deferred[object]:
    """C{/nick NAME PASSWORD} found NAME taken: take it back if held unproven.

    That is, if its holder is in its grace (has not identified) on this
    node and PASSWORD is right.  The holder gets a guest name (a held
    session of theirs ends), and C{session} takes the nickname,
    identified.  Otherwise the failure (L{NicknameInUse}) stands.
    """
    failure.trap(NicknameInUse)
    accounts = _accounts(session)
    holder = accounts.unproven_holder(name)
    if holder is None or holder is session:
        return failure  # type: ignore[return-value]

    def checked(ok: bool) -> Deferred[object] | None:
        if not ok:
            _log_failure(session, name)
            raise ChatError(IDENTIFY_FAILED, "identify_failed")
        if session.closing:
            return None
        if (
            holder.nickname is not None
            and fold(holder.nickname) == fold(name)
            and not accounts.is_identified(holder)
        ):
            return accounts.evict(holder, session).addCallback(take)
        return take(None)

    def take(_: object) -> Deferred[object]:
        # Proven as it is taken (as SASL's proof is): no grace, no notice.
        accounts.proven_early(session, fold(name))
        if session.nickname is None:
            return choose_nickname(session, name)  # type: ignore[return-value]
        old = session.nickname

        def renamed(new: str) -> None:
            if getattr(session.connection, "channels", None) == set():
                # An IRC user in no channel hears of it from nobody else.
                session.deliver(events.renamed(old, new))
            session.renamed(new)

        return session.registry.rename(session, name).addCallback(renamed)

    return accounts.check(session, name, password).addCallback(checked)


def _log_failure(session: IChatSession, nickname: str) -> None:
    log.warn(
        "failed identification as {nickname} by connection {connection_id} from {host}",
        nickname=shown(nickname),
        connection_id=session.connection_id,
        host=session.host,
    )


@command("/password OLD NEW", "change the password of your registered nickname", 2)
def password_command(session: IChatSession, args: str) -> Result:
    words = args.split()
    if len(words) != 2:
        raise UsageError("/password OLD NEW (a password has no spaces)")
    old, new = words
    accounts = _accounts(session)
    nickname = session.nickname
    if not accounts.is_identified(session):
        raise ChatError(f"identify as {nickname} first", "not_identified")
    check_password(new, nickname)
    key = fold(nickname)

    def checked(ok: bool) -> Deferred[object]:
        if not ok:
            _log_failure(session, nickname)
            raise ChatError(IDENTIFY_FAILED, "identify_failed")
        return accounts.new_hash(session, new).addCallback(
            lambda encoded: accounts.store.set_password(key, encoded)
        )

    def changed(ok: object) -> None:
        if not ok:
            raise ChatError(f"{nickname} is no longer registered")
        log.info(
            "connection {connection_id} changed the password of {nickname}",
            connection_id=session.connection_id,
            nickname=shown(nickname),
        )
        session.answer(events.notice(f"The password of {nickname} was changed."))

    return (
        accounts.check(session, nickname, old).addCallback(checked).addCallback(changed)
    )


@command(
    "/unregister PASSWORD",
    "delete the account of your nickname, and the messages kept for it",
    1,
)
def unregister_command(session: IChatSession, args: str) -> Result:
    accounts = _accounts(session)
    nickname = session.nickname
    if not accounts.is_identified(session):
        raise ChatError(f"identify as {nickname} first", "not_identified")
    key = fold(nickname)

    def checked(ok: bool) -> Deferred[object]:
        if not ok:
            _log_failure(session, nickname)
            raise ChatError(IDENTIFY_FAILED, "identify_failed")
        return accounts.store.delete(key)

    def deleted(_: object) -> None:
        accounts.forget(key)
        log.info(
            "connection {connection_id} unregistered {nickname}",
            connection_id=session.connection_id,
            nickname=shown(nickname),
        )
        session.answer(
            events.notice(
                f"{nickname} is no longer registered; its account is deleted."
            )
        )

    return (
        accounts.check(session, nickname, args)
        .addCallback(checked)
        .addCallback(deleted)
    )


@command(
    "/dropaccount NICK",
    "delete NICK's account and the messages kept for it",
    1,
    operator_only=True,
)
def dropaccount_command(session: IChatSession, args: str) -> Result:
    target = args.split()[0]
    key = fold(target)
    accounts = _accounts(session)

    def deleted(existed: bool) -> None:
        if not existed:
            raise ChatError(f"{target} is not registered", "not_registered_nickname")
        accounts.forget(key)
        log.info(
            "operator {operator} ({nickname}) dropped the account {target}",
            operator=shown(session.operator),
            nickname=shown(session.nickname),
            target=shown(target),
        )
        session.answer(events.notice(f"The account {target} was deleted."))

    return accounts.store.delete(key).addCallback(deleted)


def leave_for(
    failure: Failure, session: IChatSession, target: str, text: str
) -> Deferred[None]:
    """C{/msg} found C{target} offline: keep the message if they are registered.

    Otherwise the failure (L{NoSuchNickname}) stands, as for anyone offline.
    """
    failure.trap(NoSuchNickname)
    accounts = _accounts(session)
    if not accounts.is_registered(target):
        return failure  # type: ignore[return-value]
    sender = session.nickname
    if accounts.is_registered(sender) and not accounts.is_identified(session):
        raise ChatError(
            f"{target} is offline; identify as {sender} to leave them a message",
            "not_identified",
        )
    key = fold(target)
    address = address_key(session.host) or ""
    if accounts.letters.spend(f"{address} {key}", 1, session.server.clock.seconds()):
        raise ChatError(
            f"{target} is offline, and your address has left them as many "
            f"messages as it may ({LETTERS_PER_ADDRESS} a day); yours was not kept",
            "mailbox_full",
        )
    letter = Letter(time.time(), sender, text)

    def left(ok: bool) -> None:
        if not ok:
            raise ChatError(
                f"{target} is offline and has as many messages waiting as "
                f"they may ({MAILBOX_MESSAGES}, or {MAILBOX_BYTES // 1024} KiB); "
                "yours was not kept",
                "mailbox_full",
            )
        session.answer(events.private_echo(target, text))
        session.answer(
            events.notice(
                f"{target} is offline: your message was kept, and will be "
                "delivered when they identify"
            )
        )

    return accounts.store.leave(
        key, letter, MAILBOX_MESSAGES, MAILBOX_BYTES
    ).addCallback(left)


#: The names IRC clients send account commands to (C{/msg NickServ
#: IDENTIFY PASSWORD}), folded.  What is sent there is an account command,
#: never a private message: nobody can take these nicknames (see
#: L{chatservice.accounts.Accounts}) and read other people's passwords.
SERVICES = RESERVED


def nickserv(session: IChatSession, text: str) -> Result:
    """C{/msg NickServ IDENTIFY|REGISTER|...}: the account commands, by message.

    C{IDENTIFY [NICK] PASSWORD} (NICK, if given, must be your nickname),
    C{REGISTER PASSWORD [EMAIL]} (NickServ's order), C{PASSWORD OLD NEW},
    C{UNREGISTER PASSWORD}, C{REGAIN NICK PASSWORD} (C{/nick NICK
    PASSWORD}; or C{RECOVER}, C{GHOST}); anything else is answered with how
    to use it.
    """
    words = text.split()
    verb = words[0].upper() if words else ""
    rest = words[1:]
    if verb == "IDENTIFY" and rest:
        if len(rest) == 2 and fold(rest[0]) != fold(session.nickname):
            # Not quoted: it may be a password (IDENTIFY PASSWORD PASSWORD).
            raise ChatError(
                f"you are {session.nickname}: IDENTIFY NICK PASSWORD proves your "
                "own nickname; /nick NICK PASSWORD proves another"
            )
        return identify_command(session, rest[-1])
    if verb == "REGISTER" and rest:
        return register_command(session, " ".join(reversed(rest[:2])))
    if verb in ("PASSWORD", "SET") and len(rest) >= 2:
        return password_command(session, " ".join(rest[-2:]))
    if verb in ("UNREGISTER", "DROP") and rest:
        return unregister_command(session, rest[-1])
    if verb in ("REGAIN", "RECOVER", "GHOST") and len(rest) == 2:
        return session.server.commands["nick"](session, " ".join(rest))
    session.answer(
        events.notice(
            "NickServ understands IDENTIFY [NICK] PASSWORD, REGISTER PASSWORD "
            "[EMAIL], PASSWORD OLD NEW, UNREGISTER PASSWORD and REGAIN NICK "
            "PASSWORD (or use /help)"
        )
    )
    return None
