"""The console client at a terminal: the input line kept below the chat.

When both standard input and output are terminals, C{chatservice-client}
reads what the user types with U{prompt_toolkit
<https://python-prompt-toolkit.readthedocs.io>} instead of Twisted's
L{StandardIO}.  The prompt stays on the last line: a line from the server
erases it, is printed, and the prompt is drawn again below it with what was
being typed, the cursor where it was.  The line is edited with the arrow
keys (and Emacs keys: Ctrl-A, Ctrl-E, Ctrl-W...), Up and Down walk through
the lines typed in this session, Ctrl-R searches them.

Why prompt_toolkit rather than Twisted's own C{twisted.conch.recvline}
(C{HistoricRecvLine} over C{twisted.conch.insults}): recvline takes each
byte for a keystroke, so a typed C{é} is two "characters" that Backspace
takes apart, and it counts one column per byte, so wide characters and a
line longer than the terminal is wide are redrawn in the wrong place; a lone
Escape key swallows the next key.  prompt_toolkit decodes UTF-8, measures
columns with wcwidth, wraps long lines, follows the terminal's size
(SIGWINCH), handles bracketed paste, and restores the terminal however it
ends.  See docs/client.md.

It runs on the same thread and event loop as Twisted: the client installs
Twisted's asyncio reactor (L{twisted.internet.asyncioreactor}) at a terminal,
and the prompt is an asyncio task on that loop.  Nothing here uses threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any, BinaryIO, Protocol

from prompt_toolkit import PromptSession
from prompt_toolkit.application import run_in_terminal
from prompt_toolkit.history import InMemoryHistory


class User(Protocol):
    """What the console needs of a L{chatservice.tools.client.Session}."""

    #: The room the session is in, for the prompt, or C{None}.
    room: str | None

    @property
    def quitting(self) -> bool:
        """Whether the session is ending: nothing more is read."""

    def user_line(self, line: bytes) -> None:
        """One typed line."""

    def user_eof(self) -> None:
        """The user pressed Ctrl-D on an empty line."""


class Console:
    """A prompt on the last line of the terminal; output printed above it.

    @param stdout: Where the server's lines go (standard output's bytes).
    @param stderr: Where status lines go (standard error's bytes).
    @param interrupt: Called when the user presses Ctrl-C: the client leaves
        as it does on SIGINT.
    @param prompt_options: Passed to L{PromptSession} (tests give it a pipe
        for C{input} and a C{DummyOutput}).
    """

    #: A typed (or pasted) line longer than this, in bytes, is not sent.
    MAX_LENGTH = 1 << 20

    def __init__(
        self,
        stdout: BinaryIO,
        stderr: BinaryIO,
        interrupt: Callable[[], None],
        **prompt_options: Any,
    ) -> None:
        self._stdout = stdout
        self._stderr = stderr
        self._interrupt = interrupt
        # History for this session only: lines are not written to disk
        # (an /oper password, a private message).
        self._prompt: PromptSession[str] = PromptSession(
            history=InMemoryHistory(),
            # Ctrl-Z stops the client as in a shell (fg brings it back).
            enable_suspend=True,
            **prompt_options,
        )
        self._queue: list[tuple[BinaryIO, bytes]] = []
        self._scheduled = False
        self._written: Awaitable[None] | None = None
        self._task: asyncio.Future[None] | None = None

    # Output: queued, then written above the prompt in one go.

    def write(self, data: bytes) -> None:
        """Write C{data} (whole lines) to standard output, above the prompt."""
        self._emit(self._stdout, data)

    def status(self, line: str) -> None:
        """Write one status line to standard error, above the prompt."""
        self._emit(self._stderr, line.encode("utf-8", errors="replace") + b"\n")

    def _emit(self, stream: BinaryIO, data: bytes) -> None:
        self._queue.append((stream, data))
        if not self._scheduled:
            # One erase and redraw of the prompt for a burst of lines.
            self._scheduled = True
            self._written = run_in_terminal(self._write_queued)

    def _write_queued(self) -> None:
        self._scheduled = False
        queue, self._queue = self._queue, []
        for stream, data in queue:
            try:
                stream.write(data)
                stream.flush()  # in order, standard output and error alike
            except (OSError, ValueError):
                pass  # the terminal is gone; the session ends anyway

    # Input.

    def start(self, user: User) -> None:
        """Read what the user types, line by line, for C{user}."""
        self._task = asyncio.ensure_future(self._read(user))

    def _message(self, user: User) -> str:
        return f"{user.room}> " if user.room else "> "

    async def _read(self, user: User) -> None:
        while not user.quitting:
            try:
                text = await self._prompt.prompt_async(
                    lambda: self._message(user),
                    # SIGINT stays Twisted's, which quits the session; in the
                    # prompt's raw mode Ctrl-C is a key, handled below.
                    handle_sigint=False,
                )
            except EOFError:  # Ctrl-D on an empty line
                user.user_eof()
                return
            except KeyboardInterrupt:  # Ctrl-C
                self._interrupt()
                return
            # A paste may hold several lines: each is a line, as in a pipe.
            for line in text.split("\n"):
                data = line.encode("utf-8", errors="replace")
                if len(data) > self.MAX_LENGTH:
                    self.status(
                        f"*** a typed line was longer than {self.MAX_LENGTH} "
                        "bytes; it was not sent"
                    )
                else:
                    user.user_line(data)

    def stop(self) -> asyncio.Future[None]:
        """End the prompt (restoring the terminal) and write what is queued."""
        return asyncio.ensure_future(self._stop())

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        while self._written is not None:
            written, self._written = self._written, None
            await written
