"""POST /api/v1/events/: ingest up to 10,000 events, all or nothing (CONTRACT §5).

The body is read here rather than by DRF's parsers: Django's `request.body`
refuses bodies over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB), less than 10,000
events, and the gzip and NDJSON handling lives in `delivery.intake.bodies`.
DRF still authenticates and checks `destinations.permissions.RolePermission`.

Answers: 202 `{"accepted": N}` once the events are committed; 400
`{"errors": [{"index", "field", "message"}]}` (see `delivery.intake.bodies` for
when `index` is null); 411, 413 and 415 `{"detail": "..."}`.
After the commit, the destinations that got pending work are flushed
(`delivery.tasks.schedule_flushes`) and the events are counted for /metrics.
"""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from delivery import tasks
from delivery.api.throttling import EventsThrottle
from delivery.counters import count_events_ingested
from delivery.intake.bodies import MAX_BODY_BYTES, PayloadTooLarge, parse_events
from delivery.intake.events import IngestionError, InvalidEvents
from delivery.intake.membership import apply_events

_ERRORS = inline_serializer(
    "EventErrors",
    {"errors": serializers.ListField(child=serializers.DictField(), help_text="index, field, message")},
)


class LengthRequired(IngestionError):
    # Django reads no body without a Content-Length: a chunked one would look empty.
    status = 411


class EventsView(APIView):
    """Ingest events: a JSON array, or NDJSON (`application/x-ndjson`), optionally gzip-compressed."""

    required_permission = "delivery.add_device"
    parser_classes: list = []  # the body is read by `_read_body`
    throttle_classes = [EventsThrottle]

    @extend_schema(
        request={"application/json": {"type": "array", "items": {"type": "object"}},
                 "application/x-ndjson": {"type": "string"}},
        responses={
            202: inline_serializer("EventsAccepted", {"accepted": serializers.IntegerField()}),
            400: OpenApiResponse(_ERRORS, description="Invalid events: nothing was stored."),
            413: OpenApiResponse(description="More than 10,000 events, or a body over 64 MiB."),
            411: OpenApiResponse(description="A chunked body without Content-Length."),
            415: OpenApiResponse(description="Another Content-Type or Content-Encoding."),
        },
        examples=[OpenApiExample("qualification", request_only=True, value=[
            {"type": "qualification", "aam_uuid": "19393572368547369350319949416899715727",
             "segment_id": 14356, "datetime": "2016-07-27T16:17:22Z", "regions": [9]},
        ])],
    )
    def post(self, request: Request) -> Response:
        now = timezone.now()
        try:
            events = parse_events(
                body=_read_body(request),
                content_type=request.META.get("CONTENT_TYPE", ""),
                content_encoding=request.META.get("HTTP_CONTENT_ENCODING", ""),
                now=now,
            )
        except InvalidEvents as exc:
            return Response({"errors": [error.as_dict() for error in exc.errors]},
                            status=status.HTTP_400_BAD_REQUEST)
        except IngestionError as exc:
            return Response({"detail": str(exc)}, status=exc.status)
        result = apply_events(events=events, now=now)
        # robust: the events are stored whatever happens to the broker; beat's tick is the safety net.
        transaction.on_commit(lambda: _after_commit(result.destination_ids, len(events)), robust=True)
        return Response({"accepted": len(events)}, status=status.HTTP_202_ACCEPTED)


def _read_body(request: Request) -> bytes:
    """The raw body, at most MAX_BODY_BYTES (PayloadTooLarge beyond)."""
    length = request.META.get("CONTENT_LENGTH") or ""
    if not length and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        raise LengthRequired("Send the body with a Content-Length header; chunked bodies are not read.")
    try:
        declared = int(length or 0)
    except ValueError:
        declared = 0
    if declared > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    stream = request.stream  # None when the body is empty
    body = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
    if len(body) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"The body is larger than {MAX_BODY_BYTES} bytes.")
    return body


def _after_commit(destination_ids: set[int], accepted: int) -> None:
    count_events_ingested(accepted)
    if destination_ids:
        tasks.schedule_flushes(destination_ids)
