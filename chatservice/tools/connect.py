"""Connecting to a chatservice server, for the client and the benchmark alike.

TCP or TLS (L{endpoint_for}): a TLS connection checks the certificate and
the host name (service-identity), against the system's CAs or those of a
PEM file (L{load_trust_root}), or nothing at all with C{--insecure}.
L{describe} says in a few words why a connection failed or ended.
"""

from __future__ import annotations

import re
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError

from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.error import (
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    ConnectionRefusedError,
    DNSLookupError,
    TimeoutError,
)
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator
from twisted.python.failure import Failure
from zope.interface import implementer

#: The server's default plain port, and the usual port for TLS.
DEFAULT_PORT = 8000
DEFAULT_TLS_PORT = 6697


def describe(reason: Failure) -> str:
    """Why a connection failed or ended, in a few words for the user."""
    if reason.check(ConnectionRefusedError):
        return "connection refused"
    if reason.check(DNSLookupError):
        return "name not resolved"
    if reason.check(TimeoutError):
        return "timed out"
    if reason.check(VerificationError):
        return "hostname mismatch (the server's certificate is for another name)"
    if reason.check(SSL.Error):
        reasons = _ssl_reasons(reason.value)
        if "certificate verify failed" in reasons:
            return "certificate not trusted (certificate verify failed)"
        return f"TLS failed ({'; '.join(reasons) or reason.value})"
    if reason.check(ConnectionDone):
        return "closed by the server"
    if reason.check(ConnectionAborted):
        return "aborted"
    if reason.check(ConnectionLost):
        return "connection reset"
    return str(reason.value) or reason.type.__name__  # type: ignore[union-attr]


def _ssl_reasons(error: BaseException) -> list[str]:
    """The reasons in an OpenSSL error: the last of each C{(lib, func, reason)}."""
    try:
        return [str(entry[-1]) for entry in error.args[0]]
    except (IndexError, TypeError):
        return []


_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.DOTALL
)


def load_trust_root(path: str) -> Any:
    """The CA certificates in the PEM file C{path}, as a trust root.

    @raise ValueError: With a message for the user, when the file cannot be
        read or holds no certificate.
    """
    from OpenSSL.crypto import Error as CryptoError

    from twisted.internet.ssl import Certificate, trustRootFromCertificates

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError(f"cannot read --cafile {path}: {e.strerror}") from None
    try:
        certificates = [
            Certificate.loadPEM(m[0]) for m in _PEM_CERTIFICATE.finditer(data)
        ]
    except CryptoError:
        raise ValueError(f"--cafile {path} holds a damaged certificate") from None
    if not certificates:
        raise ValueError(f"--cafile {path} holds no PEM certificate")
    return trustRootFromCertificates(certificates)


@implementer(IOpenSSLClientConnectionCreator)
class _Unverified:
    """TLS without any check of the server's certificate (C{--insecure})."""

    def __init__(self, hostname: str) -> None:
        from twisted.internet.abstract import isIPAddress, isIPv6Address
        from twisted.internet.ssl import CertificateOptions

        self._options = CertificateOptions()
        ip = isIPAddress(hostname) or isIPv6Address(hostname)
        # Server Name Indication for names only, as RFC 6066 says.
        self._sni = None if ip else hostname.encode("idna")

    def clientConnectionForTLS(self, tlsProtocol: object) -> Any:
        """A client TLS connection that checks nothing, with SNI."""
        from OpenSSL import SSL

        connection = SSL.Connection(self._options.getContext(), None)
        connection.set_app_data(tlsProtocol)
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        return connection


def endpoint_for(
    reactor: Any,
    host: str,
    port: int,
    *,
    connect_timeout: float,
    tls: bool = False,
    insecure: bool = False,
    trust_root: Any = None,
) -> Any:
    """The client endpoint for C{host} and C{port}: TCP, or TLS over TCP.

    With C{tls}, the certificate is checked against C{trust_root} (by
    default the system's CAs), unless C{insecure}.
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=connect_timeout)
    if not tls:
        return endpoint
    if insecure:
        creator: Any = _Unverified(host)
    else:
        from twisted.internet.ssl import optionsForClientTLS

        creator = optionsForClientTLS(host, trustRoot=trust_root)
    return wrapClientTLS(creator, endpoint)
