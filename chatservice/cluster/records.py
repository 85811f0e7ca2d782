"""What a node reads from Redis's records, checked and sanitised.

A user's record, a room's scrollback (its events), a room list's rows: what the nodes
read from Redis is checked and sanitised as events are (see
L{chatservice.cluster.events}), so a bad writer to Redis cannot reach a
terminal through it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from ..errors import InvalidName
from ..interfaces import RoomInfo, Scrollback, UserInfo
from ..text import check_room, sanitise
from .events import Malformed, clean_nickname, clean_text, loaded


def user_info(raw: str) -> UserInfo:
    """A user record from Redis; L{Malformed} if it is not one."""
    try:
        user = json.loads(raw)
    except ValueError:
        raise Malformed("user", "not JSON") from None
    if not isinstance(user, dict):
        raise Malformed("user", "not an object")
    away, host = user.get("away"), user.get("host")
    return UserInfo(
        clean_nickname(user.get("nick"), "user"),
        None if away is None else clean_text(away, "user", 8192),
        clean_text(host, "user") or None if host is not None else None,
    )


def maybe_user_info(raw: str) -> UserInfo | None:
    """A user record from Redis, or None if it is not one."""
    try:
        return user_info(raw)
    except Malformed:
        return None


def scrollback(raws: Iterable[str]) -> list[Scrollback]:
    """A room's scrollback as Redis keeps it (events), the malformed ones skipped."""
    lines = []
    for raw in raws:
        try:
            event = loaded(raw, "scrollback")
        except Malformed:
            continue
        lines.append(Scrollback(event.time, event))
    return lines


def room_info(row: list[Any]) -> RoomInfo | None:
    """A row of the room list (name, members, topic), or None if it is not one."""
    try:
        name, members, topic = row
        if check_room(str(name)) != name:
            return None
        return RoomInfo(name, int(members), topic_text(topic))
    except (ValueError, TypeError, InvalidName):
        return None


def topic_text(topic: object) -> str:
    """A topic (or away message) from Redis, sanitised; C{""} if not text."""
    return sanitise(topic) if isinstance(topic, str) else ""
