"""Several C{twistd chat} nodes that behave as one server, sharing Redis.

A L{ClusterRegistry} is an L{IRegistry}.  It keeps its own node's clients in
memory, as the in-memory registry does, and fans lines out to them itself;
what the other nodes must know lives in Redis:

  - C{PREFIX users}: a hash, nickname folded to lower case -> the user as
    JSON (nickname, node, away message, host, rooms).  A nickname is
    claimed by creating its field, atomically, in a Lua script.
  - C{PREFIX room:NAME}: a hash of a room's members (folded -> nickname);
    C{PREFIX rooms}: the set of rooms; C{PREFIX topic:NAME} and
    C{PREFIX history:NAME} (newest first, trimmed to C{--history}).
  - C{PREFIX node:ID}: a node's heartbeat, which expires after
    C{--node-ttl} seconds unless the node renews it; C{PREFIX nodes} and
    C{PREFIX node-users:ID} say which users each node serves.
  - C{PREFIX events}: a Redis stream, the last 100,000 events.  Every
    change another node must act on is added there as JSON, by the same
    Lua script that makes the change, so it is in the order of the
    changes.  Each node reads the stream from where it left off (XREAD),
    so what it could not read for a while it reads when it can again.  A
    line crosses Redis once for each node, and each node hands the same
    bytes to all its members of the room.

Each node delivers to its own clients at once and ignores its own events.
A script's answer can come before the events that preceded it have been
read: a user registered or resumed here is let in once they have been.

A node whose heartbeat has expired (it was killed, or cut off from Redis)
is reaped by whichever node notices first: one Lua script removes its users
and returns them, and that node publishes their leaves, once.

When Redis cannot be reached, the node goes on serving its own users as a
one-node server, tells them so once, and reconnects (txredisapi backs off
up to 10 s).  Once connected it claims its users' nicknames and rooms again,
tells the others who came and went meanwhile, and reads what they said; a
user whose nickname another node took meanwhile is told and disconnected.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred, DeferredList, fail, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from . import wire
from .errors import ChatError, NicknameInUse, NoSuchNickname
from .interfaces import IChatClient, IRegistry, RoomInfo, Scrollback, UserInfo
from .logs import gate
from .registry import LOBBY, Registry, _Room, _User, swap_client
from .text import fold

log = Logger(observer=gate)

#: How long one Redis call may take before the node counts Redis as gone.
CALL_TIMEOUT = 5.0


class RedisURLError(ValueError):
    """A C{--redis} value that is not C{redis://HOST[:PORT][/DB]}."""


def parse_redis_url(url: str) -> tuple[str, int, int]:
    """C{redis://HOST[:PORT][/DB]} as C{(host, port, db)}.

    @raise RedisURLError: with a message that says what is wrong.
    """
    parts = urlsplit(url)
    if parts.scheme != "redis":
        raise RedisURLError(f"{url!r} does not start with redis://")
    if parts.username or parts.password:
        raise RedisURLError(f"{url!r}: passwords in the URL are not supported")
    try:
        port = parts.port or 6379
    except ValueError:
        raise RedisURLError(
            f"{url!r}: the port is not a number from 0 to 65535"
        ) from None
    if not parts.hostname:
        raise RedisURLError(f"{url!r} has no host")
    path = parts.path.strip("/") or "0"
    if not path.isdigit():
        raise RedisURLError(f"{url!r}: the database must be a number, as in /0")
    if parts.query or parts.fragment:
        raise RedisURLError(f"{url!r}: options after ? or # are not supported")
    return parts.hostname, port, int(path)


# Lua -----------------------------------------------------------------------
#
# Every script gets the key prefix as ARGV[1] and builds its keys from it:
# one Redis server (or a primary with replicas) holds a cluster's keys, not
# a Redis Cluster.  Users are JSON; cjson turns an empty Lua table into {},
# a JSON object, so a user's rooms are never left empty (the lobby stays).
# _HELPERS are Lua functions that several scripts share.

_HELPERS = """
local function leave_room(P, fold, room, amax, lobby)
    local key = P .. 'room:' .. room
    local size = redis.call('HLEN', key)
    if redis.call('HDEL', key, fold) == 0 then return false end
    if size <= 1 and room ~= lobby then
        redis.call('DEL', key, P .. 'topic:' .. room, P .. 'history:' .. room)
        redis.call('SREM', P .. 'rooms', room)
    end
    return size > 1 and (amax < 0 or size <= amax)
end
local function forget(P, fold)
    redis.call('DEL', P .. 'token:' .. fold, P .. 'missed:' .. fold)
end
-- The id of the newest event: what a node must have read before it acts
-- on this script's answer.
local function last_id(P)
    local newest = redis.call('XREVRANGE', P .. 'events', '+', '-', 'COUNT', 1)
    if #newest == 0 then return '0-0' end
    return newest[1][1]
end
local function publish(P, event)
    redis.call('XADD', P .. 'events', 'MAXLEN', '~', '100000', '*',
               'o', event.o or '', 'e', cjson.encode(event))
end
local function alive(P, node)
    return redis.call('EXISTS', P .. 'node:' .. node) == 1
end
-- Removes the user fold of node from everything; returns its nickname and
-- the rooms to tell, or nil if node does not have that user.
local function remove_user(P, fold, node, amax, lobby)
    redis.call('SREM', P .. 'node-users:' .. node, fold)
    local raw = redis.call('HGET', P .. 'users', fold)
    if not raw then return nil end
    local user = cjson.decode(raw)
    if user.node ~= node then return nil end
    redis.call('HDEL', P .. 'users', fold)
    forget(P, fold)
    local told = {}
    for _, room in ipairs(user.rooms) do
        if leave_room(P, fold, room, amax, lobby) then table.insert(told, room) end
    end
    return user.nick, told
end
"""

# ARGV: P, node, fold, nickname, host, lobby, amax, joined-line.
# Returns {1, size of the lobby, id of the newest event}, or {0} if the
# nickname is taken.
_REGISTER = (
    _HELPERS
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local lobby, amax = ARGV[6], tonumber(ARGV[7])
if redis.call('HEXISTS', P .. 'users', fold) == 1 then return {0} end
redis.call('HSET', P .. 'users', fold, cjson.encode(
    {nick = ARGV[4], node = node, host = ARGV[5], rooms = {lobby}}))
redis.call('SADD', P .. 'node-users:' .. node, fold)
redis.call('HSET', P .. 'room:' .. lobby, fold, ARGV[4])
redis.call('SADD', P .. 'rooms', lobby)
local size = redis.call('HLEN', P .. 'room:' .. lobby)
if amax < 0 or size <= amax then
    publish(P, {o = node, r = {lobby}, s = fold, d = ARGV[8]})
end
return {1, size, last_id(P)}
"""
)

# ARGV: P, node, fold, amax, lobby, left-line.  Publishes the leave in the
# rooms small enough; returns those rooms.
_UNREGISTER = (
    _HELPERS
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local amax, lobby = tonumber(ARGV[4]), ARGV[5]
local nick, told = remove_user(P, fold, node, amax, lobby)
if not nick then return {} end
if #told > 0 then publish(P, {o = node, r = told, s = fold, d = ARGV[6]}) end
return told
"""
)

# ARGV: P, node, fold, room, amax, joined-line, history.
# Returns {size, {history, newest first}}, or {-1} for an unknown user.
_JOIN = (
    _HELPERS
    + """
local P, node, fold, room = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local amax, history = tonumber(ARGV[5]), tonumber(ARGV[7])
local raw = redis.call('HGET', P .. 'users', fold)
if not raw then return {-1} end
local user = cjson.decode(raw)
if user.node ~= node then return {-1} end
local key = P .. 'room:' .. room
local lines = {}
if history > 0 then
    lines = redis.call('LRANGE', P .. 'history:' .. room, 0, history - 1)
end
if redis.call('HEXISTS', key, fold) == 1 then
    return {redis.call('HLEN', key), lines}
end
table.insert(user.rooms, room)
redis.call('HSET', P .. 'users', fold, cjson.encode(user))
redis.call('HSET', key, fold, user.nick)
redis.call('SADD', P .. 'rooms', room)
local size = redis.call('HLEN', key)
if amax < 0 or size <= amax then
    publish(P, {o = node, r = {room}, s = fold, d = ARGV[6]})
end
return {size, lines}
"""
)

# ARGV: P, node, fold, room, amax, lobby, parted-line.
_PART = (
    _HELPERS
    + """
local P, node, fold, room = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local amax, lobby = tonumber(ARGV[5]), ARGV[6]
local raw = redis.call('HGET', P .. 'users', fold)
if not raw then return 0 end
local user = cjson.decode(raw)
if user.node ~= node then return 0 end
local rooms, found = {}, false
for _, name in ipairs(user.rooms) do
    if name == room then found = true else table.insert(rooms, name) end
end
if not found then return 0 end
user.rooms = rooms
if #rooms == 0 then user.rooms = {lobby} end
redis.call('HSET', P .. 'users', fold, cjson.encode(user))
if leave_room(P, fold, room, amax, lobby) then
    publish(P, {o = node, r = {room}, s = fold, d = ARGV[7]})
    return 1
end
return 0
"""
)

# ARGV: P, node, room, sender fold, line, when, history.
_SAY = (
    _HELPERS
    + """
local P, room, history = ARGV[1], ARGV[3], tonumber(ARGV[7])
publish(P, {o = ARGV[2], r = {room}, s = ARGV[4], d = ARGV[5], h = tonumber(ARGV[6])})
if history > 0 and redis.call('EXISTS', P .. 'room:' .. room) == 1 then
    local key = P .. 'history:' .. room
    redis.call('LPUSH', key, cjson.encode({tonumber(ARGV[6]), ARGV[5]}))
    redis.call('LTRIM', key, 0, history - 1)
end
return 1
"""
)

# ARGV: P, node, old fold, new fold, nickname, renamed-line.
# Returns 1, 0 if the new nickname is taken, -1 for an unknown user.
_RENAME = (
    _HELPERS
    + """
local P, node, old, new = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local raw = redis.call('HGET', P .. 'users', old)
if not raw then return -1 end
local user = cjson.decode(raw)
if user.node ~= node then return -1 end
if new ~= old then
    if redis.call('HEXISTS', P .. 'users', new) == 1 then return 0 end
    redis.call('HDEL', P .. 'users', old)
    redis.call('SREM', P .. 'node-users:' .. node, old)
    redis.call('SADD', P .. 'node-users:' .. node, new)
    if redis.call('EXISTS', P .. 'token:' .. old) == 1 then
        redis.call('RENAME', P .. 'token:' .. old, P .. 'token:' .. new)
    end
end
user.nick = ARGV[5]
redis.call('HSET', P .. 'users', new, cjson.encode(user))
for _, room in ipairs(user.rooms) do
    redis.call('HDEL', P .. 'room:' .. room, old)
    redis.call('HSET', P .. 'room:' .. room, new, ARGV[5])
end
publish(P, {o = node, r = user.rooms, d = ARGV[6]})
return 1
"""
)

# ARGV: P, node, fold, field, value (JSON).  Sets one field of a user.
_UPDATE = """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('HGET', P .. 'users', fold)
if not raw then return 0 end
local user = cjson.decode(raw)
if user.node ~= node then return 0 end
user[ARGV[4]] = cjson.decode(ARGV[5])
redis.call('HSET', P .. 'users', fold, cjson.encode(user))
return 1
"""

# ARGV: P, node, fold, event (JSON, without the recipient).  Sends the
# event to the node of the user called fold; returns the user, or false.
_TO_USER = (
    _HELPERS
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local raw = redis.call('HGET', P .. 'users', fold)
if not raw then return false end
local user = cjson.decode(raw)
if user.node ~= node then
    local event = cjson.decode(ARGV[4])
    event.o = node
    event.to = fold
    publish(P, event)
end
return raw
"""
)

# ARGV: P, node, room, topic, topic-line.
_TOPIC = (
    _HELPERS
    + """
local P, room = ARGV[1], ARGV[3]
if redis.call('EXISTS', P .. 'room:' .. room) == 0 then return 0 end
if ARGV[4] == '' then
    redis.call('DEL', P .. 'topic:' .. room)
else
    redis.call('SET', P .. 'topic:' .. room, ARGV[4])
end
publish(P, {o = ARGV[2], r = {room}, d = ARGV[5]})
return 1
"""
)

# ARGV: P, room or ''.  The users (as JSON), of a room or of everyone.
_USERS = """
local P, room = ARGV[1], ARGV[2]
if room == '' then return redis.call('HVALS', P .. 'users') end
local folds = redis.call('HKEYS', P .. 'room:' .. room)
if #folds == 0 then return {} end
local found = {}
for first = 1, #folds, 1000 do
    local last = math.min(first + 999, #folds)
    local chunk = redis.call('HMGET', P .. 'users', unpack(folds, first, last))
    for _, raw in ipairs(chunk) do
        if raw then table.insert(found, raw) end
    end
end
return found
"""

# ARGV: P.  Every room: {name, members, topic}.
_ROOMS = """
local P = ARGV[1]
local found = {}
for _, room in ipairs(redis.call('SMEMBERS', P .. 'rooms')) do
    local topic = redis.call('GET', P .. 'topic:' .. room) or ''
    table.insert(found, {room, redis.call('HLEN', P .. 'room:' .. room), topic})
end
return found
"""

# ARGV: P, node, ttl in ms.  Renews the heartbeat; 1 if the node had been
# reaped since its last one (its users were announced as gone).
_HEARTBEAT = """
local P, node = ARGV[1], ARGV[2]
redis.call('SET', P .. 'node:' .. node, '1', 'PX', tonumber(ARGV[3]))
redis.call('SADD', P .. 'nodes', node)
return redis.call('EXISTS', P .. 'reaped:' .. node)
"""

# ARGV: P, amax, lobby.  Removes the users of every node whose heartbeat
# expired; returns them as {fold, nickname, {rooms to tell}}.
_REAP = (
    _HELPERS
    + """
local P, amax, lobby = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local gone = {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
    if not alive(P, node) then
        for _, fold in ipairs(redis.call('SMEMBERS', P .. 'node-users:' .. node)) do
            local nick, told = remove_user(P, fold, node, amax, lobby)
            if nick then table.insert(gone, {fold, nick, told}) end
        end
        redis.call('DEL', P .. 'node-users:' .. node)
        redis.call('SREM', P .. 'nodes', node)
        redis.call('SET', P .. 'reaped:' .. node, '1', 'EX', 86400)
    end
end
return gone
"""
)

# ARGV: P, node, fold, user (JSON), amax, announce (1/0), joined-lines
# (JSON, room -> line).  Claims a user of this node again after Redis was
# out of reach.  Returns 1, or 0 if another live node has the nickname.
_RECLAIM = (
    _HELPERS
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local amax, announce, lobby = tonumber(ARGV[5]), ARGV[6] == '1', ARGV[9]
local user = cjson.decode(ARGV[4])
local joined = cjson.decode(ARGV[7])
local parted = cjson.decode(ARGV[8])
local had = {}
local dead, dead_told = false, {}
local raw = redis.call('HGET', P .. 'users', fold)
if raw then
    local held = cjson.decode(raw)
    if held.node == node then
        for _, room in ipairs(held.rooms) do had[room] = true end
    else
        if alive(P, held.node) then return {0} end
        -- Left behind by a node that died: gone, as if reaped.
        dead, dead_told = remove_user(P, fold, held.node, amax, lobby)
    end
end
redis.call('HSET', P .. 'users', fold, ARGV[4])
redis.call('SADD', P .. 'node-users:' .. node, fold)
local now = {}
for _, room in ipairs(user.rooms) do
    now[room] = true
    redis.call('HSET', P .. 'room:' .. room, fold, user.nick)
    redis.call('SADD', P .. 'rooms', room)
    local size = redis.call('HLEN', P .. 'room:' .. room)
    if (announce or (raw and not dead and not had[room]))
            and (amax < 0 or size <= amax) then
        publish(P, {o = node, r = {room}, s = fold, d = joined[room]})
    end
end
-- Rooms the user left while this node was cut off.
for room, _ in pairs(had) do
    if not now[room] and leave_room(P, fold, room, amax, lobby) and parted[room] then
        publish(P, {o = node, r = {room}, s = fold, d = parted[room]})
    end
end
return {1, dead or '', dead_told}
"""
)

# ARGV: P, node, amax, lobby.  A node that stops: its keys go, and so do
# the users it still has (normally none: they left one by one before);
# returns those as {nickname, {rooms to tell}}.
_RETIRE = (
    _HELPERS
    + """
local P, node, amax, lobby = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local gone = {}
for _, fold in ipairs(redis.call('SMEMBERS', P .. 'node-users:' .. node)) do
    local nick, told = remove_user(P, fold, node, amax, lobby)
    if nick then table.insert(gone, {nick, told}) end
end
redis.call('DEL', P .. 'node:' .. node, P .. 'node-users:' .. node)
redis.call('DEL', P .. 'reaped:' .. node)
redis.call('SREM', P .. 'nodes', node)
return gone
"""
)

# ARGV: P, node, folds to keep (JSON), amax, lobby.  Removes the users
# this node no longer has (they left while Redis was out of reach); returns
# them as {nickname, {rooms to tell}}.
_PRUNE = (
    _HELPERS
    + """
local P, node, amax, lobby = ARGV[1], ARGV[2], tonumber(ARGV[4]), ARGV[5]
local keep = {}
for _, fold in ipairs(cjson.decode(ARGV[3])) do keep[fold] = true end
local gone = {}
for _, fold in ipairs(redis.call('SMEMBERS', P .. 'node-users:' .. node)) do
    if not keep[fold] then
        local nick, told = remove_user(P, fold, node, amax, lobby)
        if nick then table.insert(gone, {nick, told}) end
    end
end
return gone
"""
)

# ARGV: P, fold, data, lines kept at most, seconds to keep them.  A line
# for a held session, where a node it resumes on can read it.
_KEEP = """
local key = ARGV[1] .. 'missed:' .. ARGV[2]
redis.call('RPUSH', key, ARGV[3])
redis.call('LTRIM', key, -tonumber(ARGV[4]), -1)
redis.call('EXPIRE', key, tonumber(ARGV[5]))
return 1
"""

# ARGV: P, node, fold, token digest, amax, back-line.  Moves a user's
# session, held or still open on another node, to this one; tells that node
# (ho) and the user's rooms.  Returns {user, {missed}, {rooms told}, id of
# the newest event}, or false.
_RESUME = (
    _HELPERS
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local amax = tonumber(ARGV[5])
if redis.call('GET', P .. 'token:' .. fold) ~= ARGV[4] then return false end
local raw = redis.call('HGET', P .. 'users', fold)
if not raw then return false end
local user = cjson.decode(raw)
local old = user.node
if old == node then return false end
user.node = node
redis.call('HSET', P .. 'users', fold, cjson.encode(user))
redis.call('SREM', P .. 'node-users:' .. old, fold)
redis.call('SADD', P .. 'node-users:' .. node, fold)
local missed = redis.call('LRANGE', P .. 'missed:' .. fold, 0, -1)
redis.call('DEL', P .. 'missed:' .. fold)
publish(P, {o = node, ho = fold})
local told = {}
for _, room in ipairs(user.rooms) do
    local size = redis.call('HLEN', P .. 'room:' .. room)
    if amax < 0 or size <= amax then table.insert(told, room) end
end
if #told > 0 then publish(P, {o = node, r = told, s = fold, d = ARGV[6]}) end
return {raw, missed, told, last_id(P)}
"""
)

#: The scripts, by the name L{RedisLink.call} takes.
_SCRIPTS = {
    "register": _REGISTER,
    "unregister": _UNREGISTER,
    "join": _JOIN,
    "part": _PART,
    "say": _SAY,
    "rename": _RENAME,
    "update": _UPDATE,
    "to_user": _TO_USER,
    "topic": _TOPIC,
    "users": _USERS,
    "rooms": _ROOMS,
    "heartbeat": _HEARTBEAT,
    "reap": _REAP,
    "reclaim": _RECLAIM,
    "retire": _RETIRE,
    "prune": _PRUNE,
    "keep": _KEEP,
    "resume": _RESUME,
}


class Unreachable(Exception):
    """Redis cannot be reached now; the node serves its own users alone."""


class RedisLink:
    """A node's connections to Redis: one for commands, one reading events.

    Events are a Redis stream, read from where the node left off: what was
    added while the node could not read is read when it can again.  The
    link is up while both connections answer.  C{on_up()} is called each
    time it comes up, C{on_down()} each time it goes down, and
    C{on_event(text)} for each event, in the stream's order.  txredisapi
    reconnects a connection by itself, but not one lost while it selects
    its database: a connection whose command fails is replaced.
    """

    #: Seconds between tries of a connection that failed.
    RETRY = 1.0
    #: Milliseconds one XREAD waits for events.
    BLOCK = 2000
    #: Events read at once, at most.
    BATCH = 1000

    def __init__(
        self,
        url: str,
        stream: str,
        on_event: Callable[[str, str], None],
        on_up: Callable[[], None],
        on_down: Callable[[], None],
    ) -> None:
        self.host, self.port, self.db = parse_redis_url(url)
        self.stream = stream
        self.on_event = on_event
        self.on_up = on_up
        self.on_down = on_down
        self.up = False
        self._commands: Any = None
        self._reader: Any = None
        #: The id of the last event read; None until the node has started.
        self._last: str | None = None
        self._reading = False
        self._checking = False
        self._timers: dict[str, Any] = {}
        self._stopped = False
        self._waiting: list[tuple[tuple[int, int], Deferred[None]]] = []

    def start(self) -> None:
        """Connect, and keep reconnecting until L{stop}."""
        self._commands = self._connect()
        self._reader = self._connect()
        self._read()

    def _connect(self) -> Any:
        # Imported here: txredisapi installs the default reactor on import,
        # and twisted/plugins/ must not.
        import txredisapi

        return txredisapi.lazyConnection(
            self.host,
            self.port,
            dbid=self.db,
            convertNumbers=False,
            connectTimeout=CALL_TIMEOUT,
        )

    def _later(self, name: str, function: Callable[[], None]) -> None:
        """Call C{function} in L{RETRY} seconds, unless that is under way."""
        from twisted.internet import reactor

        timer = self._timers.get(name)
        if not self._stopped and (timer is None or not timer.active()):
            self._timers[name] = reactor.callLater(self.RETRY, function)

    # Reading the events ----------------------------------------------------

    def _read(self) -> None:
        if self._stopped:
            return
        from twisted.internet import reactor

        if self._last is None:
            # Start after the newest event: what came before is history.
            d = self._reader.execute_command(
                "XREVRANGE", self.stream, "+", "-", "COUNT", "1"
            )
            d.addCallback(self._started)
        else:
            d = self._reader.execute_command(
                "XREAD",
                "BLOCK",
                self.BLOCK,
                "COUNT",
                self.BATCH,
                "STREAMS",
                self.stream,
                self._last,
            )
            d.addCallback(self._got)
        d.addTimeout(self.BLOCK / 1000 + CALL_TIMEOUT, reactor)
        d.addErrback(self._read_failed)

    def _started(self, newest: list[Any]) -> None:
        self._last = newest[0][0] if newest else "0-0"
        self._read_ok()
        self._read()

    def _got(self, reply: list[Any] | None) -> None:
        self._read_ok()
        for _stream, entries in reply or ():
            for entry_id, fields in entries:
                self._last = entry_id
                try:
                    # Fields: o, the node that added it; e, the event.
                    self.on_event(fields[1], fields[3])
                except Exception:
                    log.failure("cluster: an event could not be handled")
        self._wake()
        self._read()

    def caught_up(self, event_id: str) -> Deferred[None]:
        """Fire once the events up to C{event_id} have been handled.

        What a script answers may come before the events it followed: a
        user registered here must not be told of what happened before.
        Fires anyway after L{CALL_TIMEOUT} seconds, if reading is stuck.
        """
        if self._last is not None and _order(self._last) >= _order(event_id):
            return succeed(None)
        from twisted.internet import reactor

        d: Deferred[None] = Deferred()
        self._waiting.append((_order(event_id), d))
        return d.addTimeout(CALL_TIMEOUT, reactor).addErrback(lambda _: None)

    def _wake(self) -> None:
        if not self._waiting or self._last is None:
            return
        last = _order(self._last)
        ready = [d for order, d in self._waiting if order <= last]
        self._waiting = [(o, d) for o, d in self._waiting if o > last]
        for d in ready:
            if not d.called:
                d.callback(None)

    def _read_ok(self) -> None:
        if not self._reading:
            self._reading = True
            self._check()

    def _read_failed(self, failure: Failure) -> None:
        if self._stopped:
            return
        if self._reading:
            log.warn(
                "cluster: reading events from Redis failed ({error}); connecting again",
                error=failure.getErrorMessage() or failure.type.__name__,
            )
        self._reading = False
        self._down()
        old, self._reader = self._reader, self._connect()
        old.disconnect().addErrback(lambda _: None)
        self._later("read", self._read)

    # Commands ----------------------------------------------------------------

    def _down(self) -> None:
        if self.up:
            self.up = False
            self.on_down()

    def _check(self) -> None:
        """Come up once the command connection answers too."""
        if self._stopped or self._checking or not self._reading:
            return
        from twisted.internet import reactor

        self._checking = True
        d = self._commands.ping().addTimeout(CALL_TIMEOUT, reactor)

        def answered(_: object) -> None:
            self._checking = False
            if self._reading and not self.up and not self._stopped:
                self.up = True
                self.on_up()

        def failed(_: Failure) -> None:
            self._checking = False
            self._replace_commands()

        d.addCallbacks(answered, failed)

    def _replace_commands(self) -> None:
        """A new command connection, checked a little later."""
        if self._stopped:
            return
        old, self._commands = self._commands, self._connect()
        old.disconnect().addErrback(lambda _: None)
        self._later("check", self._check)

    def _failed(self, failure: Failure) -> Failure:
        """A command failed: if for want of a connection, the link is down."""
        import txredisapi

        if not failure.check(txredisapi.ResponseError) and self.up:
            log.warn(
                "cluster: a Redis command failed ({error}); connecting again",
                error=failure.getErrorMessage() or failure.type.__name__,
            )
            self._down()
            self._replace_commands()
        return failure

    def _send(self, command: str, *args: object) -> Deferred[Any]:
        if not self.up or self._commands is None:
            return fail(Unreachable())
        from twisted.internet import reactor

        d = getattr(self._commands, command)(*args)
        return d.addTimeout(CALL_TIMEOUT, reactor).addErrback(self._failed)

    def call(self, script: str, *args: object) -> Deferred[Any]:
        """Run one of the cluster's Lua scripts; fails at once when down."""
        return self._send("eval", _SCRIPTS[script], [], [str(a) for a in args])

    def command(self, name: str, *args: object) -> Deferred[Any]:
        """Send one Redis command (a txredisapi method); fails when down."""
        return self._send(name, *args)

    def stop(self) -> Deferred[object]:
        """Disconnect, and stop reconnecting."""
        self._stopped = True
        self.up = False
        for timer in self._timers.values():
            if timer.active():
                timer.cancel()
        waiting, self._waiting = self._waiting, []
        for _, d in waiting:
            if not d.called:
                d.callback(None)
        handlers = [h for h in (self._commands, self._reader) if h is not None]
        self._commands = self._reader = None
        return DeferredList([h.disconnect() for h in handlers], consumeErrors=True)


def node_name() -> str:
    """A name for this node that no other node has: host, pid, and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


@implementer(IRegistry)
class ClusterRegistry:
    """An L{IRegistry} shared by every node of a cluster, through Redis.

    @param url: C{redis://HOST:PORT/DB}.
    @param cluster: the cluster's name; nodes with the same name (and
        Redis database) are one server.
    @param node_ttl: seconds after which a silent node's users are gone.
    @param history: how many lines each room's scrollback keeps.
    @param announce_max: as for L{chatservice.registry.Registry}.
    @param on_notice: how to tell every local user something (by default,
        L{announce} to the local users only).
    """

    lobby = LOBBY

    def __init__(
        self,
        url: str,
        cluster: str = "chat",
        node_ttl: float = 15.0,
        history: int = 50,
        clock: IReactorTime | None = None,
        announce_max: int | None = None,
        node: str | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self._clock = clock
        self.cluster = cluster
        self.node = node if node is not None else node_name()
        self._prefix = f"chatservice:{cluster}:"
        self._node_ttl = node_ttl
        self._history = history
        self._announce_max = announce_max
        self._amax = -1 if announce_max is None else announce_max
        self._users: dict[IChatClient, _User] = {}
        self._by_fold: dict[str, IChatClient] = {}
        self._rooms: dict[str, _Room] = {LOBBY: _Room(LOBBY, history)}
        self._stopping = False
        self._pending: set[Deferred[Any]] = set()
        self._told_down = False
        self._resyncing = False
        #: Users who registered, and who left, while Redis was out of reach
        #: (folded nickname; and the rooms of those who left).
        self._joined_while_down: set[str] = set()
        self._left_while_down: dict[str, tuple[str, tuple[str, ...], bytes]] = {}
        #: The lines telling of rooms users left meanwhile, by user and room.
        self._parted_while_down: dict[str, dict[str, str]] = {}
        #: Lines for held sessions, sent to Redis at the iteration's end.
        self._keeping: dict[str, tuple[list[bytes], int]] = {}
        self.said = 0
        self.delivered = 0
        self.link = RedisLink(
            url,
            self._prefix + "events",
            self._event,
            self._link_up,
            self._link_down,
        )
        self._heartbeat = LoopingCall(self._beat)
        self._heartbeat.clock = clock

    # Life ---------------------------------------------------------------

    def start(self) -> None:
        """Connect to Redis; the node serves its own users until it is up."""
        self.link.start()
        self._first_check = self._clock.callLater(CALL_TIMEOUT, self._not_yet_up)

    _first_check: Any = None

    def _not_yet_up(self) -> None:
        self._first_check = None
        if not self.link.up:
            log.warn(
                "cluster {cluster}: cannot reach Redis at {host}:{port} yet; "
                "serving this node's users alone until it can",
                cluster=self.cluster,
                host=self.link.host,
                port=self.link.port,
            )

    @property
    def up(self) -> bool:
        """Whether this node is part of the cluster now."""
        return self.link.up and not self._resyncing

    def close(self) -> Deferred[object]:
        """Leave the cluster (the node's users must have gone) and disconnect."""
        self._closing = True
        if self._heartbeat.running:
            self._heartbeat.stop()
        for call in (self._first_check, self._retry, self._keep_call):
            if call is not None and call.active():
                call.cancel()
        d = self.idle()

        def retire(_: object) -> Deferred[Any] | None:
            if not self.link.up:
                return None
            retired = self.link.call(
                "retire", self._prefix, self.node, self._amax, LOBBY
            )
            # Users still here (a registration under way at the stop): gone.
            return retired.addCallback(self._announce_gone)

        d.addCallback(retire)
        d.addErrback(lambda failure: None)
        d.addCallback(lambda _: self.idle())
        d.addCallback(lambda _: self.link.stop())
        return d

    _closing = False

    def idle(self) -> Deferred[None]:
        """Fire once no call to Redis is under way."""
        if self._keep_call is not None and self._keep_call.active():
            self._keep_call.cancel()
            self._keep_now()  # what waits for the iteration's end goes now
        if not self._pending:
            return succeed(None)
        d = DeferredList(list(self._pending), consumeErrors=True)
        return d.addCallback(lambda _: self.idle())

    def _call(self, script: str, *args: object) -> Deferred[Any]:
        return self._track(self.link.call(script, self._prefix, *args))

    def _track(self, d: Deferred[Any]) -> Deferred[Any]:
        """Count C{d} as under way until it fires (see L{idle})."""
        self._pending.add(d)

        def done(result: object) -> object:
            self._pending.discard(d)
            return result

        return d.addBoth(done)

    def _quietly(self, d: Deferred[Any], what: str) -> None:
        """Log a failed fire-and-forget call; Redis being down is no news."""

        def failed(failure: Failure) -> None:
            if not failure.check(Unreachable):
                log.warn(
                    "cluster: {what} failed: {error}",
                    what=what,
                    error=failure.getErrorMessage() or failure.type.__name__,
                )

        d.addErrback(failed)

    def _link_up(self) -> None:
        if self._closing:
            return
        log.info("cluster {cluster}: connected to Redis", cluster=self.cluster)
        self._resyncing = True
        self._beat().addBoth(self._resync)
        if not self._heartbeat.running:
            self._heartbeat.start(self._node_ttl / 4, now=False)

    def _link_down(self) -> None:
        log.warn(
            "cluster {cluster}: Redis is out of reach; serving this node's "
            "users alone until it is back",
            cluster=self.cluster,
        )
        if self._users and not self._stopping:
            self._told_down = True
            self._deliver(
                tuple(self._users),
                wire.notice(
                    "the other servers are unreachable: you see only the users "
                    "of this one until they are back"
                ),
                None,
            )

    def _beat(self) -> Deferred[Any]:
        """Renew the heartbeat, and reap the nodes that stopped renewing."""
        d = self.link.call(
            # Renewed every quarter of --node-ttl, it lasts three quarters:
            # a node is reaped within --node-ttl of its last heartbeat, by
            # another that reaps as often, and may miss two heartbeats.
            "heartbeat",
            self._prefix,
            self.node,
            int(self._node_ttl * 750),
        )

        def reap(reaped: int) -> Deferred[Any]:
            self._reaped = bool(int(reaped))
            if self._reaped and not self._resyncing and self.link.up:
                # The others took this node for dead (a pause longer than
                # --node-ttl): its users are gone from Redis; claim them.
                log.warn(
                    "cluster {cluster}: this node was taken for dead; claiming "
                    "its users again",
                    cluster=self.cluster,
                )
                self._resyncing = True
                self._resync(None)
            return self.link.call("reap", self._prefix, self._amax, LOBBY)

        d.addCallback(reap).addCallback(self._announce_reaped)
        self._quietly(d, "the heartbeat")
        return d

    _reaped = False

    def _announce_reaped(self, gone: list[list[Any]]) -> None:
        for key, nickname, rooms in gone:
            if not rooms:
                continue
            log.info(
                "cluster: {nickname}, of a node that stopped, has gone",
                nickname=nickname,
            )
            line = wire.left(nickname, "connection lost")
            self._on_event({"r": list(rooms), "d": _text(line)})
            # "s": a node that was only cut off, and still has the user,
            # reads this when it is back, and must not tell its users.
            event = {"o": self.node, "r": list(rooms), "s": key, "d": _text(line)}
            self._quietly(self._publish(event), "announcing a lost user")

    def _publish(self, event: dict[str, object]) -> Deferred[Any]:
        return self._command(
            "execute_command",
            "XADD",
            self._prefix + "events",
            "MAXLEN",
            "~",
            "100000",
            "*",
            "o",
            event.get("o", ""),
            "e",
            json.dumps(event),
        )

    def _resync(self, _: object) -> Deferred[None]:
        """Claim this node's users again, after Redis was out of reach.

        Until that has worked the node serves its users alone (L{up} is
        false); if it fails it is tried again a little later.  The others
        are told, once, of the users who came and went meanwhile; if the
        others took this node for dead (C{reaped}), of all its users.
        """
        reaped = self._reaped
        done: set[IChatClient] = set()
        failures: list[Failure] = []

        def next_batch(_: object = None) -> Deferred[None] | None:
            batch = [client for client in self._users if client not in done]
            if not batch:
                return None
            calls = []
            for client in batch:
                done.add(client)
                user = self._users[client]
                key = fold(user.nickname)
                record = {
                    "nick": user.nickname,
                    "node": self.node,
                    "host": user.host or "",
                    "away": user.away,
                    "rooms": list(user.rooms),
                }
                joined = {
                    room: _text(wire.joined(user.nickname, room)) for room in user.rooms
                }
                announce = reaped or key in self._joined_while_down
                d = self._call(
                    "reclaim",
                    self.node,
                    key,
                    json.dumps(record),
                    self._amax,
                    "1" if announce else "0",
                    json.dumps(joined),
                    json.dumps(self._parted_while_down.get(key, {})),
                    LOBBY,
                )
                d.addCallbacks(self._reclaimed, failures.append, callbackArgs=(client,))
                calls.append(d)
            return DeferredList(calls).addCallback(next_batch)

        def prune(_: object) -> Deferred[None]:
            if failures:
                failures[0].raiseException()
            keep = json.dumps([fold(user.nickname) for user in self._users.values()])
            d = self._call("prune", self.node, keep, self._amax, LOBBY)
            return d.addCallback(self._announce_left, reaped)

        def finished(result: object) -> None:
            if isinstance(result, Failure):
                log.warn(
                    "cluster: claiming this node's users again failed ({error}); "
                    "trying again",
                    error=result.getErrorMessage() or result.type.__name__,
                )
                self._resyncing = self.link.up
                if self.link.up and not self._closing:
                    if self._retry is not None and self._retry.active():
                        self._retry.cancel()
                    self._retry = self._clock.callLater(
                        RedisLink.RETRY, self._resync_again
                    )
                return
            self._resyncing = False
            self._joined_while_down.clear()
            self._left_while_down.clear()
            self._parted_while_down.clear()
            if reaped:
                # Announced once: the next heartbeat must not see it again.
                self._quietly(
                    self._command("delete", self._prefix + "reaped:" + self.node),
                    "a heartbeat",
                )
            if self._told_down:
                self._told_down = False
                self._deliver(
                    tuple(self._users),
                    wire.notice("the other servers are reachable again"),
                    None,
                )

        d: Deferred[None] = Deferred()
        d.addCallback(next_batch)
        d.addCallback(prune)
        d.addBoth(finished)
        d.callback(None)
        return d

    _retry: Any = None

    def _resync_again(self) -> None:
        self._retry = None
        if self.link.up and self._resyncing and not self._closing:
            self._resync(None)

    def _announce_gone(self, gone: list[list[Any]]) -> None:
        """Tell the others that these users, C{[nickname, rooms]}, are gone."""
        for nickname, rooms in gone:
            if rooms:
                line = wire.left(nickname, "connection lost")
                event = {"o": self.node, "r": list(rooms), "d": _text(line)}
                self._quietly(self._publish(event), "announcing a leave")

    def _announce_left(self, pruned: list[list[Any]], reaped: bool) -> None:
        """Tell the others of the users who left while Redis was away.

        Those whose records Redis still had were just removed (C{pruned});
        if Redis lost its data, the node remembers the others.  If the node
        was taken for dead, their leaves were told then.
        """
        lost = {
            nickname: (rooms, wire.left(nickname, "connection lost"))
            for nickname, rooms in pruned
        }
        if not reaped:
            for nickname, rooms, line in self._left_while_down.values():
                told = lost.get(nickname, (rooms, line))[0]
                lost[nickname] = (told, line)  # with the reason they left for
        for told, line in lost.values():
            if told:
                event = {"o": self.node, "r": list(told), "d": _text(line)}
                self._quietly(self._publish(event), "announcing a leave")

    def _reclaimed(self, reply: list[Any], client: IChatClient) -> None:
        if int(reply[0]) == 1:
            dead, told = reply[1], reply[2]
            if dead:  # the nickname was left behind by a node that died
                self._announce_gone([[dead, told]])
            return
        user = self._users.get(client)
        if user is None:
            return
        log.info(
            "cluster: {nickname} was taken on another node while this one was "
            "cut off; its user here is disconnected",
            nickname=user.nickname,
        )
        client.disconnect(
            f"another server gave the nickname {user.nickname} to someone else "
            "while the servers were cut off; reconnect and choose a nickname"
        )

    # Events from the other nodes -----------------------------------------

    def _event(self, origin: str, message: str) -> None:
        if origin == self.node:
            return  # this node acted on it already
        try:
            event = json.loads(message)
        except ValueError:
            log.warn(
                "cluster: an event that is not JSON: {message!r}", message=message[:200]
            )
            return
        if event.get("o") == self.node:
            return
        self._on_event(event)

    def _on_event(self, event: dict[str, Any]) -> None:
        if self._stopping:
            return
        if "ho" in event:
            self._moved(event["ho"])
            return
        if "ban" in event:
            if self.on_ban is not None:
                self.on_ban(*event["ban"])
            return
        if "unban" in event:
            if self.on_unban is not None:
                self.on_unban(event["unban"])
            return
        data = event["d"].encode("utf-8") if "d" in event else None
        target = event.get("to")
        if target is not None:
            client = self._by_fold.get(target)
            if client is None:
                return
            if "k" in event:
                client.disconnect(event["k"])
            elif data is not None:
                client.deliver(data)
            return
        if data is None:
            return
        if event.get("a"):
            self._deliver(tuple(self._users), data, None)
            return
        if event.get("s") in self._by_fold:
            # About a user of this node, from another that had it wrong (it
            # took this node for dead), or from before the user came here.
            return
        rooms = [
            self._rooms[name] for name in event.get("r", ()) if name in self._rooms
        ]
        if "h" in event:
            for room in rooms:
                if self._history:
                    room.history.append(Scrollback(event["h"], data))
        if len(rooms) == 1:
            recipients: Iterable[IChatClient] = rooms[0].recipients
        else:
            recipients = dict.fromkeys(c for room in rooms for c in room.recipients)
        self._deliver(recipients, data, None)

    # Resuming on another node -------------------------------------------

    #: Told of a local session that was resumed on another node (after it
    #: left this node's index, silently): the factory's session keeper.
    on_moved: Callable[[IChatClient], None] | None = None

    #: Told of a ban made, or lifted, on another node: the factory's.
    on_ban: Callable[[str, float | None, str, str], None] | None = None
    on_unban: Callable[[str], None] | None = None

    def share_ban(
        self, network: str, expires: float | None, reason: str, by: str
    ) -> None:
        """Tell the other nodes of a ban made here."""
        event = {"o": self.node, "ban": [network, expires, reason, by]}
        self._quietly(self._publish(event), "sharing a ban")

    def share_unban(self, network: str) -> None:
        """Tell the other nodes of a ban lifted here."""
        self._quietly(self._publish({"o": self.node, "unban": network}), "an unban")

    def store_token(self, nickname: str, token_digest: str) -> None:
        """Keep the digest of C{nickname}'s resume token where nodes see it."""
        if self.up:
            key = fold(nickname)
            d = self._command("set", self._prefix + "token:" + key, token_digest)
            self._quietly(d, "storing a resume token")
            # A new token: the lines kept for the last drop have been seen.
            d = self._command("delete", self._prefix + "missed:" + key)
            self._quietly(d, "forgetting missed lines")

    def keep_for(self, nickname: str, data: bytes, limit: int) -> None:
        """Keep a line for a held session, for a resume on another node.

        What a held session is sent in one reactor iteration goes to Redis
        in one call at its end.
        """
        if not self.up:
            return
        key = fold(nickname)
        kept = self._keeping.get(key)
        if kept is not None:
            kept[0].append(data)
            return
        self._keeping[key] = ([data], limit)
        if self._keep_call is None:
            self._keep_call = self._clock.callLater(0, self._keep_now)

    _keep_call: Any = None

    def _keep_now(self) -> None:
        self._keep_call = None
        keeping, self._keeping = self._keeping, {}
        ttl = int(self._node_ttl * 4 + 3600)
        for key, (chunks, limit) in keeping.items():
            d = self._call("keep", key, _text(b"".join(chunks)), limit, ttl)
            self._quietly(d, "keeping lines for a held session")

    def resume_elsewhere(
        self, client: IChatClient, nickname: str, token_digest: str
    ) -> Deferred[tuple[str, str, bytes, int] | None]:
        """Move C{nickname}'s session from another node to C{client} here.

        Fires with (nickname, room, missed lines, their count), or None if
        there is no such session or the token is wrong.
        """
        key = fold(nickname)
        if not self.up or key in self._by_fold:
            return succeed(None)
        back = _text(wire.back(nickname))
        d = self._call("resume", self.node, key, token_digest, self._amax, back)

        def caught_up(reply: list[Any] | None) -> Deferred[Any] | None:
            if not reply:
                return None
            return self.link.caught_up(reply[3]).addCallback(lambda _: reply)

        def resumed(reply: list[Any] | None) -> tuple[str, str, bytes, int] | None:
            if not reply:
                return None
            raw, missed, told, _ = reply
            record = json.loads(raw)
            nickname = record["nick"]
            rooms = record["rooms"] if isinstance(record["rooms"], list) else []
            self._add_local(client, nickname, key)
            user = self._users[client]
            user.away = record.get("away")
            for name in rooms or [LOBBY]:
                self._enter_local(client, name, announce=False)
            line = wire.back(nickname)
            neighbours = dict.fromkeys(
                c
                for name in told
                if name in self._rooms
                for c in self._rooms[name].recipients
            )
            self._deliver(neighbours, line, client)
            data = "".join(missed).encode("utf-8")
            return nickname, user.rooms[-1], data, data.count(b"\n")

        return d.addCallback(caught_up).addCallback(resumed)

    def _moved(self, key: str) -> None:
        """The user C{key} resumed on another node: forget them here."""
        client = self._by_fold.pop(key, None)
        if client is None:
            return
        user = self._users.pop(client)
        for name in user.rooms:
            self._rooms[name].discard(client)
            self._forget_if_empty(name)
        log.info(
            "cluster: {nickname} resumed the session on another node",
            nickname=user.nickname,
        )
        if self.on_moved is not None:
            self.on_moved(client)

    # IRegistry -----------------------------------------------------------

    def register(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.register}."""
        key = fold(nickname)
        if key in self._by_fold:
            return fail(NicknameInUse(nickname))
        if not self.up:
            return succeed(self._register_here(client, nickname))
        host = getattr(client, "host", None) or ""
        d = self._call(
            "register",
            self.node,
            key,
            nickname,
            host,
            LOBBY,
            self._amax,
            _text(wire.joined(nickname, LOBBY)),
        )

        def claimed(reply: list[Any]) -> Deferred[str]:
            if int(reply[0]) != 1:
                raise NicknameInUse(nickname)
            waited = self.link.caught_up(reply[2])
            return waited.addCallback(lambda _: enter(int(reply[1])))

        def enter(size: int) -> str:
            if key in self._by_fold:  # taken here while Redis answered
                self._quietly(
                    self._call("unregister", self.node, key, self._amax, LOBBY, ""),
                    "a release",
                )
                raise NicknameInUse(nickname)
            self._add_local(client, nickname, key)
            self._enter_local(client, LOBBY, announce=self._announce(size))
            return nickname

        def unreachable(failure: Failure) -> str:
            _trap_unreachable(failure)
            return self._register_here(client, nickname)

        return d.addCallbacks(claimed, unreachable)

    def _register_here(self, client: IChatClient, nickname: str) -> str:
        """Register C{client} on this node alone; claimed in Redis later."""
        key = fold(nickname)
        if key in self._by_fold:
            raise NicknameInUse(nickname)
        self._joined_while_down.add(key)
        size = len(self._rooms[LOBBY]) + 1
        self._add_local(client, nickname, key)
        self._enter_local(client, LOBBY, announce=self._announce(size))
        return nickname

    def rename(self, client: IChatClient, nickname: str) -> Deferred[str]:
        """See L{IRegistry.rename}."""
        user = self._users[client]
        old, key = user.nickname, fold(nickname)
        holder = self._by_fold.get(key)
        if holder is not None and holder is not client:
            return fail(NicknameInUse(nickname))
        if not self.up:
            # The new nickname could not be claimed, nor the old one freed.
            return fail(ChatError(RENAME_CUT_OFF))
        d = self._call(
            "rename",
            self.node,
            fold(old),
            key,
            nickname,
            _text(wire.renamed(old, nickname)),
        )

        def renamed(result: int) -> str:
            if int(result) == 0:
                raise NicknameInUse(nickname)
            if client in self._users:
                self._rename_local(client, user, nickname)
            return nickname

        return d.addCallbacks(renamed, _cut_off(RENAME_CUT_OFF))

    def unregister(self, client: IChatClient, reason: str) -> None:
        """See L{IRegistry.unregister}."""
        user = self._users.pop(client, None)
        if user is None:
            return
        key = fold(user.nickname)
        del self._by_fold[key]
        line = wire.left(user.nickname, reason)
        rooms = user.rooms
        for name in rooms:
            self._rooms[name].discard(client)
        if not self.up:
            for name in rooms:
                room = self._rooms[name]
                if not self._stopping and self._announce(len(room) + 1):
                    self._deliver(room.recipients, line, client)
                self._forget_if_empty(name)
            if not self.link.up:
                if key in self._joined_while_down:
                    self._joined_while_down.discard(key)  # nobody else saw them
                else:
                    self._left_while_down[key] = (user.nickname, rooms, line)
            else:  # claiming users again: this one must not stay
                self._quietly(
                    self._call(
                        "unregister", self.node, key, self._amax, LOBBY, _text(line)
                    ),
                    "a leave",
                )
            return
        d = self._call("unregister", self.node, key, self._amax, LOBBY, _text(line))

        before = {name: self._rooms[name].recipients for name in rooms}

        def told(announced: list[str]) -> None:
            if not self._stopping:
                neighbours = dict.fromkeys(
                    c for name in announced for c in self._still_in(name, before[name])
                )
                self._deliver(neighbours, line, client)
            for name in rooms:
                self._forget_if_empty(name)

        def here(failure: Failure) -> None:
            # Redis did not answer: tell this node's users, and the others
            # once it is back (the node claims its users again then).
            _trap_unreachable(failure)
            self._left_while_down[key] = (user.nickname, rooms, line)
            if not self._stopping:
                neighbours = dict.fromkeys(
                    c
                    for name in rooms
                    if self._announce(len(before[name]) + 1)
                    for c in self._still_in(name, before[name])
                )
                self._deliver(neighbours, line, client)
            for name in rooms:
                self._forget_if_empty(name)

        d.addCallbacks(told, here)
        self._quietly(d, "a leave")

    def join(self, client: IChatClient, room: str) -> Deferred[list[Scrollback]]:
        """See L{IRegistry.join}."""
        user = self._users[client]
        if not self.up:
            if room not in user.rooms:
                size = len(self._rooms[room]) + 1 if room in self._rooms else 1
                self._enter_local(client, room, self._announce(size))
            return succeed(list(self._rooms[room].history))
        entered = room not in user.rooms
        before = self._rooms[room].recipients if room in self._rooms else ()
        if entered:
            # At once, so that what the user does next reaches the room; the
            # others here are told once Redis says how big the room is.
            self._enter_local(client, room, announce=False)
        d = self._call(
            "join",
            self.node,
            fold(user.nickname),
            room,
            self._amax,
            _text(wire.joined(user.nickname, room)),
            self._history,
        )

        def joined(reply: list[Any]) -> list[Scrollback]:
            size = int(reply[0])
            if entered and self._announce(size) and size > 0:
                line = wire.joined(user.nickname, room)
                self._deliver(self._still_in(room, before), line, client)
            if size < 0:
                return list(self._rooms[room].history) if room in self._rooms else []
            history = [json.loads(raw) for raw in reversed(reply[1])]
            return [Scrollback(when, data.encode("utf-8")) for when, data in history]

        def here(failure: Failure) -> list[Scrollback]:
            # Redis did not answer: joined on this node, claimed later.
            _trap_unreachable(failure)
            size = len(before) + 1
            return joined([size if entered else -1, []])

        return d.addCallbacks(joined, here)

    def part(self, client: IChatClient, room: str, reason: str) -> None:
        """See L{IRegistry.part}."""
        user = self._users[client]
        if room not in user.rooms:
            return
        size = len(self._rooms[room])
        user.rooms = tuple(name for name in user.rooms if name != room)
        self._rooms[room].discard(client)
        line = wire.parted(user.nickname, room, reason)
        if not self.up:
            if self._announce(size):
                self._deliver(self._rooms[room].recipients, line, client)
            self._forget_if_empty(room)
            parted = self._parted_while_down.setdefault(fold(user.nickname), {})
            parted[room] = _text(line)
            return
        d = self._call(
            "part", self.node, fold(user.nickname), room, self._amax, LOBBY, _text(line)
        )

        before = self._rooms[room].recipients

        def told(announced: int) -> None:
            if int(announced):
                self._deliver(self._still_in(room, before), line, client)
            self._forget_if_empty(room)

        def here(failure: Failure) -> None:
            _trap_unreachable(failure)
            parted = self._parted_while_down.setdefault(fold(user.nickname), {})
            parted[room] = _text(line)
            told(self._announce(size))

        d.addCallbacks(told, here)
        self._quietly(d, "a part")

    def broadcast(self, room: str, data: bytes, sender: IChatClient | None) -> None:
        """See L{IRegistry.broadcast}."""
        self._deliver(self._rooms[room].recipients, data, sender)
        if self.up:
            event: dict[str, object] = {"o": self.node, "r": [room], "d": _text(data)}
            if sender is not None and sender in self._users:
                event["s"] = fold(self._users[sender].nickname)
            self._quietly(self._publish(event), "a broadcast")

    def say(self, room: str, data: bytes, sender: IChatClient) -> None:
        """See L{IRegistry.say}."""
        found = self._rooms[room]
        now = self._clock.seconds()
        if self._history:
            found.history.append(Scrollback(now, data))
        recipients = found.recipients
        self.said += 1
        self.delivered += len(recipients) - (sender in found)
        self._deliver(recipients, data, sender)
        if self.up:
            key = fold(self._users[sender].nickname) if sender in self._users else ""
            self._quietly(
                self._call(
                    "say", self.node, room, key, _text(data), repr(now), self._history
                ),
                "a line for the other nodes",
            )

    def send_private(self, nickname: str, data: bytes) -> Deferred[UserInfo]:
        """See L{IRegistry.send_private}."""
        return self._to_user(nickname, {"d": _text(data)}, lambda c: c.deliver(data))

    def find(self, nickname: str) -> Deferred[UserInfo]:
        """See L{IRegistry.find}."""
        client = self._by_fold.get(fold(nickname))
        if client is not None:
            return succeed(self._users[client].info())
        if not self.up:  # they may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        d = self._command("hget", self._prefix + "users", fold(nickname))

        def found(raw: str | None) -> UserInfo:
            if not raw:
                raise NoSuchNickname(nickname)
            return _info(raw)

        return d.addCallbacks(found, _cut_off(CUT_OFF))

    def kick(self, nickname: str, reason: str) -> Deferred[UserInfo]:
        """See L{IRegistry.kick}."""
        return self._to_user(nickname, {"k": reason}, lambda c: c.disconnect(reason))

    def _to_user(
        self, nickname: str, event: dict[str, str], act: Callable[[IChatClient], None]
    ) -> Deferred[UserInfo]:
        key = fold(nickname)
        client = self._by_fold.get(key)
        if client is not None:
            info = self._users[client].info()
            act(client)
            return succeed(info)
        if not self.up:  # they may be on another node: nobody can tell
            return fail(ChatError(CUT_OFF))
        d = self._call("to_user", self.node, key, json.dumps(event))

        def found(raw: str | None) -> UserInfo:
            if not raw:
                raise NoSuchNickname(nickname)
            return _info(raw)

        return d.addCallbacks(found, _cut_off(CUT_OFF))

    def replace(self, old: IChatClient, new: IChatClient, data: bytes | None) -> None:
        """See L{IRegistry.replace}."""
        user = swap_client(self._users, self._by_fold, self._rooms, old, new)
        if data is not None:
            rooms = [
                name for name in user.rooms if self._announce(len(self._rooms[name]))
            ]
            neighbours = dict.fromkeys(
                c for name in rooms for c in self._rooms[name].recipients
            )
            self._deliver(neighbours, data, new)
            if self.up and rooms:
                event = {
                    "o": self.node,
                    "r": rooms,
                    "s": fold(user.nickname),
                    "d": _text(data),
                }
                self._quietly(self._publish(event), "a notice")

    def announce(self, data: bytes) -> None:
        """See L{IRegistry.announce}."""
        self._deliver(tuple(self._users), data, None)
        if self.up:
            self._quietly(
                self._publish({"o": self.node, "a": 1, "d": _text(data)}), "a notice"
            )

    def count(self) -> Deferred[int]:
        """See L{IRegistry.count}."""
        if not self.up:
            return succeed(len(self._users))
        d = self._command("hlen", self._prefix + "users")
        return d.addCallbacks(int, lambda failure: len(self._users))

    def _command(self, name: str, *args: object) -> Deferred[Any]:
        return self._track(self.link.command(name, *args))

    def users(self, room: str | None = None) -> Deferred[list[UserInfo]]:
        """See L{IRegistry.users}."""
        if not self.up:
            return succeed(self._local_users(room))
        d = self._call("users", room or "")

        def infos(raws: list[str]) -> list[UserInfo]:
            return sorted(map(_info, raws), key=lambda info: fold(info.nickname))

        return d.addCallbacks(infos, lambda failure: self._local_users(room))

    def local_users(self) -> list[UserInfo]:
        """The users of this node (for metrics, which must not wait on Redis)."""
        return self._local_users(None)

    def local_rooms(self) -> list[RoomInfo]:
        """The rooms this node's users are in, with this node's members."""
        return [
            RoomInfo(name, len(room), room.topic)
            for name, room in sorted(self._rooms.items())
        ]

    def _local_users(self, room: str | None) -> list[UserInfo]:
        if room is None:
            clients: Iterable[IChatClient] = self._users
        else:
            found = self._rooms.get(room)
            clients = found.recipients if found is not None else ()
        infos = [self._users[client].info() for client in clients]
        return sorted(infos, key=lambda info: fold(info.nickname))

    def rooms(self) -> Deferred[list[RoomInfo]]:
        """See L{IRegistry.rooms}."""
        local = self.local_rooms()
        if not self.up:
            return succeed(local)
        d = self._call("rooms")

        def infos(rows: list[list[Any]]) -> list[RoomInfo]:
            found = {
                str(name): RoomInfo(str(name), int(n), str(topic))
                for name, n, topic in rows
            }
            found.setdefault(LOBBY, RoomInfo(LOBBY, 0, ""))
            return [found[name] for name in sorted(found)]

        return d.addCallbacks(infos, lambda failure: local)

    def topic(self, room: str) -> Deferred[str]:
        """See L{IRegistry.topic}."""
        found = self._rooms.get(room)
        local = found.topic if found is not None else ""
        if not self.up:
            return succeed(local)
        d = self._command("get", self._prefix + "topic:" + room)
        return d.addCallbacks(lambda topic: topic or "", lambda failure: local)

    def set_topic(self, client: IChatClient, room: str, topic: str) -> None:
        """See L{IRegistry.set_topic}."""
        self._rooms[room].topic = topic
        nickname = self._users[client].nickname
        line = wire.topic_set(nickname, room, topic)
        self._deliver(self._rooms[room].recipients, line, None)
        if self.up:
            self._quietly(
                self._call("topic", self.node, room, topic, _text(line)), "a topic"
            )

    def set_away(self, client: IChatClient, message: str | None) -> None:
        """See L{IRegistry.set_away}."""
        user = self._users[client]
        user.away = message
        if self.up:
            self._quietly(
                self._call(
                    "update",
                    self.node,
                    fold(user.nickname),
                    "away",
                    json.dumps(message),
                ),
                "an away message",
            )

    def stop(self) -> None:
        """See L{IRegistry.stop}."""
        self._stopping = True

    # The local index -----------------------------------------------------

    def _add_local(self, client: IChatClient, nickname: str, key: str) -> None:
        self._by_fold[key] = client
        self._users[client] = _User(nickname, getattr(client, "host", None))

    def _enter_local(self, client: IChatClient, name: str, announce: bool) -> None:
        room = self._rooms.get(name)
        if room is None:
            room = self._rooms[name] = _Room(name, self._history)
        user = self._users[client]
        user.rooms += (name,)
        room.add(client)
        if announce:
            self._deliver(room.recipients, wire.joined(user.nickname, name), client)

    def _rename_local(self, client: IChatClient, user: _User, nickname: str) -> None:
        old = user.nickname
        del self._by_fold[fold(old)]
        self._by_fold[fold(nickname)] = client
        user.nickname = nickname
        rooms = [self._rooms[name] for name in user.rooms]
        neighbours = dict.fromkeys(c for room in rooms for c in room.recipients)
        self._deliver(neighbours, wire.renamed(old, nickname), None)

    def _still_in(
        self, name: str, members: tuple[IChatClient, ...]
    ) -> list[IChatClient]:
        """Those of C{members} who are still in room C{name}."""
        room = self._rooms.get(name)
        if room is None:
            return []
        return [client for client in members if client in room]

    def _forget_if_empty(self, name: str) -> None:
        room = self._rooms.get(name)
        if room is not None and name != LOBBY and not len(room):
            del self._rooms[name]

    def _announce(self, size: int) -> bool:
        return self._announce_max is None or size <= self._announce_max

    #: The fan-out loop, the in-memory registry's.
    _deliver = staticmethod(Registry._deliver)


#: What a user is told when Redis did not answer for something only it knows.
CUT_OFF = "the other servers did not answer; try again in a moment"
RENAME_CUT_OFF = (
    "nicknames cannot change while the other servers are unreachable; "
    "try again in a moment"
)


def _cut_off(message: str) -> Callable[[Failure], object]:
    """An errback: Redis did not answer, so the user is told C{message}."""

    def errback(failure: Failure) -> object:
        _trap_unreachable(failure)
        raise ChatError(message)

    return errback


def _trap_unreachable(failure: Failure) -> None:
    """Let through a failure that means Redis did not answer; raise others.

    Redis's own errors (a script that failed) are bugs, not outages.
    """
    import txredisapi

    if failure.check(txredisapi.ResponseError):
        failure.raiseException()


def _order(event_id: str) -> tuple[int, int]:
    """A stream id, C{MILLISECONDS-SEQUENCE}, as something that sorts."""
    ms, _, seq = str(event_id).partition("-")
    return int(ms), int(seq or 0)


def _text(data: bytes) -> str:
    """Wire bytes as text for JSON: they are UTF-8 (sanitised on the way in)."""
    return data.decode("utf-8", "replace")


def _info(raw: str) -> UserInfo:
    user = json.loads(raw)
    return UserInfo(user["nick"], user.get("away"), user.get("host") or None)
