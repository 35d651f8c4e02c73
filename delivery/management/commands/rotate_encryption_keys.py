"""`manage.py rotate_encryption_keys`: every stored secret under the first encryption key (CONTRACT §3, §6).

The steps of an encryption key rotation:

1. put the new key first in AAMDEST_ENCRYPTION_KEYS, the old one after it,
   and restart aamdest (it now encrypts with the new key, reads with both);
2. run this command: signing keys, new signing keys and OAuth client secrets
   in the database, and the cached OAuth tokens in Redis, end up under the
   new key;
3. drop the old key from AAMDEST_ENCRYPTION_KEYS and restart.

It reports counts, and exits non-zero when a secret no configured key opens
(named by its destination; left untouched) or Redis did not answer.
"""

from __future__ import annotations

from typing import Any

import redis
from django.core.management.base import BaseCommand, CommandError, CommandParser

from delivery.coordination import maintenance_client
from delivery.sending.token_reencryption import reencrypt_cached_tokens
from destinations.reencryption import reencrypt_stored_secrets


class Command(BaseCommand):
    help = "Re-encrypt every stored secret and cached OAuth token under the first of AAMDEST_ENCRYPTION_KEYS."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Rows per transaction [500].")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1.")
        problems = self._stored_secrets(batch_size=batch_size) + self._cached_tokens(batch_size=batch_size)
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} problem(s): keep the old keys until this succeeds.")

    def _stored_secrets(self, *, batch_size: int) -> list[str]:
        report = reencrypt_stored_secrets(batch_size=batch_size)
        self.stdout.write(
            f"stored secrets: {report.reencrypted} re-encrypted, {report.already_current} already under the "
            f"first key, {report.changed_meanwhile} changed meanwhile, {len(report.unreadable)} unreadable"
        )
        why = "no key in AAMDEST_ENCRYPTION_KEYS opens it; left untouched"
        return [f"{secret}: {why}" for secret in report.unreadable]

    def _cached_tokens(self, *, batch_size: int) -> list[str]:
        try:
            report = reencrypt_cached_tokens(client=maintenance_client(), batch_size=batch_size)
        except redis.RedisError as error:
            return [f"cached OAuth tokens: Redis did not answer ({error}); run the command again"]
        self.stdout.write(
            f"cached OAuth tokens: {report.reencrypted} re-encrypted, {report.already_current} already under "
            f"the first key, {report.dropped} dropped (unreadable: fetched anew at the next send)"
        )
        return []
