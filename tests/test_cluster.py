"""The clustered registry: the shared behaviour suite, then what spans nodes.

Every test runs against a real redis-server (the C{redis_server} fixture),
on the real reactor.  The behaviour suite is the one the in-memory registry
passes; it waits (L{chatservice.testing.Waiting}) where this registry
answers later.
"""

import functools
import itertools
from collections.abc import Callable, Iterator

import greenlet
import pytest
import pytest_twisted
from harness import wait_until
from redisserver import RedisServer

from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.python.failure import Failure

from chatservice import testing
from chatservice.cluster import ClusterRegistry
from chatservice.testing import RegistryBehaviour

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

    def settle(self) -> None:
        for node in self.made:
            block(node.idle())

    def close(self) -> None:
        from twisted.internet import reactor

        for node in self.made:
            node.stop()
            block(node.close())
        # txredisapi hands a burst of input to itself again with callLater(0):
        # let that run before the test ends.
        block(deferLater(reactor, 0.01, lambda: None))


@pytest.fixture
def nodes(redis_server: RedisServer) -> Iterator[Nodes]:
    made = Nodes(redis_server.url)
    testing.Waiting.block = block
    testing.Waiting.settle = made.settle
    try:
        yield made
    finally:
        testing.Waiting.block = testing.Waiting.settle = None
        made.close()


class TestClusterRegistry(RegistryBehaviour):
    @pytest.fixture(autouse=True)
    def _nodes(self, nodes: Nodes) -> None:
        self.nodes = nodes

    def make_registry(self, announce_max: int | None = None) -> ClusterRegistry:
        return self.nodes.make(announce_max=announce_max)


for _name in dir(RegistryBehaviour):
    if _name.startswith("test_"):
        setattr(
            TestClusterRegistry, _name, in_greenlet(getattr(RegistryBehaviour, _name))
        )
