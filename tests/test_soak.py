"""scripts/soak.py: a short soak run passes, and what it reads of the server holds.

The soak reads the server through two interfaces that must not drift away
from it: the metrics page (by metric name and C{reason} label) and a JSON log
(by event fields).  The tests here run a real server and break when either
changes; a short soak runs as an ordinary test, so the tool cannot rot.
"""

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from processes import Connection, poll_until

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "soak.py"


def _load_soak() -> ModuleType:
    """scripts/soak.py as the module C{soak}, as the server's --logger names it."""
    spec = importlib.util.spec_from_file_location("soak", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["soak"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


soak = _load_soak()


@pytest.fixture
def server(tmp_path: Path) -> Iterator["soak.Server"]:
    """The soak's own server (JSON log, metrics), with a 1 s registration timeout."""
    running = soak.Server(
        soak.free_port(),
        soak.free_port(),
        ["--register-timeout", "1", "--resume-grace", "0"],
        tmp_path / "twistd.json",
    )
    running.start()
    try:
        yield running
    finally:
        running.stop()


def test_metrics_and_log_count_each_way_out(server: "soak.Server") -> None:
    """A /quit, a close and a registration timeout are read from metrics and log."""
    metrics = ("127.0.0.1", server.metrics_port)
    before = soak.scrape(metrics)
    quitter = Connection(server.port)
    quitter.send("alice")
    closer = Connection(server.port)
    closer.send("bob")
    idler = Connection(server.port)
    poll_until(lambda: soak.scrape(metrics).values[soak.USERS] == 2, "two users")
    quitter.send("/quit bye")
    closer.close()
    poll_until(lambda: soak.scrape(metrics).values[soak.CONNECTIONS] == 0, "closes")
    quitter.close()
    idler.close()

    after = soak.scrape(metrics)
    expected = Counter({"quit": 1, "connection lost": 1, "registration timeout": 1})
    assert after.disconnects - before.disconnects == expected
    assert after.refused == Counter()
    assert after.values[soak.LINES_RECEIVED] - before.values[soak.LINES_RECEIVED] == 3
    events = soak.read_server_events(server.log_path)
    assert events.closes == expected
    assert events.registrations == 2
    assert events.problems == []
    assert server.listen in events.listening


def test_server_warnings_are_read_from_the_log(tmp_path: Path) -> None:
    """An error the server logs (a --motd file gone at SIGHUP) is a problem."""
    motd = tmp_path / "motd.txt"
    motd.write_text("hello\n")
    running = soak.Server(
        soak.free_port(), soak.free_port(), ["--motd", str(motd)], tmp_path / "log"
    )
    running.start()
    try:
        motd.unlink()
        assert running.process is not None
        running.process.send_signal(1)  # SIGHUP: re-read the motd
        poll_until(lambda: soak.read_server_events(running.log_path).problems, "error")
    finally:
        running.stop()
    (problem,) = soak.read_server_events(running.log_path).problems
    assert problem.startswith(f"cannot re-read the message of the day from {motd}")


def test_a_renamed_metric_is_an_error(server: "soak.Server") -> None:
    """The soak refuses a metrics page without a metric it reads."""
    with soak.urllib.request.urlopen(
        f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5
    ) as answer:
        page = answer.read().decode("utf-8")
    soak.parse_metrics(page)
    renamed = page.replace("chatservice_disconnects", "chatservice_closes")
    with pytest.raises(ValueError, match="no chatservice_disconnects_total"):
        soak.parse_metrics(renamed)


def _scrape(**closes: int) -> "soak.Scrape":
    """A scrape with all plain metrics at 0 and these disconnects."""
    values = dict.fromkeys(soak.PLAIN_METRICS, 0.0)
    reasons = Counter({k.replace("_", " "): v for k, v in closes.items()})
    return soak.Scrape(values, reasons, Counter())


def test_counts_that_disagree_fail_the_run() -> None:
    """A quit the server counted but the clients did not make is a failure."""
    tally = soak.Tally()
    tally.started["quit"] = 1
    tally.ended["quit"] = 1
    tally.sent["quit"] = 1
    run = SimpleNamespace(
        tally=tally,
        finished=True,
        metrics=("127.0.0.1", 1),
        scrapes={"before load": _scrape(), "after users left": _scrape(quit=2)},
    )
    run.scrapes["after users left"].values[soak.LINES_RECEIVED] = 1.0
    failures: list[str] = []
    soak.check_metrics(run, failures)
    assert failures == [
        "the metrics counted 2 closes, the clients made 1 connections",
        "the metrics counted 2 closes for 'quit', the clients expected 1",
    ]


def test_short_soak(tmp_path: Path) -> None:
    """40 users for 8 + 20 s: nothing lost, duplicated or misrouted; counts agree."""
    summary_path = tmp_path / "summary.json"
    command = [
        *(sys.executable, str(SCRIPT)),
        *("--clients", "40", "--warmup", "8", "--duration", "20"),
        *("--idle-timeout", "12", "--register-timeout", "4"),
        *("--resume-grace", "4", "--active", "15", "--deadline", "90"),
        *("--seed", "21"),
        *("--server-log", str(tmp_path / "twistd.json")),
        *("--summary", str(summary_path)),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=110, cwd=tmp_path
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert output.rstrip().endswith("PASS"), output
    summary = json.loads(summary_path.read_text())
    assert summary["failures"] == []
    assert summary["finished"]
    delivery = summary["delivery"]
    assert delivery["delivered"] >= 500, delivery
    assert delivery["private delivered"] >= 1, delivery
    for wrong in ("lost", "duplicate", "misrouted", "echoed"):
        assert delivery.get(wrong, 0) == 0, delivery
    # Every way out happened, and the server counted the same.
    ended = summary["ended"]
    for way in ("quit", "close", "reset", "idle timeout", "registration timeout"):
        assert ended.get(way, 0) >= 1, ended
    before = summary["metrics"]["before load"]
    after = summary["metrics"]["after users left"]
    closes = Counter(after["disconnects"]) - Counter(before["disconnects"])
    assert closes.total() == sum(summary["started"].values())
    assert Counter(summary["log"]["closes"]) == closes
    marks = summary["marks"]
    assert marks["after users left"]["fds"] == marks["before load"]["fds"]
