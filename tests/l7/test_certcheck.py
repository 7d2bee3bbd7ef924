"""The upload check the console's certificate form calls: each mistake gets a clear message on its field."""
import datetime

import pytest
from cryptography.hazmat.primitives import serialization

from proxyworker.tlsconf import check_certificate, generate_self_signed

from .pki import NOW, Pki, cert_pem, issue, key_pem, new_key

pytestmark = pytest.mark.xdist_group("l7-tls")


@pytest.fixture(scope="module")
def pki():
    return Pki(("horizon.example.com", "view.example.com"))


def test_a_good_upload_with_a_separate_chain(pki):
    report = check_certificate(pki.leaf_pem, pki.key_pem, pki.chain_pem)
    assert report.ok, report.errors
    assert report.warnings == []
    assert report.names == ("horizon.example.com", "view.example.com")
    assert report.subject == "CN=horizon.example.com" and report.issuer == "CN=Test Intermediate CA"
    assert 363 <= report.days_left <= 365 and not report.self_signed
    assert report.cert_pem.count("BEGIN CERTIFICATE") == 3
    assert report.cert_pem.startswith(pki.leaf_pem)
    assert len(report.fingerprint_sha256.split(":")) == 32


def test_the_chain_may_follow_the_leaf_in_the_certificate_field(pki):
    report = check_certificate(pki.leaf_pem + pki.chain_pem, pki.key_pem)
    assert report.ok and report.cert_pem.count("BEGIN CERTIFICATE") == 3


def test_a_generated_self_signed_certificate_passes():
    cert, key = generate_self_signed("lb.example.com", ["10.0.0.5"])
    report = check_certificate(cert, key)
    assert report.ok and report.self_signed and report.names == ("lb.example.com", "10.0.0.5")


def test_a_key_that_does_not_match(pki):
    report = check_certificate(pki.leaf_pem, key_pem(new_key()), pki.chain_pem)
    assert report.errors_for("key_pem") == ["the private key does not belong to this certificate"]
    assert not report.ok


def test_a_chain_out_of_order_says_what_goes_where(pki):
    report = check_certificate(pki.leaf_pem, pki.key_pem, pki.root_pem + cert_pem(pki.intermediate))
    [message] = report.errors_for("chain_pem")
    assert "out of order" in message and "'Test Intermediate CA' issued 'horizon.example.com'" in message


def test_a_chain_from_another_ca(pki):
    report = check_certificate(pki.leaf_pem, pki.key_pem, Pki().chain_pem)
    [message] = report.errors_for("chain_pem")
    assert "did not issue 'horizon.example.com'" in message


@pytest.mark.parametrize("text, expected", [
    ("hello, this is not a certificate", "not a PEM certificate"),
    ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "damaged"),
    ("", "a certificate is required"),
])
def test_garbage_in_the_certificate_field(pki, text, expected):
    report = check_certificate(text, pki.key_pem)
    [message] = report.errors_for("cert_pem")
    assert expected in message


def test_a_private_key_pasted_into_the_certificate_field(pki):
    report = check_certificate(pki.key_pem, pki.key_pem)
    assert "holds a private key" in report.errors_for("cert_pem")[0]


@pytest.mark.parametrize("text, expected", [
    ("garbage", "not a readable PEM private key"),
    ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a readable PEM private key"),
    ("", "the private key is required"),
])
def test_garbage_in_the_key_field(pki, text, expected):
    report = check_certificate(pki.leaf_pem, text, pki.chain_pem)
    assert expected in report.errors_for("key_pem")[0]


def test_a_passphrase_protected_key_is_explained(pki):
    locked = pki.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.BestAvailableEncryption(b"secret")).decode()
    report = check_certificate(pki.leaf_pem, locked, pki.chain_pem)
    assert "passphrase" in report.errors_for("key_pem")[0]


def test_an_expired_certificate(pki):
    later = NOW + datetime.timedelta(days=400)
    report = check_certificate(pki.leaf_pem, pki.key_pem, pki.chain_pem, now=later)
    [message] = report.errors_for("cert_pem")
    assert message.startswith("the certificate expired on ") and report.days_left < 0


def test_a_certificate_not_yet_valid():
    key = new_key()
    future = issue("soon.example.com", key, start=NOW + datetime.timedelta(days=3))
    report = check_certificate(cert_pem(future), key_pem(key))
    assert "not valid before" in report.errors_for("cert_pem")[0]


def test_a_certificate_expiring_within_30_days_warns(pki):
    soon = NOW + datetime.timedelta(days=350)
    report = check_certificate(pki.leaf_pem, pki.key_pem, pki.chain_pem, now=soon)
    assert report.ok and report.days_left < 30
    assert any(w.startswith("the certificate expires in ") for w in report.warnings)


def test_an_expired_intermediate_is_named(pki):
    root_key, int_key, leaf_key = new_key(), new_key(), new_key()
    root = issue("Root", root_key, ca=True, days=3650)
    old_int = issue("Old Intermediate", int_key, root, root_key, ca=True,
                    start=NOW - datetime.timedelta(days=100), days=10)
    leaf = issue("leaf.example.com", leaf_key, old_int, int_key)
    report = check_certificate(cert_pem(leaf), key_pem(leaf_key), cert_pem(old_int) + cert_pem(root))
    assert "chain certificate 'Old Intermediate' expired" in report.errors_for("chain_pem")[0]


def test_a_weak_rsa_key_is_refused():
    key = new_key("rsa", 1024)
    report = check_certificate(cert_pem(issue("weak.example.com", key)), key_pem(key))
    assert "too weak" in report.errors_for("key_pem")[0]


def test_a_certificate_without_subject_alt_name_warns():
    key = new_key()
    no_san = issue("legacy.example.com", key, ca=True)  # CA certificates from pki.issue carry no SAN
    report = check_certificate(cert_pem(no_san), key_pem(key))
    assert report.names == ("legacy.example.com",)
    assert any("subjectAltName" in w for w in report.warnings)


def test_several_mistakes_are_all_reported(pki):
    report = check_certificate(pki.leaf_pem, key_pem(new_key()), pki.root_pem + cert_pem(pki.intermediate),
                               now=NOW + datetime.timedelta(days=400))
    fields = {field for field, _ in report.errors}
    assert fields == {"key_pem", "chain_pem", "cert_pem"}
