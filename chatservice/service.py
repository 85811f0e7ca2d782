"""The chat service: listeners sharing one factory, and a graceful stop.

It binds every endpoint in C{privilegedStartService} (before twistd drops
privileges), turning any failure into one readable L{StartupError} line, and
on stop it closes the listeners, then every connection, with a deadline.
"""

import signal
from collections.abc import Sequence

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList, maybeDeferred
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from .bans import BansFileError
from .errors import StartupError
from .extensions import Extensions, log_extensions
from .factory import ChatFactory
from .interfaces import IFrontEnd
from .logs import gate
from .metrics import metrics_site, warn_if_exposed
from .operators import OperatorsFileError
from .store import StoreError
from .system import SPARE_FILES, fit_open_files, set_listener_options
from .textlog import format_classic, speed_up_text_logs

log = Logger(observer=gate)


class ChatService(Service):
    """Serves one L{ChatFactory} on several endpoints.

    C{endpoints} serve the line front end; C{front_ends} the others (each
    listener with its front end, L{IFrontEnd}), all over the same core.

    With C{metrics} (a description and an endpoint), it also serves the
    factory's Prometheus metrics over HTTP there (L{chatservice.metrics}).
    With C{extensions}, the factory's plugins, it logs at start what they
    are and where they come from.
    """

    name = "chat"

    def __init__(
        self,
        factory: ChatFactory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        metrics: tuple[str, IStreamServerEndpoint] | None = None,
        extensions: Extensions | None = None,
        front_ends: Sequence[tuple[str, IStreamServerEndpoint, IFrontEnd]] = (),
    ) -> None:
        self.factory = factory
        self._extensions = extensions
        self.endpoints = list(endpoints)
        #: The other front ends' listeners: (description, endpoint, front end).
        self.front_ends = list(front_ends)
        self.metrics = metrics
        #: The port metrics are served on, once bound (also in C{ports}).
        self.metrics_port: IListeningPort | None = None
        self.ports: list[IListeningPort] = []
        self._previous_sighup: object = None
        self._previous_log_level: LogLevel | None = None

    def _set_up_log(self) -> None:
        """Apply C{--log-level} to chatservice's events, until the stop.

        And give twistd's text log (made before any plugin runs) the
        faster formatting of the same lines: L{speed_up_text_logs}.
        """
        if self._previous_log_level is None:
            self._previous_log_level = gate.level
        gate.level = LogLevel.levelWithName(self.factory.settings.log_level)
        if speed_up_text_logs():
            log.info(
                "text log: twistd's lines, formatted by {formatter}",
                formatter=f"{format_classic.__module__}.{format_classic.__name__}",
            )

    def privilegedStartService(self) -> None:
        """Bind every endpoint, or raise L{StartupError} naming the failure."""
        super().privilegedStartService()
        self._set_up_log()
        self._log_plugins()
        self._fit_open_files()
        self._read_files()
        self._listen()

    def _log_plugins(self) -> None:
        """Say once, at the log level in force, which plugins are in use."""
        if self._extensions is not None:
            log_extensions(self._extensions)
            self._extensions = None

    def _fit_open_files(self) -> None:
        """Make room for --max-clients connections, or say what to set.

        One descriptor per connection and listener, and L{SPARE_FILES}
        more: the soft limit is raised up to the hard one if needed.  If
        even that is too low, past about that many connections new ones
        would be closed by Twisted without a word to the client.
        """
        max_clients = self.factory.settings.max_clients
        listeners = len(self.endpoints) + (self.metrics is not None)
        needed = max_clients + listeners + SPARE_FILES
        before, limit, _ = fit_open_files(needed)
        if limit > before:
            log.info(
                "raised the limit of open files from {before} to {limit} "
                "for --max-clients {max_clients}",
                before=before,
                limit=limit,
                max_clients=max_clients,
            )
        if limit < needed:
            usable = max(0, limit - listeners - SPARE_FILES)
            log.warn(
                "only {limit} files may be open, too few for --max-clients "
                "{max_clients} ({needed} with the listeners and {spare} to "
                "spare): past about {usable} connections, new ones will be "
                "closed without a word. Raise the limit (LimitNOFILE={needed} "
                "in the systemd unit, or ulimit -n {needed} before starting "
                "twistd) or lower --max-clients to {usable}",
                limit=limit,
                max_clients=max_clients,
                needed=needed,
                spare=SPARE_FILES,
                usable=usable,
            )

    def _read_files(self) -> None:
        """Read the MOTD, operators and bans, or stop with one line."""
        try:
            self.factory.load_motd()
        except OSError as error:
            raise StartupError(
                f"chatservice: cannot read --motd {self.factory.settings.motd}: "
                f"{(error.strerror or str(error)).lower()}"
            ) from None
        try:
            self.factory.load_operators()
            self.factory.load_bans()
        except (OperatorsFileError, BansFileError) as error:
            raise StartupError(str(error)) from None

    def reload(self) -> None:
        """Re-read the MOTD and operators (on SIGHUP); keep the old on error."""
        settings = self.factory.settings
        if settings.motd is None and settings.operators is None:
            log.info("SIGHUP: nothing to reload (no --motd or --operators)")
            return
        if settings.motd is not None:
            try:
                self.factory.load_motd()
            except OSError as error:
                log.error(
                    "cannot re-read the message of the day from {path}: {error}; "
                    "keeping the old one",
                    path=settings.motd,
                    error=error.strerror or str(error),
                )
        if settings.operators is not None:
            try:
                self.factory.load_operators()
            except OperatorsFileError as error:
                log.error("{error}; keeping the operators read before", error=error)

    def startService(self) -> None:
        """Start serving; binds now if C{privilegedStartService} did not."""
        self._set_up_log()
        if not self.ports:
            self._log_plugins()
            self._fit_open_files()
            self._read_files()
            self._listen()
        # SIGHUP's handler first: the listeners accept already, and opening
        # the store takes a moment, in which a SIGHUP would end the process.
        self._previous_sighup = signal.signal(signal.SIGHUP, self._sighup)
        self._open_store()
        self.factory.registry.start()
        self.factory.accounts.start().addErrback(
            lambda failure: log.failure("the accounts could not be read", failure)
        )
        super().startService()

    def _open_store(self) -> None:
        """Open the store (as the user twistd runs as), or stop with one line.

        Opened here, after twistd has dropped privileges, not with the
        listeners: a SQLite file made now belongs to the user that writes it.
        """
        try:
            self.factory.store.open()
        except StoreError as error:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
            raise StartupError(f"chatservice: {error}") from None
        self.factory.history.start()

    def _sighup(self, signum: int, frame: object) -> None:
        # A signal handler may interrupt the reactor anywhere: hand over.
        from twisted.internet import reactor

        reactor.callFromThread(self.reload)

    def _listen(self) -> None:
        listeners: list[tuple[str, IStreamServerEndpoint, Factory]] = [
            (description, endpoint, self.factory)
            for description, endpoint in self.endpoints
        ]
        listeners.extend(
            (f"--{front_end.option} {description}", endpoint, factory)
            for description, endpoint, front_end in self.front_ends
            for factory in [self.factory.front_end(front_end)]
        )
        site = None
        if self.metrics is not None:
            description, endpoint = self.metrics
            site = metrics_site(self.factory, self.factory.clock)  # type: ignore[assignment]
            listeners.append((f"--metrics {description}", endpoint, site))
        for description, endpoint, factory in listeners:
            outcome: list[object] = []
            endpoint.listen(factory).addBoth(outcome.append)
            if not outcome:
                # Not one of Twisted's own endpoints, which all bind at once.
                raise StartupError(
                    f"chatservice: cannot listen on {description}: "
                    "the endpoint did not bind synchronously"
                )
            (result,) = outcome
            if isinstance(result, Failure):
                for port in self.ports:
                    port.stopListening()
                self.ports = []
                self.metrics_port = None
                raise StartupError(
                    f"chatservice: cannot listen on {description}: "
                    f"{_cause(result.value)}"
                )
            self.ports.append(result)
            if factory is site:
                self.metrics_port = result
                warn_if_exposed(result.getHost())
            else:
                # For its connections to copy (see set_socket_options).
                set_listener_options(result, self.factory.settings.keepalive)
            log.info(
                "listening on {description} ({address})",
                description=description,
                address=result.getHost(),
            )

    def stopService(self) -> Deferred[None]:
        """Stop accepting, then close every connection within the deadline."""
        super().stopService()
        if self._previous_log_level is not None:
            gate.level, self._previous_log_level = self._previous_log_level, None
        if self._previous_sighup is not None:
            signal.signal(signal.SIGHUP, self._previous_sighup)
            self._previous_sighup = None
        ports, self.ports = self.ports, []
        self.metrics_port = None
        stopped = DeferredList([maybeDeferred(port.stopListening) for port in ports])
        stopped.addCallback(lambda _: self.factory.stop())
        # A connection's last lines were sent when it closed, but the flusher
        # may still hold a call for the end of this iteration: end it now, so
        # no timer of a stopped server is left on the reactor.
        stopped.addCallback(lambda _: self.factory.flusher.flush())
        # The users' leaves have been sent; then a cluster's node leaves.
        stopped.addCallback(lambda _: self.factory.registry.close())
        # A ban made just before the stop is on disk before the process ends.
        stopped.addCallback(lambda _: self.factory.bans.saved())
        stopped.addErrback(
            lambda failure: log.error(
                "the bans could not be saved: {error}", error=failure.value
            )
        )
        # The last lines said are written; then the store's connections go.
        stopped.addCallback(lambda _: self.factory.history.stop())
        stopped.addCallback(lambda _: self.factory.store.close())
        return stopped


def _cause(error: BaseException) -> str:
    """Say in a few words why binding failed."""
    if isinstance(error, CannotListenError):
        error = error.socketError
    if isinstance(error, OverflowError):
        return "the port number is out of range (0-65535)"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror.lower()
    return str(error) or type(error).__name__
