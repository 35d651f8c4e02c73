"""OAuth 2.0 while sending: the bearer token, a new one after a 401, a failing token endpoint."""

from __future__ import annotations

import json

import pytest

from delivery.coordination import scheduling_client
from delivery.sending.rounds import send_deliveries
from tests.delivery.sending.claims import attempts_of, claim
from tests.local_partner import Received, Reply

pytestmark = pytest.mark.django_db


class OAuthPartner:
    """Serves /oauth/token and accepts only the latest token it issued on the data path."""

    def __init__(self) -> None:
        self.issued: list[str] = []
        self.token_status = 200

    def reply(self, received: Received) -> Reply:
        if received.path.endswith("/oauth/token"):
            if self.token_status != 200:
                return Reply(status=self.token_status, body=b'{"error": "server_error"}')
            self.issued.append(f"token-{len(self.issued) + 1}")
            return Reply(body=json.dumps({"access_token": self.issued[-1], "token_type": "bearer"}).encode())
        if self.issued and received.headers.get("Authorization") == f"Bearer {self.issued[-1]}":
            return Reply(status=200)
        return Reply(status=401)


@pytest.fixture
def oauth_partner(partner, destination) -> OAuthPartner:
    scheduling_client().flushdb()  # the token cache
    oauth = OAuthPartner()
    partner.responder = oauth.reply
    destination.auth_mode = "oauth2"
    destination.oauth_token_url = partner.url.replace("/aam", "/oauth/token")
    destination.oauth_client_id, destination.oauth_client_secret = "client", "s3cret"
    destination.save()
    yield oauth
    scheduling_client().flushdb()


def test_an_oauth_delivery_carries_the_bearer_token(partner, destination, oauth_partner):
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    token_request, data_request = partner.requests
    assert token_request.body == b"grant_type=client_credentials"
    assert data_request.headers["Authorization"] == "Bearer token-1"
    assert attempts_of(delivery) == [(1, 200, None)]


def test_an_oauth_401_discards_the_token_and_the_retry_uses_a_new_one(partner, destination, oauth_partner):
    [first, second] = claim(destination, 15)
    send_deliveries(destination=destination, deliveries=[first])
    oauth_partner.issued.append("token-revoked")  # the partner stops accepting token-1

    send_deliveries(destination=destination, deliveries=[second])

    data_requests = [r for r in partner.requests if r.path.endswith("/aam")]
    assert [r.headers["Authorization"] for r in data_requests] == [
        "Bearer token-1", "Bearer token-1", "Bearer token-3"
    ]
    assert attempts_of(second) == [(1, 401, "status"), (2, 200, None)]


def test_a_token_endpoint_failure_fails_the_attempt_with_reason_token(partner, destination, oauth_partner):
    oauth_partner.token_status = 500
    [delivery] = claim(destination)

    send_deliveries(destination=destination, deliveries=[delivery])

    assert [r.path for r in partner.requests] == ["/oauth/token", "/oauth/token"]
    assert attempts_of(delivery) == [(1, None, "token"), (2, None, "token")]
    error = delivery.attempts.first().error
    assert "token" in error and "500" in error
    assert "s3cret" not in error
