"""A real redis-server for tests, on a free loopback port of its own.

The process is driven synchronously (subprocess and a blocking socket): a
test that calls L{RedisServer.stop} or L{RedisServer.start} blocks the
reactor for the few milliseconds that takes, which is what we want in a
test of what a client does once Redis has gone or come back.
"""

import signal
import socket
import subprocess
import time
from pathlib import Path

#: How long the server has to answer PING after it is started.
START_TIMEOUT = 15.0
#: How long a stopped (SIGTERM) server has to exit before it is killed.
STOP_TIMEOUT = 10.0


def free_port() -> int:
    """A loopback TCP port that nothing listens on (at the moment)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ping(port: int, timeout: float = 1.0) -> bool:
    """Whether a Redis server on C{127.0.0.1:port} answers PING with PONG."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            reply = b""
            while not reply.endswith(b"\r\n"):
                chunk = s.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return reply == b"+PONG\r\n"
    except OSError:
        return False


class RedisServer:
    """One C{redis-server} process, restartable on the same port.

    No persistence (C{--save ''}, C{--appendonly no}), so a restart starts
    from an empty data set, as a crashed Redis without persistence would.
    """

    def __init__(self, executable: str, directory: Path) -> None:
        self.executable = executable
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self.logfile = directory / "redis.log"
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The C{--redis} URL of this server (database 0)."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-20:])
        except OSError:
            return "(no log)"

    def start(self) -> None:
        """Start the server and wait until it answers PING.

        @raise RuntimeError: it exited, or did not answer within
            L{START_TIMEOUT} seconds (it is killed then).
        """
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError("redis-server is already running")
        self.process = subprocess.Popen(
            [
                self.executable,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.logfile),
                "--daemonize",
                "no",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while not ping(self.port):
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise RuntimeError(
                    f"redis-server on port {self.port} exited with {code}:\n"
                    + self._log_tail()
                )
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not answer PING "
                    f"within {START_TIMEOUT} s:\n" + self._log_tail()
                )
            time.sleep(0.02)

    def stop(self) -> None:
        """Shut the server down (SIGTERM) and wait for it to exit.

        Its clients see their connections closed.  Killed if it takes longer
        than L{STOP_TIMEOUT} seconds.
        """
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the server (SIGKILL), as a crash would; no-op if not running."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = None
