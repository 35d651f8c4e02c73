"""Who may do what through the API (CONTRACT §5).

Reading needs a staff user or the `viewer` group. Changing configuration and
ingesting need the `operator` group, or a staff user holding the model
permissions of the view's queryset (`add`/`change`/`delete`) or, for views
without a queryset, the permission the view names in `required_permission`.
A viewset's extra actions (`POST .../{id}/test/`) name theirs in
`action_permissions` ({action name: "app.codename"}); an action it does not
name needs the model's `change` permission.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

VIEWER_GROUP = "viewer"
OPERATOR_GROUP = "operator"

_METHOD_ACTIONS = {"POST": "add", "PUT": "change", "PATCH": "change", "DELETE": "delete"}
_CRUD_ACTIONS = {"create", "update", "partial_update", "destroy"}


def _group_names(user: Any) -> set[str]:
    cached = getattr(user, "_aamdest_groups", None)
    if cached is None:
        cached = set(user.groups.values_list("name", flat=True))
        user._aamdest_groups = cached
    return cached


def can_read(user: Any) -> bool:
    if not (user and user.is_authenticated and user.is_active):
        return False
    if user.is_staff or user.is_superuser:
        return True
    return bool(_group_names(user) & {VIEWER_GROUP, OPERATOR_GROUP})


def is_operator(user: Any) -> bool:
    return bool(user and user.is_authenticated and user.is_active and OPERATOR_GROUP in _group_names(user))


class RolePermission(BasePermission):
    message = "You do not have the rights for this action."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if request.method in SAFE_METHODS:
            return can_read(user)
        if user and user.is_superuser:
            return True
        if is_operator(user):
            return True
        if not (user and user.is_authenticated and user.is_active and user.is_staff):
            return False
        return user.has_perms(self._required_permissions(request, view))

    def _required_permissions(self, request: Request, view: Any) -> list[str]:
        named = getattr(view, "required_permission", None)
        if named:
            return [named]
        view_action = getattr(view, "action", None)
        by_action = getattr(view, "action_permissions", {})
        if view_action in by_action:
            return [by_action[view_action]]
        queryset = getattr(view, "queryset", None)
        if queryset is None:
            return ["__no_permission_defined__"]
        meta = queryset.model._meta
        if view_action is not None and view_action not in _CRUD_ACTIONS:
            return [f"{meta.app_label}.change_{meta.model_name}"]
        action = _METHOD_ACTIONS.get(request.method or "", "change")
        return [f"{meta.app_label}.{action}_{meta.model_name}"]
