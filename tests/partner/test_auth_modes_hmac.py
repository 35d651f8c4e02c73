"""aamdest without auth and with HMAC signatures against the reference partner (CONTRACT §3, §6).

The receiver (`manage.py receiver` in a subprocess) verifies what aamdest really
sends: documents, and HMAC signatures with each algorithm, through a key rotation.
"""

from __future__ import annotations

import pytest

from tests.partner.destinations_at_receiver import (
    NEW_KEY,
    OLD_KEY,
    URL,
    attempts_of,
    configure,
    last_test_delivery,
    send_test,
)


def test_without_auth_the_receiver_accepts_the_document_and_prints_its_delivery_id(
    operator_client, receivers
):
    receiver = receivers.start()
    destination = configure(operator_client, receiver, auth_mode="none")

    answer = send_test(operator_client, destination)

    assert answer["status_code"] == 200 and answer["error"] is None
    delivery = last_test_delivery(destination)
    assert delivery.status == "delivered"
    receiver.wait_for_line(f"accepted delivery {delivery.document_id} AAM_Destination_Id 423 User_count 1")


@pytest.mark.parametrize(
    ("algorithm", "header"), [("sha256", "X-Signature"), ("sha1", "X-Partner-Sig"), ("md5", "X-Signature")]
)
def test_the_receiver_verifies_the_hmac_signature_with_each_algorithm(
    operator_client, receivers, algorithm, header
):
    # Given a receiver that only accepts this algorithm, header and key
    receiver = receivers.start("--signing-key", OLD_KEY, "--algorithm", algorithm, "--header", header)
    destination = configure(
        operator_client, receiver, auth_mode="hmac", signing_key=OLD_KEY, signing_algorithm=algorithm,
        signing_header=header,
    )

    # When
    answer = send_test(operator_client, destination)

    # Then
    assert answer["status_code"] == 200, answer
    receiver.wait_for_line(f"accepted delivery {last_test_delivery(destination).document_id}")


def test_a_key_rotation_keeps_the_partner_accepting_with_the_new_key_alone(operator_client, receivers):
    # Given a partner that already switched to the new key, and a destination still on the old one
    receiver = receivers.start("--signing-key", NEW_KEY)
    destination = configure(operator_client, receiver, auth_mode="hmac", signing_key=OLD_KEY)
    before = send_test(operator_client, destination)

    # When the rotation starts, then finishes
    rotation = f"{URL}{destination.pk}/rotate-signing-key/"
    started = operator_client.post(rotation, {"key": NEW_KEY}, format="json")
    during = send_test(operator_client, destination)
    finished = operator_client.post(f"{URL}{destination.pk}/finish-key-rotation/", format="json")
    after = send_test(operator_client, destination)

    # Then only the old key's signature was refused
    assert before["status_code"] == 403
    assert started.status_code == 200 and during["status_code"] == 200  # thanks to X-Signature-New
    assert finished.status_code == 200 and after["status_code"] == 200

    # And a partner that kept only the old key now refuses, and the attempt fails
    old_only = receivers.restart(receiver, "--signing-key", OLD_KEY)
    refused = send_test(operator_client, destination)
    assert refused["status_code"] == 403 and "403" in refused["error"]
    delivery = last_test_delivery(destination)
    assert delivery.status == "failed" and attempts_of(delivery) == [(403, "status")]
    old_only.wait_for_line("refused  403")


def test_the_admin_send_test_document_action_reaches_the_receiver_signed(
    operator_client, admin_client, receivers
):
    receiver = receivers.start("--signing-key", OLD_KEY)
    destination = configure(operator_client, receiver, auth_mode="hmac", signing_key=OLD_KEY)

    response = admin_client.post(
        "/admin/destinations/destination/",
        {"action": "send_test_document", "_selected_action": [destination.pk]},
        follow=True,
    )

    assert "200 OK" in response.content.decode()
    receiver.wait_for_line(f"accepted delivery {last_test_delivery(destination).document_id}")
