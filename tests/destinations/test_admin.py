"""The admin console: every model, masked secrets, a read-only delivery log and the actions."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry

import delivery.tasks
from delivery.models import Attempt, Delivery, DeliveryDevice
from destinations.models import Destination, Mapping
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

SIGNING_KEY = "signing-key-that-must-never-show"
NEW_KEY = "rotating-key-that-must-never-show"
CLIENT_SECRET = "client-secret-that-must-never-show"
SECRETS = (SIGNING_KEY, NEW_KEY, CLIENT_SECRET)


def change_url(model, pk) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/{pk}/change/"


def changelist_url(model) -> str:
    return f"/admin/{model._meta.app_label}/{model._meta.model_name}/"


def form_data(destination: Destination, **overrides) -> dict:
    """What the destination change form posts, secrets left blank, no mapping rows."""
    data = {
        name: getattr(destination, name)
        for name in (
            "name",
            "url",
            "client_id",
            "user_dpid",
            "aam_destination_id",
            "max_users_per_request",
            "max_wait_ms",
            "timeout_ms",
            "max_retries",
            "retry_delay_ms",
            "auth_mode",
            "signing_algorithm",
            "signing_header",
            "oauth_token_url",
            "oauth_client_id",
            "oauth_scope",
            "oauth_client_auth",
        )
    }
    data.update(enabled="on", realtime="on", batch_interval_hours="", signing_key="", oauth_client_secret="")
    data.update(
        {
            "mappings-TOTAL_FORMS": "0",
            "mappings-INITIAL_FORMS": "0",
            "mappings-MIN_NUM_FORMS": "0",
            "mappings-MAX_NUM_FORMS": "1000",
        }
    )
    data.update(overrides)
    return data


@pytest.fixture
def secret_destination(db, settings) -> Destination:
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = True  # the form re-checks the URL; no DNS here
    return DestinationFactory(
        url="https://127.0.0.1/aam",
        auth_mode="hmac",
        signing_key=SIGNING_KEY,
        new_signing_key=NEW_KEY,
        oauth_client_secret=CLIENT_SECRET,
        oauth_client_id="me",
        oauth_token_url="https://127.0.0.1/token",
    )


def assert_no_secret(html: str) -> None:
    for secret in SECRETS:
        assert secret not in html


def test_every_model_of_both_apps_is_registered():
    for label in ("destinations", "delivery"):
        for model in apps.get_app_config(label).get_models():
            assert admin.site.is_registered(model), model


def test_every_changelist_and_change_page_opens(admin_client, secret_destination):
    # Given one row of each kind
    from tests.delivery.test_api_deliveries import make_delivery

    MappingFactory(destination=secret_destination)
    made = make_delivery(destination=secret_destination)

    # Then
    for model in [
        *apps.get_app_config("destinations").get_models(),
        *apps.get_app_config("delivery").get_models(),
    ]:
        response = admin_client.get(changelist_url(model))
        assert response.status_code == 200, model
        assert_no_secret(response.content.decode())
    assert admin_client.get(change_url(Delivery, made.pk)).status_code == 200


def test_the_change_form_never_renders_a_stored_secret_and_says_whether_one_is_set(
    admin_client, secret_destination
):
    # Given
    bare = DestinationFactory()

    # When
    html = admin_client.get(change_url(Destination, secret_destination.pk)).content.decode()
    bare_html = admin_client.get(change_url(Destination, bare.pk)).content.decode()

    # Then
    assert_no_secret(html)
    assert 'type="password"' in html
    assert html.count("Currently set.") == 2
    assert bare_html.count("Currently not set.") == 2


def test_a_blank_secret_input_keeps_the_stored_secret(admin_client, secret_destination):
    # When
    response = admin_client.post(
        change_url(Destination, secret_destination.pk), form_data(secret_destination, timeout_ms=500)
    )

    # Then
    assert response.status_code == 302, response.context["adminform"].form.errors
    secret_destination.refresh_from_db()
    assert secret_destination.timeout_ms == 500
    assert (secret_destination.signing_key, secret_destination.oauth_client_secret) == (
        SIGNING_KEY,
        CLIENT_SECRET,
    )


def test_a_typed_secret_replaces_and_the_clear_box_removes(admin_client, secret_destination):
    # When
    admin_client.post(
        change_url(Destination, secret_destination.pk),
        form_data(secret_destination, signing_key="replaced-key", clear_oauth_client_secret="on"),
    )

    # Then
    secret_destination.refresh_from_db()
    assert (secret_destination.signing_key, secret_destination.oauth_client_secret) == ("replaced-key", "")


def test_the_history_and_the_log_never_hold_a_secret(admin_client, secret_destination):
    # Given
    admin_client.post(
        change_url(Destination, secret_destination.pk),
        form_data(secret_destination, signing_key="typed-secret"),
    )

    # When
    history = admin_client.get(f"/admin/destinations/destination/{secret_destination.pk}/history/")

    # Then
    assert history.status_code == 200
    html = history.content.decode()
    assert "typed-secret" not in html
    assert_no_secret(html)
    entry = LogEntry.objects.get()
    assert "typed-secret" not in entry.change_message and "typed-secret" not in entry.object_repr
    assert "Signing key" in entry.get_change_message()


def test_the_form_applies_the_api_rules(admin_client, secret_destination, settings):
    # Given
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False
    plain = DestinationFactory(url="https://93.184.216.34/aam")

    # When
    no_key = admin_client.post(change_url(Destination, plain.pk), form_data(plain, auth_mode="hmac"))
    private = admin_client.post(change_url(Destination, plain.pk), form_data(plain, url="https://10.0.0.1/"))
    bad_header = admin_client.post(
        change_url(Destination, plain.pk), form_data(plain, signing_header="X Sig")
    )

    refused_secret = admin_client.post(
        change_url(Destination, secret_destination.pk),
        form_data(secret_destination, signing_header="X Sig", oauth_client_secret="typed-secret"),
    )

    # Then
    assert refused_secret.status_code == 200
    assert_no_secret(refused_secret.content.decode())
    assert "typed-secret" not in refused_secret.content.decode()
    assert no_key.context["adminform"].form.errors.keys() == {"signing_key"}
    assert private.context["adminform"].form.errors.keys() == {"url"}
    assert bad_header.context["adminform"].form.errors.keys() == {"signing_header"}
    plain.refresh_from_db()
    assert (plain.auth_mode, plain.url) == ("none", "https://93.184.216.34/aam")


def test_mappings_are_edited_inline_with_the_segment_id_as_default_value(admin_client, secret_destination):
    # Given
    segment = SegmentFactory(id=14356)

    # When
    response = admin_client.post(
        change_url(Destination, secret_destination.pk),
        form_data(
            secret_destination,
            **{
                "mappings-TOTAL_FORMS": "1",
                "mappings-0-segment": str(segment.pk),
                "mappings-0-value": "",
                "mappings-0-start_date": "2024-03-01",
                "mappings-0-end_date": "",
            },
        ),
    )

    # Then
    assert response.status_code == 302
    assert Mapping.objects.get().value == "14356"


def test_pause_and_resume_actions(admin_client):
    # Given
    first, second = DestinationFactory(), DestinationFactory()
    url = changelist_url(Destination)

    # When
    admin_client.post(url, {"action": "pause", "_selected_action": [first.pk, second.pk]})
    paused = set(Destination.objects.values_list("enabled", flat=True))
    admin_client.post(url, {"action": "resume", "_selected_action": [first.pk]})

    # Then
    assert paused == {False}
    assert dict(Destination.objects.values_list("pk", "enabled")) == {first.pk: True, second.pk: False}


def test_the_send_test_document_action_sends_and_reports(admin_client, partner):
    # Given
    destination = DestinationFactory(url=partner.url)

    # When
    response = admin_client.post(
        changelist_url(Destination),
        {"action": "send_test_document", "_selected_action": [destination.pk]},
        follow=True,
    )

    # Then
    assert len(partner.requests) == 1
    assert Delivery.objects.get().kind == "test"
    assert "200 OK" in response.content.decode()


@pytest.fixture
def delivered(db) -> Delivery:
    from tests.delivery.test_api_deliveries import make_delivery

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
    from tests.delivery.test_api_deliveries import make_delivery

    make_delivery(aam_uuids=("other",))

    # When
    response = admin_client.get(changelist_url(Delivery), {"q": term_of(delivered)})

    # Then
    assert [row.pk for row in response.context["cl"].result_list] == [delivered.pk]


def test_deliveries_are_filtered_by_destination_status_kind_and_date(admin_client, delivered):
    from tests.delivery.test_api_deliveries import make_delivery

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
    from django.contrib.auth.models import Group

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
