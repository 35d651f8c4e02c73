"""The admin console for what came in and what went out: read-only inspection.

Devices, memberships and the delivery log change only through ingestion and
sending, so that their rules hold; here they can be searched and read, and
deliveries redelivered through the same service as the API.
"""

from __future__ import annotations

import json
import uuid
from typing import TypedDict

from django.contrib import admin, messages
from django.db.models import Count, OuterRef, QuerySet, Subquery
from django.http import HttpRequest
from django.utils.html import format_html
from django_stubs_ext import WithAnnotations

from delivery import (
    alerts_admin,  # noqa: F401 - registers the alerts' read-only pages
    services,
)
from delivery.api.serializers import parse_document
from delivery.models import (
    Attempt,
    BatchCoverage,
    BatchExit,
    Delivery,
    DeliveryDevice,
    DestinationDevice,
    Device,
    DeviceErasure,
    Membership,
    MembershipChange,
    PartnerId,
)


class _DeliveryListAnnotations(TypedDict):
    """What `DeliveryAdmin.get_queryset` adds to each delivery."""

    attempt_total: int
    last_code: int | None


class ReadOnlyMixin:
    """Viewable by anyone with the view permission; nobody adds, changes or deletes here."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyAdmin(ReadOnlyMixin, admin.ModelAdmin):
    show_full_result_count = False  # these tables grow large; COUNT(*) on every page is wasted


class ReadOnlyTabularInline(ReadOnlyMixin, admin.TabularInline):
    extra = 0
    can_delete = False


class AttemptInline(ReadOnlyTabularInline):
    model = Attempt
    readonly_fields = (
        "number", "started_at", "duration_ms", "status_code", "reason", "error", "response_excerpt",
    )
    fields = readonly_fields
    ordering = ["number"]


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "destination",
        "kind",
        "status",
        "user_count",
        "attempt_count",
        "last_status_code",
        "created_at",
        "finished_at",
        "redelivery_of",
    ]
    list_filter = ["destination", "status", "kind", "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["document_id", "devices__aam_uuid"]
    search_help_text = "A device's AAM_UUID, or a document ID (X-AAMDest-Delivery-Id)."
    list_select_related = ["destination"]
    inlines = [AttemptInline]
    readonly_fields = (
        "destination",
        "kind",
        "status",
        "document_id",
        "user_count",
        "created_at",
        "finished_at",
        "redelivery_of",
        "lease_until",
        "pretty_document",
    )
    fields = readonly_fields
    actions = ["redeliver_selected"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Delivery]:
        last_attempt = Attempt.objects.filter(delivery=OuterRef("pk")).order_by("-number")
        return (
            super()
            .get_queryset(request)
            .defer("body")
            .annotate(
                attempt_total=Count("attempts"),
                last_code=Subquery(last_attempt.values("status_code")[:1]),
            )
        )

    def get_object(
        self, request: HttpRequest, object_id: str, from_field: str | None = None
    ) -> Delivery | None:
        # The change page shows the document: load the body there only.
        return Delivery.objects.filter(pk=object_id).first() if object_id.isdigit() else None

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Delivery], search_term: str
    ) -> tuple[QuerySet[Delivery], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        try:
            return queryset.filter(document_id=uuid.UUID(term)), False
        except ValueError:
            # DeliveryDevice holds one row per (delivery, device): no duplicates.
            return queryset.filter(devices__aam_uuid=term), False

    @admin.display(description="attempts", ordering="attempt_total")
    def attempt_count(self, delivery: WithAnnotations[Delivery, _DeliveryListAnnotations]) -> int:
        return delivery.attempt_total

    @admin.display(description="last status code")
    def last_status_code(self, delivery: WithAnnotations[Delivery, _DeliveryListAnnotations]) -> int | None:
        return delivery.last_code

    @admin.display(description="document")
    def pretty_document(self, delivery: Delivery) -> str:
        document = parse_document(delivery.body)
        if document is None:
            return "-"
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', json.dumps(document, indent=2))

    def has_redeliver_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("delivery.add_delivery")

    @admin.action(description="Redeliver selected", permissions=["redeliver"])
    def redeliver_selected(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        for original in queryset:
            try:
                redelivery = services.redeliver(delivery=original)
            except services.RedeliveryConflict as error:
                self.message_user(request, f"Delivery {original.pk}: {error}", messages.WARNING)
            else:
                self.message_user(
                    request, f"Delivery {original.pk}: redelivering as {redelivery.pk}.", messages.SUCCESS
                )


@admin.register(Attempt)
class AttemptAdmin(ReadOnlyAdmin):
    list_display = ["delivery", "number", "started_at", "duration_ms", "status_code", "reason"]
    list_filter = ["reason", "delivery__destination", "started_at"]
    search_fields = ["delivery__id__exact", "error"]
    list_select_related = ["delivery"]


class PartnerIdInline(ReadOnlyTabularInline):
    model = PartnerId
    readonly_fields = ("dpid", "dpuuid", "created_at")
    fields = readonly_fields


class MembershipInline(ReadOnlyTabularInline):
    model = Membership
    readonly_fields = ("segment", "is_active", "datetime", "qualified_at", "expires_at")
    fields = readonly_fields


@admin.register(Device)
class DeviceAdmin(ReadOnlyAdmin):
    list_display = ["aam_uuid", "last_seen", "regions", "created_at"]
    search_fields = ["aam_uuid__exact"]
    date_hierarchy = "last_seen"
    inlines = [PartnerIdInline, MembershipInline]


@admin.register(PartnerId)
class PartnerIdAdmin(ReadOnlyAdmin):
    list_display = ["device", "dpid", "dpuuid", "created_at"]
    list_filter = ["dpid"]
    search_fields = ["device__aam_uuid__exact", "dpuuid__exact"]


@admin.register(Membership)
class MembershipAdmin(ReadOnlyAdmin):
    list_display = ["device", "segment", "is_active", "datetime", "expires_at"]
    list_filter = ["is_active", "segment"]
    search_fields = ["device__aam_uuid__exact"]


@admin.register(MembershipChange)
class MembershipChangeAdmin(ReadOnlyAdmin):
    list_display = ["id", "aam_uuid", "segment_id", "is_active", "datetime", "is_onboarded", "created_at"]
    list_filter = ["is_active", "is_onboarded"]
    search_fields = ["aam_uuid__exact"]


@admin.register(DestinationDevice)
class DestinationDeviceAdmin(ReadOnlyAdmin):
    list_display = [
        "destination",
        "device",
        "pending_since",
        "left_segment_ids",
        "last_sent_at",
        "in_flight_delivery",
    ]
    list_filter = ["destination"]
    search_fields = ["device__aam_uuid__exact"]
    list_select_related = ["destination"]


@admin.register(DeliveryDevice)
class DeliveryDeviceAdmin(ReadOnlyAdmin):
    list_display = ["delivery", "aam_uuid"]
    search_fields = ["aam_uuid__exact"]


# ---- lifecycle and batch mode (delivery.lifecycle.expiry, delivery.batch.transfers) ------------


@admin.register(DeviceErasure)
class DeviceErasureAdmin(ReadOnlyAdmin):
    list_display = ["aam_uuid", "reason", "requested_at"]
    list_filter = ["reason"]
    search_fields = ["aam_uuid__exact"]


@admin.register(BatchExit)
class BatchExitAdmin(ReadOnlyAdmin):
    list_display = ["destination", "aam_uuid", "segments", "delivery", "created_at"]
    list_filter = ["destination"]
    search_fields = ["aam_uuid__exact"]
    list_select_related = ["destination"]


@admin.register(BatchCoverage)
class BatchCoverageAdmin(ReadOnlyAdmin):
    list_display = ["mapping", "segment_id", "batched_at", "updated_at"]
