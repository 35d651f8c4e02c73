"""The operator actions on a destination, called directly: their rules, outcomes and audit entries."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

import delivery.tasks
from delivery.models import DeliveryKind, DeliveryStatus
from destinations import services
from destinations.models import ChangeSource, ConfigChange, Destination
from tests.delivery.log_rows import TIMEOUT, Try, log_delivery, status
from tests.factories import DestinationFactory, SegmentFactory

pytestmark = pytest.mark.django_db

OLD_KEY = "old-key"
NEW_KEY = "new-key"


@pytest.fixture
def alice() -> User:
    return User.objects.create_user("alice")


def test_pausing_disables_the_destination_and_records_who_did_it_through_which_door(alice):
    destination = DestinationFactory(enabled=True)

    outcome = services.pause_destination(destination_id=destination.pk, actor=alice, source="console")

    assert (outcome.changed, outcome.destination.enabled) == (True, False)
    assert Destination.objects.get(pk=destination.pk).enabled is False
    change = ConfigChange.objects.get()
    assert (change.actor, change.actor_name) == (alice, "alice")
    assert (change.source, change.action) == ("console", "update")
    assert change.changes == {"enabled": {"old": True, "new": False}}


def test_resuming_a_running_destination_changes_and_records_nothing(alice):
    destination = DestinationFactory(enabled=True)

    outcome = services.resume_destination(destination_id=destination.pk, actor=alice, source="admin")

    assert outcome.changed is False
    assert not ConfigChange.objects.exists()


def test_a_key_rotation_starts_and_finishes_and_each_step_is_recorded(alice):
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)

    started = services.start_key_rotation(destination=destination, new_key=NEW_KEY, actor=alice,
                                          source=ChangeSource.API)
    during = (started.signing_key, started.new_signing_key, started.key_rotation_started_at is not None)
    finished = services.finish_key_rotation(destination=destination, actor=alice, source=ChangeSource.API)

    assert during == (OLD_KEY, NEW_KEY, True)
    assert (finished.signing_key, finished.new_signing_key) == (NEW_KEY, "")
    assert finished.key_rotation_started_at is None
    changes = ConfigChange.objects.order_by("id")
    assert [(c.action, c.source, c.actor_name) for c in changes] == [
        ("start_key_rotation", "api", "alice"), ("finish_key_rotation", "api", "alice")]
    assert changes[0].changes["new_signing_key"] == "changed"  # never the key itself


@pytest.mark.parametrize(
    ("fields", "start_twice", "error"),
    [
        ({"auth_mode": "none"}, False, services.RotationRefused),
        ({"auth_mode": "hmac", "signing_key": OLD_KEY}, True, services.RotationConflict),
    ],
    ids=["not-hmac", "already-under-way"],
)
def test_a_refused_rotation_raises_its_named_error_and_records_nothing(alice, fields, start_twice, error):
    destination = DestinationFactory(**fields)
    if start_twice:
        services.start_key_rotation(destination=destination, new_key=NEW_KEY, actor=alice, source="api")

    with pytest.raises(error):
        services.start_key_rotation(destination=destination, new_key="newer", actor=alice, source="api")

    assert ConfigChange.objects.count() == (1 if start_twice else 0)


def test_finishing_without_a_rotation_is_a_conflict(alice):
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)

    with pytest.raises(services.RotationConflict):
        services.finish_key_rotation(destination=destination, actor=alice, source=ChangeSource.ADMIN)

    assert not ConfigChange.objects.exists()


@pytest.mark.parametrize(
    ("outcome", "tries", "expected"),
    [
        (DeliveryStatus.DELIVERED, [Try(duration_ms=42)], (True, 1, 200, 42, None)),
        (DeliveryStatus.FAILED, [status(401)], (False, 1, 401, 120, "status")),
        (DeliveryStatus.FAILED, [TIMEOUT], (False, 1, None, 3000, "timeout")),
        (DeliveryStatus.FAILED, [], (False, 0, None, None, None)),
    ],
    ids=["delivered", "refused-by-the-partner", "timed-out", "no-attempt"],
)
def test_a_test_send_says_once_whether_it_succeeded(monkeypatch, outcome, tries, expected):
    destination = DestinationFactory()
    sent = log_delivery(destination, created_at=timezone.now(), kind=DeliveryKind.TEST, outcome=outcome,
                        tries=tries)
    monkeypatch.setattr("delivery.sending.rounds.send_test_document", lambda *, destination: sent)

    result = services.send_test(destination=destination)

    assert result.delivery == sent
    assert (
        result.succeeded, result.attempts, result.status_code, result.duration_ms, result.reason
    ) == expected
    assert not ConfigChange.objects.exists()  # the delivery log records a test, not the change log


def test_sending_the_batch_now_queues_its_task_once(monkeypatch):
    destination = DestinationFactory()
    queued: list[int] = []
    monkeypatch.setattr(delivery.tasks.send_batch_now, "delay", queued.append)

    services.start_batch_now(destination=destination)

    assert queued == [destination.pk]


def test_sending_the_batch_now_with_the_broker_down_raises_batch_not_queued(monkeypatch):
    def broker_down(destination_id):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(delivery.tasks.send_batch_now, "delay", broker_down)

    with pytest.raises(services.BatchNotQueued, match="broker is unavailable"):
        services.start_batch_now(destination=DestinationFactory())


def test_a_segment_ttl_change_reaches_its_members_once_committed(
    monkeypatch, django_capture_on_commit_callbacks, eager_tasks
):
    segment = SegmentFactory(ttl_days=30)
    applied: list[int] = []
    monkeypatch.setattr("delivery.lifecycle.expiry.apply_segment_ttl",
                        lambda *, segment: applied.append(segment.pk) or 3)

    with django_capture_on_commit_callbacks(execute=True):
        services.apply_segment_ttl_change(segment=segment)
        assert applied == []

    assert applied == [segment.pk]


def test_a_segment_ttl_change_is_a_task_on_the_maintenance_queue(
    monkeypatch, django_capture_on_commit_callbacks
):
    segment = SegmentFactory(ttl_days=30)
    queued: list[int] = []
    monkeypatch.setattr(delivery.tasks.apply_segment_ttl_change, "delay", queued.append)

    with django_capture_on_commit_callbacks(execute=True):
        services.apply_segment_ttl_change(segment=segment)

    assert queued == [segment.pk]
    assert settings.CELERY_TASK_ROUTES["delivery.tasks.apply_segment_ttl_change"] == {"queue": "maintenance"}


def test_a_segment_ttl_change_is_applied_in_place_when_the_broker_is_down(
    monkeypatch, django_capture_on_commit_callbacks
):
    def broker_down(segment_id):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    segment = SegmentFactory(ttl_days=30)
    applied: list[int] = []
    monkeypatch.setattr(delivery.tasks.apply_segment_ttl_change, "delay", broker_down)
    monkeypatch.setattr("delivery.lifecycle.expiry.apply_segment_ttl",
                        lambda *, segment: applied.append(segment.pk) or 0)

    with django_capture_on_commit_callbacks(execute=True):
        services.apply_segment_ttl_change(segment=segment)

    assert applied == [segment.pk]
