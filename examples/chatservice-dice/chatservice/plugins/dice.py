"""/roll NdM: roll dice where the whole room can see the result.

A third-party chatservice plugin: install this distribution beside
chatservice and the command is there, with no configuration.
"""

import random
import re

from chatservice import events
from chatservice.commands import command
from chatservice.errors import ChatError
from chatservice.interfaces import IChatSession

MAX_DICE = 20
MAX_SIDES = 1000
_SPEC = re.compile(r"(\d*)d(\d+)", re.IGNORECASE)

#: Where the dice come from; tests replace it with a seeded Random.
rng = random.SystemRandom()


@command("/roll [NdM]", "roll N dice of M sides for your room (default 1d6)")
def roll(session: IChatSession, args: str) -> None:
    """Roll the dice and tell the room, the roller included."""
    spec = args or "1d6"
    match = _SPEC.fullmatch(spec)
    if match is None:
        raise ChatError(f"cannot roll {spec!r}: write dice as NdM, e.g. 2d6")
    dice, sides = int(match.group(1) or 1), int(match.group(2))
    if not (1 <= dice <= MAX_DICE and 2 <= sides <= MAX_SIDES):
        raise ChatError(
            f"cannot roll {spec}: use 1 to {MAX_DICE} dice of 2 to {MAX_SIDES} sides"
        )
    rolls = [rng.randint(1, sides) for _ in range(dice)]
    shown = " + ".join(map(str, rolls)) + (f" = {sum(rolls)}" if dice > 1 else "")
    line = events.notice(f"{session.nickname} rolls {dice}d{sides}: {shown}")
    session.registry.broadcast(session.room, line, None)
