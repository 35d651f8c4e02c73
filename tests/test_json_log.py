"""JSON log lines (AAMDEST_LOG_FORMAT=json) never carry a request's query string."""

from __future__ import annotations

import json
import logging

from django.test import RequestFactory

from aamdest.logging import JsonFormatter


def test_a_logged_request_shows_its_method_and_path_without_the_query_string():
    # Given Django's request logger reporting a 503 with the request attached
    request = RequestFactory().get("/healthz", {"token": "hunter2"})
    record = logging.LogRecord("django.request", logging.ERROR, __file__, 1, "Service Unavailable: %s",
                               ("/healthz",), None)
    record.request = request
    record.status_code = 503

    # When
    line = JsonFormatter().format(record)

    # Then
    assert "hunter2" not in line
    assert json.loads(line)["request"] == "GET /healthz"
    assert json.loads(line)["status_code"] == 503
