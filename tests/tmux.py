"""A real terminal for tests: a program in a tmux window, typed into and read.

Each L{Terminal} runs one command on a tmux server of its own (its own
socket, no configuration file, UTF-8 whatever the machine's locale), in a
window of a fixed size that stays when the command ends, so that its last
screen can be read.  Keys are pressed with C{tmux send-keys}; the screen
is read with C{tmux capture-pane -p} and the cursor with C{tmux
display-message}.  tmux is required: without it the test fails
(C{.ci/run} installs it).
"""

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from processes import WAIT

_numbers = itertools.count()


class Terminal:
    """One tmux window, on a tmux server of its own, running C{command}."""

    def __init__(
        self, directory: Path, command: list[str], width: int = 100, height: int = 30
    ) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail(
                "tmux is not on PATH; .ci/run installs it (apt-get install -y tmux)",
                pytrace=False,
            )
        socket = directory / f"tmux-{next(_numbers)}.sock"
        # -u: UTF-8 whatever the locale of the machine running the tests.
        self._tmux = [tmux, "-u", "-S", str(socket), "-f", "/dev/null"]
        self._env = {**os.environ, "TERM": os.environ.get("TERM") or "xterm"}
        # The window stays when its program ends, so its last screen can be
        # read (set in the same call, before the program can end).
        self.tmux(
            *("new-session", "-d", "-x", str(width), "-y", str(height), *command),
            *(";", "set-option", "-g", "remain-on-exit", "on"),
        )

    def tmux(self, *args: str) -> str:
        """Run a tmux command on this terminal's server; its output."""
        return subprocess.run(
            [*self._tmux, *args],
            check=True,
            capture_output=True,
            text=True,
            timeout=WAIT,
            env=self._env,
        ).stdout

    def screen(self) -> list[str]:
        """The lines on the screen, without the empty ones at the bottom."""
        lines = [line.rstrip() for line in self.tmux("capture-pane", "-p").split("\n")]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def cursor(self) -> tuple[int, int]:
        """The cursor's column and line, from 0."""
        x, y = self.tmux("display-message", "-p", "#{cursor_x} #{cursor_y}").split()
        return int(x), int(y)

    def keys(self, *keys: str) -> None:
        """Press tmux's named keys (C{Up}, C{Enter}, C{C-c}...); other words are typed."""
        self.tmux("send-keys", *keys)

    def type(self, text: str) -> None:
        """Type C{text}, as it is."""
        self.tmux("send-keys", "-l", text)

    def wait(
        self, condition: Callable[[list[str]], bool], what: str, timeout: float = WAIT
    ) -> list[str]:
        """Poll the screen until C{condition(screen)}; fail after C{timeout} s."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if condition(screen):
                return screen
            if time.monotonic() > deadline:
                pytest.fail(
                    f"timed out waiting for {what}; the screen:\n" + "\n".join(screen)
                )
            time.sleep(0.05)

    def wait_for(self, text: str) -> str:
        """Wait until C{text} is on the screen; the whole screen, as one string."""
        return "\n".join(self.wait(lambda s: text in "\n".join(s), repr(text)))

    def kill(self) -> None:
        """Stop the tmux server and what runs in it."""
        subprocess.run([*self._tmux, "kill-server"], capture_output=True, timeout=WAIT)


def opened_terminals(
    make: Callable[..., Terminal],
) -> Iterator[Callable[..., Terminal]]:
    """Yield C{make}, recording the terminals it opens; kill them all afterwards.

    The body of the tests' terminal fixtures.
    """
    opened: list[Terminal] = []

    def start(*args: object, **kwargs: object) -> Terminal:
        terminal = make(*args, **kwargs)
        opened.append(terminal)
        return terminal

    try:
        yield start
    finally:
        for terminal in opened:
            terminal.kill()
