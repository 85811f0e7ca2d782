"""Every setting of a chat server, declared once: its default, option and help.

Each field of L{Settings} that C{twistd chat} takes on its command line
carries an L{Option} (made with L{setting}): the option's name, its help text
and the function that turns the text given into the value.  L{chatservice.tap}
builds the command line from them, C{--help} included, and the README's table
of options is checked against them (C{tests/test_tap.py}).  Adding an option
is adding a field here, a row to that table, and whatever reads the setting.
"""

import math
from collections.abc import Callable, Iterator
from dataclasses import Field, dataclass, field, fields, replace
from typing import Any

from .logs import LEVELS

DEFAULT_PORT = "tcp:8000"

#: The longest TCP_KEEPIDLE Linux accepts.
MAX_KEEPALIVE = 32767


@dataclass(frozen=True, slots=True)
class Option:
    """How a setting is given on the command line of C{twistd chat}."""

    #: The long option's name, without its dashes (C{idle-timeout}).
    name: str
    #: What C{--help} says of it.
    help: str
    #: Turns the text given into the setting's value; raises ValueError with
    #: a message that quotes the text and says what is wrong with it.
    parse: Callable[[str], Any]
    #: A one-letter synonym, or None.
    short: str | None = None
    #: Given once per value, as often as wanted: the setting is the values
    #: given, collected in its default's type (a tuple, a frozenset), or its
    #: default when none is given.
    repeat: bool = False
    #: What C{--help} says the default is, for a default that is nothing
    #: (None, or no values); None says nothing.
    unset: str | None = None

    def shown(self, default: object) -> str:
        """C{default} as C{--help} and the README show it."""
        if default is None or default in (frozenset(), ()):
            return "none"
        if isinstance(default, tuple):
            return ", ".join(default)
        return str(default)


def setting(
    default: object,
    help: str,
    parse: Callable[[str], Any],
    *,
    name: str | None = None,
    short: str | None = None,
    repeat: bool = False,
    unset: str | None = None,
) -> Any:
    """A field of L{Settings} given as the option C{--NAME}.

    C{name} defaults to the field's name with C{-} for C{_}; it is filled in
    by L{options}.
    """
    option = Option(name or "", help, parse, short, repeat, unset)
    return field(default=default, metadata={"option": option})


def options() -> Iterator[tuple[Field[Any], Option]]:
    """Each field of L{Settings} that is an option, with its L{Option}."""
    for each in fields(Settings):
        option = each.metadata.get("option")
        if option is not None:
            if not option.name:
                option = replace(option, name=each.name.replace("_", "-"))
            yield each, option


# The converters: each takes the text given and returns the value, or raises
# ValueError saying what is wrong (tap.py puts the option's name before it).
# The coerceDoc of each is what --help adds after the default.


def _number(kind: Callable[[str], float], text: str, what: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"{text!r} is not {what}") from None
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not {what}")
    return value


def positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    """A converter to a C{kind} (int or float) greater than 0."""

    def coerce(text: str) -> float:
        value = _number(kind, text, "a number")
        if not value > 0:
            raise ValueError(f"{text!r} is not a number greater than 0")
        return value

    coerce.coerceDoc = "Must be greater than 0."  # type: ignore[attr-defined]
    return coerce


def non_negative(text: str) -> int:
    """A whole number, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


non_negative.coerceDoc = "Must be 0 or more."  # type: ignore[attr-defined]


def seconds_or_zero(text: str) -> float:
    """A number of seconds, 0 or more."""
    value = _number(float, text, "a number")
    if not value >= 0:
        raise ValueError(f"{text!r} is not a number of seconds (0 or more)")
    return value


seconds_or_zero.coerceDoc = "0 or more."  # type: ignore[attr-defined]


def keepalive_seconds(text: str) -> int:
    """Whole seconds that Linux takes as TCP_KEEPIDLE, or 0."""
    value = non_negative(text)
    if value > MAX_KEEPALIVE:
        raise ValueError(f"{text!r} is more than {MAX_KEEPALIVE} seconds")
    return value


keepalive_seconds.coerceDoc = f"Whole seconds, 0 to {MAX_KEEPALIVE}."  # type: ignore[attr-defined]


def redis_url(text: str) -> str:
    """C{redis://HOST[:PORT][/DB]}, checked."""
    # Imported here: the cluster package imports this module.
    from .cluster.link import parse_redis_url

    parse_redis_url(text)  # raises RedisURLError, a ValueError, saying why
    return text


redis_url.coerceDoc = "redis://HOST[:PORT][/DB]."  # type: ignore[attr-defined]


def store_url(text: str) -> str:
    """C{sqlite:PATH}, C{sqlite::memory:} or C{postgresql://...}, checked."""
    from .store.url import parse_store_url

    parse_store_url(text)  # raises ValueError saying why
    return text


store_url.coerceDoc = (  # type: ignore[attr-defined]
    "sqlite:PATH (relative to the working directory), sqlite::memory: "
    "(nothing kept) or postgresql://USER:PASSWORD@HOST:PORT/DATABASE."
)


def cluster_name(text: str) -> str:
    """Letters, digits, C{-}, C{_} and C{.}."""
    if not text or not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError(
            f"{text!r} is not a cluster name (letters, digits, '-', '_', '.')"
        )
    return text


def log_level_name(text: str) -> str:
    """The name of a log level, in any case."""
    level = text.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LEVELS)}")
    return level


log_level_name.coerceDoc = "One of " + ", ".join(LEVELS) + "."  # type: ignore[attr-defined]


def endpoint(text: str) -> str:
    """A server endpoint string; a bare number means C{tcp:NUMBER}.

    The string itself is checked by L{chatservice.tap}, which needs a reactor.
    """
    return f"tcp:{text}" if text.isdigit() else text


def plugin_name(text: str) -> str:
    """A command's or filter's name, with or without its C{/}, in any case."""
    return text.lstrip("/").lower()


def path(text: str) -> str:
    """A file's name, as given."""
    return text


def web_origin(text: str) -> str:
    """C{http(s)://HOST[:PORT]}: the origin of a page, as browsers send it."""
    from urllib.parse import urlsplit

    origin = text.strip().rstrip("/").lower()
    try:
        parts = urlsplit(origin)
    except ValueError:
        parts = None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
    ):
        raise ValueError(f"{text!r} is not an origin like https://chat.example.com")
    return origin


def network(text: str) -> str:
    """An IP address or network (C{10.0.0.0/8}, C{::1})."""
    import ipaddress

    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address or network") from None


positive_number = positive(float)
positive_count = positive(int)


@dataclass(frozen=True, slots=True)
class Settings:
    """The knobs of one chat server; C{twistd chat --help} documents each one.

    Times are in seconds, sizes in bytes.  A field made with L{setting} is an
    option of C{twistd chat}; its help is its documentation.
    """

    endpoints: tuple[str, ...] = setting(
        (DEFAULT_PORT,),
        "Listen on ENDPOINT, a Twisted server endpoint string such as "
        "tcp:8000:interface=127.0.0.1, ssl:6697:privateKey=KEY:certKey=CERT or "
        "unix:/run/chat.sock; a bare number means tcp:NUMBER. Repeat for several "
        "listeners.",
        endpoint,
        name="port",
        short="p",
        repeat=True,
    )
    # The frame front end (chatservice.frontends.frames, docs/frames.md).
    frames: tuple[str, ...] = setting(
        (),
        "Serve the frame protocol (length-prefixed JSON, for programs; see "
        "docs/frames.md) on ENDPOINT, an endpoint string as for --port. "
        "Repeat for several listeners.",
        endpoint,
        repeat=True,
        unset="none",
    )
    max_frame: int = setting(
        65536,
        "Longest frame body (or WebSocket message, with --web) in bytes a "
        "client may send; a longer one gets an error and the connection is "
        "closed.",
        positive_count,
    )
    heartbeat: float = setting(
        30.0,
        "Send a frame client a PING (a web client a WebSocket ping) after "
        "this long without a frame from it, and disconnect it if nothing "
        "comes within as long again; 0: never.",
        seconds_or_zero,
    )
    # People who only read are silent for hours: dead peers are found by
    # keepalive instead.
    idle_timeout: float = setting(
        0.0,
        "Disconnect a registered user who sends nothing for this long; "
        "0: never (people who only read stay; --keepalive finds dead peers).",
        seconds_or_zero,
    )
    # See chatservice.system.keepalive_options for the socket options.
    keepalive: int = setting(
        60,
        "TCP keepalive: probe a TCP connection silent for this long; a peer "
        "that vanished (or stopped acknowledging output) is dropped within "
        "about twice this. 0: no keepalive.",
        keepalive_seconds,
    )
    register_timeout: float = setting(
        30.0,
        "Disconnect a connection that has not chosen a nickname after this long.",
        positive_number,
    )
    max_line: int = setting(
        2048,
        "Longest accepted input line in bytes; longer lines are refused "
        "with an error and discarded.",
        positive_count,
    )
    # Beyond the transport's own buffer.
    max_sendq: int = setting(
        1024 * 1024,
        "Disconnect a client when more than this many bytes of output "
        "wait for it (it stopped reading).",
        positive_count,
    )
    max_clients: int = setting(
        10_000, "Most connections served at once; more are refused.", positive_count
    )
    max_per_ip: int = setting(
        100, "Most connections served at once from one IP address.", positive_count
    )
    flood_rate: float = setting(
        5.0,
        "Lines per second a connection may send over time; past it (and "
        "the burst) the server reads its lines more slowly, losing none. "
        "Operators are exempt.",
        positive_number,
    )
    flood_burst: int = setting(
        10,
        "Lines a connection may send at once before --flood-rate applies.",
        positive_count,
    )
    max_connect_rate: float = setting(
        10.0,
        "New connections per second accepted from one IP address; more are refused.",
        positive_number,
    )
    operators: str | None = setting(
        None,
        "A file of operators, one 'NAME HASH' line each (make one with "
        "chatservice-oper NAME); re-read on SIGHUP.",
        path,
    )
    bans: str | None = setting(
        None,
        "A file where operators' bans are kept across restarts (created "
        "if missing; written atomically).",
        path,
    )
    resume_grace: float = setting(
        60.0,
        "How long the nickname of a dropped connection (not /quit) is held "
        "for /resume, keeping the lines it misses; 0 turns resuming off.",
        seconds_or_zero,
    )
    resume_buffer: int = setting(
        200,
        "Lines kept for a dropped session; beyond it the oldest are dropped.",
        positive_count,
    )
    resume_buffer_bytes: int = setting(
        64 * 1024,
        "Bytes kept for a dropped session; beyond it the oldest lines are dropped.",
        positive_count,
    )
    identify_grace: float = setting(
        30.0,
        "Seconds a user who takes a registered nickname has to /identify "
        "before being renamed to a guest name.",
        positive_number,
    )
    history: int = setting(
        50,
        "Lines of chat each room keeps and shows to people who join (0: none).",
        non_negative,
    )
    history_days: int = setting(
        30,
        "Days a room's lines are kept in the store (for the scrollback, "
        "/history and /search); older ones are deleted at start and daily.",
        positive_count,
    )
    announce_max: int = setting(
        100,
        "Joins and leaves are announced only in rooms with at most this many "
        "members (0: in none).",
        non_negative,
    )
    redis: str | None = setting(
        None,
        "redis://HOST[:PORT][/DB]: run as a node of the cluster that shares "
        "this Redis database; users on every node see one server.",
        redis_url,
        unset="no cluster",
    )
    store: str = setting(
        "sqlite:chatservice.db",
        "Where the server keeps what survives a restart (room history, "
        "accounts): a SQLite file, or with --redis the PostgreSQL database "
        "every node shares. See docs/deployment.md.",
        store_url,
    )
    cluster: str = setting(
        "chat",
        "The cluster's name, with --redis: nodes with the same name and "
        "Redis database are one server.",
        cluster_name,
    )
    # A node renews its heartbeat every quarter of this.
    node_ttl: float = setting(
        15.0,
        "With --redis: seconds after which the users of a node that stopped "
        "(killed, or cut off from Redis) are gone from the other nodes.",
        positive_number,
    )
    log_level: str = setting(
        "info",
        "The least level of chatservice's own events that are logged: "
        "debug, info, warn, error or critical. warn leaves out the "
        "per-connection events.",
        log_level_name,
    )
    motd: str | None = setting(
        None,
        "A UTF-8 text file shown to users after they register; re-read on SIGHUP.",
        path,
    )
    # Also how long a connection closed for any reason may take.
    shutdown_timeout: float = setting(
        5.0,
        "How long a closing connection may take to send what it was told "
        "(on /quit, a timeout, or SIGTERM/SIGINT shutdown) before it is "
        "aborted.",
        positive_number,
    )
    metrics: str | None = setting(
        None,
        "Serve Prometheus metrics over HTTP at /metrics on ENDPOINT, an endpoint "
        "string as for --port (a bare number means tcp:NUMBER, every address): "
        "bind it to loopback or a private interface, e.g. "
        "tcp:9100:interface=127.0.0.1.",
        endpoint,
        unset="off",
    )
    # The web front end (chatservice.frontends.web, docs/web.md).
    web: tuple[str, ...] = setting(
        (),
        "Serve the chat page (at /) and its WebSocket (at /ws) over HTTP on "
        "ENDPOINT, an endpoint string as for --port (ssl:... for HTTPS). "
        "Repeat for several listeners.",
        endpoint,
        repeat=True,
        unset="off",
    )
    web_origin: tuple[str, ...] = setting(
        (),
        "A page origin (https://chat.example.com) whose scripts may open the "
        "chat's WebSocket; repeat for several. Default: only the page's own.",
        web_origin,
        repeat=True,
        unset="the page's own",
    )
    trusted_proxy: tuple[str, ...] = setting(
        (),
        "An address or network (10.0.0.0/8) of a reverse proxy whose "
        "X-Forwarded-For header names the web client; repeat for several.",
        network,
        repeat=True,
        unset="none",
    )
    disabled_plugins: frozenset[str] = setting(
        frozenset(),
        "Leave out the command, message filter or session hooks called NAME "
        "(a plugin or a built-in command). Repeat for several.",
        plugin_name,
        name="disable-plugin",
        repeat=True,
    )
    # The IRC front end (chatservice.frontends.irc, docs/irc.md).
    irc: tuple[str, ...] = setting(
        (),
        "Serve IRC clients (irssi, WeeChat, HexChat, bots; see docs/irc.md) "
        "on ENDPOINT, an endpoint string as for --port, such as tcp:6667. "
        "Repeat for several listeners.",
        endpoint,
        repeat=True,
        unset="none",
    )
    # IRC clients answer a server's PING on their own: a quiet one is
    # asked, and one that does not answer is gone.
    irc_ping: float = setting(
        120.0,
        "Send PING to an IRC client (--irc) that has sent nothing for this "
        "long, and disconnect it if it sends nothing for as long again; "
        "0: never.",
        seconds_or_zero,
    )
    #: How long a command may take before it is cancelled (no option).
    command_timeout: float = 30.0
    #: Bytes of private messages (as sent, C{*nick* text} and CRLF) one user
    #: may be sent per second by everyone else together; beyond it /msg is
    #: refused to the sender.  16 KiB/s is a twentieth of what a reader on a
    #: slow link (a few hundred KB/s) takes, and over 100 ordinary messages.
    #: (No option.)
    private_rate: float = 16 * 1024
    #: Bytes of private messages one user may be sent at once before
    #: C{private_rate} applies: ten of the longest lines.  (No option.)
    private_burst: int = 64 * 1024
