"""TLS for layer-7 virtual services: contexts, private keys at rest, certificate checks.

Shared by the worker (which builds `ssl.SSLContext`s from a snapshot's `Tls`
and `Certificate` entries) and the control plane (which encrypts uploaded keys
and checks uploads with `check_certificate` before storing them). One
implementation, so a key the console stores is a key the worker can read.

Private keys travel and rest as Fernet tokens (`Certificate.key_pem_encrypted`);
the Fernet key comes from the environment variable VIEWLB_CERT_KEY.
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from proxyworker.config import Certificate, Tls

ENV_KEY = "VIEWLB_CERT_KEY"
WARN_DAYS = 30
# TLS 1.2: forward secrecy and AEAD only. TLS 1.3 suites are all good and not set by this string.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
ALPN = ["http/1.1"]


class CertificateError(ValueError):
    """A certificate, key or key-encryption problem, said so that an administrator can act on it."""


# --- private keys at rest ------------------------------------------------------------------


def generate_cert_key() -> str:
    """A new value for VIEWLB_CERT_KEY."""
    return Fernet.generate_key().decode()


def cert_key_from_env(environ=None) -> bytes:
    value = (environ if environ is not None else os.environ).get(ENV_KEY, "").strip()
    if not value:
        raise CertificateError(f"{ENV_KEY} is not set: it holds the key that encrypts certificate private keys")
    _fernet(value)
    return value.encode()


def _fernet(key: bytes | str) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise CertificateError(f"{ENV_KEY} is not a valid key (32 bytes, url-safe base64); "
                               "make one with proxyworker.tlsconf.generate_cert_key()") from None


def encrypt_private_key(pem: str | bytes, key: bytes | str) -> str:
    """The Fernet token to store in `Certificate.key_pem_encrypted`."""
    if isinstance(pem, str):
        pem = pem.encode()
    return _fernet(key).encrypt(pem).decode("ascii")


def decrypt_private_key(token: str | bytes, key: bytes | str) -> bytes:
    if isinstance(token, str):
        token = token.encode()
    try:
        return _fernet(key).decrypt(token)
    except InvalidToken:
        raise CertificateError(f"the private key cannot be decrypted: {ENV_KEY} differs from the key "
                               "it was stored with, or the stored value is damaged") from None


# --- server contexts -------------------------------------------------------------------------


def _server_base() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    ctx.set_alpn_protocols(ALPN)
    return ctx


def load_certificate(ctx: ssl.SSLContext, cert_pem: str, key_pem: bytes):
    """Loads a certificate chain and its private key into `ctx`.

    `ssl` only loads keys from files. The decrypted key never goes into one:
    it is re-encrypted in memory under a random one-time password (PKCS#8,
    AES-256), written with the chain to a private temporary file (0600, in RAM
    under /dev/shm where there is one), loaded with that password, and the file
    is removed at once. A file left behind by a crash holds a key nobody can
    decrypt, because the password only ever existed in this process's memory.
    """
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(f"the private key cannot be read: {exc}") from None
    password = secrets.token_bytes(32)
    sealed = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                               serialization.BestAvailableEncryption(password))
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    # the pid in the name: whose file it is (and what tests/l7/test_tlsconf.py watches)
    fd, path = tempfile.mkstemp(prefix=f"viewlb-cert-{os.getpid()}-", suffix=".pem", dir=shm)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem.encode() + b"\n" + sealed)
        ctx.load_cert_chain(path, password=password)
    except ssl.SSLError as exc:
        raise CertificateError(f"OpenSSL refuses this certificate and key: {exc.reason or exc}") from None
    finally:
        os.unlink(path)


class SniSelector:
    """Chooses a certificate by the client's server name: exact names first, then `*.domain`.

    Unknown or missing names keep the default (first) certificate, as clients
    that connect by IP address send no name at all.
    """

    def __init__(self, default: ssl.SSLContext):
        self.default = default
        self.count = 1
        self.exact: dict[str, ssl.SSLContext] = {}
        self.wildcard: dict[str, ssl.SSLContext] = {}

    def add(self, names: Iterable[str], ctx: ssl.SSLContext):
        for name in names:
            name = name.lower().rstrip(".")
            table, key = (self.wildcard, name[2:]) if name.startswith("*.") else (self.exact, name)
            table.setdefault(key, ctx)  # earlier certificates win, like the order in the VIP

    def select(self, server_name: str | None) -> ssl.SSLContext:
        if not server_name:
            return self.default
        name = server_name.lower().rstrip(".")
        found = self.exact.get(name)
        if found is None and "." in name:
            found = self.wildcard.get(name.split(".", 1)[1])
        return found or self.default

    def __call__(self, sslobj, server_name, _ctx):
        chosen = self.select(server_name)
        if chosen is not sslobj.context:
            sslobj.context = chosen
        return None


def server_context(tls: Tls, certificates: Iterable[Certificate], cert_key: bytes | str) -> ssl.SSLContext:
    """A context presenting the VIP's certificates; with several, SNI switches between them."""
    selector = sni_selector(tls, certificates, cert_key)
    if selector.count > 1:
        selector.default.sni_callback = selector
    return selector.default


def sni_selector(tls: Tls, certificates: Iterable[Certificate], cert_key: bytes | str) -> SniSelector:
    """One context per certificate of the VIP, chosen by server name (the first is the default).

    A listener installs the selector as the SNI callback of the context it gave
    the event loop, and swaps in a new selector when the certificates change.
    """
    by_name = {c.name: c for c in certificates}
    if not tls.certificates:
        raise CertificateError("a layer-7 service needs at least one certificate")
    contexts = []
    for name in tls.certificates:
        if name not in by_name:
            raise CertificateError(f"no certificate named {name!r}")
        cert = by_name[name]
        ctx = _server_base()
        load_certificate(ctx, cert.cert_pem, decrypt_private_key(cert.key_pem_encrypted, cert_key))
        contexts.append((ctx, cert.server_names or certificate_names(cert.cert_pem)))
    selector = SniSelector(contexts[0][0])
    for ctx, names in contexts:
        selector.add(names, ctx)
    selector.count = len(contexts)
    return selector


def backend_context(tls: Tls) -> ssl.SSLContext | None:
    """The client context towards the real servers, or None for plain HTTP.

    Verification checks the chain against `backend_ca` (or the system store).
    Host names are not checked: servers are addressed by IP, and Horizon
    servers' certificates name hosts, not addresses; a private CA bundle is
    what makes verification meaningful here.
    """
    if not tls.backend_tls:
        return None
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(ALPN)
    ctx.check_hostname = False
    if not tls.backend_verify:
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.backend_ca.strip():
        try:
            ctx.load_verify_locations(cadata=tls.backend_ca)
        except (ssl.SSLError, ValueError) as exc:
            raise CertificateError(f"the backend CA bundle cannot be read: {exc}") from None
    else:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    return ctx


# --- certificate checks (the console's upload form) --------------------------------------


def certificate_names(cert_pem: str) -> tuple[str, ...]:
    """The DNS names a certificate answers: its subjectAltName, else its common name."""
    try:
        leaf = x509.load_pem_x509_certificates(cert_pem.encode())[0]
    except ValueError:
        return ()
    return _names(leaf)


def _names(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return tuple(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME))
    return tuple(san.get_values_for_type(x509.DNSName)) + tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))


@dataclass
class CertificateReport:
    """What the upload form shows: errors by field (cert_pem, key_pem, chain_pem), warnings, facts."""

    errors: list[tuple[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    subject: str = ""
    issuer: str = ""
    names: tuple[str, ...] = ()
    not_before: datetime.datetime | None = None
    not_after: datetime.datetime | None = None
    days_left: int | None = None
    fingerprint_sha256: str = ""
    self_signed: bool = False
    cert_pem: str = ""  # leaf then chain, normalised: what `Certificate.cert_pem` stores

    @property
    def ok(self) -> bool:
        return not self.errors

    def errors_for(self, name: str) -> list[str]:
        return [message for where, message in self.errors if where == name]


def check_certificate(cert_pem: str, key_pem: str, chain_pem: str = "",
                      now: datetime.datetime | None = None) -> CertificateReport:
    """Checks an upload: readable, key matches, chain in order (each signed by the next), dates."""
    now = now or datetime.datetime.now(datetime.UTC)
    report = CertificateReport()
    certs = _read_certificates(report, "cert_pem", cert_pem, required=True)
    chain = _read_certificates(report, "chain_pem", chain_pem, required=False)
    key = _read_key(report, key_pem)
    if not certs:
        return report
    leaf, full = certs[0], certs + chain
    _describe(report, leaf, full, now)
    if key is not None and not _same_public_key(key, leaf):
        report.errors.append(("key_pem", "the private key does not belong to this certificate"))
    _check_order(report, full, "chain_pem" if chain else "cert_pem")
    _check_dates(report, full, now)
    if report.ok:
        try:
            load_certificate(_server_base(), report.cert_pem, key_pem.encode())
        except CertificateError as exc:
            report.errors.append(("cert_pem", str(exc)))
    return report


def _read_certificates(report, where, text, required):
    text = (text or "").strip()
    if not text:
        if required:
            report.errors.append((where, "a certificate is required"))
        return []
    if "PRIVATE KEY-----" in text:
        report.errors.append((where, "this field holds a private key; it goes in the key field"))
        return []
    if "-----BEGIN CERTIFICATE-----" not in text:
        report.errors.append((where, "not a PEM certificate: paste the text from -----BEGIN CERTIFICATE----- "
                                     "to -----END CERTIFICATE-----"))
        return []
    try:
        return x509.load_pem_x509_certificates(text.encode())
    except ValueError:
        report.errors.append((where, "the certificate text is damaged and cannot be read"))
        return []


def _read_key(report, text):
    text = (text or "").strip()
    if not text:
        report.errors.append(("key_pem", "the private key is required"))
        return None
    if "ENCRYPTED" in text:
        report.errors.append(("key_pem", "the private key is protected by a passphrase; upload it without one "
                                         "(openssl pkey -in key.pem -out plain.pem)"))
        return None
    try:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    except (ValueError, TypeError):
        report.errors.append(("key_pem", "not a readable PEM private key (expected -----BEGIN PRIVATE KEY-----)"))
        return None
    except Exception as exc:  # cryptography raises UnsupportedAlgorithm for exotic keys
        report.errors.append(("key_pem", f"unsupported private key: {exc}"))
        return None
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size < 2048:
        report.errors.append(("key_pem", f"an RSA key of {key.key_size} bits is too weak; use at least 2048"))
    elif not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        report.errors.append(("key_pem", "only RSA and EC keys are supported"))
    return key


def _describe(report, leaf, full, now):
    report.subject = leaf.subject.rfc4514_string()
    report.issuer = leaf.issuer.rfc4514_string()
    report.names = _names(leaf)
    report.not_before = leaf.not_valid_before_utc
    report.not_after = leaf.not_valid_after_utc
    report.days_left = (leaf.not_valid_after_utc - now).days
    report.fingerprint_sha256 = leaf.fingerprint(hashes.SHA256()).hex(":").upper()
    report.self_signed = leaf.issuer == leaf.subject
    report.cert_pem = "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in full)
    try:
        leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        report.warnings.append("the certificate has no subjectAltName; current clients ignore the common name")


def _same_public_key(key, cert) -> bool:
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    return key.public_key().public_bytes(*spki) == cert.public_key().public_bytes(*spki)


def _issued(child, parent) -> bool:
    try:
        child.verify_directly_issued_by(parent)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _label(cert) -> str:
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return cn[0].value if cn else cert.subject.rfc4514_string()


def _check_order(report, full, where):
    for i in range(len(full) - 1):
        child, parent = full[i], full[i + 1]
        if _issued(child, parent):
            continue
        issuer = next((j for j, c in enumerate(full) if j != i and _issued(child, c)), None)
        if issuer is not None:
            message = (f"the chain is out of order: {_label(full[issuer])!r} issued {_label(child)!r} and must "
                       f"come right after it (leaf first, then each issuer)")
        else:
            message = (f"{_label(parent)!r} did not issue {_label(child)!r}: each certificate must be "
                       f"followed by the one that signed it")
        report.errors.append((where, message))
        return


def _check_dates(report, full, now):
    for i, cert in enumerate(full):
        what = "the certificate" if i == 0 else f"chain certificate {_label(cert)!r}"
        if cert.not_valid_after_utc <= now:
            report.errors.append(("cert_pem" if i == 0 else "chain_pem",
                                  f"{what} expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"))
        elif cert.not_valid_before_utc > now:
            report.errors.append(("cert_pem" if i == 0 else "chain_pem",
                                  f"{what} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"))
        elif (cert.not_valid_after_utc - now).days < WARN_DAYS:
            days = (cert.not_valid_after_utc - now).days
            report.warnings.append(f"{what} expires in {days} days ({cert.not_valid_after_utc:%Y-%m-%d})")


# --- self-signed certificates (the console's "generate" button) -------------------------------


def generate_self_signed(common_name: str, names: Iterable[str] = (), days: int = 825,
                         now: datetime.datetime | None = None) -> tuple[str, str]:
    """A self-signed server certificate (EC P-256) for `common_name` and `names`: (cert PEM, key PEM)."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    alt = []
    for name in dict.fromkeys([common_name, *names]):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()
