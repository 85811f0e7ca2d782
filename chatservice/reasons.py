"""Why a connection ended: a kind from a fixed set, and the details.

A L{CloseReason} is what a connection closes with, from wherever it is
decided (a command, a timer, the send queue, a ban, the cluster) to
everything that reads it: the leave notice the others see
(C{str(reason)}: C{bob has left (quit: lunch)}), the log and the metrics
(only L{CloseReason.kind}, so that no user's text becomes a label), and
resuming (L{CloseReason.holdable}).  Nothing parses the text back.
"""

from dataclasses import dataclass
from enum import Enum


class CloseKind(Enum):
    """The ways a connection ends; each value is the text users and logs see."""

    #: The user typed C{/quit}, maybe with a message.
    QUIT = "quit"
    #: The peer closed the connection, or it broke.
    CONNECTION_LOST = "connection lost"
    #: A registered user sent nothing for C{--idle-timeout}.
    IDLE_TIMEOUT = "idle timeout"
    #: A frame client answered no PING within C{--heartbeat}.
    HEARTBEAT_TIMEOUT = "heartbeat timeout"
    #: No nickname was chosen within C{--register-timeout}.
    REGISTRATION_TIMEOUT = "registration timeout"
    #: More than C{--max-sendq} bytes waited for the client.
    SEND_QUEUE = "send queue exceeded"
    #: An operator kicked the user (L{CloseReason.by}).
    KICKED = "kicked"
    #: An operator banned the user's address.
    BANNED = "banned"
    #: The session was resumed from another connection.
    RESUMED_ELSEWHERE = "resumed elsewhere"
    #: The server is stopping.
    SHUTDOWN = "server shutting down"
    #: A cluster's node gave the nickname to someone else while cut off.
    NICKNAME_TAKEN = "nickname taken elsewhere"
    #: A TLS handshake arrived on a plain port.
    TLS_ON_PLAIN = "wrong protocol (TLS on a plain port)"
    #: An HTTP request arrived on the chat port.
    HTTP = "wrong protocol (HTTP)"
    #: Text (someone typing, another protocol) arrived on a frame port.
    NOT_FRAMES = "wrong protocol (not frames)"
    #: A frame client broke the frame format past recovery (a bad header,
    #: another version, a body over C{--max-frame}); the detail is its code.
    FRAME_ERROR = "frame error"


#: The kinds a user may come back from with C{/resume}: those where the
#: connection went away, not the user.
HOLDABLE = frozenset(
    {
        CloseKind.CONNECTION_LOST,
        CloseKind.IDLE_TIMEOUT,
        CloseKind.HEARTBEAT_TIMEOUT,
        CloseKind.SEND_QUEUE,
    }
)

# HOLDABLE by the kinds' values: asked at every registered session's end
# with resuming on, and a kind's hash is Enum.__hash__, in Python (a string
# set's lookup: holdable 91 -> 44 ns, timeit).
_HOLDABLE_VALUES = frozenset(kind._value_ for kind in HOLDABLE)


@dataclass(frozen=True, slots=True)
class CloseReason:
    """Why one connection ended: its kind, who did it, and what they said."""

    kind: CloseKind
    #: The operator who kicked, or None.
    by: str | None = None
    #: Free text (a quit message, a kick or ban reason, an explanation);
    #: may be empty.  Someone's text: never a label.
    detail: str = ""

    def __str__(self) -> str:
        """As the others are told it: C{kicked by root: spam}."""
        # (_value_, the member's own attribute: the value property is two
        # calls through enum.py, 76 ns more, in every departure's notice.)
        text = self.kind._value_
        if self.by is not None:
            text += f" by {self.by}"
        if self.detail:
            text += f": {self.detail}"
        return text

    @property
    def holdable(self) -> bool:
        """Whether the session may be held for a C{/resume}."""
        return self.kind._value_ in _HOLDABLE_VALUES

    @classmethod
    def quit(cls, message: str = "") -> "CloseReason":
        """The user left with C{/quit}, saying C{message}."""
        return cls(CloseKind.QUIT, detail=message)

    @classmethod
    def kicked(cls, by: str, why: str = "") -> "CloseReason":
        """The operator C{by} kicked the user, for C{why}."""
        return cls(CloseKind.KICKED, by=by, detail=why)

    @classmethod
    def banned(cls, why: str = "") -> "CloseReason":
        """The user's address was banned, for C{why}."""
        return cls(CloseKind.BANNED, detail=why)


#: The reasons that carry no detail, made once.
CONNECTION_LOST = CloseReason(CloseKind.CONNECTION_LOST)
IDLE_TIMEOUT = CloseReason(CloseKind.IDLE_TIMEOUT)
HEARTBEAT_TIMEOUT = CloseReason(CloseKind.HEARTBEAT_TIMEOUT)
REGISTRATION_TIMEOUT = CloseReason(CloseKind.REGISTRATION_TIMEOUT)
SEND_QUEUE = CloseReason(CloseKind.SEND_QUEUE)
RESUMED_ELSEWHERE = CloseReason(CloseKind.RESUMED_ELSEWHERE)
SHUTDOWN = CloseReason(CloseKind.SHUTDOWN)
TLS_ON_PLAIN = CloseReason(CloseKind.TLS_ON_PLAIN)
HTTP = CloseReason(CloseKind.HTTP)
NOT_FRAMES = CloseReason(CloseKind.NOT_FRAMES)
