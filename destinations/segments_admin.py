"""Deleting segments in the admin: one at a time, through `destinations.services.delete_segments`.

The service waits for the ingestions writing to the segment, then deletes what they wrote too, and
gives up rather than wait long (`SegmentBusy`): the delete page then says so and nothing is deleted
(no "deleted successfully", no log entry). The changelist's bulk "Delete selected" action is not
offered: each deletion cascades to every membership of its segment.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from destinations import services
from destinations.models import ChangeSource, Segment


class SegmentDeletionMixin:
    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions: dict[str, Any] = super().get_actions(request)  # type: ignore[misc]
        actions.pop("delete_selected", None)
        return actions

    def delete_model(self, request: HttpRequest, obj: Segment) -> None:
        services.delete_segments(segment_ids=[obj.pk], actor=request.user, source=ChangeSource.ADMIN)

    def delete_view(self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None,
                    ) -> HttpResponse:
        try:
            return super().delete_view(request, object_id, extra_context)  # type: ignore[misc]
        except services.SegmentBusy as busy:  # raised out of the view's transaction: all rolled back
            self.message_user(request, str(busy), messages.ERROR)  # type: ignore[attr-defined]
            return HttpResponseRedirect(request.path)
