"""The one place that talks HTTP (STYLE habit 4), on libcurl through pycurl.

Why pycurl: `TIMEOUT_MS` is a deadline over the whole exchange (connect, TLS
handshake, send, status line, headers, body), so a partner that trickles bytes
or stalls the handshake cannot hold an attempt past it; per-read socket
timeouts (requests, urllib3) cannot promise that (CONTRACT §2).

Every request:
- is checked and resolved by `destinations.network.resolve_target` (within the
  deadline), then connects only to the checked addresses (`CURLOPT_RESOLVE`),
  so TLS SNI and certificate checks still use the host name;
- verifies TLS against the system CAs plus `AAMDEST_CA_BUNDLE`;
- never follows redirects, never uses a proxy, never sends `Expect: 100-continue`;
- returns an `HttpResult` instead of raising for network problems.

Connections are kept alive: each thread owns one `CurlMulti` (which holds the
connection cache) and a few idle `Curl` handles.

This module is the entry point (`post`, `post_many` and the names below);
its parts are `messages` (the request, the result, one transfer's clock and
body), `resolving` (names resolved within the deadline), `curl` (handles,
connections, the event loop, what went wrong) and `trust` (the CA file).
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from delivery.sending.http.curl import transfer_all
from delivery.sending.http.messages import BODY_CAP_BYTES, HttpRequest, HttpResult, Transfer, unbuildable
from delivery.sending.http.resolving import resolve_all
from delivery.sending.http.trust import ca_file

__all__ = ["BODY_CAP_BYTES", "HttpRequest", "HttpResult", "ca_file", "post", "post_many", "unbuildable"]

logger = logging.getLogger(__name__)


def post(request: HttpRequest) -> HttpResult:
    """Send one request and return what happened; never raises for network problems."""
    return post_many([request])[0]


def post_many(requests: list[HttpRequest]) -> list[HttpResult]:
    """Send `requests` concurrently, each with its own deadline; results in the same order."""
    transfers = [Transfer(request) for request in requests]
    resolve_all(transfers)
    transfer_all([transfer for transfer in transfers if transfer.result is None])
    results = [transfer.outcome() for transfer in transfers]
    for result, request in zip(results, requests, strict=True):
        _log(request, result)
    return results


def _log(request: HttpRequest, result: HttpResult) -> None:
    # Headers are never logged: they carry Authorization and signatures.
    parts = urlsplit(request.url)
    logger.debug(
        "%s %s://%s%s -> %s in %d ms %s",
        request.method, parts.scheme, parts.netloc.rpartition("@")[2], parts.path,
        result.status_code, result.duration_ms, result.error,
    )
