"""Self-signed certificates and TLS contexts for the simulated farm.

Horizon servers in a lab usually carry internal certificates that nobody's
client trusts; the balancer's health check and the demo clients therefore
never verify them (HORIZON.md, Health). Each simulated server gets its own
certificate so that a test can tell from the handshake which one answered.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

VALID_DAYS = 365


def ensure_certificate(cert_dir: str | os.PathLike, name: str, addresses=()) -> tuple[Path, Path]:
    """Return (cert, key) paths for `name`, creating them on first use."""
    cert_dir = Path(cert_dir)
    cert_path, key_path = cert_dir / f"{name}.crt", cert_dir / f"{name}.key"
    if cert_path.exists() and key_path.exists():
        return cert_path, key_path
    cert_dir.mkdir(parents=True, exist_ok=True)
    cert_pem, key_pem = self_signed(name, addresses)
    # Key first, each written atomically: several simulators may start at once.
    _write_atomic(key_path, key_pem, mode=0o600)
    _write_atomic(cert_path, cert_pem, mode=0o644)
    return cert_path, key_path


def self_signed(name: str, addresses=()) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    alt_names = [x509.DNSName(name)] + [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(cert_path, key_path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_path, key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def client_context() -> ssl.SSLContext:
    """A client context that accepts any certificate, as Horizon clients in a lab are told to."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _write_atomic(path: Path, data: bytes, mode: int):
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
