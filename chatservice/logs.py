"""The gate that chatservice's own log events pass on their way to twistd.

Every module logs with C{Logger(observer=gate)}.  The gate drops events
below its level (C{--log-level}) before twistd's observer formats them,
which is most of an event's cost: on a server with many short sessions the
per-connection events at C{info} are a visible share of the CPU.  Twisted's
own events do not pass the gate.
"""

from twisted.logger import ILogObserver, LogEvent, LogLevel, globalLogPublisher
from zope.interface import implementer

#: The names C{--log-level} accepts, lowest first.
LEVELS = tuple(level.name for level in LogLevel.iterconstants())


@implementer(ILogObserver)
class LevelGate:
    """Passes events at or above L{level} on to the global log publisher."""

    def __init__(self, level: LogLevel = LogLevel.info) -> None:
        self.level = level

    def __call__(self, event: LogEvent) -> None:
        """Pass C{event} on, unless it is below the level."""
        if event["log_level"] >= self.level:
            globalLogPublisher(event)


#: The gate of all of chatservice's loggers.
gate = LevelGate()
