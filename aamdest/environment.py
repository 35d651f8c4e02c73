"""Read one environment variable each, failing loudly with its name when its value cannot be used.

Used by the settings and by gunicorn's configuration (which reads them before Django starts).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from typing import Any
from urllib.parse import urlsplit

import dj_database_url
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.core.validators import validate_email

from destinations.addresses import parse_ip_literal, refused_kind

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean: use 1 or 0.")


def env_int(name: str, default: int, *, minimum: int, maximum: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not an integer.") from None
    if not minimum <= value <= maximum:
        raise ImproperlyConfigured(f"{name}={value} is out of range ({minimum}..{maximum}).")
    return value


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = os.environ.get(name, default).strip().lower() or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name}={value!r} must be one of {', '.join(choices)}.")
    return value


def env_proxy_header(name: str) -> tuple[str, str] | None:
    """`HEADER,VALUE`, e.g. `X-Forwarded-Proto,https`: the proxy's header that says the request was HTTPS."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    header, _, value = (part.strip() for part in raw.partition(","))
    if not header or not value:
        raise ImproperlyConfigured(f"{name}={raw!r} must be HEADER,VALUE (e.g. X-Forwarded-Proto,https).")
    return "HTTP_" + header.upper().replace("-", "_"), value


# --- Values checked beyond their type ---------------------------------------------------------

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_RATE = re.compile(r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)")


def env_database(name: str, *, default: str) -> dict[str, Any]:
    """Django's settings of the database `name` points at (`default` when unset)."""
    try:
        database: dict[str, Any] = dict(dj_database_url.parse(
            os.environ.get(name) or default, conn_max_age=60, conn_health_checks=True
        ))
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} cannot be used: {exc}") from None
    if database["ENGINE"] == "django.db.backends.sqlite3":
        # Several processes (web, worker, scheduler) share the file: wait for locks
        # instead of failing, and let readers run beside the writer.
        database["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
        database["CONN_MAX_AGE"] = 0
    return database


def env_broker_url(name: str, default: str) -> str:
    """A Redis or RabbitMQ URL for Celery's broker."""
    url = os.environ.get(name, default)
    if not url.startswith((*REDIS_SCHEMES, "amqp://", "amqps://")):
        raise ImproperlyConfigured(
            f"{name} must be a Redis (redis://, rediss://, unix://) or RabbitMQ (amqp://, amqps://) URL."
        )
    return url


def env_redis_url(name: str, *, broker_url: str) -> str:
    """The coordination Redis: `name`, else the broker when the broker is Redis."""
    url = os.environ.get(name, "").strip()
    if not url:
        if not broker_url.startswith(REDIS_SCHEMES):
            raise ImproperlyConfigured(
                f"{name} is not set: with a RabbitMQ CELERY_BROKER_URL, aamdest still needs Redis "
                f"for locks and concurrency slots (e.g. {name}=redis://127.0.0.1:6379/0)."
            )
        url = broker_url
    if not url.startswith(REDIS_SCHEMES):
        raise ImproperlyConfigured(f"{name} must be a redis://, rediss:// or unix:// URL.")
    return url


def env_rate(name: str) -> str | None:
    """A DRF throttle rate such as `50/s` or `1000/min`, or None when unset."""
    rate = os.environ.get(name, "").strip() or None
    if rate and not _RATE.fullmatch(rate):
        raise ImproperlyConfigured(f"{name}={rate!r} must be N/s, N/min, N/hour or N/day.")
    return rate


def env_fernet_keys(name: str, *, debug: bool, secret_key: str) -> list[str]:
    """Fernet keys, the first one encrypting; development derives one from the secret key."""
    keys = env_list(name, [])
    if not keys:
        if not debug:
            raise ImproperlyConfigured(
                f"{name} is not set: production must set it to one or more Fernet keys "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')."
            )
        keys = [base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()).decode()]
    for key in keys:
        try:
            Fernet(key)
        except (ValueError, TypeError):
            raise ImproperlyConfigured(
                f"{name} holds a value that is not a Fernet key (32 url-safe base64-encoded bytes)."
            ) from None
    return keys


def env_emails(name: str) -> list[str]:
    """Comma-separated e-mail addresses; empty when unset."""
    addresses = env_list(name, [])
    for address in addresses:
        try:
            validate_email(address)
        except ValidationError:
            raise ImproperlyConfigured(f"{name} holds {address!r}, which is not an e-mail address.") from None
    return addresses


def env_webhook_url(name: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """An https:// URL aamdest may post to (CONTRACT §3.4's policy, without resolving), or None when unset.

    A literal address that is not public and the loopback names are refused here, unless
    `allow_private`; the addresses a name resolves to are checked at every send, as for partners.
    The URL itself is never repeated in a message: a webhook's path often holds a token.
    """
    url = os.environ.get(name, "").strip()
    if not url:
        return None
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as error:
        raise ImproperlyConfigured(f"{name} is not a valid URL: {error}.") from None
    if parts.scheme not in (("https", "http") if allow_http else ("https",)):
        hint = "" if allow_http else " (http:// needs AAMDEST_ALLOW_HTTP=1)"
        raise ImproperlyConfigured(f"{name} must start with https://{hint}.")
    if parts.username is not None or parts.password is not None:
        raise ImproperlyConfigured(f"{name} must not carry a user name or password.")
    host = parts.hostname or ""
    if not host or any(ch.isspace() or ord(ch) < 32 for ch in url) or not url.isascii():
        raise ImproperlyConfigured(f"{name} is not a valid URL: no host, spaces or non-ASCII characters.")
    literal = parse_ip_literal(host)
    kind = refused_kind(literal) if literal is not None else None
    is_loopback_name = host.rstrip(".") == "localhost" or host.rstrip(".").endswith(".localhost")
    if (kind or is_loopback_name) and not allow_private:
        raise ImproperlyConfigured(
            f"{name} names a {kind or 'loopback'} host; aamdest only sends to public addresses "
            "(AAMDEST_ALLOW_PRIVATE_NETWORKS=1 lifts this in development)."
        )
    return url
