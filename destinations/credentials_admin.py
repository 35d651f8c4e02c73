"""What the admin shows of a destination's credentials: whether each is set, never its value.

Django renders a read-only field from the model's value, so a page whose user
may not change the destination (the view permission only, the `viewer` group)
would print any secret field it lists, decrypted. `CredentialStateMixin`
therefore lists a secret only as a write-only input (`DestinationForm`), only
for users who may change the destination, and shows everyone read-only states
instead: signing key and OAuth client secret "set" or "not set", key rotation
"under way since <UTC time>" or "none".
"""

from __future__ import annotations

import datetime as dt

from django.contrib import admin
from django.http import HttpRequest

from destinations.models import Destination
from destinations.secrets import EncryptedTextField

STATE_FIELDS = ("signing_key_state", "key_rotation_state", "oauth_client_secret_state")


def secret_state(value: str) -> str:
    return "set" if value else "not set"


def rotation_state(destination: Destination) -> str:
    started = destination.key_rotation_started_at
    if started is None:
        return "none"
    return f"under way since {started.astimezone(dt.UTC):%Y-%m-%d %H:%M:%S} UTC"


def _secret_inputs() -> frozenset[str]:
    """Every encrypted field's name and its form's "clear" box: never shown read-only."""
    names = [field.name for field in Destination._meta.fields if isinstance(field, EncryptedTextField)]
    return frozenset([*names, *(f"clear_{name}" for name in names)])


SECRET_INPUTS = _secret_inputs()


def _without(fieldsets: list, names: frozenset[str] | tuple[str, ...]) -> list:
    return [
        (title, {**options, "fields": [name for name in options["fields"] if name not in names]})
        for title, options in fieldsets
    ]


class CredentialStateMixin:
    """Secret inputs for those who may change a destination; set / not set states on its pages."""

    def get_fieldsets(self, request: HttpRequest, obj: Destination | None = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        if obj is None:
            return _without(fieldsets, STATE_FIELDS)  # nothing is stored yet
        if not self.has_change_permission(request, obj):  # type: ignore[attr-defined]
            # Every field of a read-only page renders from the model: the plaintext.
            return _without(fieldsets, SECRET_INPUTS)
        return fieldsets

    def get_readonly_fields(self, request: HttpRequest, obj: Destination | None = None) -> list:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return [*fields, *STATE_FIELDS]

    @admin.display(description="Stored signing key")
    def signing_key_state(self, destination: Destination) -> str:
        return secret_state(destination.signing_key)

    @admin.display(description="Key rotation")
    def key_rotation_state(self, destination: Destination) -> str:
        return rotation_state(destination)

    @admin.display(description="Stored client secret")
    def oauth_client_secret_state(self, destination: Destination) -> str:
        return secret_state(destination.oauth_client_secret)
