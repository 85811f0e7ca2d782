"""Benchmark chatservice as one node and as a cluster of two nodes on one machine.

Usage::

    python3 scripts/cluster_bench.py                       # defaults below
    python3 scripts/cluster_bench.py --rates 100,400 --repeat 3 --pin
    python3 scripts/cluster_bench.py --configs single,cluster --duration 5

It starts its own ``redis-server`` (a free port of 127.0.0.1, ``--save ''
--appendonly no``, in a temporary directory) and, for each measurement, fresh
chatservice nodes (``twistd -n chat`` run by this interpreter, with the
per-address limits lifted), in three configurations:

- ``single``: one node, no Redis (the baseline);
- ``redis``: one node with ``--redis`` and ``--cluster`` (the cost of the
  cluster layer alone);
- ``cluster``: two nodes on the same Redis and cluster name, the clients
  split half and half between them (receivers and senders on both).

The clients are ``chatservice-bench``'s own workers (``python -m
chatservice.tools.bench --worker PLAN``), driven by its ``Run`` class in a
separate process, with one change: worker ``i`` connects to node ``i mod
nodes``.  All the workers share one run, so every client counts every line
of the run, whichever node its sender is on, and the latency (send
timestamp in the line, same machine clock) is end to end across nodes.
Every configuration has the same clients (``--receivers`` + ``--senders``,
``--workers`` processes) and the same offered rates (``--rates``, lines per
second, all senders together; each line reaches every client but its
sender).  A rate above what the setup can carry shows its ceiling: the
deliveries per second level off, latency grows and lines arriving more than
5 s after the senders stopped count as lost.

With ``--pin`` each node is pinned to a core with ``taskset`` (node ``k`` to
core ``k mod CPUs``); Redis and the clients are left to the scheduler.

It prints one line per measurement, then a table (the median over
``--repeat`` rounds and the spread, min to max) with the CPU used during the
measured seconds by the nodes, Redis, the clients and the whole machine
(from /proc); "other" is what neither they nor Redis used, i.e. other work
on the machine.  Before each measurement it waits (up to ``--quiet-wait`` s)
for other work to use less than ``--quiet-limit`` % of a core.  Everything
it starts is stopped on exit, on Ctrl-C, SIGTERM and errors: the nodes and
Redis by their process group (SIGTERM, then SIGKILL), and the temporary
directory is removed unless ``--keep-logs`` or something went wrong.  Exit
status 0 if every measurement ran and every line reached every client once,
1 otherwise.  Linux only.  This is a script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: Server options that lift the per-address limits (as /tmp/chatbench/ours.sh).
SERVER_LIMITS = [
    "--max-clients",
    "20000",
    "--max-per-ip",
    "20000",
    "--max-connect-rate",
    "1000000",
    "--flood-rate",
    "1000000",
    "--flood-burst",
    "1000000",
    "--resume-grace",
    "0",
    "--idle-timeout",
    "3600",
    "--register-timeout",
    "600",
]

#: Configuration name: (nodes, with Redis).
CONFIGS = {"single": (1, False), "redis": (1, True), "cluster": (2, True)}

HZ = os.sysconf("SC_CLK_TCK")


class Stop(Exception):
    """SIGTERM or SIGHUP: stop like Ctrl-C."""


def free_port() -> int:
    """A free TCP port of 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, log: str) -> None:
    """Wait until C{port} accepts connections; fail if C{proc} ends first."""
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited ({proc.returncode}): {tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within 20 s: {tail(log)}")


def tail(path: str, lines: int = 5) -> str:
    """The last lines of a log file, for an error message."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


# Processes: started in their own session, stopped by their process group.


class Processes:
    """The processes this script started, to stop them all at the end."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], log: str, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start C{argv} in a new session, its output to the file C{log}."""
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=kwargs.pop("stdout", out),
                stderr=out,
                start_new_session=True,
                cwd=ROOT,
                **kwargs,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """SIGTERM the process group of C{proc}, then SIGKILL after C{grace} s."""
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left in its group
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            pass
        if proc in self.procs:
            self.procs.remove(proc)

    def stop_all(self) -> None:
        """Stop every process still known, the last started first."""
        for proc in reversed(list(self.procs)):
            self.stop(proc)


# CPU accounting from /proc.


def proc_ticks(pid: int) -> int:
    """User + system clock ticks of one process (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])
    except (OSError, IndexError, ValueError):
        return 0


def descendants(pid: int) -> list[int]:
    """C{pid} and all its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


def machine_ticks() -> tuple[int, int, int]:
    """(busy, total, softirq) clock ticks of all CPUs, from /proc/stat.

    Softirq time (here mostly loopback TCP) is not charged to any process.
    """
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total, values[6]


@dataclass
class Snapshot:
    """CPU ticks of each group of processes, and of the machine, at one moment."""

    when: float
    groups: dict[str, int]
    machine: tuple[int, int, int]


def snapshot(groups: dict[str, list[int]]) -> Snapshot:
    """The CPU ticks of each group of pids now."""
    return Snapshot(
        time.monotonic(),
        {name: sum(proc_ticks(p) for p in pids) for name, pids in groups.items()},
        machine_ticks(),
    )


def cpu_percent(a: Snapshot, b: Snapshot) -> dict[str, float]:
    """Percent of one core used by each group between two snapshots."""
    seconds = b.when - a.when
    out = {
        name: 100 * (b.groups[name] - a.groups[name]) / HZ / seconds
        for name in a.groups
    }
    busy = b.machine[0] - a.machine[0]
    total = b.machine[1] - a.machine[1]
    cpus = os.cpu_count() or 1
    softirq = b.machine[2] - a.machine[2]
    ours = sum(out.values())
    out["softirq"] = 100 * cpus * softirq / total if total else 0.0
    out["machine"] = 100 * cpus * busy / total if total else 0.0
    out["other"] = max(out["machine"] - ours - out["softirq"], 0.0)
    return out


def wait_quiet(limit: float, seconds: float) -> float:
    """Wait up to C{seconds} until the machine is less than C{limit} % busy.

    Nothing of ours runs between measurements but an idle Redis, so what is
    busy is other work (tests, say).  Returns the last busy percent seen.
    """
    cpus = os.cpu_count() or 1
    deadline = time.monotonic() + seconds
    while True:
        a = machine_ticks()
        time.sleep(1)
        b = machine_ticks()
        busy = 100 * cpus * (b[0] - a[0]) / max(b[1] - a[1], 1)
        if busy < limit or time.monotonic() >= deadline:
            return busy


# The client side: chatservice-bench's Run, one worker per node in turn.


def measure_main(spec_json: str) -> None:
    """The client process: run chatservice-bench's workers against the nodes.

    Writes one JSON line on standard output at each phase, and the result.
    """
    from twisted.internet import task

    task.react(_measure, [json.loads(spec_json)])


async def _measure(reactor: Any, spec: dict[str, Any]) -> None:
    from chatservice.tools import bench

    ports: list[int] = spec["ports"]

    def emit(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    class ClusterRun(bench.Run):
        """A run whose worker C{i} connects to node C{i mod nodes}."""

        def plans(self) -> list[bench.Plan]:
            return [
                replace(p, port=ports[p.worker % len(ports)]) for p in super().plans()
            ]

        def _enter(self, phase: str) -> None:
            super()._enter(phase)
            emit({"event": "phase", "phase": phase})

        def _summary(self) -> bool:
            o = self.options
            t = self.totals()
            h = t.hist
            emit(
                {
                    "event": "result",
                    "sent": t.sent,
                    "received": t.received,
                    "expected": t.sent * (o.clients - 1),
                    "errors": t.errors,
                    "first_error": t.first_error,
                    "sent_per_s": t.sent / o.duration,
                    "deliveries_per_s": t.received / o.duration,
                    "p50_ms": h.percentile(50) / 1000,
                    "p90_ms": h.percentile(90) / 1000,
                    "p99_ms": h.percentile(99) / 1000,
                    "max_ms": h.max / 1000,
                }
            )
            return True

    options = bench.Options(
        port=ports[0],
        clients=spec["clients"],
        senders=spec["senders"],
        rate=spec["rate"],
        duration=spec["duration"],
        warmup=spec["warmup"],
        workers=spec["workers"],
        prefix=spec["prefix"],
        connect_rate=spec["connect_rate"],
        progress=spec["progress"],
    )
    run = ClusterRun(
        reactor,
        options,
        bench.spawner(reactor),
        bench.Progress(sys.stderr, options.progress),
        lambda line: None,
    )

    def interrupted(number: int, frame: Any) -> None:
        reactor.callFromThread(run.interrupt, 128 + number)

    def install() -> None:
        for number in (signal.SIGINT, signal.SIGTERM):
            signal.signal(number, interrupted)

    reactor.callWhenRunning(install)
    reactor.addSystemEventTrigger("before", "shutdown", run.kill_all)
    code = await run.start()
    if code:
        raise SystemExit(code)


# The driver.


@dataclass
class Result:
    """One measurement."""

    config: str
    rate: float
    round: int
    ok: bool = False
    error: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    busy_before: float = 0.0


class Bench:
    """Starts Redis once, then nodes and clients for each measurement."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Processes()
        self.tmp = tempfile.mkdtemp(prefix="cluster-bench-")
        self.redis_port = 0
        self.redis: subprocess.Popen[bytes] | None = None
        self.count = 0

    def start_redis(self) -> None:
        """Start redis-server on a free loopback port, without persistence."""
        self.redis_port = free_port()
        log = os.path.join(self.tmp, "redis.log")
        self.redis = self.procs.start(
            [
                self.args.redis_server,
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self.tmp,
            ],
            log,
        )
        wait_port(self.redis_port, self.redis, "redis-server", log)

    def node_command(
        self, port: int, cluster: str | None, core: int | None
    ) -> list[str]:
        """The command line of one node."""
        argv = [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "chat",
            "--port",
            f"tcp:{port}:interface=127.0.0.1",
            *SERVER_LIMITS,
        ]
        if cluster is not None:
            argv += [
                "--redis",
                f"redis://127.0.0.1:{self.redis_port}/0",
                "--cluster",
                cluster,
            ]
        if core is not None:
            argv = ["taskset", "-c", str(core), *argv]
        return argv

    def measure(self, config: str, rate: float, round_: int) -> Result:
        """Start the nodes of C{config}, load them at C{rate}, stop them."""
        a = self.args
        result = Result(config, rate, round_)
        nodes, with_redis = CONFIGS[config]
        self.count += 1
        cluster = f"bench{self.count}" if with_redis else None
        cpus = os.cpu_count() or 1
        started: list[subprocess.Popen[bytes]] = []
        client: subprocess.Popen[bytes] | None = None
        if a.quiet_wait > 0:
            result.busy_before = wait_quiet(a.quiet_limit, a.quiet_wait)
        try:
            ports = []
            for k in range(nodes):
                port = free_port()
                log = os.path.join(self.tmp, f"m{self.count}-{config}-node{k}.log")
                core = k % cpus if a.pin else None
                proc = self.procs.start(self.node_command(port, cluster, core), log)
                started.append(proc)
                wait_port(port, proc, f"node {k}", log)
                ports.append(port)
            spec = {
                "ports": ports,
                "clients": a.receivers + a.senders,
                "senders": a.senders,
                "rate": rate,
                "duration": a.duration,
                "warmup": a.warmup,
                "workers": a.workers,
                "prefix": f"b{self.count}x",
                "connect_rate": a.connect_rate,
                "progress": a.progress,
            }
            log = os.path.join(self.tmp, f"m{self.count}-{config}-clients.log")
            client = self.procs.start(
                [sys.executable, __file__, "--measure", json.dumps(spec)],
                log,
                stdout=subprocess.PIPE,
            )
            groups = {"nodes": [p.pid for p in started]}
            if with_redis and self.redis is not None:
                groups["redis"] = [self.redis.pid]
            before = None
            assert client.stdout is not None
            for raw in client.stdout:
                message = json.loads(raw)
                if message.get("event") == "phase" and message["phase"] == "measure":
                    groups["clients"] = descendants(client.pid)
                    before = snapshot(groups)
                elif message.get("event") == "phase" and before is not None:
                    if message["phase"] == "drain" and not result.cpu:
                        result.cpu = cpu_percent(before, snapshot(groups))
                elif message.get("event") == "result":
                    result.data = message
            code = client.wait(a.duration + 120)
            if code != 0 or not result.data:
                result.error = f"client exit {code}: {tail(log, 3)}"
            else:
                result.ok = True
            for k, proc in enumerate(started):
                if proc.poll() is not None:
                    result.ok = False
                    result.error += f" node {k} died ({proc.returncode})"
        except (RuntimeError, subprocess.TimeoutExpired, ValueError) as e:
            result.error = str(e)
        finally:
            if client is not None:
                self.procs.stop(client)
            for proc in started:
                self.procs.stop(proc)
        return result

    def close(self, keep: bool = False) -> None:
        """Stop everything, remove the temporary directory unless kept."""
        self.procs.stop_all()
        if self.args.keep_logs or keep:
            print(f"logs kept in {self.tmp}", file=sys.stderr)
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


def describe_line(r: Result) -> str:
    """One line for one measurement."""
    if not r.ok:
        return f"{r.config:8} {r.rate:>6g}/s round {r.round}: FAILED {r.error}"
    d = r.data
    cpu = " ".join(f"{k} {v:.0f}%" for k, v in r.cpu.items())
    return (
        f"{r.config:8} {r.rate:>6g}/s round {r.round}: "
        f"{d['deliveries_per_s']:9.0f} deliveries/s, p50 {d['p50_ms']:.2f} ms, "
        f"p99 {d['p99_ms']:.2f} ms, max {d['max_ms']:.1f} ms, lost {lost(r)}, "
        f"errors {d['errors']}; CPU {cpu} (other work before: "
        f"{r.busy_before:.0f}%)"
    )


def spread(values: list[float], fmt: str) -> str:
    """Median, and min-max when there is more than one value."""
    if not values:
        return "-"
    med = format(statistics.median(values), fmt)
    if len(values) == 1:
        return med
    return f"{med} ({format(min(values), fmt)}-{format(max(values), fmt)})"


def table(results: list[Result], args: argparse.Namespace) -> list[str]:
    """The summary table, in Markdown."""
    head = (
        "| config | nodes | offered lines/s | sent lines/s | deliveries/s | lost "
        "| p50 ms | p99 ms "
        "| CPU nodes | CPU Redis | CPU clients | softirq | other | machine busy |"
    )
    lines = [head, "|" + "---|" * 14]
    for rate in args.rate_list:
        for config in args.config_list:
            rs = [r for r in results if r.config == config and r.rate == rate]
            ok = [r for r in rs if r.ok]
            failed = len(rs) - len(ok)

            def col(key: str, fmt: str, ok: list[Result] = ok) -> str:
                return spread([r.data[key] for r in ok], fmt)

            def cpu(key: str, ok: list[Result] = ok) -> str:
                values = [r.cpu[key] for r in ok if key in r.cpu]
                return spread(values, ".0f") + " %" if values else "-"

            missing = sum(r.data["expected"] - r.data["received"] for r in ok)
            expected = sum(r.data["expected"] for r in ok)
            lost_text = f"{missing} of {expected}" if ok else "-"
            if failed:
                lost_text += f", {failed} failed"
            lines.append(
                f"| {config} | {CONFIGS[config][0]} | {rate:g} "
                f"| {col('sent_per_s', '.0f')} "
                f"| {col('deliveries_per_s', '.0f')} | {lost_text} "
                f"| {col('p50_ms', '.2f')} | {col('p99_ms', '.2f')} "
                f"| {cpu('nodes')} | {cpu('redis')} | {cpu('clients')} "
                f"| {cpu('softirq')} | {cpu('other')} | {cpu('machine')} |"
            )
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        description="Measure chatservice as one node and as two clustered nodes."
    )
    p.add_argument("--receivers", type=int, default=200, help="default: 200")
    p.add_argument("--senders", type=int, default=10, help="default: 10")
    p.add_argument(
        "--rates",
        default="100,200,400",
        help="offered lines/s, all senders together, comma-separated "
        "(default: 100,200,400; on 2 cores, 400 is past the ceiling)",
    )
    p.add_argument(
        "--configs",
        default="single,redis,cluster",
        help="which of single, redis, cluster (default: all three)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="default: 10 s")
    p.add_argument("--warmup", type=float, default=2.0, help="default: 2 s")
    p.add_argument("--repeat", type=int, default=1, help="rounds (default: 1)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="client processes, shared out over the nodes in turn (default: 2)",
    )
    p.add_argument(
        "--connect-rate",
        type=float,
        default=500.0,
        help="new connections/s per client process (default: 500)",
    )
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=30.0,
        help="before each measurement, wait up to this many seconds for other "
        "work to use less than --quiet-limit %% of a core (default: 30; 0: no)",
    )
    p.add_argument("--quiet-limit", type=float, default=15.0, help="default: 15")
    p.add_argument("--pin", action="store_true", help="taskset node k to core k")
    p.add_argument("--redis-server", default="redis-server", help="its path")
    p.add_argument("--keep-logs", action="store_true", help="keep the temp dir")
    p.add_argument("--progress", action="store_true", help="the clients' progress")
    args = p.parse_args(argv)
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    for c in args.config_list:
        if c not in CONFIGS:
            p.error(f"unknown configuration {c!r} (single, redis, cluster)")
    if args.workers % max(CONFIGS[c][0] for c in args.config_list):
        p.error("--workers must be a multiple of the nodes (2 with cluster)")
    if args.duration > 120 or args.repeat > 10:
        p.error("keep it bounded: --duration at most 120, --repeat at most 10")
    if shutil.which(args.redis_server) is None:
        p.error(f"{args.redis_server} not found")
    return args


def main() -> int:
    """Run every configuration at every rate, --repeat times; print the table."""
    if sys.argv[1:2] == ["--measure"]:
        measure_main(sys.argv[2])
        return 0
    args = parse_args()

    def stop(number: int, frame: Any) -> None:
        raise Stop(signal.Signals(number).name)

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, stop)
    bench = Bench(args)
    results: list[Result] = []
    code = 0
    command = shlex.join(["python3", "scripts/cluster_bench.py", *sys.argv[1:]])
    try:
        bench.start_redis()
        print(f"# {command}", flush=True)
        for round_ in range(1, args.repeat + 1):
            for rate in args.rate_list:
                for config in args.config_list:
                    r = bench.measure(config, rate, round_)
                    results.append(r)
                    print(describe_line(r), flush=True)
    except KeyboardInterrupt:
        print("interrupted: stopping everything", file=sys.stderr)
        code = 130
    except Stop as e:
        print(f"{e}: stopping everything", file=sys.stderr)
        code = 128 + signal.Signals[str(e)].value
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        code = 1
    finally:
        bench.close(keep=not all(r.ok and not lost(r) for r in results))
    if results:
        print()
        print(f"command: {command}")
        print(
            f"machine: {os.cpu_count()} CPUs, {platform_text()}; "
            f"{args.receivers + args.senders} clients ({args.senders} senders) in "
            f"{args.workers} processes, {args.duration:g} s measured after "
            f"{args.warmup:g} s warm-up, {args.repeat} round(s)"
            + ("; nodes pinned with taskset" if args.pin else "")
        )
        print("median over rounds (min-max); CPU in % of one core while measured")
        for line in table(results, args):
            print(line)
    if code == 0 and not all(r.ok and not lost(r) for r in results):
        code = 1
    return code


def lost(r: Result) -> int:
    """Deliveries of a measurement that never came (or came twice: < 0)."""
    return r.data["expected"] - r.data["received"] if r.ok else 0


def platform_text() -> str:
    """The CPU model and the kernel, for the report."""
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, Linux {os.uname().release}, Python {sys.version.split()[0]}"


if __name__ == "__main__":
    sys.exit(main())
