"""The destinations admin: every model registered and every page open, masked secrets, the form's rules,
inline mappings and the pause, resume and test-document actions."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.admin.models import LogEntry

from delivery.models import Delivery
from destinations.models import Destination, Mapping
from tests.delivery.logged_deliveries import make_delivery
from tests.destinations.admin_forms import change_url, changelist_url, form_data
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

SIGNING_KEY = "signing-key-that-must-never-show"
NEW_KEY = "rotating-key-that-must-never-show"
CLIENT_SECRET = "client-secret-that-must-never-show"
SECRETS = (SIGNING_KEY, NEW_KEY, CLIENT_SECRET)


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
