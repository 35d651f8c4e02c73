"""The events endpoint can be throttled per token (AAMDEST_EVENTS_THROTTLE_RATE); off by default."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.core.cache import caches
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db
URL = "/api/v1/events/"


@pytest.fixture(autouse=True)
def fresh_counts():
    caches["throttle"].clear()
    yield
    caches["throttle"].clear()


def token_client(django_user_model, name: str) -> APIClient:
    user = django_user_model.objects.create_user(name)
    user.groups.add(Group.objects.get(name="operator"))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    return client


def post_empty(client: APIClient):
    return client.post(URL, b"[]", content_type="application/json")


def test_without_a_rate_nothing_is_throttled(django_user_model):
    client = token_client(django_user_model, "feeder")

    assert {post_empty(client).status_code for _ in range(30)} == {202}


def test_a_rate_limits_each_token_on_its_own(django_user_model, settings):
    settings.AAMDEST_EVENTS_THROTTLE_RATE = "3/min"
    first, second = token_client(django_user_model, "first"), token_client(django_user_model, "second")

    answers = [post_empty(first).status_code for _ in range(4)]
    refused = post_empty(first)

    assert answers == [202, 202, 202, 429]
    assert refused.status_code == 429 and int(refused["Retry-After"]) > 0
    assert post_empty(second).status_code == 202
