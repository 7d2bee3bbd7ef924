"""Certificates in the console: upload checks on the right field, keys encrypted and never shown, generate, delete."""
import datetime
import json
import re

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.urls import reverse

from balancer import services
from balancer.models import AuditEntry, Certificate, VirtualService
from proxyworker import tlsconf
from tests.l7.pki import NOW, Pki, cert_pem, issue, key_pem, new_key

from .conftest import make_certificate

pytestmark = pytest.mark.django_db


def upload(client, name, cert, key, chain="", url=None, **extra):
    data = {"name": name, "cert_pem": cert, "chain_pem": chain, "key_pem": key, **extra}
    return client.post(url or reverse("balancer:certificate_create"), data)


def key_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM key: none of them may show up anywhere."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def assert_no_key(text: str, pem: str, where: str):
    for line in key_lines(pem):
        assert line not in text, f"private key material in {where}"
    assert "PRIVATE KEY" not in text, where


def short_lived(pki, days_left):
    """A leaf from the test CA that expires in `days_left` days (negative: already expired)."""
    key = new_key()
    start = NOW - datetime.timedelta(days=365 - days_left)
    leaf = issue("soon.example.com", key, pki.intermediate, pki.int_key, start=start, days=365)
    return cert_pem(leaf), key_pem(key)


# --- upload ---------------------------------------------------------------------------------------


def test_an_admin_uploads_a_certificate_with_its_chain_and_key(admin_client, pki):
    response = upload(admin_client, "horizon", pki.leaf_pem, pki.key_pem, pki.chain_pem)
    cert = Certificate.objects.get(name="horizon")
    assert response["Location"] == cert.get_absolute_url()
    assert cert.cert_pem == pki.leaf_pem and cert.chain_pem == pki.chain_pem
    assert (cert.subject, cert.issuer) == ("CN=horizon.example.com", "CN=Test Intermediate CA")
    assert cert.names == ["horizon.example.com", "view.example.com"]
    assert cert.not_after == pki.leaf.not_valid_after_utc and 362 <= cert.days_left <= 364
    assert cert.fingerprint == pki.leaf.fingerprint(tlsconf.hashes.SHA256()).hex(":").upper()
    assert not cert.self_signed
    page = admin_client.get(response["Location"]).content.decode()
    assert "Created certificate horizon." in page and cert.fingerprint in page and "view.example.com" in page


def test_a_chain_pasted_after_the_leaf_moves_to_the_chain_and_crlf_is_accepted(admin_client, pki):
    crlf = (pki.leaf_pem + pki.chain_pem).replace("\n", "\r\n")
    upload(admin_client, "pasted", crlf, pki.key_pem.replace("\n", "\r\n"))
    cert = Certificate.objects.get(name="pasted")
    assert cert.cert_pem == pki.leaf_pem and cert.chain_pem == pki.chain_pem


def test_files_can_be_uploaded_instead_of_pasted(admin_client, pki):
    response = admin_client.post(reverse("balancer:certificate_create"), {
        "name": "from-files", "cert_pem": "", "key_pem": "",
        "cert_file": SimpleUploadedFile("leaf.pem", pki.leaf_pem.encode()),
        "chain_file": SimpleUploadedFile("chain.pem", pki.chain_pem.encode()),
        "key_file": SimpleUploadedFile("key.pem", pki.key_pem.encode()),
    })
    assert response.status_code == 302
    cert = Certificate.objects.get(name="from-files")
    assert cert.chain_pem == pki.chain_pem and tlsconf.check_certificate(cert.cert_pem, cert.private_key_pem()).ok


def test_a_binary_file_is_explained(admin_client, pki):
    response = admin_client.post(reverse("balancer:certificate_create"), {
        "name": "der", "cert_pem": "", "key_pem": pki.key_pem,
        "cert_file": SimpleUploadedFile("leaf.der", b"\x30\x82\x01\xff" + bytes(range(128, 256))),
    })
    assert "binary (DER?)" in response.context["form"].errors["cert_file"][0]
    assert not Certificate.objects.exists()


def test_a_key_that_does_not_belong_to_the_certificate_is_an_error_on_the_key_field(admin_client, pki):
    response = upload(admin_client, "wrong", pki.leaf_pem, key_pem(new_key()), pki.chain_pem)
    errors = response.context["form"].errors
    assert errors["key_pem"] == ["the private key does not belong to this certificate"]
    assert list(errors) == ["key_pem"]
    assert "Private key: the private key does not belong to this certificate" in response.content.decode()
    assert not Certificate.objects.exists()


@pytest.mark.parametrize("garbage, expected", [
    ("hello, this is not a certificate", "not a PEM certificate"),
    ("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "damaged"),
])
def test_a_garbage_certificate_is_an_error_on_the_certificate_field(admin_client, pki, garbage, expected):
    response = upload(admin_client, "garbage", garbage, pki.key_pem)
    assert expected in response.context["form"].errors["cert_pem"][0]
    assert not Certificate.objects.exists()


def test_a_missing_certificate_and_key_are_named(admin_client):
    errors = upload(admin_client, "empty", "", "").context["form"].errors
    assert errors["cert_pem"] == ["paste the certificate or choose its file"]


def test_a_chain_out_of_order_is_an_error_on_the_chain_field(admin_client, pki):
    response = upload(admin_client, "order", pki.leaf_pem, pki.key_pem, pki.root_pem + cert_pem(pki.intermediate))
    [message] = response.context["form"].errors["chain_pem"]
    assert "out of order" in message and "'Test Intermediate CA' issued 'horizon.example.com'" in message


def test_an_expired_certificate_is_refused(admin_client, pki):
    cert, key = short_lived(pki, -3)
    [message] = upload(admin_client, "old", cert, key, pki.chain_pem).context["form"].errors["cert_pem"]
    assert message.startswith("the certificate expired on ")


def test_a_certificate_expiring_within_30_days_is_taken_with_a_warning_and_a_badge(admin_client, pki):
    cert, key = short_lived(pki, 20)
    response = admin_client.post(reverse("balancer:certificate_create"), {
        "name": "soon", "cert_pem": cert, "chain_pem": pki.chain_pem, "key_pem": key}, follow=True)
    warnings = [str(m) for m in response.context["messages"] if m.level_tag == "warning"]
    assert any(re.search(r"'soon': the certificate expires in 1[89] days", w) for w in warnings), warnings
    assert Certificate.objects.get(name="soon").expiry_state == "soon"
    listing = admin_client.get(reverse("balancer:certificate_list")).content.decode()
    assert re.search(r'class="pill warn">expires in 1[89] days<', listing)
    make_certificate("fine", pki.leaf_pem, pki.key_pem, pki.chain_pem)
    listing = admin_client.get(reverse("balancer:certificate_list")).content.decode()
    assert listing.count('class="pill ok">valid<') == 1


def test_a_passphrase_protected_key_is_explained(admin_client, pki):
    from cryptography.hazmat.primitives import serialization

    locked = pki.leaf_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.BestAvailableEncryption(b"secret")).decode()
    response = upload(admin_client, "locked", pki.leaf_pem, locked, pki.chain_pem)
    assert "passphrase" in response.context["form"].errors["key_pem"][0]


def test_a_duplicate_name_is_refused(admin_client, pki, certificate):
    response = upload(admin_client, certificate.name, pki.leaf_pem, pki.key_pem, pki.chain_pem)
    assert "already exists" in response.context["form"].errors["name"][0]


# --- the key: encrypted at rest, never shown ------------------------------------------------------


def test_the_key_is_stored_only_encrypted(pki, certificate):
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM balancer_certificate WHERE id = %s", [certificate.pk])
        row = " ".join(str(value) for value in cursor.fetchone())
    assert_no_key(row, pki.key_pem, "the database row")
    with connection.cursor() as cursor:
        cursor.execute("SELECT key_encrypted FROM balancer_certificate WHERE id = %s", [certificate.pk])
        [token] = cursor.fetchone()
    assert tlsconf.decrypt_private_key(token, settings.VIEWLB_CERT_KEY).decode() == pki.key_pem
    with pytest.raises(tlsconf.CertificateError, match="cannot be decrypted"):
        tlsconf.decrypt_private_key(token, tlsconf.generate_cert_key())


def test_the_key_never_appears_in_pages_audit_diff_export_or_redis(admin_client, admin_user, pki, horizon, redis_client,
                                                                  keys):
    upload(admin_client, "horizon-cert", pki.leaf_pem, pki.key_pem, pki.chain_pem)
    cert = Certificate.objects.get()
    admin_client.post(reverse("balancer:certificate_update", args=[cert.pk]), {
        "name": "horizon-cert", "cert_pem": cert.cert_pem, "chain_pem": cert.chain_pem, "key_pem": pki.key_pem})
    vip = horizon["vip"]
    response = admin_client.post(reverse("balancer:service_update", args=[vip.pk]), service_data(
        horizon, mode="l7", default_certificate=cert.pk))
    assert response.status_code == 302
    apply_page = admin_client.get(reverse("balancer:apply")).content.decode()
    assert "+certificates/horizon-cert/fingerprint: &quot;" + cert.fingerprint in apply_page
    version = services.publish(admin_user, "tls")
    pages = {
        name: admin_client.get(url).content.decode()
        for name, url in [
            ("list", reverse("balancer:certificate_list")), ("detail", cert.get_absolute_url()),
            ("edit", reverse("balancer:certificate_update", args=[cert.pk])),
            ("delete", reverse("balancer:certificate_delete", args=[cert.pk])),
            ("service", vip.get_absolute_url()), ("version", version.get_absolute_url()),
            ("audit", reverse("balancer:audit")), ("apply", reverse("balancer:apply")),
        ]
    }
    token = Certificate.objects.get().key_encrypted
    for name, page in pages.items():
        assert_no_key(page, pki.key_pem, name)
        assert token not in page, name  # not even the encrypted key is shown
    assert "(encrypted private key, not shown)" in pages["version"]
    assert "Leave blank to keep the current key" in pages["edit"]
    for entry in AuditEntry.objects.all():
        text = json.dumps(entry.details)
        assert_no_key(text, pki.key_pem, f"audit entry {entry}")
        assert token not in text
    diff = "\n".join(AuditEntry.objects.get(action="apply").details["diff"])
    assert "+certificates/horizon-cert/private_key: \"encrypted, sha256:" in diff
    export = admin_client.get(reverse("balancer:export")).content.decode()
    assert_no_key(export, pki.key_pem, "the YAML export")
    assert "key_encrypted: " + token in export and "key_pem" not in export
    snapshot = redis_client.get(keys.config)
    assert_no_key(snapshot, pki.key_pem, "the published snapshot")
    assert json.loads(snapshot)["certificates"][0]["key_pem_encrypted"] == token


def test_a_failed_upload_does_not_send_the_key_back(admin_client, pki):
    response = upload(admin_client, "bad name with spaces", pki.leaf_pem, pki.key_pem, pki.chain_pem)
    assert "name" in response.context["form"].errors
    page = response.content.decode()
    assert_no_key(page, pki.key_pem, "the form after an error")
    assert pki.leaf_pem.splitlines()[1] in page  # the certificate (public) is kept for the next try


# --- edit -----------------------------------------------------------------------------------------


def test_editing_without_a_key_keeps_the_stored_key(admin_client, certificate, pki):
    token = certificate.key_encrypted
    response = admin_client.post(reverse("balancer:certificate_update", args=[certificate.pk]), {
        "name": "renamed", "cert_pem": certificate.cert_pem, "chain_pem": certificate.chain_pem, "key_pem": ""})
    assert response.status_code == 302
    cert = Certificate.objects.get()
    assert (cert.name, cert.key_encrypted) == ("renamed", token)
    entry = AuditEntry.objects.get(action="update")
    assert entry.details["changes"] == {"name": ["horizon-cert", "renamed"]}


def test_a_renewed_certificate_for_the_same_key_needs_no_key_upload(admin_client, certificate, pki):
    renewed = issue("horizon.example.com", pki.leaf_key, pki.intermediate, pki.int_key,
                    names=("horizon.example.com",), days=700)
    response = admin_client.post(reverse("balancer:certificate_update", args=[certificate.pk]), {
        "name": "horizon-cert", "cert_pem": cert_pem(renewed), "chain_pem": certificate.chain_pem, "key_pem": ""})
    assert response.status_code == 302
    cert = Certificate.objects.get()
    assert cert.days_left >= 690 and cert.names == ["horizon.example.com"]
    assert cert.key_encrypted == certificate.key_encrypted  # the same key keeps its token: no spurious change
    changes = AuditEntry.objects.get(action="update").details["changes"]
    assert set(changes) >= {"fingerprint", "names", "not_after"}


def test_a_new_certificate_with_another_key_needs_that_key(admin_client, certificate):
    other = Pki(("other.example.com",))
    url = reverse("balancer:certificate_update", args=[certificate.pk])
    data = {"name": "horizon-cert", "cert_pem": other.leaf_pem, "chain_pem": other.chain_pem, "key_pem": ""}
    errors = admin_client.post(url, data).context["form"].errors
    assert errors["key_pem"] == ["the private key does not belong to this certificate"]
    assert Certificate.objects.get().fingerprint == certificate.fingerprint
    assert admin_client.post(url, {**data, "key_pem": other.key_pem}).status_code == 302
    cert = Certificate.objects.get()
    assert cert.names == ["other.example.com"] and cert.private_key_pem() == other.key_pem


def test_a_stored_key_that_cannot_be_decrypted_asks_for_the_key_again(admin_client, certificate, pki):
    Certificate.objects.filter(pk=certificate.pk).update(
        key_encrypted=tlsconf.encrypt_private_key(pki.key_pem, tlsconf.generate_cert_key()))
    renewed = issue("horizon.example.com", pki.leaf_key, pki.intermediate, pki.int_key, days=700)
    response = admin_client.post(reverse("balancer:certificate_update", args=[certificate.pk]), {
        "name": "horizon-cert", "cert_pem": cert_pem(renewed), "chain_pem": certificate.chain_pem, "key_pem": ""})
    [message] = response.context["form"].errors["key_pem"]
    assert "VIEWLB_CERT_KEY differs" in message and "upload the private key again" in message


# --- generate -------------------------------------------------------------------------------------


def test_an_admin_generates_a_self_signed_certificate(admin_client):
    response = admin_client.post(reverse("balancer:certificate_generate"), {
        "name": "lab", "dns_names": "lb.example.com, horizon.example.com 10.0.0.5", "days": "90"}, follow=True)
    cert = Certificate.objects.get(name="lab")
    assert response.redirect_chain[-1][0] == cert.get_absolute_url()
    assert "Generated the self-signed certificate lab." in response.content.decode()
    assert cert.self_signed and cert.subject == "CN=lb.example.com"
    assert cert.names == ["lb.example.com", "horizon.example.com", "10.0.0.5"]
    assert 88 <= cert.days_left <= 90
    assert tlsconf.check_certificate(cert.cert_pem, cert.private_key_pem()).ok
    assert "PRIVATE KEY" not in cert.key_encrypted
    entry = AuditEntry.objects.get(action="create")
    assert entry.details["generated"] == "self-signed" and entry.object_repr == "lab"


@pytest.mark.parametrize("names, days, field, expected", [
    ("lb..example.com", "90", "dns_names", "'lb..example.com' is not a DNS name or an IP address"),
    ("has_underscore.example.com", "90", "dns_names", "is not a DNS name"),
    ("lb.example.com", "0", "days", "greater than or equal to 1"),
])
def test_generate_refuses_bad_names_and_days(admin_client, names, days, field, expected):
    response = admin_client.post(reverse("balancer:certificate_generate"),
                                 {"name": "lab", "dns_names": names, "days": days})
    assert expected in response.context["form"].errors[field][0]
    assert not Certificate.objects.exists()


# --- delete and roles -----------------------------------------------------------------------------


def test_a_certificate_in_use_cannot_be_deleted(admin_client, layer7):
    cert = layer7["certificate"]
    response = admin_client.post(reverse("balancer:certificate_delete", args=[cert.pk]), follow=True)
    assert "Cannot delete certificate horizon-cert: virtual service horizon-443 presents it." in response.content.decode()
    assert Certificate.objects.filter(pk=cert.pk).exists()
    vip = layer7["vip"]
    vip.mode, vip.persistence = "l4", layer7["policy"]
    vip.save()
    vip.set_certificates([])
    admin_client.post(reverse("balancer:certificate_delete", args=[cert.pk]))
    assert not Certificate.objects.exists()
    entry = AuditEntry.objects.get(action="delete")
    assert entry.object_repr == "horizon-cert" and entry.details["changes"]["fingerprint"] == cert.fingerprint


@pytest.mark.parametrize("who", ["viewer_user", "operator_user"])
def test_only_admins_change_certificates(request, client, who, certificate, pki):
    client.force_login(request.getfixturevalue(who))
    assert client.get(reverse("balancer:certificate_list")).status_code == 200
    assert client.get(certificate.get_absolute_url()).status_code == 200
    refused = [
        upload(client, "x", pki.leaf_pem, pki.key_pem, pki.chain_pem),
        client.post(reverse("balancer:certificate_generate"), {"name": "x", "dns_names": "x.example", "days": "9"}),
        client.post(reverse("balancer:certificate_update", args=[certificate.pk]), {"name": "x"}),
        client.post(reverse("balancer:certificate_delete", args=[certificate.pk])),
    ]
    assert [r.status_code for r in refused] == [403] * 4
    assert list(Certificate.objects.values_list("name", flat=True)) == ["horizon-cert"]
    assert "Upload certificate" not in client.get(reverse("balancer:certificate_list")).content.decode()


def test_the_navigation_links_the_certificates(admin_client):
    page = admin_client.get(reverse("balancer:service_list")).content.decode()
    assert f'href="{reverse("balancer:certificate_list")}"' in page and ">Certificates<" in page


# --- layer-7 services -----------------------------------------------------------------------------


def service_data(horizon, **changes):
    data = {
        "name": "horizon-443", "enabled": "on", "address": "127.0.0.1", "port": "8443", "protocol": "tcp",
        "mode": "l4", "pool": horizon["pool"].pk, "scheduler": "round_robin", "persistence": horizon["policy"].pk,
        "persistence_group": "horizon", "connect_timeout": "5", "idle_timeout": "5400", "max_connections": "0",
        "backend_tls": "on",
    }
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_a_layer7_service_without_a_certificate_is_refused(admin_client, horizon):
    response = admin_client.post(reverse("balancer:service_update", args=[horizon["vip"].pk]),
                                 service_data(horizon, mode="l7"))
    [message] = response.context["form"].errors["default_certificate"]
    assert message.startswith("a layer-7 service needs at least one certificate")
    assert VirtualService.objects.get().mode == "l4"


def test_a_layer7_service_presents_its_certificates_in_order(admin_client, horizon, certificate, pki):
    other = make_certificate("a-portal", *generated("portal.example.com"))
    url = reverse("balancer:service_update", args=[horizon["vip"].pk])
    response = admin_client.post(url, service_data(
        horizon, mode="l7", default_certificate=certificate.pk, more_certificates=[other.pk, certificate.pk],
        backend_verify="on", backend_ca=pki.root_pem.replace("\n", "\r\n")))
    assert response.status_code == 302, response.context["form"].errors
    vip = VirtualService.objects.get()
    assert [c.name for c in vip.ordered_certificates()] == ["horizon-cert", "a-portal"]
    assert (vip.backend_tls, vip.backend_verify, vip.backend_ca) == (True, True, pki.root_pem)
    changes = AuditEntry.objects.get(action="update").details["changes"]
    assert changes["certificates"] == [[], ["horizon-cert", "a-portal"]] and changes["mode"] == ["l4", "l7"]
    page = admin_client.get(vip.get_absolute_url()).content.decode()
    assert "(default)" in page and "verified against the CA bundle below" in page and "a-portal" in page
    form = admin_client.get(url).context["form"]
    assert form.initial["default_certificate"] == certificate.pk and form.initial["more_certificates"] == [other.pk]


def test_layer4_ignores_the_tls_fields(admin_client, horizon, certificate, pki):
    response = admin_client.post(reverse("balancer:service_update", args=[horizon["vip"].pk]), service_data(
        horizon, default_certificate=certificate.pk, backend_tls=None, backend_verify="on", backend_ca="junk"))
    assert response.status_code == 302
    vip = VirtualService.objects.get()
    assert vip.ordered_certificates() == [] and (vip.backend_tls, vip.backend_verify, vip.backend_ca) == (True, False, "")
    page = admin_client.get(vip.get_absolute_url()).content.decode()
    assert "Towards the servers" not in page and "Re-encrypt" not in page


@pytest.mark.parametrize("changes, field, expected", [
    ({"backend_ca": "not a certificate"}, "backend_ca", "not PEM certificates"),
    ({"backend_ca": "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----"}, "backend_ca", "damaged"),
    ({"backend_ca": "KEY"}, "backend_ca", "this is a private key"),
    ({"backend_tls": None, "backend_verify": "on"}, "backend_verify", "needs re-encryption"),
])
def test_backend_tls_settings_are_checked(admin_client, horizon, certificate, pki, changes, field, expected):
    changes = {k: (pki.key_pem if v == "KEY" else v) for k, v in changes.items()}
    response = admin_client.post(reverse("balancer:service_update", args=[horizon["vip"].pk]), service_data(
        horizon, mode="l7", default_certificate=certificate.pk, **changes))
    assert expected in response.context["form"].errors[field][0]
    assert_no_key(response.content.decode(), pki.key_pem, "the service form")
    assert VirtualService.objects.get().mode == "l4"


def test_a_service_warns_about_expiring_and_shadowed_certificates(layer7, pki):
    soon = make_certificate("soon", *short_lived(pki, 10), pki.chain_pem)
    shadowed = make_certificate("shadowed", pki.leaf_pem, pki.key_pem, pki.chain_pem)
    layer7["vip"].set_certificates([layer7["certificate"], soon, shadowed])
    warnings = layer7["vip"].warnings()
    assert any(re.search(r"Certificate 'soon' of virtual service 'horizon-443' expires in (9|10) days", w) for w in warnings)
    assert any("'shadowed' of virtual service 'horizon-443' is never chosen" in w for w in warnings)


def generated(name):
    return tlsconf.generate_self_signed(name, [name], days=30 * 12)
