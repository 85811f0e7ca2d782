#!/usr/bin/env python3
"""Print markdown tables (one per cell, peers side by side) from a results dir.

usage: table.py RESULTS_DIR

Reads RESULTS_DIR/PEER.CELL.json (one JSON line each, written by
run_peers.sh). Peer order comes from RESULTS_DIR/peers.txt when present.
"""

import json
import os
import sys
from collections.abc import Callable

Result = dict[str, object]

CELLS = [
    (
        "fan100",
        "fanout, closed loop (window 8/sender), R=100 receivers, S=10 senders, 10 s",
    ),
    (
        "fan1000",
        "fanout, closed loop (window 8/sender), R=1000 receivers, S=10 senders, 10 s",
    ),
    (
        "fanmix",
        "fanout as fan1000, the receivers spread over lines, frames, WebSocket, IRC",
    ),
    ("rate1000", "fanout, open loop 200 msg/s, R=1000 receivers, S=10 senders, 10 s"),
    ("idle10k", "idle: 10000 connections held 5 s"),
    ("slow", "slow consumers: R=200 (10% stalled), 100 msg/s, 20 s"),
    (
        "slowbig",
        "slow consumers: R=200 (10% stalled), 250 msg/s with 4 KiB payload, 20 s",
    ),
    ("churn", "churn: 20 workers connect/handshake/1 line/close, 10 s"),
    ("storm", "connect storm: 10000 clients connect and register at once"),
]


def number(value: object, fmt: str = "{:,.0f}") -> str:
    """C{value} formatted with C{fmt}, or n/a when missing."""
    if value is None:
        return "n/a"
    try:
        return fmt.format(value)
    except (TypeError, ValueError):
        return str(value)


def field(key: str, fmt: str = "{:,.0f}") -> Callable[[Result], str]:
    """A column reading one field of a result."""
    return lambda result: number(result.get(key), fmt)


def megabytes(*keys: str) -> Callable[[Result], str]:
    """A column adding the fields C{keys} (KiB) and showing MiB."""

    def show(result: Result) -> str:
        values = [result.get(key) for key in keys]
        if all(v is None for v in values):
            return "n/a"
        return f"{sum(float(v or 0) for v in values) / 1024:.1f}"

    return show


def pair(first: str, second: str) -> Callable[[Result], str]:
    """A column showing two fields as C{A / B}."""
    return lambda result: f"{number(result.get(first))} / {number(result.get(second))}"


def loss(result: Result) -> str:
    """The lost fraction as a percentage."""
    value = result.get("loss")
    if value is None:
        return "n/a"
    if value == 0:
        return "0"
    value = float(value)  # type: ignore[arg-type]
    return f"{100 * value:.2f}%" if abs(value) >= 0.0001 else f"{100 * value:.4f}%"


def by_front_end(result: Result) -> str:
    """Deliveries per front end (fanmix): received / expected of each."""
    kinds = result.get("by_front_end")
    if not isinstance(kinds, dict):
        return "n/a"
    return ", ".join(
        f"{name} {number(each.get('received'))}/{number(each.get('expected'))}"
        for name, each in sorted(kinds.items())
    )


def connect_errors(result: Result) -> str:
    """Connections that failed to connect or to register."""
    errors = result.get("connect_errors") or 0
    return number(errors + (result.get("handshake_errors") or 0))  # type: ignore[operator]


CPU = [
    ("server CPU %", field("server_cpu_pct", "{:.0f}")),
    ("loadgen CPU %", field("loadgen_cpu_pct", "{:.0f}")),
    ("other CPU % (should be ~0)", field("foreign_cpu_pct", "{:.0f}")),
]

LATENCY = [
    ("latency p50 ms", field("lat_p50_ms", "{:.2f}")),
    ("latency p90 ms", field("lat_p90_ms", "{:.2f}")),
    ("latency p99 ms", field("lat_p99_ms", "{:.2f}")),
    ("latency max ms", field("lat_max_ms", "{:.2f}")),
]

ROWS: dict[str, list[tuple[str, Callable[[Result], str]]]] = {
    "fan": [
        ("msgs sent/s", field("msgs_per_s")),
        ("deliveries/s (receivers)", field("deliveries_per_s")),
        ("loss", loss),
        *LATENCY,
        ("echo to sender", lambda result: "yes" if result.get("echo") else "no"),
        *CPU,
        ("server RSS MB (end)", megabytes("server_rss_after_kb")),
        ("connect errors", connect_errors),
    ],
    "mix": [
        ("msgs sent/s", field("msgs_per_s")),
        ("deliveries/s (receivers)", field("deliveries_per_s")),
        ("loss", loss),
        ("received / expected by front end", by_front_end),
        *LATENCY,
        *CPU,
        ("server RSS MB (end)", megabytes("server_rss_after_kb")),
        ("connect errors", connect_errors),
    ],
    "storm": [
        ("registered / N", pair("connected", "n")),
        ("seconds until all are in", field("connect_s", "{:.2f}")),
        ("connect errors", connect_errors),
        ("server RSS after MB", megabytes("server_rss_after_kb")),
        ("server CPU % (whole run)", field("server_cpu_pct", "{:.0f}")),
        ("loadgen CPU % (whole run)", field("loadgen_cpu_pct", "{:.0f}")),
        ("other CPU % (should be ~0)", field("foreign_cpu_pct", "{:.0f}")),
    ],
    "rate": [
        ("offered / sent msgs", pair("offered", "sent")),
        ("deliveries/s (receivers)", field("deliveries_per_s")),
        ("loss", loss),
        *LATENCY,
        ("sender lag p99 ms", field("send_lag_p99_ms", "{:.2f}")),
        *CPU,
        ("server RSS MB (end)", megabytes("server_rss_after_kb")),
    ],
    "idle": [
        ("connected / N", pair("connected", "n")),
        ("alive after hold", field("alive_after_hold")),
        ("connect phase s", field("connect_s", "{:.2f}")),
        ("server RSS before MB", megabytes("server_rss_before_kb")),
        ("server RSS after MB", megabytes("server_rss_after_kb")),
        ("KB per connection", field("kb_per_conn", "{:.2f}")),
        ("lines received (all conns)", field("lines_total")),
        ("server CPU % (whole run)", field("server_cpu_pct", "{:.0f}")),
        ("loadgen CPU % (whole run)", field("loadgen_cpu_pct", "{:.0f}")),
    ],
    "slow": [
        ("offered / sent msgs", pair("offered", "sent")),
        ("healthy deliveries/s", field("deliveries_per_s")),
        ("healthy loss", loss),
        ("healthy latency p50 ms", field("lat_p50_ms", "{:.2f}")),
        ("healthy latency p99 ms", field("lat_p99_ms", "{:.2f}")),
        ("healthy latency max ms", field("lat_max_ms", "{:.2f}")),
        (
            "stalled closed by server",
            pair("stalled_closed_by_server", "stalled_receivers"),
        ),
        ("first close at s", field("first_close_s", "{:.1f}")),
        ("server RSS growth MB", megabytes("server_rss_growth_kb")),
        ("server RSS peak MB", megabytes("server_rss_peak_kb")),
        (
            "kernel-queued to stalled MB",
            megabytes("stalled_unread_kb", "stalled_server_sendq_kb"),
        ),
        *CPU,
    ],
    "churn": [
        ("sessions/s", field("sessions_per_s")),
        ("session p50 ms", field("session_p50_ms", "{:.2f}")),
        ("session p99 ms", field("session_p99_ms", "{:.2f}")),
        ("errors", field("errors")),
        ("server fds after", field("server_fds_after")),
        *CPU,
    ],
}

KIND = {
    "fan100": "fan",
    "fan1000": "fan",
    "fanmix": "mix",
    "rate1000": "rate",
    "idle10k": "idle",
    "slow": "slow",
    "slowbig": "slow",
    "churn": "churn",
    "storm": "storm",
}


def load(directory: str) -> dict[tuple[str, str], Result | None]:
    """Every PEER.CELL.json of C{directory}; C{None} for a failed cell."""
    results: dict[tuple[str, str], Result | None] = {}
    for name in os.listdir(directory):
        if not name.endswith(".json"):
            continue
        peer, _, cell = name[:-5].rpartition(".")
        try:
            with open(os.path.join(directory, name)) as f:
                text = f.read().strip()
            results[(peer, cell)] = json.loads(text.splitlines()[-1]) if text else None
        except (OSError, ValueError, IndexError):
            results[(peer, cell)] = None
    return results


def main() -> None:
    """Print the tables of the results directory named on the command line."""
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    directory = sys.argv[1]
    results = load(directory)
    order_file = os.path.join(directory, "peers.txt")
    if os.path.exists(order_file):
        with open(order_file) as f:
            peers = [line.strip() for line in f if line.strip()]
    else:
        peers = sorted({peer for peer, _ in results})
    known = [cell for cell, _ in CELLS]
    extra = sorted({cell for _, cell in results if cell not in known})
    for cell, title in CELLS + [(cell, cell) for cell in extra]:
        columns = [peer for peer in peers if (peer, cell) in results]
        if not columns:
            continue
        print(f"### {cell}: {title}\n")
        print("| metric | " + " | ".join(columns) + " |")
        print("|---|" + "---|" * len(columns))
        for label, show in ROWS[KIND.get(cell, "fan")]:
            values = []
            for peer in columns:
                result = results[(peer, cell)]
                values.append("FAILED" if result is None else show(result))
            print(f"| {label} | {' | '.join(values)} |")
        print()


if __name__ == "__main__":
    main()
