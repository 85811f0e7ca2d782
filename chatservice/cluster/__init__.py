"""Several C{twistd chat} nodes that behave as one server, sharing Redis.

A L{ClusterRegistry} is an L{IRegistry}.  It keeps its own node's clients in
memory, as the in-memory registry does, and fans events out to them
itself; what the other nodes must know lives in Redis.  Nodes exchange chat
events (L{chatservice.events.Event}), never wire lines: each as the JSON of
its fields and its time (L{events.dumped}), checked and sanitised again
when read (L{events.loaded}), so a user on another node gets the same typed
event (room, nickname, text, time) as one on the node it was made on.

  - C{PREFIX users}: a hash, nickname folded to lower case -> the user as
    JSON (nickname, node, away message, host, rooms).  A nickname is
    claimed by creating its field, atomically, in a Lua script.
  - C{PREFIX room:NAME}: a hash of a room's members (folded -> nickname);
    C{PREFIX rooms}: the set of rooms; C{PREFIX topic:NAME} and
    C{PREFIX history:NAME} (events, newest first, trimmed to C{--history}).
  - C{PREFIX node:ID}: a node's heartbeat, which expires after
    C{--node-ttl} seconds unless the node renews it; C{PREFIX nodes} and
    C{PREFIX node-users:ID} say which users each node serves.
  - C{PREFIX events}: a Redis stream, the last 8,192 messages of at most
    8 KiB (L{scripts.STREAM_EVENTS}, L{events.EVENT_MAX}).  Every
    change another node must act on is added there as JSON, by the same
    Lua script that makes the change, so it is in the order of the
    changes.  Each node reads the stream from where it left off (XREAD),
    so what it could not read for a while it reads when it can again.  An
    event crosses Redis once for each node, and each node hands the same
    event object to all its members of the room.

Each node delivers to its own clients at once and ignores its own events.
A script's answer can come before the events that preceded it have been
read: a user registered or resumed here is let in once they have been.

A resume token is checked and replaced in one script (the digests are in
C{PREFIX token:NICK}), so it works once in the whole cluster; a node cut
off resumes nobody.  A session resumed on another node moves at one point
of the stream, its hand-over event (C{ho}): the old node hands over what it
kept for it until then (C{handed}, after its earlier writes), and the new
node collects what comes after, so no line is lost or told twice.  What a
held session misses is also kept in C{PREFIX missed:NICK} (events, 64 KiB
of their JSON at most), for a node that dies holding it.

Every message read is checked, and the text of the event it carries
sanitised again (L{events}).

A node whose heartbeat has expired (it was killed, or cut off from Redis)
is reaped by whichever node notices first: one Lua script removes its users
and returns them, and that node publishes their leaves, once.

When Redis cannot be reached, the node goes on serving its own users as a
one-node server, tells them so once, and reconnects (txredisapi backs off
up to 10 s).  Once connected it claims its users' nicknames and rooms again,
tells the others who came and went meanwhile, and reads what they said; a
user whose nickname another node took meanwhile is told and disconnected.

The package, a module for each job: L{scripts} holds the Lua scripts, the
only code that changes the shared state; L{link} the node's two connections
to Redis; L{node} what the node's parts share (its index of its own users,
its calls to Redis); L{registry} the L{ClusterRegistry}, the IRegistry
methods that change who is where, with L{membership} (rooms) and
L{lookups} (questions about users who may be elsewhere); L{liveness} the
heartbeat, the reaping of dead nodes and the recovery after an outage;
L{events} the typed messages the nodes read from each other and the chat
events they carry, checked, and L{inbox} the table of a handler for each
kind; L{sessions}, L{bans} and L{accounts} what
the server shares between nodes (its L{ISharedSessions}, L{ISharedBans}
and L{ISharedAccounts}); L{records} reads Redis's records of users and rooms.
"""

from .link import CALL_TIMEOUT, RedisLink, RedisURLError, Unreachable, parse_redis_url
from .registry import ClusterRegistry

__all__ = [
    "CALL_TIMEOUT",
    "ClusterRegistry",
    "RedisLink",
    "RedisURLError",
    "Unreachable",
    "parse_redis_url",
]
