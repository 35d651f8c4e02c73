"""Names resolved within the deadline: a refusal or a slow resolver ends that transfer.

`getaddrinfo` has no timeout, so each lookup runs on a thread of its own and each transfer waits
for it at most until its deadline. One host whose DNS hangs must not starve the others (CONTRACT §2
isolation), however many hang: there is no shared pool to fill. The lookups of one origin are shared
(callers for the same scheme, host and port wait on the one lookup in flight), and at most
`MAX_STUCK_PER_ORIGIN` hung lookups of an origin hold a thread, however many deliveries want it, so
threads are bounded by the origins configured. A lookup's answer is not cached beyond its callers:
`resolve_target` runs again for the next request.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from urllib.parse import urlsplit

from delivery.sending.http.messages import Transfer, unbuildable
from destinations.network import AddressRefused, Target, resolve_target

MAX_STUCK_PER_ORIGIN = 2
# A lookup still running after this long counts as stuck: a new caller may start another one.
STUCK_AFTER_S = 30.0


def resolve_all(transfers: list[Transfer]) -> None:
    """Resolve every URL concurrently; a refusal or a slow resolver ends that transfer."""
    futures = [_lookups().lookup(transfer.request.url) for transfer in transfers]
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


@dataclass
class _Flight:
    future: Future[Target]
    started: float


class _Lookups:
    """Single-flight lookups per origin, one per process (threads do not survive fork)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[str, list[_Flight]] = {}

    def lookup(self, url: str) -> Future[Target]:
        key = _origin_key(url)
        with self._lock:
            flights = [flight for flight in self._flights.get(key, []) if not flight.future.done()]
            fresh = [f for f in flights if time.monotonic() - f.started < STUCK_AFTER_S]
            if fresh or len(flights) >= MAX_STUCK_PER_ORIGIN:
                return (fresh or flights)[-1].future
            # The URL itself is resolved (its path does not matter to the lookup, only its origin).
            flight = _Flight(_resolve_aside(url), time.monotonic())
            self._flights[key] = [*flights, flight]
            return flight.future


def _resolve_aside(url: str) -> Future[Target]:
    """`resolve_target(url)` on a daemon thread of its own; a hung lookup holds only that thread."""
    future: Future[Target] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(resolve_target(url))
        except BaseException as error:  # handed to the waiting transfers, which name it
            future.set_exception(error)

    threading.Thread(target=run, name="aamdest-resolve", daemon=True).start()
    return future


def _origin_key(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2].lower()}"
    except ValueError:
        return url


@functools.cache
def _lookups_for(pid: int) -> _Lookups:
    return _Lookups()


def _lookups() -> _Lookups:
    return _lookups_for(os.getpid())
