"""Repeated failed logins lock the account out from that address for a while (CONTRACT §6; django-axes)."""

from __future__ import annotations

import pytest
import time_machine
from django.utils import timezone

pytestmark = pytest.mark.django_db

PASSWORD = "the-right-password"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("ops", password=PASSWORD, is_staff=True, is_superuser=True)


def log_in(client, url: str, password: str, username: str = "ops"):
    return client.post(url, {"username": username, "password": password})


@pytest.mark.parametrize("url", ["/admin/login/", "/accounts/login/"])
def test_five_failures_lock_the_account_out_even_with_the_right_password(client, staff, url):
    answers = [log_in(client, url, "wrong").status_code for _ in range(5)]

    locked = log_in(client, url, PASSWORD)

    assert answers == [200, 200, 200, 200, 429]  # the form again with its error, then the lockout
    assert locked.status_code == 429
    assert "_auth_user_id" not in client.session


def test_the_lockout_ends_after_its_cool_off(client, staff):
    start = timezone.now()
    with time_machine.travel(start, tick=False):
        for _ in range(5):
            log_in(client, "/accounts/login/", "wrong")
        assert log_in(client, "/accounts/login/", PASSWORD).status_code == 429
    with time_machine.travel(start + timezone.timedelta(minutes=16), tick=False):
        assert log_in(client, "/accounts/login/", PASSWORD).status_code == 302


def test_an_address_spraying_many_usernames_is_locked_out(client, staff, django_user_model):
    django_user_model.objects.create_user("other", password=PASSWORD, is_staff=True)
    for name in ("a", "b", "c", "d", "e"):
        log_in(client, "/accounts/login/", "wrong", username=name)

    assert log_in(client, "/accounts/login/", PASSWORD, username="other").status_code == 429


def test_an_account_attacked_from_many_addresses_is_locked_out(client, staff):
    for last in range(1, 6):
        wrong = {"username": "ops", "password": "wrong"}
        client.post("/accounts/login/", wrong, REMOTE_ADDR=f"198.51.100.{last}")

    assert log_in(client, "/accounts/login/", PASSWORD).status_code == 429


def test_behind_a_shared_proxy_only_the_pair_is_locked(client, staff, django_user_model, settings):
    settings.AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]  # AAMDEST_LOGIN_LOCKOUT_BY=account+source
    django_user_model.objects.create_user("other", password=PASSWORD, is_staff=True)
    for _ in range(5):
        log_in(client, "/accounts/login/", "wrong")

    assert log_in(client, "/accounts/login/", PASSWORD, username="other").status_code == 302


def test_fewer_failures_than_the_limit_do_not_lock(client, staff):
    for _ in range(4):
        log_in(client, "/accounts/login/", "wrong")

    assert log_in(client, "/accounts/login/", PASSWORD).status_code == 302
