"""The command line of C{chatservice-bench}: options, progress, running.

L{parse_args} checks the command line; L{run_parent} runs a L{Run} with
its progress display (L{Progress}) and signal handling; L{main} is the
console script, which is also the entry of a worker (C{--worker PLAN}).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from ...errors import InvalidName
from ...text import check_nickname, check_room
from ..connect import DEFAULT_PORT
from .plan import PROG, Options, Plan
from .progress import Progress
from .run import Run, WorkerProcess
from .worker import run_worker


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line and exit status 1."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{PROG}: {message} (see {PROG} --help)\n")
        sys.exit(1)


def _number(kind: Callable[[str], float], minimum: float, strict: bool) -> Any:
    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        low = value > minimum if strict else value >= minimum
        if not (math.isfinite(value) and low):
            sign = ">" if strict else ">="
            raise argparse.ArgumentTypeError(f"must be {sign} {minimum:g}: {text!r}")
        return value

    return coerce


def parse_args(argv: list[str] | None = None) -> Options:
    """The checked command line; one line and exit status 1 if wrong."""
    cpus = os.cpu_count() or 1
    parser = _Parser(
        prog=PROG,
        description=(
            "Connect many clients to a chatservice server, register them, say "
            "chat lines at a given rate and measure deliveries/s and latency. "
            "Precise comparisons between servers use the shared Go load "
            "generator; see docs/bench.md."
        ),
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="the server (default: 127.0.0.1)")
    add(
        "--port",
        type=_number(int, 0, strict=True),
        default=DEFAULT_PORT,
        help=f"its port (default: {DEFAULT_PORT})",
    )
    add("--tls", action="store_true", help="connect with TLS")
    add("--cafile", help="with --tls, trust the CA certificates in this PEM file")
    add(
        "--insecure",
        action="store_true",
        help="with --tls, do not check the server's certificate",
    )
    add(
        "--clients",
        type=_number(int, 2, strict=False),
        default=100,
        help="clients to connect (default: 100)",
    )
    add(
        "--senders",
        type=_number(int, 1, strict=False),
        default=None,
        help="how many of the clients say chat lines (default: 10, at most --clients)",
    )
    add(
        "--rate",
        type=_number(float, 0, strict=True),
        default=50.0,
        help="chat lines per second, all senders together (default: 50)",
    )
    add(
        "--duration",
        type=_number(float, 0, strict=True),
        default=10.0,
        help="seconds measured (default: 10)",
    )
    add(
        "--warmup",
        type=_number(float, 0, strict=False),
        default=2.0,
        help="seconds of load before measuring (default: 2)",
    )
    add(
        "--workers",
        type=_number(int, 1, strict=False),
        default=None,
        help=f"worker processes (default: the number of CPUs, {cpus}, "
        "at most --clients)",
    )
    add("--room", help="/join this room after registering (default: stay in #lobby)")
    add(
        "--prefix",
        default="bench",
        help="nicknames are PREFIX0, PREFIX1, ... (default: bench)",
    )
    add(
        "--connect-rate",
        type=_number(float, 0, strict=True),
        default=50.0,
        help="new connections per second, per worker (default: 50)",
    )
    add(
        "--connect-timeout",
        type=_number(float, 0, strict=True),
        default=10.0,
        help="seconds a connection attempt may take (default: 10)",
    )
    add(
        "--payload",
        type=_number(int, 0, strict=False),
        default=0,
        help="pad each chat line to this many bytes (default: 0, no padding: "
        "about 40 bytes)",
    )
    add(
        "--no-progress",
        action="store_true",
        help="no progress display on standard error",
    )
    args = parser.parse_args(argv)
    if args.senders is None:
        args.senders = min(10, args.clients)
    if args.senders > args.clients:
        parser.error(f"--senders {args.senders} is more than --clients {args.clients}")
    if (args.cafile or args.insecure) and not args.tls:
        parser.error("--cafile and --insecure need --tls")
    if args.port > 65535:
        parser.error(f"--port must be 1 to 65535, not {args.port}")
    try:
        check_nickname(f"{args.prefix}{args.clients - 1}")
    except InvalidName as e:
        parser.error(f"--prefix {args.prefix!r} makes bad nicknames: {e}")
    room = None
    if args.room is not None:
        try:
            room = check_room(args.room)
        except InvalidName as e:
            parser.error(f"--room: {e}")
        if room == "#lobby":
            room = None
    workers = args.workers if args.workers is not None else cpus
    return Options(
        host=args.host,
        port=args.port,
        tls=args.tls,
        insecure=args.insecure,
        cafile=args.cafile,
        clients=args.clients,
        senders=args.senders,
        rate=args.rate,
        duration=args.duration,
        warmup=args.warmup,
        workers=min(workers, args.clients),
        room=room,
        prefix=args.prefix,
        connect_rate=args.connect_rate,
        connect_timeout=args.connect_timeout,
        payload=args.payload,
        progress=not args.no_progress,
    )


def spawner(reactor: Any) -> Callable[[int, Plan, WorkerProcess], Any]:
    """Start workers as C{python -m chatservice.tools.bench --worker PLAN}."""

    def spawn(index: int, plan: Plan, process: WorkerProcess) -> Any:
        args = [
            sys.executable,
            "-m",
            "chatservice.tools.bench",
            "--worker",
            json.dumps(asdict(plan)),
        ]
        return reactor.spawnProcess(
            process,
            sys.executable,
            args,
            env=dict(os.environ),
            childFDs={0: "w", 1: "r", 2: "r"},
        )

    return spawn


def write_line(line: str) -> None:
    """Print C{line} on standard output at once.

    If standard output is closed (C{chatservice-bench | head -1}), the
    error goes up to the caller, and standard output is pointed at
    C{/dev/null} so that Python's own flush when it exits fails no more.
    """
    try:
        print(line, flush=True)
    except (OSError, ValueError):
        try:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
        except (OSError, ValueError):
            pass
        raise


async def run_parent(reactor: Any, options: Options) -> None:
    """Run the benchmark described by C{options}; exit 1 if it failed."""
    run = Run(
        reactor,
        options,
        spawner(reactor),
        Progress(sys.stderr, options.progress),
        write_line,
    )

    def interrupted(number: int, frame: Any) -> None:
        # Exit as a shell reports a process killed by the signal: 128 + it.
        reactor.callFromThread(run.interrupt, 128 + number)

    # Ctrl-C or SIGTERM: the workers quit, then the run ends.  Once the
    # reactor runs, since it installs its own handlers when it starts.
    handlers = [signal.SIGINT, signal.SIGTERM]
    previous: list[Any] = []

    def install() -> None:
        previous.extend(signal.signal(number, interrupted) for number in handlers)

    reactor.callWhenRunning(install)
    # Anything else that stops the reactor: take the workers down too.
    trigger = reactor.addSystemEventTrigger("before", "shutdown", run.kill_all)
    try:
        code = await run.start()
    finally:
        reactor.removeSystemEventTrigger(trigger)
        for number, handler in zip(handlers, previous, strict=False):
            signal.signal(number, handler)
    if code:
        raise SystemExit(code)  # task.react exits 0 whatever main returns


def main(argv: Iterable[str] | None = None) -> None:
    """The console script C{chatservice-bench}; exits with the status."""
    from twisted.internet import task

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--worker"] and len(args) == 2:
        # Before the reactor starts, so that it leaves SIGINT alone.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        task.react(run_worker, [args[1]])
    options = parse_args(args)
    task.react(run_parent, [options])
