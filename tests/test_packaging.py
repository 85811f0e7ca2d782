"""Packaging tests: twistd finds the ``chat`` plugin however it is installed.

Each check runs twistd in a subprocess from an empty directory, so that the
repository root on C{sys.path} (the current directory) cannot hide a broken
install.  twistd is run as ``python -c "from twisted.scripts.twistd import
run; run()"`` with this test's interpreter, as in the end-to-end tests.
"""

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from processes import WAIT, Connection, free_port

import twisted

TWISTD = "from twisted.scripts.twistd import run; run()"

#: The repository root: where pyproject.toml is.
ROOT = Path(__file__).resolve().parent.parent

#: The directory that holds the installed Twisted and the other dependencies.
SITE_PACKAGES = str(Path(twisted.__file__).resolve().parent.parent)

OPTIONS = [
    "--port",
    "--idle-timeout",
    "--register-timeout",
    "--max-line",
    "--max-sendq",
    "--max-clients",
    "--max-per-ip",
    "--shutdown-timeout",
]

#: How the line for the chat plugin starts in ``twistd --help``.
CHAT_LISTED = re.compile(r"^\s+chat\s+\S", re.MULTILINE)


def run(
    args: list[str], cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run C{args} in C{cwd}, at most 60 seconds, capturing its output."""
    return subprocess.run(
        args,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def isolated(target: Path) -> dict[str, str]:
    """An environment in which C{python -S} sees C{target}, then Twisted."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join([str(target), SITE_PACKAGES])
    return env


def copy_of_checkout(directory: Path) -> Path:
    """A copy of the repository in C{directory}, without what builds leave.

    Building in place writes C{build/} and C{*.egg-info} into the work tree;
    the checkout's own C{.venv} is left out so nothing can use it by accident.
    """
    source = directory / "chatservice"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(
            ".git",
            "build",
            "dist",
            "*.egg-info",
            "__pycache__",
            "dropin.cache",
            ".*_cache",
            ".venv",
        ),
    )
    return source


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A normal (non-editable) install of this repository, made with pip.

    It is built from a copy of the repository (L{copy_of_checkout}).
    """
    source = copy_of_checkout(tmp_path_factory.mktemp("source"))
    target = tmp_path_factory.mktemp("target")
    result = run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "--disable-pip-version-check",
            "--target",
            str(target),
            str(source),
        ],
        cwd=source,
    )
    assert result.returncode == 0, (
        f"pip could not install the project with setuptools "
        f"{metadata.version('setuptools')}:\n{result.stdout}{result.stderr}"
    )
    return target


def test_twistd_lists_chat(tmp_path: Path) -> None:
    """The plugin list of ``twistd --help`` includes chat."""
    result = run([sys.executable, "-c", TWISTD, "--help"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert CHAT_LISTED.search(result.stdout), result.stdout


@pytest.fixture(scope="module")
def chat_help(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The output of C{twistd chat --help}."""
    result = run(
        [sys.executable, "-c", TWISTD, "chat", "--help"],
        cwd=tmp_path_factory.mktemp("cwd"),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("option", OPTIONS)
def test_chat_help_documents_option(chat_help: str, option: str) -> None:
    """The help of ``twistd chat`` names the option and describes it."""
    documented = re.compile(rf"^\s+(?:-\w, )?{option}=\s+\w", re.MULTILINE)
    assert documented.search(chat_help), chat_help


def test_normal_install_lists_chat(installed: Path, tmp_path: Path) -> None:
    """After a normal install, twistd --help lists chat, from the install."""
    result = run(
        [sys.executable, "-S", "-c", TWISTD, "--help"],
        cwd=tmp_path,
        env=isolated(installed),
    )
    assert result.returncode == 0, result.stderr
    assert CHAT_LISTED.search(result.stdout), result.stdout

    where = run(
        [
            sys.executable,
            "-S",
            "-c",
            "import sys, chatservice, twisted.plugin as p;"
            "from twisted.application.service import IServiceMaker as I;"
            "[m] = [m for m in p.getPlugins(I) if m.tapname == 'chat'];"
            "print(chatservice.__file__);"
            "print(sys.modules['twisted.plugins.chatservice_plugin'].__file__)",
        ],
        cwd=tmp_path,
        env=isolated(installed),
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.splitlines() == [
        str(installed / "chatservice" / "__init__.py"),
        str(installed / "twisted" / "plugins" / "chatservice_plugin.py"),
    ]


def test_normal_install_has_the_chat_page(installed: Path) -> None:
    """A normal install ships the web front end's page (package data)."""
    static = installed / "chatservice" / "frontends" / "static"
    shipped = sorted(path.name for path in static.iterdir())
    assert shipped == ["chat.css", "chat.js", "index.html"]


@pytest.mark.parametrize(
    "cache",
    [
        pytest.param(b"\x00not a pickle\xff" * 64, id="garbage"),
        pytest.param(b"\x80\x04}\x94.", id="empty-pickle"),
    ],
)
def test_stale_dropin_cache(
    installed: Path,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    cache: bytes,
) -> None:
    """A stale dropin.cache beside the plugin does not hide chat from twistd."""
    target = tmp_path_factory.mktemp("stale")
    shutil.copytree(installed, target, dirs_exist_ok=True)
    dropin = target / "twisted" / "plugins" / "dropin.cache"
    dropin.write_bytes(cache)
    # Newer than the plugin, so that twistd has no reason to distrust it.
    plugin = target / "twisted" / "plugins" / "chatservice_plugin.py"
    stat = plugin.stat()
    os.utime(dropin, (stat.st_atime + 60, stat.st_mtime + 60))

    result = run(
        [sys.executable, "-S", "-c", TWISTD, "--help"],
        cwd=tmp_path,
        env=isolated(target),
    )

    assert result.returncode == 0, result.stderr
    assert CHAT_LISTED.search(result.stdout), result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def quickstart_commands() -> list[str]:
    """The commands of the README's Quickstart section, one per C{sh} block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Quickstart\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^```sh\n(.*?)\n```$", section, re.MULTILINE | re.DOTALL)


def test_quickstart_is_two_commands_in_a_virtual_environment() -> None:
    """The README's quickstart is two one-line commands that install into .venv."""
    commands = quickstart_commands()
    assert len(commands) == 2, commands
    for command in commands:
        assert "\n" not in command, command
        assert command.startswith("python3 -m venv .venv && .venv/bin/pip install ")


def test_ci_runs_the_readme_test_command() -> None:
    """The last command of .ci/run is the README's test command, as written."""
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    commands = [
        line
        for line in script.splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert commands[-1] == quickstart_commands()[1]


def test_docs_show_the_version_chatservice_has() -> None:
    """Every C{chatservice X.Y.Z} the docs show (log lines, --version) is pyproject.toml's version."""
    with (ROOT / "pyproject.toml").open("rb") as f:
        version = tomllib.load(f)["project"]["version"]
    shown = {
        f"{path.relative_to(ROOT)}: {found}"
        for path in [ROOT / "README.md", *(ROOT / "docs").glob("*.md")]
        for found in re.findall(
            r"\bchatservice (\d+\.\d+\.\d+)\b", path.read_text(encoding="utf-8")
        )
    }
    assert shown, "the docs show no version any more: drop this test"
    assert {entry for entry in shown if not entry.endswith(f": {version}")} == set()


def apt_packages(text: str) -> set[str]:
    """The packages of every C{apt-get install} in C{text} (options left out)."""
    return {
        word
        for words in re.findall(r"apt-get install((?: [-\w.]+)+)", text)
        for word in words.split()
        if not word.startswith("-")
    }


def test_ci_installs_what_the_readme_asks_for() -> None:
    """Every Debian package the README tells a user to install, .ci/run installs."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    # Its commands are in code spans (outside the fenced blocks), which may
    # be wrapped over two lines.
    prose = re.sub(r"^```.*?^```$", "", readme, flags=re.MULTILINE | re.DOTALL)
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose)]
    asked = apt_packages("\n".join(spans))
    script = apt_packages((ROOT / ".ci" / "run").read_text(encoding="utf-8"))
    assert {"python3-venv", "redis-server", "telnet", "tmux"} <= asked
    assert asked - script == set()


def outside_any_venv() -> dict[str, str]:
    """The environment a new shell would have, with no venv active.

    C{python3} is then the one a user would find on C{PATH}: not the
    interpreter of the virtual environment these tests run in.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("PYTHON") and k != "VIRTUAL_ENV"
    }
    env["PATH"] = os.pathsep.join(
        entry
        for entry in env.get("PATH", "").split(os.pathsep)
        if entry and not (Path(entry).parent / "pyvenv.cfg").exists()
    )
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PIP_NO_INPUT"] = "1"
    return env


@pytest.mark.timeout(600)
def test_readme_install_in_a_fresh_venv(tmp_path: Path) -> None:
    """The README's first command, in a fresh copy of the checkout, serves chat.

    Its set-up part is run as written (pip reaches the index configured for
    this machine: PyPI, or a mirror given with C{PIP_INDEX_URL}); the
    server it starts is then given a free loopback port.
    """
    setup, start = quickstart_commands()[0].rsplit(" && ", 1)
    assert start == ".venv/bin/twistd -n chat"
    source = copy_of_checkout(tmp_path)

    result = subprocess.run(
        ["bash", "-c", setup],
        cwd=source,
        env=outside_any_venv(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert result.returncode == 0, (
        f"{setup!r} failed (is the package index reachable?):\n"
        f"{result.stdout[-3000:]}{result.stderr[-3000:]}"
    )
    assert (source / ".venv" / "pyvenv.cfg").exists()

    port = free_port()
    output = tmp_path / "twistd.out"
    with output.open("wb") as sink:
        server = subprocess.Popen(
            [*start.split(), "--port", f"tcp:{port}:interface=127.0.0.1"],
            cwd=source,
            env=outside_any_venv(),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 4 * WAIT
        while True:
            assert server.poll() is None, output.read_text(errors="replace")
            try:
                connection = Connection(port)
                break
            except OSError:
                assert time.monotonic() < deadline, output.read_text(errors="replace")
                time.sleep(0.1)
        try:
            assert connection.read() == ["*** Welcome to chatservice."]
        finally:
            connection.close()
    finally:
        server.kill()
        server.wait(timeout=WAIT)
    log = output.read_text(errors="replace")
    assert f"{source}/.venv/bin/python" in log, log
