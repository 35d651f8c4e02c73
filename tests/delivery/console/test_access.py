"""Who may read the console and press its buttons: login, roles, staff permissions, POST only."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group, Permission, User

from tests.delivery.console.console_clients import client_with_role
from tests.factories import DestinationFactory

pytestmark = pytest.mark.django_db


def test_an_anonymous_visitor_is_sent_to_the_login_page(client):
    response = client.get("/dashboard/")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/dashboard/"


def test_a_user_without_a_role_is_refused_with_a_readable_page():
    nobody = client_with_role("nobody")

    response = nobody.get("/dashboard/")

    assert response.status_code == 403
    assert b"viewer role" in response.content


def test_a_viewer_reads_but_cannot_pause(viewer):
    # Given
    destination = DestinationFactory()

    # When the viewer opens the page and presses pause anyway
    page = viewer.get(f"/dashboard/destinations/{destination.pk}/")
    pressed = viewer.post(f"/dashboard/destinations/{destination.pk}/pause/")

    # Then the page offers no button and the press is refused
    assert page.status_code == 200
    assert b"Pause</button>" not in page.content
    assert pressed.status_code == 403
    destination.refresh_from_db()
    assert destination.enabled


def test_staff_need_the_model_permission_to_pause():
    destination = DestinationFactory()
    staff = client_with_role("staff", is_staff=True)

    assert staff.post(f"/dashboard/destinations/{destination.pk}/pause/").status_code == 403

    staff.user.user_permissions.add(Permission.objects.get(codename="change_destination"))
    assert staff.post(f"/dashboard/destinations/{destination.pk}/pause/").status_code == 302
    destination.refresh_from_db()
    assert not destination.enabled


def test_buttons_answer_only_to_post(operator):
    destination = DestinationFactory()

    assert operator.get(f"/dashboard/destinations/{destination.pk}/pause/").status_code == 405


def test_a_viewer_without_staff_status_logs_in_on_the_console_login_page(client):
    # Given a viewer who is not staff (the admin's login page would refuse them)
    viewer = User.objects.create_user("reader", password="a-long-password")
    viewer.groups.add(Group.objects.get_or_create(name="viewer")[0])

    # When they log in through the console's login page
    response = client.post(
        "/accounts/login/", {"username": "reader", "password": "a-long-password", "next": "/dashboard/"}
    )

    # Then they land on the dashboard and can read it
    assert response.status_code == 302
    assert response["Location"] == "/dashboard/"
    assert client.get("/dashboard/").status_code == 200
