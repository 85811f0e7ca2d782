"""The exceptions of chatservice.

A L{ChatError} is something a user did wrong: its message is the text of the
C{!!! } line the user is sent, written to the wire in one place
(L{chatservice.session.Session}).  L{StartupError} ends the server
before it serves anyone, with one readable line.
"""


class ChatError(Exception):
    """A user's mistake; C{str(error)} is the text shown after C{!!! }.

    C{code} names the kind of mistake for programs (frame clients get it
    with the text): stable, lower case, with underscores.
    """

    code = "error"

    def __init__(self, message: str = "", code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class UnknownCommand(ChatError):
    """The command does not exist."""

    code = "unknown_command"

    def __init__(self, name: str) -> None:
        if len(name) > 32:
            name = name[:31] + "\N{HORIZONTAL ELLIPSIS}"
        super().__init__(f"unknown command /{name}; type /help for the list")


class UsageError(ChatError):
    """A command was given too few or malformed arguments."""

    code = "usage"

    def __init__(self, usage: str) -> None:
        super().__init__(f"usage: {usage}")


class NotRegistered(ChatError):
    """The command needs a nickname first."""

    code = "not_registered"

    def __init__(self) -> None:
        super().__init__("choose a nickname first: type it, or /nick NAME")


class InvalidName(ChatError):
    """A nickname or room name breaks the rules; the message says which."""

    code = "invalid_name"


class NicknameInUse(ChatError):
    """Somebody else already has the nickname (ignoring case)."""

    code = "nickname_in_use"

    def __init__(self, nickname: str) -> None:
        super().__init__(f"the nickname {nickname} is taken; choose another one")


class NoSuchRoom(ChatError):
    """There is no room of that name."""

    code = "no_such_room"

    def __init__(self, room: str) -> None:
        super().__init__(f"there is no room {room}; try /rooms")


class NoSuchNickname(ChatError):
    """Nobody online has the nickname."""

    code = "no_such_nickname"

    def __init__(self, nickname: str) -> None:
        super().__init__(f"nobody called {nickname} is online; try /who")


class StartupError(SystemExit, Exception):
    """The server cannot start; the message is one line for the operator.

    Under C{twistd -n} a C{SystemExit} ends the process with its message and
    no traceback.  When twistd daemonizes, the child reports any C{Exception}
    through its status pipe and the parent prints it and exits non-zero;
    a plain C{SystemExit} would bypass that.  Being both gives one clean line
    either way.
    """
