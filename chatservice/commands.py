"""What a line means: chat, a nickname, or a command from the table.

L{dispatch} is the one entry point: the protocol hands it each clean input
line.  Commands are data, L{Command} entries in L{COMMANDS}; the checks that
apply to every command (does it exist, does it need a nickname, enough
arguments?) are made once, in L{dispatch}, and C{/help} is generated from
the table.  Errors are raised as L{ChatError}s; the protocol shows them.
"""

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import implementer

from . import wire
from .errors import ChatError, NotRegistered, UnknownCommand, UsageError
from .interfaces import IChatSession, ICommand
from .text import check_nickname

Result = Deferred[object] | None


@implementer(ICommand)
@dataclass(frozen=True, slots=True)
class Command:
    """One entry of the command table; see L{ICommand}."""

    name: str
    run: Callable[[IChatSession, str], Result]
    usage: str
    help: str
    min_args: int = 0
    before_registration: bool = False

    def __call__(self, session: IChatSession, args: str) -> Result:
        """Run the command; see L{ICommand.__call__}."""
        return self.run(session, args)


COMMANDS: dict[str, Command] = {}


def command(
    usage: str, help: str, min_args: int = 0, before_registration: bool = False
) -> Callable[[Callable[[IChatSession, str], Result]], Command]:
    """Add the decorated function to L{COMMANDS}, named by its C{usage}."""

    def add(run: Callable[[IChatSession, str], Result]) -> Command:
        name = usage.split()[0].lstrip("/")
        entry = Command(name, run, usage, help, min_args, before_registration)
        COMMANDS[name] = entry
        return entry

    return add


def dispatch(session: IChatSession, text: str) -> Result:
    """Act on one clean input line from C{session}.

    A line starting with C{/} is a command, except that C{//} escapes a
    chat line that starts with C{/}.  Before registration any other line is
    a nickname; after it, a chat line for the user's room.  Blank lines are
    ignored.
    """
    if not text.strip():
        return None
    if text[0] == "/":
        if text[:2] != "//":
            name, _, args = text[1:].partition(" ")
            return _run(session, name, args.strip())
        text = text[1:]
    if session.nickname is None:
        return _choose_nickname(session, text.strip())
    session.registry.broadcast(session.room, wire.chat(session.nickname, text), session)
    return None


def _run(session: IChatSession, name: str, args: str) -> Result:
    entry = COMMANDS.get(name.lower())
    if entry is None:
        raise UnknownCommand(name)
    if session.nickname is None and not entry.before_registration:
        raise NotRegistered()
    if len(args.split(None, entry.min_args)) < entry.min_args:
        raise UsageError(entry.usage)
    return entry(session, args)


def _choose_nickname(session: IChatSession, name: str) -> Result:
    d = session.registry.register(session, check_nickname(name))
    d.addCallback(session.registered)
    d.addCallback(_welcome, session)
    return d


def _welcome(nickname: str, session: IChatSession) -> Result:
    def show(names: list[str]) -> None:
        session.deliver(
            wire.notice(
                f"Welcome, {nickname}! Online ({len(names)}): {', '.join(names)}"
            )
            + wire.notice("Type /help for the commands.")
        )

    return session.registry.nicknames().addCallback(show)


@command("/nick NAME", "choose or change your nickname", 1, before_registration=True)
def _nick(session: IChatSession, args: str) -> Result:
    if session.nickname is None:
        return _choose_nickname(session, args)
    if args == session.nickname:
        raise ChatError(f"you are already {args}")
    d = session.registry.rename(session, check_nickname(args))
    return d.addCallback(session.renamed)


@command("/who", "list who is online")
def _who(session: IChatSession, args: str) -> Result:
    def show(names: list[str]) -> None:
        session.deliver(wire.notice(f"Online ({len(names)}): {', '.join(names)}"))

    return session.registry.nicknames().addCallback(show)


@command("/me ACTION", "act, shown as * yourname ACTION", 1)
def _me(session: IChatSession, args: str) -> Result:
    session.registry.broadcast(
        session.room, wire.action(session.nickname, args), session
    )
    return None


@command("/msg NICK TEXT", "send TEXT privately to NICK", 2)
def _msg(session: IChatSession, args: str) -> Result:
    target, text = args.split(None, 1)
    d = session.registry.send_private(target, wire.private(session.nickname, text))
    return d.addCallback(lambda name: session.deliver(wire.private_echo(name, text)))


@command(
    "/ping [TOKEN]",
    "check the connection: the server answers *** PONG TOKEN",
    before_registration=True,
)
def _ping(session: IChatSession, args: str) -> Result:
    session.deliver(wire.pong(args))
    return None


@command(
    "/quit [REASON]", "leave the chat, telling the others why", before_registration=True
)
def _quit(session: IChatSession, args: str) -> Result:
    session.quit(f"quit: {args}" if args else "quit")
    return None


@command("/help", "list the commands", before_registration=True)
def _help(session: IChatSession, args: str) -> Result:
    width = max(len(entry.usage) for entry in COMMANDS.values())
    session.deliver(
        wire.notice(
            "Commands (a line without / is chat; // sends a line starting with /):"
        )
        + b"".join(
            wire.notice(f"{entry.usage:<{width}}  {entry.help}")
            for entry in COMMANDS.values()
        )
    )
    return None
