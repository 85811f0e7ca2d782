"""Finding the commands, message filters and hooks, built-in and third-party.

All are plugins found by Twisted's plugin system in the
L{chatservice.plugins} package.  A plugin module that cannot be imported, a
command whose name is taken, or a C{--disable-plugin} naming nothing, is
reported in one line and left out; the server starts without it (C{twistd
chat} itself refuses to start for the last: see L{chatservice.tap}).
L{log_extensions} says at start what was loaded, from which module of which
distribution.
"""

import contextlib
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from twisted import plugin
from twisted.logger import Logger
from twisted.plugin import getCache
from twisted.python.modules import getModule
from twisted.python.reflect import namedAny
from zope.interface import Interface
from zope.interface.exceptions import BrokenImplementation, Invalid, MultipleInvalid
from zope.interface.verify import verifyObject

from .interfaces import ICommand, IMessageFilter, ISessionHooks
from .logs import gate

log = Logger(observer=gate)

BUILTIN = "chatservice.plugins.builtin"


@dataclass(frozen=True)
class Source:
    """One plugin module in use, and what it gave."""

    #: The module's name, e.g. C{chatservice.plugins.dice}.
    module: str
    #: The module's file, if it has one.
    path: str | None
    #: Its commands and filters in use, by name.
    commands: tuple[str, ...] = ()
    filters: tuple[str, ...] = ()
    #: Its session hooks plugins in use, by name.
    hooks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Extensions:
    """The commands, filters and hooks a server uses, and what was left out."""

    commands: Mapping[str, ICommand]
    filters: tuple[IMessageFilter, ...]
    #: The session hooks plugins, in name order.
    hooks: tuple[ISessionHooks, ...] = field(default=())
    problems: tuple[str, ...] = field(default=())
    #: Where the commands and filters in use come from, module by module.
    sources: tuple[Source, ...] = field(default=())
    #: Commands, filters and hooks left out by C{--disable-plugin}, as
    #: C{/name} and C{name}.
    disabled: tuple[str, ...] = field(default=())
    #: C{--disable-plugin} names that match no command, filter or hooks.
    unmatched: tuple[str, ...] = field(default=())


def load_extensions(disabled: frozenset[str] = frozenset()) -> Extensions:
    """Scan the plugin package for commands, filters and session hooks.

    Built-in commands come first, so a plugin cannot replace one by taking
    its name; after them, plugin modules are taken in name order.
    """
    import chatservice.plugins as package

    problems: list[str] = []
    with _quiet_plugin_errors():
        dropins = getCache(package)
    for module in sorted(getModule(package.__name__).iterModules(), key=_name):
        if _name(module).rpartition(".")[2] not in dropins:
            problems.append(_import_problem(_name(module)))

    commands: dict[str, ICommand] = {}
    filters: dict[str, IMessageFilter] = {}
    hooks: dict[str, ISessionHooks] = {}
    origin: dict[str, str] = {}
    left_out: list[str] = []
    unused = {name.lower() for name in disabled}
    ordered = sorted(
        dropins.values(), key=lambda d: (d.moduleName != BUILTIN, d.moduleName)
    )
    for dropin in ordered:
        for cached in dropin.plugins:
            try:
                found = cached.load()
            except BaseException:
                # With a fresh dropin.cache, Twisted did not import the
                # module above; it fails only now.
                problems.append(_import_problem(dropin.moduleName))
                break
            for interface, table, kind in (
                (ICommand, commands, "command /"),
                (IMessageFilter, filters, "filter "),
                (ISessionHooks, hooks, "hooks "),
            ):
                if not interface.providedBy(found):
                    continue
                name = str(found.name).lower()
                if name in unused or name in disabled:
                    unused.discard(name)
                    left_out.append(("/" if interface is ICommand else "") + name)
                    continue
                broken = _not_provided(interface, found)
                if broken is not None:
                    problems.append(
                        f"plugin {kind}{name} from {dropin.moduleName} left out: "
                        f"{broken}"
                    )
                    continue
                if name in table:
                    problems.append(
                        f"plugin {kind}{name} from {dropin.moduleName} left out: "
                        f"{origin[kind + name]} has one of that name already"
                    )
                    continue
                table[name] = found
                origin[kind + name] = dropin.moduleName
    problems.extend(
        f"--disable-plugin {name}: there is no such plugin" for name in sorted(unused)
    )
    return Extensions(
        commands=dict(sorted(commands.items())),
        filters=tuple(filters[name] for name in sorted(filters)),
        hooks=tuple(hooks[name] for name in sorted(hooks)),
        problems=tuple(problems),
        sources=_sources(origin),
        disabled=tuple(sorted(left_out)),
        unmatched=tuple(sorted(unused)),
    )


def _sources(origin: Mapping[str, str]) -> tuple[Source, ...]:
    """Group what is in use by module, and find each module's distribution."""
    modules = sorted(set(origin.values()), key=lambda name: (name != BUILTIN, name))
    sources = []
    for module in modules:
        names = [name for name, source in origin.items() if source == module]
        path = getattr(sys.modules.get(module), "__file__", None)
        sources.append(
            Source(
                module,
                path,
                tuple(sorted(n[len("command /") :] for n in names if n[0] == "c")),
                tuple(sorted(n[len("filter ") :] for n in names if n[0] == "f")),
                tuple(sorted(n[len("hooks ") :] for n in names if n[0] == "h")),
            )
        )
    return tuple(sources)


def _distributions_of(modules: list[str]) -> dict[str, str]:
    """C{NAME VERSION} of the installed distribution of each of C{modules}.

    A plugin distribution installs a file into C{chatservice/plugins/}, which
    its list of files names.  A module in chatservice's own directory that no
    list names is chatservice's, installed in editable mode (whose list names
    none of its modules).
    """
    wanted = {
        f"chatservice/plugins/{module.rpartition('.')[2]}.py": module
        for module in modules
    }
    owners: dict[str, str] = {}
    for distribution in metadata.distributions():
        for file in distribution.files or ():
            module = wanted.get(file.as_posix())
            if module is not None and module not in owners:
                if _same_file(distribution.locate_file(file), module):
                    owners[module] = _name_version(distribution)
    own = Path(__file__).resolve().parent / "plugins"
    for module in modules:
        path = getattr(sys.modules.get(module), "__file__", None)
        if module not in owners and path and Path(path).resolve().parent == own:
            owners[module] = _name_version(metadata.distribution("chatservice"))
    return owners


def _same_file(installed: object, module: str) -> bool:
    """Whether the file a distribution installed is the module in use."""
    path = getattr(sys.modules.get(module), "__file__", None)
    try:
        return path is not None and Path(str(installed)).samefile(path)
    except OSError:
        return False


def _name_version(distribution: metadata.Distribution) -> str:
    return f"{distribution.metadata['Name']} {distribution.version}"


def describe(extensions: Extensions) -> list[str]:
    """What L{log_extensions} says, line by line, about what is in use.

    Each module's distribution is looked up only here, at start: it reads
    the list of files of every installed distribution.
    """
    owners = _distributions_of([source.module for source in extensions.sources])
    lines = []
    for source in extensions.sources:
        what = []
        if source.commands:
            plural = "s" if len(source.commands) > 1 else ""
            what.append(
                f"command{plural} " + ", ".join("/" + c for c in source.commands)
            )
        if source.filters:
            plural = "s" if len(source.filters) > 1 else ""
            what.append(f"filter{plural} " + ", ".join(source.filters))
        if source.hooks:
            what.append("session hooks " + ", ".join(source.hooks))
        origin = owners.get(source.module) or (
            f"no installed distribution: {source.path}"
            if source.path
            else "no installed distribution"
        )
        lines.append(f"plugins: {' and '.join(what)} from {source.module} ({origin})")
    if extensions.disabled:
        lines.append(
            "plugins left out by --disable-plugin: " + ", ".join(extensions.disabled)
        )
    return lines


def log_extensions(extensions: Extensions) -> None:
    """Log what is in use, from where, and each problem, in one line each."""
    for line in describe(extensions):
        log.info("{plugins}", plugins=line)
    for problem in extensions.problems:
        log.error("{problem}", problem=problem)


def _name(module: object) -> str:
    return module.name  # type: ignore[attr-defined, no-any-return]


def _not_provided(interface: type[Interface], found: object) -> str | None:
    """Why C{found} does not provide C{interface} in full, or None if it does.

    Every attribute is required (a command's C{operator_only} too): the
    server reads them without probing.
    """
    try:
        verifyObject(interface, found)
    except Invalid as error:
        errors = error.exceptions if isinstance(error, MultipleInvalid) else [error]
        missing = [
            getattr(e.name, "__name__", str(e.name))
            for e in errors
            if isinstance(e, BrokenImplementation)
        ]
        if missing:
            return f"{interface.__name__} needs {', '.join(missing)}, which it lacks"
        return f"it does not provide {interface.__name__}"
    return None


def _import_problem(module: str) -> str:
    """Say in one line why C{module} cannot be imported."""
    try:
        namedAny(module)
    except BaseException as error:  # a plugin may raise anything, even SystemExit
        why = f"{type(error).__name__}: {error}"
        return f"plugin {module} left out: cannot import it: {why}"
    return f"plugin {module} left out: it has no plugins"  # pragma: no cover


@contextlib.contextmanager
def _quiet_plugin_errors() -> Iterator[None]:
    """Keep twisted.plugin from logging a traceback per broken module.

    Each is reported here in one line instead.
    """

    class Quiet:
        @staticmethod
        def err(*args: object, **kwargs: object) -> None:
            """Drop the error; it is reported elsewhere."""

        msg = err

    saved = plugin.log
    plugin.log = Quiet  # type: ignore[assignment]
    try:
        yield
    finally:
        plugin.log = saved


__all__ = ["Extensions", "Source", "describe", "load_extensions", "log_extensions"]
