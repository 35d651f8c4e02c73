"""Asking for OAuth tokens in the token tests: the credentials, the cache key, the failure message."""

from __future__ import annotations

import pytest
import redis

from delivery.coordination import TOKEN_CACHE_PATTERN
from delivery.sending.token_endpoint import TokenError
from delivery.sending.tokens import get_access_token

SECRET = "s3cr:t&/+ é"
CLIENT_ID = "aam client"
FAILED = "token endpoint failed: "


def cache_key(cache: redis.Redis) -> bytes:
    (key,) = [key for key in cache.scan_iter(TOKEN_CACHE_PATTERN) if cache.type(key) == b"hash"]
    return key


def failure_of(destination, *, deadline_ms: int = 3000) -> str:
    with pytest.raises(TokenError) as caught:
        get_access_token(destination=destination, deadline_ms=deadline_ms)
    message = str(caught.value)
    assert SECRET not in message
    return message
