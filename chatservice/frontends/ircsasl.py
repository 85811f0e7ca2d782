"""SASL PLAIN for IRC clients: identify before registration, over TLS only.

A client that was granted the C{sasl} capability (offered on TLS
connections only, see L{irctable.offered_capabilities}) sends
C{AUTHENTICATE PLAIN}, is answered C{AUTHENTICATE +}, then sends
base64 of C{authzid NUL authcid NUL password} in chunks of at most 400
bytes (a chunk of exactly 400 means more follows; C{+} is an empty one).
The account (C{authcid}) is a registered nickname; its password is checked
as C{/identify}'s is (L{chatservice.accounts}), slowed down the same way.
Success is 900 and 903, and the user is identified for that nickname once
they take it (usually with the NICK they are registering with); failure is
904, an unknown mechanism 908 and 904, an abort (C{AUTHENTICATE *}) 906, a
second exchange after success 907, and a message over 4 KiB 905.
"""

import binascii
from base64 import b64decode

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure
from twisted.words.protocols import irc

from ..errors import ChatError
from ..logs import shown
from ..text import fold
from .ircformat import SERVER, message
from .irctable import Connection, Numeric, irc_command, log

#: The longest SASL message, decoded from all its chunks (bytes of base64).
SASL_MAX = 4096
#: A chunk this long means another one follows.
CHUNK = 400


class _Exchange:
    """A SASL exchange under way: the base64 received so far."""

    __slots__ = ("data", "done")

    def __init__(self) -> None:
        self.data = ""
        self.done = False


@irc_command("AUTHENTICATE", 1, before_registration=True)
def authenticate(conn: Connection, params: list[str]) -> "Deferred[object] | None":
    """One step of a SASL exchange; see the module docstring."""
    session = conn.session
    accounts = session.server.accounts
    if "sasl" not in conn.caps:
        raise Numeric("904", "SASL authentication failed: request the sasl capability")
    if session.nickname is not None or accounts.is_identified_early(session):
        raise Numeric("907", "You have already authenticated using SASL")
    argument = params[0]
    exchange = conn.sasl
    if argument == "*":
        conn.sasl = None
        raise Numeric("906", "SASL authentication aborted")
    if exchange is None:
        if argument.upper() != "PLAIN":
            conn.numeric("908", "PLAIN", "are available SASL mechanisms")
            raise Numeric("904", "SASL authentication failed")
        conn.sasl = _Exchange()
        conn._answer_raw(message(None, "AUTHENTICATE", "+", trailing=False))
        return None
    if exchange.done:
        return None  # a check under way: its answer ends the exchange
    if argument != "+":
        exchange.data += argument
    if len(exchange.data) > SASL_MAX:
        conn.sasl = None
        raise Numeric("905", "SASL message too long")
    if len(argument) == CHUNK:
        return None  # more follows
    exchange.done = True
    return _check(conn, exchange.data)


def _check(conn: Connection, data: str) -> "Deferred[object] | None":
    session = conn.session
    accounts = session.server.accounts
    try:
        fields = b64decode(data, validate=True).decode("utf-8").split("\0")
    except (binascii.Error, ValueError):
        fields = []
    if len(fields) != 3 or not fields[1] or (fields[0] and fields[0] != fields[1]):
        conn.sasl = None
        raise Numeric("904", "SASL authentication failed")
    # An unknown account is checked too (against a dummy hash), so that the
    # answer takes as long as for a registered one.
    account, password = fields[1], fields[2]

    def checked(ok: bool) -> None:
        conn.sasl = None
        if not ok:
            log.warn(
                "failed SASL identification as {nickname} by connection "
                "{connection_id} from {host}",
                # An authcid that is no account may be a misplaced password.
                nickname=shown(account)
                if accounts.is_registered(account)
                else "(unknown account)",
                connection_id=session.connection_id,
                host=session.host,
            )
            raise Numeric("904", "SASL authentication failed")
        accounts.proven_early(session, fold(account))
        who = session.nickname or conn.nick_wanted or "*"
        conn.numeric(
            "900",
            f"{who}!{who}@{SERVER}",
            account,
            f"You are now logged in as {account}",
        )
        conn.numeric("903", "SASL authentication successful")

    def refused(failure: Failure) -> None:
        failure.trap(ChatError)
        conn.sasl = None
        raise Numeric("904", f"SASL authentication failed: {failure.getErrorMessage()}")

    d = accounts.check(session, account, password)
    return d.addCallbacks(checked, refused)


__all__ = ["authenticate", "irc"]
