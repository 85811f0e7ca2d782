"""What a node of a cluster answers about users and rooms, wherever they are.

L{Lookups} answers the L{IRegistry} questions (and the private lines and
kicks) that may concern another node's users: from this node's index when
it can, from Redis otherwise; while Redis is out of reach, with what this
node knows, or with a L{ChatError} saying the others did not answer.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, fail, succeed

from ..errors import ChatError, NoSuchNickname
from ..events import Event, not_an_event
from ..interfaces import IChatClient, RoomInfo, UserInfo
from ..reasons import CloseReason
from ..rooms import LOBBY
from ..text import fold
from .events import dumped, reason_event
from .node import CUT_OFF, Node, cut_off
from .records import maybe_user_info, room_info, topic_text, user_info


class Lookups:
    """Users and rooms of the whole cluster, for one node."""

    def __init__(self, node: Node) -> None:
        self._node = node

    def send_private(self, nickname: str, event: Event) -> Deferred[UserInfo]:
        """See L{chatservice.interfaces.IRegistry.send_private}."""
        if event.__class__ is not Event:
            raise not_an_event(event)  # a plugin's mistake, refused at the call
        return self._to_user(nickname, {}, lambda c: c.deliver(event), event)

    def find(self, nickname: str) -> Deferred[UserInfo]:
        """See L{chatservice.interfaces.IRegistry.find}."""
        client = self._node.index.by_fold.get(fold(nickname))
        if client is not None:
            return succeed(self._node.index.users[client].info())
        if not self._node.up:  # they may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        d = self._node.command("hget", self._node.prefix + "users", fold(nickname))

        def found(raw: str | None) -> UserInfo:
            if not raw:
                raise NoSuchNickname(nickname)
            return user_info(raw)

        return d.addCallbacks(found, cut_off(CUT_OFF))

    def kick(self, nickname: str, reason: CloseReason) -> Deferred[UserInfo]:
        """See L{chatservice.interfaces.IRegistry.kick}."""
        return self._to_user(
            nickname, {"k": reason_event(reason)}, lambda c: c.disconnect(reason)
        )

    def _to_user(
        self,
        nickname: str,
        message: dict[str, Any],
        act: Callable[[IChatClient], None],
        event: Event | None = None,
    ) -> Deferred[UserInfo]:
        """C{act} on the user C{nickname} here, or send their node C{message}.

        C{event}, if any, goes in the message (its C{ev}).
        """
        key = fold(nickname)
        client = self._node.index.by_fold.get(key)
        if client is not None:
            info = self._node.index.users[client].info()
            act(client)
            return succeed(info)
        if not self._node.up:  # they may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        d = self._node.call(
            "to_user",
            self._node.name,
            key,
            json.dumps(message, ensure_ascii=False),
            "" if event is None else dumped(event),
        )

        def found(raw: str | None) -> UserInfo:
            if not raw:
                raise NoSuchNickname(nickname)
            return user_info(raw)

        return d.addCallbacks(found, cut_off(CUT_OFF))

    def count(self) -> Deferred[int]:
        """See L{chatservice.interfaces.IRegistry.count}."""
        if not self._node.up:
            return succeed(len(self._node.index.users))
        d = self._node.command("hlen", self._node.prefix + "users")
        return d.addCallbacks(int, lambda failure: len(self._node.index.users))

    def users(self, room: str | None = None) -> Deferred[list[UserInfo]]:
        """See L{chatservice.interfaces.IRegistry.users}.

        Shared (see L{Node.shared}): however many ask, Redis sends the list once
        a second at most.
        """
        if not self._node.up:
            return succeed(self._node.index.user_infos(room))

        def fetch() -> Deferred[list[UserInfo]]:
            d = self._node.call("users", room or "")

            def infos(raws: list[str]) -> list[UserInfo]:
                found = [
                    info for info in map(maybe_user_info, raws) if info is not None
                ]
                return sorted(found, key=lambda info: fold(info.nickname))

            return d.addCallbacks(
                infos, lambda failure: self._node.index.user_infos(room)
            )

        return self._node.shared(room or "", fetch)

    def rooms(self) -> Deferred[list[RoomInfo]]:
        """See L{chatservice.interfaces.IRegistry.rooms}; shared like L{users}."""
        local = self._node.index.room_infos()
        if not self._node.up:
            return succeed(local)

        def fetch() -> Deferred[list[RoomInfo]]:
            d = self._node.call("rooms")

            def infos(rows: list[list[Any]]) -> list[RoomInfo]:
                found = {
                    room.name: room for room in map(room_info, rows) if room is not None
                }
                found.setdefault(LOBBY, RoomInfo(LOBBY, 0, ""))
                return [found[name] for name in sorted(found)]

            return d.addCallbacks(infos, lambda failure: local)

        return self._node.shared("/rooms", fetch)

    def topic(self, room: str) -> Deferred[str]:
        """See L{chatservice.interfaces.IRegistry.topic}."""
        found = self._node.index.rooms.get(room)
        local = found.topic if found is not None else ""
        if not self._node.up:
            return succeed(local)
        d = self._node.command("get", self._node.prefix + "topic:" + room)
        return d.addCallbacks(topic_text, lambda failure: local)
