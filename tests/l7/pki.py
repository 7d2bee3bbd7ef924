"""A small PKI for tests: a root, an intermediate, leaves, expired and future certificates."""
import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

NOW = datetime.datetime.now(datetime.UTC)


def key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def cert_pem(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def new_key(kind="ec", bits=2048):
    return ec.generate_private_key(ec.SECP256R1()) if kind == "ec" else rsa.generate_private_key(65537, bits)


def issue(name, key, issuer=None, issuer_key=None, ca=False, names=(), start=None, days=365):
    """A certificate for `name` with `key`, signed by (issuer, issuer_key) or self-signed."""
    start = start or NOW - datetime.timedelta(days=1)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in (names or [name])]),
                                        critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


class Pki:
    """root -> intermediate -> leaf, all EC."""

    def __init__(self, leaf_names=("horizon.example.com",)):
        self.root_key, self.int_key, self.leaf_key = new_key(), new_key(), new_key()
        self.root = issue("Test Root CA", self.root_key, ca=True, days=3650)
        self.intermediate = issue("Test Intermediate CA", self.int_key, self.root, self.root_key, ca=True, days=1825)
        self.leaf = issue(leaf_names[0], self.leaf_key, self.intermediate, self.int_key, names=leaf_names)

    @property
    def leaf_pem(self):
        return cert_pem(self.leaf)

    @property
    def key_pem(self):
        return key_pem(self.leaf_key)

    @property
    def chain_pem(self):
        return cert_pem(self.intermediate) + cert_pem(self.root)

    @property
    def root_pem(self):
        return cert_pem(self.root)
