"""How alerts go out: a signed POST to a local HTTPS receiver, mail (locmem), retries (CONTRACT §7)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import logging
import time

import pytest
from django.core import mail
from django.utils import timezone

from delivery.alert_models import Alert, AlertChannel, AlertSend, AlertSendStatus
from delivery.alerts.job import run_alerts
from delivery.alerts.sending import retry_delay
from destinations.models import ChangeAction
from partner.verification import Signing
from tests.delivery.alerts.conftest import EMAILS, SIGNING_KEY, transition
from tests.local_partner import Reply
from tests.ports import free_port

pytestmark = pytest.mark.django_db


def _send(channel: str) -> AlertSend:
    return AlertSend.objects.get(channel=channel)


def test_an_alert_is_posted_signed_and_mailed_once(receiver, failing_destination):
    # Given the circuit opened
    change = transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    # When the job runs, twice
    run_alerts()
    run_alerts()

    # Then the receiver got one POST with the body of CONTRACT §7
    [request] = receiver.wait_for_requests(1)
    assert json.loads(request.body) == {
        "event": "circuit_opened",
        "destination": {"id": failing_destination.pk, "name": "acme"},
        "at": change.created_at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "detail": "10 consecutive failed attempts (threshold 10); last error: HTTP 503",
    }
    assert request.headers["Content-Type"] == "application/json"
    # signed: Base64(HMAC-SHA256(key, raw body)), as the README's snippet checks it
    mac = hmac.new(SIGNING_KEY.encode(), request.body, hashlib.sha256).digest()
    expected = base64.b64encode(mac).decode()
    assert request.headers["X-AAMDest-Signature"] == expected
    assert Signing(keys=(SIGNING_KEY,), algorithm="sha256", header="X-AAMDest-Signature").is_signed(
        headers=request.headers, body=request.body
    )
    assert not Signing(keys=("another key",), algorithm="sha256", header="X-AAMDest-Signature").is_signed(
        headers=request.headers, body=request.body
    )
    # And one mail to every address
    [message] = mail.outbox
    assert message.to == EMAILS
    assert message.subject == "[aamdest] Circuit opened: acme"
    assert "10 consecutive failed attempts" in message.body
    # And both sends are recorded as sent, once
    for channel in (AlertChannel.WEBHOOK, AlertChannel.EMAIL):
        send = _send(channel)
        assert (send.status, send.attempts, send.last_error, send.next_try_at) == ("sent", 1, "", None)
    time.sleep(0.2)
    assert len(receiver.requests) == 1


def test_a_receiver_that_is_down_is_retried_and_logged_then_delivered(receiver, failing_destination, caplog):
    # Given a receiver answering 503 once, then 200
    receiver.script = [Reply(status=503, body=b"down"), Reply(status=200)]
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    # When the job runs: the POST fails, is logged and waits 30 s
    with caplog.at_level(logging.WARNING, logger="aamdest.alerts"):
        run_alerts()
    send = _send(AlertChannel.WEBHOOK)
    assert (send.status, send.attempts) == ("pending", 1)
    assert "503" in send.last_error
    assert dt.timedelta(seconds=29) < send.next_try_at - timezone.now() <= dt.timedelta(seconds=30)
    assert any("not sent by webhook (attempt 1)" in record.getMessage() for record in caplog.records)
    assert _send(AlertChannel.EMAIL).status == "sent"  # the other channel does not wait for it

    # When the job runs again before then, nothing is sent
    run_alerts()
    assert len(receiver.requests) == 1

    # When its next try comes, the receiver is back: delivered
    run_alerts(now=timezone.now() + dt.timedelta(seconds=31))
    send.refresh_from_db()
    assert (send.status, send.attempts, send.last_error) == ("sent", 2, "")
    assert len(receiver.requests) == 2
    assert receiver.requests[0].body == receiver.requests[1].body  # the same alert, the same body


def test_a_refused_connection_is_retried(receiver, failing_destination, settings):
    settings.AAMDEST_ALERT_WEBHOOK_URL = f"https://localhost:{free_port()}/alerts"
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    run_alerts()

    send = _send(AlertChannel.WEBHOOK)
    assert (send.status, send.attempts) == ("pending", 1)
    assert send.last_error


def test_a_stalled_receiver_is_given_up_on_at_the_deadline(receiver, failing_destination, settings,
                                                            stalling_server):
    settings.AAMDEST_ALERT_WEBHOOK_URL = stalling_server.url
    settings.AAMDEST_ALERT_TIMEOUT_MS = 500
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    started = time.monotonic()
    run_alerts()

    assert time.monotonic() - started < 3
    send = _send(AlertChannel.WEBHOOK)
    assert (send.status, send.attempts) == ("pending", 1)


def test_a_loopback_webhook_is_refused_unless_private_networks_are_allowed(receiver, failing_destination,
                                                                           settings):
    # Given the address policy of partners (AAMDEST_ALLOW_PRIVATE_NETWORKS off)
    settings.AAMDEST_ALLOW_PRIVATE_NETWORKS = False
    settings.AAMDEST_ALERT_WEBHOOK_URL = f"https://127.0.0.1:{receiver.port}/alerts"
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    run_alerts()

    # Then nothing reaches the loopback receiver, and the send says why
    time.sleep(0.2)
    assert receiver.requests == []
    send = _send(AlertChannel.WEBHOOK)
    assert send.status == "pending"
    assert "loopback" in send.last_error


def test_a_mail_server_that_is_down_is_retried(receiver, failing_destination, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)

    run_alerts()

    send = _send(AlertChannel.EMAIL)
    assert (send.status, send.attempts) == ("pending", 1)
    assert send.last_error.startswith("mail not sent: ConnectionRefusedError")
    assert _send(AlertChannel.WEBHOOK).status == "sent"


def test_a_send_still_failing_a_day_later_is_given_up_and_logged(receiver, failing_destination, caplog):
    receiver.script = [Reply(status=500)]
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)
    run_alerts()
    Alert.objects.update(created_at=timezone.now() - dt.timedelta(days=1))

    with caplog.at_level(logging.ERROR, logger="aamdest.alerts"):
        run_alerts(now=timezone.now() + dt.timedelta(minutes=1))

    send = _send(AlertChannel.WEBHOOK)
    assert (send.status, send.attempts, send.next_try_at) == (AlertSendStatus.FAILED, 2, None)
    assert any("given up" in record.getMessage() for record in caplog.records)


def test_a_job_takes_no_send_another_job_holds(receiver, failing_destination):
    # Given a send taken by a job that has not finished (its next try pushed past the hold)
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)
    run_alerts()
    AlertSend.objects.filter(channel=AlertChannel.WEBHOOK).update(
        status="pending", next_try_at=timezone.now() + dt.timedelta(minutes=5)
    )
    count = len(receiver.requests)

    # When another job runs, it leaves it alone
    run_alerts()

    assert len(receiver.requests) == count


def test_the_retry_delay_doubles_from_30_seconds_up_to_an_hour():
    assert [retry_delay(attempts).total_seconds() for attempts in (1, 2, 3, 4, 7, 8, 50)] == [
        30, 60, 120, 240, 1920, 3600, 3600,
    ]
