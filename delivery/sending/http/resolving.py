"""Names resolved within the deadline: a refusal or a slow resolver ends that transfer."""

from __future__ import annotations

import functools
import os
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from delivery.sending.http.messages import Transfer, unbuildable
from destinations.network import AddressRefused, Target, resolve_target


def resolve_all(transfers: list[Transfer]) -> None:
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
