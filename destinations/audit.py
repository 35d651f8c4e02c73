"""The configuration change log: who changed what, when, through what (CONTRACT §5).

`record_change` is the one way to write it. The API viewsets and the admin
call it for every creation, update and deletion of a destination, mapping or
segment, and the operator actions' services (`destinations.services`: pause,
resume, key rotation) whichever door was used, inside the transaction that made
the change, so that a change and its record commit or roll back together.

The circuit breaker's transitions (CONTRACT §7) are recorded too, by
`record_circuit_change`: `circuit_opened` and `circuit_closed`, once per
transition, by aamdest itself (source `system`, actor_name "aamdest") or by the
operator who closed it by hand, with `changes` = {"circuit_state": {"old": …,
"new": …}, "detail": "why, in a sentence"}. The alerts are made from these rows.

A record names each changed field with its old and new value, except secrets
(`EncryptedTextField`s: signing keys, client secrets): for those it holds the
word "changed" and nothing else. Snapshots hold a keyed digest of a secret,
never the secret, so not even the in-memory comparison keeps a copy around.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import models
from django.db.models import QuerySet
from django.utils.crypto import salted_hmac

from destinations.models import ChangeAction, ChangeSource, ConfigChange, Destination
from destinations.secrets import EncryptedTextField

SECRET_CHANGED = "changed"
# The actor_name of what aamdest does by itself (ChangeSource.SYSTEM): the circuit breaker's transitions.
SYSTEM_ACTOR = "aamdest"
# Timestamps every save moves: recording them would make every change look alike.
_NOT_RECORDED = frozenset({"created_at", "updated_at"})

Snapshot = dict[str, Any]


@dataclass(frozen=True)
class _SecretDigest:
    """Stands for a secret's value in a snapshot: equal digests mean equal secrets."""

    digest: str


def snapshot(instance: models.Model) -> Snapshot:
    """Return the configuration values of `instance` by field name (secrets as digests).

    Left out: the primary key, creation and update times, and fields that are
    not configuration (`editable=False`: batch bookkeeping, latest outcome).
    A foreign key is given as the related row's primary key.
    """
    values: Snapshot = {}
    for field in instance._meta.concrete_fields:
        if field.primary_key or not field.editable or field.name in _NOT_RECORDED:
            continue
        value = getattr(instance, field.attname)
        if isinstance(field, EncryptedTextField):
            value = _digest(value)
        values[field.name] = value
    return values


def describe_changes(*, before: Snapshot | None, after: Snapshot | None) -> dict[str, Any]:
    """Return {field: {"old": …, "new": …}} for each field that differs; a secret gives "changed".

    `before` None is a creation (only "new" values; unset secrets left out),
    `after` None a deletion (only "old" values).
    """
    changes: dict[str, Any] = {}
    for name in dict.fromkeys([*(after or {}), *(before or {})]):
        old = (before or {}).get(name)
        new = (after or {}).get(name)
        if isinstance(old, _SecretDigest) or isinstance(new, _SecretDigest):
            if _secret_changed(old, new):
                changes[name] = SECRET_CHANGED
        elif before is None:
            changes[name] = {"new": new}
        elif after is None:
            changes[name] = {"old": old}
        elif old != new:
            changes[name] = {"old": old, "new": new}
    return changes


def record_change(
    *,
    actor: AbstractBaseUser | AnonymousUser | None,
    source: str,
    action: str,
    instance: models.Model,
    before: Snapshot | None = None,
    changes: dict[str, Any] | None = None,
) -> ConfigChange | None:
    """Record `action` by `actor` on `instance` through `source` (a ChangeSource); return the row.

    `before` is `snapshot(instance)` taken before the change; leave it None for
    a creation. For a deletion, call this before deleting (the row still has its
    primary key); `before` defaults to the instance as it stands. An update that
    changed nothing returns None and records nothing. An action that changes no
    configuration (a resync) gives what it did as `changes` instead, recorded as is.
    """
    if changes is None:
        changes = _described(action=action, instance=instance, before=before)
    if action == ChangeAction.UPDATE and not changes:
        return None
    # The actor column points at the user model: an anonymous user (or None) is recorded as "unknown",
    # aamdest's own actions (source `system`) as aamdest.
    user = actor if isinstance(actor, get_user_model()) and actor.is_authenticated else None
    if user is not None:
        actor_name = user.get_username()
    else:
        actor_name = SYSTEM_ACTOR if source == ChangeSource.SYSTEM else "unknown"
    return ConfigChange.objects.create(
        actor=user,
        actor_name=actor_name,
        source=source,
        action=action,
        # None only on a model class Django has not prepared yet, never on an instance.
        object_type=cast(str, instance._meta.model_name),
        object_id=str(instance.pk),
        object_repr=str(instance)[:300],
        destination_id=_destination_id(instance),
        changes=changes,
    )


def record_circuit_change(
    *,
    destination: Destination,
    action: str,
    old_state: str,
    detail: str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    source: str = ChangeSource.SYSTEM,
) -> ConfigChange:
    """Record a circuit transition of `destination` (`circuit_opened` or `circuit_closed`); return the row.

    Call in the transaction that changed the state, once per transition. Without an
    actor (source `system`) the row names aamdest itself; `detail` says why.
    """
    row = record_change(
        actor=actor, source=source, action=action, instance=destination,
        changes={"circuit_state": {"old": old_state, "new": destination.circuit_state}, "detail": detail},
    )
    return cast(ConfigChange, row)  # None only for an update that changed nothing


def _described(*, action: str, instance: models.Model, before: Snapshot | None) -> dict[str, Any]:
    if action == ChangeAction.DELETE:
        return describe_changes(before=before or snapshot(instance), after=None)
    return describe_changes(before=before, after=snapshot(instance))


def recent_changes(*, destination: Destination, limit: int = 10) -> QuerySet[ConfigChange]:
    """The latest `limit` changes of `destination` and its mappings, newest first."""
    return ConfigChange.objects.filter(destination=destination).order_by("-created_at", "-id")[:limit]


def summarize(changes: Mapping[str, Any]) -> str:
    """One line naming the changed fields: "url, enabled, signing_key (changed)"."""
    names = (f"{name} (changed)" if value == SECRET_CHANGED else name for name, value in changes.items())
    return ", ".join(names)


def _destination_id(instance: models.Model) -> int | None:
    if isinstance(instance, Destination):
        return instance.pk
    return getattr(instance, "destination_id", None)


def _digest(value: str) -> _SecretDigest:
    if not value:
        return _SecretDigest("")
    return _SecretDigest(salted_hmac("aamdest.audit.secret", value).hexdigest())


def _secret_changed(old: Any, new: Any) -> bool:
    old_digest = old if isinstance(old, _SecretDigest) else _SecretDigest("")
    new_digest = new if isinstance(new, _SecretDigest) else _SecretDigest("")
    return old_digest != new_digest
