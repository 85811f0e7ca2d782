"""The twistd command line: options, validation, and the service it makes."""

import pytest

from chatservice import __version__
from chatservice.config import Settings
from chatservice.errors import StartupError
from chatservice.service import ChatService
from chatservice.tap import Options, makeService


def parse(*args: str) -> Options:
    options = Options()
    options.parseOptions(list(args))
    return options


def test_defaults() -> None:
    """With no options: tcp:8000 and the documented defaults."""
    options = parse()
    assert options["settings"] == Settings()
    assert options["settings"].endpoints == ("tcp:8000",)


def test_idle_timeout_zero_is_never() -> None:
    """--idle-timeout 0 is accepted, and is the default: quiet readers stay."""
    assert parse("--idle-timeout", "0")["settings"].idle_timeout == 0
    assert parse()["settings"].idle_timeout == 0
    assert parse()["settings"].keepalive == 60


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


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """--version prints chatservice's version and exits 0."""
    with pytest.raises(SystemExit) as caught:
        parse("--version")
    assert caught.value.code == 0
    assert capsys.readouterr().out == f"chatservice {__version__}\n"


def test_all_options() -> None:
    """Every option reaches the settings."""
    settings = parse(
        "--port",
        "9000",
        "--port",
        "unix:/tmp/chat.sock",
        "--idle-timeout",
        "60",
        "--keepalive",
        "30",
        "--register-timeout",
        "5.5",
        "--max-line",
        "512",
        "--max-sendq",
        "65536",
        "--max-clients",
        "50",
        "--max-per-ip",
        "3",
        "--shutdown-timeout",
        "1",
        "--history",
        "0",
        "--announce-max",
        "7",
        "--motd",
        "/etc/motd",
        "--disable-plugin",
        "/MSG",
        "--disable-plugin",
        "away",
        "--flood-rate",
        "2.5",
        "--flood-burst",
        "4",
        "--max-connect-rate",
        "3",
        "--operators",
        "/etc/chat/operators",
        "--bans",
        "/var/lib/chat/bans.json",
        "--resume-grace",
        "0",
        "--resume-buffer",
        "50",
        "--metrics",
        "9100",
    )["settings"]
    assert settings == Settings(
        endpoints=("tcp:9000", "unix:/tmp/chat.sock"),
        idle_timeout=60,
        keepalive=30,
        register_timeout=5.5,
        max_line=512,
        max_sendq=65536,
        max_clients=50,
        max_per_ip=3,
        shutdown_timeout=1,
        history=0,
        announce_max=7,
        motd="/etc/motd",
        disabled_plugins=frozenset({"msg", "away"}),
        flood_rate=2.5,
        flood_burst=4,
        max_connect_rate=3,
        operators="/etc/chat/operators",
        bans="/var/lib/chat/bans.json",
        resume_grace=0,
        resume_buffer=50,
        metrics="tcp:9100",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--port", "foo:1"],
            "twistd chat: invalid --port 'foo:1': Unknown endpoint type: 'foo'",
        ),
        (
            ["--port", "tcp:interface=127.0.0.1"],
            "twistd chat: invalid --port 'tcp:interface=127.0.0.1': no port given",
        ),
        (
            ["--port", "tcp:abc"],
            "twistd chat: invalid --port 'tcp:abc': invalid literal for int() with base 10: 'abc'",
        ),
        (
            ["--port", "tcp:80:bogus=1"],
            "twistd chat: invalid --port 'tcp:80:bogus=1': unknown parameter 'bogus'",
        ),
        (
            ["--port", "ssl:6697:privateKey=/nonexistent.pem"],
            "twistd chat: invalid --port 'ssl:6697:privateKey=/nonexistent.pem': No such file or directory: /nonexistent.pem",
        ),
        (
            ["--metrics", "tcp:interface=127.0.0.1"],
            "twistd chat: invalid --metrics 'tcp:interface=127.0.0.1': no port given",
        ),
        (
            ["--idle-timeout", "-5"],
            "twistd chat: Parameter type enforcement failed: '-5' is not a number of seconds (0 or more) (see twistd chat --help)",
        ),
        (
            ["--keepalive", "1.5"],
            "twistd chat: Parameter type enforcement failed: '1.5' is not a whole number (see twistd chat --help)",
        ),
        (
            ["--keepalive", "40000"],
            "twistd chat: Parameter type enforcement failed: '40000' is more than 32767 seconds (see twistd chat --help)",
        ),
        (
            ["--max-line", "lots"],
            "twistd chat: Parameter type enforcement failed: 'lots' is not a number (see twistd chat --help)",
        ),
        (
            ["--resume-grace", "-1"],
            "twistd chat: Parameter type enforcement failed: '-1' is not a number of seconds (0 or more) (see twistd chat --help)",
        ),
        (
            ["--redis", "http://10.0.0.5:6379"],
            "twistd chat: Parameter type enforcement failed: 'http://10.0.0.5:6379' does not start with redis:// (see twistd chat --help)",
        ),
        (
            ["--redis", "redis://10.0.0.5/zero"],
            "twistd chat: Parameter type enforcement failed: 'redis://10.0.0.5/zero': the database must be a number, as in /0 (see twistd chat --help)",
        ),
        (
            ["--redis", "redis://:secret@10.0.0.5/0"],
            "twistd chat: Parameter type enforcement failed: 'redis://:secret@10.0.0.5/0': passwords in the URL are not supported (see twistd chat --help)",
        ),
        (
            ["--cluster", "a:b"],
            "twistd chat: Parameter type enforcement failed: 'a:b' is not a cluster name (letters, digits, '-', '_', '.') (see twistd chat --help)",
        ),
        (
            ["--no-such-option"],
            "twistd chat: option --no-such-option not recognized (see twistd chat --help)",
        ),
    ],
)
def test_bad_options_one_line(args: list[str], message: str) -> None:
    """A bad option ends the program with one line saying what is wrong."""
    with pytest.raises(StartupError) as caught:
        parse(*args)
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith(message.split(" (see")[0])


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


def test_log_level_option() -> None:
    """--log-level takes a level's name, in any case; others are refused."""
    assert parse("--log-level", "WARN")["settings"].log_level == "warn"
    assert parse()["settings"].log_level == "info"
    with pytest.raises(StartupError) as caught:
        parse("--log-level", "loud")
    assert "'loud' is not one of debug, info, warn, error, critical" in str(
        caught.value
    )


def test_cluster_options() -> None:
    """--redis makes the service's registry a cluster node's."""
    from chatservice.cluster import ClusterRegistry

    options = parse(
        "--redis", "redis://10.0.0.5/2", "--cluster", "eu-1", "--node-ttl", "30"
    )
    settings = options["settings"]
    assert (settings.redis, settings.cluster, settings.node_ttl) == (
        "redis://10.0.0.5/2",
        "eu-1",
        30.0,
    )
    registry = makeService(options).factory.registry
    assert isinstance(registry, ClusterRegistry)
    assert (registry.link.host, registry.link.port, registry.link.db) == (
        "10.0.0.5",
        6379,
        2,
    )
    assert registry.cluster == "eu-1"
    assert parse()["settings"].redis is None


def test_resume_buffer_bytes() -> None:
    """--resume-buffer-bytes sets the bytes a held session keeps; 0 is refused."""
    settings = parse("--resume-buffer-bytes", "4096")["settings"]
    assert settings.resume_buffer_bytes == 4096
    with pytest.raises(StartupError, match="'0' is not a number greater than 0"):
        parse("--resume-buffer-bytes", "0")
