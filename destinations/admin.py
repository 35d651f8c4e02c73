"""The admin console for destinations, segments and mappings.

Secrets are write-only, as in the API: no page renders a stored secret, for any user; each says
whether one is set and whether a key rotation is under way (`destinations.credentials_admin`); a blank
input keeps it. The form applies the API's rules (`destinations.configuration`, `destinations.network`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from destinations import services
from destinations.audit_admin import DestinationHistoryMixin, RecordChangesMixin
from destinations.configuration import CONFIGURABLE_FIELDS, find_configuration_errors, validate_header_name
from destinations.credentials_admin import CredentialStateMixin
from destinations.models import ChangeSource, Destination, Mapping, Segment, utc_today
from destinations.network import validate_url
from destinations.rotation_admin import finish_key_rotation, start_key_rotation
from destinations.segments_admin import SegmentDeletionMixin

SECRET_FIELDS = ("signing_key", "oauth_client_secret")
# The circuit breaker's shared state (CONTRACT §7): shown, never edited.
CIRCUIT_STATE_FIELDS = (
    "circuit_state", "circuit_opened_at", "circuit_next_probe_at", "consecutive_failures", "hold_until",
)
# The settings find_configuration_errors reads.
_RULE_FIELDS = (
    "auth_mode", "url", "signing_key", "oauth_token_url", "oauth_client_id", "oauth_client_secret",
)


def _secret_input(label: str) -> forms.CharField:
    return forms.CharField(label=label, required=False, widget=forms.PasswordInput(render_value=False))


class DestinationForm(forms.ModelForm):
    signing_key = _secret_input("Signing key")
    clear_signing_key = forms.BooleanField(label="Remove the stored signing key", required=False)
    oauth_client_secret = _secret_input("OAuth client secret")
    clear_oauth_client_secret = forms.BooleanField(label="Remove the stored client secret", required=False)

    class Meta:
        model = Destination
        # Not new_signing_key nor key_rotation_started_at: rotation goes through its actions only.
        fields = list(CONFIGURABLE_FIELDS)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for name in SECRET_FIELDS:
            # Never put the stored value anywhere the page could render it.
            self.initial[name] = ""
            stored = bool(self.instance.pk and getattr(self.instance, name))
            self.fields[
                name
            ].help_text = (
                f"Currently {'set' if stored else 'not set'}. Leave blank to keep it; it is never shown."
            )
        if "signing_header" in self.fields:
            self.fields["signing_header"].validators.append(validate_header_name)

    def clean_url(self) -> str:
        return _checked_url(self.cleaned_data["url"], field="url")

    def clean_oauth_token_url(self) -> str:
        value = self.cleaned_data["oauth_token_url"]
        return _checked_url(value, field="oauth_token_url") if value else value

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns
        given = [name for name in SECRET_FIELDS if cleaned.get(name) and not cleaned.get(f"clear_{name}")]
        for name in SECRET_FIELDS:
            if cleaned.get(f"clear_{name}"):
                cleaned[name] = ""
            elif not cleaned.get(name):
                cleaned[name] = getattr(self.instance, name) if self.instance.pk else ""
        current = self.instance if self.instance.pk else None
        changes = {name: cleaned[name] for name in _RULE_FIELDS if name in cleaned}
        errors = find_configuration_errors(current=current, changes=changes, given_secrets=given)
        for field, message in errors.items():
            self.add_error(field if field in self.fields else None, message)
        return cleaned


def _checked_url(value: str, *, field: str) -> str:
    validate_url(value, field=field)
    return value


class MappingForm(forms.ModelForm):
    class Meta:
        model = Mapping
        fields = ["destination", "segment", "value", "start_date", "end_date"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if "value" in self.fields:  # a read-only page's form has no fields
            self.fields["value"].required = False
            self.fields["value"].help_text = "Sent as Segment_ID; blank = the segment ID."

    def clean(self) -> dict[str, Any]:
        super().clean()
        cleaned = self.cleaned_data  # what ModelForm.clean returns
        start, end = cleaned.get("start_date"), cleaned.get("end_date")
        if start and end and end < start:
            self.add_error("end_date", f"end_date must not be before start_date ({start}).")
        segment = cleaned.get("segment")
        if segment and (not cleaned.get("value") or self._value_follows(segment)):
            cleaned["value"] = str(segment.pk)
        return cleaned

    def _value_follows(self, segment: Segment) -> bool:
        # A default value (the old segment's ID) left as it was follows the new segment (CONTRACT §4).
        instance = self.instance
        return (bool(instance.pk) and segment.pk != instance.segment_id and instance.has_default_value()
                and self.cleaned_data.get("value") == instance.value)


class MappingInline(admin.TabularInline):
    model = Mapping
    form = MappingForm
    extra = 0
    autocomplete_fields = ["segment"]
    fields = ["segment", "value", "start_date", "end_date"]


@admin.register(Destination)
class DestinationAdmin(CredentialStateMixin, DestinationHistoryMixin, RecordChangesMixin[Destination],
                       admin.ModelAdmin):
    form = DestinationForm
    inlines = [MappingInline]
    list_display = [
        "name",
        "url",
        "enabled",
        "realtime",
        "batch_interval_hours",
        "auth_mode",
        "last_delivery_status",
        "last_delivery_at",
    ]
    list_filter = ["enabled", "realtime", "auth_mode", "last_delivery_status"]
    search_fields = ["name", "url", "client_id"]
    readonly_fields = [
        "last_delivery_status",
        "last_delivery_at",
        "created_at",
        "updated_at",
        *CIRCUIT_STATE_FIELDS,
    ]
    fieldsets = [
        (None, {"fields": ["name", "url", "client_id", "user_dpid", "aam_destination_id", "enabled"]}),
        (
            "Sending",
            {
                "fields": [
                    "realtime",
                    "batch_interval_hours",
                    "max_users_per_request",
                    "max_wait_ms",
                    "timeout_ms",
                    "max_retries",
                    "retry_delay_ms",
                ]
            },
        ),
        # CONTRACT §7: the settings, then the state (read-only: only aamdest itself moves it).
        (
            "Circuit breaker",
            {"fields": ["circuit_breaker", "circuit_failure_threshold", *CIRCUIT_STATE_FIELDS]},
        ),
        (
            "Authentication",
            {
                "fields": [
                    "auth_mode",
                    "signing_algorithm",
                    "signing_header",
                    # The states are shown to all; the inputs only to who may change them.
                    "signing_key_state",
                    "signing_key",
                    "clear_signing_key",
                    "key_rotation_state",
                    "oauth_token_url",
                    "oauth_client_id",
                    "oauth_client_secret_state",
                    "oauth_client_secret",
                    "clear_oauth_client_secret",
                    "oauth_scope",
                    "oauth_client_auth",
                ]
            },
        ),
        ("Status", {"fields": ["last_delivery_status", "last_delivery_at", "created_at", "updated_at"]}),
    ]
    actions = ["send_test_document", "send_batch", "pause", "resume", "resync", start_key_rotation,
               finish_key_rotation]

    @admin.action(description="Send test document", permissions=["change"])
    def send_test_document(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        for destination in queryset:
            outcome = services.send_test(destination=destination)
            if outcome.succeeded:
                done = f"{destination}: 200 OK in {outcome.duration_ms} ms."
                self.message_user(request, done, messages.SUCCESS)
                continue
            error = outcome.error or f"status {outcome.status_code}"
            if not outcome.attempts:
                error = "no attempt was made"
            self.message_user(request, f"{destination}: test failed: {error}", messages.WARNING)

    @admin.action(description="Send batch now", permissions=["change"])
    def send_batch(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        try:
            for destination in queryset:
                services.start_batch_now(destination=destination)
        except (services.DestinationPaused, services.BatchNotQueued) as error:
            self.message_user(request, str(error), messages.ERROR)
            return
        self.message_user(
            request, "The batch has started: its requests appear in the delivery log as kind batch.",
            messages.SUCCESS,
        )

    @admin.action(description="Pause (pending work waits)", permissions=["change"])
    def pause(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        count = _for_each(queryset, services.pause_destination, request=request)
        self.message_user(request, f"Paused {count} destination(s).", messages.SUCCESS)

    @admin.action(description="Resume", permissions=["change"])
    def resume(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        count = _for_each(queryset, services.resume_destination, request=request)
        self.message_user(
            request, f"Resumed {count} destination(s); pending work goes out now.", messages.SUCCESS
        )

    @admin.action(description="Resync every mapped device (current full state)", permissions=["change"])
    def resync(self, request: HttpRequest, queryset: QuerySet[Destination]) -> None:
        for destination in queryset:
            try:
                devices = services.resync(destination=destination, since=None, actor=request.user,
                                          source=ChangeSource.ADMIN)
            except (services.ResyncRefused, services.ResyncNotQueued) as error:
                self.message_user(request, f"{destination}: {error}", messages.ERROR)
                continue
            done = f"{destination}: resync of {devices} devices queued."
            self.message_user(request, done, messages.SUCCESS)


def _for_each(
    queryset: QuerySet[Destination], service: Callable[..., object], *, request: HttpRequest
) -> int:
    """Call a pause or resume service for each selected destination, as the admin; return how many."""
    pks = list(queryset.values_list("pk", flat=True))
    for pk in pks:
        service(destination_id=pk, actor=request.user, source=ChangeSource.ADMIN)
    return len(pks)


@admin.register(Segment)
class SegmentAdmin(SegmentDeletionMixin, RecordChangesMixin[Segment], admin.ModelAdmin):
    list_display = ["id", "name", "ttl_days", "updated_at"]
    search_fields = ["id__exact", "name"]
    list_filter = ["ttl_days"]
    fields = ["id", "name", "ttl_days"]

    def get_readonly_fields(self, request: HttpRequest, obj: Segment | None = None) -> list[str]:
        return ["id"] if obj is not None else []  # the ID is the client's; changing it would orphan data

    def save_model(self, request: HttpRequest, obj: Segment, form: forms.ModelForm, change: bool) -> None:
        super().save_model(request, obj, form, change)
        if change and "ttl_days" in form.changed_data:
            # CONTRACT §4: a new TTL applies to the segment's existing memberships (a task, once committed).
            services.apply_segment_ttl_change(segment=obj)


@admin.register(Mapping)
class MappingAdmin(RecordChangesMixin[Mapping], admin.ModelAdmin):
    form = MappingForm
    list_display = ["destination", "segment", "value", "start_date", "end_date", "is_active_today"]
    list_filter = ["destination"]
    search_fields = ["value", "destination__name", "segment__id__exact"]
    autocomplete_fields = ["destination", "segment"]
    list_select_related = ["destination", "segment"]

    @admin.display(boolean=True, description="Active today (UTC)")
    def is_active_today(self, mapping: Mapping) -> bool:
        return mapping.is_active_on(utc_today())
