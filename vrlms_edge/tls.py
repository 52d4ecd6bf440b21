"""The box's own TLS certificate: self-signed, made once in the data dir, pinned by headsets.

There is no CA a classroom box could get a certificate from, so headsets pin the SHA-256
fingerprint of the DER certificate, which the box advertises in its mDNS TXT record `fp`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

CERT_FILE: Final = "tls-cert.pem"
KEY_FILE: Final = "tls-key.pem"
# Headsets pin the certificate, so it must not change under them: renewing means re-pinning
# every headset. Twenty years outlives the hardware.
VALIDITY_DAYS: Final = 20 * 365
# Backdated so a box whose clock is behind (no RTC battery, no NTP yet) still accepts it.
BACKDATE: Final = dt.timedelta(days=1)


@dataclass(frozen=True, slots=True)
class TlsIdentity:
    context: ssl.SSLContext
    # Lower-case hex SHA-256 of the DER certificate (64 characters, no colons).
    fingerprint: str
    cert_path: Path


def fingerprint_of(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by the owner only, atomically (no window with wider modes)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def make_certificate(box_name: str, now: dt.datetime) -> tuple[bytes, bytes]:
    """A new P-256 key and a self-signed certificate for it: (cert PEM, key PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, box_name[:64]),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vrlms-edge"),
        ]
    )
    host = socket.gethostname() or "vrlms-edge"
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(f"{host}.local"),
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    ]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def ensure_certificate(data_dir: Path, box_name: str, now: dt.datetime) -> TlsIdentity:
    """Load the box's certificate, making it on first use. Blocking: run in a thread."""
    cert_path = data_dir / CERT_FILE
    key_path = data_dir / KEY_FILE
    if not (cert_path.exists() and key_path.exists()):
        cert_pem, key_pem = make_certificate(box_name, now)
        # Key first: a certificate on disk always has its key next to it.
        _write_private(key_path, key_pem)
        _write_private(cert_path, cert_pem)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return TlsIdentity(
        context=context, fingerprint=fingerprint_of(cert_path.read_bytes()), cert_path=cert_path
    )
