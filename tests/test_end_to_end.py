"""End-to-end tests: ``twistd -n chat`` in a subprocess, as a user runs it.

See L{processes} for how twistd is started; the server is another process,
so these are plain synchronous tests with blocking sockets, each with a
timeout.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import pytest
from harness import GREETING
from processes import TWISTD, WAIT, Connection, Server, free_port

from chatservice import __version__


def test_chat_then_sigterm(
    twistd: Callable[[str], Server], connections: Callable[[int], Connection]
) -> None:
    """Two users chat through twistd; SIGTERM tells both, closes them, and exits."""
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1")
    server.wait_for_port(port)

    alice = connections(port)
    assert alice.read(2) == GREETING
    alice.send("alice")
    assert alice.read(3)[:2] == [
        "*** Welcome, alice! Online (1): alice",
        "*** Type /help for the commands.",
    ]
    bob = connections(port)
    assert bob.read(2) == GREETING
    bob.send("bob")
    assert bob.read(3)[:2] == [
        "*** Welcome, bob! Online (2): alice, bob",
        "*** Type /help for the commands.",
    ]
    assert alice.read() == ["*** bob has joined #lobby"]
    bob.send("hello alice")
    assert alice.read() == ["<bob> hello alice"]
    alice.send("/who")
    assert alice.read() == ["*** In #lobby (2): alice, bob"]

    server.process.send_signal(signal.SIGTERM)

    assert alice.read(2) == ["*** server shutting down", None]
    assert bob.read(2) == ["*** server shutting down", None]
    assert server.wait() in (0, -signal.SIGTERM)
    output = server.output()
    assert "Traceback" not in output
    # Each connection's registration and close are logged (in one line
    # for a session that ends within a second).
    assert output.count("registered as") == 2, output
    assert output.count(" closed (server shutting down;") == 2, output


def test_log_level_warn_leaves_out_connections(
    twistd: Callable[..., Server], connections: Callable[[int], Connection]
) -> None:
    """--log-level warn: sessions come and go without a line in the log."""
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", "--log-level", "warn")
    server.wait_for_port(port)
    alice = connections(port)
    assert alice.read(2) == GREETING
    alice.send("alice")
    assert alice.read()[0].startswith("*** Welcome, alice!")
    alice.send("/quit")
    while (line := alice.read()[0]) is not None:
        assert not line.startswith("!!!"), line

    server.process.send_signal(signal.SIGTERM)
    assert server.wait() in (0, -signal.SIGTERM)
    output = server.output()
    assert "registered as" not in output, output
    assert "closed (" not in output, output
    assert "listening on" not in output, output  # chatservice's own, at info
    assert "Main loop terminated." in output  # Twisted's own events still pass


#: A line of twistd's text log: its timestamp, its system, the text.
LOG_LINE = (
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4} \[(?P<system>[^\]]+)\] (?P<text>.*)"
)

#: What the server says when it gave twistd's own observer the faster formatting.
SPED_UP = "text log: twistd's lines, formatted by chatservice.textlog.format_classic"


def _one_session(port: int, connections: Callable[[int], Connection]) -> None:
    alice = connections(port)
    assert alice.read(2) == GREETING
    alice.send("alice")
    assert alice.read()[0].startswith("*** Welcome, alice!")
    alice.send("/quit")
    while alice.read()[0] is not None:
        pass


def _log_lines(text: str) -> list[tuple[str, str]]:
    """Each line of a twistd text log: (system, text); any other line fails."""
    lines = []
    for line in text.splitlines():
        match = re.fullmatch(LOG_LINE, line)
        assert match, f"not a line of twistd's text log: {line!r}"
        lines.append((match["system"], match["text"]))
    return lines


def _sessions_logged(lines: list[tuple[str, str]]) -> int:
    """How many of alice's sessions the log has, checking each line's text."""
    session = [text for system, text in lines if system == "chatservice.session#info"]
    # (wait_for_port's own connection comes and goes too.)
    peer = r"connection \d+ from 127\.0\.0\.1:\d+ "
    registered = [t for t in session if re.fullmatch(peer + "registered as alice", t)]
    closed = [
        t for t in session if re.fullmatch(peer + r"closed \(quit; closed cleanly\)", t)
    ]
    # A session that ends within a second of registering is one line.
    both = [
        t
        for t in session
        if re.fullmatch(
            peer + r"registered as alice, closed \(quit; closed cleanly\)", t
        )
    ]
    assert len(registered) == len(closed), session
    return len(both) + len(registered)


@pytest.mark.parametrize(
    ("twistd_args", "log_file", "sped_up"),
    [
        pytest.param((), None, True, id="stdout"),
        pytest.param(("--logfile", "chat.log"), "chat.log", True, id="logfile"),
        pytest.param(
            ("--logger", "chatservice.logs.text_observer"), None, False, id="logger"
        ),
    ],
)
def test_twistds_text_log_formatted_faster(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
    twistd_args: tuple[str, ...],
    log_file: str | None,
    sped_up: bool,
) -> None:
    """The default log, to stdout or --logfile, is formatted faster, line for line.

    The server says so once; every line is twistd's classic text (the
    formatting itself is compared with Twisted's in test_textlog).  With
    --logger chatservice.logs.text_observer it was already.
    """
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", twistd_args=twistd_args)
    server.wait_for_port(port)
    _one_session(port, connections)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() in (0, -signal.SIGTERM)
    if log_file is None:
        text = server.output()
    else:
        text = (tmp_path / log_file).read_text()
        assert server.output() == ""
    lines = _log_lines(text)
    assert lines.count(("chatservice.service#info", SPED_UP)) == sped_up, lines
    assert _sessions_logged(lines) == 1, lines
    # Twisted's own lines, before and after the change, and at the end.
    texts = [text for _, text in lines]
    assert texts[0].startswith("twistd "), lines
    assert "Main loop terminated." in texts, lines
    assert texts[-1] == "Server Shut Down.", lines


def test_log_file_still_rotates(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """SIGUSR1 still rotates twistd's --logfile, whose observer was sped up."""
    port = free_port()
    server = twistd(
        f"tcp:{port}:interface=127.0.0.1", twistd_args=("--logfile", "chat.log")
    )
    server.wait_for_port(port)
    _one_session(port, connections)
    server.process.send_signal(signal.SIGUSR1)
    rotated = tmp_path / "chat.log.1"
    deadline = time.monotonic() + WAIT
    while not rotated.exists():
        assert time.monotonic() < deadline, "chat.log was not rotated"
        time.sleep(0.05)
    _one_session(port, connections)
    server.process.send_signal(signal.SIGTERM)
    assert server.wait() in (0, -signal.SIGTERM)
    before = _log_lines(rotated.read_text())
    after = _log_lines((tmp_path / "chat.log").read_text())
    assert ("chatservice.service#info", SPED_UP) in before
    assert (_sessions_logged(before), _sessions_logged(after)) == (1, 1)
    assert after[-1][1] == "Server Shut Down.", after


def test_port_in_use(twistd: Callable[[str], Server]) -> None:
    """A second server on a busy port exits non-zero with one line saying so."""
    port = free_port()
    endpoint = f"tcp:{port}:interface=127.0.0.1"
    first = twistd(endpoint)
    first.wait_for_port(port)

    second = twistd(endpoint)

    assert second.wait() != 0
    output = second.output()
    mentions = [line for line in output.splitlines() if f"tcp:{port}" in line]
    assert len(mentions) == 1, output
    assert f"cannot listen on {endpoint}: address already in use" in mentions[0]
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("endpoint", "cause"),
    [
        ("tcp:99999", "the port number is out of range (0-65535)"),
        ("foo:1", "Unknown endpoint type: 'foo'"),
        ("tcp:interface=127.0.0.1", "no port given"),
    ],
)
def test_bad_endpoint(
    twistd: Callable[[str], Server], endpoint: str, cause: str
) -> None:
    """An unusable --port exits non-zero with one line naming it and the cause."""
    server = twistd(endpoint)

    assert server.wait() != 0
    output = server.output()
    mentions = [line for line in output.splitlines() if endpoint in line]
    assert len(mentions) == 1, output
    assert cause in mentions[0]
    assert "Traceback" not in output


EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_third_party_plugins(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """Plugins on sys.path are used; a broken one is one line, and left out."""
    broken = tmp_path / "broken" / "chatservice" / "plugins"
    broken.mkdir(parents=True)
    (broken / "broken_plugin.py").write_text("import no_such_module_here\n")
    path = [
        EXAMPLES / "chatservice-dice",
        EXAMPLES / "chatservice-capsfilter",
        EXAMPLES / "chatservice-seen",
        broken.parent.parent,
        *filter(None, [os.environ.get("PYTHONPATH")]),
    ]
    port = free_port()
    server = twistd(
        f"tcp:{port}:interface=127.0.0.1",
        env={
            "PYTHONPATH": os.pathsep.join(map(str, path)),
            "CHATSERVICE_MAX_CAPS": "50",
        },
    )
    server.wait_for_port(port)
    alice = connections(port)
    alice.read(2)
    alice.send("alice")
    alice.read(3)
    alice.send("/roll 1d1000")
    (rolled,) = alice.read()
    assert rolled is not None and rolled.startswith("*** alice rolls 1d1000: "), (
        server.output()
    )
    alice.send("HELLO EVERYONE")
    assert alice.read() == [
        "!!! please don't shout: your line was not sent (at most 50% capital letters)"
    ]
    alice.send("/seen ALICE")
    assert alice.read() == ["*** alice is online in #lobby"]
    output = server.output()
    problems = [line for line in output.splitlines() if "broken_plugin" in line]
    assert len(problems) == 1, output
    assert problems[0].endswith(
        "plugin chatservice.plugins.broken_plugin left out: cannot import it: "
        "ModuleNotFoundError: No module named 'no_such_module_here'"
    )
    assert "Traceback" not in output
    # At start, the log says what is in use and where it comes from.
    dice = EXAMPLES / "chatservice-dice" / "chatservice" / "plugins" / "dice.py"
    origins = [f"no installed distribution: {dice}"]
    try:
        # The README's Plugins section installs the dice plugin into .venv,
        # which the tests then run in: that copy may be the one in use.
        origins.append(f"chatservice-dice {metadata.version('chatservice-dice')}")
    except metadata.PackageNotFoundError:
        pass
    roll = "plugins: command /roll from chatservice.plugins.dice "
    assert any(f"{roll}({origin})" in output for origin in origins), output
    (builtin,) = [
        line
        for line in output.splitlines()
        if "from chatservice.plugins.builtin" in line
    ]
    assert builtin.endswith(
        f", /who from chatservice.plugins.builtin (chatservice {__version__})"
    )
    assert "plugins: filter capsfilter from chatservice.plugins.capsfilter" in output
    assert (
        "plugins: command /seen and session hooks seen from chatservice.plugins.seen"
        in output
    )


def test_disable_plugin_matching_nothing(twistd: Callable[..., Server]) -> None:
    """--disable-plugin with a name no plugin has stops the start with one line."""
    server = twistd(f"tcp:{free_port()}:interface=127.0.0.1", "--disable-plugin", "rol")
    assert server.wait() == 1
    (line,) = server.output().splitlines()
    assert line.startswith(
        "twistd chat: --disable-plugin rol: there is no command or filter of that "
        "name (there are: away, "
    ), line


def test_version() -> None:
    """`twistd chat --version` prints chatservice's version and exits 0."""
    result = subprocess.run(
        [*TWISTD, "chat", "--version"], capture_output=True, text=True, timeout=WAIT
    )
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"chatservice {__version__}\n",
        "",
    )


def test_motd_reloaded_on_sighup(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """The message of the day follows the welcome and is re-read on SIGHUP."""
    motd = tmp_path / "motd.txt"
    motd.write_text("Welcome to the test server.\n")
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", "--motd", str(motd))
    server.wait_for_port(port)
    alice = connections(port)
    alice.read(2)
    alice.send("alice")
    assert alice.read(3)[2] == "*** Welcome to the test server."
    motd.write_text("New rules today.\n")
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + WAIT
    while server.output().count("message of the day read from") < 2:
        assert time.monotonic() < deadline, server.output()
        assert server.process.poll() is None, server.output()
        time.sleep(0.05)
    bob = connections(port)
    bob.read(2)
    bob.send("bob")
    assert bob.read(3)[2] == "*** New rules today."


def test_missing_motd_is_one_line(
    twistd: Callable[..., Server], tmp_path: Path
) -> None:
    """A --motd file that cannot be read stops the start with one line."""
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", "--motd", str(tmp_path / "nope"))
    assert server.wait() != 0
    output = server.output()
    assert (
        f"chatservice: cannot read --motd {tmp_path / 'nope'}: no such file or directory"
        in output
    )
    assert "Traceback" not in output


def test_plain_text_operator_password_refused(
    twistd: Callable[..., Server], tmp_path: Path
) -> None:
    """An operators file with a plain-text password stops the start with one line."""
    operators = tmp_path / "operators"
    operators.write_text("root hunter2\n")
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", "--operators", str(operators))
    assert server.wait() != 0
    output = server.output()
    assert "plain-text passwords are refused" in output
    assert "chatservice-oper root" in output
    assert "hunter2" not in output
    assert "Traceback" not in output


def test_operator_ban_survives_restart(
    twistd: Callable[..., Server],
    connections: Callable[[int], Connection],
    tmp_path: Path,
) -> None:
    """An operator made with chatservice-oper bans an address; a restart keeps it."""
    # A new session has no controlling terminal, so getpass reads the piped
    # password instead of waiting at /dev/tty (pytest run in a terminal).
    made = subprocess.run(
        [sys.executable, "-m", "chatservice.tools.oper", "root"],
        input="s3cret\ns3cret\n",
        capture_output=True,
        text=True,
        timeout=WAIT,
        check=True,
        start_new_session=True,
    )
    operators = tmp_path / "operators"
    operators.write_text(made.stdout)
    bans = tmp_path / "bans.json"
    options = ("--operators", str(operators), "--bans", str(bans))
    port = free_port()
    server = twistd(f"tcp:{port}:interface=127.0.0.1", *options)
    server.wait_for_port(port)
    root = connections(port)
    root.read(2)
    root.send("root")
    root.read(3)
    root.send("/oper root s3cret")
    assert root.read() == [
        "*** You are now an operator (root); /help lists your commands."
    ]
    bob = connections(port, "127.0.0.2")
    bob.read(2)
    bob.send("bob")
    bob.read(3)
    assert root.read() == ["*** bob has joined #lobby"]
    root.send("/ban bob 1h testing")
    assert bob.read(2) == ["*** disconnected: banned: testing", None]
    assert root.read(2) == [
        "*** bob has left (banned: testing)",
        "*** Banned 127.0.0.2/32 (bob) for 1h: testing.",
    ]
    assert "operator root (root) banned 127.0.0.2/32" in server.output()

    server.process.send_signal(signal.SIGTERM)
    assert server.wait() in (0, -signal.SIGTERM)
    server = twistd(f"tcp:{port}:interface=127.0.0.1", *options)
    server.wait_for_port(port)
    again = connections(port, "127.0.0.2")
    refused = again.read(2)
    assert refused[0] is not None
    assert refused[0].startswith("!!! you are banned from this server until ")
    assert refused == [refused[0], None]
    assert refused[0].endswith(": testing")
    assert connections(port).read(2) == GREETING


def _open_files_limit(pid: int) -> tuple[int, int]:
    """The soft and hard limits of open files of process C{pid}."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no open-files limit for {pid}")


@pytest.mark.parametrize(
    ("hard", "soft_after", "warning"),
    [
        (4096, 1101, None),
        (
            512,
            512,
            "only 512 files may be open, too few for --max-clients 1000 (1101 with "
            "the listeners and 100 to spare): past about 411 connections, new ones "
            "will be closed without a word. Raise the limit (LimitNOFILE=1101 in the "
            "systemd unit, or ulimit -n 1101 before starting twistd) or lower "
            "--max-clients to 411",
        ),
    ],
)
def test_open_files_limit(
    tmp_path: Path, hard: int, soft_after: int, warning: str | None
) -> None:
    """At start the soft limit of open files is raised up to the hard one for --max-clients; if that is too low, one warning says what to set."""
    prlimit = shutil.which("prlimit")
    assert prlimit is not None, "prlimit (util-linux) is needed"
    port = free_port()
    server = Server(
        f"tcp:{port}:interface=127.0.0.1",
        tmp_path,
        ("--max-clients", "1000"),
        prefix=(prlimit, f"--nofile=256:{hard}"),
    )
    try:
        server.wait_for_port(port)
        assert _open_files_limit(server.process.pid) == (soft_after, hard)
        output = server.output()
        assert (
            f"raised the limit of open files from 256 to {soft_after} for "
            "--max-clients 1000"
        ) in output
        warnings = [line for line in output.splitlines() if "#warn]" in line]
        if warning is None:
            assert warnings == [], output
        else:
            assert len(warnings) == 1 and warnings[0].endswith(warning), output
    finally:
        server.kill()
