"""Turn a database outage into a JSON 503 instead of a bare 500 (CONTRACT §5)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse

logger = logging.getLogger(__name__)


class DatabaseUnavailableMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (OperationalError, InterfaceError)):
            logger.error("database unavailable: %s", exception.__class__.__name__)
            return JsonResponse(
                {"detail": "The database is unavailable; try again shortly."}, status=503
            )
        if isinstance(exception, DatabaseError):
            logger.exception("database error")
            return JsonResponse({"detail": "A database error occurred."}, status=500)
        return None
