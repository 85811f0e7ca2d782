"""What a session hook costs where it is called, measured with timeit.

Usage::

    python3 scripts/hooks_cost.py

The chat line path calls C{if hooks.on_said: hooks.said(...)}: this prints
the cost of that test with no hooks plugins, with a plugin that has no
C{said} hook, and with one that has; and, for comparison, a call into the
dispatcher with nothing to call, as the once-per-connection hooks make it.
Best of 7 runs of a million each, in nanoseconds per call.
"""

import timeit

from twisted.internet.task import Clock

from chatservice.hooks import Hooks, SessionHooks
from chatservice.reasons import CONNECTION_LOST


class Session:
    """As much of a session as the dispatcher reads."""

    room = "#lobby"


class Counter(SessionHooks):
    """Has a said hook, which counts."""

    name = "counter"
    count = 0

    def said(self, session: object, room: str, text: str) -> None:
        """Count the line."""
        self.count += 1


class Greeter(SessionHooks):
    """Has a registered hook only."""

    name = "greeter"

    def registered(self, session: object) -> None:
        """Do nothing: only its presence matters."""


def main() -> None:
    """Time each case and print it."""
    none, other = Hooks((), Clock()), Hooks([Greeter()], Clock())
    one = Hooks([Counter()], Clock())
    guarded = "if hooks.on_said: hooks.said(session, '#lobby', 'hello')"
    cases = [
        ("a chat line, no hooks plugins", guarded, none),
        ("a chat line, a plugin without said", guarded, other),
        ("a chat line, a plugin with said", guarded, one),
        ("an unguarded call, no hooks plugins", "hooks.said(session, 'r', 't')", none),
        ("connected, no hooks plugins", "hooks.connected(session)", none),
        ("disconnected, no hooks plugins", "hooks.disconnected(session, why)", none),
    ]
    number = 1_000_000
    for label, statement, hooks in cases:
        session = Session()
        hooks.connected(session)
        hooks.registered(session)
        names = {"hooks": hooks, "session": session, "why": CONNECTION_LOST}
        best = min(timeit.repeat(statement, globals=names, number=number, repeat=7))
        print(f"{label:40s} {best / number * 1e9:6.1f} ns")


if __name__ == "__main__":
    main()
