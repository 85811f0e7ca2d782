"""What a line means: chat, a nickname, or a command from the table.

L{dispatch} is the one entry point: the protocol hands it each clean input
line.  Commands are data: L{ICommand} plugins (the built-in ones are
L{Command}s made with L{command}, in L{chatservice.usercommands}), collected
in the server's C{commands} table by L{chatservice.extensions}.  The checks
that apply to every command (does it exist, does it need a nickname, enough
arguments?), and the handling of a command that crashes or hangs, happen
once, in L{dispatch}; C{/help} is generated from the table.  Errors are raised as
L{ChatError}s; the protocol shows them.  A plain line before registration
is a nickname: L{chatservice.welcome}.
"""

from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter

from twisted.internet.defer import CancelledError, Deferred, fail, maybeDeferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.logger import Logger
from twisted.plugin import IPlugin
from twisted.python.failure import Failure
from zope.interface import implementer

from . import events
from .errors import (
    ChatError,
    NotRegistered,
    UnknownCommand,
    UsageError,
)
from .events import Event
from .fired import succeeded
from .interfaces import IChatSession, ICommand
from .logs import gate
from .text import sanitise, sanitise_lines
from .welcome import choose_nickname

log = Logger(observer=gate)

Result = Deferred[object] | None


@implementer(IPlugin, ICommand)
@dataclass(frozen=True, slots=True)
class Command:
    """One entry of the command table; see L{ICommand}."""

    name: str
    run: Callable[[IChatSession, str], Result]
    usage: str
    help: str
    min_args: int = 0
    before_registration: bool = False
    operator_only: bool = False
    multi_line: bool = False

    def __call__(self, session: IChatSession, args: str) -> Result:
        """Run the command; see L{ICommand.__call__}."""
        return self.run(session, args)


def command(
    usage: str,
    help: str,
    min_args: int = 0,
    before_registration: bool = False,
    operator_only: bool = False,
    multi_line: bool = False,
) -> Callable[[Callable[[IChatSession, str], Result]], Command]:
    """Make the decorated function a L{Command}, named by its C{usage}.

    Put the result at module level in a module of C{chatservice.plugins}
    and the server finds it.
    """

    def make(run: Callable[[IChatSession, str], Result]) -> Command:
        name = usage.split()[0].lstrip("/").lower()
        return Command(
            name,
            run,
            usage,
            help,
            min_args,
            before_registration,
            operator_only,
            multi_line,
        )

    return make


def dispatch(session: IChatSession, text: str) -> Result:
    """Act on one clean input line from C{session}.

    A line starting with C{/} is a command, except that C{//} escapes a
    chat line that starts with C{/}.  Before registration any other line is
    a nickname; after it, a chat line for the user's room.  Blank lines are
    ignored.  A bare C{QUIT} is L{quit_command}: see L{_is_bare_quit}.
    """
    if not text.strip():
        return None
    # The common case (a registered user's line, not QUIT) costs no call.
    if (text == "QUIT" or session.nickname is None) and _is_bare_quit(session, text):
        return _run(session, "quit", "")
    if text[0] == "/":
        if text[:2] != "//":
            name, _, args = text[1:].partition(" ")
            return _run(session, name, args.strip())
        text = text[1:]
    if session.nickname is None:
        return choose_nickname(session, text.strip())
    return say(session, text, events.chat)


def _is_bare_quit(session: IChatSession, text: str) -> bool:
    """Whether C{text} is the C{QUIT} line simple chat clients send to leave.

    Only upper-case C{QUIT} alone on its line, as those clients (and IRC)
    send it: C{quit} or C{Quit} may well be chat.  Before registration,
    where a line is a nickname with its surrounding spaces removed, those
    spaces are ignored here too, so C{QUIT} is never taken as a nickname.
    With the C{quit} command disabled, the line is what it would otherwise be.
    """
    if text != "QUIT" and (session.nickname is not None or text.strip() != "QUIT"):
        return False
    return "quit" in session.server.commands


def say(
    session: IChatSession,
    text: str,
    format: Callable[[str, str, str], Event],
    room: str | None = None,
) -> Result:
    """Pass C{text} through the message filters, then say it in the room.

    C{format} makes the event from the nickname, the (filtered) text and the
    room: L{events.chat} or L{events.action}.  The room is C{room}, for a
    front end whose users are in several rooms at once and name the one
    they speak in (IRC), or else the session's own room.
    """
    if text[:1] in _SPACES:
        _refuse_spaced_command(session, text)
    if room is None:
        room = session.room
    filters = session.server.filters
    if not filters:
        _say(session, room, format(session.nickname, text, room))
        return None
    d: Deferred[object] = Deferred()
    for message_filter in filters:
        d.addCallback(_apply_filter, message_filter, session, room)
    # Chat of several lines (a frame user's) stays several lines: each is
    # sanitised, not the newlines between them.  A line user's chat stays
    # one line, whatever the filters return.
    clean = sanitise_lines if "\n" in text else sanitise
    d.addCallback(
        lambda text: _say(session, room, format(session.nickname, clean(text), room))
    )
    d.callback(text)
    return _bounded(d, session, "your line was not sent")


#: What a line typed with a command after them starts with (a test of one
#: character per line said: the common line pays nothing more).
_SPACES = frozenset(" \t")


def _refuse_spaced_command(session: IChatSession, text: str) -> None:
    """Refuse chat that is a command typed after spaces: C{ /identify PASSWORD}.

    Said, it would show everyone (and the room's stored history) the
    password or the private message it carried; only a name in the command
    table counts, so C{ /shrug} is still chat.
    """
    words = text.split(None, 1)
    name = words[0][1:].lower() if words and words[0][:1] == "/" else ""
    if name and name in session.server.commands:
        raise ChatError(
            f"your line was not sent: it is /{name} after spaces; type it "
            "without them to run the command, or start it with // to say it",
            "not_sent",
        )


def _say(session: IChatSession, room: str, event: Event) -> None:
    """Hand C{event} to the room's members, timed for the fan-out metric.

    Then the hooks plugins are told, if one has a hook for it.
    """
    start = perf_counter()
    session.registry.say(room, event, session)
    server = session.server
    server.stats.fanout.observe(perf_counter() - start)
    # Queued (an append), written within a second: never waited for.
    server.history.record(room, event)
    hooks = server.hooks
    if event.kind == "chat":
        if hooks.on_said:
            hooks.said(session, room, event.text)
    elif hooks.on_acted:
        hooks.acted(session, room, event.text)


def _apply_filter(
    text: str, message_filter: object, session: IChatSession, room: str
) -> Deferred[object]:
    name = message_filter.name  # type: ignore[attr-defined]
    d = maybeDeferred(message_filter.filter, session, room, text)  # type: ignore[attr-defined]
    return d.addErrback(_contain, f"your line was not sent: the {name} filter failed")


def _run(session: IChatSession, name: str, args: str) -> Result:
    entry = session.server.commands.get(name.lower())
    if entry is None:
        raise UnknownCommand(name)
    if session.nickname is None and not entry.before_registration:
        raise NotRegistered()
    if entry.operator_only and session.operator is None:
        raise ChatError(f"/{entry.name} is for operators")
    if "\n" in args and not getattr(entry, "multi_line", False):
        # Text of several lines (from a front end whose input may have
        # them: frames) is one line for a command that does not take
        # several: a topic, a quit reason or an away message is shown
        # inside a line, and a newline in it would let its author write a
        # line of their own choosing (a fake <nick> line or server notice)
        # on every line user's screen.
        args = args.replace("\n", " ")
    if len(args.split(None, entry.min_args)) < entry.min_args:
        raise UsageError(entry.usage)
    try:
        result = entry(session, args)
    except BaseException:
        d: Deferred[object] = fail()
    else:
        if result is None:
            return None  # done: most commands, and /nick most often
        # A Deferred, a coroutine (Deferred.fromCoroutine) or a value.
        d = maybeDeferred(lambda: result)
        if succeeded(d):
            # Done already (/nick with the in-memory registry): nothing to
            # wait for, time out or contain.
            return None
    return _bounded(d, session, f"/{entry.name} failed")


def _bounded(d: Deferred[object], session: IChatSession, what: str) -> Deferred[object]:
    """Give plugin work still running the command timeout; contain failures."""
    if not d.called or d.paused:
        d.addTimeout(session.server.settings.command_timeout, session.server.clock)
    return d.addErrback(_contain, what)


def _contain(failure: Failure, what: str) -> Failure:
    """Turn a plugin's crash or hang into a C{!!! } line; log the crash."""
    if failure.check(ChatError):
        return failure
    if failure.check(CancelledError, DeferredTimeout):
        raise ChatError(f"{what}: it took too long and was cancelled")
    log.failure("{what}", failure, what=what)
    raise ChatError(f"{what} because of a server error; it was logged")
