"""Certificate material on the control-plane side: the key at rest, PEM texts, summaries.

The checks themselves (key matches, chain order, dates) and the encryption
live in `proxyworker.tlsconf`, shared with the worker: what the console
accepts and stores is exactly what a worker can load. This module adds what
only the console needs: the Fernet key from the settings, splitting a
normalised PEM text into leaf and chain, fingerprints for diffs and audit
entries (which must never carry key material), and the CA-bundle check.
"""
import hashlib

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from django.conf import settings

from proxyworker import config, tlsconf
from proxyworker.tlsconf import CertificateError

PEM_END = "-----END CERTIFICATE-----"
MAX_UPLOAD = 64 * 1024  # a certificate chain is a few KiB; more is a wrong file


def cert_key() -> str:
    """The Fernet key of VIEWLB_CERT_KEY (settings read it from the environment)."""
    return settings.VIEWLB_CERT_KEY


def encrypt_key(key_pem: str) -> str:
    return tlsconf.encrypt_private_key(key_pem, cert_key())


def decrypt_key(token: str) -> str:
    """The private key PEM; raises CertificateError when VIEWLB_CERT_KEY does not fit the token."""
    return tlsconf.decrypt_private_key(token, cert_key()).decode()


def token_digest(token: str) -> str:
    """Says whether a stored key changed without saying anything about the key."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:16]


def split_pem(text: str) -> tuple[str, str]:
    """(leaf, chain) of a normalised PEM text (leaf first, as `CertificateReport.cert_pem` holds it)."""
    blocks = [block.strip() + "\n" + PEM_END + "\n" for block in text.split(PEM_END) if block.strip()]
    return (blocks[0] if blocks else ""), "".join(blocks[1:])


def read_certificates(text: str) -> list[x509.Certificate]:
    text = (text or "").strip()
    return x509.load_pem_x509_certificates(text.encode()) if text else []


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def fingerprints(text: str) -> list[str]:
    """SHA-256 fingerprints of the certificates in a PEM text; unreadable text gets a digest instead."""
    try:
        return [fingerprint(cert) for cert in read_certificates(text)]
    except ValueError:
        return ["unreadable " + token_digest(text)]


def subjects(text: str) -> list[str]:
    try:
        return [cert.subject.rfc4514_string() for cert in read_certificates(text)]
    except ValueError:
        return []


def normalise_ca_bundle(text: str) -> str:
    """A CA bundle as clean PEM (browsers send CRLF); raises CertificateError saying what is wrong."""
    text = (text or "").strip()
    if not text:
        return ""
    if "PRIVATE KEY-----" in text:
        raise CertificateError("this is a private key; the CA bundle holds only the certificates that issued "
                               "the real servers' certificates")
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise CertificateError("not PEM certificates: paste one or more blocks from -----BEGIN CERTIFICATE----- "
                               "to -----END CERTIFICATE-----")
    try:
        certs = read_certificates(text)
    except ValueError:
        raise CertificateError("a certificate in the bundle is damaged and cannot be read") from None
    pem = "".join(cert.public_bytes(serialization.Encoding.PEM).decode() for cert in certs)
    # The worker builds its context with this very function; if OpenSSL refuses the bundle, say so now.
    tlsconf.backend_context(config.Tls(backend_tls=True, backend_verify=True, backend_ca=pem))
    return pem


def read_upload(upload) -> str:
    """The text of an uploaded PEM file; raises CertificateError for binary or oversized files."""
    data = upload.read(MAX_UPLOAD + 1)
    if len(data) > MAX_UPLOAD:
        raise CertificateError(f"the file is larger than {MAX_UPLOAD // 1024} KiB; it is not a PEM certificate or key")
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise CertificateError("the file is binary (DER?); convert it to PEM, e.g. "
                               "openssl x509 -inform der -in cert.der -out cert.pem") from None
