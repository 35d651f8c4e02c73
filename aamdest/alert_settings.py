"""The alert and e-mail settings (CONTRACT §7), read by `aamdest.settings` with the rest.

Each value comes from the environment through a checked reader of `aamdest.environment`:
a bad value stops the program at start with a message naming the variable.
"""

from __future__ import annotations

import os

from django.core.exceptions import ImproperlyConfigured

from aamdest.environment import env_bool, env_emails, env_int, env_webhook_url

__all__ = [
    "AAMDEST_ALERT_BACKLOG_AGE_S", "AAMDEST_ALERT_EMAILS", "AAMDEST_ALERT_REMIND_HOURS",
    "AAMDEST_ALERT_SIGNING_KEY", "AAMDEST_ALERT_TIMEOUT_MS", "AAMDEST_ALERT_WEBHOOK_URL",
    "DEFAULT_FROM_EMAIL", "EMAIL_HOST", "EMAIL_HOST_PASSWORD", "EMAIL_HOST_USER", "EMAIL_PORT",
    "EMAIL_TIMEOUT", "EMAIL_USE_SSL", "EMAIL_USE_TLS", "SERVER_EMAIL",
]

# Where alerts go: a signed JSON POST and/or mail; neither set: alerts are only recorded (admin, /metrics).
AAMDEST_ALERT_WEBHOOK_URL = env_webhook_url(
    "AAMDEST_ALERT_WEBHOOK_URL",
    allow_http=env_bool("AAMDEST_ALLOW_HTTP", False),
    allow_private=env_bool("AAMDEST_ALLOW_PRIVATE_NETWORKS", False),
)
AAMDEST_ALERT_SIGNING_KEY = os.environ.get("AAMDEST_ALERT_SIGNING_KEY", "").strip() or None
if AAMDEST_ALERT_WEBHOOK_URL and not AAMDEST_ALERT_SIGNING_KEY:
    raise ImproperlyConfigured(
        "AAMDEST_ALERT_SIGNING_KEY is not set: the alert webhook's requests are signed with it "
        "(python -c 'import secrets; print(secrets.token_urlsafe(32))')."
    )
AAMDEST_ALERT_EMAILS = env_emails("AAMDEST_ALERT_EMAILS")
# A destination's backlog is stale once its oldest pending device waits longer than this.
AAMDEST_ALERT_BACKLOG_AGE_S = env_int("AAMDEST_ALERT_BACKLOG_AGE_S", 600, minimum=10, maximum=7 * 86_400)
AAMDEST_ALERT_REMIND_HOURS = env_int("AAMDEST_ALERT_REMIND_HOURS", 6, minimum=1, maximum=24 * 30)
# The webhook's whole-exchange deadline, as for partners.
AAMDEST_ALERT_TIMEOUT_MS = env_int("AAMDEST_ALERT_TIMEOUT_MS", 5000, minimum=100, maximum=30_000)

# Django's e-mail backend (SMTP) for the alert mails.
EMAIL_HOST = os.environ.get("EMAIL_HOST", "").strip() or "localhost"
EMAIL_PORT = env_int("EMAIL_PORT", 25, minimum=1, maximum=65_535)
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL are both set: choose one (STARTTLS or TLS).")
# A mail server that does not answer must not hold the maintenance worker: seconds per SMTP operation.
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10, minimum=1, maximum=120)
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "").strip() or "aamdest@localhost"
SERVER_EMAIL = DEFAULT_FROM_EMAIL
