"""A real PostgreSQL server for tests, private, on a free loopback port.

Debian's C{postgresql} package (installed by C{.ci/run}) puts C{initdb}
and C{pg_ctl} in C{/usr/lib/postgresql/VERSION/bin}, not on PATH.
PostgreSQL refuses to run as root, which CI and the development machines
are: as root, the server runs as the C{postgres} user the package makes,
in a directory of its own.  Each test gets a new database on one server
(L{PostgresServer.new_database}): C{initdb} takes seconds, C{CREATE
DATABASE} a few milliseconds.
"""

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from redisserver import free_port

#: How long the server has to start or stop.
TIMEOUT = 60.0


def find_binaries() -> Path | None:
    """The directory of C{initdb} and C{pg_ctl}: Debian's newest, or PATH's."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name.split(".")[0] or 0),
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb is not None else None


class PostgresServer:
    """One C{postgres} process with a data directory of its own."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        # Not under pytest's tmp_path: its parents are root's alone (0700),
        # and the server may run as another user.
        self.directory = Path(tempfile.mkdtemp(prefix="chatservice-pg-"))
        self.data = self.directory / "data"
        self.logfile = self.directory / "postgres.log"
        self.port = free_port()
        self._names = itertools.count(1)
        self._as: list[str] = []
        if os.geteuid() == 0:
            self._as = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.directory, "postgres", "postgres")

    def _run(self, *command: str) -> None:
        result = subprocess.run(
            [*self._as, *command],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}{result.stderr}{self._log_tail()}"
            )

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.logfile.read_text().splitlines()[-20:])
        except OSError:
            return ""

    def start(self) -> None:
        """Make the cluster, start the server, wait until it accepts."""
        self._run(
            str(self.binaries / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "--no-sync",
            "--encoding=UTF8",
            "--locale=C",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 "
            f"-c unix_socket_directories={self.directory} -c fsync=off"
        )
        self._run(
            str(self.binaries / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.logfile),
            "-o",
            options,
            "-w",
            "-t",
            str(int(TIMEOUT)),
            "start",
        )

    def url(self, database: str = "postgres") -> str:
        """The C{--store} URL of C{database} on this server."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Make a new, empty database; return its C{--store} URL."""
        import psycopg

        name = f"chat{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server at once, and remove its files."""
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(
                    str(self.binaries / "pg_ctl"),
                    "-D",
                    str(self.data),
                    "-m",
                    "immediate",
                    "stop",
                )
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
