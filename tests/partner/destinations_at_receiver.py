"""Destinations configured through the API to send to a receiver, and what their test sends left."""

from __future__ import annotations

import time

from delivery.models import Delivery
from destinations.models import Destination
from tests.partner.receiver_processes import Receiver, Receivers

URL = "/api/v1/destinations/"
OLD_KEY = "old-partner-key"
NEW_KEY = "new-partner-key"
CLIENT_ID = "aam client"
CLIENT_SECRET = "s3cret:&/+ é"


def configure(client, receiver: Receiver, **settings) -> Destination:
    """Create a destination pointing at `receiver` through the API."""
    body = {
        "name": f"partner-{receiver.port}-{time.monotonic_ns()}",
        "url": f"{receiver.url}aam",
        "client_id": "74323",
        "user_dpid": 20914,
        "aam_destination_id": 423,
        "retry_delay_ms": 50,
        **settings,
    }
    response = client.post(URL, body, format="json")
    assert response.status_code == 201, response.json()
    return Destination.objects.get(pk=response.json()["id"])


def send_test(client, destination: Destination) -> dict:
    response = client.post(f"{URL}{destination.pk}/test/", format="json")
    assert response.status_code == 200, response.content
    return response.json()


def last_test_delivery(destination: Destination) -> Delivery:
    return Delivery.objects.filter(destination=destination, kind="test").latest("id")


def attempts_of(delivery: Delivery) -> list[tuple[int | None, str | None]]:
    return list(delivery.attempts.order_by("number").values_list("status_code", "reason"))


def oauth_receiver(receivers: Receivers, *extra: str) -> Receiver:
    return receivers.start("--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET, *extra)


def configure_oauth(client, receiver: Receiver, *, token_url: str | None = None, **settings) -> Destination:
    credentials = {
        "auth_mode": "oauth2",
        "oauth_token_url": token_url or receiver.token_url,
        "oauth_client_id": CLIENT_ID,
        "oauth_client_secret": CLIENT_SECRET,
        **settings,
    }
    return configure(client, receiver, **credentials)
