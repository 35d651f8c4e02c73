"""What the partner receives to verify a signed delivery: the HMAC of the exact bytes, keys in force."""

from __future__ import annotations

import time

import pytest

from delivery.sending import rounds as sending
from delivery.sending.rounds import send_deliveries
from destinations.models import Destination
from destinations.signing import sign_body
from tests.delivery.sending.claims import KEY, claim, waiting_with
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


def test_the_partner_can_verify_the_hmac_signature_of_the_exact_bytes(partner, destination):
    destination.auth_mode, destination.signing_algorithm = "hmac", "sha1"
    destination.signing_header, destination.signing_key = "X-Partner-Signature", KEY
    destination.save()
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    [received] = partner.requests
    expected = sign_body(body=received.body, key=KEY, algorithm="sha1")
    assert received.headers["X-Partner-Signature"] == expected
    assert KEY not in str(received.headers)


def test_a_retry_is_signed_with_the_keys_in_force(partner, destination, monkeypatch):
    destination.auth_mode, destination.signing_key = "hmac", KEY
    destination.save()
    partner.script = [Reply(status=500), Reply(status=200)]
    [delivery] = claim(destination)

    def rotate_keys_while_waiting(seconds: float) -> None:
        Destination.objects.filter(pk=destination.pk).update(new_signing_key="next-key")
        time.sleep(seconds)

    monkeypatch.setattr(sending, "wait_unless_stopping", waiting_with(rotate_keys_while_waiting))
    send_deliveries(destination=destination, deliveries=[delivery])

    first, second = partner.requests
    assert "X-Signature-New" not in first.headers
    assert second.headers["X-Signature"] == sign_body(body=second.body, key=KEY, algorithm="sha256")
    new_signature = sign_body(body=second.body, key="next-key", algorithm="sha256")
    assert second.headers["X-Signature-New"] == new_signature
