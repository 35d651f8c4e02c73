"""Who may use the console: readers (staff, `viewer`, `operator`) and, for buttons, operators."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_POST

from destinations.permissions import can_read, is_operator

# The model permission a staff user needs for each kind of button (operators need none).
CHANGE_DESTINATION = "destinations.change_destination"
SEND_DELIVERY = "delivery.add_delivery"

View = Callable[..., HttpResponse]


def may_act(user: Any, *, permission: str) -> bool:
    """Superusers, the `operator` group, and staff holding `permission` may press buttons."""
    if not (user.is_authenticated and user.is_active):
        return False
    return user.is_superuser or is_operator(user) or (user.is_staff and user.has_perm(permission))


def forbidden(request: HttpRequest, *, message: str) -> HttpResponse:
    return render(request, "console/forbidden.html", {"message": message}, status=403)


def reader(view: View) -> View:
    @login_required
    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not can_read(request.user):
            return forbidden(request, message="The console needs a staff account or the viewer role.")
        return view(request, *args, **kwargs)

    return guarded


def actor(permission: str) -> Callable[[View], View]:
    def decorate(view: View) -> View:
        @login_required
        @require_POST
        @wraps(view)
        def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not may_act(request.user, permission=permission):
                return forbidden(request, message="This action needs the operator role.")
            return view(request, *args, **kwargs)

        return guarded

    return decorate
