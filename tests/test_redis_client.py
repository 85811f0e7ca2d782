"""Smoke tests of txredisapi, the Redis client of the clustered mode (issue 7).

They run the library against a real redis-server (the C{redis_server}
fixture) on the real reactor, and pin down what the registry will rely on:
the commands it needs, and what happens to commands and subscriptions when
Redis restarts.  docs/redis-client-choice.md says why this library.
"""

from typing import Any

import pytest
import pytest_twisted
import txredisapi
from harness import bounded, wait_until
from redisserver import RedisServer

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.task import deferLater

# Long enough for ClientService's backoff: the first retry comes after about
# 1 s, the second about 2.7 s later, the third 7.4 s after that.
RECONNECT = 15.0

# Deletes a key only while it still holds the caller's token: a claim is
# released by its owner only, never after it expired and another node took it.
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


def connect(server: RedisServer) -> Any:
    """A lazy, reconnecting command connection to database 0 of C{server}.

    convertNumbers=False: by default a reply that looks like a number, even a
    stored string such as a nickname "007", comes back as an int.
    """
    return txredisapi.lazyConnection(
        "127.0.0.1",
        server.port,
        dbid=0,
        convertNumbers=False,
        connectTimeout=5,
        replyTimeout=5,
    )


class Subscriber(txredisapi.SubscriberProtocol):
    """Records the messages; subscribes again on every connection if asked."""

    factory: "SubscriberFactory"

    def connectionMade(self) -> Deferred:
        d = super().connectionMade()
        channels = self.factory.resubscribe
        if channels:
            self.whenConnected().addCallback(lambda p: p.subscribe(channels))
        return d

    def messageReceived(self, pattern: str | None, channel: str, message: str) -> None:
        self.factory.messages.append((channel, message))


class SubscriberFactory(txredisapi.SubscriberFactory):
    protocol = Subscriber

    def __init__(self, resubscribe: list[str] | None = None) -> None:
        super().__init__(isLazy=True)
        # The same default trap as connect(): "42" would arrive as 42.
        self.convertNumbers = False
        self.resubscribe = resubscribe or []
        self.messages: list[tuple[str, str]] = []


def subscribe(server: RedisServer, resubscribe: list[str] | None = None) -> Any:
    """Start a subscriber connection to C{server}; its handler."""
    factory = SubscriberFactory(resubscribe)
    factory.startConnecting(HostnameEndpoint(reactor, "127.0.0.1", server.port))
    return factory.handler


async def subscribers(rc: Any, channel: str) -> int:
    """How many connections are subscribed to C{channel} (PUBSUB NUMSUB)."""
    _, count = await bounded(rc.execute_command("PUBSUB", "NUMSUB", channel))
    return int(count)


async def wait_for_subscribers(rc: Any, channel: str, count: int) -> None:
    deadline = reactor.seconds() + RECONNECT
    while (n := await subscribers(rc, channel)) != count:
        assert reactor.seconds() < deadline, f"{channel} has {n} subscribers"
        await bounded(_later(0.02))


def _later(seconds: float) -> Deferred:
    return deferLater(reactor, seconds, lambda: None)


class Closing:
    """The test's connection handlers, to disconnect at its end."""

    def __init__(self) -> None:
        self.handlers: list[Any] = []

    def add(self, handler: Any) -> None:
        self.handlers.append(handler)

    async def __call__(self) -> None:
        """Disconnect them all; each disconnect() waits for its pool to empty."""
        for handler in self.handlers:
            await bounded(handler.disconnect())
        self.handlers.clear()


@pytest.fixture
def closing() -> Closing:
    """Handlers added to it are disconnected when the test awaits it."""
    return Closing()


@pytest_twisted.ensureDeferred
async def test_set_nx_px_claims_once(
    redis_server: RedisServer, closing: Closing
) -> None:
    """SET NX PX: the first claim wins, the second fails, the key expires."""
    rc = connect(redis_server)
    closing.add(rc)
    try:
        claim = rc.set("nick:alice", "node-a", pexpire=5000, only_if_not_exists=True)
        assert await bounded(claim) == "OK"
        again = rc.set("nick:alice", "node-b", pexpire=5000, only_if_not_exists=True)
        assert await bounded(again) is None
        assert await bounded(rc.get("nick:alice")) == "node-a"
        # No pttl() method; execute_command sends any command.
        ttl = await bounded(rc.execute_command("PTTL", "nick:alice"))
        assert 0 < ttl <= 5000
        # Numbers stay strings with convertNumbers=False.
        await bounded(rc.set("nick:007", "007"))
        assert await bounded(rc.get("nick:007")) == "007"
    finally:
        await closing()


@pytest_twisted.ensureDeferred
async def test_lua_lists_and_pipeline(
    redis_server: RedisServer, closing: Closing
) -> None:
    """EVAL (EVALSHA after the first call), LPUSH/LTRIM/LRANGE, a pipeline."""
    rc = connect(redis_server)
    closing.add(rc)
    try:
        await bounded(rc.set("nick:bob", "node-a"))
        assert await bounded(rc.eval(RELEASE, ["nick:bob"], ["node-b"])) == 0
        assert await bounded(rc.eval(RELEASE, ["nick:bob"], ["node-a"])) == 1
        assert await bounded(rc.exists("nick:bob")) == 0

        for i in range(5):
            await bounded(rc.lpush("history:#lobby", f"line {i}"))
        await bounded(rc.ltrim("history:#lobby", 0, 2))
        assert await bounded(rc.lrange("history:#lobby", 0, -1)) == [
            "line 4",
            "line 3",
            "line 2",
        ]

        # A pipeline holds the connection until execute_pipeline().
        pipe = await bounded(rc.pipeline())
        pipe.lpush("history:#dev", "hello")
        pipe.ltrim("history:#dev", 0, 99)
        pipe.publish("room:#dev", "hello")
        assert await bounded(pipe.execute_pipeline()) == [1, "OK", 0]

        # MULTI/EXEC, likewise on the connection multi() hands out.
        tx = await bounded(rc.multi())
        tx.lpush("history:#dev", "again")
        tx.ltrim("history:#dev", 0, 99)
        assert await bounded(tx.commit()) == [2, "OK"]
    finally:
        await closing()


@pytest_twisted.ensureDeferred
async def test_publish_reaches_subscriber(
    redis_server: RedisServer, closing: Closing
) -> None:
    rc = connect(redis_server)
    sub = subscribe(redis_server)
    closing.add(rc)
    closing.add(sub)
    try:
        await bounded(sub.subscribe("room:#lobby"))
        assert await bounded(rc.publish("room:#lobby", "42")) == 1
        await wait_until(lambda: sub._factory.messages, "the message")
        assert sub._factory.messages == [("room:#lobby", "42")]
    finally:
        await closing()


@pytest_twisted.ensureDeferred
async def test_commands_work_again_after_a_restart(
    redis_server: RedisServer, closing: Closing
) -> None:
    """The client reconnects on its own; a command sent meanwhile waits."""
    rc = connect(redis_server)
    closing.add(rc)
    try:
        await bounded(rc.set("k", "before"))
        redis_server.stop()
        await wait_until(lambda: rc._factory.size == 0, "the connection to drop")

        # No connection: the command waits for the next one, with no bound of
        # its own (replyTimeout runs only once the command is sent).
        waiting = rc.get("k")
        await bounded(_later(0.2))
        assert not waiting.called

        redis_server.start()
        # The restarted server has no data (no persistence).
        assert await bounded(waiting, RECONNECT) is None
        assert await bounded(rc.set("k", "after")) == "OK"
        assert await bounded(rc.get("k")) == "after"
    finally:
        await closing()


@pytest_twisted.ensureDeferred
async def test_command_in_flight_fails_when_redis_dies(
    redis_server: RedisServer, closing: Closing
) -> None:
    """A command sent but not answered fails with ConnectionError."""
    rc = connect(redis_server)
    closing.add(rc)
    try:
        await bounded(rc.ping())
        # BLPOP holds its reply until the connection is gone.
        blocked = rc.blpop(["nothing"], timeout=0)
        await bounded(_later(0.1))
        redis_server.kill()
        with pytest.raises(txredisapi.ConnectionError):
            await bounded(blocked)
        redis_server.start()
        assert await bounded(rc.ping(), RECONNECT) == "PONG"
    finally:
        await closing()


@pytest_twisted.ensureDeferred
async def test_subscription_is_lost_on_restart(
    redis_server: RedisServer, closing: Closing
) -> None:
    """The subscriber reconnects, but txredisapi does not subscribe it again."""
    rc = connect(redis_server)
    sub = subscribe(redis_server)
    closing.add(rc)
    closing.add(sub)
    try:
        await bounded(sub.subscribe("room:#lobby"))
        assert await subscribers(rc, "room:#lobby") == 1

        redis_server.stop()
        await wait_until(lambda: sub._factory.size == 0, "the subscriber to drop")
        redis_server.start()
        await wait_until(lambda: sub._factory.size == 1, "a new connection", RECONNECT)
        assert await bounded(rc.ping(), RECONNECT) == "PONG"

        assert await subscribers(rc, "room:#lobby") == 0
    finally:
        await closing()


@pytest_twisted.ensureDeferred
async def test_subscriber_resubscribes_in_connection_made(
    redis_server: RedisServer, closing: Closing
) -> None:
    """A protocol that subscribes in connectionMade hears messages again."""
    rc = connect(redis_server)
    sub = subscribe(redis_server, resubscribe=["room:#lobby"])
    closing.add(rc)
    closing.add(sub)
    try:
        await wait_for_subscribers(rc, "room:#lobby", 1)
        await bounded(rc.publish("room:#lobby", "first"))
        await wait_until(lambda: sub._factory.messages, "the first message")

        redis_server.stop()
        await wait_until(lambda: sub._factory.size == 0, "the subscriber to drop")
        redis_server.start()

        await wait_for_subscribers(rc, "room:#lobby", 1)
        assert await bounded(rc.publish("room:#lobby", "second")) == 1
        await wait_until(lambda: len(sub._factory.messages) == 2, "the second one")
        assert sub._factory.messages == [
            ("room:#lobby", "first"),
            ("room:#lobby", "second"),
        ]
    finally:
        await closing()
