"""Certificates in the configuration: the snapshot the workers load, the diff, YAML export/apply, settings."""
import asyncio
import os
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from balancer import services
from balancer.declarative import DeclarativeError, dump_yaml
from balancer.models import AuditEntry, Certificate, ConfigVersion, VirtualService
from proxyworker import tlsconf
from proxyworker.config import Snapshot
from tests.l7.pki import Pki

from .conftest import make_certificate
from .test_certificates import assert_no_key

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


# --- the snapshot -----------------------------------------------------------------------------------


def test_the_snapshot_carries_the_certificate_and_the_tls_settings(layer7, pki, admin_user, redis_client, keys):
    make_certificate("unused", *tlsconf.generate_self_signed("spare.example.com"))
    vip = layer7["vip"]
    vip.backend_verify, vip.backend_ca = True, pki.root_pem
    vip.save()
    services.publish(admin_user, "tls")
    snapshot = Snapshot.from_json(redis_client.get(keys.config))
    [cert] = snapshot.certificates  # only certificates a layer-7 service presents travel
    assert cert.name == "horizon-cert" and cert.cert_pem == pki.leaf_pem + pki.chain_pem
    assert cert.server_names == ("horizon.example.com", "view.example.com")
    assert tlsconf.decrypt_private_key(cert.key_pem_encrypted, settings.VIEWLB_CERT_KEY).decode() == pki.key_pem
    [vs] = snapshot.virtual_services
    assert (vs.mode, vs.persistence.method) == ("l7", "cookie_learn")
    assert (vs.tls.certificates, vs.tls.backend_tls, vs.tls.backend_verify, vs.tls.backend_ca) == (
        ("horizon-cert",), True, True, pki.root_pem)


def test_layer4_services_have_no_tls_in_the_snapshot(horizon, certificate):
    snapshot = services.compile_snapshot()
    assert snapshot.virtual_services[0].tls is None and snapshot.certificates == ()


def test_a_layer7_service_without_certificates_is_not_published(layer7, admin_user):
    layer7["vip"].set_certificates([])
    with pytest.raises(services.PublishError, match="virtual service 'horizon-443': certificates: a layer-7 service "
                                                    "needs at least one certificate"):
        services.publish(admin_user)
    assert not ConfigVersion.objects.exists()


def handshake(server_ctx, client_ctx, server_name):
    """A real TLS handshake on loopback; the certificate the client got, as PEM."""
    async def run():
        async def serve(reader, writer):
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname=server_name), 5)
            der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
            writer.close()
            return ssl.DER_cert_to_PEM_cert(der)
        finally:
            server.close()
            await server.wait_closed()

    return asyncio.run(run())


def test_a_worker_builds_working_tls_from_the_published_snapshot(layer7, pki, admin_user, redis_client, keys):
    """What the console stores is what a worker can serve: SNI picks between the two certificates."""
    portal = Pki(("portal.example.com",))
    second = make_certificate("portal", portal.leaf_pem, portal.key_pem, portal.chain_pem)
    layer7["vip"].set_certificates([layer7["certificate"], second])
    services.publish(admin_user)
    snapshot = Snapshot.from_json(redis_client.get(keys.config))
    vs = snapshot.virtual_services[0]
    server_ctx = tlsconf.server_context(vs.tls, snapshot.certificates, os.environ["VIEWLB_CERT_KEY"])
    # Both test roots are called "Test Root CA": one trusting client per CA, so OpenSSL cannot mix them up.
    trusting = {name: ssl.create_default_context(cadata=ca.root_pem) for name, ca in (("pki", pki), ("portal", portal))}
    got = handshake(server_ctx, trusting["portal"], "portal.example.com")  # verified: chain and name
    assert ssl.PEM_cert_to_DER_cert(got) == ssl.PEM_cert_to_DER_cert(portal.leaf_pem)
    got = handshake(server_ctx, trusting["pki"], "view.example.com")
    assert ssl.PEM_cert_to_DER_cert(got) == ssl.PEM_cert_to_DER_cert(pki.leaf_pem)


# --- the diff ---------------------------------------------------------------------------------------


def test_the_diff_shows_fingerprints_not_pem_or_keys(layer7, pki, admin_user):
    services.publish(admin_user)
    cert = layer7["certificate"]
    old_fingerprint = cert.fingerprint
    renewed = Pki(("horizon.example.com",))
    cert.set_material(renewed.leaf_pem, renewed.chain_pem, renewed.key_pem)
    cert.save()
    diff = services.pending_diff()
    text = "\n".join(diff)
    assert f'-certificates/horizon-cert/fingerprint: "{old_fingerprint}"' in diff
    assert f'+certificates/horizon-cert/fingerprint: "{cert.fingerprint}"' in diff
    assert any(line.startswith("+certificates/horizon-cert/private_key: \"encrypted, sha256:") for line in diff)
    assert '+certificates/horizon-cert/server_names: ["horizon.example.com"]' in diff
    assert "BEGIN CERTIFICATE" not in text and cert.key_encrypted not in text
    assert_no_key(text, renewed.key_pem, "the diff")
    assert services.pending_changes() == ["certificates/horizon-cert"]


def test_an_unchanged_certificate_is_no_pending_change(layer7, admin_user):
    services.publish(admin_user)
    assert services.pending_diff() == []


# --- YAML export and apply --------------------------------------------------------------------------


def test_export_then_apply_with_certificates_is_a_no_op(layer7, pki, admin_user, redis_client, keys):
    vip = layer7["vip"]
    vip.backend_verify, vip.backend_ca = True, pki.root_pem
    vip.save()
    services.publish(admin_user)
    text = services.export_config()
    document = yaml.safe_load(text)
    [exported] = document["certificates"]
    assert set(exported) == {"name", "cert_pem", "chain_pem", "key_encrypted"}
    assert exported["key_encrypted"] == layer7["certificate"].key_encrypted
    assert "cert_pem: |" in text  # PEM as a literal block, readable and copyable
    service = document["virtual_services"][0]
    assert (service["certificates"], service["backend_tls"], service["backend_verify"]) == (["horizon-cert"], True, True)
    assert_no_key(text, pki.key_pem, "the export")
    before = (text, ConfigVersion.objects.count(), AuditEntry.objects.count(), redis_client.get(keys.config),
              list(Certificate.objects.values_list("pk", "key_encrypted", "updated")))

    diff, version = services.apply_config(text, admin_user)

    assert (diff, version) == ([], None)
    after = (services.export_config(), ConfigVersion.objects.count(), AuditEntry.objects.count(),
             redis_client.get(keys.config), list(Certificate.objects.values_list("pk", "key_encrypted", "updated")))
    assert after == before


def test_apply_accepts_a_clear_key_and_encrypts_it_at_once(horizon, pki, admin_user):
    data = yaml.safe_load(services.export_config())
    data["certificates"] = [
        {"name": "yaml-cert", "cert_pem": pki.leaf_pem, "chain_pem": pki.chain_pem, "key_pem": pki.key_pem}]
    data["virtual_services"][0].update(mode="l7", certificates=["yaml-cert"])
    text = dump_yaml(data)
    diff, version = services.apply_config(text, admin_user)
    assert version.number == 1
    cert = Certificate.objects.get(name="yaml-cert")
    assert "PRIVATE KEY" not in cert.key_encrypted and cert.private_key_pem() == pki.key_pem
    assert [c.name for c in VirtualService.objects.get().ordered_certificates()] == ["yaml-cert"]
    export = services.export_config()
    assert "key_pem" not in export and f"key_encrypted: {cert.key_encrypted}" in export
    for entry in AuditEntry.objects.all():
        assert_no_key(str(entry.details), pki.key_pem, f"audit entry {entry}")
    # the same document again changes nothing: the clear key is the stored one
    assert services.apply_config(text, admin_user) == ([], None)
    assert Certificate.objects.get().key_encrypted == cert.key_encrypted


def test_rollback_brings_back_a_deleted_certificate_with_its_key(layer7, admin_user):
    services.publish(admin_user)
    token = layer7["certificate"].key_encrypted
    vip = layer7["vip"]
    vip.set_certificates([])
    vip.mode, vip.persistence = "l4", layer7["policy"]
    vip.save()
    Certificate.objects.all().delete()
    services.publish(admin_user)
    services.rollback(1, admin_user)
    cert = Certificate.objects.get()
    assert cert.key_encrypted == token and VirtualService.objects.get().ordered_certificates() == [cert]


CERT_YAML = """\
pools:
  - name: uag
    servers:
      - {name: uag1, address: 127.0.0.11, port: 9443}
virtual_services:
  - name: horizon-443
    address: 127.0.0.1
    port: 8443
    pool: uag
    mode: l7
    certificates: [web]
certificates:
  - name: web
    cert_pem: |
CERT
    chain_pem: |
CHAIN
    key_pem: |
KEY
"""


def document(cert, chain, key):
    def block(text):
        return "\n".join("      " + line for line in text.strip().splitlines())
    return CERT_YAML.replace("CERT", block(cert)).replace("CHAIN", block(chain)).replace("KEY", block(key))


def line_of(text, needle):
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_a_valid_certificate_document_applies(pki, admin_user):
    services.apply_config(document(pki.leaf_pem, pki.chain_pem, pki.key_pem), admin_user)
    assert Certificate.objects.get().names == ["horizon.example.com", "view.example.com"]


BAD = [
    ("wrong key", lambda p: document(p.leaf_pem, p.chain_pem, Pki().key_pem), "key_pem: |",
     "certificates[0].key_pem: the private key does not belong to this certificate"),
    ("garbage certificate", lambda p: document("hello", p.chain_pem, p.key_pem), "cert_pem: |",
     "certificates[0].cert_pem: not a PEM certificate"),
    ("chain out of order", lambda p: document(p.leaf_pem, p.root_pem + p.chain_pem.split(p.root_pem)[0], p.key_pem),
     "chain_pem: |", "certificates[0].chain_pem: the chain is out of order"),
    ("unknown certificate", lambda p: document(p.leaf_pem, p.chain_pem, p.key_pem).replace("[web]", "[web, other]"),
     "certificates: [web, other]", "virtual_services[0].certificates: no certificate named 'other' in this document"),
    ("layer 7 without certificates", lambda p: document(p.leaf_pem, p.chain_pem, p.key_pem).replace("[web]", "[]"),
     "certificates: []", "virtual_services[0].certificates: a layer-7 service needs at least one certificate"),
    ("certificates on layer 4", lambda p: document(p.leaf_pem, p.chain_pem, p.key_pem).replace("mode: l7", "mode: l4"),
     "certificates: [web]", "virtual_services[0].certificates: only layer-7 services present certificates"),
    ("undecryptable key", lambda p: document(p.leaf_pem, p.chain_pem, p.key_pem).replace(
        "    key_pem: |\n" + "\n".join("      " + line for line in p.key_pem.strip().splitlines()),
        "    key_encrypted: " + tlsconf.encrypt_private_key(p.key_pem, tlsconf.generate_cert_key())),
     "key_encrypted:", "certificates[0].key_encrypted: the private key cannot be decrypted: VIEWLB_CERT_KEY differs"),
    ("no key", lambda p: document(p.leaf_pem, p.chain_pem, p.key_pem).split("    key_pem:")[0],
     "  - name: web", "certificates[0]: needs the private key: key_pem"),
    ("bad CA bundle", lambda p: document(p.leaf_pem, p.chain_pem, p.key_pem).replace(
        "    certificates: [web]\n", "    certificates: [web]\n    backend_ca: hello\n"),
     "backend_ca: hello", "virtual_services[0].backend_ca: not PEM certificates"),
]


@pytest.mark.parametrize("description, make, needle, expected", BAD, ids=[b[0] for b in BAD])
def test_bad_certificate_documents_name_the_line_and_change_nothing(pki, admin_user, description, make, needle,
                                                                   expected):
    text = make(pki)
    with pytest.raises(DeclarativeError) as info:
        services.apply_config(text, admin_user)
    assert str(info.value).startswith(f"line {line_of(text, needle)}: "), str(info.value)
    assert expected in str(info.value)
    assert not Certificate.objects.exists() and not VirtualService.objects.exists()
    assert_no_key(str(info.value), pki.key_pem, "the error")


# --- settings ---------------------------------------------------------------------------------------


def manage_check(**env):
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("DJANGO_", "VIEWLB_PRODUCTION", "VIEWLB_CERT_KEY", "VIEWLB_DEV_KEY"))}
    return subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env={**clean, **env},
                          capture_output=True, text=True, timeout=120)


def test_production_refuses_to_start_without_the_certificate_key():
    result = manage_check(VIEWLB_PRODUCTION="1", DJANGO_SECRET_KEY="s" * 50, DJANGO_ALLOWED_HOSTS="lb.example.com")
    assert result.returncode != 0 and "VIEWLB_CERT_KEY must be set when VIEWLB_PRODUCTION=1" in result.stderr


def test_a_malformed_certificate_key_fails_the_system_check():
    result = manage_check(VIEWLB_CERT_KEY="too-short")
    assert result.returncode != 0 and "viewlb.E001" in result.stderr and "VIEWLB_CERT_KEY is not a valid key" in result.stderr


def test_development_derives_a_stable_key_and_exports_it_to_workers():
    assert tlsconf.cert_key_from_env() == settings.VIEWLB_CERT_KEY.encode()  # what a worker started from here reads
    code = "import viewlb_site.settings as s, os; print(s.VIEWLB_CERT_KEY, os.environ['VIEWLB_CERT_KEY'])"
    env = {k: v for k, v in os.environ.items() if k not in ("VIEWLB_CERT_KEY", "VIEWLB_PRODUCTION")}
    runs = [
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
                       env={**env, "DJANGO_SECRET_KEY": secret}).stdout.split()
        for secret in ("d" * 50, "d" * 50, "e" * 50)
    ]
    assert runs[0] == runs[1] and runs[0][0] == runs[0][1]  # stable for one secret key, and exported
    assert runs[0][0] != runs[2][0] and tlsconf.cert_key_from_env({"VIEWLB_CERT_KEY": runs[2][0]})
