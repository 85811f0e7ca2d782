"""What a server shares with the other nodes of a cluster: alone, nothing.

L{LocalSessions} and L{LocalBans} are the do-nothing L{ISharedSessions}
and L{ISharedBans} a server alone is given (the service passes a cluster's
own, see L{chatservice.cluster}).
"""

from collections.abc import Callable

from zope.interface import implementer

from .interfaces import IChatClient, ISharedBans, ISharedSessions


@implementer(ISharedSessions)
class LocalSessions:
    """The L{ISharedSessions} of a server alone: nothing is shared."""

    def store_token(self, nickname: str, token_digest: str) -> None:
        """See L{ISharedSessions.store_token}: kept by the keeper alone."""

    def keep_for(self, nickname: str, data: bytes, limit: int) -> None:
        """See L{ISharedSessions.keep_for}: kept by the held session alone."""

    def resume(
        self,
        client: IChatClient,
        nickname: str,
        token_digest: str,
        new_digest: str,
    ) -> None:
        """See L{ISharedSessions.resume}: the keeper checks its own tokens."""
        return None

    def watch_moves(self, moved: Callable[[IChatClient], None]) -> None:
        """See L{ISharedSessions.watch_moves}: no session moves away."""


@implementer(ISharedBans)
class LocalBans:
    """The L{ISharedBans} of a server alone: there is nobody to tell."""

    def share_ban(
        self, network: str, expires: float | None, reason: str, by: str
    ) -> None:
        """See L{ISharedBans.share_ban}."""

    def share_unban(self, network: str) -> None:
        """See L{ISharedBans.share_unban}."""

    def watch_bans(
        self,
        banned: Callable[[str, float | None, str, str], None],
        unbanned: Callable[[str], None],
    ) -> None:
        """See L{ISharedBans.watch_bans}: no other node bans."""
