"""Whatever a partner answers is stored safely (CONTRACT §3): the attempt is always recorded, NUL
and invalid UTF-8 are replaced, and no credential aamdest sent in that exchange is kept."""

from __future__ import annotations

import base64
import json

import pytest

from delivery.models import Attempt, Delivery, DeliveryStatus
from delivery.sending.rounds import send_test_document
from destinations.signing import sign_body
from tests.delivery.sending.token_calls import CLIENT_ID, SECRET
from tests.factories import DestinationFactory
from tests.local_partner import Received, Reply
from tests.token_endpoint import token_reply

pytestmark = pytest.mark.django_db
SIGNING_KEY = "stored-signing-key-0123456789"


def echo_headers(received: Received) -> Reply:
    """A partner that answers with the request's headers, as some debugging endpoints do."""
    return Reply(status=400, body=json.dumps(received.headers).encode())


@pytest.mark.parametrize("status", [200, 500])
def test_an_answer_holding_nul_and_invalid_utf8_is_stored_and_the_delivery_ends(partner, status):
    destination = DestinationFactory(url=partner.url, max_retries=0)
    partner.script = [Reply(status=status, body=b"ok\x00then \xff\xfe bytes")]

    delivery = send_test_document(destination=destination)

    [attempt] = Attempt.objects.filter(delivery=delivery)
    assert attempt.response_excerpt == "ok\ufffdthen \ufffd\ufffd bytes"
    expected = DeliveryStatus.DELIVERED if status == 200 else DeliveryStatus.FAILED
    assert Delivery.objects.get(pk=delivery.pk).status == expected


def oauth_destination_at(server) -> object:
    return DestinationFactory(url=server.url, auth_mode="oauth2", oauth_token_url=server.url,
                              oauth_client_id=CLIENT_ID, oauth_client_secret=SECRET, max_retries=0)


def test_a_token_error_holding_nul_is_stored_and_the_delivery_fails(token_server):
    answer = {"error": "invalid_client", "error_description": "bad\u0000client"}
    token_server.script = [Reply(status=401, body=json.dumps(answer).encode())]

    delivery = send_test_document(destination=oauth_destination_at(token_server))

    [attempt] = Attempt.objects.filter(delivery=delivery)
    assert attempt.reason == "token"
    assert "bad\ufffdclient" in attempt.error
    assert Delivery.objects.get(pk=delivery.pk).status == DeliveryStatus.FAILED


def test_a_partner_echoing_the_signature_gets_it_redacted(partner):
    destination = DestinationFactory(
        url=partner.url, max_retries=0, auth_mode="hmac", signing_key=SIGNING_KEY
    )
    partner.responder = echo_headers

    delivery = send_test_document(destination=destination)

    signature = sign_body(body=bytes(delivery.body), key=SIGNING_KEY, algorithm="sha256")
    [attempt] = Attempt.objects.filter(delivery=delivery)
    assert signature not in attempt.response_excerpt
    assert signature.replace("/", "\\/") not in attempt.response_excerpt
    assert '"X-Signature": "[redacted]"' in attempt.response_excerpt


def test_a_partner_echoing_the_bearer_token_gets_it_redacted(token_server):
    answers = iter([token_reply(token="tok-ABCDEF-0123456789")])
    token_server.responder = lambda received: next(answers, None) or echo_headers(received)

    delivery = send_test_document(destination=oauth_destination_at(token_server))

    [attempt] = Attempt.objects.filter(delivery=delivery)
    assert "tok-ABCDEF-0123456789" not in attempt.response_excerpt
    assert '"Authorization": "[redacted]"' in attempt.response_excerpt


def echo_basic(received: Received) -> Reply:
    answer = {"error": "invalid_client", "error_description": received.headers["Authorization"]}
    return Reply(status=401, body=json.dumps(answer).encode())


def test_a_token_endpoint_echoing_the_basic_credential_gets_it_redacted(token_server):
    token_server.responder = echo_basic

    delivery = send_test_document(destination=oauth_destination_at(token_server))

    [attempt] = Attempt.objects.filter(delivery=delivery)
    basic = base64.b64encode(f"{CLIENT_ID}:{SECRET}".encode()).decode()
    assert basic not in attempt.error
    assert "[redacted]" in attempt.error
