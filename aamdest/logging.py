"""JSON log lines for AAMDEST_LOG_FORMAT=json."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import orjson
from django.http import HttpRequest

_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def _loggable(value: object) -> object:
    # Django's request logger passes the request, whose repr holds the query string: a client may
    # put a token there. Its method and path say enough.
    if isinstance(value, HttpRequest):
        return f"{value.method} {value.path}"
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                line[key] = _loggable(value)
        if record.exc_text:  # already formatted (and masked by aamdest.redaction)
            line["exception"] = record.exc_text
        elif record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()
