"""Helpers for tests that run chatservice as a user does: in a subprocess.

twistd is started as ``python -c "from twisted.scripts.twistd import run;
run()"`` with the tests' own interpreter, rather than through the ``twistd``
console script: that needs neither PATH nor a script installed next to the
interpreter, and cannot pick up another Python's Twisted.  The server is
another process, so tests use plain blocking sockets, each with a timeout.
The fixtures C{twistd} and C{connections} (in C{conftest.py}) clean up.
"""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]

C = TypeVar("C", bound="Connection")

#: The longest any single wait may take before the test fails.
WAIT = 15.0


class Server:
    """One ``twistd -n chat`` process, its output going to a file.

    C{prefix} is a command that runs it, e.g. C{("ip", "netns", "exec", NS)};
    C{twistd_args} are twistd's own options, before C{chat}.
    """

    def __init__(
        self,
        port_option: str,
        directory: Path,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        prefix: tuple[str, ...] = (),
        twistd_args: tuple[str, ...] = (),
    ) -> None:
        self.output_path = directory / f"twistd-{time.monotonic_ns()}.out"
        command = [*TWISTD, "-n", "--pidfile=", *twistd_args, "chat"]
        command += ["--port", port_option]
        with self.output_path.open("wb") as output:
            self.process = subprocess.Popen(
                [*prefix, *command, *args],
                cwd=directory,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )

    def output(self) -> str:
        """Everything the process wrote so far, stdout and stderr."""
        return self.output_path.read_text(errors="replace")

    def wait(self) -> int:
        """Wait for the process to exit, at most L{WAIT} seconds."""
        try:
            return self.process.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"twistd still running after {WAIT:g} s:\n{self.output()}")

    def wait_for_port(self, port: int, host: str = "127.0.0.1") -> None:
        """Wait until the server accepts connections on C{host}:C{port}."""
        deadline = time.monotonic() + WAIT
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"twistd exited early:\n{self.output()}")
            try:
                socket.create_connection((host, port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"nothing listens on {port}:\n{self.output()}")
                time.sleep(0.05)

    def kill(self) -> None:
        """Make sure the process is gone."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)


class Connection:
    """A blocking client socket that reads CRLF-terminated lines."""

    def __init__(
        self, port: int, source: str = "127.0.0.1", host: str = "127.0.0.1"
    ) -> None:
        self.sock = socket.create_connection(
            (host, port), timeout=5, source_address=(source, 0)
        )
        self.file = self.sock.makefile("rb")

    def send(self, text: str) -> None:
        """Type one line, ended by CRLF as telnet sends it."""
        self.sock.sendall(text.encode("utf-8") + b"\r\n")

    def read(self, count: int = 1) -> list[str | None]:
        """The next C{count} lines; C{None} for the end of the connection."""
        lines: list[str | None] = []
        for _ in range(count):
            raw = self.file.readline()
            if not raw:
                lines.append(None)
                continue
            assert raw.endswith(b"\r\n"), raw
            lines.append(raw[:-2].decode("utf-8"))
        return lines

    def close(self) -> None:
        """Close the socket."""
        self.file.close()
        self.sock.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def poll_until(
    condition: Callable[[], object], what: str, timeout: float = WAIT
) -> None:
    """Poll C{condition()} until it is true; fail after C{timeout} seconds.

    For what another process does; in-process tests wait with
    L{harness.wait_until} instead.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:g} s", pytrace=False)
        time.sleep(0.05)


def opened_by(make: Callable[..., C]) -> Iterator[Callable[..., C]]:
    """Yield C{make}, recording what it opens; close all of it afterwards.

    The body of the C{connections} fixtures, plain or TLS.
    """
    opened: list[C] = []

    def connect(*args: object) -> C:
        connection = make(*args)
        opened.append(connection)
        return connection

    try:
        yield connect
    finally:
        for connection in opened:
            connection.close()
