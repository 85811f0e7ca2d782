"""C{chatservice-bench}: load a chat server with many clients, and measure it.

For operators sizing a deployment.  The parent process spawns worker
processes (C{python -m chatservice.tools.bench --worker PLAN}), so that the load
can come from more than one CPU.  Each worker connects its share of the
clients, registers them (C{/nick PREFIXn}, then C{/join ROOM} if asked), and
its share of the senders then says chat lines at its share of the rate.
Every client of every worker counts the lines it receives and how long they
took.

A chat line carries its run, its number and the moment it was sent
(C{time.time_ns()}: every worker is on the same machine, so the clocks
agree)::

    ~b:RUN:SEQ:NANOSECONDS:m xxxx...

C{m} marks a line of the measured period, C{w} one of the warm-up.  The
parent talks to each worker over its standard input (one command a line:
C{warmup}, C{measure}, C{drain}, C{quit}) and reads its standard output:
one JSON object a line, a report every L{REPORT_INTERVAL} seconds with the
counts so far and a L{Histogram} of the latencies since the last report,
which the parent merges.  When a worker's standard input ends (the parent is
gone), the worker ends too.

Precise comparisons between servers use the shared Go load generator
(C{../shared/bench}); this tool is for a quick, honest answer on one setup.

The modules: L{plan} (options, plans, timings, the latency histogram),
L{worker} (a worker process), L{run} (the parent), L{cli} (the command
line and the console script).
"""

from .cli import main, parse_args, spawner
from .plan import DRAIN_TIMEOUT, Options, Plan, latencies, split
from .progress import Progress
from .run import Run, WorkerProcess
from .worker import Worker, refusal_hint

__all__ = [
    "DRAIN_TIMEOUT",
    "Options",
    "Plan",
    "Progress",
    "Run",
    "Worker",
    "WorkerProcess",
    "latencies",
    "main",
    "parse_args",
    "refusal_hint",
    "spawner",
    "split",
]
