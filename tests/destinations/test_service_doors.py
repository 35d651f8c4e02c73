"""Each operator action on a destination through each door (API, admin, console): one rule, one audit.

The doors only translate `destinations.services`: whichever the operator used, the action has the
same effect, is refused for the same reason and leaves the same change-log entry, naming the door.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

import delivery.tasks
from delivery.models import DeliveryKind, DeliveryStatus
from destinations.models import ConfigChange, Destination
from destinations.services import BROKER_UNAVAILABLE
from tests.delivery.log_rows import OK, log_delivery, status
from tests.factories import DestinationFactory, SegmentFactory

pytestmark = pytest.mark.django_db

API = "/api/v1/"
ADMIN = "/admin/destinations/"
CONSOLE = "/dashboard/destinations/"


@dataclass
class Door:
    source: str  # the ChangeSource the change log names
    client: Any
    username: str

    def post(self, *, api: str, admin: dict | None = None, console: str | None = None, **body: Any):
        """POST the action at this door: an API path, an admin changelist action or a console button."""
        if self.source == "api":
            return self.client.post(f"{API}{api}", body, format="json")
        if self.source == "admin":
            return self.client.post(f"{ADMIN}destination/", {**(admin or {}), **body}, follow=True)
        return self.client.post(f"{CONSOLE}{console}", body, follow=True)

    def said(self, response) -> list[tuple[str, str]]:
        """What the operator read: (level, text) messages, or the API's (status code, detail)."""
        if self.source == "api":
            return [(str(response.status_code), response.json().get("detail", ""))]
        return [(message.level_tag, message.message) for message in response.context["messages"]]


def _console_client() -> Client:
    user = User.objects.create_user("console-operator")
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture(params=["api", "admin", "console"])
def door(request) -> Door:
    if request.param == "api":
        return Door("api", request.getfixturevalue("operator_client"), "operator")
    if request.param == "admin":
        return Door("admin", request.getfixturevalue("admin_client"), "admin")
    return Door("console", _console_client(), "console-operator")


def _pause(door: Door, destination: Destination, *, enabled: bool):
    if door.source == "api":
        return door.client.patch(f"{API}destinations/{destination.pk}/", {"enabled": enabled}, format="json")
    name = "resume" if enabled else "pause"
    return door.post(api="", admin={"action": name, "_selected_action": [destination.pk]},
                     console=f"{destination.pk}/{name}/")


def test_pause_and_resume_leave_the_same_audit_entry_through_every_door(door):
    destination = DestinationFactory(enabled=True)

    _pause(door, destination, enabled=False)
    paused = Destination.objects.get(pk=destination.pk).enabled
    _pause(door, destination, enabled=True)

    assert (paused, Destination.objects.get(pk=destination.pk).enabled) == (False, True)
    entries = ConfigChange.objects.order_by("id")
    assert [(c.action, c.source, c.actor_name, c.changes) for c in entries] == [
        ("update", door.source, door.username, {"enabled": {"old": True, "new": False}}),
        ("update", door.source, door.username, {"enabled": {"old": False, "new": True}}),
    ]


def _select(destination: Destination, action: str) -> dict:
    return {"action": action, "_selected_action": [destination.pk]}


@pytest.mark.parametrize("door", ["api", "admin"], indirect=True)  # the console has no rotation button
def test_a_key_rotation_is_the_same_and_recorded_the_same_through_every_door(door):
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    door.post(api=f"destinations/{destination.pk}/rotate-signing-key/",
              admin={**_select(destination, "start_key_rotation"), "apply": "yes"}, key="new-key")
    door.post(api=f"destinations/{destination.pk}/finish-key-rotation/",
              admin=_select(destination, "finish_key_rotation"))

    destination.refresh_from_db()
    assert (destination.signing_key, destination.new_signing_key) == ("new-key", "")
    entries = ConfigChange.objects.order_by("id")
    assert [(c.action, c.source, c.actor_name) for c in entries] == [
        ("start_key_rotation", door.source, door.username),
        ("finish_key_rotation", door.source, door.username),
    ]


@pytest.mark.parametrize("door", ["api", "admin"], indirect=True)
def test_finishing_without_a_rotation_is_refused_alike_through_every_door(door):
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    response = door.post(api=f"destinations/{destination.pk}/finish-key-rotation/",
                         admin=_select(destination, "finish_key_rotation"))

    [(level, text)] = door.said(response)
    assert level in {"409", "error"} and "no key rotation is under way" in text
    assert not ConfigChange.objects.exists()


@pytest.mark.parametrize(
    ("outcome", "tries", "succeeded"),
    [(DeliveryStatus.DELIVERED, [OK], True), (DeliveryStatus.FAILED, [status(401)], False)],
    ids=["delivered", "refused"],
)
def test_a_test_send_succeeds_or_fails_alike_through_every_door(door, monkeypatch, outcome, tries, succeeded):
    destination = DestinationFactory()
    sent = log_delivery(destination, created_at=timezone.now(), kind=DeliveryKind.TEST, outcome=outcome,
                        tries=tries)
    monkeypatch.setattr("delivery.sending.rounds.send_test_document", lambda *, destination: sent)

    response = door.post(api=f"destinations/{destination.pk}/test/",
                         admin=_select(destination, "send_test_document"), console=f"{destination.pk}/test/")

    if door.source == "api":
        answer = response.json()
        refused = (401, "partner answered 401 Unauthorized")
        assert (answer["status_code"], answer["error"]) == ((200, None) if succeeded else refused)
    else:
        [(level, _text)] = door.said(response)
        assert (level == "success") is succeeded
    assert not ConfigChange.objects.exists()


def test_send_batch_now_queues_the_batch_through_every_door(door, monkeypatch):
    destination = DestinationFactory()
    queued: list[int] = []
    monkeypatch.setattr(delivery.tasks.send_batch_now, "delay", queued.append)

    response = door.post(api=f"destinations/{destination.pk}/send-batch/",
                         admin=_select(destination, "send_batch"), console=f"{destination.pk}/send-batch/")

    assert queued == [destination.pk]
    [(level, _text)] = door.said(response)
    assert level in {"202", "success"}


def test_send_batch_now_with_the_broker_down_says_the_same_through_every_door(door, monkeypatch):
    destination = DestinationFactory()

    def broker_down(destination_id):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(delivery.tasks.send_batch_now, "delay", broker_down)

    response = door.post(api=f"destinations/{destination.pk}/send-batch/",
                         admin=_select(destination, "send_batch"), console=f"{destination.pk}/send-batch/")

    expected = "503" if door.source == "api" else "error"
    assert door.said(response) == [(expected, BROKER_UNAVAILABLE)]


def test_send_batch_now_on_a_paused_destination_is_refused_through_every_door(door, monkeypatch):
    destination = DestinationFactory(name="Acme", enabled=False)
    queued: list[int] = []
    monkeypatch.setattr(delivery.tasks.send_batch_now, "delay", queued.append)

    response = door.post(api=f"destinations/{destination.pk}/send-batch/",
                         admin=_select(destination, "send_batch"), console=f"{destination.pk}/send-batch/")

    expected = "409" if door.source == "api" else "error"
    assert door.said(response) == [(expected, "Acme is paused: resume it to send its batch.")]
    assert queued == []


@pytest.mark.parametrize("door", ["api", "admin"], indirect=True)  # the console changes no segment
def test_a_segment_ttl_change_reaches_its_members_alike_through_every_door(
    door, monkeypatch, django_capture_on_commit_callbacks, eager_tasks
):
    segment = SegmentFactory(name="sports", ttl_days=30)
    applied: list[int] = []
    monkeypatch.setattr("delivery.lifecycle.expiry.apply_segment_ttl",
                        lambda *, segment: applied.append(segment.pk) or 0)

    with django_capture_on_commit_callbacks(execute=True):
        if door.source == "api":
            door.client.patch(f"{API}segments/{segment.pk}/", {"ttl_days": 7}, format="json")
        else:
            door.client.post(f"{ADMIN}segment/{segment.pk}/change/", {"name": "sports", "ttl_days": 7})

    assert applied == [segment.pk]
    change = ConfigChange.objects.get()
    assert (change.action, change.source, change.actor_name) == ("update", door.source, door.username)
    assert change.changes == {"ttl_days": {"old": 30, "new": 7}}
