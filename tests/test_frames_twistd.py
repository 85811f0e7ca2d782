"""End to end: ``twistd -n chat --frames``, with the client of docs/frames.md.

The client is the code block of docs/frames.md itself, run as it is
written, so the documentation cannot drift from the server.
"""

import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from harness import GREETING
from processes import WAIT, Connection, Server, free_port

from chatservice import __version__

ROOT = Path(__file__).resolve().parent.parent


def doc_client() -> str:
    """The Python client of docs/frames.md, as written there."""
    doc = (ROOT / "docs" / "frames.md").read_text(encoding="utf-8")
    section = doc.split("## A complete client", 1)[1]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_doc_client_is_about_30_lines() -> None:
    """The documented client stays short: about 30 lines of code."""
    lines = [line for line in doc_client().splitlines() if line.strip()]
    assert len(lines) <= 45


def test_doc_client_and_a_line_user(
    twistd: Callable[..., Server], connections: Callable[[int], Connection]
) -> None:
    """The documented client talks to a telnet user through twistd --frames."""
    port, frames_port = free_port(), free_port()
    server = twistd(
        f"tcp:{port}:interface=127.0.0.1",
        "--frames",
        f"tcp:{frames_port}:interface=127.0.0.1",
    )
    server.wait_for_port(port)
    server.wait_for_port(frames_port)
    alice = connections(port)
    assert alice.read(2) == GREETING
    alice.send("alice")
    assert alice.read(3)[0] == "*** Welcome, alice! Online (1): alice"

    client = subprocess.run(
        [sys.executable, "-c", doc_client(), "127.0.0.1", str(frames_port), "fbot"],
        capture_output=True,
        text=True,
        timeout=WAIT,
    )

    assert client.returncode == 0, client.stderr
    printed = client.stdout.splitlines()
    assert printed[0] == f"connected to chatservice {__version__}"
    kinds = [line.split(" ", 2)[1] for line in printed[1:]]
    assert "welcome" in kinds, printed
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z notice  Goodbye\.", printed[-1]
    ), printed
    # Frames are read in order: the message waited for the nickname.
    assert alice.read(4) == [
        "*** fbot has joined #lobby",
        "<fbot> hello from a frame client",
        "<fbot> in two lines",
        "*** fbot has left (quit: done)",
    ]

    server.process.send_signal(signal.SIGTERM)
    assert alice.read(2) == ["*** server shutting down", None]
    assert server.wait() in (0, -signal.SIGTERM)
    output = server.output()
    assert "Traceback" not in output
    assert f"--frames tcp:{frames_port}:interface=127.0.0.1" in output
    assert "registered as fbot" in output
