"""TLS contexts with real handshakes on loopback: SNI, versions, ALPN, re-encryption; keys at rest."""
import asyncio
import glob
import os
import ssl
import tempfile

import pytest

from proxyworker.config import Certificate, HealthCheck, Persistence, Pool, RealServer, Snapshot, Tls, VirtualService
from proxyworker.tlsconf import (
    CertificateError,
    backend_context,
    cert_key_from_env,
    certificate_names,
    decrypt_private_key,
    encrypt_private_key,
    generate_cert_key,
    generate_self_signed,
    load_certificate,
    server_context,
)

from .pki import Pki, cert_pem, issue, key_pem, new_key

pytestmark = pytest.mark.xdist_group("l7-tls")  # the temp-file test must not see another test's file

KEY = generate_cert_key()


@pytest.fixture(scope="module")
def certs():
    """Two certificates as the snapshot carries them: a portal name and a wildcard."""
    portal_cert, portal_key = generate_self_signed("portal.example.com", ["view.example.com"])
    apps_cert, apps_key = generate_self_signed("apps.example.com", ["*.apps.example.com"])
    return {
        "portal": Certificate("portal", portal_cert, encrypt_private_key(portal_key, KEY)),
        "apps": Certificate("apps", apps_cert, encrypt_private_key(apps_key, KEY), ("*.apps.example.com",)),
    }


def client_trusting(*pems, **versions) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cadata="".join(pems))
    for name, value in versions.items():
        setattr(ctx, name, value)
    return ctx


async def _handshake(server_ctx, client_ctx, server_hostname):
    async def serve(reader, writer):
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=server_hostname), 5)
        tls = writer.get_extra_info("ssl_object")
        result = {
            "cert": tls.getpeercert(binary_form=True), "version": tls.version(),
            "alpn": tls.selected_alpn_protocol(), "cipher": tls.cipher()[0], "data": await reader.read(),
        }
        writer.close()
        return result
    finally:
        server.close()
        await server.wait_closed()


def handshake(server_ctx, client_ctx, server_hostname):
    return asyncio.run(_handshake(server_ctx, client_ctx, server_hostname))


def der(pem):
    return ssl.PEM_cert_to_DER_cert(pem)


# --- keys at rest -------------------------------------------------------------------------


def test_a_private_key_survives_encryption_and_is_not_readable_in_the_token():
    _cert, key_pem_text = generate_self_signed("a.example.com")
    token = encrypt_private_key(key_pem_text, KEY)
    assert "PRIVATE KEY" not in token and key_pem_text[40:80] not in token
    assert decrypt_private_key(token, KEY) == key_pem_text.encode()
    assert encrypt_private_key(key_pem_text, KEY) != token  # fresh IV every time


def test_decrypting_with_another_key_says_which_setting_is_wrong():
    token = encrypt_private_key("-----BEGIN PRIVATE KEY-----\n...", KEY)
    with pytest.raises(CertificateError, match="VIEWLB_CERT_KEY differs"):
        decrypt_private_key(token, generate_cert_key())
    with pytest.raises(CertificateError, match="damaged"):
        decrypt_private_key(token[:-4] + "AAAA", KEY)


def test_the_key_comes_from_the_environment_and_is_checked():
    assert cert_key_from_env({"VIEWLB_CERT_KEY": KEY}) == KEY.encode()
    with pytest.raises(CertificateError, match="VIEWLB_CERT_KEY is not set"):
        cert_key_from_env({})
    with pytest.raises(CertificateError, match="not a valid key"):
        cert_key_from_env({"VIEWLB_CERT_KEY": "too-short"})


# --- server contexts with SNI -------------------------------------------------------------------


@pytest.mark.parametrize("sni, expected", [
    ("portal.example.com", "portal"),
    ("view.example.com", "portal"),          # the second SAN name, found from the certificate itself
    ("PORTAL.Example.COM.", "portal"),        # case and a trailing dot do not matter
    ("x.apps.example.com", "apps"),           # wildcard
    ("unknown.example.com", "portal"),        # unknown: the default (first) certificate
    ("a.b.apps.example.com", "portal"),       # a wildcard covers one label only
])
def test_sni_selects_the_certificate(certs, sni, expected):
    ctx = server_context(Tls(certificates=("portal", "apps")), certs.values(), KEY)
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    result = handshake(ctx, client, sni)
    assert result["cert"] == der(certs[expected].cert_pem)
    assert result["data"] == b"hello"


def test_a_verifying_client_accepts_the_selected_certificate(certs):
    ctx = server_context(Tls(certificates=("portal", "apps")), certs.values(), KEY)
    client = client_trusting(certs["portal"].cert_pem, certs["apps"].cert_pem)
    assert handshake(ctx, client, "www.apps.example.com")["cert"] == der(certs["apps"].cert_pem)
    assert handshake(ctx, client, "view.example.com")["cert"] == der(certs["portal"].cert_pem)


def test_a_client_without_sni_gets_the_default(certs):
    ctx = server_context(Tls(certificates=("apps", "portal")), certs.values(), KEY)
    client = ssl.create_default_context()
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    assert handshake(ctx, client, "")["cert"] == der(certs["apps"].cert_pem)


def test_tls_13_by_default_and_http11_over_alpn(certs):
    ctx = server_context(Tls(certificates=("portal",)), certs.values(), KEY)
    client = client_trusting(certs["portal"].cert_pem)
    client.set_alpn_protocols(["h2", "http/1.1"])
    result = handshake(ctx, client, "portal.example.com")
    assert result["version"] == "TLSv1.3" and result["alpn"] == "http/1.1"


def test_tls_12_uses_forward_secret_aead_ciphers(certs):
    ctx = server_context(Tls(certificates=("portal",)), certs.values(), KEY)
    client = client_trusting(certs["portal"].cert_pem, maximum_version=ssl.TLSVersion.TLSv1_2)
    result = handshake(ctx, client, "portal.example.com")
    assert result["version"] == "TLSv1.2"
    assert result["cipher"].startswith("ECDHE") and ("GCM" in result["cipher"] or "CHACHA" in result["cipher"])


def test_tls_12_without_forward_secrecy_is_refused():
    rsa_key = new_key("rsa")
    rsa_cert = cert_pem(issue("rsa.example.com", rsa_key))
    cert = Certificate("rsa", rsa_cert, encrypt_private_key(key_pem(rsa_key), KEY))
    ctx = server_context(Tls(certificates=("rsa",)), [cert], KEY)
    client = client_trusting(rsa_cert, maximum_version=ssl.TLSVersion.TLSv1_2)
    client.set_ciphers("AES128-GCM-SHA256")  # static RSA key exchange only
    lenient = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    lenient.set_ciphers("ALL")
    load_certificate(lenient, rsa_cert, key_pem(rsa_key).encode())
    assert handshake(lenient, client, "rsa.example.com")["cipher"] == "AES128-GCM-SHA256"  # the client can
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(ctx, client, "rsa.example.com")  # but our servers do not


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_11_and_older_are_refused(certs):
    ctx = server_context(Tls(certificates=("portal",)), certs.values(), KEY)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    client.set_ciphers("ALL:@SECLEVEL=0")
    client.minimum_version = ssl.TLSVersion.TLSv1
    client.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(ctx, client, "portal.example.com")


def test_a_wrong_cert_key_or_unknown_certificate_is_a_clear_error(certs):
    with pytest.raises(CertificateError, match="VIEWLB_CERT_KEY differs"):
        server_context(Tls(certificates=("portal",)), certs.values(), generate_cert_key())
    with pytest.raises(CertificateError, match="no certificate named 'gone'"):
        server_context(Tls(certificates=("gone",)), certs.values(), KEY)
    with pytest.raises(CertificateError, match="at least one certificate"):
        server_context(Tls(certificates=()), certs.values(), KEY)


def test_a_certificate_with_the_wrong_key_is_refused_by_openssl(certs):
    _other_cert, other_key = generate_self_signed("other.example.com")
    with pytest.raises(CertificateError, match="OpenSSL refuses"):
        load_certificate(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), certs["portal"].cert_pem, other_key.encode())


def test_no_key_file_is_left_behind(certs):
    # this process's files only: workers started by tests running beside this one write their own
    places = ["/dev/shm", tempfile.gettempdir()]
    ours = f"viewlb-cert-{os.getpid()}-*"
    for _ in range(5):
        server_context(Tls(certificates=("portal", "apps")), certs.values(), KEY)
    assert not [p for place in places for p in glob.glob(os.path.join(place, ours))]


def test_certificate_names_come_from_the_subject_alt_name(certs):
    assert certificate_names(certs["portal"].cert_pem) == ("portal.example.com", "view.example.com")
    assert certificate_names("garbage") == ()


def test_a_snapshot_with_certificates_builds_contexts(certs):
    snapshot = Snapshot(
        version=3,
        pools=(Pool("uags", (RealServer("uags/u1", "u1", "127.0.0.1", 8443),), HealthCheck()),),
        certificates=tuple(certs.values()),
        virtual_services=(VirtualService("horizon", "127.0.0.1", 443, "uags", mode="l7",
                                         persistence=Persistence(method="cookie_learn"),
                                         tls=Tls(certificates=("portal", "apps"))),),
    )
    again = Snapshot.from_json(snapshot.to_json())
    vs = again.virtual_services[0]
    ctx = server_context(vs.tls, again.certificates, KEY)
    client = client_trusting(certs["apps"].cert_pem)
    assert handshake(ctx, client, "w.apps.example.com")["cert"] == der(certs["apps"].cert_pem)


# --- re-encryption towards the servers --------------------------------------------------------


@pytest.fixture(scope="module")
def backend():
    """A real server presenting leaf + intermediate from a private CA, as a Horizon server would."""
    pki = Pki(("uag1.corp.example",))
    cert = Certificate("uag1", pki.leaf_pem + cert_pem(pki.intermediate), encrypt_private_key(pki.key_pem, KEY))
    return pki, server_context(Tls(certificates=("uag1",)), [cert], KEY)


def test_plain_http_towards_servers_has_no_context():
    assert backend_context(Tls(backend_tls=False)) is None


def test_re_encryption_without_verification_accepts_any_certificate(backend):
    pki, server = backend
    client = backend_context(Tls())
    assert client.verify_mode == ssl.CERT_NONE and client.minimum_version == ssl.TLSVersion.TLSv1_2
    assert handshake(server, client, "")["data"] == b"hello"


def test_re_encryption_with_verification_checks_the_chain_against_the_bundle(backend):
    pki, server = backend
    client = backend_context(Tls(backend_verify=True, backend_ca=pki.root_pem))
    result = handshake(server, client, "")  # addressed by IP: the chain is checked, not the name
    assert result["data"] == b"hello" and result["alpn"] == "http/1.1"
    stranger = backend_context(Tls(backend_verify=True, backend_ca=Pki().root_pem))
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(server, stranger, "")


def test_a_server_with_an_expired_certificate_fails_verification():
    pki = Pki()
    old_key = new_key()
    old = issue("old.corp.example", old_key, pki.intermediate, pki.int_key,
                start=pki.leaf.not_valid_before_utc.replace(year=2020), days=30)
    cert = Certificate("old", cert_pem(old) + cert_pem(pki.intermediate), encrypt_private_key(key_pem(old_key), KEY))
    server = server_context(Tls(certificates=("old",)), [cert], KEY)
    client = backend_context(Tls(backend_verify=True, backend_ca=pki.root_pem))
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        handshake(server, client, "")


def test_a_broken_ca_bundle_is_a_clear_error():
    with pytest.raises(CertificateError, match="backend CA bundle"):
        backend_context(Tls(backend_verify=True, backend_ca="-----BEGIN CERTIFICATE-----\nnope\n"))
