"""Bans across the nodes of a cluster: made on one node, held on every node.

L{ClusterBans} is a node's L{ISharedBans}: a ban made here goes out on the
event stream, and one made elsewhere arrives from it (checked, see
L{chatservice.cluster.events}) and is passed to the server.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from ..interfaces import ISharedBans
from .events import Ban, Unban
from .node import Node


@implementer(ISharedBans)
class ClusterBans:
    """The bans every node of the cluster holds: told through the stream."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._banned: Callable[[str, float | None, str, str], None] | None = None
        self._unbanned: Callable[[str], None] | None = None

    def share_ban(
        self, network: str, expires: float | None, reason: str, by: str
    ) -> None:
        """See L{ISharedBans.share_ban}."""
        self._node.publish(Ban(network, expires, reason, by), "sharing a ban")

    def share_unban(self, network: str) -> None:
        """See L{ISharedBans.share_unban}."""
        self._node.publish(Unban(network), "an unban")

    def watch_bans(
        self,
        banned: Callable[[str, float | None, str, str], None],
        unbanned: Callable[[str], None],
    ) -> None:
        """See L{ISharedBans.watch_bans}."""
        self._banned, self._unbanned = banned, unbanned

    def banned(self, event: Ban) -> None:
        """Another node made a ban."""
        if self._banned is not None:
            self._banned(event.network, event.expires, event.reason, event.by)

    def unbanned(self, event: Unban) -> None:
        """Another node lifted a ban."""
        if self._unbanned is not None:
            self._unbanned(event.network)
