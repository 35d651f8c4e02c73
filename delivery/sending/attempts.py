"""One attempt round: headers (signature or bearer token), a concurrent post, `Attempt` rows, log lines.

`delivery.sending.rounds` decides what happens next (retry, delivered, failed); this
module makes the attempts and writes down what each one did. Log lines carry the
outcome, never a header: headers hold signatures and tokens.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from django.db import transaction
from django.utils import timezone

from delivery import counters, dialect
from delivery.models import Attempt, Delivery
from delivery.sending.http import HttpRequest, HttpResult, post_many, unbuildable
from delivery.sending.http.messages import EXCERPT_CHARS
from delivery.sending.redaction import redact_credentials, storable_answer, storable_text
from delivery.sending.token_endpoint import TokenError
from delivery.sending.tokens import discard_token, get_access_token
from destinations.models import AuthMode, Destination
from destinations.signing import signature_headers

logger = logging.getLogger("aamdest.delivery")


class AuthFailure(Exception):
    """No auth header could be made for an attempt (the token endpoint failed): reason `token`."""


@dataclass
class Sending:
    """A delivery on its way: the number of its next attempt and the lease this worker holds."""

    delivery: Delivery
    attempt_number: int
    lease: dt.datetime | None
    token: str = ""  # the bearer token of the current attempt ("" without OAuth)
    # What authenticated the current attempt (signatures, the Authorization value and its token):
    # taken out of whatever the partner answers before it is stored.
    credentials: tuple[str, ...] = ()


def make_attempts(*, destination: Destination, sendings: list[Sending]) -> list[HttpResult]:
    """Make one attempt of each delivery at once; results in the same order.

    An attempt starts when its auth headers are made: its `started_at` and `duration_ms`
    include the token fetch, which also counts against its deadline.
    """
    started = time.monotonic()
    requests: dict[int, HttpRequest] = {}
    results: dict[int, HttpResult] = {}
    auth_starts: dict[int, tuple[dt.datetime, float]] = {}
    for index, sending in enumerate(sendings):
        auth_starts[index] = (timezone.now(), time.monotonic())
        outcome = _request_for(destination=destination, sending=sending, started=started,
                               auth_start=auth_starts[index])
        if isinstance(outcome, HttpRequest):
            requests[index] = outcome
        else:
            results[index] = outcome
    posted = time.monotonic()
    for index, result in zip(requests, post_many(list(requests.values())), strict=True):
        started_at, auth_started = auth_starts[index]
        before_post_ms = int((posted - auth_started) * 1000)
        duration_ms = result.duration_ms + before_post_ms
        results[index] = replace(result, started_at=started_at, duration_ms=duration_ms)
    return [results[index] for index in range(len(sendings))]


def _request_for(
    *, destination: Destination, sending: Sending, started: float, auth_start: tuple[dt.datetime, float]
) -> HttpRequest | HttpResult:
    """The attempt's request, or its failure when no request could be made (token, unbuildable).

    `started`: when the round started (the deadline counts from it); `auth_start`: when this
    attempt started, on the wall clock and `time.monotonic()`.
    """
    try:
        headers = _headers_for(destination=destination, sending=sending, started=started)
    except AuthFailure as failure:
        return _failure(auth_start=auth_start, reason="token", error=str(failure))
    # The token fetch counts against the attempt's deadline.
    timeout_ms = max(destination.timeout_ms - _elapsed_ms(started), 1)
    try:
        return HttpRequest(
            url=destination.url, body=bytes(sending.delivery.body), headers=headers, timeout_ms=timeout_ms
        )
    except (ValueError, UnicodeError) as error:
        # This delivery fails its attempt; the others of the round still go.
        return _failure(auth_start=auth_start, reason="connection", error=unbuildable(error))


def _headers_for(*, destination: Destination, sending: Sending, started: float) -> dict[str, str]:
    body = bytes(sending.delivery.body)
    deadline_ms = max(destination.timeout_ms - _elapsed_ms(started), 1)
    auth = auth_headers_for(destination=destination, body=body, deadline_ms=deadline_ms)
    sending.token = auth.get("Authorization", "").removeprefix("Bearer ")
    sending.credentials = (*auth.values(), sending.token) if sending.token else tuple(auth.values())
    return {
        "Content-Type": "application/json",
        "X-AAMDest-Delivery-Id": str(sending.delivery.document_id),
        **auth,
    }


def auth_headers_for(*, destination: Destination, body: bytes, deadline_ms: int) -> dict[str, str]:
    """Return the auth headers of one attempt: HMAC signature(s), a bearer token, or none.

    Raises AuthFailure when the OAuth token endpoint failed (the message says why,
    never the secret).
    """
    if destination.auth_mode != AuthMode.OAUTH2:
        return signature_headers(destination=destination, body=body)
    try:
        token = get_access_token(destination=destination, deadline_ms=deadline_ms)
    except TokenError as error:
        raise AuthFailure(str(error)) from error
    return {"Authorization": f"Bearer {token}"}


def _failure(*, auth_start: tuple[dt.datetime, float], reason: str, error: str) -> HttpResult:
    started_at, started = auth_start
    return HttpResult(
        status_code=None,
        duration_ms=_elapsed_ms(started),
        reason=reason,
        error=error,
        response_excerpt="",
        started_at=started_at,
        body=b"",
    )


def _elapsed_ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)


def record_attempts(*, destination: Destination, sendings: list[Sending], results: list[HttpResult]) -> None:
    rows = [
        (
            sending.delivery.pk, sending.attempt_number, result.started_at, max(result.duration_ms, 0),
            result.status_code, result.reason,
            storable_text(redact_credentials(result.error, sending.credentials)),
            storable_answer(result.body, credentials=sending.credentials, limit=EXCERPT_CHARS),
        )
        for sending, result in zip(sendings, results, strict=True)
    ]
    _insert_attempts(rows)
    # The /metrics totals count what committed: a rolled-back round is not counted.
    tally = [(result.reason or "ok", max(result.duration_ms, 0)) for result in results]
    transaction.on_commit(functools.partial(counters.count_attempts, destination_id=destination.pk,
                                            attempts=tally))
    for sending, result in zip(sendings, results, strict=True):
        _log_attempt(destination=destination, sending=sending, result=result)
        if result.status_code == 401 and sending.token:
            # The partner refused the token: drop it so that the retry fetches a new one.
            discard_token(destination=destination, token=sending.token)


_ATTEMPT_COLUMNS = (
    "delivery_id", "number", "started_at", "duration_ms", "status_code", "reason", "error",
    "response_excerpt",
)


def _insert_attempts(rows: Sequence[tuple[object, ...]]) -> None:
    """One row per attempt: on PostgreSQL one INSERT over arrays bound on the server (no model instances)."""
    if not rows:
        return
    if not dialect.is_postgresql():
        Attempt.objects.bulk_create(Attempt(**dict(zip(_ATTEMPT_COLUMNS, row, strict=True))) for row in rows)
        return
    with dialect.server_side_cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Attempt._meta.db_table} ({', '.join(_ATTEMPT_COLUMNS)}) "  # noqa: S608 - model names
            "SELECT * FROM unnest(%s::bigint[], %s::smallint[], %s::timestamptz[], %s::int[], "
            "%s::smallint[], %s::text[], %s::text[], %s::text[])",
            [list(column) for column in zip(*rows, strict=True)],
        )


def _log_attempt(*, destination: Destination, sending: Sending, result: HttpResult) -> None:
    error = redact_credentials(result.error, sending.credentials)
    outcome = "delivered" if result.is_success else f"failed ({result.reason}): {error}"
    logger.log(
        logging.INFO if result.is_success else logging.WARNING,
        "delivery %s attempt %s to %s: %s in %d ms",
        sending.delivery.pk,
        sending.attempt_number,
        destination.name,
        outcome,
        result.duration_ms,
        extra={
            "destination": destination.pk,
            "delivery_id": sending.delivery.pk,
            "attempt": sending.attempt_number,
            "status_code": result.status_code,
            "reason": result.reason,
            "duration_ms": result.duration_ms,
        },
    )
