"""The destination actions: key rotation, test document and batch now (CONTRACT §3, §5)."""

from __future__ import annotations

import json

import pytest
from kombu.exceptions import OperationalError as KombuOperationalError

import delivery.tasks
from delivery.models import Delivery
from destinations.signing import sign_body
from tests.factories import DestinationFactory
from tests.local_partner import Reply

URL = "/api/v1/destinations/"


def action(client, destination, name, body=None):
    return client.post(f"{URL}{destination.pk}/{name}/", body or {}, format="json")


def test_a_rotation_starts_and_finishes_with_the_new_key_in_force(operator_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    # When
    started = action(operator_client, destination, "rotate-signing-key", {"key": "new-key"})
    destination.refresh_from_db()
    during = (destination.signing_key, destination.new_signing_key)
    finished = action(operator_client, destination, "finish-key-rotation")

    # Then
    assert started.status_code == 200, started.json()
    assert started.json()["key_rotation_started_at"] is not None
    assert "new-key" not in started.content.decode()
    assert during == ("old-key", "new-key")
    assert finished.status_code == 200, finished.json()
    assert finished.json()["key_rotation_started_at"] is None
    destination.refresh_from_db()
    assert (destination.signing_key, destination.new_signing_key) == ("new-key", "")


def test_a_second_rotation_or_a_finish_without_one_is_a_409(operator_client):
    # Given
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    # When
    early_finish = action(operator_client, destination, "finish-key-rotation")
    action(operator_client, destination, "rotate-signing-key", {"key": "new-key"})
    second = action(operator_client, destination, "rotate-signing-key", {"key": "newer-key"})

    # Then
    assert early_finish.status_code == 409 and early_finish.json()["detail"]
    assert second.status_code == 409 and second.json()["detail"]
    destination.refresh_from_db()
    assert destination.new_signing_key == "new-key"


@pytest.mark.parametrize("name", ["rotate-signing-key", "finish-key-rotation"])
def test_rotation_needs_auth_mode_hmac(operator_client, name):
    destination = DestinationFactory(auth_mode="none")

    response = action(operator_client, destination, name, {"key": "new-key"})

    assert response.status_code == 400
    assert "hmac" in response.json()["detail"]


@pytest.mark.parametrize("body", [{}, {"key": ""}])
def test_a_rotation_without_a_key_is_refused_on_key(operator_client, body):
    destination = DestinationFactory(auth_mode="hmac", signing_key="old-key")

    response = action(operator_client, destination, "rotate-signing-key", body)

    assert response.status_code == 400
    assert list(response.json()) == ["key"]


def test_the_test_document_goes_to_the_partner_signed_and_answers_its_outcome(operator_client, partner):
    # Given
    destination = DestinationFactory(
        url=partner.url, auth_mode="hmac", signing_key="k", signing_algorithm="sha1"
    )

    # When
    response = action(operator_client, destination, "test")

    # Then
    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"status_code", "duration_ms", "error"}
    assert body["status_code"] == 200 and body["error"] is None and body["duration_ms"] >= 0
    [received] = partner.requests
    assert received.headers["X-Signature"] == sign_body(body=received.body, key="k", algorithm="sha1")
    assert json.loads(received.body)["User_count"] == "1"
    assert Delivery.objects.get().kind == "test"


def test_a_failing_test_document_answers_the_status_and_the_error(operator_client, partner):
    # Given
    partner.script = [Reply(status=503, body=b"down for maintenance")]
    destination = DestinationFactory(url=partner.url)

    # When
    response = action(operator_client, destination, "test")

    # Then
    assert response.status_code == 200
    body = response.json()
    assert body["status_code"] == 503
    assert body["error"]
    delivery = Delivery.objects.get()
    assert (delivery.kind, delivery.status) == ("test", "failed")


def test_send_batch_starts_the_batch_and_answers_202(operator_client, monkeypatch):
    # Given
    started: list[int] = []
    monkeypatch.setattr(delivery.tasks.send_batch_now, "delay", started.append)
    destination = DestinationFactory(batch_interval_hours=24)

    # When
    response = action(operator_client, destination, "send-batch")

    # Then
    assert response.status_code == 202
    assert response.json()["detail"]
    assert started == [destination.pk]


@pytest.mark.parametrize("name", ["rotate-signing-key", "finish-key-rotation", "test", "send-batch"])
def test_the_actions_answer_404_for_an_unknown_destination(operator_client, name):
    response = operator_client.post(f"{URL}999999/{name}/", {"key": "k"}, format="json")

    assert response.status_code == 404
    assert response.json()["detail"]


def test_the_openapi_schema_describes_the_actions_inputs_and_outputs(viewer_client):
    schema = viewer_client.get("/api/schema/", {"format": "json"}).json()

    def body_ref(path, status):
        content = schema["paths"][path]["post"]["responses"][status]["content"]["application/json"]
        return content["schema"]["$ref"].rsplit("/", 1)[-1]

    rotate = schema["paths"]["/api/v1/destinations/{id}/rotate-signing-key/"]["post"]
    rotate_body = rotate["requestBody"]["content"]["application/json"]["schema"]
    assert rotate_body["$ref"].endswith("RotateSigningKeyRequest")
    assert set(rotate["responses"]) == {"200", "400", "409"}
    assert body_ref("/api/v1/destinations/{id}/test/", "200") == "TestResult"
    assert set(schema["components"]["schemas"]["TestResult"]["properties"]) == {
        "status_code",
        "duration_ms",
        "error",
    }
    assert body_ref("/api/v1/deliveries/{id}/redeliver/", "202") == "Redelivery"
    # Request bodies have their own components (COMPONENT_SPLIT_REQUEST): secrets are in the request only.
    components = schema["components"]["schemas"]
    assert components["DestinationRequest"]["properties"]["signing_key"]["writeOnly"] is True
    assert "signing_key" not in components["Destination"]["properties"]


def test_send_batch_answers_503_when_the_broker_is_down(operator_client, monkeypatch):
    def broker_down(destination_id):
        raise KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(delivery.tasks.send_batch_now, "delay", broker_down)

    response = action(operator_client, DestinationFactory(), "send-batch")

    assert response.status_code == 503
    assert "broker" in response.json()["detail"]


def test_the_schema_and_its_page_need_a_token_or_a_session_like_the_api(client, viewer_client):
    # Without credentials both answer 401; with a viewer's token the schema answers
    assert client.get("/api/schema/").status_code == 401
    assert client.get("/api/docs/").status_code in {401, 403}
    assert viewer_client.get("/api/schema/", {"format": "json"}).status_code == 200
