"""A request for the HTTP tests to send."""

from __future__ import annotations

from delivery.sending.http import HttpRequest


def request_to(url: str, *, timeout_ms: int = 3000, headers: dict[str, str] | None = None) -> HttpRequest:
    return HttpRequest(url=url, body=b'{"Users": []}', headers=headers or {}, timeout_ms=timeout_ms)
