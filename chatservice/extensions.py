"""Finding the commands and message filters, built-in and third-party.

Both are plugins found by Twisted's plugin system in the
L{chatservice.plugins} package.  A plugin module that cannot be imported, a
command whose name is taken, or a C{--disable-plugin} naming nothing, is
reported in one line and left out; the server starts without it.
"""

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from twisted import plugin
from twisted.plugin import getCache
from twisted.python.modules import getModule
from twisted.python.reflect import namedAny

from .interfaces import ICommand, IMessageFilter

BUILTIN = "chatservice.plugins.builtin"


@dataclass(frozen=True)
class Extensions:
    """The commands and filters a server uses, and what was left out."""

    commands: Mapping[str, ICommand]
    filters: tuple[IMessageFilter, ...]
    problems: tuple[str, ...] = field(default=())


def load_extensions(disabled: frozenset[str] = frozenset()) -> Extensions:
    """Scan the plugin package for commands and filters.

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
    origin: dict[str, str] = {}
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
            for interface, table in ((ICommand, commands), (IMessageFilter, filters)):
                if not interface.providedBy(found):
                    continue
                name = str(found.name).lower()
                kind = "command /" if interface is ICommand else "filter "
                if name in unused or name in disabled:
                    unused.discard(name)
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
        problems=tuple(problems),
    )


def _name(module: object) -> str:
    return module.name  # type: ignore[attr-defined, no-any-return]


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


__all__ = ["Extensions", "load_extensions"]
