"""The logging filter that masks credentials in every record (CONTRACT §3: no secret in the logs)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aamdest.logging import JsonFormatter
from aamdest.redaction import MASK, RedactSecrets, redact

TOKEN = "eyJhbGciOi.tok-123_abc"
PROJECT = Path(__file__).resolve().parents[1]
SIGNATURE = "WJzevEtYmeOolVtcXGrcA3KKiTQMTZUfKzCw/ZNz9YU="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Authorization: Bearer {TOKEN}", f"Authorization: {MASK}"),
        ("authorization: Basic YWFtOnNlY3JldA==", f"authorization: {MASK}"),
        (f"Proxy-Authorization: Bearer {TOKEN}", f"Proxy-Authorization: {MASK}"),
        (f"sent Bearer {TOKEN} along", f"sent Bearer {MASK} along"),
        ("Basic YWFtOnNlY3JldA==", f"Basic {MASK}"),
        (f"X-Signature: {SIGNATURE}", f"X-Signature: {MASK}"),
        (
            f"X-Partner-Signature-New: {SIGNATURE}\r\nX-Other: kept",
            f"X-Partner-Signature-New: {MASK}\r\nX-Other: kept",
        ),
        (
            f"{{'Authorization': 'Bearer {TOKEN}', 'X-Signature': '{SIGNATURE}', 'Accept': 'json'}}",
            f"{{'Authorization': '{MASK}', 'X-Signature': '{MASK}', 'Accept': 'json'}}",
        ),
        (
            f'{{"access_token": "{TOKEN}", "token_type": "Bearer", "expires_in": 60}}',
            f'{{"access_token": "{MASK}", "token_type": "Bearer", "expires_in": 60}}',
        ),
        (
            "grant_type=client_credentials&client_id=me&client_secret=s3%3Acr",
            f"grant_type=client_credentials&client_id=me&client_secret={MASK}",
        ),
        ("signing_key='k1' new_signing_key=\"k 2\"", f"signing_key='{MASK}' new_signing_key=\"{MASK}\""),
    ],
)
def test_it_masks_credentials_in_every_usual_spelling(text, expected):
    assert redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "token endpoint failed: partner answered 401 Unauthorized (invalid_client)",
        "delivery 7 attempt 1 to Acme: failed (status): partner answered 403 Forbidden in 12 ms",
        "oauth_token_url: https://auth.example.com/token",
        "HTTP Basic (RFC 6749 §2.3.1)",
    ],
)
def test_it_leaves_messages_without_credentials_alone(text):
    assert redact(text) == text


def test_masking_twice_changes_nothing_more():
    once = redact(f"Authorization: Bearer {TOKEN}; X-Signature={SIGNATURE}")

    assert redact(once) == once


def record(msg: str, *args, exc_info=None, **extra) -> logging.LogRecord:
    made = logging.LogRecord("aamdest.test", logging.WARNING, __file__, 1, msg, args or None, exc_info)
    made.__dict__.update(extra)
    return made


def test_the_filter_masks_the_formatted_message_and_keeps_every_record():
    given = record("posting with headers %s", {"Authorization": f"Bearer {TOKEN}"})

    kept = RedactSecrets().filter(given)

    assert kept is True
    assert TOKEN not in given.getMessage() and MASK in given.getMessage()


def test_the_filter_masks_extras_walking_dicts_and_lists_and_keeps_other_values():
    given = record(
        "attempt",
        headers={"Authorization": f"Bearer {TOKEN}", "X-Signature": SIGNATURE, "Accept": "json"},
        lines=[f"Authorization: Bearer {TOKEN}"],
        status_code=401,
    )

    RedactSecrets().filter(given)

    assert given.headers == {"Authorization": MASK, "X-Signature": MASK, "Accept": "json"}
    assert given.lines == [f"Authorization: {MASK}"]
    assert given.status_code == 401


def test_the_filter_masks_the_traceback_of_a_logged_exception():
    try:
        raise RuntimeError(f"partner refused Authorization: Bearer {TOKEN}")
    except RuntimeError as error:
        given = record("send failed", exc_info=(type(error), error, error.__traceback__))

    RedactSecrets().filter(given)

    text = logging.Formatter().format(given)
    json_text = JsonFormatter().format(given)
    assert "RuntimeError" in text and TOKEN not in text
    assert "RuntimeError" in json.loads(json_text)["exception"] and TOKEN not in json_text


def test_the_settings_install_it_on_the_console_handler_in_text_and_json():
    # Given the handler LOGGING set up on the root logger
    [console] = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)
                 and any(isinstance(f, RedactSecrets) for f in h.filters)]
    stream = io.StringIO()
    previous = console.setStream(stream)
    formatter = console.formatter
    try:
        # When a record with a credential goes through it, as text then as JSON
        for current in (logging.Formatter("%(message)s"), JsonFormatter()):
            console.setFormatter(current)
            console.handle(record("retrying with Authorization: Bearer %s", TOKEN, signature=SIGNATURE))
    finally:
        console.setStream(previous)
        console.setFormatter(formatter)

    # Then neither line holds it
    written = stream.getvalue()
    assert written.count("Authorization: [redacted]") == 2
    assert TOKEN not in written and SIGNATURE not in written


WORKER_LOGGING = """
import logging
import django

django.setup()
from celery.utils.log import get_task_logger
from aamdest.celery import app

app.log.setup(loglevel=logging.INFO, redirect_stdouts=False)  # what `celery worker` and `beat` do
logging.getLogger("aamdest.delivery").warning("retrying with Authorization: Bearer tok-root-123")
get_task_logger("delivery.tasks").warning('token answer {"access_token": "tok-task-456"}')
"""


def test_celery_workers_mask_credentials_on_the_handlers_they_install():
    # Given a process that sets up logging as a Celery worker does (replacing Django's handlers)
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aamdest.settings", "DJANGO_DEBUG": "1"}

    # When it logs credentials through the root and the task loggers
    command = [sys.executable, "-c", WORKER_LOGGING]
    done = subprocess.run(command, cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60)

    # Then both lines went out, masked
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "retrying with Authorization: [redacted]" in output
    assert '"access_token": "[redacted]"' in output
    assert "tok-root-123" not in output and "tok-task-456" not in output
