"""libcurl at work: per-thread handles and kept-alive connections, the event loop, and errors."""

from __future__ import annotations

import os
import threading
import time
from http import HTTPStatus
from urllib.parse import urlsplit

import pycurl
from django.conf import settings

from delivery.sending.http.messages import Transfer, unbuildable
from delivery.sending.http.pinning import pinned_socket_opener
from delivery.sending.http.trust import ca_file
from destinations.addresses import parse_ip_literal
from destinations.network import Target

IDLE_HANDLES_PER_THREAD = 32
CACHED_CONNECTIONS_PER_THREAD = 64
# Longest wait in the event loop before asking libcurl again.
MAX_WAIT_S = 0.05

# libcurl's TLS errors: handshake, certificates, pinning, revocation.
TLS_ERRORS = frozenset({35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91, 98})


def transfer_all(transfers: list[Transfer]) -> None:
    """Run every resolved transfer to its end on this thread's multi handle."""
    pool = _thread_pool()
    added: list[Transfer] = []
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


def _configure(transfer: Transfer) -> None:
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
    # Whatever curl makes of the host, it may only connect to an address that was checked.
    handle.setopt(pycurl.OPENSOCKETFUNCTION, pinned_socket_opener(target))
    handle.setopt(pycurl.HTTPHEADER, _header_lines(request.headers))
    if not any(name.lower() == "user-agent" for name in request.headers):
        handle.setopt(pycurl.USERAGENT, f"aamdest/{settings.VERSION}")
    if request.method != "POST":
        handle.setopt(pycurl.CUSTOMREQUEST, request.method)
    if request.method != "GET" or request.body:
        handle.setopt(pycurl.POSTFIELDS, request.body)
    handle.setopt(pycurl.WRITEFUNCTION, transfer.receive)
    handle.setopt(pycurl.HEADERFUNCTION, transfer.receive_header)


def _allowed_protocols() -> int:
    # pycurl ships no type information; its PROTO_* constants are ints.
    protocols: int = pycurl.PROTO_HTTPS | (pycurl.PROTO_HTTP if settings.AAMDEST_ALLOW_HTTP else 0)
    return protocols


def _resolve_entry(target: Target) -> str:
    addresses = target.addresses or (target.address,)
    shown = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
    return f"{target.host}:{target.port}:{shown}"


def _header_lines(headers: dict[str, str]) -> list[str]:
    # "Name;" is curl's way to send an empty value; "Expect:" drops 100-continue.
    lines = [f"{name}: {value}" if value else f"{name};" for name, value in headers.items()]
    return [*lines, "Expect:"]


# --- The event loop ------------------------------------------------------------


def _drive(multi: pycurl.CurlMulti, transfers: dict[int, Transfer]) -> None:
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


def _complete(transfer: Transfer, *, errno: int, message: str) -> None:
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
    transfer: Transfer, *, errno: int, message: str, status_code: int | None
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
