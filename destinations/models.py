"""Who aamdest sends to, how it authenticates, and which segments go where."""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from destinations.secrets import EncryptedTextField

MAX_TTL_DAYS = 3650


def utc_today() -> dt.date:
    return timezone.now().astimezone(dt.UTC).date()


class AuthMode(models.TextChoices):
    NONE = "none", "None"
    HMAC = "hmac", "HMAC request signing"
    OAUTH2 = "oauth2", "OAuth 2.0 client credentials"


class SigningAlgorithm(models.TextChoices):
    SHA256 = "sha256", "HMAC-SHA256"
    SHA1 = "sha1", "HMAC-SHA1"
    MD5 = "md5", "HMAC-MD5"


class CircuitState(models.TextChoices):
    CLOSED = "closed", "Closed"
    OPEN = "open", "Open"
    HALF_OPEN = "half_open", "Probing"


class OAuthClientAuth(models.TextChoices):
    BASIC = "basic", "HTTP Basic (RFC 6749 §2.3.1)"
    BODY = "body", "client_id / client_secret form fields"


# (minimum, maximum) of each numeric delivery setting, CONTRACT §2.
LIMITS = {
    "timeout_ms": (100, 30_000),
    "max_retries": (0, 5),
    "retry_delay_ms": (0, 60_000),
    "max_users_per_request": (1, 10_000),
    "max_wait_ms": (0, 60_000),
    "circuit_failure_threshold": (1, 1000),
}


def _bounded(name: str) -> list:
    low, high = LIMITS[name]
    return [MinValueValidator(low), MaxValueValidator(high)]


class Destination(models.Model):
    """A partner endpoint, its identifiers, delivery settings and credentials."""

    name = models.CharField(max_length=200, unique=True)
    url = models.CharField(max_length=2000, help_text="The partner's HTTPS endpoint.")
    client_id = models.CharField(max_length=100, help_text="Sent as Client_ID.")
    user_dpid = models.BigIntegerField(help_text="Namespace of DataPartner_UUID, sent as User_DPID.")
    aam_destination_id = models.BigIntegerField(help_text="Sent as AAM_Destination_Id.")
    enabled = models.BooleanField(default=True, help_text="Off pauses sending; pending work waits.")
    realtime = models.BooleanField(default=True)
    # null: batch mode is off.
    batch_interval_hours = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(24), MaxValueValidator(24 * 366)]
    )
    max_users_per_request = models.PositiveIntegerField(
        default=10, validators=_bounded("max_users_per_request")
    )
    max_wait_ms = models.PositiveIntegerField(default=1000, validators=_bounded("max_wait_ms"))
    timeout_ms = models.PositiveIntegerField(default=3000, validators=_bounded("timeout_ms"))
    max_retries = models.PositiveSmallIntegerField(default=1, validators=_bounded("max_retries"))
    retry_delay_ms = models.PositiveIntegerField(default=1000, validators=_bounded("retry_delay_ms"))

    auth_mode = models.CharField(max_length=10, choices=AuthMode.choices, default=AuthMode.NONE)
    signing_algorithm = models.CharField(
        max_length=10, choices=SigningAlgorithm.choices, default=SigningAlgorithm.SHA256
    )
    signing_header = models.CharField(max_length=100, default="X-Signature")
    signing_key = EncryptedTextField(blank=True, default="")
    # The key being rotated in ("" when no rotation is under way).
    new_signing_key = EncryptedTextField(blank=True, default="")
    # null: no key rotation is under way.
    key_rotation_started_at = models.DateTimeField(null=True, blank=True)
    oauth_token_url = models.CharField(max_length=2000, blank=True, default="")
    oauth_client_id = models.CharField(max_length=255, blank=True, default="")
    oauth_client_secret = EncryptedTextField(blank=True, default="")
    oauth_scope = models.CharField(max_length=500, blank=True, default="")
    oauth_client_auth = models.CharField(
        max_length=10, choices=OAuthClientAuth.choices, default=OAuthClientAuth.BASIC
    )

    # Batch mode bookkeeping. null: no batch has been cut yet.
    batch_cutoff_seq = models.BigIntegerField(null=True, blank=True, editable=False)
    # null: no batch has been sent yet.
    last_batch_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The latest delivery's outcome, copied here so list pages need no joins.
    # null: nothing delivered or failed yet.
    last_delivery_status = models.CharField(max_length=20, blank=True, default="", editable=False)
    last_delivery_at = models.DateTimeField(null=True, blank=True, editable=False)

    # The circuit breaker (CONTRACT §7). The state below is shared by every worker
    # and changed only by `delivery.sending.circuit`, with conditional updates.
    circuit_breaker = models.BooleanField(default=True, help_text="Stop sending to a failing partner; probe.")
    circuit_failure_threshold = models.PositiveIntegerField(
        default=10, validators=_bounded("circuit_failure_threshold"),
        help_text="Consecutive failed attempts that open the circuit.",
    )
    circuit_state = models.CharField(
        max_length=10, choices=CircuitState.choices, default=CircuitState.CLOSED, editable=False
    )
    # null: the circuit is closed.
    circuit_opened_at = models.DateTimeField(null=True, blank=True, editable=False)
    circuit_next_probe_at = models.DateTimeField(null=True, blank=True, editable=False)
    # The wait before the next probe after this one fails: 30 s, doubling up to 15 min. 0: closed.
    circuit_probe_interval_s = models.PositiveIntegerField(default=0, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    # A partner's Retry-After (429/503): nothing is sent before then. null: no hold.
    hold_until = models.DateTimeField(null=True, blank=True, editable=False)

    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                name="destination_limits",
                condition=Q(timeout_ms__gte=100, timeout_ms__lte=30_000)
                & Q(max_retries__lte=5)
                & Q(retry_delay_ms__lte=60_000)
                & Q(max_users_per_request__gte=1, max_users_per_request__lte=10_000)
                & Q(max_wait_ms__lte=60_000)
                & Q(circuit_failure_threshold__gte=1, circuit_failure_threshold__lte=1000),
            ),
            models.CheckConstraint(
                name="destination_circuit_state", condition=Q(circuit_state__in=CircuitState.values)
            ),
            models.CheckConstraint(
                name="destination_batch_interval",
                condition=Q(batch_interval_hours__isnull=True) | Q(batch_interval_hours__gte=24),
            ),
            models.CheckConstraint(
                name="destination_auth_mode", condition=Q(auth_mode__in=AuthMode.values)
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_signing_key(self) -> bool:
        return bool(self.signing_key)

    @property
    def has_oauth_client_secret(self) -> bool:
        return bool(self.oauth_client_secret)


class Segment(models.Model):
    """An audience segment; its ID is the client's."""

    id = models.PositiveBigIntegerField(primary_key=True)
    name = models.CharField(max_length=255, blank=True, default="")
    # CONTRACT §4: 0..3650; far larger values overflow the expiry date (year 9999).
    ttl_days = models.PositiveIntegerField(
        default=120, validators=[MaxValueValidator(MAX_TTL_DAYS)], help_text="0 = never expires (0..3650)."
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.id} {self.name}".strip()


class MappingQuerySet(models.QuerySet):
    def active_on(self, day: dt.date) -> MappingQuerySet:
        """The mappings whose dates include `day` (both ends inclusive; no end date: never ends)."""
        return self.filter(start_date__lte=day).filter(Q(end_date__isnull=True) | Q(end_date__gte=day))


class Mapping(models.Model):
    """One segment sent to one destination as `value`, between two UTC dates."""

    destination = models.ForeignKey(Destination, on_delete=models.CASCADE, related_name="mappings")
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="mappings")
    value = models.CharField(max_length=255, help_text="Sent as Segment_ID; the segment ID by default.")
    start_date = models.DateField(default=utc_today)
    # null: the mapping never ends.
    end_date = models.DateField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = MappingQuerySet.as_manager()

    class Meta:
        ordering = ["destination_id", "segment_id"]
        constraints = [
            models.UniqueConstraint(fields=["destination", "segment"], name="one_mapping_per_pair"),
            models.CheckConstraint(
                name="mapping_dates_in_order",
                condition=Q(end_date__isnull=True) | Q(end_date__gte=models.F("start_date")),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.segment_id} → {self.destination_id} as {self.value}"

    def has_default_value(self) -> bool:
        """True when `value` is the segment ID: the default, which follows a change of segment.

        A value set explicitly to the segment ID reads the same and follows too.
        """
        return self.value == str(self.segment_id)

    def is_active_on(self, day: dt.date) -> bool:
        return self.start_date <= day and (self.end_date is None or day <= self.end_date)


class ChangeAction(models.TextChoices):
    CREATE = "create", "Created"
    UPDATE = "update", "Changed"
    DELETE = "delete", "Deleted"
    START_KEY_ROTATION = "start_key_rotation", "Started a key rotation"
    FINISH_KEY_ROTATION = "finish_key_rotation", "Finished a key rotation"
    CIRCUIT_OPENED = "circuit_opened", "Circuit opened"
    CIRCUIT_CLOSED = "circuit_closed", "Circuit closed"
    RESYNC = "resync", "Resync queued"


class ChangeSource(models.TextChoices):
    API = "api", "REST API"
    ADMIN = "admin", "Admin"
    CONSOLE = "console", "Console"
    SYSTEM = "system", "aamdest itself"


class ConfigChange(models.Model):
    """Who changed which configuration, when, through what (append-only; `destinations.audit`).

    `changes` maps each changed field to {"old": …, "new": …}; a secret field
    maps to the word "changed" and its values are never stored.
    """

    created_at = models.DateTimeField(default=timezone.now)
    # null: the user was deleted since; actor_name keeps who it was.
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    actor_name = models.CharField(max_length=150)
    source = models.CharField(max_length=10, choices=ChangeSource.choices)
    action = models.CharField(max_length=30, choices=ChangeAction.choices)
    object_type = models.CharField(max_length=30, help_text="destination, mapping or segment.")
    object_id = models.CharField(max_length=64)
    object_repr = models.CharField(max_length=300)
    # The destination the change concerns (itself, or a mapping's). null: a segment,
    # or a destination deleted since (object_id and object_repr still say which).
    destination = models.ForeignKey(
        Destination, null=True, blank=True, on_delete=models.SET_NULL, related_name="config_changes"
    )
    changes = models.JSONField(default=dict, blank=True, encoder=DjangoJSONEncoder)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            # The destination page's "recent changes": its latest rows.
            models.Index(fields=["destination", "-created_at"], name="config_change_destination"),
        ]

    def __str__(self) -> str:
        return f"{self.get_action_display()} {self.object_type} {self.object_repr} by {self.actor_name}"
