"""The configuration change log in the admin: a read-only list, and its recording from admin edits.

`RecordChangesMixin` records every save, deletion (one or many) and inline
change made through a ModelAdmin with `destinations.audit.record_change`,
within the admin's own transaction. `DestinationHistoryMixin` adds the
destination's recent changes to its change page, with a link to all of them.
"""

from __future__ import annotations

import json
from typing import Any, Generic, TypeVar

from django.contrib import admin
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms import BaseModelFormSet, ModelForm
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from destinations.audit import recent_changes, record_change, snapshot, summarize
from destinations.models import ChangeAction, ChangeSource, ConfigChange, Destination

RECENT_CHANGES = 10

_ModelT = TypeVar("_ModelT", bound=models.Model)


class RecordChangesMixin(Generic[_ModelT]):
    """Records the admin's creations, updates and deletions, inline rows included."""

    def save_model(self, request: HttpRequest, obj: _ModelT, form: ModelForm, change: bool) -> None:
        # The form has already written its values onto `obj`: read the stored row.
        before = snapshot(type(obj)._default_manager.get(pk=obj.pk)) if change else None
        super().save_model(request, obj, form, change)  # type: ignore[misc]
        action = ChangeAction.UPDATE if change else ChangeAction.CREATE
        record_change(
            actor=request.user, source=ChangeSource.ADMIN, action=action, instance=obj, before=before
        )

    def delete_model(self, request: HttpRequest, obj: _ModelT) -> None:
        record_change(actor=request.user, source=ChangeSource.ADMIN, action=ChangeAction.DELETE, instance=obj)
        super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[_ModelT]) -> None:
        with transaction.atomic():
            for obj in queryset:
                record_change(
                    actor=request.user, source=ChangeSource.ADMIN, action=ChangeAction.DELETE, instance=obj
                )
            super().delete_queryset(request, queryset)  # type: ignore[misc]

    def save_formset(
        self, request: HttpRequest, form: ModelForm, formset: BaseModelFormSet, change: bool
    ) -> None:
        model = formset.model
        assert model is not None, "an inline's formset is built for its model"
        existing = [f.instance.pk for f in formset.initial_forms if f.instance.pk is not None]
        befores = {row.pk: snapshot(row) for row in model._default_manager.filter(pk__in=existing)}
        for deleted in formset.deleted_forms:
            if deleted.instance.pk in befores:
                record_change(
                    actor=request.user,
                    source=ChangeSource.ADMIN,
                    action=ChangeAction.DELETE,
                    instance=deleted.instance,
                    before=befores[deleted.instance.pk],
                )
        super().save_formset(request, form, formset, change)  # type: ignore[misc]
        for created in formset.new_objects:
            record_change(
                actor=request.user, source=ChangeSource.ADMIN, action=ChangeAction.CREATE, instance=created
            )
        for changed, _fields in formset.changed_objects:
            record_change(
                actor=request.user,
                source=ChangeSource.ADMIN,
                action=ChangeAction.UPDATE,
                instance=changed,
                before=befores.get(changed.pk),
            )


class DestinationHistoryMixin:
    """Shows a destination's latest changes on its change page (not on the add page)."""

    def get_fieldsets(self, request: HttpRequest, obj: Destination | None = None) -> list:
        fieldsets = list(super().get_fieldsets(request, obj))  # type: ignore[misc]
        if obj is None:
            return fieldsets
        return [*fieldsets, ("Recent changes", {"fields": ["recent_changes"]})]

    def get_readonly_fields(self, request: HttpRequest, obj: Destination | None = None) -> list:
        fields = list(super().get_readonly_fields(request, obj))  # type: ignore[misc]
        return fields if obj is None else [*fields, "recent_changes"]

    @admin.display(description="Recent changes")
    def recent_changes(self, destination: Destination) -> str:
        changes = list(recent_changes(destination=destination, limit=RECENT_CHANGES))
        changelist = reverse("admin:destinations_configchange_changelist")
        every = f"{changelist}?destination__id__exact={destination.pk}"
        if not changes:
            return format_html('None yet. <a href="{}">The change log</a>', every)
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td></tr>",
            (
                (c.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"), c.actor_name, c.get_source_display(),
                 c.get_action_display(), c.object_type, summarize(c.changes))
                for c in changes
            ),
        )
        return format_html(
            "<table><thead><tr><th>When</th><th>Who</th><th>Through</th><th>What</th><th>Fields</th></tr>"
            '</thead><tbody>{}</tbody></table><p><a href="{}">All changes of this destination</a></p>',
            rows,
            every,
        )


@admin.register(ConfigChange)
class ConfigChangeAdmin(admin.ModelAdmin):
    """The change log, read-only: nobody adds, edits or deletes a record."""

    list_display = [
        "created_at", "actor_name", "source", "action", "object_type", "object_repr", "fields_changed"
    ]
    list_filter = ["action", "source", "object_type", "destination", "created_at"]
    search_fields = ["object_repr", "actor_name", "object_id__exact"]
    search_help_text = "A destination, mapping or segment, or who made the change."
    date_hierarchy = "created_at"
    readonly_fields = (
        "created_at",
        "actor",
        "actor_name",
        "source",
        "action",
        "object_type",
        "object_id",
        "object_repr",
        "destination",
        "pretty_changes",
    )
    fields = readonly_fields
    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="fields")
    def fields_changed(self, change: ConfigChange) -> str:
        return summarize(change.changes)

    @admin.display(description="changes")
    def pretty_changes(self, change: ConfigChange) -> str:
        shown = json.dumps(change.changes, indent=2, ensure_ascii=False)
        return format_html('<pre style="white-space: pre-wrap">{}</pre>', shown)

