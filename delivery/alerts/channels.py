"""What an alert says, and the two ways it goes out: a signed JSON POST and a mail (CONTRACT §7).

The body is `{"event", "destination": {"id", "name"}, "at", "detail"}` as compact UTF-8 JSON; the
webhook's `X-AAMDest-Signature` is Base64(HMAC-SHA256(AAMDEST_ALERT_SIGNING_KEY, body bytes)), the
same signature partners get (`destinations.signing.sign_body`). The POST goes through
`delivery.sending.http`, so the address policy and pinning of partners apply, within
`AAMDEST_ALERT_TIMEOUT_MS`, without redirects; any 2xx answer counts as received.
Each sender returns None when the alert went out, else why not (never raising for the network).
"""

from __future__ import annotations

import datetime as dt
import json
import smtplib
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage

from delivery.alert_models import Alert
from delivery.sending.http import HttpRequest, post
from destinations.signing import sign_body

SIGNATURE_HEADER = "X-AAMDest-Signature"
SIGNATURE_ALGORITHM = "sha256"


def alert_payload(alert: Alert) -> dict[str, Any]:
    """The alert as the webhook and the mail give it."""
    return {
        "event": alert.event,
        "destination": {"id": alert.destination_id, "name": alert.destination.name},
        "at": alert.at.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
        "detail": alert.detail,
    }


def alert_body(alert: Alert) -> bytes:
    return json.dumps(alert_payload(alert), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def webhook_headers(*, body: bytes, key: str) -> dict[str, str]:
    signature = sign_body(body=body, key=key, algorithm=SIGNATURE_ALGORITHM)
    return {"Content-Type": "application/json", SIGNATURE_HEADER: signature}


def post_webhook(alert: Alert) -> str | None:
    """POST the alert to AAMDEST_ALERT_WEBHOOK_URL; None when a 2xx answered, else what went wrong."""
    url, key = settings.AAMDEST_ALERT_WEBHOOK_URL, settings.AAMDEST_ALERT_SIGNING_KEY
    if not url or not key:
        return "not sent: AAMDEST_ALERT_WEBHOOK_URL is no longer set"
    body = alert_body(alert)
    request = HttpRequest(url=url, body=body, headers=webhook_headers(body=body, key=key),
                          timeout_ms=settings.AAMDEST_ALERT_TIMEOUT_MS)
    result = post(request)
    code = result.status_code
    if code is not None and 200 <= code < 300 and result.reason in (None, "status"):
        return None
    return result.error or f"HTTP {result.status_code}"


def send_mail(alert: Alert) -> str | None:
    """Mail the alert to AAMDEST_ALERT_EMAILS; None when the mail server took it, else its error."""
    destination = alert.destination
    reminder = "Reminder: " if alert.is_reminder else ""
    subject = f"[aamdest] {reminder}{alert.get_event_display()}: {destination.name}"
    text = (
        f"{alert.get_event_display()} for destination {destination.name} (id {destination.pk})\n"
        f"at {alert_payload(alert)['at']}\n\n{alert.detail}\n\n"
        f"{json.dumps(alert_payload(alert), indent=2, ensure_ascii=False)}\n"
    )
    if not settings.AAMDEST_ALERT_EMAILS:
        return "not sent: AAMDEST_ALERT_EMAILS is no longer set"
    message = EmailMessage(subject=subject, body=text, to=settings.AAMDEST_ALERT_EMAILS)
    try:
        message.send()
    except (smtplib.SMTPException, OSError) as error:
        return f"mail not sent: {error.__class__.__name__}: {error}"
    return None
