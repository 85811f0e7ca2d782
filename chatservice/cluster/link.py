"""A node's connections to Redis: one for commands, one reading events."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ..logs import gate
from .scripts import SCRIPTS

log = Logger(observer=gate)

#: How long one Redis call may take before the node counts Redis as gone.
CALL_TIMEOUT = 5.0


class RedisURLError(ValueError):
    """A C{--redis} value that is not C{redis://HOST[:PORT][/DB]}."""


def parse_redis_url(url: str) -> tuple[str, int, int]:
    """C{redis://HOST[:PORT][/DB]} as C{(host, port, db)}.

    @raise RedisURLError: with a message that says what is wrong.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise RedisURLError(f"{url!r} does not start with redis://")
    if parts.username or parts.password:
        raise RedisURLError(f"{url!r}: passwords in the URL are not supported")
    try:
        port = parts.port or 6379
    except ValueError:
        raise RedisURLError(
            f"{url!r}: the port is not a number from 0 to 65535"
        ) from None
    if not parts.hostname:
        raise RedisURLError(f"{url!r} has no host")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise RedisURLError(f"{url!r}: the database must be a number, as in /0")
    if parts.query or parts.fragment:
        raise RedisURLError(f"{url!r}: options after ? or # are not supported")
    return parts.hostname, port, int(path)


class Unreachable(Exception):
    """Redis cannot be reached now; the node serves its own users alone."""


class RedisLink:
    """A node's connections to Redis: one for commands, one reading events.

    Events are a Redis stream, read from where the node left off: what was
    added while the node could not read is read when it can again.  The
    link is up while both connections answer.  C{on_up()} is called each
    time it comes up, C{on_down()} each time it goes down, and
    C{on_event(text)} for each event, in the stream's order.  txredisapi
    reconnects a connection by itself, but not one lost while it selects
    its database: a connection whose command fails is replaced.
    """

    #: Seconds between tries of a connection that failed.
    RETRY = 1.0
    #: Milliseconds one XREAD waits for events.
    BLOCK = 2000
    #: Events read at once, at most.
    BATCH = 1000

    def __init__(
        self,
        url: str,
        stream: str,
        on_event: Callable[[str, str], None],
        on_up: Callable[[], None],
        on_down: Callable[[], None],
    ) -> None:
        self.host, self.port, self.db = parse_redis_url(url)
        self.stream = stream
        self.on_event = on_event
        self.on_up = on_up
        self.on_down = on_down
        self.up = False
        self._commands: Any = None
        self._reader: Any = None
        #: The id of the last event read; None until the node has started.
        self._last: str | None = None
        self._reading = False
        self._checking = False
        self._timers: dict[str, Any] = {}
        self._stopped = False
        self._waiting: list[tuple[tuple[int, int], Deferred[None]]] = []
        self._in_flight: set[Deferred[Any]] = set()

    def start(self) -> None:
        """Connect, and keep reconnecting until L{stop}."""
        self._commands = self._connect()
        self._reader = self._connect()
        self._read()

    def _connect(self) -> Any:
        # Imported here: txredisapi installs the default reactor on import,
        # and twisted/plugins/ must not.
        import txredisapi

        return txredisapi.lazyConnection(
            self.host,
            self.port,
            dbid=self.db,
            convertNumbers=False,
            connectTimeout=CALL_TIMEOUT,
        )

    def _later(self, name: str, function: Callable[[], None]) -> None:
        """Call C{function} in L{RETRY} seconds, unless that is under way."""
        from twisted.internet import reactor

        timer = self._timers.get(name)
        if not self._stopped and (timer is None or not timer.active()):
            self._timers[name] = reactor.callLater(self.RETRY, function)

    # Reading the events ----------------------------------------------------

    def _read(self) -> None:
        if self._stopped:
            return
        from twisted.internet import reactor

        if self._last is None:
            # Start after the newest event: what came before is history.
            d = self._reader.execute_command(
                "XREVRANGE", self.stream, "+", "-", "COUNT", "1"
            )
            d.addCallback(self._started)
        else:
            d = self._reader.execute_command(
                "XREAD",
                "BLOCK",
                self.BLOCK,
                "COUNT",
                self.BATCH,
                "STREAMS",
                self.stream,
                self._last,
            )
            d.addCallback(self._got)
        d.addTimeout(self.BLOCK / 1000 + CALL_TIMEOUT, reactor)
        self._track(d).addErrback(self._read_failed)

    def _started(self, newest: list[Any]) -> None:
        self._last = newest[0][0] if newest else "0-0"
        self._read_ok()
        self._read()

    def _got(self, reply: list[Any] | None) -> None:
        self._read_ok()
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self._last = entry_id
                try:
                    # Fields: o, the node that added it; e, the event.
                    self.on_event(fields[1], fields[3])
                except Exception:
                    log.failure("cluster: an event could not be handled")
        self._wake()
        self._read()

    def caught_up(self, event_id: str) -> Deferred[None]:
        """Fire once the events up to C{event_id} have been handled.

        What a script answers may come before the events it followed: a
        user registered here must not be told of what happened before.
        Fires anyway after L{CALL_TIMEOUT} seconds, if reading is stuck.
        """
        if self._last is not None and _order(self._last) >= _order(event_id):
            return succeed(None)
        from twisted.internet import reactor

        d: Deferred[None] = Deferred()
        self._waiting.append((_order(event_id), d))
        return d.addTimeout(CALL_TIMEOUT, reactor).addErrback(lambda _: None)

    def _wake(self) -> None:
        if not self._waiting or self._last is None:
            return
        last = _order(self._last)
        ready = [d for order, d in self._waiting if order <= last]
        self._waiting = [(o, d) for o, d in self._waiting if o > last]
        for d in ready:
            if not d.called:
                d.callback(None)

    def _read_ok(self) -> None:
        if not self._reading:
            self._reading = True
            self._check()

    def _read_failed(self, failure: Failure) -> None:
        if self._stopped:
            return
        if self._reading:
            log.warn(
                "cluster: reading events from Redis failed ({error}); connecting again",
                error=failure.getErrorMessage() or failure.type.__name__,
            )
        self._reading = False
        self._down()
        old, self._reader = self._reader, self._connect()
        old.disconnect().addErrback(lambda _: None)
        self._later("read", self._read)

    # Commands ----------------------------------------------------------------

    def _down(self) -> None:
        if self.up:
            self.up = False
            self.on_down()

    def _check(self) -> None:
        """Come up once the command connection answers too."""
        if self._stopped or self._checking or not self._reading:
            return
        from twisted.internet import reactor

        self._checking = True
        d = self._track(self._commands.ping().addTimeout(CALL_TIMEOUT, reactor))

        def answered(_: object) -> None:
            self._checking = False
            if self._reading and not self.up and not self._stopped:
                self.up = True
                self.on_up()

        def failed(_: Failure) -> None:
            self._checking = False
            self._replace_commands()

        d.addCallbacks(answered, failed)

    def _replace_commands(self) -> None:
        """A new command connection, checked a little later."""
        if self._stopped:
            return
        old, self._commands = self._commands, self._connect()
        old.disconnect().addErrback(lambda _: None)
        self._later("check", self._check)

    def _failed(self, failure: Failure) -> Failure:
        """A command failed: if for want of a connection, the link is down."""
        import txredisapi

        if not failure.check(txredisapi.ResponseError) and self.up:
            log.warn(
                "cluster: a Redis command failed ({error}); connecting again",
                error=failure.getErrorMessage() or failure.type.__name__,
            )
            self._down()
            self._replace_commands()
        return failure

    def _send(self, command: str, *args: object) -> Deferred[Any]:
        if not self.up or self._commands is None:
            return fail(Unreachable())
        from twisted.internet import reactor

        d = getattr(self._commands, command)(*args)
        return d.addTimeout(CALL_TIMEOUT, reactor).addErrback(self._failed)

    def call(self, script: str, *args: object) -> Deferred[Any]:
        """Run one of the cluster's Lua scripts; fails at once when down."""
        return self._send("eval", SCRIPTS[script], [], [str(a) for a in args])

    def command(self, name: str, *args: object) -> Deferred[Any]:
        """Send one Redis command (a txredisapi method); fails when down."""
        return self._send(name, *args)

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        """Keep C{d} (a read or a check) until it fires: L{stop} cancels it."""
        return kept_in(d, self._in_flight)

    def stop(self) -> Deferred[object]:
        """Disconnect, and stop reconnecting."""
        self._stopped = True
        self.up = False
        # A command waiting for a connection waits for ever: cancel it.
        for d in list(self._in_flight):
            d.cancel()
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            if not d.called:
                d.callback(None)
        handlers = [h for h in (self._commands, self._reader) if h is not None]
        self._commands = self._reader = None
        return DeferredList([h.disconnect() for h in handlers], consumeErrors=True)


def _order(event_id: str) -> tuple[int, int]:
    """A stream id, C{MILLISECONDS-SEQUENCE}, as something that sorts."""
    ms, _, seq = str(event_id).partition("-")
    return int(ms), int(seq or 0)


def kept_in(d: Deferred[Any], under_way: set[Deferred[Any]]) -> Deferred[Any]:
    """C{d}, kept in C{under_way} until it fires."""
    under_way.add(d)

    def done(result: object) -> object:
        under_way.discard(d)
        return result

    return d.addBoth(done)
