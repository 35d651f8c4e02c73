"""Alert sends: claim the due ones, send each within its deadline, record the outcome, retry later.

A job claims at most `SENDS_PER_RUN` pending sends whose `next_try_at` has come (`FOR UPDATE SKIP
LOCKED`, so that two jobs never take the same one) and pushes their `next_try_at` past
`CLAIM_HOLD`, so that a job that dies mid-way leaves them to a later run. Sending happens outside
any transaction. The outcome is written only if the send is still this job's (its `next_try_at`
unchanged): a send that failed waits `retry_delay(attempts)` and goes again; one still undelivered
`GIVE_UP_AFTER` its alert was raised is marked failed. Every failure is logged.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.db import transaction
from django.utils import timezone

from delivery.alert_models import AlertChannel, AlertSend, AlertSendStatus
from delivery.alerts.channels import post_webhook, send_mail

logger = logging.getLogger("aamdest.alerts")

SENDS_PER_RUN = 10
CLAIM_HOLD = dt.timedelta(minutes=5)
GIVE_UP_AFTER = dt.timedelta(days=1)
FIRST_RETRY = dt.timedelta(seconds=30)
LONGEST_RETRY = dt.timedelta(hours=1)
ERROR_CHARS = 1000
SENDERS = {AlertChannel.WEBHOOK: post_webhook, AlertChannel.EMAIL: send_mail}


def retry_delay(attempts: int) -> dt.timedelta:
    """How long a send that failed `attempts` times waits: 30 s, doubling, at most an hour."""
    return min(FIRST_RETRY * (1 << min(max(attempts - 1, 0), 20)), LONGEST_RETRY)


def claim_due_sends(*, now: dt.datetime) -> list[AlertSend]:
    """Take the due pending sends (oldest first) for this job; they come back with their alert."""
    with transaction.atomic():
        ids = list(
            AlertSend.objects.filter(status=AlertSendStatus.PENDING, next_try_at__lte=now)
            .select_for_update(skip_locked=True)
            .order_by("next_try_at", "id")
            .values_list("id", flat=True)[:SENDS_PER_RUN]
        )
        AlertSend.objects.filter(pk__in=ids).update(next_try_at=now + CLAIM_HOLD)
    return list(AlertSend.objects.filter(pk__in=ids).select_related("alert__destination").order_by("id"))


def send_claimed(*, sends: list[AlertSend]) -> int:
    """Send each claimed send on its channel and record the outcome; returns how many went out."""
    sent = 0
    for send in sends:
        try:
            error = SENDERS[AlertChannel(send.channel)](send.alert)
        except Exception as unexpected:  # a bug must not leave the send held: record it, retry later
            logger.exception("alert %s: sending by %s failed unexpectedly", send.alert_id, send.channel)
            error = f"not sent: {unexpected.__class__.__name__}: {unexpected}"
        sent += record_outcome(send=send, error=error, now=timezone.now())
    return sent


def record_outcome(*, send: AlertSend, error: str | None, now: dt.datetime) -> int:
    """Write what happened to a claimed send (1 when it went out); nothing if another job took it since."""
    mine = AlertSend.objects.filter(pk=send.pk, status=AlertSendStatus.PENDING, next_try_at=send.next_try_at)
    attempts = send.attempts + 1
    alert = send.alert
    if error is None:
        mine.update(status=AlertSendStatus.SENT, attempts=attempts, sent_at=now, next_try_at=None,
                    last_error="")
        logger.info("alert %s (%s, destination %s) sent by %s", alert.pk, alert.event, alert.destination_id,
                    send.channel)
        return 1
    if now - alert.created_at >= GIVE_UP_AFTER:
        mine.update(status=AlertSendStatus.FAILED, attempts=attempts, last_error=error[:ERROR_CHARS],
                    next_try_at=None)
        logger.error("alert %s (%s, destination %s) not sent by %s after %d attempts, given up: %s",
                     alert.pk, alert.event, alert.destination_id, send.channel, attempts, error)
        return 0
    next_try_at = now + retry_delay(attempts)
    mine.update(attempts=attempts, last_error=error[:ERROR_CHARS], next_try_at=next_try_at)
    logger.warning("alert %s (%s, destination %s) not sent by %s (attempt %d), retrying at %s: %s",
                   alert.pk, alert.event, alert.destination_id, send.channel, attempts,
                   next_try_at.isoformat(), error)
    return 0
