"""What goes in and out of `delivery.sending.http`, and one request on its way."""

from __future__ import annotations

import datetime as dt
import re
import time
from dataclasses import dataclass, field

import pycurl

from destinations.network import Target

BODY_CAP_BYTES = 1024 * 1024
EXCERPT_CHARS = 1000
# Headers kept of an answer: past this, a partner's flood of headers is read and dropped.
HEADERS_CAP_BYTES = 64 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class HttpRequest:
    url: str
    body: bytes
    headers: dict[str, str]
    timeout_ms: int
    method: str = "POST"

    def __post_init__(self) -> None:
        if not isinstance(self.timeout_ms, int) or self.timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be a positive number of milliseconds, not {self.timeout_ms!r}")
        if not _TOKEN.fullmatch(self.method):
            raise ValueError(f"method {self.method!r} is not an HTTP method")
        for name, value in self.headers.items():
            # CR or LF would let a value smuggle in extra headers.
            if not _TOKEN.fullmatch(name) or any(ch in str(value) for ch in "\r\n\0"):
                raise ValueError(f"header {name!r} has an invalid name or a line break in its value")


@dataclass(frozen=True)
class HttpResult:
    # None: no status line arrived.
    status_code: int | None
    duration_ms: int
    # None on success, else a delivery.models.FailureReason value.
    reason: str | None
    error: str
    response_excerpt: str
    started_at: dt.datetime
    body: bytes = field(repr=False)
    # The final answer's headers, names in lower case (the last of a repeated header wins);
    # {} when no answer came. Read for Retry-After (`delivery.sending.backoff`).
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_success(self) -> bool:
        return self.status_code == 200 and self.reason is None


def unbuildable(error: ValueError | UnicodeError) -> str:
    """The error of a request that could not be built; never a header value (headers hold secrets)."""
    # HttpRequest's own ValueErrors name a header, never its value.
    why = "its URL or a header has a non-ASCII character" if isinstance(error, UnicodeError) else str(error)
    return f"not sent: the request could not be built: {why}"


class Transfer:
    """One request on its way: its handle, its clock and the bytes received so far."""

    def __init__(self, request: HttpRequest) -> None:
        self.request = request
        self.started_at = dt.datetime.now(dt.UTC)
        self.started = time.monotonic()
        self.target: Target | None = None
        self.handle: pycurl.Curl | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.result: HttpResult | None = None
        self.is_clean = True
        self.headers: dict[str, str] = {}
        self.headers_size = 0

    def remaining_ms(self) -> int:
        return self.request.timeout_ms - self.elapsed_ms()

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def receive(self, data: bytes) -> None:
        # Past the cap the body is read and dropped, so the exchange can still finish.
        if self.size < BODY_CAP_BYTES:
            self.chunks.append(data[: BODY_CAP_BYTES - self.size])
        self.size += len(data)

    def receive_header(self, line: bytes) -> None:
        # A status line starts a new answer (after a 100 Continue, say): only the last one's headers count.
        if line.startswith(b"HTTP/"):
            self.headers.clear()
            return
        self.headers_size += len(line)
        name, colon, value = line.decode("latin-1").partition(":")
        if colon and self.headers_size <= HEADERS_CAP_BYTES:
            self.headers[name.strip().lower()] = value.strip()

    def outcome(self) -> HttpResult:
        assert self.result is not None, "every transfer ends with a result"
        return self.result

    def finish(self, *, status_code: int | None, reason: str | None, error: str) -> None:
        body = b"".join(self.chunks)
        self.result = HttpResult(
            status_code=status_code,
            duration_ms=self.elapsed_ms(),
            reason=reason,
            error=error,
            response_excerpt=body.decode("utf-8", errors="replace")[:EXCERPT_CHARS],
            started_at=self.started_at,
            body=body,
            headers=dict(self.headers),
        )
