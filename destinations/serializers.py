"""API shapes of destinations, mappings and segments (CONTRACT §5).

Serializers translate and check input; the rules they apply live in
`destinations.configuration` and `destinations.network`, shared with the admin.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from destinations.configuration import CONFIGURABLE_FIELDS, find_configuration_errors, validate_header_name
from destinations.models import AuthMode, Destination, Mapping, Segment, utc_today
from destinations.network import validate_url

_SECRET_MAX_LENGTH = 4096
_BIGINT_MAX = 2**63 - 1
# What the OpenAPI document states a partner URL looks like: https, a host name, an optional port
# and path. `destinations.network.validate_url` is the rule (it also refuses addresses that are
# not public); the pattern lets a client, or a fuzzer, build URLs it will accept.
HTTPS_URL_PATTERN = (
    r"^https://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
    r"(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~%!$&'()*+,;=:@/-]*)?$"
)
HEADER_NAME_PATTERN = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"
# The circuit breaker's state (CONTRACT §7), read-only: only aamdest moves it.
CIRCUIT_FIELDS = ["circuit_state", "circuit_opened_at", "circuit_next_probe_at", "consecutive_failures"]


@extend_schema_field({"type": "string", "maxLength": 2000, "pattern": HTTPS_URL_PATTERN})
class PartnerUrlField(serializers.CharField):
    """A partner URL; checked by the serializer's validate_<field> (`check_url`)."""


@extend_schema_field({"type": "string", "minLength": 1, "maxLength": 96, "pattern": HEADER_NAME_PATTERN})
class HeaderNameField(serializers.CharField):
    """An HTTP header name (`destinations.configuration.validate_header_name`)."""


def _secret_field() -> serializers.CharField:
    return serializers.CharField(
        write_only=True,
        required=False,
        allow_blank=True,
        max_length=_SECRET_MAX_LENGTH,
        style={"input_type": "password"},
    )


def check_url(value: str, *, field: str) -> str:
    """Return `value` when aamdest may send there; raise a DRF error naming `field` otherwise."""
    try:
        validate_url(value, field=field)
    except DjangoValidationError as error:
        raise serializers.ValidationError(error.messages) from None
    return value


class DestinationSerializer(serializers.ModelSerializer):
    """A destination; its secrets can be written but are never read back."""

    signing_key = _secret_field()
    oauth_client_secret = _secret_field()
    has_signing_key = serializers.BooleanField(read_only=True)
    url = PartnerUrlField(max_length=2000, help_text="The partner's HTTPS endpoint.")
    oauth_token_url = PartnerUrlField(max_length=2000, required=False, allow_blank=True)
    signing_header = HeaderNameField(
        max_length=100, required=False, validators=[validate_header_name],
        help_text="The header carrying the HMAC signature; X-Signature by default.",
    )
    has_oauth_client_secret = serializers.BooleanField(read_only=True)
    # The backlog (CONTRACT §7), annotated by the viewset's queryset (`services.with_backlog`);
    # a destination just created has none.
    pending_devices = serializers.IntegerField(
        read_only=True, default=0, help_text="Devices waiting for a real-time request."
    )
    oldest_pending_at = serializers.DateTimeField(
        read_only=True, default=None, allow_null=True,
        help_text="Since when the oldest pending device waits; null when none does.",
    )

    class Meta:
        model = Destination
        fields = [
            "id",
            *CONFIGURABLE_FIELDS,
            "has_signing_key",
            "has_oauth_client_secret",
            "key_rotation_started_at",
            *CIRCUIT_FIELDS,
            "pending_devices",
            "oldest_pending_at",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["key_rotation_started_at", *CIRCUIT_FIELDS, "created_at", "updated_at"]
        extra_kwargs = {
            "user_dpid": {"min_value": 1, "max_value": _BIGINT_MAX},
            "aam_destination_id": {"min_value": 1, "max_value": _BIGINT_MAX},
        }

    def validate_url(self, value: str) -> str:
        return check_url(value, field="url")

    def validate_oauth_token_url(self, value: str) -> str:
        return check_url(value, field="oauth_token_url") if value else value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        given = [name for name in ("signing_key", "oauth_client_secret") if attrs.get(name)]
        errors = find_configuration_errors(current=self.instance, changes=attrs, given_secrets=given)
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class RotateSigningKeySerializer(serializers.Serializer):
    key = serializers.CharField(
        max_length=_SECRET_MAX_LENGTH, write_only=True, style={"input_type": "password"}
    )


class TestResultSerializer(serializers.Serializer):
    """The outcome of `POST destinations/{id}/test/`: its last attempt."""

    status_code = serializers.IntegerField(allow_null=True, help_text="null when the partner did not answer.")
    duration_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_null=True, help_text="null when the partner answered 200.")


class DetailSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ResyncSerializer(serializers.Serializer):
    """The body of `POST destinations/{id}/resync/`."""

    since = serializers.DateTimeField(
        required=False, allow_null=True,
        help_text="ISO 8601 (UTC without a zone). Only the devices of the deliveries that failed since "
                  "then; absent: every device with an active mapping.",
    )


class ResyncResultSerializer(serializers.Serializer):
    devices = serializers.IntegerField(help_text="The devices queued for a fresh full-state send.")


class MappingSerializer(serializers.ModelSerializer):
    """A segment sent to a destination; an unknown segment ID is created by the view."""

    segment_id = serializers.IntegerField(min_value=1, max_value=_BIGINT_MAX)
    value = serializers.CharField(
        required=False, max_length=255, help_text="Sent as Segment_ID; the segment ID by default."
    )
    start_date = serializers.DateField(required=False, help_text="UTC today by default.")
    end_date = serializers.DateField(required=False, allow_null=True, help_text="null: never ends.")

    class Meta:
        model = Mapping
        fields = ["id", "destination", "segment_id", "value", "start_date", "end_date"]
        # The one-mapping-per-pair rule is checked in validate(), naming segment_id.
        validators: list = []

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        current = self.instance
        start = attrs.get("start_date", current.start_date if current else utc_today())
        end = attrs.get("end_date", current.end_date if current else None)
        if end is not None and end < start:
            raise serializers.ValidationError(
                {"end_date": f"end_date must not be before start_date ({start})."}
            )
        destination, segment_id = self._mapped_pair(attrs)
        clash = Mapping.objects.filter(destination=destination, segment_id=segment_id)
        if current is not None:
            clash = clash.exclude(pk=current.pk)
        if clash.exists():
            raise serializers.ValidationError(
                {"segment_id": f"Segment {segment_id} is already mapped to destination {destination.pk}."}
            )
        if current is None:
            attrs.setdefault("value", str(segment_id))
            attrs.setdefault("start_date", start)
        elif "value" not in attrs and current.has_default_value():
            attrs["value"] = str(segment_id)  # the default follows a change of segment (CONTRACT §4)
        return attrs


    def _mapped_pair(self, attrs: dict[str, Any]) -> tuple[Destination, int]:
        """The destination and segment ID after this change (both are required on create)."""
        current = self.instance
        if current is None:
            return attrs["destination"], attrs["segment_id"]
        return attrs.get("destination", current.destination), attrs.get("segment_id", current.segment_id)

class SegmentSerializer(serializers.ModelSerializer):
    """A segment; its ID is the client's and cannot change."""

    class Meta:
        model = Segment
        fields = ["id", "name", "ttl_days"]
        extra_kwargs = {
            "id": {
                "min_value": 1,
                "max_value": _BIGINT_MAX,
                "help_text": "The segment ID, chosen by the client.",
            },
            "ttl_days": {
                "help_text": "Days a membership lasts after its latest qualification; 0 = never expires."
            },
        }

    def get_fields(self) -> dict[str, serializers.Field]:
        fields = super().get_fields()
        if self.instance is not None:
            fields["id"].required = False  # PUT may leave the ID out: it is in the URL
        return fields

    def validate_id(self, value: int) -> int:
        if self.instance is not None and value != self.instance.pk:
            raise serializers.ValidationError(
                "The segment ID cannot be changed; create a new segment instead."
            )
        return value


class SegmentUpdateSerializer(SegmentSerializer):
    """PUT's and PATCH's body as the OpenAPI document states it: the ID is the URL's.

    Documentation only: SegmentSerializer reads the body, and refuses an ID other than the URL's.
    """

    class Meta(SegmentSerializer.Meta):
        read_only_fields = ["id"]


def _required_for(auth_mode: str, *names: str) -> dict[str, Any]:
    properties: dict[str, Any] = {name: {"minLength": 1} for name in names}
    properties["auth_mode"] = {"enum": [auth_mode]}
    return {"properties": properties, "required": ["auth_mode", *names]}


# Fields required together on a new or replaced destination (`find_configuration_errors`):
# hmac needs a signing key, oauth2 its token URL and client credentials.
REQUIRED_TOGETHER = [
    {"properties": {"auth_mode": {"enum": [AuthMode.NONE.value]}}},
    _required_for(AuthMode.HMAC.value, "signing_key"),
    _required_for(AuthMode.OAUTH2.value, "oauth_token_url", "oauth_client_id", "oauth_client_secret"),
]


def state_fields_required_together(result: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular postprocessing hook: add REQUIRED_TOGETHER to the destination request body."""
    component = result.get("components", {}).get("schemas", {}).get("DestinationRequest")
    if component is not None:
        component["anyOf"] = REQUIRED_TOGETHER
    return result
