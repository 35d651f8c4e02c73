"""Certificates for a partner served over HTTPS: a throwaway CA and a server certificate it signs.

`ensure_certificates` keeps what a directory already holds while it is valid, so a sender
that trusts the CA keeps working across restarts; `write_certificates` always writes new
ones (the tests' local partners); `server_tls_context` loads a certificate and key, generated
or given, for the server side of TLS.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CERTIFICATE_HOSTS = ("localhost", "127.0.0.1", "::1")
CERTIFICATE_DAYS = 365
CA_NAME = "aamdest receiver throwaway CA"


@dataclass(frozen=True)
class CertificateFiles:
    """The PEM files of one certificate set: the CA to trust, the server certificate and its key."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def certificate_files(directory: Path) -> CertificateFiles:
    """Where a certificate set lives in `directory` (ca.pem, server.pem, server.key)."""
    return CertificateFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")


def ensure_certificates(directory: Path) -> CertificateFiles:
    """Reuse the CA and server certificate in `directory`, or write new ones.

    Reusing them keeps a sender that already trusts the CA working across
    restarts; they are replaced when missing or within a day of expiring.
    """
    files = certificate_files(directory)
    if _is_reusable(files):
        return files
    return write_certificates(directory)


def write_certificates(directory: Path, *, hosts: tuple[str, ...] = CERTIFICATE_HOSTS) -> CertificateFiles:
    """Write a new CA and a certificate for `hosts` (names or IP addresses) signed by it.

    The first host is the certificate's common name; all of them are its subject
    alternative names. The key file is readable by its owner only.
    """
    files = certificate_files(directory)
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _build_ca(ca_key)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _build_server_certificate(key=key, ca_key=ca_key, ca_cert=ca_cert, hosts=hosts)
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(files.key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as key_out:
        key_out.write(pem_key)
    return files


def server_tls_context(*, cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side TLS 1.2+ context serving `cert_file`; OSError or ssl.SSLError when unusable."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _is_reusable(files: CertificateFiles) -> bool:
    if not (files.ca_file.is_file() and files.cert_file.is_file() and files.key_file.is_file()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(files.cert_file.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=1)


def _certificate_builder(
    *, subject: x509.Name, issuer: x509.Name, public_key: Any
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=CERTIFICATE_DAYS))
    )


def _build_ca(ca_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    usage = x509.KeyUsage(
        digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
        key_encipherment=False, data_encipherment=False, key_agreement=False,
        encipher_only=False, decipher_only=False,
    )
    return (
        _certificate_builder(subject=name, issuer=name, public_key=ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _build_server_certificate(
    *,
    key: ec.EllipticCurvePrivateKey,
    ca_key: ec.EllipticCurvePrivateKey,
    ca_cert: x509.Certificate,
    hosts: tuple[str, ...],
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    authority = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key())
    names = x509.SubjectAlternativeName([_general_name(host) for host in hosts])
    return (
        _certificate_builder(subject=subject, issuer=ca_cert.subject, public_key=key.public_key())
        .add_extension(names, critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(authority, critical=False)
        .sign(ca_key, hashes.SHA256())
    )


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)
