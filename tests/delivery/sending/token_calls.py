"""Asking for OAuth tokens in the token tests: the credentials, the cache key, the failure message."""

from __future__ import annotations

import pytest
import redis

from delivery.sending.tokens import TokenError, get_access_token

SECRET = "s3cr:t&/+ é"
CLIENT_ID = "aam client"
FAILED = "token endpoint failed: "


def cache_key(cache: redis.Redis) -> bytes:
    (key,) = [key for key in cache.scan_iter("aamdest:oauth-token:*") if b":lock" not in key]
    return key


def failure_of(destination, *, deadline_ms: int = 3000) -> str:
    with pytest.raises(TokenError) as caught:
        get_access_token(destination=destination, deadline_ms=deadline_ms)
    message = str(caught.value)
    assert SECRET not in message
    return message
