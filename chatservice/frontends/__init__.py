"""The front ends: each turns one wire format into a session's inputs, and back."""

from ..interfaces import IFrontEnd


def load_front_ends() -> dict[str, IFrontEnd]:
    """The front ends found by the plugin scan, by name, the line one first.

    They are found like commands and filters (see L{chatservice.extensions}):
    an object providing C{IPlugin} and L{IFrontEnd} at module level in a
    module of the C{chatservice.plugins} package.  A module that fails to
    import is left out here without a word: the scan for commands and
    filters reports it, in one line.
    """
    from twisted.plugin import getPlugins

    import chatservice.plugins as package

    from ..extensions import _quiet_plugin_errors

    with _quiet_plugin_errors():
        plugins = list(getPlugins(IFrontEnd, package))
    found = {str(front.name): front for front in plugins}
    return dict(sorted(found.items(), key=lambda item: item[0] != "lines"))
