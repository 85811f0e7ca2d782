"""Throwaway certificates for the TLS tests, made with C{cryptography}.

L{make_ca} makes a certificate authority; L{make_server_cert} has it sign a
server certificate for C{localhost} and C{127.0.0.1}.  Every key and
certificate is written as a PEM file next to the CA's, and is valid from an
hour ago (clock skew) to a day from now.
"""

import datetime
import ipaddress
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_serials = itertools.count(1)


@dataclass(frozen=True)
class CA:
    """A certificate authority: its key, its certificate, and where it is."""

    directory: Path
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    cert_path: Path


@dataclass(frozen=True)
class ServerCert:
    """The PEM files a TLS server and its clients need."""

    key_path: Path
    cert_path: Path
    ca_path: Path

    def endpoint(self, port: int | str = 0, interface: str = "127.0.0.1") -> str:
        """A Twisted C{ssl:} server endpoint string serving this certificate."""
        return (
            f"ssl:{port}:interface={interface}"
            f":privateKey={_quote(self.key_path)}:certKey={_quote(self.cert_path)}"
        )


def _quote(path: Path) -> str:
    """Escape a path for a Twisted endpoint string, where ':' separates."""
    return str(path).replace("\\", "\\\\").replace(":", "\\:")


def _validity() -> tuple[datetime.datetime, datetime.datetime]:
    now = datetime.datetime.now(datetime.UTC)
    return now - datetime.timedelta(hours=1), now + datetime.timedelta(days=1)


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _write_cert(certificate: x509.Certificate, path: Path) -> None:
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))


def make_ca(directory: Path, name: str = "ca") -> CA:
    """Make a CA (EC P-256, CA:TRUE, may sign certificates) in C{directory}."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"chatservice test {name}")]
    )
    not_before, not_after = _validity()
    public_key = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / f"{name}.crt"
    _write_cert(certificate, cert_path)
    return CA(directory, key, certificate, cert_path)


def make_server_cert(
    ca: CA,
    hostnames: Sequence[str] = ("localhost",),
    ip_addresses: Sequence[str] = ("127.0.0.1",),
    name: str | None = None,
) -> ServerCert:
    """Have C{ca} sign a server certificate for C{hostnames} and C{ip_addresses}.

    The key and certificate are written next to the CA's certificate, under
    C{name} (by default a new C{server-N}).
    """
    name = name or f"server-{next(_serials)}"
    key = ec.generate_private_key(ec.SECP256R1())
    public_key = key.public_key()
    not_before, not_after = _validity()
    alternative_names: list[x509.GeneralName] = [
        *(x509.DNSName(hostname) for hostname in hostnames),
        *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses),
    ]
    common_name = [*hostnames, *ip_addresses][0]
    ca_key_id = ca.certificate.extensions.get_extension_for_class(
        x509.SubjectKeyIdentifier
    ).value
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(alternative_names), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_key_id),
            critical=False,
        )
        .sign(ca.key, hashes.SHA256())
    )
    key_path = ca.directory / f"{name}.key"
    cert_path = ca.directory / f"{name}.crt"
    _write_key(key, key_path)
    _write_cert(certificate, cert_path)
    return ServerCert(key_path, cert_path, ca.cert_path)
