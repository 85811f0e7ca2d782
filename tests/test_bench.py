"""Tests for chatservice-bench.

Its histogram, its parent's bookkeeping with fake workers on a fake clock,
and real runs of the console script against C{twistd chat} in a subprocess.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from processes import Connection, Server, free_port

from twisted.internet.task import Clock

from chatservice.tools.bench import (
    DRAIN_TIMEOUT,
    Options,
    Plan,
    Progress,
    Run,
    Worker,
    WorkerProcess,
    latencies,
    parse_args,
    refusal_hint,
    split,
)
from chatservice.wireparse import parse

#: The longest a whole run of the console script may take in a test.
RUN_TIMEOUT = 60

SUMMARY = re.compile(
    r"^lines sent: +(?P<sent>\d+)\n"
    r"deliveries: +(?P<received>\d+) of (?P<expected>\d+) expected "
    r"\((?P<loss>[\d.]+)% lost\)\n"
    r"deliveries/s: +(?P<rate>[\d.]+)\n"
    r"latency \(ms\): +p50 (?P<p50>[\d.]+) +p90 (?P<p90>[\d.]+) +"
    r"p99 (?P<p99>[\d.]+) +max (?P<max>[\d.]+)$",
    re.MULTILINE,
)


def bench(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the console script's module with C{args}, bounded in time."""
    return subprocess.run(
        [sys.executable, "-m", "chatservice.tools.bench", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )


def one_error(result: subprocess.CompletedProcess[str]) -> str:
    """The one error line of a failed run, checking there is only that."""
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("chatservice-bench: ")]
    assert len(errors) == 1, result.stderr
    assert lines[-1] == errors[0], result.stderr
    return errors[0]


@pytest.fixture
def server(twistd: Callable[..., Server]) -> Callable[..., int]:
    """Start C{twistd -n chat} on a free loopback port; return the port."""

    def start(*args: str) -> int:
        port = free_port()
        twistd(f"tcp:{port}:interface=127.0.0.1", *args).wait_for_port(port)
        return port

    return start


# The histogram.


def test_percentiles_within_two_percent() -> None:
    """Each percentile is within 2 % of the exact one, and never above the max."""
    values = [random.Random(7).randint(1, 2_000_000) for _ in range(5000)]
    histogram = latencies()
    for value in values:
        histogram.observe(value)
    ordered = sorted(values)
    for percent in (50, 90, 99, 100):
        exact = ordered[max(0, -(-len(ordered) * percent // 100) - 1)]
        assert exact <= histogram.percentile(percent) <= exact * 1.02 + 1
    assert histogram.percentile(100) == histogram.max == max(values)


def test_merged_histograms_equal_one_of_everything() -> None:
    """Merging the histograms of two halves gives the histogram of the whole."""
    values = list(range(0, 100_000, 37))
    whole, first, second = latencies(), latencies(), latencies()
    for value in values:
        whole.observe(value)
    for value in values[::2]:
        first.observe(value)
    for value in values[1::2]:
        second.observe(value)
    first.merge(second)
    assert (first.counts, first.count, first.max) == (
        whole.counts,
        whole.count,
        whole.max,
    )
    assert [first.percentile(p) for p in (50, 90, 99)] == [
        whole.percentile(p) for p in (50, 90, 99)
    ]


def test_histogram_json_round_trip() -> None:
    """A histogram read back from its JSON form is the same histogram."""
    histogram = latencies()
    for value in (0, 1, 5, 999, 12345, 12345):
        histogram.observe(value)
    again = latencies(json.loads(json.dumps(histogram.to_json())))
    assert (again.counts, again.count, again.max) == (
        histogram.counts,
        histogram.count,
        histogram.max,
    )


def test_empty_histogram() -> None:
    """An empty histogram reports 0 for every percentile."""
    assert latencies().percentile(99) == 0.0


@pytest.mark.parametrize(
    ("total", "parts", "shares"),
    [(20, 2, [10, 10]), (10, 3, [4, 3, 3]), (1, 3, [1, 0, 0])],
)
def test_split(total: int, parts: int, shares: list[int]) -> None:
    """Clients and senders are shared out as evenly as possible."""
    assert split(total, parts) == shares


# The command line.


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--clients", "1"], "argument --clients: must be >= 2: '1'"),
        (["--rate", "fast"], "argument --rate: not a number: 'fast'"),
        (["--senders", "30", "--clients", "20"], "--senders 30 is more than"),
        (["--prefix", "9x"], "--prefix '9x' makes bad nicknames"),
        (["--room", "lobby"], "--room: invalid room name 'lobby'"),
        (["--insecure"], "--cafile and --insecure need --tls"),
        (["--port", "70000"], "--port must be 1 to 65535, not 70000"),
    ],
)
def test_bad_arguments(
    args: list[str], error: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad argument is one line on stderr and exit status 1."""
    with pytest.raises(SystemExit) as exited:
        parse_args(args)
    assert exited.value.code == 1
    err = capsys.readouterr().err
    assert err.startswith(f"chatservice-bench: {error}"), err
    assert err.count("\n") == 1


def test_workers_at_most_clients() -> None:
    """Workers and senders are at most the clients; #lobby means no /join."""
    options = parse_args(["--clients", "3", "--workers", "8", "--room", "#LOBBY"])
    assert (options.workers, options.senders, options.room) == (3, 3, None)


@pytest.mark.parametrize(
    ("line", "option"),
    [
        (
            "!!! too many new connections from your address (at most 10 per "
            "second); try again in a moment",
            "--max-connect-rate",
        ),
        ("!!! too many connections from your address (at most 5)", "--max-per-ip"),
        ("!!! the server is full (10 connections)", "--max-clients"),
        ("!!! you are banned", "--max-per-ip, --max-connect-rate"),
    ],
)
def test_refusal_hints(line: str, option: str) -> None:
    """A refusal names the server option to raise."""
    assert option in refusal_hint(parse(line))


# A worker, on a fake clock.


def test_worker_counts_no_delivery_after_the_drain_timeout() -> None:
    """A measured line that arrives after the drain timeout is lost."""
    clock = Clock()
    messages: list[dict[str, Any]] = []
    plan = Plan(
        worker=0, host="127.0.0.1", port=1, first=0, clients=2, senders=0,
        rate=1.0, run="abc123",
    )  # fmt: skip
    worker = Worker(clock, plan, messages.append, endpoint=None)
    line = f"<bench1> ~b:abc123:1:{time.time_ns()}:m".encode()
    worker.command("measure")
    worker.maybe_delivery(parse(line))
    worker.command("drain")
    clock.advance(DRAIN_TIMEOUT - 0.1)
    worker.maybe_delivery(parse(line))
    clock.advance(0.2)
    worker.maybe_delivery(parse(line))
    worker.report()
    assert messages[-1]["received"] == 2
    assert sum(messages[-1]["hist"]["counts"].values()) == 1  # since "drain"
    worker.finish(0)


# The parent, with fake workers on a fake clock.


class FakeTransport:
    """Records the commands a worker process is sent."""

    def __init__(self) -> None:
        self.commands: list[str] = []
        self.signals: list[str] = []

    def write(self, data: bytes) -> None:
        self.commands.append(data.decode().strip())

    def signalProcess(self, signal: str) -> None:
        self.signals.append(signal)


def report(worker: WorkerProcess, **counts: Any) -> None:
    """Have C{worker} send a report line, with C{counts} and no latencies."""
    hist = latencies()
    for micros in counts.pop("latencies", []):
        hist.observe(micros)
    message = {
        "event": "report",
        "connected": 0,
        "registered": 0,
        "sent": 0,
        "received": 0,
        "seen": 0,
        "errors": 0,
        "first_error": "",
        "hist": hist.to_json(),
        "window": hist.to_json(),
        **counts,
    }
    worker.outReceived(json.dumps(message).encode() + b"\n")


def event(worker: WorkerProcess, name: str, **fields: str) -> None:
    """Have C{worker} send the event C{name}, in two pieces."""
    line = json.dumps({"event": name, **fields}).encode() + b"\n"
    worker.outReceived(line[:5])
    worker.outReceived(line[5:])


@pytest.fixture
def parent() -> tuple[Run, Clock, StringIO, list[str]]:
    """A run of two fake workers on a fake clock: (run, clock, stderr, stdout)."""
    clock = Clock()
    stderr = StringIO()
    out: list[str] = []
    options = Options(clients=4, senders=2, rate=10, duration=2, warmup=1, workers=2)

    def spawn(index: int, plan: object, process: WorkerProcess) -> None:
        process.transport = FakeTransport()  # type: ignore[assignment]

    run = Run(clock, options, spawn, Progress(stderr), out.append)
    run.start()
    return run, clock, stderr, out


def test_parent_runs_the_phases_and_sums_up(
    parent: tuple[Run, Clock, StringIO, list[str]],
) -> None:
    """The parent drives warm-up, measure, drain and quit, then sums up."""
    run, clock, stderr, out = parent
    first, second = run.processes
    for worker in run.processes:
        report(worker, connected=2, registered=2)
        event(worker, "ready")
    clock.advance(1)  # the warm-up
    clock.advance(2)  # the measured time
    assert first.transport.commands == ["warmup", "measure", "drain"]  # type: ignore[union-attr]
    report(first, sent=10, received=25, seen=30, latencies=[1000] * 25)
    report(second, sent=10, received=30, seen=36, latencies=[3000] * 30)
    event(first, "drained")
    event(second, "drained")
    assert run.phase == "drain"
    report(first, sent=10, received=30, seen=35, latencies=[2000] * 5)
    assert second.transport.commands[-1] == "quit"  # type: ignore[union-attr]
    run.ended(0, 0, None, b"")
    run.ended(1, 0, None, b"")
    assert run.done.called
    assert run.code == 0
    summary = "\n".join(out)
    assert "lines sent:    20\n" in summary
    assert "deliveries:    60 of 60 expected (0.00% lost)\n" in summary
    assert "deliveries/s:  30.0\n" in summary
    # p50 is in the bucket of 2 ms, which reaches 2 % above it.
    assert re.search(
        r"^latency \(ms\):  p50 2\.0\d  p90 3\.00  p99 3\.00  max 3\.00$",
        summary,
        re.MULTILINE,
    ), summary
    assert "connecting 4/4, registered 4\n" in stderr.getvalue()


def test_progress_lines_follow_the_phases(
    parent: tuple[Run, Clock, StringIO, list[str]],
) -> None:
    """Each progress line covers one second of one phase, from its start."""
    run, clock, stderr, out = parent
    clock.advance(0.5)
    for worker in run.processes:
        report(worker, connected=2, registered=2)
        event(worker, "ready")
    clock.advance(0.5)
    report(run.processes[0], seen=40)
    clock.advance(0.5)  # the end of the warm-up
    clock.advance(0.5)
    report(run.processes[0], seen=100)
    clock.advance(0.5)
    clock.advance(1)  # the end of the measured time
    assert run.phase == "drain"
    lines = [line.split(", p50")[0] for line in stderr.getvalue().splitlines()]
    assert lines == [
        "connecting 4/4, registered 4",
        "warm-up 1/1 s: 40 deliveries/s",
        "measuring 1/2 s: 60 deliveries/s",
        "measuring 2/2 s: 0 deliveries/s",
    ]


def test_parent_reports_lost_deliveries_after_the_drain_timeout(
    parent: tuple[Run, Clock, StringIO, list[str]],
) -> None:
    """Deliveries still missing when the drain times out are counted lost."""
    run, clock, stderr, out = parent
    for worker in run.processes:
        event(worker, "ready")
    clock.advance(1)  # the warm-up
    clock.advance(2)  # the measured time
    for worker in run.processes:
        report(worker, sent=5, received=10, latencies=[500] * 10)
        event(worker, "drained")
    assert run.phase == "drain"
    clock.advance(5)
    assert run.phase == "quit"
    run.ended(0, 0, None, b"")
    run.ended(1, 0, None, b"")
    assert "deliveries:    20 of 30 expected (33.33% lost)" in "\n".join(out)


def test_parent_ends_when_standard_output_is_closed() -> None:
    """A summary that cannot be written still ends the run, with status 1."""
    clock = Clock()
    stderr = StringIO()
    options = Options(clients=4, senders=2, rate=10, duration=2, warmup=0, workers=2)

    def spawn(index: int, plan: object, process: WorkerProcess) -> None:
        process.transport = FakeTransport()  # type: ignore[assignment]

    def out(line: str) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    run = Run(clock, options, spawn, Progress(stderr), out)
    run.start()
    for worker in run.processes:
        event(worker, "ready")
    clock.advance(2)
    for worker in run.processes:
        report(worker, sent=5, received=15)
        event(worker, "drained")
    assert run.phase == "quit"
    run.ended(0, 0, None, b"")
    run.ended(1, 0, None, b"")
    assert run.code == 1
    clock.advance(60)  # no "did not end in time" afterwards
    assert "chatservice-bench:" not in stderr.getvalue()


def test_parent_reports_a_dying_worker(
    parent: tuple[Run, Clock, StringIO, list[str]],
) -> None:
    """A worker that dies ends the run with one line naming it; others quit."""
    run, clock, stderr, out = parent
    first, second = run.processes
    run.ended(0, 1, None, b"Traceback (most recent call last):\n  ...\nKeyError: 3\n")
    assert second.transport.commands == ["quit"]  # type: ignore[union-attr]
    run.ended(1, 0, None, b"")
    assert run.code == 1
    assert stderr.getvalue() == (
        "chatservice-bench: worker 0 died (exit status 1): KeyError: 3\n"
    )
    assert out == []


def test_parent_kills_workers_that_do_not_quit(
    parent: tuple[Run, Clock, StringIO, list[str]],
) -> None:
    """Workers that ignore quit after a failure are killed."""
    run, clock, stderr, out = parent
    event(run.processes[0], "error", message="cannot connect: connection refused")
    clock.advance(5)
    for process in run.processes:
        assert process.transport.signals == ["KILL"]  # type: ignore[union-attr]
    assert stderr.getvalue() == (
        "chatservice-bench: cannot connect: connection refused\n"
    )


def test_parent_interrupted(
    parent: tuple[Run, Clock, StringIO, list[str]],
) -> None:
    """A signal: one line, quit to the workers, killed 2 s later, its status."""
    run, clock, stderr, out = parent
    run.interrupt(143)
    for process in run.processes:
        assert process.transport.commands == ["quit"]  # type: ignore[union-attr]
    run.ended(0, 0, None, b"")
    clock.advance(2)
    assert run.processes[0].transport.signals == []  # type: ignore[union-attr]
    assert run.processes[1].transport.signals == ["KILL"]  # type: ignore[union-attr]
    run.ended(1, None, 9, b"")
    assert run.code == 143
    assert stderr.getvalue() == "chatservice-bench: interrupted\n"
    assert out == []


def test_parent_times_out_connecting(
    parent: tuple[Run, Clock, StringIO, list[str]],
) -> None:
    """Clients that never all register end the run with a clear line."""
    run, clock, stderr, out = parent
    report(run.processes[0], connected=2, registered=1)
    clock.advance(run.connect_bound())
    assert "chatservice-bench: timed out connecting: 2/4 connected, 1 registered" in (
        stderr.getvalue()
    )


def test_progress_in_place_on_a_terminal() -> None:
    """On a terminal, progress rewrites one line; it is ended before an error."""

    class Terminal(StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = Progress(stream)
    progress.update("connecting 1/2")
    progress.update("connecting 2/2")
    progress.error("chatservice-bench: oops")
    assert stream.getvalue() == (
        "\rconnecting 1/2\x1b[K\rconnecting 2/2\x1b[K\nchatservice-bench: oops\n"
    )


# Real runs.


def test_run_against_a_server(server: Callable[..., int]) -> None:
    """20 clients in 2 workers get every line, and the summary says so."""
    port = server("--max-connect-rate", "1000")
    result = bench(
        "--port", str(port), "--clients", "20", "--workers", "2", "--senders", "4",
        "--rate", "20", "--duration", "2", "--warmup", "0.5", "--room", "#bench",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    match = SUMMARY.search(result.stdout)
    assert match, result.stdout
    assert int(match["sent"]) >= 38
    assert int(match["expected"]) == int(match["sent"]) * 19
    assert match["received"] == match["expected"]
    assert match["loss"] == "0.00"
    assert float(match["rate"]) > 300
    assert 0 < float(match["p50"]) <= float(match["p90"]) <= float(match["p99"])
    assert float(match["p99"]) <= float(match["max"])
    assert "clients:       20\nsenders:       4\n" in result.stdout
    assert "measuring 1/2 s: " in result.stderr
    assert "Traceback" not in result.stderr


def test_standard_output_closed(server: Callable[..., int]) -> None:
    """Output piped to a reader that is gone: exit status 1, nothing said."""
    port = server("--max-connect-rate", "1000")
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "chatservice.tools.bench", "--port", str(port),
             "--clients", "6", "--workers", "2", "--senders", "2", "--rate", "4",
             "--duration", "0.5", "--warmup", "0", "--no-progress"],
            stdin=subprocess.DEVNULL,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=RUN_TIMEOUT,
        )  # fmt: skip
    finally:
        os.close(write)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""


def test_connection_refused() -> None:
    """Nothing listening: one line, exit status 1."""
    port = free_port()
    result = bench("--port", str(port), "--clients", "4", "--workers", "2")
    assert one_error(result) == (
        f"chatservice-bench: cannot connect to 127.0.0.1:{port}: connection refused"
    )


def test_server_refuses_connections(server: Callable[..., int]) -> None:
    """A server that allows 5 connections per address: its line and a hint."""
    port = server("--max-per-ip", "5", "--max-connect-rate", "1000")
    result = bench("--port", str(port), "--clients", "20", "--workers", "2")
    error = one_error(result)
    assert re.fullmatch(
        r"chatservice-bench: the server refused bench\d+: !!! too many connections "
        r"from your address \(at most 5\) \(for a benchmark, start the server with "
        r"a higher --max-per-ip; see docs/bench.md\)",
        error,
    ), error


def test_server_connect_rate(server: Callable[..., int]) -> None:
    """The server's default connect rate refuses a fast bench, naming the option."""
    port = server()
    result = bench("--port", str(port), "--clients", "30", "--workers", "1")
    assert "--max-connect-rate (or use a lower --connect-rate)" in one_error(result)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Poll C{condition} until it holds, at most L{RUN_TIMEOUT} seconds."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def children(pid: int) -> list[int]:
    """The processes whose parent is C{pid}."""
    result = subprocess.run(
        ["ps", "--ppid", str(pid), "-o", "pid="],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return [int(word) for word in result.stdout.split()]


def alive(pid: int) -> bool:
    """Whether process C{pid} exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize(
    ("how", "status"), [("SIGTERM", 143), ("SIGINT to the group", 130)]
)
def test_interrupted(
    server: Callable[..., int], tmp_path: Path, how: str, status: int
) -> None:
    """SIGTERM, or Ctrl-C to the process group: one line, 128 + the signal.

    The workers said /quit, so the server frees their nicknames at once,
    and they have ended.
    """
    port = server(
        "--max-per-ip", "1000", "--max-connect-rate", "1000",
        "--flood-rate", "100", "--flood-burst", "100",
    )  # fmt: skip
    stderr_path = tmp_path / "bench.err"
    with (tmp_path / "bench.out").open("wb") as out, stderr_path.open("wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "chatservice.tools.bench", "--port", str(port),
             "--clients", "6", "--workers", "2", "--senders", "2", "--rate", "4",
             "--duration", "30", "--warmup", "0"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )  # fmt: skip
    workers: list[int] = []
    try:
        wait_until(
            lambda: (
                "measuring " in stderr_path.read_text(errors="replace")
                or process.poll() is not None
            ),
            "the measured time",
        )
        assert process.poll() is None, stderr_path.read_text(errors="replace")
        workers = children(process.pid)
        assert len(workers) == 2, workers
        if how == "SIGTERM":
            process.send_signal(signal.SIGTERM)
        else:
            os.killpg(process.pid, signal.SIGINT)
        code = process.wait(timeout=RUN_TIMEOUT)
        stderr = stderr_path.read_text(errors="replace")
        assert code == status, stderr
        assert "Traceback" not in stderr, stderr
        lines = stderr.splitlines()
        errors = [line for line in lines if line.startswith("chatservice-bench: ")]
        assert errors == ["chatservice-bench: interrupted"], stderr
        assert lines[-1] == errors[0], stderr
        assert [pid for pid in workers if alive(pid)] == []
        # The clients said /quit: their nicknames are free at once.
        connection = Connection(port)
        try:
            connection.send("/nick bench0")
            for _ in range(20):
                [line] = connection.read()
                assert line is not None and not line.startswith("!!! "), line
                if line.startswith("*** Welcome, bench0!"):
                    break
            else:
                pytest.fail("no welcome for bench0")
        finally:
            connection.close()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=RUN_TIMEOUT)
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
