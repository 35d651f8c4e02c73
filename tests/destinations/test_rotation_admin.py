"""The admin's key-rotation actions: the API's outcomes, as admin pages and messages (CONTRACT §3)."""

from __future__ import annotations

import pytest
from django.contrib.messages import ERROR, SUCCESS, WARNING

from destinations.models import ConfigChange
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/destinations/destination/"
OLD_KEY = "old-key-never-shown"
NEW_KEY = "new-key-never-shown"


def run_action(client, name: str, *destinations, **extra):
    data = {"action": name, "_selected_action": [d.pk for d in destinations], **extra}
    return client.post(CHANGELIST, data, follow=True)


def messages_of(response) -> list[tuple[int, str]]:
    return [(message.level, message.message) for message in response.context["messages"]]


def test_start_asks_for_the_key_on_a_page_that_never_shows_one(admin_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)

    # When
    page = run_action(admin_client, "start_key_rotation", destination)

    # Then
    html = page.content.decode()
    assert page.status_code == 200
    assert 'type="password"' in html and 'name="key"' in html
    assert 'value="start_key_rotation"' in html and f'value="{destination.pk}"' in html
    assert OLD_KEY not in html
    destination.refresh_from_db()
    assert destination.key_rotation_started_at is None


def test_start_with_a_key_starts_the_rotation_and_says_so(admin_client):
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY, signing_header="X-Sig")

    response = run_action(admin_client, "start_key_rotation", destination, apply="yes", key=NEW_KEY)

    destination.refresh_from_db()
    assert (destination.signing_key, destination.new_signing_key) == (OLD_KEY, NEW_KEY)
    assert destination.key_rotation_started_at is not None
    [(level, text)] = messages_of(response)
    assert level == SUCCESS and "X-Sig-New" in text
    assert NEW_KEY not in response.content.decode()
    assert ConfigChange.objects.get().action == "start_key_rotation"


def test_start_without_a_key_shows_the_page_again_with_the_error(admin_client):
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)

    response = run_action(admin_client, "start_key_rotation", destination, apply="yes", key="")

    assert "This field is required" in response.content.decode()
    destination.refresh_from_db()
    assert destination.key_rotation_started_at is None


def test_a_second_start_is_the_409_conflict_shown_as_an_error(admin_client):
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)
    run_action(admin_client, "start_key_rotation", destination, apply="yes", key=NEW_KEY)

    response = run_action(admin_client, "start_key_rotation", destination, apply="yes", key="newer-key")

    [(level, text)] = messages_of(response)
    assert level == ERROR and "already under way" in text and str(destination) in text
    destination.refresh_from_db()
    assert destination.new_signing_key == NEW_KEY
    assert ConfigChange.objects.count() == 1


def test_rotation_of_a_destination_that_does_not_sign_is_the_400_refusal_shown_as_an_error(admin_client):
    destination = DestinationFactory(auth_mode="none")

    started = run_action(admin_client, "start_key_rotation", destination, apply="yes", key=NEW_KEY)
    finished = run_action(admin_client, "finish_key_rotation", destination)

    for response in (started, finished):
        [(level, text)] = messages_of(response)
        assert level == ERROR and "auth_mode 'hmac'" in text
    assert not ConfigChange.objects.exists()


def test_finish_makes_the_new_key_the_only_one_and_a_second_finish_is_an_error(admin_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)
    run_action(admin_client, "start_key_rotation", destination, apply="yes", key=NEW_KEY)

    # When
    finished = run_action(admin_client, "finish_key_rotation", destination)
    again = run_action(admin_client, "finish_key_rotation", destination)

    # Then
    destination.refresh_from_db()
    assert (destination.signing_key, destination.new_signing_key) == (NEW_KEY, "")
    assert destination.key_rotation_started_at is None
    assert messages_of(finished)[0][0] == SUCCESS
    [(level, text)] = messages_of(again)
    assert level == ERROR and "no key rotation is under way" in text


def test_start_needs_exactly_one_destination(admin_client):
    first = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)
    second = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)

    response = run_action(admin_client, "start_key_rotation", first, second, apply="yes", key=NEW_KEY)

    [(level, text)] = messages_of(response)
    assert level == WARNING and "exactly one" in text
    assert not ConfigChange.objects.exists()


def test_a_viewer_staff_user_is_not_offered_the_rotation_actions(client, django_user_model):
    from django.contrib.auth.models import Group

    user = django_user_model.objects.create_user("watcher", password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name="viewer"))
    client.force_login(user)
    destination = DestinationFactory(auth_mode="hmac", signing_key=OLD_KEY)

    html = client.get(CHANGELIST).content.decode()
    response = client.post(
        CHANGELIST, {"action": "start_key_rotation", "_selected_action": [destination.pk], "key": NEW_KEY}
    )

    assert "start_key_rotation" not in html
    assert response.status_code in (200, 302, 403)
    destination.refresh_from_db()
    assert destination.new_signing_key == ""
