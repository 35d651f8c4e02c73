"""Secrets at rest: Fernet encryption keyed by AAMDEST_ENCRYPTION_KEYS (CONTRACT §3).

The first key encrypts, every key decrypts, so keys can be rotated:
add the new key first, run `python manage.py rotate_encryption_keys`, then drop
the old one.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.db import models


class SecretUnreadable(Exception):
    """A stored secret was encrypted with a key that is no longer configured."""


@cache
def _fernet(keys: tuple[str, ...]) -> MultiFernet:
    return MultiFernet([Fernet(key) for key in keys])


def fernet() -> MultiFernet:
    return _fernet(tuple(settings.AAMDEST_ENCRYPTION_KEYS))


def encrypt_secret(plaintext: str) -> str:
    return fernet().encrypt(plaintext.encode()).decode()


def decrypt_secret(token: str) -> str:
    """Return the plaintext; raise SecretUnreadable when no configured key opens it."""
    try:
        return fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise SecretUnreadable("a stored secret cannot be decrypted with AAMDEST_ENCRYPTION_KEYS") from None


class EncryptedTextField(models.TextField):
    """A text field whose column holds only Fernet ciphertext.

    Python sees the plaintext ("" when unset); the database, its dumps and
    anything that reads raw rows see ciphertext. An empty value is stored as "".
    """

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> str:
        if not value:
            return ""
        return decrypt_secret(value)

    def get_prep_value(self, value: Any) -> str:
        value = super().get_prep_value(value)
        if not value:
            return ""
        return encrypt_secret(value)
