"""twistd glue: C{twistd chat} options, turned into a running service.

Everything is validated here, endpoint strings included; below this module
nobody sees C{usage.Options}.  An invalid option ends twistd with one line
naming it, not the whole help text.
"""

import re
from collections.abc import Callable
from dataclasses import Field
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from . import __version__
from .cluster import ClusterRegistry
from .config import Option, Settings, options
from .errors import StartupError
from .extensions import Extensions, load_extensions
from .factory import ChatFactory
from .frontends import load_front_ends
from .interfaces import IFrontEnd
from .service import ChatService
from .store import Store


def _named(option: Option) -> Callable[[str], Any]:
    """C{option}'s converter, its errors naming the option.

    usage.Options turns a converter's ValueError into a bare "Parameter type
    enforcement failed: ..."; a UsageError passes through as it is.
    """

    def coerce(text: str) -> Any:
        try:
            return option.parse(text)
        except ValueError as error:
            raise usage.UsageError(f"--{option.name}: {error}") from None

    coerce.coerceDoc = getattr(option.parse, "coerceDoc", "")  # type: ignore[attr-defined]
    return coerce


def _help(option: Option, default: object, shown_by_usage: bool) -> str:
    """C{option}'s help, with its default unless usage.Options adds it."""
    if not default and option.unset is not None:
        return f"{option.help} [default: {option.unset}]"
    if default and not shown_by_usage:
        return f"{option.help} [default: {option.shown(default)}]"
    return option.help


def _parameter(each: Field[Any], option: Option) -> list[Any]:
    """The C{optParameters} entry of an option given once."""
    help = _help(option, each.default, shown_by_usage=True)
    return [option.name, option.short, each.default, help, _named(option)]


def _handler(each: Field[Any], option: Option) -> Callable[["Options", str], None]:
    """The C{opt_} method of an option given once per value."""
    coerce = _named(option)

    def handle(self: "Options", text: str) -> None:
        self[option.name].append(coerce(text))

    # usage.Options shows an opt_ method's docstring as its --help text.
    handle.__doc__ = _help(option, each.default, shown_by_usage=False)
    return handle


class Options(usage.Options):
    """The command line of C{twistd chat}, made from L{Settings}' fields.

    An option given once is an C{optParameters} entry; one given once per
    value (C{--port}) an C{opt_} method, added below the class.
    """

    synopsis = "[--port ENDPOINT]... [options]"
    longdesc = (
        "A chat server for telnet and netcat users. Connect, type a nickname, "
        "and talk; type /help for the commands. Times are in seconds."
    )

    optParameters = [
        _parameter(each, option) for each, option in options() if not option.repeat
    ]

    def __init__(self) -> None:
        super().__init__()
        for _, option in options():
            if option.repeat:
                self[option.name] = []
        for front_end in _FRONT_ENDS.values():
            if front_end.option not in _SETTINGS_OPTIONS:
                self[front_end.option] = []

    def opt_version(self) -> None:
        """Print chatservice's version and exit."""
        print(f"chatservice {__version__}")
        raise SystemExit(0)

    def parseOptions(self, options: list[str] | None = None) -> None:
        """Parse, turning any error into one line for the operator."""
        try:
            super().parseOptions(options)
        except usage.UsageError as error:
            raise StartupError(
                f"twistd chat: {error} (see twistd chat --help)"
            ) from None

    def postOptions(self) -> None:
        """Build the L{Settings}, and check every endpoint string."""
        from twisted.internet import reactor

        values = {}
        for each, option in options():
            value = self[option.name]
            if option.repeat:
                value = type(each.default)(value) or each.default
            values[each.name] = value
        settings = self["settings"] = Settings(**values)
        if settings.redis is not None and settings.store.startswith("sqlite:"):
            raise usage.UsageError(
                f"--redis needs --store postgresql://...: the nodes of a cluster "
                f"share one PostgreSQL database, not each a SQLite file "
                f"(--store {settings.store})"
            )
        self["endpoints"] = [
            (description, _parse_endpoint(reactor, description))
            for description in settings.endpoints
        ]
        self["metrics-endpoint"] = None
        if settings.metrics is not None:
            self["metrics-endpoint"] = (
                settings.metrics,
                _parse_endpoint(reactor, settings.metrics, "--metrics"),
            )
        self["extensions"] = _extensions(settings.disabled_plugins)
        self["front-ends"] = [
            (description, _parse_endpoint(reactor, description, option), front_end)
            for front_end in _FRONT_ENDS.values()
            if front_end.option != "port"  # the line front end: "endpoints"
            for option in [f"--{front_end.option}"]
            for description in self._endpoints_of(front_end, settings)
        ]

    def _endpoints_of(self, front_end: IFrontEnd, settings: Settings) -> list[str]:
        """Where C{front_end} listens: its option's endpoints, or its default."""
        field = _SETTINGS_OPTIONS.get(front_end.option)
        given = getattr(settings, field) if field else self[front_end.option]
        return list(given or front_end.default)


#: The front ends found by the plugin scan, and the options Settings has.
_FRONT_ENDS = load_front_ends()
_SETTINGS_OPTIONS = {option.name: each.name for each, option in options()}


def _endpoint_handler(front_end: IFrontEnd) -> Callable[["Options", str], None]:
    """The C{opt_} method of a front end's option that Settings lacks."""

    def handle(self: "Options", text: str) -> None:
        self[front_end.option].append(text)

    handle.__doc__ = str(front_end.help)
    return handle


for _front_end in _FRONT_ENDS.values():
    if _front_end.option not in _SETTINGS_OPTIONS:
        setattr(
            Options,
            "opt_" + str(_front_end.option).replace("-", "_"),
            _endpoint_handler(_front_end),
        )

for _each, _option in options():
    if _option.repeat:
        _handle = _handler(_each, _option)
        setattr(Options, "opt_" + _option.name.replace("-", "_"), _handle)
        if _option.short is not None:
            setattr(Options, "opt_" + _option.short, _handle)


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
                    *(str(h.name) for h in extensions.hooks),
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


#: The listen backlog of a stream listener whose endpoint names none.
#: Twisted's is 50: after a restart, when thousands of clients reconnect at
#: once, the kernel drops the connections that do not fit in it, and their
#: clients try again only 1, 3, 7, 15... seconds later (10,000 at once:
#: the last ones in after a minute, where 4096 lets them all in within
#: seconds; the benchmark's storm cell).  Linux caps it at
#: C{net.core.somaxconn} (4096 by default).
LISTEN_BACKLOG = 4096

#: The endpoint types that take a C{backlog} parameter.
_BACKLOG_TYPES = frozenset({"tcp", "tcp6", "ssl", "unix"})


def with_backlog(description: str) -> str:
    """C{description} with L{LISTEN_BACKLOG} unless it names a backlog itself."""
    kind, colon, rest = description.partition(":")
    if not colon or kind.lower() not in _BACKLOG_TYPES or "backlog=" in rest:
        return description
    return f"{description}:backlog={LISTEN_BACKLOG}"


def _parse_endpoint(
    reactor: object, description: str, option: str = "--port"
) -> object:
    """Parse one endpoint string, or raise a readable L{usage.UsageError}."""
    try:
        endpoint = serverFromString(reactor, with_backlog(description))
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
        why = _missing_tls_files(description, opened=True) or why
    except Exception as error:  # ValueError, IndexError, OpenSSL errors...
        why = str(error) or type(error).__name__
        if type(error).__name__ == "Error" and "routines" in why:
            # OpenSSL's raw error list, e.g. [('PEM routines', '', 'no start
            # line')]: say what it means.
            why = _missing_tls_files(description, opened=False) or (
                "cannot load the key, certificate or parameters (a file that "
                f"is not PEM, or the wrong file?): OpenSSL says {why}"
            )
    raise usage.UsageError(f"invalid {option} {description!r}: {why}")


def _missing_tls_files(description: str, opened: bool) -> str | None:
    """Why an C{ssl:} endpoint failed if it lacks a key file's parameter.

    Without C{privateKey=}, Twisted reads C{server.pem} in the current
    directory, and without C{certKey=} the certificate from the privateKey
    file: its own error names a file the user never named, or none.
    C{opened} is true when a file could not be opened, false when one could
    not be loaded.
    """
    # Parameters are separated by ':' but not '\:' (an escaped backslash,
    # '\\', set aside first, does not escape the ':' after it).
    unescaped = description.replace("\\\\", "\0")
    kind, *parameters = re.split(r"(?<!\\):", unescaped)
    given = {parameter.partition("=")[0] for parameter in parameters}
    if kind != "ssl":
        return None
    if "privateKey" not in given:
        if "certKey" not in given:
            return "no privateKey=FILE or certKey=FILE given (the key and certificate)"
        return "no privateKey=FILE given (the key of the certKey certificate)"
    if "certKey" not in given and not opened:
        return (
            "no certKey=FILE given, and the privateKey file does not hold "
            "both the key and its certificate"
        )
    return None


def makeService(options: Options) -> ChatService:
    """Build the chat service that C{twistd chat} runs."""
    settings = options["settings"]
    extensions = options["extensions"]
    store = Store(settings.store)  # opened when the service starts
    if settings.redis is None:
        factory = ChatFactory(settings, extensions=extensions, store=store)
    else:
        cluster = ClusterRegistry(
            settings.redis,
            cluster=settings.cluster,
            node_ttl=settings.node_ttl,
            history=settings.history,
            announce_max=settings.announce_max,
            missed_bytes=settings.resume_buffer_bytes,
        )
        factory = ChatFactory(
            settings,
            registry=cluster,
            extensions=extensions,
            shared_sessions=cluster.shared_sessions,
            shared_bans=cluster.shared_bans,
            shared_accounts=cluster.shared_accounts,
            store=store,
        )
    return ChatService(
        factory,
        options["endpoints"],
        options["metrics-endpoint"],
        extensions,
        options["front-ends"],
    )
