"""The delivery admin: a read-only log of deliveries and attempts, found and filtered, and redelivery."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

import delivery.tasks
from delivery.models import Attempt, Delivery, DeliveryDevice
from destinations.models import Destination
from tests.delivery.logged_deliveries import make_delivery
from tests.destinations.admin_forms import change_url, changelist_url


@pytest.fixture
def delivered(db) -> Delivery:
    made = make_delivery(
        status="failed", attempts=(503, None), aam_uuids=("19393572368547369350319949416899715727",)
    )
    return made


def test_deliveries_and_attempts_are_read_only(admin_client, delivered):
    # When
    add = admin_client.get("/admin/delivery/delivery/add/")
    delete = admin_client.post(f"/admin/delivery/delivery/{delivered.pk}/delete/", {"post": "yes"})
    change = admin_client.post(change_url(Delivery, delivered.pk), {"status": "delivered"})
    attempt_add = admin_client.get("/admin/delivery/attempt/add/")

    # Then
    assert add.status_code == 403 and attempt_add.status_code == 403
    assert delete.status_code == 403 and change.status_code == 403
    delivered.refresh_from_db()
    assert delivered.status == "failed"


def test_the_delivery_page_shows_its_attempts_and_the_document_as_pretty_json(admin_client, delivered):
    html = admin_client.get(change_url(Delivery, delivered.pk)).content.decode()

    assert "<pre" in html
    assert "&quot;AAM_UUID&quot;: &quot;19393572368547369350319949416899715727&quot;" in html
    assert "{\n  &quot;ProcessTime&quot;: " in html  # indented, one key a line
    assert "503" in html and "Timeout" in html and "it failed" in html
    assert 'type="submit" name="_save"' not in html


@pytest.mark.parametrize(
    "term_of", [lambda d: "19393572368547369350319949416899715727", lambda d: str(d.document_id)]
)
def test_deliveries_are_found_by_device_or_document_id(admin_client, delivered, term_of):
    # Given
    make_delivery(aam_uuids=("other",))

    # When
    response = admin_client.get(changelist_url(Delivery), {"q": term_of(delivered)})

    # Then
    assert [row.pk for row in response.context["cl"].result_list] == [delivered.pk]


def test_deliveries_are_filtered_by_destination_status_kind_and_date(admin_client, delivered):
    make_delivery(kind="test")
    url = changelist_url(Delivery)

    def found(**query):
        return [row.pk for row in admin_client.get(url, query).context["cl"].result_list]

    assert found(status__exact="failed") == [delivered.pk]
    assert found(kind__exact="realtime", destination__id__exact=delivered.destination_id) == [delivered.pk]
    assert len(found(created_at__year=delivered.created_at.year)) == 2
    row = admin_client.get(url).context["cl"].result_list
    assert {(item.pk, item.attempt_total, item.last_code) for item in row if item.pk == delivered.pk} == {
        (delivered.pk, 2, None)
    }


def test_redeliver_selected_uses_the_redelivery_service(
    admin_client, delivered, monkeypatch, django_capture_on_commit_callbacks
):
    # Given
    sent: list[int] = []
    monkeypatch.setattr(delivery.tasks.send_delivery_task, "delay", sent.append)
    pending = Delivery.objects.create(
        destination=delivered.destination, kind="realtime", body=b"{}", user_count=0
    )

    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            changelist_url(Delivery),
            {"action": "redeliver_selected", "_selected_action": [delivered.pk, pending.pk]},
            follow=True,
        )

    # Then
    redelivery = Delivery.objects.get(kind="redelivery")
    assert redelivery.redelivery_of_id == delivered.pk
    assert sent == [redelivery.pk]
    assert list(DeliveryDevice.objects.filter(delivery=redelivery).values_list("aam_uuid", flat=True)) == [
        "19393572368547369350319949416899715727"
    ]
    assert "still pending" in response.content.decode()


def test_a_viewer_staff_user_sees_but_cannot_redeliver(client, django_user_model, delivered):
    # Given a staff member of the viewer group (the migration's view permissions)
    user = django_user_model.objects.create_user("looker", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)

    # When
    page = client.get(changelist_url(Delivery))
    attempt_page = client.get(changelist_url(Attempt))

    # Then
    assert page.status_code == 200 and attempt_page.status_code == 200
    assert "redeliver_selected" not in page.content.decode()
    assert client.get(change_url(Destination, delivered.destination_id)).status_code == 200
