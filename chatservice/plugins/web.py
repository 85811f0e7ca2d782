"""The web front end (--web), found by the plugin scan.

A module of its own, apart from the other built-ins: it needs autobahn, and
an environment installed before autobahn became a dependency loses only
this front end (the scan reports the failed import in one line), not every
built-in command with it.
"""

from chatservice.frontends.web import web  # noqa: F401 - found by the scan
