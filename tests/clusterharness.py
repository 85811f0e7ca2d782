"""Helpers for the cluster's tests: nodes of a cluster in this process.

The tests run on the real reactor against a real redis-server (the
C{redis_server} fixture).  pytest-twisted runs a test in the reactor's
greenlet, which must never block: L{in_greenlet} runs a synchronous test body
in a greenlet of its own, where L{block} can wait for a Deferred.
"""

import functools
import itertools
from collections.abc import Callable

import greenlet
import pytest_twisted
from harness import wait_until

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from chatservice.cluster import ClusterRegistry
from chatservice.config import Settings
from chatservice.factory import ChatFactory, run_at_once
from chatservice.testing import FakeClient, FakeConnection

_clusters = itertools.count()


def block(d: Deferred) -> object:
    """Wait for C{d}: from a fixture, or from a test body run by L{in_greenlet}."""
    here = greenlet.getcurrent()
    if not getattr(here, "chat_test", False):
        return pytest_twisted.blockon(d)
    outcome: list[object] = []
    waiting = False

    def resume(result: object) -> None:
        outcome.append(result)
        if waiting:
            here.switch()

    d.addBoth(resume)
    if not outcome:
        waiting = True
        here.parent.switch()  # back to the reactor, until resume()
    (result,) = outcome
    if isinstance(result, Failure):
        result.raiseException()
    return result


def in_greenlet(test: Callable[..., object]) -> Callable[..., Deferred]:
    """Run a synchronous test body so that L{block} can wait in it.

    pytest-twisted calls a test from the reactor's greenlet, which must
    never block; the body runs in a greenlet of its own instead, which
    gives the reactor back while it waits.
    """

    @functools.wraps(test)
    def run(*args: object, **kwargs: object) -> Deferred:
        done: Deferred = Deferred()

        def body() -> None:
            # done fires from the reactor, once this greenlet has ended: fired
            # here, pytest-twisted would switch away from a greenlet that
            # never ends.
            from twisted.internet import reactor

            try:
                outcome: object = test(*args, **kwargs)
            except BaseException:
                outcome = Failure()
            reactor.callLater(0, done.callback, outcome)

        runner = greenlet.greenlet(body)
        runner.chat_test = True
        runner.switch()
        return done

    return run


class Nodes:
    """Makes the nodes of a test's clusters, and closes them after it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.made: list[ClusterRegistry] = []
        self.factories: list[ChatFactory] = []

    def make(
        self, cluster: str | None = None, announce_max: int | None = None, **kw: object
    ) -> ClusterRegistry:
        if cluster is None:
            cluster = f"test{next(_clusters)}"
        node = ClusterRegistry(
            self.url, cluster=cluster, announce_max=announce_max, **kw
        )
        node.start()
        self.made.append(node)
        block(Deferred.fromCoroutine(wait_until(lambda: node.up, "the node is up")))
        return node

    def servers(
        self, cluster: str, count: int = 2, **settings: object
    ) -> list[ChatFactory]:
        """C{count} nodes of C{cluster}, each serving chat (a factory)."""
        made = []
        for _ in range(count):
            # As twistd chat builds it, with the server's held-session cap.
            missed_bytes = Settings(**settings).resume_buffer_bytes  # type: ignore[arg-type]
            node = self.make(cluster, missed_bytes=missed_bytes)
            factory = ChatFactory(
                Settings(**settings),
                registry=node,
                run_in_thread=run_at_once,
                shared_sessions=node.shared_sessions,
                shared_bans=node.shared_bans,
            )
            self.factories.append(factory)
            made.append(factory)
        return made

    def settle(self) -> None:
        if not getattr(greenlet.getcurrent(), "chat_test", False):
            return  # called back by the reactor, which must not wait
        for node in self.made:
            block(node.idle())

    def close(self) -> None:
        from twisted.internet import reactor

        for factory in self.factories:
            factory.sessions.stop()  # sessions held for a resume end
            factory.flusher.flush()
            factory.history.stop()  # the lines said are written now
        for node in self.made:
            node.stop()
            block(node.close())
        # txredisapi hands a burst of input to itself again with callLater(0):
        # let that run before the test ends.
        block(deferLater(reactor, 0.01, lambda: None))


def eventually(predicate: Callable[[], object], what: str, timeout: float = 15) -> None:
    """Let the reactor run until C{predicate()} holds."""
    block(Deferred.fromCoroutine(wait_until(predicate, what, timeout)))


def heard_client(client: FakeClient, line: str, seen: list[str]) -> None:
    """Wait until C{client} has been delivered C{line}."""
    eventually(lambda: line in seen or seen.extend(client.lines()), line)


def registered(node: ClusterRegistry, nickname: str) -> FakeClient:
    client = FakeClient()
    assert block(node.register(client, nickname)) == nickname
    return client


def collect(client: FakeClient, lines: list[str]) -> Callable[[], list[str]]:
    """Gather what C{client} is delivered into C{lines}, as it comes."""

    def more() -> list[str]:
        lines.extend(client.lines())
        return lines

    return more


def chatting(factory: ChatFactory, nickname: str) -> tuple[FakeConnection, str]:
    """A connection registered as C{nickname}; its resume token."""
    connection = FakeConnection(factory)
    connection.enter(nickname)
    seen: list[str] = []

    def token() -> str | None:
        seen.extend(connection.lines())
        for line in seen:
            if line.startswith("*** resume token: "):
                return line.split()[3]
        return None

    eventually(token, f"{nickname}'s resume token")
    return connection, str(token())


def heard(connection: FakeConnection, line: str, seen: list[str]) -> None:
    """Wait until C{connection} has been sent C{line}."""
    eventually(lambda: line in seen or seen.extend(connection.lines()), line)
