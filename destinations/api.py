"""/api/v1/destinations/, mappings/ and segments/ (CONTRACT §5).

Plain CRUD through ModelViewSets; the destination actions (and a segment's deletion) translate the
request, call the operator action's service (`destinations.services`, the same one the admin and the
console call) and translate its result or error.
"""

from __future__ import annotations

from typing import Any, cast

from django.db import IntegrityError, transaction
from django.db.models import Model
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from destinations import services
from destinations.audit import record_change, snapshot
from destinations.models import ChangeAction, ChangeSource, Destination, Mapping, Segment
from destinations.serializers import (
    DestinationSerializer,
    DetailSerializer,
    MappingSerializer,
    ResyncResultSerializer,
    ResyncSerializer,
    RotateSigningKeySerializer,
    SegmentSerializer,
    SegmentUpdateSerializer,
    TestResultSerializer,
)

_CHANGE_DESTINATION = "destinations.change_destination"


def save_or_refuse(serializer: serializers.BaseSerializer, *, conflicts: dict[str, tuple[str, str]]) -> None:
    """Save in one transaction; a uniqueness race lost to another request becomes a 400 (`conflicts`:
    constraint name → (field, message)); the validators check uniqueness first."""
    try:
        with transaction.atomic():
            serializer.save()
    except IntegrityError as error:
        constraint = services.violated_constraint(error)
        if constraint not in conflicts:
            raise
        field, message = conflicts[constraint]
        raise serializers.ValidationError({field: message}) from None


def save_and_record(
    serializer: serializers.BaseSerializer, *, request: Request, conflicts: dict[str, tuple[str, str]]
) -> None:
    """`save_or_refuse`, recording the creation or update in the change log in the same transaction."""
    before = snapshot(serializer.instance) if serializer.instance is not None else None
    with transaction.atomic():
        save_or_refuse(serializer, conflicts=conflicts)
        action = ChangeAction.CREATE if before is None else ChangeAction.UPDATE
        instance = cast(Model, serializer.instance)  # set by the save above
        record_change(actor=request.user, source=ChangeSource.API, action=action, instance=instance,
                      before=before)


class RecordingViewSet(viewsets.ModelViewSet):
    """CRUD that records each deletion in the change log, in the deletion's transaction."""

    def perform_destroy(self, instance: Any) -> None:
        with transaction.atomic():
            actor = self.request.user
            record_change(actor=actor, source=ChangeSource.API, action=ChangeAction.DELETE, instance=instance)
            super().perform_destroy(instance)


class DestinationFilter(filters.FilterSet):
    class Meta:
        model = Destination
        fields = ["enabled", "realtime", "auth_mode"]


class DestinationViewSet(RecordingViewSet):
    """Partner endpoints, their delivery settings and credentials."""

    queryset = Destination.objects.all()
    serializer_class = DestinationSerializer
    filterset_class = DestinationFilter
    # The actions change a destination's state or send on its behalf (destinations.permissions).
    action_permissions = dict.fromkeys(
        ["rotate_signing_key", "finish_key_rotation", "send_test", "send_batch", "close_circuit", "resync"],
        _CHANGE_DESTINATION,
    )
    _conflicts = {"destinations_destination_name_key": ("name", "destination with this name already exists.")}

    def get_queryset(self) -> Any:
        return services.with_backlog(Destination.objects.all())

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        save_and_record(serializer, request=self.request, conflicts=self._conflicts)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        save_and_record(serializer, request=self.request, conflicts=self._conflicts)

    @extend_schema(
        request=RotateSigningKeySerializer,
        responses={
            200: DestinationSerializer,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT,
                description='{"key": [...]}: the key is missing; {"detail": ...}: auth_mode is not hmac.',
            ),
            409: OpenApiResponse(DetailSerializer, description="A rotation is already under way."),
        },
    )
    @action(detail=True, methods=["post"], url_path="rotate-signing-key")
    def rotate_signing_key(self, request: Request, pk: Any = None) -> Response:
        """Start a key rotation: partners get signatures by the old and the new key."""
        destination = self.get_object()
        payload = RotateSigningKeySerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            services.start_key_rotation(
                destination=destination, new_key=payload.validated_data["key"],
                actor=request.user, source=ChangeSource.API,
            )
        except services.RotationRefused as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        except services.RotationConflict as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(destination).data)

    @extend_schema(
        request=None,
        responses={
            200: DestinationSerializer,
            400: OpenApiResponse(DetailSerializer, description="auth_mode is not hmac."),
            409: OpenApiResponse(DetailSerializer, description="No rotation is under way."),
        },
    )
    @action(detail=True, methods=["post"], url_path="finish-key-rotation")
    def finish_key_rotation(self, request: Request, pk: Any = None) -> Response:
        """Finish a key rotation: the new key becomes the only one."""
        destination = self.get_object()
        try:
            services.finish_key_rotation(destination=destination, actor=request.user, source=ChangeSource.API)
        except services.RotationRefused as error:
            return Response({"detail": str(error)}, status=status.HTTP_400_BAD_REQUEST)
        except services.RotationConflict as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(self.get_serializer(destination).data)

    @extend_schema(request=None, responses={200: TestResultSerializer})
    @action(detail=True, methods=["post"], url_path="test")
    def send_test(self, request: Request, pk: Any = None) -> Response:
        """Send one sample document now, signed or authenticated like real traffic (kind `test`)."""
        outcome = services.send_test(destination=self.get_object())
        if not outcome.attempts:  # refused before any exchange; the delivery says why
            return Response({"status_code": None, "duration_ms": None, "error": "No attempt was made."})
        answer = {"status_code": outcome.status_code, "duration_ms": outcome.duration_ms}
        return Response({**answer, "error": outcome.error or None})

    @extend_schema(
        request=None, responses={202: DetailSerializer, 409: DetailSerializer, 503: DetailSerializer}
    )
    @action(detail=True, methods=["post"], url_path="send-batch")
    def send_batch(self, request: Request, pk: Any = None) -> Response:
        """Start the batch now: the changes since the last cut-off, as deliveries of kind `batch`."""
        destination = self.get_object()
        try:
            services.start_batch_now(destination=destination)
        except services.DestinationPaused as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        except services.BatchNotQueued as error:
            return Response({"detail": str(error)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response(
            {"detail": f"The batch of {destination.name} has started."}, status=status.HTTP_202_ACCEPTED
        )

    # ---- the circuit breaker (CONTRACT §7) ----

    @extend_schema(
        request=None,
        responses={
            200: OpenApiResponse(DestinationSerializer, description="Closed now; the backlog drains."),
            409: OpenApiResponse(DetailSerializer, description="The circuit is closed already."),
        },
    )
    @action(detail=True, methods=["post"], url_path="close-circuit")
    def close_circuit(self, request: Request, pk: Any = None) -> Response:
        """Close the destination's open circuit now: its backlog drains, ramping up (operators)."""
        destination = self.get_object()
        try:
            services.close_circuit(destination=destination, actor=request.user, source=ChangeSource.API)
        except services.CircuitAlreadyClosed as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        destination.refresh_from_db()
        return Response(self.get_serializer(destination).data)

    @extend_schema(
        request=ResyncSerializer,
        responses={
            202: ResyncResultSerializer,
            400: OpenApiResponse(
                OpenApiTypes.OBJECT, description='{"since": [...]}: not a time, or in the future.'
            ),
            409: OpenApiResponse(DetailSerializer, description="The destination is not real-time."),
            503: OpenApiResponse(DetailSerializer, description="The task broker is unavailable."),
        },
    )
    @action(detail=True, methods=["post"], url_path="resync")
    def resync(self, request: Request, pk: Any = None) -> Response:
        """Queue a fresh full-state real-time send of every device with an active mapping here.

        With `since`: only the devices of this destination's deliveries that failed since then.
        A paused destination accepts it; the devices go out on the resume.
        """
        destination = self.get_object()
        payload = ResyncSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        try:
            devices = services.resync(destination=destination, since=payload.validated_data.get("since"),
                                      actor=request.user, source=ChangeSource.API)
        except services.ResyncRefused as error:
            if error.field is not None:
                raise serializers.ValidationError({error.field: [str(error)]}) from None
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        except services.ResyncNotQueued as error:
            return Response({"detail": str(error)}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"devices": devices}, status=status.HTTP_202_ACCEPTED)


class MappingFilter(filters.FilterSet):
    # A number, not a model choice: an unknown destination filters to an empty page, not a 400.
    destination = filters.NumberFilter(field_name="destination_id")
    segment_id = filters.NumberFilter(field_name="segment_id")

    class Meta:
        model = Mapping
        fields = ["destination", "segment_id"]


class MappingViewSet(RecordingViewSet):
    """Which segment goes to which destination, as what, and between which UTC dates."""

    queryset = Mapping.objects.all()
    serializer_class = MappingSerializer
    filterset_class = MappingFilter
    _conflicts = {
        "one_mapping_per_pair": ("segment_id", "This segment is already mapped to this destination."),
        "mapping_dates_in_order": ("end_date", "end_date must not be before start_date."),
    }

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        self._save_with_segment(serializer)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        self._save_with_segment(serializer)

    def _save_with_segment(self, serializer: serializers.BaseSerializer) -> None:
        # A mapping may name a segment not configured yet (CONTRACT §4): it is created
        # with the default TTL, in the mapping's transaction so that nothing is half-stored.
        with transaction.atomic():
            segment_id = serializer.validated_data.get("segment_id")
            if segment_id is not None:
                Segment.objects.get_or_create(id=segment_id)
            save_and_record(serializer, request=self.request, conflicts=self._conflicts)


@extend_schema_view(
    update=extend_schema(request=SegmentUpdateSerializer),
    partial_update=extend_schema(request=SegmentUpdateSerializer),
    destroy=extend_schema(responses={204: None, 409: DetailSerializer}),  # 409: an ingestion writes to it
)
class SegmentViewSet(RecordingViewSet):
    """Audience segments; the client chooses their IDs."""

    queryset = Segment.objects.all()
    serializer_class = SegmentSerializer
    filterset_fields = ["ttl_days"]
    _conflicts = {"destinations_segment_pkey": ("id", "segment with this id already exists.")}

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        save_and_record(serializer, request=self.request, conflicts=self._conflicts)

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        segment_id = self.get_object().pk
        try:
            services.delete_segments(segment_ids=[segment_id], actor=request.user, source=ChangeSource.API)
        except services.SegmentBusy as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)

    def perform_update(self, serializer: serializers.BaseSerializer) -> None:
        segment = cast(Segment, serializer.instance)  # an update always has its instance
        ttl_days_before = segment.ttl_days
        save_and_record(serializer, request=self.request, conflicts=self._conflicts)
        if segment.ttl_days != ttl_days_before:
            # CONTRACT §4: a new TTL applies to the segment's existing memberships (a task, once committed).
            services.apply_segment_ttl_change(segment=segment)
