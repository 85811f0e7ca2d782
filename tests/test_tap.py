"""The twistd command line: options, validation, and the service it makes."""

import re
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from certs import make_ca, make_server_cert

from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor

from chatservice import __version__
from chatservice.config import Settings, options
from chatservice.errors import StartupError
from chatservice.service import ChatService
from chatservice.tap import Options, _parse_endpoint, makeService, with_backlog

ROOT = Path(__file__).resolve().parent.parent


#: A --store of PostgreSQL (never connected to by these tests).
PG = "postgresql://chat:secret@db.example.com:5432/chat"


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    """With no options: tcp:8000 and the documented defaults."""
    options = parse()
    assert options["settings"] == Settings()
    assert options["settings"].endpoints == ("tcp:8000",)
    assert options["settings"].idle_timeout == 0
    assert options["settings"].keepalive == 60


#: For each option, a command line giving it and the setting it makes.
GIVEN = [
    (["--port", "9000"], "endpoints", ("tcp:9000",)),
    (["-p", "unix:/tmp/chat.sock"], "endpoints", ("unix:/tmp/chat.sock",)),
    (
        ["--port", "9000", "--port", "unix:/tmp/chat.sock"],
        "endpoints",
        ("tcp:9000", "unix:/tmp/chat.sock"),
    ),
    (["--idle-timeout", "60"], "idle_timeout", 60.0),
    (["--idle-timeout", "0"], "idle_timeout", 0.0),
    (["--keepalive", "30"], "keepalive", 30),
    (["--keepalive", "0"], "keepalive", 0),
    (["--register-timeout", "5.5"], "register_timeout", 5.5),
    (["--max-line", "512"], "max_line", 512),
    (["--max-sendq", "65536"], "max_sendq", 65536),
    (["--max-clients", "50"], "max_clients", 50),
    (["--max-per-ip", "3"], "max_per_ip", 3),
    (["--flood-rate", "2.5"], "flood_rate", 2.5),
    (["--flood-burst", "4"], "flood_burst", 4),
    (["--max-connect-rate", "3"], "max_connect_rate", 3.0),
    (["--operators", "/etc/chat/operators"], "operators", "/etc/chat/operators"),
    (["--bans", "/var/lib/chat/bans.json"], "bans", "/var/lib/chat/bans.json"),
    (["--resume-grace", "0"], "resume_grace", 0.0),
    (["--resume-grace", "120"], "resume_grace", 120.0),
    (["--resume-buffer", "50"], "resume_buffer", 50),
    (["--resume-buffer-bytes", "4096"], "resume_buffer_bytes", 4096),
    (["--identify-grace", "5"], "identify_grace", 5.0),
    (["--history", "0"], "history", 0),
    (["--history", "10"], "history", 10),
    (["--history-days", "7"], "history_days", 7),
    (["--frames", "9000"], "frames", ("tcp:9000",)),
    (
        ["--frames", "tcp:9000", "--frames", "unix:/run/chat-frames.sock"],
        "frames",
        ("tcp:9000", "unix:/run/chat-frames.sock"),
    ),
    (["--max-frame", "1024"], "max_frame", 1024),
    (["--heartbeat", "0"], "heartbeat", 0.0),
    (["--heartbeat", "10"], "heartbeat", 10.0),
    (["--announce-max", "0"], "announce_max", 0),
    (["--announce-max", "7"], "announce_max", 7),
    (
        ["--redis", "redis://10.0.0.5/2", "--store", PG],
        "redis",
        "redis://10.0.0.5/2",
    ),
    (["--store", PG], "store", PG),
    (
        ["--store", "sqlite:/var/lib/chat/chat.db"],
        "store",
        "sqlite:/var/lib/chat/chat.db",
    ),
    (["--store", "sqlite::memory:"], "store", "sqlite::memory:"),
    (["--cluster", "eu-1"], "cluster", "eu-1"),
    (["--node-ttl", "30"], "node_ttl", 30.0),
    (["--log-level", "WARN"], "log_level", "warn"),
    (["--motd", "/etc/motd"], "motd", "/etc/motd"),
    (["--shutdown-timeout", "1"], "shutdown_timeout", 1.0),
    (["--irc", "6667"], "irc", ("tcp:6667",)),
    (
        ["--irc", "tcp:6667", "--irc", "unix:/run/chat-irc.sock"],
        "irc",
        ("tcp:6667", "unix:/run/chat-irc.sock"),
    ),
    (["--irc-ping", "30"], "irc_ping", 30.0),
    (["--irc-ping", "0"], "irc_ping", 0.0),
    (["--metrics", "9100"], "metrics", "tcp:9100"),
    (
        ["--metrics", "tcp:9100:interface=127.0.0.1"],
        "metrics",
        "tcp:9100:interface=127.0.0.1",
    ),
    (
        ["--disable-plugin", "/MSG", "--disable-plugin", "away"],
        "disabled_plugins",
        frozenset({"msg", "away"}),
    ),
    (["--web", "8080", "--web", "tcp:8081"], "web", ("tcp:8080", "tcp:8081")),
    (
        ["--web-origin", "HTTPS://Chat.Example.com/"],
        "web_origin",
        ("https://chat.example.com",),
    ),
    (
        ["--trusted-proxy", "10.0.0.1", "--trusted-proxy", "fd00::/8"],
        "trusted_proxy",
        ("10.0.0.1/32", "fd00::/8"),
    ),
]


@pytest.mark.parametrize(("args", "name", "value"), GIVEN)
def test_option(args: list[str], name: str, value: Any) -> None:
    """Each option sets its setting, and only it."""
    settings = parse(*args)["settings"]
    if name == "redis":  # which needs a --store of PostgreSQL
        settings = replace(settings, store=Settings().store)
    assert settings == replace(Settings(), **{name: value})


def test_every_option_is_tested() -> None:
    """GIVEN sets every setting that is an option."""
    assert {name for _, name, _ in GIVEN} == {each.name for each, _ in options()}


def test_settings_without_options() -> None:
    """The settings that are not options are those known to be internal."""
    named = {each.name for each, _ in options()}
    assert {each.name for each in fields(Settings)} - named == {
        "command_timeout",
        "private_rate",
        "private_burst",
    }


def test_help_lists_every_option() -> None:
    """The help of twistd chat lists every option, with its default."""
    usage = Options().getUsage(width=1000)
    for each, option in options():
        line = next(
            line for line in usage.splitlines() if f"--{option.name}=" in line.split()
        )
        if each.default:
            assert f"[default: {option.shown(each.default)}]" in line
    assert "  -p, --port=" in usage
    assert "[default: off]" in next(
        line for line in usage.splitlines() if "--metrics=" in line
    )
    assert "--version" in usage


#: For each option that can be wrong, a wrong value and the one line it gives.
WRONG = [
    (["--port", "foo:1"], "invalid --port 'foo:1': Unknown endpoint type: 'foo'"),
    (
        ["--port", "tcp:interface=127.0.0.1"],
        "invalid --port 'tcp:interface=127.0.0.1': no port given",
    ),
    (
        ["--port", "tcp:abc"],
        "invalid --port 'tcp:abc': invalid literal for int() with base 10: 'abc'",
    ),
    (
        ["--port", "tcp:80:bogus=1"],
        "invalid --port 'tcp:80:bogus=1': unknown parameter 'bogus'",
    ),
    (
        ["--port", "ssl:6697:privateKey=/nonexistent.pem"],
        "invalid --port 'ssl:6697:privateKey=/nonexistent.pem': "
        "No such file or directory: /nonexistent.pem",
    ),
    (
        ["--idle-timeout", "-5"],
        "--idle-timeout: '-5' is not a number of seconds (0 or more)",
    ),
    (["--idle-timeout", "soon"], "--idle-timeout: 'soon' is not a number"),
    (["--idle-timeout", "inf"], "--idle-timeout: 'inf' is not a number"),
    (["--keepalive", "1.5"], "--keepalive: '1.5' is not a whole number"),
    (["--keepalive", "-1"], "--keepalive: '-1' is negative"),
    (["--keepalive", "40000"], "--keepalive: '40000' is more than 32767 seconds"),
    (
        ["--register-timeout", "0"],
        "--register-timeout: '0' is not a number greater than 0",
    ),
    (["--max-line", "lots"], "--max-line: 'lots' is not a number"),
    (["--max-line", "0"], "--max-line: '0' is not a number greater than 0"),
    (["--max-sendq", "-1"], "--max-sendq: '-1' is not a number greater than 0"),
    (["--max-clients", "0"], "--max-clients: '0' is not a number greater than 0"),
    (["--max-per-ip", "1.5"], "--max-per-ip: '1.5' is not a number"),
    (["--flood-rate", "0"], "--flood-rate: '0' is not a number greater than 0"),
    (["--flood-rate", "nan"], "--flood-rate: 'nan' is not a number"),
    (["--flood-burst", "0"], "--flood-burst: '0' is not a number greater than 0"),
    (
        ["--max-connect-rate", "-1"],
        "--max-connect-rate: '-1' is not a number greater than 0",
    ),
    (
        ["--resume-grace", "-1"],
        "--resume-grace: '-1' is not a number of seconds (0 or more)",
    ),
    (["--resume-buffer", "0"], "--resume-buffer: '0' is not a number greater than 0"),
    (
        ["--resume-buffer-bytes", "0"],
        "--resume-buffer-bytes: '0' is not a number greater than 0",
    ),
    (["--history", "-1"], "--history: '-1' is negative"),
    (["--history", "many"], "--history: 'many' is not a whole number"),
    (["--history-days", "0"], "--history-days: '0' is not a number greater than 0"),
    (["--announce-max", "-1"], "--announce-max: '-1' is negative"),
    (
        ["--redis", "http://10.0.0.5:6379"],
        "--redis: 'http://10.0.0.5:6379' does not start with redis://",
    ),
    (
        ["--redis", "redis://10.0.0.5/zero"],
        "--redis: 'redis://10.0.0.5/zero': the database must be a number, as in /0",
    ),
    (
        ["--redis", "redis://:secret@10.0.0.5/0"],
        "--redis: 'redis://:secret@10.0.0.5/0': passwords in the URL are not supported",
    ),
    (
        ["--redis", "redis://10.0.0.5/0"],
        "--redis needs --store postgresql://...: the nodes of a cluster share "
        "one PostgreSQL database, not each a SQLite file "
        "(--store sqlite:chatservice.db)",
    ),
    (
        ["--redis", "redis://10.0.0.5/0", "--store", "sqlite::memory:"],
        "--redis needs --store postgresql://...: the nodes of a cluster share "
        "one PostgreSQL database, not each a SQLite file (--store sqlite::memory:)",
    ),
    (
        ["--store", "chat.db"],
        "--store: 'chat.db' is not a store URL (sqlite:PATH, sqlite::memory: or "
        "postgresql://USER:PASSWORD@HOST:PORT/DATABASE)",
    ),
    (["--store", "sqlite:"], "--store: 'sqlite:' names no file (sqlite:PATH)"),
    (
        ["--store", "sqlite:///var/chat.db"],
        "--store: 'sqlite:///var/chat.db': write sqlite:PATH (sqlite:chatservice.db, "
        "sqlite:/var/lib/chat/chat.db), without //",
    ),
    (
        ["--store", "postgresql://db.example.com"],
        "--store: 'postgresql://db.example.com' names no database "
        "(postgresql://USER:PASSWORD@HOST:PORT/DATABASE)",
    ),
    (
        ["--store", "postgresql://db:port/chat"],
        "--store: 'postgresql://db:port/chat' is not a PostgreSQL URL: "
        "Port could not be cast to integer value as 'port'",
    ),
    (
        ["--cluster", "a:b"],
        "--cluster: 'a:b' is not a cluster name (letters, digits, '-', '_', '.')",
    ),
    (["--node-ttl", "0"], "--node-ttl: '0' is not a number greater than 0"),
    (
        ["--log-level", "loud"],
        "--log-level: 'loud' is not one of debug, info, warn, error, critical",
    ),
    (
        ["--shutdown-timeout", "0"],
        "--shutdown-timeout: '0' is not a number greater than 0",
    ),
    (
        ["--metrics", "tcp:interface=127.0.0.1"],
        "invalid --metrics 'tcp:interface=127.0.0.1': no port given",
    ),
    (["--max-line"], "option --max-line requires argument"),
    (["--no-such-option"], "option --no-such-option not recognized"),
]


@pytest.mark.parametrize(("args", "why"), WRONG)
def test_wrong_option(args: list[str], why: str) -> None:
    """A wrong option ends the program with one line naming it and saying why."""
    with pytest.raises(StartupError) as caught:
        parse(*args)
    assert str(caught.value) == f"twistd chat: {why} (see twistd chat --help)"


def test_disable_plugin_matching_nothing() -> None:
    """--disable-plugin naming no command or filter stops the start in one line."""
    with pytest.raises(StartupError) as caught:
        parse("--disable-plugin", "msg", "--disable-plugin", "/NoSuch")
    message = str(caught.value)
    assert message.startswith(
        "twistd chat: --disable-plugin nosuch: there is no command or filter "
        "of that name (there are: away, ban, "
    )
    assert ", msg, " in message
    assert message.endswith(", who) (see twistd chat --help)")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("files", "why"),
    [
        ("", "no privateKey=FILE or certKey=FILE given (the key and certificate)"),
        (
            ":certKey={cert}",
            "no privateKey=FILE given (the key of the certKey certificate)",
        ),
        (
            ":privateKey={key}",
            "no certKey=FILE given, and the privateKey file does not hold both "
            "the key and its certificate",
        ),
    ],
)
def test_tls_key_file_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: str, why: str
) -> None:
    """An ssl: endpoint lacking a key file's parameter names that parameter.

    Twisted would name server.pem, a file the user never named.
    """
    monkeypatch.chdir(tmp_path)
    cert = make_server_cert(make_ca(tmp_path / "ca"))
    description = "ssl:6697" + files.format(key=cert.key_path, cert=cert.cert_path)
    with pytest.raises(StartupError) as caught:
        parse("--port", description)
    assert str(caught.value) == (
        f"twistd chat: invalid --port {description!r}: {why} (see twistd chat --help)"
    )


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints chatservice's version and exits 0."""
    with pytest.raises(SystemExit) as caught:
        parse("--version")
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"chatservice {__version__}\n"


def test_make_service() -> None:
    """MakeService builds a chat service with one endpoint per --port."""
    service = makeService(
        parse("--port", "tcp:0", "--port", "tcp:0:interface=127.0.0.1")
    )
    assert isinstance(service, ChatService)
    assert [description for description, _ in service.endpoints] == [
        "tcp:0",
        "tcp:0:interface=127.0.0.1",
    ]


def test_metrics_option() -> None:
    """--metrics ENDPOINT reaches the service; without it, none is served."""
    service = makeService(parse("--metrics", "tcp:0:interface=127.0.0.1"))
    assert service.metrics is not None
    assert service.metrics[0] == "tcp:0:interface=127.0.0.1"
    assert makeService(parse()).metrics is None


def test_cluster_options() -> None:
    """--redis makes the service's registry a cluster node's."""
    from chatservice.cluster import ClusterRegistry

    options = parse(
        "--redis",
        "redis://10.0.0.5/2",
        "--cluster",
        "eu-1",
        "--node-ttl",
        "30",
        "--store",
        PG,
    )
    registry = makeService(options).factory.registry
    assert isinstance(registry, ClusterRegistry)
    assert (registry.link.host, registry.link.port, registry.link.db) == (
        "10.0.0.5",
        6379,
        2,
    )
    assert registry.cluster == "eu-1"


def option_tables(path: Path) -> dict[str, str]:
    """Each option in C{path}'s "| Option | Default | Meaning |" tables, with its default."""
    rows = {}
    in_table = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line == "| Option | Default | Meaning |":
            in_table = True
        elif not line.startswith("|"):
            in_table = False
        elif in_table and line.startswith("| `"):
            option, default = line.split(" | ")[:2]
            for name in re.findall(r"`(?:-\w, )?--([\w-]+)", option):
                rows[name] = default
    return rows


@pytest.mark.parametrize("document", ["README.md", "docs/deployment.md"])
def test_documented_defaults(document: str) -> None:
    """The documents' tables of options show each option's true default."""
    declared = {option.name: option.shown(each.default) for each, option in options()}
    rows = option_tables(ROOT / document)
    assert rows
    for name, default in rows.items():
        if name == "version":
            continue
        shown = declared[name]
        if shown == "none":
            assert default.startswith("none"), name
        else:
            assert default == f"`{shown}`", name


def test_readme_lists_every_option() -> None:
    """README's table of options lists every option, and --version."""
    assert set(option_tables(ROOT / "README.md")) == {
        option.name for _, option in options()
    } | {"version"}


def test_readme_names_the_numbers_that_may_be_0() -> None:
    """README names exactly the numeric options that accept 0."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    sentence = text.split("Every number must be greater than 0, except ")[1]
    named = set(re.findall(r"`--([\w-]+)`", sentence.split("which may be 0")[0]))
    may_be_0 = set()
    for _, option in options():
        try:
            zero = option.parse("0")
        except ValueError:
            continue
        if isinstance(zero, int | float):
            may_be_0.add(option.name)
    assert named == may_be_0


@pytest.mark.parametrize(
    ("given", "parsed"),
    [
        ("tcp:8000", "tcp:8000:backlog=4096"),
        ("tcp:8000:interface=127.0.0.1", "tcp:8000:interface=127.0.0.1:backlog=4096"),
        ("tcp6:8000", "tcp6:8000:backlog=4096"),
        ("unix:/run/chat.sock:mode=660", "unix:/run/chat.sock:mode=660:backlog=4096"),
        ("tcp:8000:backlog=128", "tcp:8000:backlog=128"),
        ("systemd:domain=INET:index=0", "systemd:domain=INET:index=0"),
    ],
)
def test_listeners_get_a_backlog_for_a_storm(given: str, parsed: str) -> None:
    """A stream listener without a backlog gets 4096, not Twisted's 50."""
    assert with_backlog(given) == parsed


def test_the_backlog_reaches_the_listener() -> None:
    """--port tcp:N listens with the backlog of 4096; an explicit one is kept."""
    reactor = MemoryReactor()
    for description in ("tcp:8000", "tcp:8001:backlog=128"):
        endpoint = _parse_endpoint(reactor, description)
        endpoint.listen(Factory())  # type: ignore[attr-defined]
    assert [(port, backlog) for port, _, backlog, _ in reactor.tcpServers] == [
        (8000, 4096),
        (8001, 128),
    ]
