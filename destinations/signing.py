"""HMAC request signing and zero-downtime key rotation (CONTRACT §3).

The signature is HMAC over the exact body bytes sent, keyed with the
destination's key (UTF-8), in standard Base64 with padding. While a rotation is
under way the partner gets two signatures: the old key's in `signing_header`
and the new key's in `<signing_header>-New`, so it can switch at its own pace.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from django.db import transaction
from django.utils import timezone

from destinations.models import AuthMode, Destination

ALGORITHMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1, "md5": hashlib.md5}
NEW_KEY_HEADER_SUFFIX = "-New"


class RotationRefused(Exception):
    """The rotation request itself is wrong (not an HMAC destination, empty key): HTTP 400."""


class RotationConflict(Exception):
    """The rotation clashes with the destination's state (already started, none to finish): HTTP 409."""


def sign_body(*, body: bytes, key: str, algorithm: str) -> str:
    """Return Base64(HMAC-`algorithm`(key, body)); raise ValueError for an unknown algorithm or no key."""
    digest = ALGORITHMS.get(algorithm)
    if digest is None:
        raise ValueError(f"unknown signing algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
    if not key:
        raise ValueError("cannot sign with an empty key")
    mac = hmac.new(key.encode("utf-8"), body, digest).digest()
    return base64.b64encode(mac).decode("ascii")


def signature_headers(*, destination: Destination, body: bytes) -> dict[str, str]:
    """Return the signature header(s) for `body`: none unless the destination signs with HMAC.

    Raises ValueError when an HMAC destination has no signing key (the API
    refuses that configuration, so this means the row was changed behind its back).
    """
    if destination.auth_mode != AuthMode.HMAC:
        return {}
    algorithm = destination.signing_algorithm
    signature = sign_body(body=body, key=destination.signing_key, algorithm=algorithm)
    headers = {destination.signing_header: signature}
    if destination.new_signing_key:
        new_signature = sign_body(body=body, key=destination.new_signing_key, algorithm=algorithm)
        headers[destination.signing_header + NEW_KEY_HEADER_SUFFIX] = new_signature
    return headers


def start_key_rotation(*, destination: Destination, new_key: str) -> None:
    """Start signing with `new_key` too, alongside the current key.

    Raises RotationRefused when the destination does not sign with HMAC or the
    key is empty or unchanged, RotationConflict when a rotation is already under way.
    """
    if not new_key or not new_key.strip():
        raise RotationRefused("key: the new signing key must not be empty")
    with transaction.atomic():
        # The row lock makes a second concurrent start wait, then see the first one.
        locked = Destination.objects.select_for_update().get(pk=destination.pk)
        _check_signs_with_hmac(locked)
        if locked.key_rotation_started_at is not None or locked.new_signing_key:
            raise RotationConflict("a key rotation is already under way; finish it before starting another")
        if new_key == locked.signing_key:
            raise RotationRefused("key: the new signing key is the key already in use")
        locked.new_signing_key = new_key
        locked.key_rotation_started_at = timezone.now()
        locked.save(update_fields=["new_signing_key", "key_rotation_started_at", "updated_at"])
    _copy_rotation_state(source=locked, target=destination)


def finish_key_rotation(*, destination: Destination) -> None:
    """Make the new key the only key.

    Raises RotationRefused when the destination does not sign with HMAC,
    RotationConflict when no rotation is under way.
    """
    with transaction.atomic():
        locked = Destination.objects.select_for_update().get(pk=destination.pk)
        _check_signs_with_hmac(locked)
        if locked.key_rotation_started_at is None and not locked.new_signing_key:
            raise RotationConflict("no key rotation is under way")
        # A rotation marked started without a key (edited by hand) just ends.
        locked.signing_key = locked.new_signing_key or locked.signing_key
        locked.new_signing_key = ""
        locked.key_rotation_started_at = None
        locked.save(update_fields=["signing_key", "new_signing_key", "key_rotation_started_at", "updated_at"])
    _copy_rotation_state(source=locked, target=destination)


def _check_signs_with_hmac(destination: Destination) -> None:
    if destination.auth_mode != AuthMode.HMAC:
        raise RotationRefused(
            f"key rotation needs auth_mode 'hmac'; this destination uses {destination.auth_mode!r}"
        )


def _copy_rotation_state(*, source: Destination, target: Destination) -> None:
    # The caller's instance reflects what was saved, as if it had been reloaded.
    for name in ("signing_key", "new_signing_key", "key_rotation_started_at", "updated_at"):
        setattr(target, name, getattr(source, name))
