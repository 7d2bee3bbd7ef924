"""Publishing to a real Redis: snapshot, notification, versions, rollback, server states."""
import json
import time

import pytest
from django.test import override_settings

from balancer import services
from balancer.models import AuditEntry, ConfigVersion, RealServer
from proxyworker.config import Snapshot
from tests.conftest import free_port

pytestmark = pytest.mark.django_db


def next_message(pubsub, channel, timeout=3.0):
    """The next message on `channel` (others are skipped), or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.2)
        if message and message["type"] == "message" and message["channel"] == channel:
            return message["data"]
    raise AssertionError(f"no message on {channel} within {timeout:.1f} s")


def drain(pubsub):
    """Forget what was announced so far."""
    while pubsub.get_message(timeout=0.3):
        pass


@pytest.fixture
def subscriber(redis_client, keys):
    pubsub = redis_client.pubsub()
    pubsub.subscribe(keys.config, keys.health)
    for _ in range(2):  # wait until both subscriptions are confirmed, or a message could be missed
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
    yield pubsub
    pubsub.close()


def test_publish_writes_the_snapshot_and_announces_its_version(horizon, admin_user, redis_client, keys, subscriber):
    version = services.publish(admin_user, "first")
    assert (version.number, version.author_name, version.comment) == (1, "alice", "first")

    published = Snapshot.from_json(redis_client.get(keys.config))
    assert published.version == 1 and published.author == "alice"
    assert published.virtual_services[0].listen_key == ("127.0.0.1", 8443, "tcp")
    assert json.loads(redis_client.get(keys.config)) == version.snapshot_dict()
    assert redis_client.hgetall(keys.admin) == {"uag/uag1": "enabled", "uag/uag2": "enabled"}

    entry = AuditEntry.objects.get(action="apply")
    assert (entry.username, entry.object_repr, entry.details["comment"]) == ("alice", "version 1", "first")
    assert "+virtual_services/horizon-443/port: 8443" in entry.details["diff"]

    assert next_message(subscriber, keys.config) == "1"
    assert {next_message(subscriber, keys.health) for _ in range(2)} == {"uag/uag1", "uag/uag2"}


def test_publishing_an_unchanged_draft_creates_nothing(horizon, admin_user, redis_client, keys):
    services.publish(admin_user)
    assert services.pending_diff() == []
    assert services.publish(admin_user) is None
    assert ConfigVersion.objects.count() == 1
    assert json.loads(redis_client.get(keys.config))["version"] == 1


def test_an_edit_shows_as_a_pending_change_and_publishes_as_the_next_version(horizon, admin_user, redis_client, keys):
    services.publish(admin_user)
    vip = horizon["vip"]
    vip.port = 9443
    vip.save()
    assert services.pending_changes() == ["virtual_services/horizon-443"]
    assert "-virtual_services/horizon-443/port: 8443" in services.pending_diff()
    assert "+virtual_services/horizon-443/port: 9443" in services.pending_diff()

    version = services.publish(admin_user, "move")
    assert version.number == 2
    assert Snapshot.from_json(redis_client.get(keys.config)).virtual_services[0].port == 9443
    assert services.pending_diff() == []


def test_an_invalid_draft_is_refused_naming_the_object_and_nothing_is_written(horizon, admin_user, redis_client, keys):
    RealServer.objects.all().delete()  # the enabled VIP's pool is now empty
    with pytest.raises(services.PublishError, match=r"virtual service 'horizon-443': pool: pool 'uag' has no real servers"):
        services.publish(admin_user)
    assert ConfigVersion.objects.count() == 0
    assert redis_client.get(keys.config) is None
    assert not AuditEntry.objects.filter(action="apply").exists()


def test_when_redis_is_unreachable_no_version_is_stored(horizon, admin_user):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        with pytest.raises(services.PublishError, match="did not take the configuration"):
            services.publish(admin_user)
    assert ConfigVersion.objects.count() == 0
    assert not AuditEntry.objects.filter(action="apply").exists()


def test_rollback_publishes_the_old_content_as_a_new_version(horizon, admin_user, redis_client, keys, subscriber):
    first = services.publish(admin_user, "8443")
    vip = horizon["vip"]
    vip.port = 9443
    vip.save()
    horizon["uag2"].delete()
    services.publish(admin_user, "9443")

    assert "+virtual_services/horizon-443/port: 8443" in services.rollback_diff(1)
    version = services.rollback(1, admin_user)
    assert (version.number, version.rollback_of) == (3, 1)

    def content(snapshot):
        return {k: v for k, v in snapshot.items() if k not in ("version", "author", "published_at")}

    assert content(version.snapshot_dict()) == content(first.snapshot_dict())
    assert json.loads(redis_client.get(keys.config))["version"] == 3
    # The draft is the old configuration again, so nothing is pending.
    vip.refresh_from_db()
    assert vip.port == 8443 and RealServer.objects.filter(name="uag2").exists()
    assert services.pending_diff() == []
    assert [next_message(subscriber, keys.config) for _ in range(3)] == ["1", "2", "3"]


def test_rolling_back_to_what_is_running_creates_no_version(horizon, admin_user):
    services.publish(admin_user)
    assert services.rollback(1, admin_user) is None
    assert ConfigVersion.objects.count() == 1


def test_drain_takes_effect_at_once_without_an_apply(horizon, admin_user, operator_user, redis_client, keys, subscriber):
    services.publish(admin_user)
    drain(subscriber)
    server = horizon["uag1"]
    services.set_admin_state(server, "drain", operator_user)

    assert RealServer.objects.get(pk=server.pk).admin_state == "drain"
    assert redis_client.hget(keys.admin, "uag/uag1") == "drain"
    assert next_message(subscriber, keys.health) == "uag/uag1"
    # Live already, so the draft does not differ from what runs, and an apply has nothing to do.
    assert services.pending_diff() == []
    assert services.publish(admin_user) is None
    entry = AuditEntry.objects.get(action="drain")
    assert (entry.username, entry.object_repr, entry.details["changes"]) == (
        "oscar", "uag/uag1", {"admin_state": ["enabled", "drain"]}
    )


def test_set_admin_state_refuses_unknown_states(horizon, admin_user):
    with pytest.raises(ValueError, match="must be one of enabled, drain, disabled"):
        services.set_admin_state(horizon["uag1"], "maintenance", admin_user)


def test_publish_makes_the_admin_states_of_the_snapshot_live(horizon, admin_user, redis_client, keys):
    """A state changed in the draft (YAML, rollback) must override an earlier console action."""
    services.publish(admin_user)
    services.set_admin_state(horizon["uag1"], "drain", admin_user)
    RealServer.objects.filter(pk=horizon["uag1"].pk).update(admin_state="disabled")
    assert services.pending_changes() == ["pools/uag/servers/uag1"]
    services.publish(admin_user)
    assert redis_client.hget(keys.admin, "uag/uag1") == "disabled"


def test_server_state_change_fails_cleanly_without_redis(horizon, admin_user):
    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        with pytest.raises(services.PublishError, match="nothing changed"):
            services.set_admin_state(horizon["uag1"], "disabled", admin_user)
    assert RealServer.objects.get(pk=horizon["uag1"].pk).admin_state == "enabled"
    assert not AuditEntry.objects.filter(action="disable").exists()

