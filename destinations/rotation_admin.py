"""The admin's HMAC key-rotation actions: the API's two, through the same `destinations.services`.

"Start key rotation" asks for the new key on an intermediate page (one
destination at a time: each partner gets its own key); "Finish key rotation"
makes the new key the only one. What the API answers with 400 or 409 shows as
an error message naming the destination; each rotation is recorded in the
configuration change log.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.response import TemplateResponse

from destinations import services
from destinations.credentials_admin import rotation_state, secret_state
from destinations.models import ChangeSource, Destination
from destinations.signing import NEW_KEY_HEADER_SUFFIX

TEMPLATE = "admin/destinations/destination/start_key_rotation.html"


class NewSigningKeyForm(forms.Form):
    key = forms.CharField(
        label="New signing key",
        max_length=4096,
        strip=False,  # a key is bytes the partner must match exactly
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="Never shown again; the partner must be given the same key.",
    )


@admin.action(description="Start key rotation", permissions=["change"])
def start_key_rotation(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Destination]
) -> TemplateResponse | None:
    # Error reports must not show the typed key (what @sensitive_post_parameters sets).
    request.sensitive_post_parameters = ("key",)  # type: ignore[attr-defined]
    selected = list(queryset[:2])
    if len(selected) != 1:
        modeladmin.message_user(
            request, "Select exactly one destination to start a key rotation: each has its own key.",
            messages.WARNING,
        )
        return None
    destination = selected[0]
    form = NewSigningKeyForm(request.POST if request.POST.get("apply") else None)
    if not form.is_valid():
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": f"Start a key rotation of {destination}",
            "opts": modeladmin.model._meta,
            "destination": destination,
            # Whether a key is set and a rotation under way; never the keys themselves.
            "key_state": secret_state(destination.signing_key),
            "rotation_state": rotation_state(destination),
            "form": form,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": modeladmin.media,
        }
        return TemplateResponse(request, TEMPLATE, context)
    _rotate(modeladmin, request, destination=destination, new_key=form.cleaned_data["key"])
    return None


@admin.action(description="Finish key rotation", permissions=["change"])
def finish_key_rotation(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Destination]
) -> None:
    for destination in queryset:
        _rotate(modeladmin, request, destination=destination, new_key=None)


def _rotate(
    modeladmin: admin.ModelAdmin, request: HttpRequest, *, destination: Destination, new_key: str | None
) -> None:
    """Start (with `new_key`) or finish (None) a rotation through its service and say how it went."""
    actor, source = request.user, ChangeSource.ADMIN
    try:
        if new_key is None:
            services.finish_key_rotation(destination=destination, actor=actor, source=source)
        else:
            services.start_key_rotation(destination=destination, new_key=new_key, actor=actor, source=source)
    except (services.RotationRefused, services.RotationConflict) as error:
        modeladmin.message_user(request, f"{destination}: {error}", messages.ERROR)
        return
    header = destination.signing_header
    if new_key is None:
        done = f"key rotation finished: the new key now signs in {header} alone."
    else:
        done = f"key rotation started: the new key signs in {header}{NEW_KEY_HEADER_SUFFIX} too."
    modeladmin.message_user(request, f"{destination}: {done}", messages.SUCCESS)
