"""twistd glue: C{twistd chat} options, turned into a running service.

Everything is validated here, endpoint strings included; below this module
nobody sees C{usage.Options}.  An invalid option ends twistd with one line
naming it, not the whole help text.
"""

import math
from collections.abc import Callable

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from . import __version__
from .cluster import ClusterRegistry, parse_redis_url
from .config import DEFAULT_PORT, Settings
from .errors import StartupError
from .extensions import Extensions, load_extensions
from .factory import ChatFactory
from .logs import LEVELS
from .service import ChatService

_DEFAULTS = Settings()


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    def coerce(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{text!r} is not a number") from None
        if not value > 0 or not math.isfinite(value):
            raise ValueError(f"{text!r} is not a number greater than 0")
        return value

    coerce.coerceDoc = "Must be greater than 0."  # type: ignore[attr-defined]
    return coerce


def _redis_url(text: str) -> str:
    parse_redis_url(text)  # raises RedisURLError, a ValueError, saying why
    return text


_redis_url.coerceDoc = "redis://HOST[:PORT][/DB]."  # type: ignore[attr-defined]


def _cluster_name(text: str) -> str:
    if not text or not all(c.isalnum() or c in "-_." for c in text):
        raise ValueError(
            f"{text!r} is not a cluster name (letters, digits, '-', '_', '.')"
        )
    return text


def _log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in LEVELS:
        raise ValueError(f"{text!r} is not one of {', '.join(LEVELS)}")
    return level


_log_level.coerceDoc = "One of " + ", ".join(LEVELS) + "."  # type: ignore[attr-defined]


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise ValueError(f"{text!r} is negative")
    return value


_non_negative.coerceDoc = "Must be 0 or more."  # type: ignore[attr-defined]

_seconds = _positive(float)
_count = _positive(int)


def _seconds_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a number") from None
    if not value >= 0 or not math.isfinite(value):
        raise ValueError(f"{text!r} is not a number of seconds (0 or more)")
    return value


_seconds_or_zero.coerceDoc = "0 or more."  # type: ignore[attr-defined]

#: The longest TCP_KEEPIDLE Linux accepts.
_MAX_KEEPALIVE = 32767


def _keepalive(text: str) -> int:
    value = _non_negative(text)
    if value > _MAX_KEEPALIVE:
        raise ValueError(f"{text!r} is more than {_MAX_KEEPALIVE} seconds")
    return value


_keepalive.coerceDoc = (  # type: ignore[attr-defined]
    f"Whole seconds, 0 to {_MAX_KEEPALIVE}."
)


class Options(usage.Options):
    """The command line of C{twistd chat}."""

    synopsis = "[--port ENDPOINT]... [options]"
    longdesc = (
        "A chat server for telnet and netcat users. Connect, type a nickname, "
        "and talk; type /help for the commands. Times are in seconds."
    )

    optParameters = [
        [
            "idle-timeout",
            None,
            _DEFAULTS.idle_timeout,
            "Disconnect a registered user who sends nothing for this long; "
            "0: never (people who only read stay; --keepalive finds dead peers).",
            _seconds_or_zero,
        ],
        [
            "keepalive",
            None,
            _DEFAULTS.keepalive,
            "TCP keepalive: probe a TCP connection silent for this long; a peer "
            "that vanished (or stopped acknowledging output) is dropped within "
            "about twice this. 0: no keepalive.",
            _keepalive,
        ],
        [
            "register-timeout",
            None,
            _DEFAULTS.register_timeout,
            "Disconnect a connection that has not chosen a nickname after this long.",
            _seconds,
        ],
        [
            "max-line",
            None,
            _DEFAULTS.max_line,
            "Longest accepted input line in bytes; longer lines are refused "
            "with an error and discarded.",
            _count,
        ],
        [
            "max-sendq",
            None,
            _DEFAULTS.max_sendq,
            "Disconnect a client when more than this many bytes of output "
            "wait for it (it stopped reading).",
            _count,
        ],
        [
            "max-clients",
            None,
            _DEFAULTS.max_clients,
            "Most connections served at once; more are refused.",
            _count,
        ],
        [
            "max-per-ip",
            None,
            _DEFAULTS.max_per_ip,
            "Most connections served at once from one IP address.",
            _count,
        ],
        [
            "flood-rate",
            None,
            _DEFAULTS.flood_rate,
            "Lines per second a connection may send over time; past it (and "
            "the burst) the server reads its lines more slowly, losing none. "
            "Operators are exempt.",
            _seconds,
        ],
        [
            "flood-burst",
            None,
            _DEFAULTS.flood_burst,
            "Lines a connection may send at once before --flood-rate applies.",
            _count,
        ],
        [
            "max-connect-rate",
            None,
            _DEFAULTS.max_connect_rate,
            "New connections per second accepted from one IP address; more "
            "are refused.",
            _seconds,
        ],
        [
            "operators",
            None,
            None,
            "A file of operators, one 'NAME HASH' line each (make one with "
            "chatservice-oper NAME); re-read on SIGHUP.",
        ],
        [
            "bans",
            None,
            None,
            "A file where operators' bans are kept across restarts (created "
            "if missing; written atomically).",
        ],
        [
            "resume-grace",
            None,
            _DEFAULTS.resume_grace,
            "How long the nickname of a dropped connection (not /quit) is held "
            "for /resume, keeping the lines it misses; 0 turns resuming off.",
            _seconds_or_zero,
        ],
        [
            "resume-buffer",
            None,
            _DEFAULTS.resume_buffer,
            "Lines kept for a dropped session; beyond it the oldest are dropped.",
            _count,
        ],
        [
            "resume-buffer-bytes",
            None,
            _DEFAULTS.resume_buffer_bytes,
            "Bytes kept for a dropped session; beyond it the oldest lines are dropped.",
            _count,
        ],
        [
            "history",
            None,
            _DEFAULTS.history,
            "Lines of chat each room keeps and shows to people who join (0: none).",
            _non_negative,
        ],
        [
            "announce-max",
            None,
            _DEFAULTS.announce_max,
            "Joins and leaves are announced only in rooms with at most this many "
            "members (0: in none).",
            _non_negative,
        ],
        [
            "redis",
            None,
            None,
            "redis://HOST[:PORT][/DB]: run as a node of the cluster that shares "
            "this Redis database; users on every node see one server. "
            "[default: no cluster]",
            _redis_url,
        ],
        [
            "cluster",
            None,
            _DEFAULTS.cluster,
            "The cluster's name, with --redis: nodes with the same name and "
            "Redis database are one server.",
            _cluster_name,
        ],
        [
            "node-ttl",
            None,
            _DEFAULTS.node_ttl,
            "With --redis: seconds after which the users of a node that stopped "
            "(killed, or cut off from Redis) are gone from the other nodes.",
            _seconds,
        ],
        [
            "log-level",
            None,
            _DEFAULTS.log_level,
            "The least level of chatservice's own events that are logged: "
            "debug, info, warn, error or critical. warn leaves out the "
            "per-connection events.",
            _log_level,
        ],
        [
            "motd",
            None,
            None,
            "A UTF-8 text file shown to users after they register; re-read on SIGHUP.",
        ],
        [
            "shutdown-timeout",
            None,
            _DEFAULTS.shutdown_timeout,
            "How long a closing connection may take to send what it was told "
            "(on /quit, a timeout, or SIGTERM/SIGINT shutdown) before it is "
            "aborted.",
            _seconds,
        ],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["port"] = []
        self["disable-plugin"] = []
        self["metrics"] = None

    def opt_disable_plugin(self, name: str) -> None:  # noqa: D102 - doc set below
        self["disable-plugin"].append(name.lstrip("/").lower())

    opt_disable_plugin.__doc__ = (
        "Leave out the command or message filter called NAME (a plugin or a "
        "built-in command). Repeat for several."
    )

    def opt_version(self) -> None:
        """Print chatservice's version and exit."""
        print(f"chatservice {__version__}")
        raise SystemExit(0)

    def opt_port(self, description: str) -> None:  # noqa: D102 - doc set below
        if description.isdigit():
            description = f"tcp:{description}"
        self["port"].append(description)

    # usage.Options shows an opt_ method's docstring as its --help text.
    opt_port.__doc__ = (
        "Listen on ENDPOINT, a Twisted server endpoint string such as "
        "tcp:8000:interface=127.0.0.1, ssl:6697:privateKey=KEY:certKey=CERT or "
        "unix:/run/chat.sock; a bare number means tcp:NUMBER. Repeat for several "
        "listeners. [default: tcp:8000]"
    )
    opt_p = opt_port

    def opt_metrics(self, description: str) -> None:  # noqa: D102 - doc set below
        if description.isdigit():
            description = f"tcp:{description}"
        self["metrics"] = description

    opt_metrics.__doc__ = (
        "Serve Prometheus metrics over HTTP at /metrics on ENDPOINT, an endpoint "
        "string as for --port (a bare number means tcp:NUMBER, every address): "
        "bind it to loopback or a private interface, e.g. "
        "tcp:9100:interface=127.0.0.1. [default: off]"
    )

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, turning any error into one line for the operator."""
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            raise StartupError(
                f"twistd chat: {error} (see twistd chat --help)"
            ) from None

    def postOptions(self) -> None:
        """Check every endpoint string and build the L{Settings}."""
        from twisted.internet import reactor

        self["port"] = self["port"] or [DEFAULT_PORT]
        self["endpoints"] = [
            (description, _parse_endpoint(reactor, description))
            for description in self["port"]
        ]
        self["metrics-endpoint"] = None
        if self["metrics"] is not None:
            self["metrics-endpoint"] = (
                self["metrics"],
                _parse_endpoint(reactor, self["metrics"], "--metrics"),
            )
        self["extensions"] = _extensions(frozenset(self["disable-plugin"]))
        self["settings"] = Settings(
            endpoints=tuple(self["port"]),
            idle_timeout=self["idle-timeout"],
            keepalive=self["keepalive"],
            register_timeout=self["register-timeout"],
            max_line=self["max-line"],
            max_sendq=self["max-sendq"],
            max_clients=self["max-clients"],
            max_per_ip=self["max-per-ip"],
            history=self["history"],
            announce_max=self["announce-max"],
            disabled_plugins=frozenset(self["disable-plugin"]),
            motd=self["motd"],
            shutdown_timeout=self["shutdown-timeout"],
            flood_rate=self["flood-rate"],
            flood_burst=self["flood-burst"],
            max_connect_rate=self["max-connect-rate"],
            operators=self["operators"],
            bans=self["bans"],
            resume_grace=self["resume-grace"],
            resume_buffer=self["resume-buffer"],
            resume_buffer_bytes=self["resume-buffer-bytes"],
            metrics=self["metrics"],
            log_level=self["log-level"],
            redis=self["redis"],
            cluster=self["cluster"],
            node_ttl=self["node-ttl"],
        )


def _extensions(disabled: frozenset[str]) -> Extensions:
    """Find the plugins; a C{--disable-plugin} naming none stops the start."""
    extensions = load_extensions(disabled)
    if extensions.unmatched:
        names = ", ".join(extensions.unmatched)
        known = ", ".join(
            sorted(
                {
                    *extensions.commands,
                    *(str(f.name) for f in extensions.filters),
                    *(name.lstrip("/") for name in extensions.disabled),
                }
            )
        )
        which = "that name" if len(extensions.unmatched) == 1 else "those names"
        raise usage.UsageError(
            f"--disable-plugin {names}: there is no command or filter of {which} "
            f"(there are: {known})"
        )
    return extensions


def _parse_endpoint(
    reactor: object, description: str, option: str = "--port"
) -> object:
    """Parse one endpoint string, or raise a readable L{usage.UsageError}."""
    try:
        endpoint = serverFromString(reactor, description)
        # Twisted builds a TLS context at the first connection; build it now,
        # so that a bad file (dhParameters=...) stops the start instead of
        # failing every connection.
        context_factory = getattr(endpoint, "_sslContextFactory", None)
        if context_factory is not None:
            context_factory.getContext()
        return endpoint
    except TypeError as error:
        # e.g. "tcp:interface=::1" (no port): Python's message names a
        # private parser function, which helps nobody.
        why = "missing or unknown parameters"
        if "required positional argument: 'port'" in str(error):
            why = "no port given"
        elif "unexpected keyword argument" in str(error):
            why = "unknown parameter " + str(error).rpartition(" ")[2]
        elif "multiple values" in str(error):
            why = "a parameter is given twice (quote ':' in IPv6 addresses as '\\:')"
    except OSError as error:
        why = f"{error.strerror or error}: {error.filename or ''}".rstrip(": ")
    except Exception as error:  # ValueError, IndexError, OpenSSL errors...
        why = str(error) or type(error).__name__
        if type(error).__name__ == "Error" and "routines" in why:
            # OpenSSL's raw error list, e.g. [('PEM routines', '', 'no start
            # line')]: say what it means.
            why = (
                "cannot load the key, certificate or parameters (a file that "
                f"is not PEM, or the wrong file?): OpenSSL says {why}"
            )
    raise usage.UsageError(f"invalid {option} {description!r}: {why}")


def makeService(options: Options) -> ChatService:
    """Build the chat service that C{twistd chat} runs."""
    settings = options["settings"]
    registry = None
    if settings.redis is not None:
        registry = ClusterRegistry(
            settings.redis,
            cluster=settings.cluster,
            node_ttl=settings.node_ttl,
            history=settings.history,
            announce_max=settings.announce_max,
            missed_bytes=settings.resume_buffer_bytes,
        )
    extensions = options["extensions"]
    factory = ChatFactory(settings, registry=registry, extensions=extensions)
    return ChatService(
        factory, options["endpoints"], options["metrics-endpoint"], extensions
    )
