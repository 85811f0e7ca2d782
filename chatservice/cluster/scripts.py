"""The cluster's Lua scripts: every change to the shared state, in Redis.

Each script makes its change and adds the message the other nodes act on
in one step, so the messages are in the order of the changes.  A chat
event a script publishes or keeps (a join, a leave, a line said) is handed
to it as the JSON a node made of it (L{events.dumped}), and goes into the
message as it is, never rendered as a line nor decoded and encoded again;
only a reaped user's leave is made here, from the JSON of a leave with
the nickname left blank.

Over 500 lines, and kept in one module on purpose: it is Lua source, one
script after another, sharing the helpers at its top; split, a script's
keys and events would be read in two places.
"""

from .events import EVENT_MAX

# Lua -----------------------------------------------------------------------
#
# Every script gets the key prefix as ARGV[1] and builds its keys from it:
# one Redis server (or a primary with replicas) holds a cluster's keys, not
# a Redis Cluster.  Users are JSON; cjson turns an empty Lua table into {},
# a JSON object, so a user's rooms are never left empty (the lobby stays).
# _HELPERS are Lua functions that several scripts share.

#: How many messages the stream keeps (about: Redis trims whole nodes of up
#: to 100 entries).  At most L{events.EVENT_MAX} bytes each, the stream
#: holds at most 64 MiB of them; chat lines make it a few MB.
STREAM_EVENTS = 8192

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
    redis.call('DEL', P .. 'token:' .. fold, P .. 'missed:' .. fold,
               P .. 'missed-bytes:' .. fold)
end
-- The id of the newest event: what a node must have read before it acts
-- on this script's answer.
local function last_id(P)
    local newest = redis.call('XREVRANGE', P .. 'events', '+', '-', 'COUNT', 1)
    if #newest == 0 then return '0-0' end
    return newest[1][1]
end
-- A message is at most EVENT_MAX bytes (the nodes cut the events they
-- send to fit); the stream keeps about STREAM_EVENTS of them, so it is
-- bounded in bytes, not only in messages.  ev: the JSON of the chat event
-- the message carries, put in as it is (not decoded and encoded again);
-- '' for none: nobody is told.
local function publish(P, event, ev)
    if ev == '' then return end
    local text = cjson.encode(event)
    if ev then text = string.sub(text, 1, -2) .. ',"ev":' .. ev .. '}' end
    if #text > EVENT_MAX then return end
    redis.call('XADD', P .. 'events', 'MAXLEN', '~', 'STREAM_EVENTS', '*',
               'o', event.o or '', 'e', text)
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
""".replace("STREAM_EVENTS", str(STREAM_EVENTS)).replace("EVENT_MAX", str(EVENT_MAX))

# ARGV: P, node, fold, nickname, host, lobby, amax, joined-event.
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
    publish(P, {o = node, r = {lobby}, s = fold}, ARGV[8])
end
return {1, size, last_id(P)}
"""
)

# ARGV: P, node, fold, amax, lobby, left-event.  Publishes the leave in the
# rooms small enough; returns those rooms.
_UNREGISTER = (
    _HELPERS
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local amax, lobby = tonumber(ARGV[4]), ARGV[5]
local nick, told = remove_user(P, fold, node, amax, lobby)
if not nick then return {} end
if #told > 0 then publish(P, {o = node, r = told, s = fold}, ARGV[6]) end
return told
"""
)

# ARGV: P, node, fold, room, amax, joined-event, history.
# Returns {size, {history (events), newest first}}, or {-1} for an unknown
# user.
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
    publish(P, {o = node, r = {room}, s = fold}, ARGV[6])
end
return {size, lines}
"""
)

# ARGV: P, node, fold, room, amax, lobby, parted-event.
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
    publish(P, {o = node, r = {room}, s = fold}, ARGV[7])
    return 1
end
return 0
"""
)

# ARGV: P, node, room, sender fold (or ''), event, history.  The event (a
# line said, with its time) goes to the other nodes and the scrollback.
_SAY = (
    _HELPERS
    + """
local P, room, history = ARGV[1], ARGV[3], tonumber(ARGV[6])
local sender = ARGV[4]
if sender == '' then sender = nil end
publish(P, {o = ARGV[2], r = {room}, s = sender, h = 1}, ARGV[5])
if history > 0 and redis.call('EXISTS', P .. 'room:' .. room) == 1 then
    local key = P .. 'history:' .. room
    redis.call('LPUSH', key, ARGV[5])
    redis.call('LTRIM', key, 0, history - 1)
end
return 1
"""
)

# ARGV: P, node, old fold, new fold, nickname, renamed-event.
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
publish(P, {o = node, r = user.rooms}, ARGV[6])
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

# ARGV: P, node, fold, message (JSON, without the recipient), the event it
# carries (JSON) or ''.  Sends the message to the node of the user called
# fold; returns the user, or false.
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
    if ARGV[5] == '' then publish(P, event) else publish(P, event, ARGV[5]) end
end
return raw
"""
)

# ARGV: P, node, room, topic, topic-event.
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
publish(P, {o = ARGV[2], r = {room}}, ARGV[5])
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

# ARGV: P, amax, lobby, this node, a leave event (JSON) with the nickname
# left blank.  Removes the users of every node whose heartbeat expired,
# and tells the others of them, each with that leave, their nickname in it;
# returns them as {fold, nickname, {rooms to tell}}.
_REAP = (
    _HELPERS
    + """
local P, amax, lobby = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local left = cjson.decode(ARGV[5])
local gone = {}
for _, node in ipairs(redis.call('SMEMBERS', P .. 'nodes')) do
    if not alive(P, node) then
        for _, fold in ipairs(redis.call('SMEMBERS', P .. 'node-users:' .. node)) do
            local nick, told = remove_user(P, fold, node, amax, lobby)
            if nick then
                table.insert(gone, {fold, nick, told})
                if #told > 0 then
                    -- s: a node only cut off, which still has the user, reads
                    -- this once back, and must not tell its users.
                    left.nick = nick
                    publish(P, {o = ARGV[4], r = told, s = fold}, cjson.encode(left))
                end
            end
        end
        redis.call('DEL', P .. 'node-users:' .. node)
        redis.call('SREM', P .. 'nodes', node)
        redis.call('SET', P .. 'reaped:' .. node, '1', 'EX', 86400)
    end
end
return gone
"""
)

# ARGV: P, node, fold, user (JSON), amax, announce (1/0), joined-events
# (JSON, room -> event JSON), parted-events (the same), lobby, the digest
# of the user's resume token ('' if none: Redis keeps what it has).  Claims a
# user of this node again after Redis was out of reach, with the rooms it is
# in now.  Returns {1, nickname of a dead node's user it replaced or '',
# {rooms to tell of that one}}, or {0} if another live node has the nickname.
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
if ARGV[10] and ARGV[10] ~= '' then
    redis.call('SET', P .. 'token:' .. fold, ARGV[10])
end
local now = {}
for _, room in ipairs(user.rooms) do
    now[room] = true
    redis.call('HSET', P .. 'room:' .. room, fold, user.nick)
    redis.call('SADD', P .. 'rooms', room)
    local size = redis.call('HLEN', P .. 'room:' .. room)
    if (announce or (raw and not dead and not had[room]))
            and (amax < 0 or size <= amax) and joined[room] then
        publish(P, {o = node, r = {room}, s = fold}, joined[room])
    end
end
-- Rooms the user left while this node was cut off.
for room, _ in pairs(had) do
    if not now[room] and leave_room(P, fold, room, amax, lobby) and parted[room] then
        publish(P, {o = node, r = {room}, s = fold}, parted[room])
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

# The events a held session misses, where a node it resumes on can read
# them: C{missed:FOLD}, a list of events (JSON), and C{missed-bytes:FOLD},
# their size in bytes, both bounded: the oldest go first.
_MISSED = """
local function trim_missed(P, fold, lines, bytes, ttl)
    local key, size = P .. 'missed:' .. fold, P .. 'missed-bytes:' .. fold
    while redis.call('LLEN', key) > lines
            or tonumber(redis.call('GET', size) or '0') > bytes do
        local old = redis.call('LPOP', key)
        if not old then break end
        redis.call('DECRBY', size, #old)
    end
    redis.call('EXPIRE', key, ttl)
    redis.call('EXPIRE', size, ttl)
end
local function push_missed(P, fold, chunks)
    local key, size = P .. 'missed:' .. fold, P .. 'missed-bytes:' .. fold
    for _, chunk in ipairs(chunks) do
        redis.call('RPUSH', key, chunk)
        redis.call('INCRBY', size, #chunk)
    end
end
"""

# ARGV: P, fold, events (a JSON list of their JSON), events kept at most,
# bytes kept at most, seconds to keep them.  Events for a held session.
_KEEP = (
    _MISSED
    + """
local P, fold = ARGV[1], ARGV[2]
push_missed(P, fold, cjson.decode(ARGV[3]))
trim_missed(P, fold, tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
return 1
"""
)

# ARGV: P, node, fold, token digest, new token digest, amax, back-event.
# Checks the token and replaces it, in one step: a token works once in the
# whole cluster.  If the session is this node's, returns {user, 0}: it is
# resumed here.  Otherwise moves it here, and tells its node (ho, with n,
# that node, and the user's nickname and rooms, for this node to take it
# in at this point of the stream) and the user's rooms.  Returns {user, 1,
# {rooms told}, id of the newest event, 1 if the old node is alive and
# will hand over the lines it kept (handed)}, or false.
_RESUME = (
    _HELPERS
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
local amax = tonumber(ARGV[6])
local token = P .. 'token:' .. fold
if redis.call('GET', token) ~= ARGV[4] then return false end
local raw = redis.call('HGET', P .. 'users', fold)
if not raw then return false end
redis.call('SET', token, ARGV[5])
local user = cjson.decode(raw)
local old = user.node
if old == node then return {raw, 0} end
user.node = node
redis.call('HSET', P .. 'users', fold, cjson.encode(user))
redis.call('SREM', P .. 'node-users:' .. old, fold)
redis.call('SADD', P .. 'node-users:' .. node, fold)
publish(P, {o = node, ho = fold, n = old, nick = user.nick, rooms = user.rooms})
local told = {}
for _, room in ipairs(user.rooms) do
    local size = redis.call('HLEN', P .. 'room:' .. room)
    if amax < 0 or size <= amax then table.insert(told, room) end
end
if #told > 0 then publish(P, {o = node, r = told, s = fold}, ARGV[7]) end
return {raw, 1, told, last_id(P), alive(P, old) and 1 or 0}
"""
)

# ARGV: P, node, fold, events (a JSON list of their JSON) or '' (none
# here: keep what Redis has), events, bytes, ttl.  The old node of a
# session resumed elsewhere hands over every event it kept for it (all it
# was sent before the hand-over message), then says so (handed), after its
# earlier calls.
_HANDED = (
    _HELPERS
    + _MISSED
    + """
local P, node, fold = ARGV[1], ARGV[2], ARGV[3]
if ARGV[4] ~= '' then
    redis.call('DEL', P .. 'missed:' .. fold, P .. 'missed-bytes:' .. fold)
    push_missed(P, fold, cjson.decode(ARGV[4]))
    trim_missed(P, fold, tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
end
publish(P, {o = node, handed = fold})
return 1
"""
)

# ARGV: P, fold.  The events kept for a session, now taken by its new node.
_TAKE_MISSED = """
local key = ARGV[1] .. 'missed:' .. ARGV[2]
local missed = redis.call('LRANGE', key, 0, -1)
redis.call('DEL', key, ARGV[1] .. 'missed-bytes:' .. ARGV[2])
return missed
"""

# ARGV: P, node, amax, rooms (JSON), left-event.  Tells the rooms small enough,
# counting one who has left them, of that one's leaving (after an outage).
_TOLD_LEFT = (
    _HELPERS
    + """
local P, amax = ARGV[1], tonumber(ARGV[3])
local told = {}
for _, room in ipairs(cjson.decode(ARGV[4])) do
    local size = redis.call('HLEN', P .. 'room:' .. room)
    if size > 0 and (amax < 0 or size + 1 <= amax) then table.insert(told, room) end
end
if #told > 0 then publish(P, {o = ARGV[2], r = told}, ARGV[5]) end
return told
"""
)

#: The scripts, by the name L{RedisLink.call} takes.
SCRIPTS = {
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
    "handed": _HANDED,
    "take_missed": _TAKE_MISSED,
    "told_left": _TOLD_LEFT,
}
