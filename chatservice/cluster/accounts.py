"""Registered nicknames across the nodes of a cluster.

L{ClusterAccounts} is a node's L{ISharedAccounts}: a nickname registered
(or unregistered, or dropped) here goes out on the event stream, and one
from elsewhere arrives from it (checked, see L{chatservice.cluster.events})
and is added to (or taken from) the server's set of registered nicknames.
So no node asks the database when someone takes a nickname.  The accounts
themselves, and the messages kept for them, are in the PostgreSQL store
every node shares: a message kept on one node is delivered on whichever
node its recipient identifies.
"""

from __future__ import annotations

from collections.abc import Callable

from zope.interface import implementer

from ..interfaces import ISharedAccounts
from .events import AccountChange
from .node import Node


@implementer(ISharedAccounts)
class ClusterAccounts:
    """Tells the other nodes of registrations, and hears of theirs."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._changed: Callable[[str, bool], None] | None = None

    def share_account(self, key: str, registered: bool) -> None:
        """See L{ISharedAccounts.share_account}."""
        self._node.publish(AccountChange(key, registered), "sharing an account")

    def watch_accounts(self, changed: Callable[[str, bool], None]) -> None:
        """See L{ISharedAccounts.watch_accounts}."""
        self._changed = changed

    def changed(self, event: AccountChange) -> None:
        """Another node registered or dropped a nickname."""
        if self._changed is not None:
            self._changed(event.key, event.registered)
