"""Rules a destination's configuration must satisfy (CONTRACT §2, §3).

The REST API and the admin both call these, so that a destination refused by
one is refused by the other with the same message, naming the same field.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from destinations.models import AuthMode, Destination

# What an operator configures on a destination, in the API's and the admin's order.
# The rotation fields are absent on purpose: a rotation goes through its own actions.
CONFIGURABLE_FIELDS = (
    "name",
    "url",
    "client_id",
    "user_dpid",
    "aam_destination_id",
    "enabled",
    "realtime",
    "batch_interval_hours",
    "max_users_per_request",
    "max_wait_ms",
    "timeout_ms",
    "max_retries",
    "retry_delay_ms",
    "auth_mode",
    "signing_algorithm",
    "signing_header",
    "signing_key",
    "oauth_token_url",
    "oauth_client_id",
    "oauth_client_secret",
    "oauth_scope",
    "oauth_client_auth",
    # The circuit breaker's settings (CONTRACT §7); its state is read-only.
    "circuit_breaker",
    "circuit_failure_threshold",
)

# An HTTP header name is an RFC 9110 token.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Headers aamdest sets itself: a signature there would replace or corrupt them.
_RESERVED_HEADERS = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "content-type",
        "host",
        "transfer-encoding",
        "user-agent",
        "x-aamdest-delivery-id",
    }
)
# Room for the "-New" suffix of the rotation header within the column's 100 characters.
_MAX_HEADER_LENGTH = 96


def validate_header_name(value: str) -> None:
    """Raise ValidationError unless `value` can name the signature header."""
    if not _HEADER_NAME.fullmatch(value or ""):
        raise ValidationError(
            "Enter a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~, no spaces or colons).",
            code="invalid_header",
        )
    if len(value) > _MAX_HEADER_LENGTH:
        raise ValidationError(f"Use at most {_MAX_HEADER_LENGTH} characters.", code="invalid_header")
    if value.lower() in _RESERVED_HEADERS:
        raise ValidationError(
            f"{value} is set by aamdest itself; choose another header.", code="reserved_header"
        )


def find_configuration_errors(
    *, current: Destination | None, changes: Mapping[str, Any], given_secrets: Collection[str] = ()
) -> dict[str, str]:
    """Return {field: message} for every rule that `current` updated with `changes` breaks.

    `current` is None for a new destination; `changes` holds the submitted
    values (secrets already resolved: a blank secret left unchanged is the
    stored one); `given_secrets` names the secrets typed afresh in this request.
    """

    def value(name: str) -> Any:
        if name in changes:
            return changes[name]
        return getattr(current, name) if current is not None else ""

    errors: dict[str, str] = {}
    auth_mode = value("auth_mode") or AuthMode.NONE
    if auth_mode == AuthMode.HMAC and not value("signing_key"):
        errors["signing_key"] = "auth_mode hmac needs a signing key."
    if auth_mode == AuthMode.OAUTH2:
        for name in ("oauth_token_url", "oauth_client_id", "oauth_client_secret"):
            if not value(name):
                errors[name] = f"auth_mode oauth2 needs {name}."
    errors.update(_rotation_errors(current=current, changes=changes))
    errors.update(find_origin_errors(current=current, changes=changes, given_secrets=given_secrets))
    return errors


def origin(url: str) -> tuple[str, str, int | None]:
    """(scheme, host, port) of `url`, lower-cased, with the scheme's default port filled in."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    port = parts.port or {"https": 443, "http": 80}.get(scheme)
    return scheme, (parts.hostname or "").lower(), port


def find_origin_errors(
    *, current: Destination | None, changes: Mapping[str, Any], given_secrets: Collection[str]
) -> dict[str, str]:
    """Secrets never follow a destination to a new origin (CONTRACT §3).

    Moving `url` or `oauth_token_url` to another scheme, host or port needs, in the same request,
    the secrets that authenticate there: otherwise whoever may edit a URL, but not read secrets,
    could point it at their own server and receive a signature or the client credentials.
    """
    if current is None:
        return {}
    # Whatever the auth mode now: a mode switched away and back later would bring a stored secret
    # to the new origin (none → move the URL → hmac), so every stored secret is asked for.
    needed: dict[str, str] = {}
    if _moves(current.url, changes.get("url")):
        needed.update({secret: "url" for secret in _stored_secrets(current)})
    if _moves(current.oauth_token_url, changes.get("oauth_token_url")) and current.oauth_client_secret:
        needed.setdefault("oauth_client_secret", "oauth_token_url")
    if needed and current.key_rotation_started_at is not None:
        return {"url": "A key rotation is under way: finish it before moving url to another origin."}
    return {
        secret: f"{secret} is required with a change of {field} to another origin (scheme, host or port): "
        f"the stored one is not sent to a new origin."
        for secret, field in needed.items()
        if secret not in given_secrets
    }


def _stored_secrets(destination: Destination) -> list[str]:
    return [name for name in ("signing_key", "oauth_client_secret") if getattr(destination, name)]


def _moves(stored: str, submitted: str | None) -> bool:
    """True when `submitted` names another origin than `stored`; an empty stored URL counts as one."""
    if not submitted:
        return False
    return not stored or origin(stored) != origin(submitted)


def _rotation_errors(*, current: Destination | None, changes: Mapping[str, Any]) -> dict[str, str]:
    # During a rotation partners verify both keys; swapping either underneath them
    # would break deliveries, so the rotation must be finished first.
    if current is None or current.key_rotation_started_at is None:
        return {}
    errors = {}
    if "signing_key" in changes and changes["signing_key"] != current.signing_key:
        errors["signing_key"] = "A key rotation is under way: finish it before setting signing_key."
    if changes.get("auth_mode", AuthMode.HMAC) != AuthMode.HMAC:
        errors["auth_mode"] = "A key rotation is under way: finish it before leaving auth_mode hmac."
    return errors
