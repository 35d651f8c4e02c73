"""The one place that talks HTTP (STYLE habit 4), on libcurl through pycurl.

Why pycurl: `TIMEOUT_MS` is a deadline over the whole exchange (connect, TLS
handshake, send, status line, headers, body), so a partner that trickles bytes
or stalls the handshake cannot hold an attempt past it; per-read socket
timeouts (requests, urllib3) cannot promise that (SPEC §2).

Every request:
- is checked and resolved by `destinations.network.resolve_target` (within the
  deadline), then connects only to the checked addresses (`CURLOPT_RESOLVE`),
  so TLS SNI and certificate checks still use the host name;
- verifies TLS against the system CAs plus `AAMDEST_CA_BUNDLE`;
- never follows redirects, never uses a proxy, never sends `Expect: 100-continue`;
- returns an `HttpResult` instead of raising for network problems.

Connections are kept alive: each thread owns one `CurlMulti` (which holds the
connection cache) and a few idle `Curl` handles.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import hashlib
import logging
import os
import re
import shutil
import ssl
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

import certifi
import pycurl
from django.conf import settings

from destinations.addresses import parse_ip_literal
from destinations.network import AddressRefused, Target, resolve_target

logger = logging.getLogger(__name__)

BODY_CAP_BYTES = 1024 * 1024
EXCERPT_CHARS = 1000
IDLE_HANDLES_PER_THREAD = 32
CACHED_CONNECTIONS_PER_THREAD = 64
# Longest wait in the event loop before asking libcurl again.
MAX_WAIT_S = 0.05

# libcurl's TLS errors: handshake, certificates, pinning, revocation.
TLS_ERRORS = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})
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

    @property
    def is_success(self) -> bool:
        return self.status_code == 200 and self.reason is None


def unbuildable(error: ValueError | UnicodeError) -> str:
    """The error of a request that could not be built; never a header value (headers hold secrets)."""
    # HttpRequest's own ValueErrors name a header, never its value.
    why = "its URL or a header has a non-ASCII character" if isinstance(error, UnicodeError) else str(error)
    return f"not sent: the request could not be built: {why}"


def post(request: HttpRequest) -> HttpResult:
    """Send one request and return what happened; never raises for network problems."""
    return post_many([request])[0]


def post_many(requests: list[HttpRequest]) -> list[HttpResult]:
    """Send `requests` concurrently, each with its own deadline; results in the same order."""
    transfers = [_Transfer(request) for request in requests]
    _resolve_all(transfers)
    _transfer_all([transfer for transfer in transfers if transfer.result is None])
    results = [transfer.outcome() for transfer in transfers]
    for result, request in zip(results, requests, strict=True):
        _log(request, result)
    return results


def _transfer_all(transfers: list[_Transfer]) -> None:
    pool = _thread_pool()
    added: list[_Transfer] = []
    try:
        for transfer in transfers:
            transfer.handle = pool.take()
            try:
                _configure(transfer)
            except (ValueError, UnicodeError) as error:
                # One request libcurl cannot take fails alone; the others still go.
                transfer.is_clean = False
                transfer.finish(status_code=None, reason="connection", error=unbuildable(error))
                continue
            pool.multi.add_handle(transfer.handle)
            added.append(transfer)
        _drive(pool.multi, {id(transfer.handle): transfer for transfer in added})
    finally:
        for transfer in added:
            pool.multi.remove_handle(transfer.handle)
        for transfer in transfers:
            if transfer.handle is not None:
                pool.give_back(transfer.handle, is_clean=transfer.is_clean and transfer.result is not None)


class _Transfer:
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

    def remaining_ms(self) -> int:
        return self.request.timeout_ms - self.elapsed_ms()

    def elapsed_ms(self) -> int:
        return int((time.monotonic() - self.started) * 1000)

    def receive(self, data: bytes) -> None:
        # Past the cap the body is read and dropped, so the exchange can still finish.
        if self.size < BODY_CAP_BYTES:
            self.chunks.append(data[: BODY_CAP_BYTES - self.size])
        self.size += len(data)

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
        )


# --- Resolution, within the deadline ------------------------------------------


def _resolve_all(transfers: list[_Transfer]) -> None:
    """Resolve every URL concurrently; a refusal or a slow resolver ends that transfer."""
    executor = _resolver_executor()
    futures: list[Future[Target]] = [executor.submit(resolve_target, t.request.url) for t in transfers]
    for transfer, future in zip(transfers, futures, strict=True):
        try:
            transfer.target = future.result(timeout=max(transfer.remaining_ms(), 0) / 1000)
        except AddressRefused as refused:
            transfer.finish(status_code=None, reason="connection", error=f"not sent: {refused}")
        except (ValueError, UnicodeError) as error:
            transfer.finish(status_code=None, reason="connection", error=unbuildable(error))
        except FutureTimeout:
            timeout_ms = transfer.request.timeout_ms
            transfer.finish(
                status_code=None, reason="timeout", error=f"no address for the host within {timeout_ms} ms"
            )


@functools.cache
def _executor_for(pid: int) -> ThreadPoolExecutor:
    # Name lookups block in getaddrinfo with no timeout of their own: run them
    # aside so the deadline holds. One executor per process (threads do not survive fork).
    return ThreadPoolExecutor(max_workers=8, thread_name_prefix="aamdest-resolve")


def _resolver_executor() -> ThreadPoolExecutor:
    return _executor_for(os.getpid())


# --- Handles and connections ---------------------------------------------------


class _Pool:
    """One thread's CurlMulti (holding its kept-alive connections) and idle handles."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.multi = pycurl.CurlMulti()
        self.multi.setopt(pycurl.M_MAXCONNECTS, CACHED_CONNECTIONS_PER_THREAD)
        self.idle: list[pycurl.Curl] = []

    def take(self) -> pycurl.Curl:
        handle = self.idle.pop() if self.idle else pycurl.Curl()
        handle.reset()
        return handle

    def give_back(self, handle: pycurl.Curl, *, is_clean: bool) -> None:
        # A handle that hit an error is closed, not reused.
        if is_clean and len(self.idle) < IDLE_HANDLES_PER_THREAD:
            self.idle.append(handle)
        else:
            handle.close()


_local = threading.local()


def _thread_pool() -> _Pool:
    pool: _Pool | None = getattr(_local, "pool", None)
    if pool is None or pool.pid != os.getpid():  # a forked child must not share the parent's sockets
        pool = _local.pool = _Pool()
    return pool


def _configure(transfer: _Transfer) -> None:
    request, target, handle = transfer.request, transfer.target, transfer.handle
    assert target is not None and handle is not None
    handle.setopt(pycurl.URL, request.url)
    handle.setopt(pycurl.PROTOCOLS, _allowed_protocols())
    handle.setopt(pycurl.FOLLOWLOCATION, 0)
    handle.setopt(pycurl.PROXY, "")  # ignore *_proxy variables: the checked address is the one reached
    handle.setopt(pycurl.NOSIGNAL, 1)
    # Both the same: connect time counts against the whole-exchange deadline.
    timeout_ms = max(transfer.remaining_ms(), 1)
    handle.setopt(pycurl.TIMEOUT_MS, timeout_ms)
    handle.setopt(pycurl.CONNECTTIMEOUT_MS, timeout_ms)
    handle.setopt(pycurl.SSL_VERIFYPEER, 1)
    handle.setopt(pycurl.SSL_VERIFYHOST, 2)
    handle.setopt(pycurl.CAINFO, ca_file())
    if parse_ip_literal(target.host) is None:
        handle.setopt(pycurl.RESOLVE, [_resolve_entry(target)])
    handle.setopt(pycurl.HTTPHEADER, _header_lines(request.headers))
    if not any(name.lower() == "user-agent" for name in request.headers):
        handle.setopt(pycurl.USERAGENT, f"aamdest/{settings.VERSION}")
    if request.method != "POST":
        handle.setopt(pycurl.CUSTOMREQUEST, request.method)
    if request.method != "GET" or request.body:
        handle.setopt(pycurl.POSTFIELDS, request.body)
    handle.setopt(pycurl.WRITEFUNCTION, transfer.receive)


def _allowed_protocols() -> int:
    return pycurl.PROTO_HTTPS | (pycurl.PROTO_HTTP if settings.AAMDEST_ALLOW_HTTP else 0)


def _resolve_entry(target: Target) -> str:
    addresses = target.addresses or (target.address,)
    shown = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    return f"{target.host}:{target.port}:{shown}"


def _header_lines(headers: dict[str, str]) -> list[str]:
    # "Name;" is curl's way to send an empty value; "Expect:" drops 100-continue.
    lines = [f"{name}: {value}" if value else f"{name};" for name, value in headers.items()]
    return [*lines, "Expect:"]


# --- The event loop ------------------------------------------------------------


def _drive(multi: pycurl.CurlMulti, transfers: dict[int, _Transfer]) -> None:
    """Run the multi handle until every transfer ended (libcurl enforces each deadline)."""
    remaining = len(transfers)
    while remaining:
        while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
            pass
        while True:
            queued, succeeded, failed = multi.info_read()
            for handle in succeeded:
                _complete(transfers[id(handle)], errno=0, message="")
            for handle, errno, message in failed:
                _complete(transfers[id(handle)], errno=errno, message=message)
            remaining -= len(succeeded) + len(failed)
            if not queued:
                break
        if remaining:
            _wait(multi)


def _wait(multi: pycurl.CurlMulti) -> None:
    timeout_ms = multi.timeout()
    wait_s = MAX_WAIT_S if timeout_ms < 0 else min(timeout_ms / 1000, MAX_WAIT_S)
    if wait_s <= 0:
        return
    if any(multi.fdset()):
        multi.select(wait_s)
    else:
        time.sleep(min(wait_s, 0.005))  # select() returns at once when curl has no socket yet


def _complete(transfer: _Transfer, *, errno: int, message: str) -> None:
    handle = transfer.handle
    assert handle is not None
    status_code = handle.getinfo(pycurl.RESPONSE_CODE) or None
    if errno:
        transfer.is_clean = False
        reason, error = _describe_error(transfer, errno=errno, message=message, status_code=status_code)
        transfer.finish(status_code=status_code, reason=reason, error=error)
    elif status_code == 200:
        transfer.finish(status_code=200, reason=None, error="")
    else:
        location = handle.getinfo(pycurl.REDIRECT_URL)
        transfer.finish(status_code=status_code, reason="status", error=_status_error(status_code, location))


def _status_error(status_code: int | None, location: str | None) -> str:
    if status_code is None:
        return "partner answered without a status code"
    try:
        text = f"{status_code} {HTTPStatus(status_code).phrase}"
    except ValueError:
        text = str(status_code)
    if location:
        return f"partner answered {text}: redirect to {location} not followed"
    return f"partner answered {text}"


def _describe_error(
    transfer: _Transfer, *, errno: int, message: str, status_code: int | None
) -> tuple[str, str]:
    """Return (reason, error) for a libcurl failure."""
    if errno == pycurl.E_OPERATION_TIMEDOUT:
        phase = _phase(transfer.handle, status_code=status_code)
        return "timeout", f"no complete answer within {transfer.request.timeout_ms} ms ({phase})"
    if errno in TLS_ERRORS:
        return "tls", f"TLS handshake failed: {message}"
    return "connection", f"connection failed: {message}"


def _phase(handle: pycurl.Curl | None, *, status_code: int | None) -> str:
    """Say where the exchange stood when the deadline hit."""
    assert handle is not None
    if status_code is not None:
        return f"partner answered {status_code} but the body was still arriving"
    if handle.getinfo(pycurl.CONNECT_TIME) == 0:
        return "still connecting"
    is_tls = urlsplit(handle.getinfo(pycurl.EFFECTIVE_URL)).scheme == "https"
    if is_tls and handle.getinfo(pycurl.APPCONNECT_TIME) == 0:
        return "stalled in the TLS handshake"
    return "waiting for the status line"


# --- Trust ---------------------------------------------------------------------


def ca_file() -> str:
    """The CA file libcurl verifies with: the system store, plus AAMDEST_CA_BUNDLE when set."""
    system = _system_ca_file()
    extra = settings.AAMDEST_CA_BUNDLE
    if not extra:
        return system
    stat = os.stat(extra)
    combined = _combined_ca_file(system, extra, stat.st_mtime_ns, stat.st_size, os.getpid())
    if not os.path.isfile(combined):  # removed behind our back (a /tmp cleaner): write it again
        _combined_ca_file.cache_clear()
        combined = _combined_ca_file(system, extra, stat.st_mtime_ns, stat.st_size, os.getpid())
    return combined


@functools.cache
def _system_ca_file() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return candidate
    return certifi.where()


@functools.lru_cache(maxsize=8)
def _combined_ca_file(system: str, extra: str, mtime_ns: int, size: int, pid: int) -> str:
    """Write the system CAs and `extra` into one file; a new name whenever `extra` changes.

    The file lives in a directory private to this process (a shared /tmp
    name could be planted by another user; a forked sibling's exit removes its own).
    """
    content = Path(system).read_bytes() + b"\n" + Path(extra).read_bytes()
    name = hashlib.sha256(f"{extra}|{mtime_ns}|{size}".encode()).hexdigest()[:16]
    path = _private_directory(pid) / f"ca-{name}.pem"
    # Written aside then renamed, so a concurrent transfer never reads half a file.
    partial = path.with_suffix(f".{threading.get_ident()}.tmp")
    partial.write_bytes(content)
    os.replace(partial, path)
    return str(path)


@functools.cache
def _private_directory(pid: int) -> Path:
    directory = Path(tempfile.mkdtemp(prefix=f"aamdest-ca-{pid}-"))
    atexit.register(_remove_directory, directory, pid)
    return directory


def _remove_directory(directory: Path, pid: int) -> None:
    if os.getpid() == pid:  # a forked child inherits the atexit list, not the directory
        shutil.rmtree(directory, ignore_errors=True)


def _log(request: HttpRequest, result: HttpResult) -> None:
    # Headers are never logged: they carry Authorization and signatures.
    parts = urlsplit(request.url)
    logger.debug(
        "%s %s://%s%s -> %s in %d ms %s",
        request.method, parts.scheme, parts.netloc.rpartition("@")[2], parts.path,
        result.status_code, result.duration_ms, result.error,
    )
