"""Every setting of a chat server, with its default, in one frozen object."""

from dataclasses import dataclass

DEFAULT_PORT = "tcp:8000"


@dataclass(frozen=True, slots=True)
class Settings:
    """The knobs of one chat server; C{twistd chat --help} documents each one.

    Times are in seconds, sizes in bytes.
    """

    #: Server endpoint strings to listen on; all share one registry.
    endpoints: tuple[str, ...] = (DEFAULT_PORT,)
    #: A registered user silent this long is disconnected; 0: never.  People
    #: who only read are silent for hours: dead peers are found by
    #: C{keepalive} instead.
    idle_timeout: float = 0.0
    #: A connection that has not chosen a nickname this long is disconnected.
    register_timeout: float = 30.0
    #: TCP keepalive: the first probe after this many seconds of silence on
    #: the link; a vanished peer is dropped within about twice that (see
    #: L{chatservice.system.keepalive_options}).  0: no keepalive.
    keepalive: int = 60
    #: The longest accepted input line, not counting its line ending.
    max_line: int = 2048
    #: Output waiting for a client that does not read, beyond the transport's
    #: own buffer, above which the client is disconnected.
    max_sendq: int = 1024 * 1024
    #: Connections served at once, in all.
    max_clients: int = 10_000
    #: Connections served at once from one peer address.
    max_per_ip: int = 100
    #: Lines of chat and actions each room keeps to show people who join.
    history: int = 50
    #: The most members a room may have for joins and leaves in it to be
    #: announced; bigger rooms pass them silently.
    announce_max: int = 100
    #: A file whose text is shown to each user after registration.
    motd: str | None = None
    #: Commands and filters (by name) the server leaves out.
    disabled_plugins: frozenset[str] = frozenset()
    #: How long a command may take before it is cancelled.
    command_timeout: float = 30.0
    #: How long shutdown, or closing one connection, waits for a client to
    #: read what it was sent before the connection is aborted.
    shutdown_timeout: float = 5.0
    #: Lines per second a connection may send over time (its token bucket's
    #: refill rate); beyond it the server stops reading from it for a while.
    flood_rate: float = 5.0
    #: Lines a connection may send at once before C{flood_rate} applies.
    flood_burst: int = 10
    #: Bytes of private messages (as sent, C{*nick* text} and CRLF) one user
    #: may be sent per second by everyone else together; beyond it /msg is
    #: refused to the sender.  16 KiB/s is a twentieth of what a reader on a
    #: slow link (a few hundred KB/s) takes, and over 100 ordinary messages.
    private_rate: float = 16 * 1024
    #: Bytes of private messages one user may be sent at once before
    #: C{private_rate} applies: ten of the longest lines.
    private_burst: int = 64 * 1024
    #: New connections per second accepted from one address.
    max_connect_rate: float = 10.0
    #: A file of operators: C{NAME scrypt$...} lines (C{chatservice-oper}).
    operators: str | None = None
    #: A file where bans are kept across restarts.
    bans: str | None = None
    #: How long the nickname of a connection that dropped (not /quit) is
    #: held for a C{/resume}; 0 turns resuming off.
    resume_grace: float = 60.0
    #: Lines kept for a dropped session to see when it resumes.
    resume_buffer: int = 200
    #: Bytes kept for a dropped session to see when it resumes.
    resume_buffer_bytes: int = 64 * 1024
    #: A server endpoint string where Prometheus metrics are served over
    #: HTTP at C{/metrics}; None serves none.
    metrics: str | None = None
    #: The least level of chatservice's own log events that are logged
    #: (C{debug}, C{info}, C{warn}, C{error}, C{critical}).
    log_level: str = "info"
    #: C{redis://HOST:PORT/DB}: join the cluster that shares this Redis
    #: database; None runs one server alone.
    redis: str | None = None
    #: The name of the cluster: nodes with the same name and Redis are one
    #: server.
    cluster: str = "chat"
    #: Seconds after which the users of a node that stopped renewing its
    #: heartbeat (killed, or cut off from Redis) are gone.
    node_ttl: float = 15.0
