"""DRF exception handler: every API error is JSON, a database outage is 503."""

from __future__ import annotations

import logging
from typing import Any

from django.db import InterfaceError, OperationalError
from rest_framework.response import Response
from rest_framework.views import exception_handler

logger = logging.getLogger(__name__)


def handle_api_exception(exc: Exception, context: dict[str, Any]) -> Response | None:
    response = exception_handler(exc, context)
    if response is not None:
        return response
    if isinstance(exc, (OperationalError, InterfaceError)):
        logger.error("database unavailable: %s", exc.__class__.__name__)
        return Response({"detail": "The database is unavailable; try again shortly."}, status=503)
    logger.exception("unhandled API error")
    return Response({"detail": "Internal error; it has been logged."}, status=500)
