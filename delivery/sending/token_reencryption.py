"""Re-encrypting the cached OAuth tokens under the first of AAMDEST_ENCRYPTION_KEYS.

The Redis half of `manage.py rotate_encryption_keys` (the database half is
`destinations.reencryption`). `delivery.sending.tokens` keeps each token in a hash
(`delivery.coordination.token_cache_key`) whose `token` field is
Fernet ciphertext. Here each one is:

- left alone when already under the first key (running again changes nothing);
- rewritten under the first key when another configured key opens it; the
  hash keeps its expiry, and a token replaced meanwhile is not overwritten;
- dropped when no configured key opens it: `delivery.sending.tokens` could not read it
  either, and fetches a new token at the next send.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis
from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings

from delivery.coordination import TOKEN_CACHE_PATTERN
from destinations.secrets import fernet

# Replace (or delete, when ARGV[2] is empty) the token only if it is still the one read.
_SWAP = """
if redis.call('HGET', KEYS[1], 'token') ~= ARGV[1] then
  return 0
end
if ARGV[2] == '' then
  return redis.call('DEL', KEYS[1])
end
redis.call('HSET', KEYS[1], 'token', ARGV[2])
return 1
"""


@dataclass
class TokenReport:
    reencrypted: int = 0
    already_current: int = 0
    dropped: int = 0


def reencrypt_cached_tokens(*, client: redis.Redis, batch_size: int) -> TokenReport:
    """Bring every cached token under the first encryption key; see the module docstring.

    Raises redis.RedisError when Redis does not answer.
    """
    report = TokenReport()
    first = Fernet(settings.AAMDEST_ENCRYPTION_KEYS[0])
    swap = client.register_script(_SWAP)
    # The cache entries are hashes; the lock and error keys (strings) are skipped.
    for key in client.scan_iter(match=TOKEN_CACHE_PATTERN, count=batch_size, _type="hash"):
        stored = client.hget(key, "token")
        if not stored:
            continue
        try:
            first.decrypt(stored)
        except InvalidToken:
            pass
        else:
            report.already_current += 1
            continue
        try:
            replacement = first.encrypt(fernet().decrypt(stored))
        except InvalidToken:
            if swap(keys=[key], args=[stored, b""]):
                report.dropped += 1
            continue
        if swap(keys=[key], args=[stored, replacement]):
            report.reencrypted += 1
    return report
