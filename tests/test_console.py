"""Tests for the console client's prompt at a terminal (L{chatservice.tools.client.console}).

Keys are fed through prompt_toolkit's pipe input, as a terminal would send
them, and the screen is prompt_toolkit's C{DummyOutput}: these tests check
what reaches the session and standard output and error.  What the screen
shows is checked with the real program in a real terminal (tmux) in
C{test_client_terminal.py}.  Each test runs its own asyncio loop in a
thread of its own, so that it installs no signal handler in the test
process (prompt_toolkit does for SIGWINCH in the main thread).
"""

import asyncio
import io
import threading
from collections.abc import Awaitable, Callable

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from chatservice.tools.client.console import Console

#: Keys as a VT100 terminal sends them.
LEFT, UP, DOWN = "\x1b[D", "\x1b[A", "\x1b[B"
ENTER, CTRL_C, CTRL_D, CTRL_A = "\r", "\x03", "\x04", "\x01"
WAIT = 10.0


class Typist:
    """Stands in for the session: records what the console hands it."""

    def __init__(self) -> None:
        self.room: str | None = "#lobby"
        self.lines: list[bytes] = []
        self.eofs = 0
        self.quit = False

    @property
    def quitting(self) -> bool:
        return self.quit

    def user_line(self, line: bytes) -> None:
        self.lines.append(line)
        if line.startswith(b"/quit"):
            self.quit = True

    def user_eof(self) -> None:
        self.eofs += 1


class Rig:
    """A console on a pipe of keys, writing to byte buffers."""

    def __init__(self, send: Callable[[str], None]) -> None:
        self.send = send
        self.typist = Typist()
        self.stdout = io.BytesIO()
        self.stderr = io.BytesIO()
        self.interrupts = 0
        self.console: Console

    def interrupt(self) -> None:
        self.interrupts += 1

    async def until(self, condition: Callable[[], bool], what: str) -> None:
        """Let the loop run until C{condition} holds; fail after L{WAIT} s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + WAIT
        while not condition():
            assert loop.time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.01)

    def reading(self) -> bool:
        """Whether the prompt still reads keys."""
        task = self.console._task
        return task is not None and not task.done()


def run(scenario: Callable[[Rig], Awaitable[None]]) -> Rig:
    """Run C{scenario} with a started console, in a thread with its own loop."""
    errors: list[BaseException] = []
    rigs: list[Rig] = []

    async def main() -> None:
        with create_pipe_input() as pipe:
            rig = Rig(pipe.send_text)
            rigs.append(rig)
            rig.console = Console(
                rig.stdout, rig.stderr, rig.interrupt, input=pipe, output=DummyOutput()
            )
            rig.console.start(rig.typist)
            try:
                await scenario(rig)
            finally:
                await rig.console.stop()

    def thread() -> None:
        try:
            asyncio.run(main())
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=thread)
    worker.start()
    worker.join(WAIT * 2)
    assert not worker.is_alive(), "the console did not stop"
    if errors:
        raise errors[0]
    return rigs[0]


def test_typed_line_is_sent_in_utf8() -> None:
    """A line typed and entered reaches the session as UTF-8 bytes."""

    async def scenario(rig: Rig) -> None:
        rig.send("héllo ☃" + ENTER)
        await rig.until(lambda: rig.typist.lines, "the line")

    assert run(scenario).typist.lines == ["héllo ☃".encode()]


def test_arrow_keys_edit_the_line() -> None:
    """Left moves the cursor back: what is typed then goes in the middle of the line."""

    async def scenario(rig: Rig) -> None:
        rig.send("helo" + LEFT + "l" + CTRL_A + ">" + ENTER)
        await rig.until(lambda: rig.typist.lines, "the line")

    assert run(scenario).typist.lines == [b">hello"]


def test_up_recalls_the_lines_typed_before() -> None:
    """Up, Up brings back the line before last; Down the last one."""

    async def scenario(rig: Rig) -> None:
        rig.send("one" + ENTER + "two" + ENTER)
        await rig.until(lambda: len(rig.typist.lines) == 2, "two lines")
        rig.send(UP + UP + ENTER)
        await rig.until(lambda: len(rig.typist.lines) == 3, "the recalled line")
        rig.send(UP + UP + DOWN + ENTER)
        await rig.until(lambda: len(rig.typist.lines) == 4, "the last line")

    assert run(scenario).typist.lines == [b"one", b"two", b"one", b"one"]


def test_pasted_lines_are_lines() -> None:
    """A paste of several lines sends each as a line, as a pipe would."""

    async def scenario(rig: Rig) -> None:
        rig.send("\x1b[200~first\nsecond\x1b[201~" + ENTER)
        await rig.until(lambda: rig.typist.lines, "the lines")

    assert run(scenario).typist.lines == [b"first", b"second"]


def test_ctrl_d_on_an_empty_line_ends_the_input() -> None:
    """Ctrl-D on an empty line is the end of the input: the session quits, the prompt ends."""

    async def scenario(rig: Rig) -> None:
        rig.send("x" + CTRL_D)  # deletes nothing: the line is not empty
        await asyncio.sleep(0.2)
        assert rig.typist.eofs == 0
        rig.send(ENTER + CTRL_D)
        await rig.until(lambda: not rig.reading(), "the prompt's end")

    rig = run(scenario)
    assert (rig.typist.lines, rig.typist.eofs, rig.interrupts) == ([b"x"], 1, 0)


def test_ctrl_c_interrupts() -> None:
    """Ctrl-C asks the client to leave (as SIGINT does), and the prompt ends, the half-typed line unsent."""

    async def scenario(rig: Rig) -> None:
        rig.send("half" + CTRL_C)
        await rig.until(lambda: not rig.reading(), "the prompt's end")

    rig = run(scenario)
    assert (rig.interrupts, rig.typist.lines, rig.typist.eofs) == (1, [], 0)


def test_no_more_reading_after_quit() -> None:
    """Once a /quit is typed, the prompt ends."""

    async def scenario(rig: Rig) -> None:
        rig.send("/quit bye" + ENTER)
        await rig.until(lambda: not rig.reading(), "the prompt's end")

    assert run(scenario).typist.lines == [b"/quit bye"]


def test_output_and_status_in_order() -> None:
    """Server lines go to standard output and status lines to standard error, each as given, in order."""
    order: list[str] = []

    async def scenario(rig: Rig) -> None:
        stdout_write, stderr_write = rig.stdout.write, rig.stderr.write

        def out(data: bytes) -> int:
            order.append("out")
            return stdout_write(data)

        def err(data: bytes) -> int:
            order.append("err")
            return stderr_write(data)

        rig.stdout.write = out  # type: ignore[method-assign]
        rig.stderr.write = err  # type: ignore[method-assign]
        rig.console.write(b"<bob> hi \xc3\xa9\n")
        rig.console.status("*** connection lost (connection reset)")
        rig.console.write(b"*** Goodbye.\n")

    rig = run(scenario)  # stopping the console writes what waits
    assert rig.stdout.getvalue() == b"<bob> hi \xc3\xa9\n*** Goodbye.\n"
    assert rig.stderr.getvalue() == b"*** connection lost (connection reset)\n"
    assert order == ["out", "err", "out"]


def test_stop_ends_a_waiting_prompt() -> None:
    """Stopping the console (the server ended the session) ends the prompt; nothing typed is sent."""

    async def scenario(rig: Rig) -> None:
        rig.send("unfinished")
        await asyncio.sleep(0.1)
        await rig.console.stop()
        assert not rig.reading()

    rig = run(scenario)
    assert (rig.typist.lines, rig.typist.eofs, rig.interrupts) == ([], 0, 0)


def test_overlong_line_is_not_sent() -> None:
    """A typed line over the limit is not sent, with one status line."""

    async def scenario(rig: Rig) -> None:
        rig.console.MAX_LENGTH = 5
        rig.send("123456" + ENTER + "12345" + ENTER)
        await rig.until(lambda: rig.typist.lines, "the short line")

    rig = run(scenario)
    assert rig.typist.lines == [b"12345"]
    assert rig.stderr.getvalue() == (
        b"*** a typed line was longer than 5 bytes; it was not sent\n"
    )


@pytest.mark.parametrize(
    ("keys", "sent"),
    [
        ("one two" + "\x17" + "three" + ENTER, [b"one three"]),  # Ctrl-W
        ("junk" + "\x15" + "kept" + ENTER, [b"kept"]),  # Ctrl-U
    ],
    ids=["ctrl-w", "ctrl-u"],
)
def test_shell_keys(keys: str, sent: list[bytes]) -> None:
    """Ctrl-W deletes a word and Ctrl-U the line, as in a shell."""

    async def scenario(rig: Rig) -> None:
        rig.send(keys)
        await rig.until(lambda: len(rig.typist.lines) == len(sent), "the lines")

    assert run(scenario).typist.lines == sent


def test_ctrl_r_searches_the_history() -> None:
    """Ctrl-R finds a line typed before; Enter takes it, a second Enter sends it."""

    async def scenario(rig: Rig) -> None:
        rig.send("alpha" + ENTER + "beta" + ENTER)
        await rig.until(lambda: len(rig.typist.lines) == 2, "two lines")
        rig.send("\x12alp" + ENTER + ENTER)
        await rig.until(lambda: len(rig.typist.lines) == 3, "the line found")

    assert run(scenario).typist.lines == [b"alpha", b"beta", b"alpha"]
