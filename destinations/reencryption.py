"""Re-encrypting stored secrets under the first of AAMDEST_ENCRYPTION_KEYS (CONTRACT §3, §6).

Rotating the encryption key: put the new key first in AAMDEST_ENCRYPTION_KEYS
(keeping the old one after it), run `manage.py rotate_encryption_keys`, then
drop the old key. This module is the database half: every `EncryptedTextField`
of every model (signing keys, new signing keys, OAuth client secrets), read as
raw ciphertext, in batches of rows.

- A secret already under the first key is left as it is, so running it again
  changes nothing (idempotent).
- A secret another configured key opens is written back under the first key,
  only if the column still holds the ciphertext that was read (a concurrent
  edit wins: the application always writes under the first key anyway).
- A secret no configured key opens is reported, with its row, and not touched.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken
from django.apps import apps
from django.conf import settings
from django.db import models, transaction
from django.db.models.functions import Cast

from destinations.secrets import EncryptedTextField, fernet


@dataclass(frozen=True)
class UnreadableSecret:
    """A stored secret no configured key can decrypt: which row, which field."""

    model: str  # "destinations.destination"
    pk: object
    name: str  # the row's `name`, "" when the model has none
    field: str

    def __str__(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        return f"{self.model.rsplit('.', 1)[-1]} {self.pk}{named}: {self.field}"


@dataclass
class ReencryptionReport:
    reencrypted: int = 0
    already_current: int = 0
    # Changed by someone else between our read and our write (so written under the first key).
    changed_meanwhile: int = 0
    unreadable: list[UnreadableSecret] = field(default_factory=list)


def encrypted_fields() -> Iterator[tuple[type[models.Model], list[EncryptedTextField]]]:
    """Each installed model with secret fields, and those fields."""
    for model in apps.get_models():
        secret_fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if secret_fields:
            yield model, secret_fields


def reencrypt_stored_secrets(*, batch_size: int) -> ReencryptionReport:
    """Bring every stored secret under the first encryption key; see the module docstring.

    Each batch of `batch_size` rows is read and written in its own transaction.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    report = ReencryptionReport()
    first = Fernet(settings.AAMDEST_ENCRYPTION_KEYS[0])
    for model, secret_fields in encrypted_fields():
        last_pk = None
        while True:
            with transaction.atomic():
                rows = _raw_rows(model, secret_fields, after=last_pk, limit=batch_size)
                for row in rows:
                    for secret_field in secret_fields:
                        _reencrypt_one(model, secret_field, row=row, first=first, report=report)
            if len(rows) < batch_size:
                break
            last_pk = rows[-1]["pk"]
    return report


def _raw_rows(
    model: type[models.Model], secret_fields: list[EncryptedTextField], *, after: object, limit: int
) -> list[dict]:
    # Cast to a plain text column: the encrypted field would decrypt (and fail) on read.
    raw = {f"raw_{f.attname}": Cast(f.attname, output_field=models.TextField()) for f in secret_fields}
    rows = model._base_manager.order_by("pk")
    if after is not None:
        rows = rows.filter(pk__gt=after)
    names = ["name"] if any(f.name == "name" for f in model._meta.concrete_fields) else []
    return list(rows.annotate(**raw).values("pk", *names, *raw)[:limit])


def _reencrypt_one(
    model: type[models.Model],
    secret_field: EncryptedTextField,
    *,
    row: dict,
    first: Fernet,
    report: ReencryptionReport,
) -> None:
    stored = row[f"raw_{secret_field.attname}"]
    if not stored:
        return
    try:
        first.decrypt(stored.encode())
    except InvalidToken:
        pass
    else:
        report.already_current += 1
        return
    try:
        plaintext = fernet().decrypt(stored.encode()).decode()
    except InvalidToken:
        label = model._meta.label_lower
        report.unreadable.append(UnreadableSecret(label, row["pk"], row.get("name", ""), secret_field.name))
        return
    still_stored = (
        model._base_manager.filter(pk=row["pk"])
        .alias(stored=Cast(secret_field.attname, output_field=models.TextField()))
        .filter(stored=stored)
    )
    # The field encrypts the plaintext under the first key as it writes it.
    if still_stored.update(**{secret_field.attname: plaintext}):
        report.reencrypted += 1
    else:
        report.changed_meanwhile += 1
