"""gunicorn's access log as JSON lines, for AAMDEST_LOG_FORMAT=json (aamdest/gunicorn.conf.py).

One object per request: time, method, path, status, duration, bytes sent, remote address and
user agent. Never the query string: a client may put a token or a secret there.
"""

from __future__ import annotations

import datetime as dt
import traceback
from typing import Any

import orjson
from gunicorn.glogging import Logger


def access_record(
    *, resp: Any, req: Any, environ: dict[str, Any], request_time: dt.timedelta
) -> dict[str, Any]:
    """The fields of one access log line, from what gunicorn hands its logger."""
    status = resp.status
    if isinstance(status, str):
        status = status.split(None, 1)[0]
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
        "level": "INFO",
        "logger": "gunicorn.access",
        "method": environ.get("REQUEST_METHOD"),
        "path": environ.get("PATH_INFO"),
        "status": int(status),
        "duration_ms": round(request_time.total_seconds() * 1000, 1),
        "bytes": getattr(resp, "sent", None),
        "remote_addr": environ.get("REMOTE_ADDR"),
        "user_agent": environ.get("HTTP_USER_AGENT"),
    }


class JsonAccessLogger(Logger):
    """gunicorn's logger, with `access()` writing one JSON object a line."""

    def access(self, resp: Any, req: Any, environ: dict[str, Any], request_time: dt.timedelta) -> None:
        if not self.access_log_enabled:
            return
        try:
            record = access_record(resp=resp, req=req, environ=environ, request_time=request_time)
            self.access_log.info(orjson.dumps(record).decode())
        except Exception:  # noqa: BLE001 -- as gunicorn's own: a log line must never fail a request
            self.error(traceback.format_exc())
