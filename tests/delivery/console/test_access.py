"""The operator console: who may read and act, what each page shows, what each button does."""

from __future__ import annotations

import datetime as dt
import html

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.test import Client
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from delivery.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    DestinationDevice,
    Device,
    Membership,
    PartnerId,
)
from delivery.templatetags.console_time import ago, span
from destinations.models import AuthMode, ConfigChange
from tests.delivery.log_rows import OK, TIMEOUT, log_delivery, status
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

pytestmark = pytest.mark.django_db


def _client_with_role(username: str, *, group: str | None = None, **flags: bool) -> Client:
    user = User.objects.create_user(username, **flags)  # no password: hashing one takes a second
    if group:
        user.groups.add(Group.objects.get_or_create(name=group)[0])
    client = Client()
    client.force_login(user)
    client.user = user
    return client


@pytest.fixture
def viewer() -> Client:
    return _client_with_role("viewer", group="viewer")


@pytest.fixture
def operator() -> Client:
    return _client_with_role("operator", group="operator")


@pytest.fixture
def now() -> dt.datetime:
    return timezone.now()


class FakeTask:
    """Records `.delay()` calls instead of reaching the broker."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def delay(self, *args: object) -> None:
        self.calls.append(args)


@pytest.fixture
def send_task(monkeypatch) -> FakeTask:
    task = FakeTask()
    monkeypatch.setattr("delivery.tasks.send_delivery_task", task)
    return task


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


# --- Who may read and act ------------------------------------------------------------------------


def test_an_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get("/dashboard/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/dashboard/"


def test_a_user_without_a_role_is_refused_with_a_readable_page():
    nobody = _client_with_role("nobody")

    response = nobody.get("/dashboard/")

    assert response.status_code == 403
    assert b"viewer role" in response.content


def test_a_viewer_reads_but_cannot_pause(viewer):
    # Given
    destination = DestinationFactory()

    # When the viewer opens the page and presses pause anyway
    page = viewer.get(f"/dashboard/destinations/{destination.pk}/")
    pressed = viewer.post(f"/dashboard/destinations/{destination.pk}/pause/")

    # Then the page offers no button and the press is refused
    assert page.status_code == 200
    assert b"Pause</button>" not in page.content
    assert pressed.status_code == 403
    destination.refresh_from_db()
    assert destination.enabled


def test_staff_need_the_model_permission_to_pause():
    destination = DestinationFactory()
    staff = _client_with_role("staff", is_staff=True)

    assert staff.post(f"/dashboard/destinations/{destination.pk}/pause/").status_code == 403

    staff.user.user_permissions.add(Permission.objects.get(codename="change_destination"))
    assert staff.post(f"/dashboard/destinations/{destination.pk}/pause/").status_code == 302
    destination.refresh_from_db()
    assert not destination.enabled


def test_an_operator_pauses_and_resumes_a_destination(operator):
    destination = DestinationFactory()

    paused = operator.post(f"/dashboard/destinations/{destination.pk}/pause/", follow=True)
    destination.refresh_from_db()
    assert not destination.enabled
    assert "paused" in _messages(paused)[0]
    assert b"Resume</button>" in paused.content

    operator.post(f"/dashboard/destinations/{destination.pk}/resume/")
    destination.refresh_from_db()
    assert destination.enabled


def test_pausing_and_resuming_from_the_console_is_recorded_in_the_change_log(operator):
    # Given a destination
    destination = DestinationFactory()

    # When an operator pauses then resumes it from the console
    operator.post(f"/dashboard/destinations/{destination.pk}/pause/")
    operator.post(f"/dashboard/destinations/{destination.pk}/resume/")

    # Then both changes are in the change log, by whom and through the console
    changes = list(ConfigChange.objects.filter(destination_id=destination.pk).order_by("id"))
    assert [(c.source, c.changes["enabled"]) for c in changes] == [
        ("console", {"old": True, "new": False}),
        ("console", {"old": False, "new": True}),
    ]
    assert {c.actor_id for c in changes} == {operator.user.pk}


def test_buttons_answer_only_to_post(operator):
    destination = DestinationFactory()

    assert operator.get(f"/dashboard/destinations/{destination.pk}/pause/").status_code == 405


# --- Dashboard -----------------------------------------------------------------------------------


def test_the_dashboard_shows_each_destination_with_its_numbers_and_charts(viewer, now):
    # Given a destination with two delivered requests (3 users) and one failed on a 503
    destination = DestinationFactory(name="Acme DSP")
    log_delivery(destination, created_at=now, aam_uuids=["a", "b"])
    log_delivery(destination, created_at=now, aam_uuids=["c"])
    log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[status(503), status(503)])

    # When
    response = viewer.get("/dashboard/?hours=6")

    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert "Acme DSP" in page and "last 6 hours" in page
    assert "66.7%" in page  # 2 delivered of 3 finished
    assert "HTTP 503" in page
    assert page.count("<svg") == 4


def test_an_unknown_period_falls_back_to_24_hours(viewer):
    response = viewer.get("/dashboard/?hours=5000")

    assert response.context["hours"] == 24


def test_the_dashboard_says_so_when_there_is_no_destination(viewer):
    response = viewer.get("/dashboard/")

    assert b"No destinations yet" in response.content


# --- Find a device ---------------------------------------------------------------------------------


@pytest.fixture
def profiled_device(now) -> Device:
    device = Device.objects.create(aam_uuid="19393572368547369350319949416899715727", last_seen=now,
                                   regions=[6, 9])
    PartnerId.objects.create(device=device, dpid=20914, dpuuid="4250948725049857")
    Membership.objects.create(device=device, segment=SegmentFactory(id=14356, name="Runners"), is_active=True,
                              datetime=now, qualified_at=now, expires_at=now + dt.timedelta(days=120))
    Membership.objects.create(device=device, segment=SegmentFactory(id=12176), is_active=False, datetime=now)
    return device


def test_searching_an_aam_uuid_opens_the_device(viewer, profiled_device):
    response = viewer.get("/dashboard/devices/", {"q": f"  {profiled_device.aam_uuid} "})

    assert response.status_code == 302
    assert response["Location"] == f"/dashboard/devices/{profiled_device.aam_uuid}/"


def test_searching_a_partner_id_opens_its_device(viewer, profiled_device):
    response = viewer.get("/dashboard/devices/", {"q": "4250948725049857"})

    assert response["Location"] == f"/dashboard/devices/{profiled_device.aam_uuid}/"


def test_a_partner_id_shared_by_two_devices_lists_both(viewer, profiled_device, now):
    other = Device.objects.create(aam_uuid="other-device", last_seen=now)
    PartnerId.objects.create(device=other, dpid=20915, dpuuid="4250948725049857")

    response = viewer.get("/dashboard/devices/", {"q": "4250948725049857"})

    assert response.status_code == 200
    assert response.context["matches"] == [(profiled_device.aam_uuid, 20914), ("other-device", 20915)]


def test_a_search_that_matches_nothing_says_so(viewer):
    response = viewer.get("/dashboard/devices/", {"q": "no-such-id"})

    assert response.status_code == 200
    assert b"Nothing matches" in response.content


def test_the_device_page_shows_its_profile_and_every_delivery_with_the_partners_answer(
    viewer, profiled_device, now
):
    # Given two deliveries that carried the device, one failed on a timeout, and one that did not
    destination = DestinationFactory(name="Acme DSP")
    failed = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED,
                          tries=[TIMEOUT, TIMEOUT], aam_uuids=[profiled_device.aam_uuid])
    delivered = log_delivery(destination, created_at=now, tries=[status(500), OK],
                             aam_uuids=[profiled_device.aam_uuid, "someone-else"])
    log_delivery(destination, created_at=now, aam_uuids=["someone-else"])

    # When
    response = viewer.get(f"/dashboard/devices/{profiled_device.aam_uuid}/")

    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert "6 Dublin" in page and "9 Oregon" in page
    assert "4250948725049857" in page and "20914" in page
    assert "Runners" in page and "1 active" in page and "0 left" in page
    assert [item.pk for item in response.context["deliveries"]] == [delivered.pk, failed.pk]
    assert f'href="/dashboard/deliveries/{failed.pk}/"' in page
    assert "timeout" in page and "HTTP 200" in page and "after 2 attempts" in page


def test_an_erased_device_still_shows_the_deliveries_that_carried_it(viewer, now):
    destination = DestinationFactory()
    delivery = log_delivery(destination, created_at=now, aam_uuids=["erased-device"])

    response = viewer.get("/dashboard/devices/", {"q": "erased-device"}, follow=True)

    assert response.status_code == 200
    assert b"not in the profile store" in response.content
    assert [item.pk for item in response.context["deliveries"]] == [delivery.pk]


def test_an_unknown_device_page_answers_404(viewer):
    response = viewer.get("/dashboard/devices/never-seen/")

    assert response.status_code == 404
    assert b"Unknown device" in response.content


# --- Destination page ------------------------------------------------------------------------------


def test_the_destination_page_shows_configuration_without_secrets_and_its_mappings(viewer, now):
    # Given an HMAC destination with a key, and two mappings, one ended
    destination = DestinationFactory(name="Signed", auth_mode=AuthMode.HMAC, signing_key="very-secret-key-1")
    MappingFactory(destination=destination, segment=SegmentFactory(id=501, name="Cyclists"), value="cyc")
    MappingFactory(destination=destination, segment=SegmentFactory(id=502), start_date=dt.date(2020, 1, 1),
                   end_date=dt.date(2020, 2, 1))
    log_delivery(destination, created_at=now)

    # When
    response = viewer.get(f"/dashboard/destinations/{destination.pk}/")

    # Then the key is only said to be set
    page = response.content.decode()
    assert "very-secret-key-1" not in page
    assert "Signing key</dt><dd><span class=\"badge ok\">set</span>" in page
    assert "OAuth client secret</dt><dd><span class=\"badge\">not set</span>" in page
    assert "Cyclists" in page and "<code>cyc</code>" in page
    assert [active for _, active in response.context["mappings"]] == [True, False]
    assert response.context["deliveries"].paginator.count == 1


def test_recent_deliveries_are_paginated_and_filtered_by_status(viewer, now):
    destination = DestinationFactory()
    for minute in range(30):
        log_delivery(destination, created_at=now - dt.timedelta(minutes=minute))
    log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT])

    second = viewer.get(f"/dashboard/destinations/{destination.pk}/", {"page": 2})
    failed = viewer.get(f"/dashboard/destinations/{destination.pk}/", {"status": "failed"})

    assert len(second.context["deliveries"].object_list) == 6
    assert [item.status for item in failed.context["deliveries"]] == ["failed"]


def test_sending_a_test_document_shows_its_outcome(operator, monkeypatch, now):
    # Given a sender that records a failed test delivery
    destination = DestinationFactory()
    sent = log_delivery(destination, created_at=now, kind=DeliveryKind.TEST, outcome=DeliveryStatus.FAILED,
                        tries=[status(401)])
    calls = []
    monkeypatch.setattr("delivery.sending.rounds.send_test_document",
                        lambda *, destination: calls.append(destination.pk) or sent)

    # When
    response = operator.post(f"/dashboard/destinations/{destination.pk}/test/", follow=True)

    # Then the operator lands on the test delivery with the partner's answer
    assert calls == [destination.pk]
    assert response.redirect_chain[-1][0] == f"/dashboard/deliveries/{sent.pk}/"
    assert _messages(response) == [
        "Test document failed after 1 attempt(s): HTTP 401. partner answered 401 Unauthorized"
    ]


def test_a_test_document_that_cannot_be_sent_reads_as_a_message_not_a_500(operator, monkeypatch):
    destination = DestinationFactory()

    def refuse(*, destination):
        raise RuntimeError("address refused")

    monkeypatch.setattr("delivery.sending.rounds.send_test_document", refuse)

    response = operator.post(f"/dashboard/destinations/{destination.pk}/test/", follow=True)

    assert response.status_code == 200
    assert "address refused" in _messages(response)[0]


def test_send_the_batch_now_queues_the_task(operator, monkeypatch):
    destination = DestinationFactory()
    task = FakeTask()
    monkeypatch.setattr("delivery.tasks.send_batch_now", task, raising=False)

    response = operator.post(f"/dashboard/destinations/{destination.pk}/send-batch/", follow=True)

    assert task.calls == [(destination.pk,)]
    assert "queued" in _messages(response)[0]


def test_send_the_batch_now_says_so_when_the_broker_is_down(operator, monkeypatch):
    # The "task not installed" branch is gone (such a deployment cannot exist); a broker
    # outage reads as the admin's and the API's message.
    destination = DestinationFactory()

    def broker_down(destination_id):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr("delivery.tasks.send_batch_now.delay", broker_down)

    response = operator.post(f"/dashboard/destinations/{destination.pk}/send-batch/", follow=True)

    assert response.status_code == 200
    assert _messages(response) == ["The task broker is unavailable; try again shortly."]


def test_redeliver_failed_since_sends_each_failed_document_once(
    operator, send_task, now, django_capture_on_commit_callbacks
):
    # Given failed deliveries: one too old, one already redelivered, one to redeliver; and a delivered one
    destination = DestinationFactory()
    log_delivery(destination, created_at=now - dt.timedelta(days=3), outcome=DeliveryStatus.FAILED,
                 tries=[TIMEOUT])
    redelivered = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[TIMEOUT])
    log_delivery(destination, created_at=now, redelivery_of=redelivered, kind=DeliveryKind.REDELIVERY)
    failed = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED, tries=[status(500)])
    log_delivery(destination, created_at=now)
    since = (now - dt.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")

    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/dashboard/destinations/{destination.pk}/redeliver-failed/",
                                 {"since": since}, follow=True)

    # Then one redelivery of the eligible one, queued after the commit
    new = Delivery.objects.get(redelivery_of=failed)
    assert (new.kind, new.status, new.document_id, bytes(new.body)) == (
        "redelivery", "pending", failed.document_id, bytes(failed.body))
    assert send_task.calls == [(new.pk,)]
    assert _messages(response)[0].startswith("1 failed deliveries since")


def test_redeliver_failed_since_refuses_a_time_it_cannot_read(operator, send_task):
    destination = DestinationFactory()

    response = operator.post(f"/dashboard/destinations/{destination.pk}/redeliver-failed/",
                             {"since": "yesterday"}, follow=True)

    assert "YYYY-MM-DD HH:MM" in _messages(response)[0]
    assert send_task.calls == []


# --- Delivery page ---------------------------------------------------------------------------------


def test_the_delivery_page_shows_the_document_and_every_attempt(viewer, now):
    destination = DestinationFactory()
    delivery = log_delivery(destination, created_at=now, outcome=DeliveryStatus.FAILED,
                            tries=[TIMEOUT, status(503, excerpt="Service Unavailable")],
                            aam_uuids=["dev-a", "dev-b"])

    response = viewer.get(f"/dashboard/deliveries/{delivery.pk}/")

    page = html.unescape(response.content.decode())
    assert response.status_code == 200
    assert '"User_count": "2"' in page and '\n  "Users": [' in page  # indented JSON
    assert "3000 ms" in page and "no complete answer within 3000 ms" in page and "timeout" in page
    assert "partner answered 503 Service Unavailable" in page
    assert 'href="/dashboard/devices/dev-a/"' in page
    assert 'http-equiv="refresh"' not in page


def test_a_pending_delivery_page_refreshes_itself(viewer, now):
    delivery = log_delivery(DestinationFactory(), created_at=now, outcome=DeliveryStatus.PENDING, tries=[])

    response = viewer.get(f"/dashboard/deliveries/{delivery.pk}/")

    assert b'http-equiv="refresh"' in response.content
    assert b"No attempt yet" in response.content


def test_redeliver_creates_a_new_delivery_and_queues_it(
    operator, send_task, now, django_capture_on_commit_callbacks
):
    failed = log_delivery(DestinationFactory(), created_at=now, outcome=DeliveryStatus.FAILED,
                          tries=[TIMEOUT])

    with django_capture_on_commit_callbacks(execute=True):
        response = operator.post(f"/dashboard/deliveries/{failed.pk}/redeliver/")

    new = Delivery.objects.get(redelivery_of=failed)
    assert response["Location"] == f"/dashboard/deliveries/{new.pk}/"
    assert send_task.calls == [(new.pk,)]


def test_redelivering_a_pending_delivery_answers_409_with_a_message(operator, send_task, now):
    pending = log_delivery(DestinationFactory(), created_at=now, outcome=DeliveryStatus.PENDING, tries=[])

    response = operator.post(f"/dashboard/deliveries/{pending.pk}/redeliver/")

    assert response.status_code == 409
    assert "still pending" in response.content.decode()
    assert not Delivery.objects.filter(redelivery_of=pending).exists()
    assert send_task.calls == []


# --- Static files ------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/static/admin/css/base.css", "/static/console/console.css"])
def test_static_files_are_served_with_debug_off(settings, path):
    settings.DEBUG = False

    response = Client().get(path)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/css")


def test_the_pending_backlog_reads_on_the_dashboard(viewer, now):
    destination = DestinationFactory()
    device = Device.objects.create(aam_uuid="waiting", last_seen=now)
    DestinationDevice.objects.create(destination=destination, device=device,
                                     pending_since=now - dt.timedelta(minutes=12))

    response = viewer.get("/dashboard/")

    assert response.context["total_pending"] == 1
    assert "oldest waits 12 min" in response.content.decode()




@pytest.mark.parametrize(
    ("seconds", "reads"),
    [(0, "0 s"), (59, "59 s"), (60, "1 min"), (3600, "1 h"), (3660 * 3, "3 h 3 min"), (86_400, "1 day"),
     (86_400 * 3, "3 days"), (86_400 * 120, "4 months")],
)
def test_human_times_keep_the_unit_that_matters(seconds, reads):
    assert span(seconds) == reads


def test_a_time_ahead_reads_as_in_and_a_past_one_as_ago(now):
    assert ago(now + dt.timedelta(days=3, minutes=1)) == "in 3 days"
    assert ago(now - dt.timedelta(seconds=40)).endswith(" s ago")
    assert ago(None) == ""


def test_a_viewer_without_staff_status_logs_in_on_the_console_login_page(client):
    # Given a viewer who is not staff (the admin's login page would refuse them)
    viewer = User.objects.create_user("reader", password="a-long-password")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])

    # When they log in through the console's login page
    response = client.post(
        "/accounts/login/", {"username": "reader", "password": "a-long-password", "next": "/dashboard/"}
    )

    # Then they land on the dashboard and can read it
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200
