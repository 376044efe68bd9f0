"""A private certificate authority and server certificates for registries that have
none of their own (``portside install``; test servers).

Keys are ECDSA P-256 and signatures SHA-256 (FIPS-approved, small, and accepted by
every container client). The CA is valid for ten years and the server certificate
for two hundred days or fewer: no longer than clients such as Go's TLS stack and browsers
accept without complaint. Host names become DNS subject alternative names and IP
addresses IP ones (clients ignore the common name).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["TlsFiles", "ensure_tls_files", "issue_server_certificate", "new_certificate_authority"]

CA_LIFETIME = timedelta(days=3650)
SERVER_LIFETIME = timedelta(days=200)


@dataclass(frozen=True)
class TlsFiles:
    """Where the CA certificate, the server certificate and its key are."""

    ca_certificate: Path
    certificate: Path
    private_key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def new_certificate_authority(common_name: str) -> tuple[bytes, bytes]:
    """A self-signed CA: ``(certificate_pem, private_key_pem)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                       critical=False)
        .sign(key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM), _pem_key(key)


def _subject_alternative_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def issue_server_certificate(ca_certificate_pem: bytes, ca_key_pem: bytes,
                             hosts: Sequence[str]) -> tuple[bytes, bytes]:
    """A server certificate for ``hosts`` (names or IP addresses) signed by the CA:
    ``(certificate_chain_pem, private_key_pem)``; the chain ends with the CA."""
    if not hosts:
        raise ValueError("a server certificate needs at least one host name or address")
    ca_certificate = x509.load_pem_x509_certificate(ca_certificate_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the CA key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(min(now + SERVER_LIFETIME, ca_certificate.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(_subject_alternative_names(hosts)),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    chain = certificate.public_bytes(serialization.Encoding.PEM) + ca_certificate_pem
    return chain, _pem_key(key)


def _write_private(path: Path, data: bytes) -> None:
    """Write a file only its owner can read (created that way: never briefly readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def ensure_tls_files(directory: Path, hosts: Sequence[str],
                     ca_name: str = "Portside registry CA") -> TlsFiles:
    """Make sure ``directory`` holds a CA (``ca.crt``/``ca.key``) and a server certificate
    for ``hosts`` (``ssl.cert``/``ssl.key``).

    An existing CA is kept (clients already trust it); the server certificate is issued
    again when it is missing, does not cover ``hosts``, or expires within 30 days.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(directory / "ca.crt", directory / "ssl.cert", directory / "ssl.key")
    ca_key_path = directory / "ca.key"
    if not files.ca_certificate.exists() or not ca_key_path.exists():
        ca_pem, ca_key_pem = new_certificate_authority(ca_name)
        _write_private(ca_key_path, ca_key_pem)
        files.ca_certificate.write_bytes(ca_pem)
    if _server_certificate_current(files.certificate, hosts):
        return files
    chain, key = issue_server_certificate(files.ca_certificate.read_bytes(),
                                          ca_key_path.read_bytes(), hosts)
    _write_private(files.private_key, key)
    files.certificate.write_bytes(chain)
    return files


def _server_certificate_current(path: Path, hosts: Sequence[str]) -> bool:
    if not path.exists():
        return False
    try:
        certificate = x509.load_pem_x509_certificate(path.read_bytes())
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return False
    covered = {str(value) for value in names.value.get_values_for_type(x509.DNSName)}
    covered |= {str(value) for value in names.value.get_values_for_type(x509.IPAddress)}
    fresh = certificate.not_valid_after_utc - datetime.now(UTC) > timedelta(days=30)
    return fresh and all(str(_normal(host)) in covered for host in hosts)


def _normal(host: str) -> str | ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return host
