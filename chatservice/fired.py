"""Deferreds that have fired already: their result now, without a callback.

The in-memory registry answers at once: its C{register}, C{count},
C{users} and C{join} return Deferreds that have fired.  Chaining callbacks
on them costs a Deferred's machinery for each step (the welcome's five
steps and the command's bookkeeping were ~40 us of a ~240 us session:
C{scripts/churn.py}); L{then} takes such a result at once and calls the
next step with it, and chains on the Deferred only when there is one to
wait for (Redis, the store).  A failure is never taken out of a Deferred
here: it stays on its Deferred, whose errbacks handle it as before.
"""

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure


def succeeded(d: Deferred[Any]) -> bool:
    """Whether C{d} has fired with a result (not a failure) and is done.

    Done: not waiting on another Deferred that a callback returned.  C{d}
    must be one a call has just returned, not one whose callbacks are
    running (a callback's own Deferred shows the result of its step).
    """
    return d.called and not d.paused and not isinstance(d.result, Failure)


#: Classes of the values the welcome's steps pass on, which L{then} knows
#: are not Deferreds at once: isinstance(value, Deferred) goes through
#: ABCMeta.__instancecheck__ (Deferred is an Awaitable), 0.3 us a step.
_VALUES = frozenset({str, list, tuple, dict, int, type(None)})


def then(result: object, step: Callable[..., Any], *args: object) -> Any:
    """C{step(value, *args)}: now if C{result} is a value or has fired.

    C{result} is a value or a Deferred.  If it is a Deferred that has not
    fired, or has failed, the step is added as its callback and the
    Deferred is returned; otherwise the step runs now, and what it returns
    (a value or a Deferred) is returned.
    """
    if result.__class__ in _VALUES:
        return step(result, *args)
    if isinstance(result, Deferred):
        # succeeded(result), inline: a call less at each of a welcome's
        # five steps.
        if not result.called or result.paused or isinstance(result.result, Failure):
            return result.addCallback(step, *args)
        result = result.result
    return step(result, *args)
