"""Shared fixtures, and a guard against tests that leave timers behind."""

import itertools
import os
import shutil
import socket
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import pytest_twisted
from clusterharness import Nodes, block
from harness import Harness
from hypothesis import settings
from pgserver import PostgresServer, find_binaries
from processes import Connection, Server, opened_by
from redisserver import RedisServer

from twisted.internet.task import Clock

import chatservice.plugins
from chatservice import testing
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once

# In CI the property tests try the same examples every run, so that a red CI
# is reproducible; on a developer's machine they explore new ones each time.
settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):
    settings.load_profile("ci")


@pytest.fixture
def clock() -> Clock:
    """A fake clock for the timers of the code under test."""
    return Clock()


@pytest.fixture
def factory(clock: Clock) -> ChatFactory:
    """A factory with default settings on the fake clock; no threads."""
    return ChatFactory(Settings(), clock=clock, run_in_thread=run_at_once)


@pytest_twisted.async_yield_fixture
async def chat() -> AsyncIterator[Harness]:
    """A harness whose servers and clients are closed after the test."""
    harness = Harness()
    try:
        yield harness
    finally:
        await harness.close()


@pytest.fixture(autouse=True)
def _no_leftover_delayed_calls() -> Iterator[None]:
    """Fail a test that leaves DelayedCalls on the real reactor.

    trial does this; pytest-twisted does not, and a leftover timer fires in
    some later test.
    """
    from twisted.internet import reactor

    before = set(reactor.getDelayedCalls())
    yield
    leftover = [c for c in reactor.getDelayedCalls() if c not in before and c.active()]
    described = [repr(c) for c in leftover]  # before cancel() forgets the function
    for call in leftover:
        call.cancel()
    assert not leftover, f"the test left delayed calls behind: {described}"


@pytest.fixture(autouse=True)
def _no_registrations_waiting() -> Iterator[None]:
    """Forget the registrations a test's servers left waiting to be logged.

    A server on a fake clock that is not advanced never writes them
    (chatservice.logs.SessionLog); the next test's events must not.
    """
    yield
    from chatservice import logs

    logs._waiting.clear()


_modules = itertools.count()


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Write plugin modules into a directory that extends chatservice.plugins.

    Returns the module name each one gets (names are unique per test run,
    since a module that imported once stays imported).
    """
    directory = tmp_path / "site" / "chatservice" / "plugins"
    directory.mkdir(parents=True)
    monkeypatch.setattr(
        chatservice.plugins, "__path__", [*chatservice.plugins.__path__, str(directory)]
    )

    def write(source: str) -> str:
        name = f"third_party_{next(_modules)}"
        (directory / f"{name}.py").write_text(textwrap.dedent(source))
        return f"chatservice.plugins.{name}"

    return write


@pytest.fixture
def twistd(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start C{twistd -n chat --port ENDPOINT}; every process is killed after."""
    servers: list[Server] = []

    def start(
        port_option: str,
        *args: str,
        env: dict[str, str] | None = None,
        twistd_args: tuple[str, ...] = (),
    ) -> Server:
        server = Server(port_option, tmp_path, args, env, twistd_args=twistd_args)
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def connections() -> Iterator[Callable[..., Connection]]:
    """Open client connections, C{(port, source=...)}; closed after the test."""
    yield from opened_by(Connection)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A loopback port that another socket is listening on."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server on a free loopback port; killed after the test.

    It has C{.url}, C{.port}, C{.stop()}, C{.start()} (again on the same
    port) and C{.kill()}.  Fails, never skips, without redis-server: the
    clustered mode is tested in CI, whose .ci/run installs it.
    """
    executable = shutil.which("redis-server")
    if executable is None:
        pytest.fail(
            "redis-server is not on PATH; .ci/run installs it "
            "(apt-get install -y redis-server)",
            pytrace=False,
        )
    server = RedisServer(executable, tmp_path / "redis")
    try:
        server.start()
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="session")
def _postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run (initdb takes seconds)."""
    binaries = find_binaries()
    if binaries is None:
        pytest.fail(
            "PostgreSQL's initdb is not in /usr/lib/postgresql/*/bin nor on "
            "PATH; .ci/run installs it (apt-get install -y postgresql)",
            pytrace=False,
        )
    server = PostgresServer(binaries)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres(_postgres_server: PostgresServer) -> str:
    """The C{--store} URL of a new, empty database on a real PostgreSQL.

    Fails, never skips, without PostgreSQL: .ci/run installs Debian's
    package.  The server is private to the test run, on a free loopback
    port, run as the C{postgres} user when the tests run as root.
    """
    return _postgres_server.new_database()


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[Nodes]:
    """Nodes of clusters on a real Redis (see L{clusterharness}); closed after."""
    made = Nodes(redis_server.url)
    testing.Waiting.block = block
    testing.Waiting.settle = made.settle
    try:
        yield made
    finally:
        testing.Waiting.block = testing.Waiting.settle = None
        made.close()
