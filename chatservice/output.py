"""A connection's output: the send queue, its producer, the flusher, the writer.

Everything a connection sends goes through L{OutputMixin.deliver} (or
L{OutputMixin.answer}, for the answers to its own commands), which only
appends the event's bytes on this front end's wire to a list (C{_encode}:
an event's encoding is made once per format and shared by every
recipient); once per reactor iteration the factory's L{Flusher} sends each
connection's list as one write (see there).  While the
transport's own buffer is full (L{_OutputValve} hears it), output is held,
counted, and the client is disconnected once more than C{max_sendq} bytes
wait; what was held then is kept for a C{/resume}, not dropped.  Answers are
held but never counted: instead, no further line of the client is read
until it has caught up, so it cannot ask for more than it reads.

Three promises this module keeps:

  - Twisted's private transport attributes (C{dataBuffer}, C{_tempDataLen},
    C{socket}, C{connected}, C{disconnecting}) are read in two functions
    only: L{OutputMixin._flush}, the direct-send writer, and
    L{OutputMixin._close_at_once}, the direct close.  Only a C{tcp.Server}
    itself gets them, and if Twisted ever renames what they read, the
    connection falls back to C{transport.write} (correct, one system call
    and two C{epoll_ctl} more per flush) and C{loseConnection}, and
    C{tests/test_output.py} fails on a real connection.
  - Anything but an L{Event} handed to C{deliver} or C{answer} raises
    C{TypeError} at the call, in the plugin that made the mistake, not
    later in the flusher where one connection's whole output would be lost.
    The check is one C{__class__} comparison: a C{deliver} went from 72
    to 81 ns with it, and a line's fan-out to 100 connections with their
    flush from 42.2 to 43.1 us (timeit, StringTransports; over real
    sockets the C{send} per recipient dwarfs it).
  - Nothing here knows a wire format: a front end gives its C{_encode}
    (an event to its bytes) and uses the same queue.  What is held while
    the client is behind is events, not bytes, so what an overflow keeps
    for a C{/resume} can be shown again on any front end.

Why a mixin and not an object of its own per connection: idle connections
are most of a big server, and the queue's state is eleven slots.  As a
mixin inherited by L{chatservice.frontends.lines.LineProtocol}, which has those
slots (L{OUTPUT_SLOTS}), it costs nothing beyond them, and C{deliver} is
one call.  As a separate
object it would cost an object per connection (120 bytes with its header,
about 6 % of the 2,158 bytes an idle connection takes, see
C{scripts/memory.py}) and, for each recipient of each line, one more
attribute hop and one more call (measured: 10 to 30 ns more per
C{deliver}, more than the type check costs).  The class that inherits it
provides what L{OutputMixin} reads: C{transport}, C{factory} (an
L{IChatServer}: its C{stats}), C{connection_id}, C{_close_reason}, the
reading pauses C{_pauses}, C{_pause(why)} and C{_resume(why)}, and
C{_overflowed()}, which closes the connection.
"""

from operator import attrgetter
from time import perf_counter
from types import FunctionType
from typing import TYPE_CHECKING

from twisted.internet import tcp
from twisted.internet.interfaces import IDelayedCall, IPushProducer, IReactorTime
from twisted.internet.protocol import connectionDone
from twisted.logger import Logger
from zope.interface import implementer

from .events import Batch, Event, SharedEncoding, not_an_event
from .logs import gate
from .stats import Stats

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from twisted.internet.interfaces import ITransport

    from .interfaces import IChatServer
    from .reasons import CloseReason

log = Logger(observer=gate)

#: The order of a flush: the order the connections were made (one counter
#: for every front end, L{chatservice.factory.ChatFactory}).
_CONNECTION_ID = attrgetter("connection_id")

#: From how many pieces a connection's output is joined once for all who
#: are sent the same (L{OutputMixin._flush}): below, a join costs less
#: than looking for one.
_JOINED_SHARED = 8

#: The most outputs a flush keeps joined for others (L{Flusher.joined}),
#: so that users sent many pieces of their own (a private message first)
#: do not keep a whole flush's bytes until its end: a room's members need
#: one a front end.
_JOINED_MOST = 16

#: No answers waiting to be flushed (one shared tuple, not one per connection).
_NO_ANSWERS = (-1, 0)


class Flusher:
    """Sends the output of every connection written to, once per iteration.

    Fan-out makes many small writes: one line to each of a room's members,
    and several lines to each when several arrive at once.  Twisted's
    C{transport.write} buffers each and asks the reactor to watch the socket
    for writability; the reactor then sends and stops watching, so every
    write costs two C{epoll_ctl} calls besides the C{send}, and a line
    arriving alone is sent only in the next iteration.  Instead,
    L{OutputMixin.deliver} appends to the connection's list and registers
    it here, and at the end of the reactor iteration (a C{callLater(0)})
    each connection's lines are joined and sent with one C{send} straight on
    its socket when its transport has nothing buffered (else through the
    transport, which keeps the order).  So a steady trickle of lines costs
    one system call per recipient, and a burst costs one per recipient per
    iteration, however many lines it has.  Connections are sent their
    output in the order they were made, whatever their front end.  Under
    load, when a room's members are each sent the same many lines in one
    flush, those are joined once and the bytes shared (see
    L{OutputMixin._flush}).
    """

    __slots__ = (
        "_clock",
        "_pending",
        "_readers",
        "_ending",
        "_call",
        "_stats",
        "generation",
        "joined",
    )

    def __init__(self, clock: IReactorTime, stats: Stats) -> None:
        self._clock = clock
        self._pending: list[OutputMixin] = []
        # New connections whose first input is read before the flush.
        self._readers: list[OutputMixin] = []
        # Connections read this iteration, whose end of input is looked for.
        self._ending: list[OutputMixin] = []
        self._call: IDelayedCall | None = None
        self._stats = stats
        #: How many flushes there were: output given with the same number
        #: is sent in the same flush.
        self.generation = 0
        #: While flushing: by the identity of its first piece, the last
        #: output joined whose pieces were many, and its bytes (see
        #: L{OutputMixin._flush}).  None between flushes.
        self.joined: dict[int, tuple[list[bytes], bytes]] | None = None

    def add(self, connection: "OutputMixin") -> None:
        """Send C{connection}'s output at the end of this iteration."""
        self._pending.append(connection)
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def read_first(self, connection: "OutputMixin") -> None:
        """Read C{connection}'s first input before its greeting is sent.

        Its C{_read_waiting} is called at the start of the next flush, so
        that the answer to what the client sent first goes out with the
        greeting (see L{chatservice.frontends.connection}).  The connection
        has output queued already (its greeting): the flush is on its way.
        """
        self._readers.append(connection)

    def read_end(self, connection: "OutputMixin") -> None:
        """Look for the end of C{connection}'s input before the next flush.

        Its C{_read_end} is called at the start of the next flush (after
        the first reads), so that a client that has finished sending, its
        last line and its end of input read in one iteration, is answered
        and closed in that flush (see L{chatservice.frontends.connection}).
        """
        ending = self._ending
        if ending and ending[-1] is connection:
            return
        ending.append(connection)
        if self._call is None:
            self._call = self._clock.callLater(0, self.flush)

    def flush(self) -> None:
        """Read new connections' first input, and ends of input; send all."""
        if self._readers:
            readers, self._readers = self._readers, []
            _read_each(readers, "_read_waiting", "its first input failed")
        if self._ending:
            ending, self._ending = self._ending, []
            _read_each(ending, "_read_end", "its end of input failed")
            # Those these reads asked to be looked at again (more input
            # than two reads take): the reactor reads them, and asks again.
            # Kept, they would wait for some later flush, closed or not.
            self._ending.clear()
        call, self._call = self._call, None
        if call is not None and call.active():
            call.cancel()
        pending, self._pending = self._pending, []
        start = perf_counter()
        if len(pending) > 1:
            # In the order the connections were made, whatever their front
            # end: a room's fan-out queues its members grouped by class
            # (rooms.Room.receivers), and flushed in that order the users of
            # one front end (web, sorted last) would always be sent a line
            # last, up to a whole flush (milliseconds, under load) after
            # the others.  Timsort of a few sorted runs: 25 us for 1,000.
            try:
                pending.sort(key=_CONNECTION_ID)
            except Exception:
                # A connection of a plugin's without a comparable number:
                # logged, and everyone's output still sent, in queued order
                # (raising here would strand every connection's output).
                log.failure("the connections to flush could not be ordered")
        self.joined = {}
        try:
            for connection in pending:
                try:
                    connection._flush()
                except Exception:
                    # A bug: logged, and the other connections' output goes
                    # on.  (Output of the wrong type cannot get here:
                    # deliver() refuses it at the call.)
                    log.failure(
                        "connection {connection_id}: its output could not be sent",
                        connection_id=connection.connection_id,
                    )
        finally:
            self.joined = None
        self.generation += 1
        self._stats.flush.observe(perf_counter() - start)


def _read_each(readers: "list[OutputMixin]", method: str, failed: str) -> None:
    """Call each of C{readers}' C{method} (a read the flusher makes for the reactor).

    One that raises is logged, as the reactor logs a read that raises, and
    the others go on (escaping, it would leave the flusher's call set to
    the running one, and no flush would come again).
    """
    for reader in readers:
        try:
            getattr(reader, method)()
        except Exception:
            log.failure(
                "connection {connection_id}: " + failed,
                connection_id=reader.connection_id,
            )


class Raw:
    """Bytes a front end sends of its own accord (telnet negotiation).

    Not an event: it never crosses the registry, and only the front end
    that made it queues it (with L{OutputMixin._answer_raw}), in order with
    its events.
    """

    __slots__ = ("line",)

    def __init__(self, data: bytes) -> None:
        #: The bytes, under the name the line format reads.
        self.line = data

    def encoded(self, encoder: object) -> bytes:
        """The bytes, whatever the format."""
        return self.line


#: What a connection's queue holds.
Output = Event | Raw


@implementer(IPushProducer)
class _OutputValve:
    """Told by the transport when its buffer fills and drains.

    A separate object, not the protocol: C{LineReceiver} has its own
    C{pauseProducing} that stops I{reading}, and a client that does not read
    must still be read (and disconnected when it falls too far behind).
    """

    __slots__ = ("_output",)

    def __init__(self, output: "OutputMixin") -> None:
        self._output: OutputMixin | None = output

    def pauseProducing(self) -> None:
        if self._output is not None:
            self._output._hold_output()

    def resumeProducing(self) -> None:
        if self._output is not None:
            self._output._release_output()

    def stopProducing(self) -> None:
        """The connection is gone: let go of it.

        A TLS transport keeps its producer once the connection is lost (a
        TCP one lets go of it); the connection refers to the transport, so
        the three would wait for Python's cyclic garbage collector.
        """
        self._output = None


#: The attributes of L{OutputMixin}, for the C{__slots__} of the class that
#: inherits it (only one base of a class may have slots of its own).
OUTPUT_SLOTS = (
    "_per_event",
    "_flusher",
    "_max_sendq",
    "_out",
    "_extra",
    "_direct",
    "_held",
    "_held_size",
    "_answered",
    "_answers_out",
    "_rescue",
)


#: The line format's encoder: an event's own C{line}.
_LINE: "Callable[[Output], bytes]" = attrgetter("line")


class _Counted:
    """The last bytes a recipient's own C{deliver} queued, and their LFs beyond one.

    A join or a departure is told to each member by its C{deliver}, one
    after the other (L{chatservice.rooms.tell}), with the very same bytes:
    their lines are counted for the first recipient only, and the others
    read the count here (two slot reads and an identity test, where
    C{bytes.count} is a call).  The bytes are kept alive here, so no other
    can have their identity.
    """

    __slots__ = ("data", "extra")

    def __init__(self) -> None:
        self.data = b"\n"
        self.extra = 0

    def extra_of(self, data: bytes) -> int:
        """The LFs in C{data} beyond one."""
        if data is not self.data:
            self.data = data
            self.extra = data.count(b"\n") - 1
        return self.extra


#: The one L{_Counted}: every C{deliver} reads it.
COUNTED = _Counted()


class OutputMixin:
    """One connection's send queue; see the module docstring.

    Call L{_init_output} from C{__init__}, L{_start_output} once the
    transport is there, L{_send_rest} when closing, L{_drop_output} once the
    connection is lost.  Put L{OUTPUT_SLOTS} in the inheriting class's
    C{__slots__}.
    """

    __slots__ = ()

    #: The bytes of an event (or L{Raw}) on this front end's wire; by
    #: default the line format, made once when the event is.
    _encode: "Callable[[Output], bytes]" = _LINE

    #: How the C{chatservice_lines_sent} metric counts what is sent: the
    #: line format's LFs (an event may be several lines), or, for a front
    #: end whose messages are frames, one per event queued (counting them
    #: in the bytes would walk every recipient's headers).  The LFs are not
    #: counted in the bytes a flush sends either (C{bytes.count} was 11 %
    #: of a lines-only server's CPU under fan-out): each piece queued counts
    #: one line, and the lines beyond one of a piece (a chat line of
    #: several lines, a welcome's answers, a telnet negotiation's none) are
    #: added to C{_extra} where the piece is queued, counted once per
    #: broadcast by a fan-out loop and once per piece by the rest.  A
    #: subclass with a C{deliver} of its own that queues several lines in a
    #: piece adds the lines beyond one to C{_extra} itself.
    _counts_events = False

    # Provided by the class that inherits this (see the module docstring).
    transport: "ITransport"
    factory: "IChatServer"
    connection_id: int
    _close_reason: "CloseReason | None"
    _pauses: frozenset[str]

    if TYPE_CHECKING:  # the inheriting class's (see the module docstring)

        def _pause(self, why: str) -> None: ...
        def _resume(self, why: str) -> None: ...
        def _overflowed(self) -> None: ...

    def _init_output(self, flusher: Flusher, max_sendq: int) -> None:
        """Start with nothing queued."""
        self._flusher = flusher
        self._max_sendq = max_sendq
        # _counts_events, read from a slot: a class attribute costs a lookup
        # through the whole MRO at each read (20 ns, per piece queued).
        self._per_event = self._counts_events
        # Output not yet handed to the socket or transport (see Flusher),
        # encoded already: while it is not empty, the connection is the
        # flusher's to flush.  One list for the connection's life (56
        # bytes), emptied by each flush: a list made and dropped per member
        # per flush was, under load, most of what the garbage collector
        # looked at (alive through its collections, promoted, it brought
        # on a full collection, some 30 ms, every second).
        self._out: list[bytes] = []
        # The LFs in _out beyond one a piece (see _counts_events): always 0
        # for a front end that counts events.
        self._extra = 0
        # Whether _flush may send on the socket itself (a tcp.Server).
        self._direct = False
        # Output held back while the transport's buffer is full, or None
        # while output goes straight to the transport.
        self._held: list[Output] | None = None
        # Bytes held, plus those handed to the transport at its last drain
        # (they may not all be sent yet): what counts against max_sendq.
        self._held_size = 0
        # Bytes of answers held (in _held, but not counted in _held_size).
        self._answered = 0
        # The flusher's generation and the bytes of answers in _out then.
        self._answers_out = _NO_ANSWERS
        # After an overflow, until the session is held: the output that
        # never reached the network, kept for a /resume.
        self._rescue: list[Output] | None = None

    def _start_output(self) -> None:
        """The transport is there: choose the writer, watch its buffer.

        A C{tcp.Server}'s buffer is watched (its producer registered) only
        once it is given bytes (in L{_flush}): the direct-send writer sends
        on the socket itself, and most connections (a short session, a
        quiet user) never fill the socket, so their transport never buffers
        a byte.  The valve and its registering and unregistering were 0.34 us
        of a churn session's start and end (timeit), and 40 bytes an idle
        connection.  Registered before the transport's first C{write}, the
        valve hears every pause Twisted would have told it of.
        """
        self._direct = type(self.transport) is tcp.Server
        if not self._direct:
            self.transport.registerProducer(_OutputValve(self), True)

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Give a class of the line format the line format's own C{deliver}.

        See L{_deliver_line}: chosen here, once, for every class whose
        C{_encode} is the line format's and that has no C{deliver} of its
        own; a class whose C{_encode} is a L{SharedEncoding} gets
        L{_deliver_shared}'s; any other keeps the general one.

        Likewise its C{deliver_all}, a room's fan-out to the receivers of
        this class (L{chatservice.rooms.say_in}): L{_deliver_all_line},
        L{_deliver_all_shared}'s, or, for a class with a C{deliver} of its
        own, L{deliver_each}.

        Each class gets its own copy of these and of L{_flush} (see
        L{_own_copy}): with line, frame, web and IRC users in one room, the
        attribute reads of a C{deliver} or C{_flush} shared by several
        classes kept missing CPython's inline caches.
        """
        super().__init_subclass__(**kwargs)
        own_deliver = "deliver" in cls.__dict__
        encode = cls._encode
        if not own_deliver:
            if encode is _LINE:
                deliver = _deliver_line
            elif isinstance(encode, SharedEncoding):
                deliver = _deliver_shared(encode, not cls._counts_events)
            else:
                deliver = OutputMixin.deliver
            cls.deliver = _own_copy(deliver)  # type: ignore[method-assign]
        if "deliver_all" not in cls.__dict__:
            if own_deliver or not (
                encode is _LINE or isinstance(encode, SharedEncoding)
            ):
                each = deliver_each
            elif encode is _LINE:
                each = _deliver_all_line
            else:
                each = _deliver_all_shared(encode, not cls._counts_events)
            cls.deliver_all = staticmethod(_own_copy(each))  # type: ignore[assignment]
        if "_flush" not in cls.__dict__:
            cls._flush = _own_copy(OutputMixin._flush)  # type: ignore[method-assign]

    @staticmethod
    def deliver_all(
        receivers: "Sequence[OutputMixin]", event: Event, skip: object
    ) -> None:
        """C{event} to each of C{receivers} (of this class) but C{skip}.

        What their C{deliver} does, in one call: see L{_deliver_all_line}.
        The caller has checked that C{event} is an L{Event}.
        """
        deliver_each(receivers, event, skip)

    def deliver(self, event: Event) -> None:
        """See L{IChatClient.deliver}."""
        if event.__class__ is not Event:
            raise not_an_event(event)
        # The fan-out's inner step, once per recipient: _queue's body again,
        # not a call to it (a call is a tenth of a deliver).  The event's
        # bytes (made once for every recipient) are queued, not the event:
        # a flush joins bytes in C, where encoding each queued event there
        # doubled a flush's cost when a busy connection had 20 waiting.
        held = self._held
        if held is None:
            data = self._encode(event)
            out = self._out
            if not out:
                self._flusher.add(self)
            out.append(data)
            if not self._per_event:
                self._extra += COUNTED.extra_of(data)
        else:
            self._queue(event)

    def _queue(self, data: Output) -> None:
        held = self._held
        if held is None:
            encoded = self._encode(data)
            out = self._out
            if not out:
                self._flusher.add(self)
            out.append(encoded)
            if not self._per_event:
                self._extra += encoded.count(b"\n") - 1
        elif self._close_reason is None:
            held.append(data)
            self._held_size += len(self._encode(data))
            stats = self.factory.stats
            if self._held_size > stats.sendq_high_water:
                stats.sendq_high_water = min(self._held_size, self._max_sendq)
            if self._held_size > self._max_sendq:
                self._overflow()
        elif self._rescue is not None:
            # Overflowed, and the session is not held yet: kept for it.
            self._rescue.append(data)
        # else: the connection is closing; nothing more is sent.

    def answer(self, event: Event) -> None:
        """See L{IChatSession.answer}."""
        if event.__class__ is not Event:
            raise not_an_event(event)
        self._answer(event)

    def answer_all(self, events: "Sequence[Event]") -> None:
        """See L{IChatSession.answer_all}.

        A welcome's scrollback is some 50 answers: queued here with one
        check each and one accounting, 52 ns an event against 216 through
        C{IChatSession.answer} one at a time (timeit, StringTransport).
        """
        batch = events.__class__ is Batch  # checked when made
        if not batch:
            for event in events:
                if event.__class__ is not Event:
                    raise not_an_event(event)
        if not events:
            return
        if self._held is not None:
            for event in events:
                self._answer(event)
            return
        encode = self._encode
        # A batch keeps its bytes for a format's shared encoder only: a
        # method's (IRC's) are this connection's, and would keep it.
        lines = None
        if batch and (encode is _LINE or isinstance(encode, SharedEncoding)):
            encoded, size, lines = events.encoded_counted(encode)  # type: ignore[attr-defined]
        else:
            encoded = list(map(encode, events))
            size = sum(map(len, encoded))
        if not self._per_event:
            if lines is None:
                lines = b"".join(encoded).count(b"\n")
            self._extra += lines - len(encoded)
        out = self._out
        if not out:
            self._flusher.add(self)
        out.extend(encoded)
        # As in _answer: these bytes do not count if the transport fills.
        generation, before = self._answers_out
        now = self._flusher.generation
        self._answers_out = (now, size + (before if generation == now else 0))

    def _answer_raw(self, data: bytes) -> None:
        """Answer with bytes of the front end's own (see L{Raw})."""
        self._answer(Raw(data))

    def _answer(self, data: Output) -> None:
        held = self._held
        if held is None:
            # _queue's first case, inline: one call less per answer.
            encoded = self._encode(data)
            out = self._out
            if not out:
                self._flusher.add(self)
            out.append(encoded)
            if not self._per_event:
                self._extra += encoded.count(b"\n") - 1
            # Sent at the end of this iteration; if the transport fills
            # then, these bytes do not count (see _flush).
            generation, size = self._answers_out
            now = self._flusher.generation
            self._answers_out = (
                now,
                len(encoded) + (size if generation == now else 0),
            )
            return
        if self._close_reason is not None:
            self._queue(data)
            return
        # The client is behind: the answer waits, uncounted, and the client
        # is not read until it has caught up (see _release_output).
        held.append(data)
        self._answered += len(self._encode(data))
        self._pause("output")

    def _flush(self) -> None:
        """Send the output delivered since the last flush; see L{Flusher}.

        The direct-send writer: the one function that reads Twisted's
        private transport attributes.  It sends on the socket itself only
        while the transport has nothing buffered (so the order is kept) and
        is neither closed nor closing.
        """
        out = self._out
        if not out:
            return
        extra = self._extra
        self._extra = 0
        count = len(out)
        joined = self._flusher.joined
        try:
            if joined is None or count < _JOINED_SHARED:
                # One line since the last flush, as often: its bytes,
                # shared with every other recipient (join gives a lone item
                # back, uncopied).
                data = b"".join(out)
            else:
                data = _joined(joined, out)
        finally:
            # Emptied whatever happens (no Python code ran meanwhile, so
            # nothing was queued): output that cannot be joined is lost,
            # and what comes after is still sent.
            out.clear()
        stats = self.factory.stats
        # One line a piece, and those beyond one counted where queued.
        stats.lines_out += count + extra
        stats.bytes_out += len(data)
        transport = self.transport
        if self._direct:
            try:
                idle = (
                    not transport.dataBuffer  # type: ignore[attr-defined]
                    and not transport._tempDataLen  # type: ignore[attr-defined]
                    and transport.connected  # type: ignore[attr-defined]
                    and not transport.disconnecting  # type: ignore[attr-defined]
                )
                sock = transport.socket  # type: ignore[attr-defined]
            except AttributeError:
                # Twisted's insides changed: write through the transport
                # from now on (tests/test_output.py says so).
                self._direct = idle = False
                transport.registerProducer(_OutputValve(self), True)
            if idle:
                try:
                    sent = sock.send(data)
                except OSError:
                    # Full (EAGAIN), or failing: the transport sends it
                    # later, or finds out why it cannot.
                    sent = 0
                if sent == len(data):
                    return
                data = data[sent:]
            if transport.producer is None and not transport.disconnecting:
                # Its first bytes to buffer: from now on its buffer is
                # watched (see _start_output); not once it is closing, as a
                # transport with a producer waits for it before closing.
                transport.registerProducer(_OutputValve(self), True)
        transport.write(data)
        if self._held is not None:
            # That filled the transport's buffer: what it could not take
            # counts against max_sendq, like output held after it, except
            # answers: then the client is not read until it has caught up.
            generation, answers = self._answers_out
            if answers and generation == self._flusher.generation:
                self._answers_out = _NO_ANSWERS
                self._pause("output")
                self._held_size += max(len(data) - answers, 0)
            else:
                self._held_size += len(data)
            if self._held_size > self._max_sendq:
                self._overflow()

    def _hold_output(self) -> None:
        if self._held is None:
            self._held = []

    def _release_output(self) -> None:
        """The transport sent everything: hand it what was held."""
        held, self._held = self._held, None
        encoded = list(map(self._encode, held)) if held else []
        self._count_out(encoded)
        out = self._out
        if out:
            # Delivered before the transport filled (it can fill outside a
            # flush, e.g. TLS writing records of its own): older than held.
            stats = self.factory.stats
            stats.lines_out += len(out) + self._extra
            stats.bytes_out += sum(map(len, out))
            self._extra = 0
            encoded = out + encoded
            out.clear()
        size = 0
        if encoded:
            self.transport.writeSequence(encoded)
            size = sum(map(len, encoded))
        # Those bytes are now in the transport, and count until it drains
        # again (answers excepted); writing them may already have filled it
        # and held output.
        self._held_size = size - self._answered if encoded else 0
        self._answered = 0
        if "output" in self._pauses:
            self._resume("output")  # the client caught up: read its lines

    def _count_out(self, held: list[bytes]) -> None:  # encoded
        """Count held output (encoded now) handed to the transport.

        Counted in its bytes: held output is only sent once a client has
        caught up, where its lines are not counted as they are queued.
        """
        if not held:
            return
        stats = self.factory.stats
        if self._per_event:
            stats.lines_out += len(held)
        else:
            stats.lines_out += b"".join(held).count(b"\n")
        stats.bytes_out += sum(map(len, held))

    def _overflow(self) -> None:
        """The client fell too far behind: close, keeping its output.

        What was held (never handed to the network) is kept for a resume:
        the session is held (L{chatservice.resume}) with it as its first
        missed lines, private messages among them kept first.  What the
        transport and the kernel already have is still sent, and the
        connection closed after it (L{_overflowed}).  This happens inside a
        fan-out loop, so the connection leaves the registry a moment later;
        what arrives until then is kept too.
        """
        log.info(
            "connection {connection_id}: more than {max_sendq} bytes unsent",
            connection_id=self.connection_id,
            max_sendq=self._max_sendq,
        )
        self._rescue, self._held = self._held, []
        self._answered = 0
        self.transport.unregisterProducer()
        self._overflowed()

    def _take_rescued(self) -> list[Event] | None:
        """What an overflow kept for a resume, once; None if nothing."""
        rescued, self._rescue = self._rescue, None
        if rescued is None:
            return None
        # The front end's own bytes (telnet answers) are not for a resume.
        return [item for item in rescued if item.__class__ is Event]

    def _send_rest(self) -> None:
        """Closing: send everything queued, then stop watching the transport.

        A transport with a producer waits for it before closing.  From now
        on L{deliver} drops everything.
        """
        self._flush()
        held, self._held = self._held, []
        if held:
            encoded = list(map(self._encode, held))
            self.transport.writeSequence(encoded)
            self._count_out(encoded)
        transport = self.transport
        if not self._direct or transport.producer is not None:
            # (A tcp.Server's is registered only once it buffered bytes.)
            transport.unregisterProducer()

    def _close_at_once(self) -> bool:
        """Close now a TCP connection whose output is all sent; or say no.

        The direct close, for a client that has finished sending (nothing
        more will be read) once L{_send_rest} has sent everything.
        Twisted's C{loseConnection} waits for the socket to be reported
        writable once more even when nothing is buffered: it watches the
        socket again (an C{epoll_ctl}), and in the next reactor iteration
        sends nothing (a C{send} of no bytes), stops watching it and loses
        the connection, cleanly (C{ConnectionDone}): 20 us of a short
        session's 250 (py-spy, C{scripts/churn.py}).  This does the end of
        that at once, as C{loseConnection} itself does for a connection
        whose writing side is already shut: stop watching the socket, lose
        the connection.  Only when nothing is buffered, nothing produces,
        and the transport is a C{tcp.Server} that is neither closed nor
        closing (as for L{_flush}); else C{loseConnection} is the caller's.
        """
        if not self._direct:
            return False
        transport = self.transport
        try:
            idle = (
                not transport.dataBuffer  # type: ignore[attr-defined]
                and not transport._tempDataLen  # type: ignore[attr-defined]
                and transport.connected  # type: ignore[attr-defined]
                and not transport.disconnecting  # type: ignore[attr-defined]
                and transport.producer is None  # type: ignore[attr-defined]
            )
        except AttributeError:
            self._direct = False  # as in _flush: Twisted's insides changed
            return False
        if not idle:
            return False
        # It stops watching the socket itself (FileDescriptor.connectionLost).
        transport.connectionLost(connectionDone)  # type: ignore[attr-defined]
        return True

    def _drop_output(self) -> None:
        """The connection is gone: what comes late is dropped, not counted."""
        self._held = []
        self._out.clear()
        self._extra = 0


def _joined(joined: dict[int, tuple[list[bytes], bytes]], out: list[bytes]) -> bytes:
    """C{b"".join(out)}, shared with the connections sent the same pieces.

    Under load, a room's members of one front end are mostly sent the same
    many pieces in a flush (a flush's worth of the room's lines), so their
    bytes are joined once and shared, as one line's are.  The pieces are
    compared (by identity first, as a list compares), never assumed: a
    user who joined late, or was sent something of its own, gets its own
    join.  C{joined} is the flush's L{Flusher.joined}.
    """
    first = id(out[0])
    last = joined.get(first)
    if last is not None and last[0] == out:
        return last[1]
    data = b"".join(out)
    if len(joined) >= _JOINED_MOST:
        joined.clear()
    # A copy: the list is emptied after.  Keeping the copy keeps its first
    # piece, and so its id.
    joined[first] = (out.copy(), data)
    return data


def _own_copy(function: "Callable[..., None]") -> "Callable[..., None]":
    """C{function} again, with a code object (and inline caches) of its own.

    CPython 3.11 specialises each attribute read of a function's bytecode
    for the one class it last saw, in caches kept on the code object.  The
    fan-out calls C{deliver} and C{_flush} for a room's members grouped by
    class (L{chatservice.rooms.Room.receivers}), but a function shared by
    two classes whose slots differ (the frame and web front ends' one
    L{_deliver_shared} code, every front end's L{_flush}) sees them switch
    at every broadcast, and each switch costs some fifty reads through the
    slow path per instruction before it specialises again.  A copy per
    class keeps each copy's caches right: one line to 1,000 users of the
    line, frame, web and IRC front ends in turn (C{scripts/fanout.py --mix
    --rounds 40}, CPU time) went from 555 to 515 us, 1,000 line users
    staying at 416.
    """
    copy = FunctionType(
        function.__code__.replace(),
        function.__globals__,
        function.__name__,
        function.__defaults__,
        function.__closure__,
    )
    copy.__qualname__ = function.__qualname__
    copy.__doc__ = function.__doc__
    copy.__kwdefaults__ = function.__kwdefaults__
    copy.__annotations__ = function.__annotations__
    copy.__module__ = function.__module__
    return copy


def _deliver_line(self: OutputMixin, event: Event) -> None:
    """L{OutputMixin.deliver} for the line format: C{event.line} is queued.

    The same as the general C{deliver}, but for its one line: reading the
    event's C{line} slot where the general one calls C{self._encode}, 45 ns
    less per recipient of every line (fan-out to 1,000 StringTransport
    connections: 100 against 58 us a line before issue 16, 62 with this).
    """
    if event.__class__ is not Event:
        raise not_an_event(event)
    held = self._held
    if held is None:
        data = event.line
        out = self._out
        if not out:
            self._flusher.add(self)
        out.append(data)
        # _Counted.extra_of's body: no call for a line told to each member.
        counted = COUNTED
        if data is not counted.data:
            counted.data = data
            counted.extra = data.count(b"\n") - 1
        if counted.extra:
            self._extra += counted.extra
    else:
        self._queue(event)


def _deliver_shared(
    encoding: SharedEncoding, count_lines: bool
) -> "Callable[[OutputMixin, Event], None]":
    """L{OutputMixin.deliver} for a format whose bytes every user shares.

    The same as L{_deliver_line}, the bytes read from C{encoding}'s memory
    of the last event (a cell of this closure, not an attribute of the
    class: a class attribute read through an instance is not specialised
    by CPython 3.11, and costs a walk of the class's MRO per recipient).
    C{count_lines}: the format's lines are its LFs (not its events).
    """

    def deliver(self: OutputMixin, event: Event) -> None:
        if event.__class__ is not Event:
            raise not_an_event(event)
        if self._held is None:
            data = encoding.data if event is encoding.event else encoding(event)
            out = self._out
            if not out:
                self._flusher.add(self)
            out.append(data)
            if count_lines:
                self._extra += COUNTED.extra_of(data)
        else:
            self._queue(event)

    deliver.__doc__ = OutputMixin.deliver.__doc__
    return deliver


def deliver_each(
    receivers: "Sequence[OutputMixin]", event: Event, skip: object
) -> None:
    """L{OutputMixin.deliver_all} by each receiver's own C{deliver}.

    Also what a room calls for a receiver class without a C{deliver_all}
    (L{chatservice.rooms.Room.groups}).
    """
    for receiver in receivers:
        if receiver is not skip:
            receiver.deliver(event)


def _deliver_all_line(
    receivers: "Sequence[OutputMixin]", event: Event, skip: object
) -> None:
    """L{OutputMixin.deliver_all} for the line format.

    L{_deliver_line}'s body for each receiver, in one loop: a line's
    fan-out calls this once per front end, not C{deliver} once per
    recipient.  The call was half of what a recipient cost: one line to
    1,000 line users (StringTransports, their output already waiting to be
    flushed, as under load) 55 ns a recipient through C{deliver}, 25 here;
    and the frame, web and IRC front ends' C{deliver}s each cost 12 to 15
    ns more than the line format's, where these loops cost alike.
    """
    data = event.line
    # Its lines beyond one, counted once (see OutputMixin._counts_events):
    # none for a line of one line, and then no recipient pays for them.
    extra = data.count(b"\n") - 1
    for receiver in receivers:
        if receiver is skip:
            continue
        if receiver._held is None:
            out = receiver._out
            if not out:
                # Flusher.add's body: no call for a recipient with nothing
                # waiting yet (every one, when lines come one at a time).
                flusher = receiver._flusher
                flusher._pending.append(receiver)
                if flusher._call is None:
                    flusher._call = flusher._clock.callLater(0, flusher.flush)
            out.append(data)
            if extra:
                receiver._extra += extra
        else:
            receiver._queue(event)


def deliver_all_shared(
    encoding: SharedEncoding, count_lines: bool
) -> "Callable[[Sequence[OutputMixin], Event, object], None]":
    """A C{deliver_all} for receivers who are all sent C{encoding}'s bytes.

    L{_deliver_all_shared}'s, with code of its own (L{_own_copy}): for a
    front end whose format varies by receiver (IRC's server-time tags),
    when every receiver has the same.
    """
    return _own_copy(_deliver_all_shared(encoding, count_lines))


def _deliver_all_shared(
    encoding: SharedEncoding, count_lines: bool
) -> "Callable[[Sequence[OutputMixin], Event, object], None]":
    """L{_deliver_all_line} for a format whose bytes every user shares.

    The event is encoded once (L{SharedEncoding}) before the loop.
    C{count_lines}: the format's lines are its LFs (not its events).
    """

    def deliver_all(
        receivers: "Sequence[OutputMixin]", event: Event, skip: object
    ) -> None:
        data = encoding(event)
        extra = data.count(b"\n") - 1 if count_lines else 0
        for receiver in receivers:
            if receiver is skip:
                continue
            if receiver._held is None:
                out = receiver._out
                if not out:
                    # Flusher.add's body, as in _deliver_all_line.
                    flusher = receiver._flusher
                    flusher._pending.append(receiver)
                    if flusher._call is None:
                        flusher._call = flusher._clock.callLater(0, flusher.flush)
                out.append(data)
                if extra:
                    receiver._extra += extra
            else:
                receiver._queue(event)

    deliver_all.__doc__ = OutputMixin.deliver_all.__doc__
    return deliver_all
