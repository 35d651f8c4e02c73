"""What came in (devices, memberships, partner IDs) and what went out (deliveries, attempts, alerts)."""

from __future__ import annotations

import uuid

from django.db import models

from delivery.alert_models import Alert, AlertEpisode, AlertSend  # noqa: F401 - the app's models
from delivery.querysets import PartnerIdQuerySet
from destinations.models import Destination, Mapping, Segment


class Device(models.Model):
    """A device (AAM_UUID) with where it was seen and when last."""

    aam_uuid = models.CharField(max_length=100, primary_key=True)
    last_seen = models.DateTimeField(help_text="The latest datetime among the device's events.")
    regions = models.JSONField(default=list, help_text="DCS region IDs, ascending, deduplicated.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["aam_uuid"]
        indexes = [
            # The inactivity sweep: devices not seen for 120 days.
            models.Index(fields=["last_seen"], name="device_last_seen"),
        ]

    def __str__(self) -> str:
        return self.aam_uuid


class PartnerId(models.Model):
    """A partner's ID for a device in the `dpid` namespace (from id_sync events)."""

    device = models.ForeignKey(Device, on_delete=models.CASCADE, related_name="partner_ids")
    dpid = models.BigIntegerField()
    dpuuid = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = PartnerIdQuerySet.as_manager()

    class Meta:
        ordering = ["device_id", "dpid", "id"]
        constraints = [
            models.UniqueConstraint(fields=["device", "dpid", "dpuuid"], name="one_partner_id_row"),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} {self.dpid}:{self.dpuuid}"


class Membership(models.Model):
    """A device's standing in one segment: active ("1") or left ("0"). No database FKs: migration 0009."""

    device = models.ForeignKey(Device, models.CASCADE, related_name="memberships", db_index=False,
                               db_constraint=False)
    segment = models.ForeignKey(Segment, models.CASCADE, related_name="memberships", db_constraint=False)
    is_active = models.BooleanField()
    # When the membership was last verified: the latest event's datetime, or when it ended.
    datetime = models.DateTimeField()
    # The latest qualification: the start of the TTL. null: never qualified (only left).
    qualified_at = models.DateTimeField(null=True, blank=True)
    # When the TTL ends it. null: left already, or a segment whose TTL never expires.
    expires_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["device_id", "segment_id"]
        constraints = [
            models.UniqueConstraint(fields=["device", "segment"], name="one_membership_per_segment"),
        ]
        indexes = [
            # The TTL sweep: active memberships whose expires_at has passed.
            models.Index(fields=["expires_at"], name="membership_expiry", condition=models.Q(is_active=True)),
            # Batch mode's first batch: every active membership of a segment.
            models.Index(fields=["segment", "device"], name="membership_active_by_segment",
                         condition=models.Q(is_active=True)),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} in {self.segment_id}: {'1' if self.is_active else '0'}"


class MembershipChange(models.Model):
    """Append-only log of membership changes, in order of ingestion (batch mode reads it)."""

    id = models.BigAutoField(primary_key=True)  # the order of ingestion
    aam_uuid = models.CharField(max_length=100)
    segment_id = models.PositiveBigIntegerField()
    is_active = models.BooleanField()
    datetime = models.DateTimeField()
    is_onboarded = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # Privacy erasure: every change of one device.
            models.Index(fields=["aam_uuid"], name="change_by_device"),
        ]

    def __str__(self) -> str:
        return f"change {self.pk}: {self.aam_uuid} in {self.segment_id}: {'1' if self.is_active else '0'}"


class DestinationDevice(models.Model):
    """What a destination was sent about a device and still owes it in real time; no device FK: 0009."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="+", db_index=False)
    device = models.ForeignKey(Device, models.CASCADE, related_name="destination_states", db_constraint=False)
    # When the device became due for a real-time request. null: nothing to send.
    pending_since = models.DateTimeField(null=True, blank=True)
    # Segments the device left that this destination has not yet been told of ("0" once).
    left_segment_ids = models.JSONField(default=list)
    # null: never sent to this destination.
    last_sent_at = models.DateTimeField(null=True, blank=True)
    # The request holding the device in flight or until its retry. null: none, it may be claimed again.
    in_flight_delivery = models.ForeignKey("Delivery", null=True, blank=True, on_delete=models.SET_NULL,
                                           related_name="+")

    class Meta:
        ordering = ["destination_id", "device_id"]
        constraints = [
            models.UniqueConstraint(fields=["destination", "device"], name="one_state_per_pair"),
        ]
        indexes = [
            # Claiming: the oldest pending devices of one destination.
            models.Index(fields=["destination", "pending_since"], name="pending_by_destination",
                         condition=models.Q(pending_since__isnull=False)),
            # Claiming (delivery.realtime.claiming) and `next_due_at`: a destination's oldest claimable
            # devices in claim order, so a claim reads its LIMIT rows, not the whole backlog sorted
            # (113 ms → 1 ms with 50,000 pending).
            models.Index(fields=["destination", "pending_since", "id"], name="claimable_by_destination",
                         condition=models.Q(pending_since__isnull=False, in_flight_delivery__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.device_id} for destination {self.destination_id}"


class DeliveryKind(models.TextChoices):
    REALTIME = "realtime"
    BATCH = "batch"
    TEST = "test"
    REDELIVERY = "redelivery"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class Delivery(models.Model):
    """One document for one destination, and its fate. The document is built once."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="deliveries")
    kind = models.CharField(max_length=20, choices=DeliveryKind.choices)
    status = models.CharField(max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    # Sent as X-AAMDest-Delivery-Id; shared by every attempt and redelivery of the document.
    document_id = models.UUIDField(default=uuid.uuid4)
    # The exact bytes sent (UTF-8 JSON); retries and redeliveries resend them.
    body = models.BinaryField()
    user_count = models.PositiveIntegerField()
    redelivery_of = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL,
                                      related_name="redeliveries")  # null: not a redelivery.
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)  # null: still pending.
    # Until when a worker owns the sending. null: nobody; a past time: the worker is presumed dead.
    lease_until = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "deliveries"
        indexes = [
            # The deliveries list, newest first, per destination.
            models.Index(fields=["destination", "-created_at"], name="delivery_by_destination"),
            models.Index(fields=["-created_at"], name="delivery_newest_first"),
            # The lease reaper: pending deliveries whose worker stopped renewing.
            models.Index(fields=["lease_until"], name="delivery_pending_lease",
                         condition=models.Q(status="pending")),
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.kind}, {self.status})"


class DeliveryDevice(models.Model):
    """A device carried by a delivery's document (the `?aam_uuid=` filter); no database FK: migration 0007."""

    delivery = models.ForeignKey(Delivery, models.CASCADE, related_name="devices", db_constraint=False)
    aam_uuid = models.CharField(max_length=100, db_index=True)

    class Meta:
        ordering = ["delivery_id", "aam_uuid"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "aam_uuid"], name="one_row_per_delivered_device"),
        ]

    def __str__(self) -> str:
        return f"{self.aam_uuid} in delivery {self.delivery_id}"


class FailureReason(models.TextChoices):
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TLS = "tls"
    STATUS = "status"
    TOKEN = "token"


class Attempt(models.Model):
    """One HTTP exchange of a delivery."""

    delivery = models.ForeignKey(Delivery, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveSmallIntegerField(help_text="1 for the first attempt.")
    started_at = models.DateTimeField()
    duration_ms = models.PositiveIntegerField()
    # null: no answer (timeout, connection or TLS failure).
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    # null: success (200).
    reason = models.CharField(max_length=20, choices=FailureReason.choices, null=True, blank=True)
    error = models.TextField(blank=True, default="")
    response_excerpt = models.TextField(blank=True, default="")

    class Meta:
        ordering = ["delivery_id", "number"]
        constraints = [
            models.UniqueConstraint(fields=["delivery", "number"], name="one_attempt_per_number"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number} of delivery {self.delivery_id}"


class ErasureReason(models.TextChoices):
    OPT_OUT = "opt_out"
    INACTIVITY = "inactivity"


class DeviceErasure(models.Model):
    """A device to forget once its "0"s are out (CONTRACT §4: privacy, inactivity); see delivery.lifecycle."""

    aam_uuid = models.CharField(max_length=100, unique=True)
    reason = models.CharField(max_length=20, choices=ErasureReason.choices)
    requested_at = models.DateTimeField()

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"erase {self.aam_uuid} ({self.reason})"


class BatchExit(models.Model):
    """The "0"s an erased device still owes a batch destination, captured before the erasure.

    Its changes were erased with it, so its next batch reads them here (delivery.batch.transfers);
    removed, and the device taken out of the carrying document, once that delivery has ended.
    """

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="+")
    aam_uuid = models.CharField(max_length=100)
    partner_uuids = models.JSONField(default=list, help_text="dpuuids in the destination's namespace.")
    regions = models.JSONField(default=list)
    segments = models.JSONField(default=list, help_text='[[segment_id, "ISO datetime"], ...], each left.')
    # The batch delivery that carries it. null: not yet cut into a batch.
    delivery = models.ForeignKey("Delivery", null=True, blank=True, on_delete=models.CASCADE,
                                 related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [
            # A batch's cut: the exits not yet carried, per destination.
            models.Index(fields=["destination", "id"], name="batch_exit_waiting",
                         condition=models.Q(delivery__isnull=True)),
        ]

    def __str__(self) -> str:
        return f"{self.aam_uuid} exits for destination {self.destination_id}"


class BatchCoverage(models.Model):
    """A mapping whose segment a batch carried in full; later batches send only its changes."""

    mapping = models.OneToOneField(Mapping, primary_key=True, on_delete=models.CASCADE, related_name="+")
    # The segment carried: a mapping moved to another segment starts again.
    segment_id = models.PositiveBigIntegerField()
    # When the latest batch that carried the mapping was cut (its `Destination.last_batch_at`):
    # a mapping the previous batch did not carry starts again.
    batched_at = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["mapping_id"]

    def __str__(self) -> str:
        return f"mapping {self.mapping_id} carried by the batch of {self.batched_at}"
