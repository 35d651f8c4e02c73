"""The admin's alert pages: read-only, each alert with its status per channel."""

from __future__ import annotations

import pytest

from delivery.alert_models import Alert, AlertSend
from delivery.alerts.job import run_alerts
from destinations.models import ChangeAction
from tests.delivery.alerts.conftest import transition
from tests.destinations.admin_forms import change_url, changelist_url
from tests.local_partner import Reply

pytestmark = pytest.mark.django_db


@pytest.fixture
def alert(receiver, failing_destination) -> Alert:
    """An opened alert whose mail went out and whose webhook failed once (HTTP 503)."""
    receiver.script = [Reply(status=503)]
    transition(failing_destination, ChangeAction.CIRCUIT_OPENED)
    run_alerts()
    return Alert.objects.get()


def test_the_alert_list_shows_each_channel_status(admin_client, alert):
    page = admin_client.get(changelist_url(Alert)).content.decode()

    assert "Circuit opened" in page and "acme" in page
    assert "email: sent, webhook: pending (1 attempts)" in page


def test_an_alert_page_shows_its_detail_and_the_last_error_per_channel(admin_client, alert):
    page = admin_client.get(change_url(Alert, alert.pk)).content.decode()

    assert "10 consecutive failed attempts" in page
    assert "HTTP 503" in page  # the webhook's last error


def test_alerts_are_read_only(admin_client, alert):
    add = admin_client.get("/admin/delivery/alert/add/")
    change = admin_client.post(change_url(Alert, alert.pk), {"detail": "edited"})
    delete = admin_client.post(f"/admin/delivery/alert/{alert.pk}/delete/", {"post": "yes"})
    episode_add = admin_client.get("/admin/delivery/alertepisode/add/")

    codes = (add.status_code, change.status_code, delete.status_code, episode_add.status_code)
    assert codes == (403, 403, 403, 403)
    assert Alert.objects.get().detail.startswith("10 consecutive")
    assert AlertSend.objects.count() == 2
