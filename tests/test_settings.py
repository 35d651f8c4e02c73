"""Bad settings stop the program at start with a message naming the variable and why (CONTRACT §6)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
GOOD = {
    "DJANGO_DEBUG": "0",
    "DJANGO_SECRET_KEY": "a-production-secret-key-for-this-test",
    "AAMDEST_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/test",
}


def start_django(**overrides: str | None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AAMDEST_", "DJANGO_"))}
    env.update(GOOD)
    for key, value in overrides.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return subprocess.run(
        [sys.executable, "-c", "import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', "
         "'aamdest.settings'); django.setup()"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def test_good_production_settings_start():
    assert start_django().returncode == 0


@pytest.mark.parametrize(("pooling", "disabled"), [("1", "True"), ("0", "False")])
def test_transaction_pooling_turns_off_server_side_cursors(pooling, disabled):
    probe = ("import django, os; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'aamdest.settings'); "
             "django.setup(); from django.db import connection; "
             "print(connection.settings_dict['DISABLE_SERVER_SIDE_CURSORS'])")
    env = {key: value for key, value in os.environ.items() if not key.startswith(("AAMDEST_", "DJANGO_"))}
    env.update(GOOD, AAMDEST_DB_TRANSACTION_POOLING=pooling)

    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=60)

    assert result.stdout.split()[-1:] == [disabled], result.stderr


def test_rabbitmq_is_a_broker_when_redis_is_named_for_coordination():
    result = start_django(CELERY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//",
                          AAMDEST_REDIS_URL="redis://127.0.0.1:6379/0")

    assert result.returncode == 0, result.stderr


# The alert settings (CONTRACT §7): the webhook's URL under the partners' address policy, its key, mail.
_KEYED = {"AAMDEST_ALERT_SIGNING_KEY": "alert-key"}
_WEBHOOK = "AAMDEST_ALERT_WEBHOOK_URL"
ALERT_SETTINGS = [
    ({**_KEYED, _WEBHOOK: "http://alerts.example.com/hook"}, _WEBHOOK),
    ({**_KEYED, _WEBHOOK: "https://127.0.0.1/hook"}, _WEBHOOK),
    ({**_KEYED, _WEBHOOK: "https://10.1.2.3/hook"}, _WEBHOOK),
    ({**_KEYED, _WEBHOOK: "https://localhost/hook"}, _WEBHOOK),
    ({**_KEYED, _WEBHOOK: "https://u:pw@alerts.example.com/"}, _WEBHOOK),
    ({**_KEYED, _WEBHOOK: "https://alerts.example.com:99999/"}, _WEBHOOK),
    ({**_KEYED, _WEBHOOK: "alerts.example.com/hook"}, _WEBHOOK),
    ({"AAMDEST_ALERT_WEBHOOK_URL": "https://alerts.example.com/hook"}, "AAMDEST_ALERT_SIGNING_KEY"),
    ({"AAMDEST_ALERT_EMAILS": "ops@example.com, nobody"}, "AAMDEST_ALERT_EMAILS"),
    ({"AAMDEST_ALERT_BACKLOG_AGE_S": "soon"}, "AAMDEST_ALERT_BACKLOG_AGE_S"),
    ({"AAMDEST_ALERT_BACKLOG_AGE_S": "5"}, "AAMDEST_ALERT_BACKLOG_AGE_S"),
    ({"AAMDEST_ALERT_REMIND_HOURS": "0"}, "AAMDEST_ALERT_REMIND_HOURS"),
    ({"AAMDEST_ALERT_TIMEOUT_MS": "0"}, "AAMDEST_ALERT_TIMEOUT_MS"),
    ({"EMAIL_PORT": "smtp"}, "EMAIL_PORT"),
    ({"EMAIL_USE_TLS": "1", "EMAIL_USE_SSL": "1"}, "EMAIL_USE_TLS"),
]


def test_alert_settings_start_when_good():
    result = start_django(AAMDEST_ALERT_WEBHOOK_URL="https://alerts.example.com/aamdest?token=x",
                          AAMDEST_ALERT_SIGNING_KEY="alert-key",
                          AAMDEST_ALERT_EMAILS="ops@example.com, a@b.org",
                          AAMDEST_ALERT_BACKLOG_AGE_S="900", AAMDEST_ALERT_REMIND_HOURS="12",
                          EMAIL_HOST="smtp.example.com", EMAIL_PORT="587", EMAIL_USE_TLS="1")

    assert result.returncode == 0, result.stderr


def test_a_private_alert_webhook_starts_when_private_networks_are_allowed():
    result = start_django(AAMDEST_ALERT_WEBHOOK_URL="https://127.0.0.1:8443/hook",
                          AAMDEST_ALERT_SIGNING_KEY="k", AAMDEST_ALLOW_PRIVATE_NETWORKS="1")

    assert result.returncode == 0, result.stderr


def test_the_webhook_url_is_not_repeated_in_the_message():
    result = start_django(AAMDEST_ALERT_WEBHOOK_URL="https://127.0.0.1/hook?token=secret-token",
                          AAMDEST_ALERT_SIGNING_KEY="k")

    assert result.returncode != 0
    assert "secret-token" not in result.stderr


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"DJANGO_DEBUG": "maybe"}, "DJANGO_DEBUG"),
        ({"DJANGO_SECRET_KEY": None}, "DJANGO_SECRET_KEY"),
        ({"AAMDEST_ENCRYPTION_KEYS": None}, "AAMDEST_ENCRYPTION_KEYS"),
        ({"AAMDEST_ENCRYPTION_KEYS": "not-a-fernet-key"}, "AAMDEST_ENCRYPTION_KEYS"),
        ({"AAMDEST_DELIVERY_LOG_DAYS": "thirty"}, "AAMDEST_DELIVERY_LOG_DAYS"),
        ({"AAMDEST_DELIVERY_LOG_DAYS": "0"}, "AAMDEST_DELIVERY_LOG_DAYS"),
        ({"AAMDEST_LOG_FORMAT": "xml"}, "AAMDEST_LOG_FORMAT"),
        ({"AAMDEST_ALLOW_HTTP": "perhaps"}, "AAMDEST_ALLOW_HTTP"),
        ({"AAMDEST_CA_BUNDLE": "/nonexistent/ca.pem"}, "AAMDEST_CA_BUNDLE"),
        ({"CELERY_BROKER_URL": "amqp://guest@127.0.0.1//"}, "AAMDEST_REDIS_URL"),
        ({"CELERY_BROKER_URL": "sqs://127.0.0.1"}, "CELERY_BROKER_URL"),
        ({"AAMDEST_BEAT_LEASE_S": "1"}, "AAMDEST_BEAT_LEASE_S"),
        ({"AAMDEST_REDIS_URL": "memcached://127.0.0.1"}, "AAMDEST_REDIS_URL"),
        ({"DATABASE_URL": "nosuchdb://x"}, "DATABASE_URL"),
        ({"AAMDEST_WORKER_THREADS": "4"}, "AAMDEST_WORKER_THREADS"),
        ({"AAMDEST_EVENTS_THROTTLE_RATE": "fast"}, "AAMDEST_EVENTS_THROTTLE_RATE"),
        ({"AAMDEST_EVENTS_THROTTLE_RATE": "0/s"}, "AAMDEST_EVENTS_THROTTLE_RATE"),
        ({"DJANGO_SECURE_PROXY_SSL_HEADER": "X-Forwarded-Proto"}, "DJANGO_SECURE_PROXY_SSL_HEADER"),
        ({"AAMDEST_LOGIN_FAILURE_LIMIT": "0"}, "AAMDEST_LOGIN_FAILURE_LIMIT"),
        ({"AAMDEST_LOGIN_LOCKOUT_BY": "ip"}, "AAMDEST_LOGIN_LOCKOUT_BY"),
        *ALERT_SETTINGS,
    ],
)
def test_a_bad_setting_stops_the_start_naming_the_variable(overrides, named):
    # When Django starts with one bad setting
    result = start_django(**overrides)

    # Then it stops, and the message names the variable
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert named in result.stderr.strip().splitlines()[-1]
