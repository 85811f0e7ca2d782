"""The benchmark harness in bench/ still fits the server it measures.

bench/peers.conf.sh starts chatservice with options that lift its limits and
waits for a greeting; a renamed option or a changed welcome would make every
chatservice cell fail, so both are checked against the real server here.
"""

import json
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import GREETING
from processes import Connection, Server, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"


def peers() -> dict[str, list[str]]:
    """Every peer of bench/peers.conf.sh: its name -> its six fields."""
    script = (
        'peer() { printf "%s\\0" "$@"; }; front_ends() { :; }; '
        f"BENCH={shlex.quote(str(BENCH))} ROOT={shlex.quote(str(ROOT))}; "
        f"source {shlex.quote(str(BENCH / 'peers.conf.sh'))}"
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    fields = result.stdout.split("\0")[:-1]
    assert len(fields) % 6 == 0, fields
    return {fields[i]: fields[i : i + 6] for i in range(0, len(fields), 6)}


def test_chatservice_peer_starts_and_greets(
    twistd: Callable[..., Server], connections: Callable[[int], Connection]
) -> None:
    """The chatservice peer's options start the server, and its READY line comes."""
    name, port_field, hello, ready, settle, command = peers()["chatservice"]
    assert port_field == "19010"
    words = shlex.split(command)
    prefix = [f"{ROOT}/.venv/bin/twistd", "-n", "--pidfile=", "chat"]
    assert words[:4] == prefix
    options = words[4:]
    assert options[:2] == ["--port", "tcp:{port}:interface=127.0.0.1"]

    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", *options[2:])
    server.wait_for_port(port)
    client = connections(port)
    assert client.read(2) == GREETING
    client.send(hello.replace("{n}", "u1"))
    [welcome] = client.read()
    assert welcome is not None
    assert re.search(ready.replace("{n}", re.escape("u1")), welcome), welcome


def front_ends() -> dict[str, str]:
    """The front-end options of bench/peers.conf.sh's peers, by name."""
    script = (
        'peer() { :; }; front_ends() { printf "%s\\0" "$@"; }; '
        f"BENCH={shlex.quote(str(BENCH))} ROOT={shlex.quote(str(ROOT))}; "
        f"source {shlex.quote(str(BENCH / 'peers.conf.sh'))}"
    )
    result = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    fields = result.stdout.split("\0")[:-1]
    return {fields[i]: fields[i + 1] for i in range(0, len(fields), 2)}


def test_chatservice_peer_front_ends_listen(
    twistd: Callable[..., Server], connections: Callable[[int], Connection]
) -> None:
    """The fanmix cell's options start the frame, web and IRC front ends."""
    name, port_field, hello, ready, settle, command = peers()["chatservice"]
    options = shlex.split(command)[6:]
    ports = {name: free_port() for name in ("frames", "web", "irc")}
    extra = front_ends()["chatservice"]
    for name, port in ports.items():
        extra = extra.replace("{" + name + "}", str(port))
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", *options, *shlex.split(extra))
    for each in (port, *ports.values()):
        server.wait_for_port(each)
    client = connections(ports["irc"])
    client.send("NICK u1")
    client.send("USER u1 0 * :u1")
    [first] = client.read()
    assert first == ":chatservice 001 u1 :Welcome to chatservice, u1"


def test_table_prints_a_cell(tmp_path: Path) -> None:
    """table.py prints one markdown table per cell, peers in the run's order."""
    (tmp_path / "peers.txt").write_text("before\nafter\n")
    for peer, rate in [("before", 4133.4), ("after", 3999.6)]:
        result = {"sessions_per_s": rate, "errors": 0, "foreign_cpu_pct": 1.2}
        (tmp_path / f"{peer}.churn.json").write_text(json.dumps(result) + "\n")

    result = subprocess.run(
        [sys.executable, str(BENCH / "table.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:5] == [
        "### churn: churn: 20 workers connect/handshake/1 line/close, 10 s",
        "",
        "| metric | before | after |",
        "|---|---|---|",
        "| sessions/s | 4,133 | 4,000 |",
    ]
    assert "| other CPU % (should be ~0) | 1 | 1 |" in result.stdout
