"""What a server counts about itself, for C{/stats} (and metrics)."""

from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class Stats:
    """Counters of one server process since it started.

    Chat lines said and delivered are counted by the registry (see
    L{chatservice.interfaces.IRegistry}); everything else is here.
    """

    #: When the server started (its clock's seconds).
    started: float
    #: Input lines received, commands included.
    lines_in: int = 0
    #: The most connections open at once.
    peak_connections: int = 0
    #: Connections that ended, by reason ("quit", "idle timeout", ...).
    closed: Counter[str] = field(default_factory=Counter)
    #: Connections refused at connect, by reason ("banned", ...).
    refused: Counter[str] = field(default_factory=Counter)
