"""The admin's read-only pages of alerts (CONTRACT §7): what was raised, and how each channel took it.

Alerts are raised and sent by the `maintenance` queue only (`delivery.alerts`); here they can be
listed, filtered and read, with each channel's status, attempts, last error and next try.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from delivery.alert_models import Alert, AlertEpisode, AlertSend


class _ReadOnly:
    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class AlertSendInline(_ReadOnly, admin.TabularInline):
    model = AlertSend
    extra = 0
    can_delete = False
    readonly_fields = ("channel", "status", "attempts", "last_error", "next_try_at", "sent_at")
    fields = readonly_fields


@admin.register(Alert)
class AlertAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["id", "event", "is_reminder", "destination", "at", "channels", "created_at"]
    list_filter = ["event", "is_reminder", "destination", "sends__status", "created_at"]
    date_hierarchy = "created_at"
    list_select_related = ["destination"]
    readonly_fields = ("event", "is_reminder", "destination", "at", "detail", "config_change", "created_at")
    fields = readonly_fields
    inlines = [AlertSendInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Alert]:
        return super().get_queryset(request).prefetch_related("sends")

    @admin.display(description="channels")
    def channels(self, alert: Alert) -> str:
        """Each channel's status, e.g. "webhook: sent, email: pending (3 attempts)"; "-" for none."""
        parts = []
        for send in sorted(alert.sends.all(), key=lambda send: send.channel):
            tries = f" ({send.attempts} attempts)" if send.status != "sent" and send.attempts else ""
            parts.append(f"{send.channel}: {send.status}{tries}")
        return ", ".join(parts) or "-"


@admin.register(AlertSend)
class AlertSendAdmin(_ReadOnly, admin.ModelAdmin):
    """Every alert on every channel: find the sends still pending or given up."""

    list_display = ["id", "alert", "channel", "status", "attempts", "next_try_at", "sent_at"]
    list_filter = ["status", "channel"]
    list_select_related = ["alert"]
    readonly_fields = ("alert", "channel", "status", "attempts", "last_error", "next_try_at", "sent_at",
                       "created_at")
    fields = readonly_fields


@admin.register(AlertEpisode)
class AlertEpisodeAdmin(_ReadOnly, admin.ModelAdmin):
    list_display = ["destination", "condition", "started_at", "last_alerted_at"]
    list_filter = ["condition", "destination"]
    list_select_related = ["destination"]
    readonly_fields = ("destination", "condition", "started_at", "last_alerted_at", "updated_at")
    fields = readonly_fields
