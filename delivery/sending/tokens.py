"""OAuth 2.0 client-credentials tokens, cached in Redis for every worker (CONTRACT §3).

The token stage of delivery: it asks the destination's token endpoint
(`delivery.sending.token_endpoint`) and shares the answer with every worker,
process and machine:

- The cache is a Redis hash per destination and credentials fingerprint
  (an HMAC of token URL, client ID, secret, scope and client auth, so a
  configuration change starts afresh). It holds the token encrypted with
  `encrypt_secret` and a digest to recognise it; with `expires_in` the key
  expires with the token, without it the token is kept until `discard_token`.
- A token is renewed when less than min(60 s, 10% of expires_in) remains,
  measured on Redis' clock (PTTL), so machines need not agree on the time.
- Single flight: the first caller needing a token takes a short Redis lock and
  fetches; the others wait for the cache (or for the fetcher's error) instead of
  asking the partner too. While a still-valid token is being renewed, callers
  keep using it.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis
from django.utils.crypto import salted_hmac
from redis.typing import EncodableT, FieldT

from delivery.coordination import (
    delete_if_held,
    token_cache_client,
    token_cache_key,
    token_error_key,
    token_lock_key,
)
from delivery.sending.token_endpoint import TokenError, failed, fetch_token
from destinations.models import AuthMode, Destination
from destinations.secrets import SecretUnreadable, decrypt_secret, encrypt_secret

logger = logging.getLogger(__name__)

RENEW_BEFORE_S = 60
RENEW_BEFORE_FRACTION = 0.1
LOCK_MARGIN_MS = 1000  # the lock outlives the fetcher's deadline by this much
ERROR_TTL_MS = 5000  # how long waiters can read the fetcher's failure
POLL_S = 0.01
MAX_CACHE_S = 366 * 24 * 3600  # Redis refuses absurd expiry times

# Delete the cached token only if it is still the one the partner refused.
_DISCARD = """
if redis.call('HGET', KEYS[1], 'digest') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


@dataclass(frozen=True)
class _Budget:
    """What is left of the attempt's deadline: every Redis call and the fetch fit in it."""

    deadline_ms: int
    started: float  # time.monotonic() when the token was asked for

    def remaining_ms(self) -> int:
        return self.deadline_ms - int((time.monotonic() - self.started) * 1000)

    def client(self) -> redis.Redis:
        return token_cache_client(within_ms=max(self.remaining_ms(), 1))


@dataclass(frozen=True)
class _Cached:
    token: str
    needs_renewal: bool


def get_access_token(*, destination: Destination, deadline_ms: int) -> str:
    """Return a bearer token for `destination`, from the shared cache or the token endpoint.

    Waits or fetches for at most `deadline_ms`. Raises TokenError when the
    destination is not set up for OAuth, or the endpoint fails (refused address,
    timeout, TLS, a status other than 200, an answer without `access_token`).
    """
    budget = _Budget(deadline_ms=deadline_ms, started=time.monotonic())
    _check_configured(destination)
    try:
        return _get_through_cache(destination=destination, budget=budget)
    except redis.RedisError as error:
        # Better one token request per attempt than no delivery while Redis is away.
        logger.warning("token cache unavailable (%s): destination %s fetches directly", error, destination.pk)
        token, _ = fetch_token(destination=destination, timeout_ms=budget.remaining_ms())
        return token


def discard_token(*, destination: Destination, token: str) -> None:
    """Forget `token` (the partner answered 401), unless the cache already holds a newer one."""
    try:
        token_cache_client().eval(_DISCARD, 1, _cache_key(destination), _digest(token))
    except redis.RedisError as error:
        logger.warning("could not discard the token of destination %s: %s", destination.pk, error)


def _check_configured(destination: Destination) -> None:
    if destination.auth_mode != AuthMode.OAUTH2:
        raise TokenError(f"destination {destination.pk} does not use OAuth 2.0 ({destination.auth_mode!r})")
    required = ("oauth_token_url", "oauth_client_id", "oauth_client_secret")
    missing = [name for name in required if not getattr(destination, name)]
    if missing:
        raise TokenError(f"token endpoint not configured: {', '.join(missing)} missing")


# --- The shared cache ---------------------------------------------------------


def _get_through_cache(*, destination: Destination, budget: _Budget) -> str:
    key = _cache_key(destination)
    cached = _read(key, budget)
    if cached is not None and not cached.needs_renewal:
        return cached.token
    lock_key, owner = token_lock_key(key), uuid.uuid4().hex
    while True:
        remaining_ms = budget.remaining_ms()
        if remaining_ms <= 0:
            raise failed(f"no token within {budget.deadline_ms} ms")
        if budget.client().set(lock_key, owner, nx=True, px=remaining_ms + LOCK_MARGIN_MS):
            lock = (lock_key, owner)
            return _fetch_holding_lock(destination=destination, key=key, lock=lock, budget=budget)
        if cached is not None:
            return cached.token  # still valid: someone else is renewing it
        cached = _wait_for_fetcher(key=key, lock_key=lock_key, budget=budget)
        if cached is not None:
            return cached.token


def _fetch_holding_lock(*, destination: Destination, key: str, lock: tuple[str, str], budget: _Budget) -> str:
    lock_key, owner = lock
    try:
        cached = _read(key, budget)  # filled while we were taking the lock?
        if cached is not None and not cached.needs_renewal:
            return cached.token
        try:
            token, expires_in = fetch_token(destination=destination, timeout_ms=budget.remaining_ms())
        except TokenError as error:
            # Waiters read this instead of each asking the token endpoint again.
            note, error_key = str(error), token_error_key(lock_key=lock_key, owner=owner)
            _after_fetch(budget, "leave the fetch error",
                         lambda client: client.set(error_key, note, px=ERROR_TTL_MS))
            if cached is not None:
                logger.warning("renewing the token of destination %s failed: %s", destination.pk, error)
                return cached.token
            raise
        _after_fetch(budget, "cache the token",
                     lambda client: _store(client, key, token=token, expires_in=expires_in))
        return token
    finally:
        _after_fetch(
            budget, "release the lock", lambda client: delete_if_held(client, key=lock_key, holder=owner)
        )


def _after_fetch(budget: _Budget, what: str, call: Callable[[redis.Redis], object]) -> None:
    """Best effort once the token is fetched: a stuck Redis must not cost the token (the lock expires)."""
    try:
        call(budget.client())
    except redis.RedisError as error:
        logger.warning("token cache: could not %s: %s", what, error)


def _wait_for_fetcher(*, key: str, lock_key: str, budget: _Budget) -> _Cached | None:
    """Wait while another caller fetches; return the token it stored, or None to try the lock again.

    Raises TokenError with the fetcher's error, or when the deadline passes.
    """
    holder = budget.client().get(lock_key)
    if holder is None:
        return None  # released between our attempt and now: try the lock again
    while budget.remaining_ms() > 0:
        time.sleep(POLL_S)
        cached = _read(key, budget)
        if cached is not None:
            return cached
        if budget.client().get(lock_key) != holder:
            failure = budget.client().get(token_error_key(lock_key=lock_key, owner=_text(holder)))
            if failure is not None:
                raise TokenError(_text(failure))
            return None
    raise failed(f"no token within {budget.deadline_ms} ms (another worker was fetching it)")


def _read(key: str, budget: _Budget) -> _Cached | None:
    pipe = budget.client().pipeline(transaction=False)
    pipe.hgetall(key)
    pipe.pttl(key)
    fields, ttl_ms = pipe.execute()
    if not fields:
        return None
    try:
        token = decrypt_secret(fields[b"token"].decode())
    except (KeyError, SecretUnreadable):
        return None  # written under a retired encryption key: fetch a new one
    expires_in = int(fields.get(b"expires_in", b"0"))
    if ttl_ms < 0 or not expires_in:
        return _Cached(token, needs_renewal=False)  # no expires_in: kept until discarded
    renew_before_ms = 1000 * min(RENEW_BEFORE_S, RENEW_BEFORE_FRACTION * expires_in)
    return _Cached(token, needs_renewal=ttl_ms < renew_before_ms)


def _store(client: redis.Redis, key: str, *, token: str, expires_in: int | None) -> None:
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    fields: dict[FieldT, EncodableT] = {
        "token": encrypt_secret(token), "digest": _digest(token), "expires_in": expires_in or 0
    }
    pipe.hset(key, mapping=fields)
    if expires_in:
        pipe.pexpire(key, min(expires_in, MAX_CACHE_S) * 1000)
    pipe.execute()


def _cache_key(destination: Destination) -> str:
    return token_cache_key(destination_id=destination.pk, fingerprint=_fingerprint(destination))


def _fingerprint(destination: Destination) -> str:
    # Keyed with SECRET_KEY: a plain hash of a weak secret could be brute-forced from Redis.
    parts = [destination.oauth_token_url, destination.oauth_client_id, destination.oauth_client_secret,
             destination.oauth_scope, destination.oauth_client_auth]
    return salted_hmac("aamdest.tokens.fingerprint", json.dumps(parts)).hexdigest()[:32]


def _digest(token: str) -> str:
    return salted_hmac("aamdest.tokens.digest", token).hexdigest()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

