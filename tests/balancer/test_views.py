"""Console pages: login everywhere, forms with field errors, server actions, apply, rollback, roles."""
import pytest
from django.urls import URLPattern, reverse

from balancer import services
from balancer import urls as balancer_urls
from balancer.models import AuditEntry, ConfigVersion, HorizonSetup, Pool, RealServer, VirtualService

pytestmark = pytest.mark.django_db

SAMPLE_ARGS = {"int": 1}


def every_url(objects=None):
    """Every URL of balancer.urls, with a real primary key where one fits (else 1)."""
    objects = objects or {}
    for pattern in balancer_urls.urlpatterns:
        assert isinstance(pattern, URLPattern)
        kwargs = {name: objects.get((pattern.name, name), 1) for name in pattern.pattern.converters}
        yield pattern.name, reverse(f"balancer:{pattern.name}", kwargs=kwargs)


@pytest.mark.parametrize("method", ["get", "post"])
def test_every_console_url_sends_an_anonymous_user_to_login(client, method):
    urls = list(every_url())
    assert len(urls) >= 36
    assert {"certificate_list", "certificate_create", "certificate_generate", "certificate_detail",
            "certificate_update", "certificate_delete"} <= {name for name, _url in urls}
    for name, url in urls:
        response = getattr(client, method)(url)
        assert response.status_code == 302, name
        assert response["Location"].startswith(reverse("login") + "?next="), name


def object_kwargs(horizon, version, certificate):
    ids = {"service": horizon["vip"].pk, "pool": horizon["pool"].pk, "server": horizon["uag1"].pk,
           "persistence": horizon["policy"].pk, "healthcheck": horizon["check"].pk, "certificate": certificate.pk,
           "horizon": HorizonSetup.objects.create(prefix="horizon").pk}  # the wizard's checklist page
    objects = {}
    for pattern in balancer_urls.urlpatterns:
        prefix = pattern.name.split("_")[0]
        for name in pattern.pattern.converters:
            objects[(pattern.name, name)] = {"number": version.number, "pool": horizon["pool"].pk}.get(name, ids.get(prefix))
    return objects


def test_every_page_renders_for_an_admin(admin_client, admin_user, horizon, certificate):
    version = services.publish(admin_user, "v1")
    for name, url in every_url(object_kwargs(horizon, version, certificate)):
        if name == "server_state":
            continue  # POST only
        response = admin_client.get(url)
        assert response.status_code in (200, 302), (name, response.status_code)
        if name != "home":
            assert response.status_code == 200, name


def test_the_navigation_shows_the_pending_changes_and_the_role(admin_client, admin_user, horizon):
    page = admin_client.get(reverse("balancer:service_list")).content.decode()
    assert "4 pending changes" in page  # nothing published yet: the pool, its two servers, the service
    services.publish(admin_user)
    page = admin_client.get(reverse("balancer:service_list")).content.decode()
    assert "pending change" not in page
    assert "alice" in page and ">admin<" in page
    assert 'action="/accounts/logout/"' in page and "csrfmiddlewaretoken" in page
    assert "horizon-443" in page and "127.0.0.1" in page


def test_an_admin_builds_a_service_through_the_forms(admin_client):
    response = admin_client.post(reverse("balancer:pool_create"), {"name": "cs"})
    pool = Pool.objects.get(name="cs")
    assert response["Location"] == pool.get_absolute_url()
    response = admin_client.post(
        reverse("balancer:server_create", args=[pool.pk]),
        {"name": "cs1", "address": "127.0.0.21", "port": "443", "weight": "1", "admin_state": "enabled"},
    )
    assert response.status_code == 302 and pool.servers.get().server_id == "cs/cs1"
    response = admin_client.post(reverse("balancer:service_create"), {
        "name": "internal", "enabled": "on", "address": "127.0.0.2", "port": "443", "protocol": "tcp",
        "mode": "l4", "pool": pool.pk, "scheduler": "least_connections", "connect_timeout": "5",
        "idle_timeout": "3600", "max_connections": "0",
    })
    vs = VirtualService.objects.get(name="internal")
    assert response["Location"] == vs.get_absolute_url()
    page = admin_client.get(response["Location"]).content.decode()
    assert "under 90 minutes" in page  # the idle-timeout warning, as a message after saving
    assert "Least connections" in page


def test_forms_name_the_field_and_the_reason(admin_client, horizon):
    response = admin_client.post(reverse("balancer:service_create"), {
        "name": "dup", "enabled": "on", "address": "127.0.0.1", "port": "8443", "protocol": "tcp", "mode": "l4",
        "pool": horizon["pool"].pk, "scheduler": "round_robin", "connect_timeout": "5", "idle_timeout": "5400",
        "max_connections": "0",
    })
    assert response.status_code == 200
    assert response.context["form"].errors["port"] == [
        "virtual service 'horizon-443' already listens on 127.0.0.1 port 8443/tcp; "
        "change the address, port or protocol, or disable one of them"
    ]
    page = response.content.decode()
    assert "Not saved." in page and "Port: virtual service &#x27;horizon-443&#x27; already listens" in page

    response = admin_client.post(reverse("balancer:server_create", args=[horizon["pool"].pk]), {
        "name": "uag3", "address": "not-an-ip", "port": "70000", "weight": "1", "admin_state": "enabled",
    })
    errors = response.context["form"].errors
    assert "must be between 1 and 65535, not 70000" in errors["port"][0]
    assert "address" in errors
    assert not RealServer.objects.filter(name="uag3").exists()


def test_saving_a_short_persistence_timeout_warns_with_the_reason(admin_client):
    response = admin_client.post(reverse("balancer:persistence_create"), {
        "name": "short", "method": "source_ip", "timeout": "120", "ipv4_mask": "32", "ipv6_mask": "128",
        "cookie_name": "JSESSIONID",
    }, follow=True)
    messages = [str(m) for m in response.context["messages"]]
    assert any("KB 1032661" in m and "3-4 minutes" in m for m in messages)


def test_edit_and_delete_are_audited_with_their_changes(admin_client, horizon):
    vip = horizon["vip"]
    admin_client.post(reverse("balancer:service_update", args=[vip.pk]), {
        "name": "horizon-443", "enabled": "on", "address": "127.0.0.1", "port": "9443", "protocol": "tcp",
        "mode": "l4", "pool": horizon["pool"].pk, "scheduler": "round_robin", "persistence": horizon["policy"].pk,
        "persistence_group": "horizon", "connect_timeout": "5", "idle_timeout": "3600", "max_connections": "0",
    })
    entry = AuditEntry.objects.get(action="update")
    assert (entry.username, entry.object_repr, entry.details["changes"]) == ("alice", "horizon-443", {"port": [8443, 9443]})

    admin_client.post(reverse("balancer:service_delete", args=[vip.pk]))
    assert not VirtualService.objects.exists()
    entry = AuditEntry.objects.get(action="delete")
    assert entry.object_repr == "horizon-443" and entry.details["changes"]["port"] == 9443

    admin_client.post(reverse("balancer:pool_create"), {"name": "cs"})
    assert AuditEntry.objects.get(action="create").object_repr == "cs"


def test_a_pool_in_use_cannot_be_deleted_and_the_page_says_why(admin_client, horizon):
    response = admin_client.post(reverse("balancer:pool_delete", args=[horizon["pool"].pk]), follow=True)
    assert Pool.objects.filter(pk=horizon["pool"].pk).exists()
    assert "Cannot delete pool uag: it is used by virtual service horizon-443." in response.content.decode()


def test_the_last_server_of_a_pool_in_use_cannot_be_deleted(admin_client, horizon):
    admin_client.post(reverse("balancer:server_delete", args=[horizon["uag2"].pk]))
    response = admin_client.post(reverse("balancer:server_delete", args=[horizon["uag1"].pk]), follow=True)
    assert RealServer.objects.filter(pk=horizon["uag1"].pk).exists()
    assert "it is the last server of pool uag" in response.content.decode()


def test_apply_page_shows_the_diff_and_publishes(admin_client, horizon, redis_client, keys):
    page = admin_client.get(reverse("balancer:apply")).content.decode()
    assert "+virtual_services/horizon-443/port: 8443" in page
    response = admin_client.post(reverse("balancer:apply"), {"comment": "go live"})
    version = ConfigVersion.objects.get()
    assert response["Location"] == version.get_absolute_url() and version.comment == "go live"
    assert redis_client.get(keys.config) == version.snapshot
    page = admin_client.get(response["Location"]).content.decode()
    assert "Published version 1." in page and "&quot;horizon-443&quot;" in page
    response = admin_client.post(reverse("balancer:apply"), {"comment": "again"}, follow=True)
    assert "Nothing to publish" in response.content.decode()
    assert ConfigVersion.objects.count() == 1


def test_apply_page_explains_an_invalid_draft(admin_client, horizon):
    RealServer.objects.all().delete()
    page = admin_client.get(reverse("balancer:apply")).content.decode()
    assert "The draft cannot be published" in page and "pool &#x27;uag&#x27; has no real servers" in page
    response = admin_client.post(reverse("balancer:apply"), {"comment": ""}, follow=True)
    assert "Not published" in response.content.decode() and not ConfigVersion.objects.exists()


def test_rollback_page_shows_the_change_and_rolls_back(admin_client, admin_user, horizon):
    services.publish(admin_user)
    VirtualService.objects.update(port=9443)
    services.publish(admin_user)
    page = admin_client.get(reverse("balancer:version_rollback", args=[1])).content.decode()
    assert "-virtual_services/horizon-443/port: 9443" in page and "+virtual_services/horizon-443/port: 8443" in page
    response = admin_client.post(reverse("balancer:version_rollback", args=[1]))
    assert response["Location"] == reverse("balancer:version_detail", args=[3])
    assert VirtualService.objects.get().port == 8443
    assert AuditEntry.objects.filter(action="rollback", details__rollback_of=1).count() == 1


def test_server_buttons_drain_at_once(client, operator_user, admin_user, horizon, redis_client, keys):
    services.publish(admin_user)
    client.force_login(operator_user)
    url = reverse("balancer:server_state", args=[horizon["uag2"].pk])
    response = client.post(url, {"state": "drain"}, follow=True)
    assert "uag/uag2 is now draining: no new clients, existing sessions stay." in response.content.decode()
    assert redis_client.hget(keys.admin, "uag/uag2") == "drain"
    assert response.redirect_chain[-1][0] == horizon["pool"].get_absolute_url()
    response = client.post(url, {"state": "sleep"}, follow=True)
    assert "state: Select a valid choice" in response.content.decode()
    assert RealServer.objects.get(pk=horizon["uag2"].pk).admin_state == "drain"


def test_server_buttons_return_only_to_local_pages(client, operator_user, horizon):
    client.force_login(operator_user)
    url = reverse("balancer:server_state", args=[horizon["uag1"].pk])
    assert client.post(url, {"state": "disabled", "next": "/servers/"})["Location"] == "/servers/"
    response = client.post(url, {"state": "enabled", "next": "https://evil.example/"})
    assert response["Location"] == horizon["pool"].get_absolute_url()


# --- roles -----------------------------------------------------------------------------


def config_changes(horizon):
    """(method, url, data) of every configuration change a page offers."""
    return [
        ("get", reverse("balancer:service_create"), None),
        ("post", reverse("balancer:pool_create"), {"name": "x"}),
        ("post", reverse("balancer:service_update", args=[horizon["vip"].pk]), {"name": "x"}),
        ("post", reverse("balancer:service_delete", args=[horizon["vip"].pk]), {}),
        ("post", reverse("balancer:server_create", args=[horizon["pool"].pk]), {"name": "x"}),
        ("post", reverse("balancer:server_delete", args=[horizon["uag1"].pk]), {}),
        ("post", reverse("balancer:persistence_delete", args=[horizon["policy"].pk]), {}),
        ("post", reverse("balancer:healthcheck_update", args=[horizon["check"].pk]), {"name": "x"}),
        ("post", reverse("balancer:apply"), {"comment": "x"}),
        ("post", reverse("balancer:version_rollback", args=[1]), {}),
    ]


@pytest.mark.parametrize("who", ["viewer_user", "operator_user"])
def test_viewers_and_operators_cannot_change_the_configuration(request, client, who, admin_user, horizon):
    services.publish(admin_user)
    client.force_login(request.getfixturevalue(who))
    for method, url, data in config_changes(horizon):
        response = getattr(client, method)(url, data) if data is not None else client.get(url)
        assert response.status_code == 403, (who, url)
    assert VirtualService.objects.get().name == "horizon-443" and ConfigVersion.objects.count() == 1
    page = client.get(horizon["pool"].get_absolute_url()).content.decode()
    assert "Add server" not in page and ">Edit<" not in page and ">Delete<" not in page
    assert "Apply: publish" not in client.get(reverse("balancer:apply")).content.decode()


def test_a_viewer_cannot_drain_and_sees_no_buttons(client, viewer_user, horizon):
    client.force_login(viewer_user)
    response = client.post(reverse("balancer:server_state", args=[horizon["uag1"].pk]), {"state": "drain"})
    assert response.status_code == 403
    assert RealServer.objects.get(pk=horizon["uag1"].pk).admin_state == "enabled"
    page = client.get(horizon["pool"].get_absolute_url()).content.decode()
    assert 'value="drain"' not in page and "uag1" in page


def test_an_operator_sees_the_state_buttons_but_not_the_edit_buttons(client, operator_user, horizon):
    client.force_login(operator_user)
    page = client.get(horizon["pool"].get_absolute_url()).content.decode()
    assert 'value="drain"' in page and "Add server" not in page


def test_a_user_without_a_group_is_a_viewer(client, django_user_model, horizon):
    client.force_login(django_user_model.objects.create_user("nobody", password="x" * 12))
    assert client.get(reverse("balancer:service_create")).status_code == 403
    assert ">viewer<" in client.get(reverse("balancer:service_list")).content.decode()


def test_an_admin_can_do_everything(admin_client, admin_user, horizon):
    services.publish(admin_user)
    for method, url, data in config_changes(horizon):
        response = getattr(admin_client, method)(url, data) if data is not None else admin_client.get(url)
        assert response.status_code in (200, 302), url  # done, or a form with field errors: never refused
    # ... the apply published the deletions as version 2, the rollback brought version 1 back as 3.
    assert VirtualService.objects.exists() and ConfigVersion.objects.count() == 3
    server = RealServer.objects.get(name="uag1")  # recreated by the rollback
    assert admin_client.post(reverse("balancer:server_state", args=[server.pk]), {"state": "disabled"}).status_code == 302
    assert RealServer.objects.get(pk=server.pk).admin_state == "disabled"


# --- login, logout, export -------------------------------------------------------------


def test_login_and_logout_are_audited(client, admin_user):
    assert client.post(reverse("login"), {"username": "alice", "password": "wrong"}).status_code == 200
    response = client.post(reverse("login"), {"username": "alice", "password": "correct-horse-battery"})
    assert response.status_code == 302
    client.post(reverse("logout"))
    actions = list(AuditEntry.objects.order_by("id").values_list("action", "username"))
    assert actions == [("login_failed", "alice"), ("login", "alice"), ("logout", "alice")]
    assert client.get(reverse("balancer:service_list")).status_code == 302  # logged out for real


def test_the_login_page_says_when_credentials_are_wrong(client):
    page = client.post(reverse("login"), {"username": "x", "password": "y"}).content.decode()
    assert "did not match" in page


def test_the_yaml_export_downloads_the_configuration(client, viewer_user, horizon):
    client.force_login(viewer_user)
    response = client.get(reverse("balancer:export"))
    assert response["Content-Disposition"] == 'attachment; filename="viewlb.yaml"'
    assert "name: horizon-443" in response.content.decode()
