"""Where chatservice looks for plugins: commands and message filters.

Any module in this package, or in a C{chatservice/plugins/} directory (with
no C{__init__.py}) under any C{sys.path} entry, is scanned by Twisted's
plugin system; its module-level objects that provide C{IPlugin} and
C{ICommand} or C{IMessageFilter} are used.  See C{docs/plugins.md}.
"""

from twisted.plugin import pluginPackagePaths

__path__.extend(pluginPackagePaths(__name__))  # noqa: F821 - a package's own
__all__: list[str] = []
