"""AAMDEST_METRICS_TOKEN protects /metrics (CONTRACT §6): a scrape carries it as a bearer token."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db
TOKEN = "scrape-token-0123456789"


def test_without_a_token_configured_anyone_may_scrape(client):
    assert client.get("/metrics").status_code == 200


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer "])
def test_with_a_token_configured_other_scrapes_are_refused(client, settings, authorization):
    settings.AAMDEST_METRICS_TOKEN = TOKEN
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization else {}

    response = client.get("/metrics", **headers)

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert b"aamdest_" not in response.content


def test_the_right_bearer_token_reads_the_metrics(client, settings):
    settings.AAMDEST_METRICS_TOKEN = TOKEN

    response = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 200
    assert b"aamdest_metrics_redis_up" in response.content
