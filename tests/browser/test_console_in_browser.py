"""The console in a real browser: headless Debian chromium, driven by Playwright, against a live server.

Log in through the admin's form, read the dashboard (its screenshot goes to
test-artifacts/dashboard.png), find a device by its partner ID, open a failed delivery,
redeliver it and watch it become delivered to a local HTTPS partner. The other pages'
screenshots go to the same folder, for a person to look at.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import Group, User
from django.utils import timezone

from aamdest.celery import app as celery_app
from delivery.models import Delivery, DeliveryStatus, DestinationDevice, Device, Membership, PartnerId
from destinations.models import CircuitState
from tests.delivery.log_rows import OK, TIMEOUT, Try, log_delivery, status
from tests.factories import DestinationFactory, MappingFactory, SegmentFactory

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
AAM_UUID = "19393572368547369350319949416899715727"
DPUUID = "4250948725049857"
PASSWORD = "correct horse battery staple"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium: run scripts/ensure_chromium.sh"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an event loop in this thread; the test's own ORM calls are
    # still synchronous, so Django's async-safety guard has nothing to protect here.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_playwright() as playwright:
            launched = playwright.chromium.launch(
                executable_path=str(CHROMIUM),
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
            )
            yield launched
            launched.close()


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


@pytest.fixture
def eager_tasks() -> Iterator[None]:
    """Run Celery tasks in the web process, so the live server's redelivery is sent for real."""
    previous = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = previous


def seed(*, url: str) -> Delivery:
    """A day of traffic for two partners, a device with a profile, and its failed delivery."""
    now = timezone.now()
    acme = DestinationFactory(name="Acme DSP", url=url, timeout_ms=3000)
    DestinationFactory(name="Globex Ads", enabled=False)
    seed_open_circuit(now=now)
    MappingFactory(destination=acme, segment=SegmentFactory(id=14356, name="Runners"))
    for hour in range(24):
        created_at = now - dt.timedelta(hours=hour, minutes=5)
        for index in range(2 + (hour * 7) % 5):
            log_delivery(acme, created_at=created_at, tries=[Try(duration_ms=60 + 37 * ((hour + index) % 9))],
                         aam_uuids=[f"device-{hour}-{index}-{n}" for n in range(1 + index % 3)])
        if hour % 6 == 2:
            log_delivery(acme, created_at=created_at, outcome=DeliveryStatus.FAILED,
                         tries=[TIMEOUT, status(503)])
    log_delivery(acme, created_at=now - dt.timedelta(minutes=30), tries=[status(500), OK])

    device = Device.objects.create(aam_uuid=AAM_UUID, last_seen=now, regions=[6, 9])
    PartnerId.objects.create(device=device, dpid=20914, dpuuid=DPUUID)
    Membership.objects.create(device=device, segment_id=14356, is_active=True, datetime=now, qualified_at=now,
                              expires_at=now + dt.timedelta(days=120))
    DestinationDevice.objects.create(destination=acme, device=device,
                                     pending_since=now - dt.timedelta(seconds=40))
    return log_delivery(acme, created_at=now - dt.timedelta(minutes=10), outcome=DeliveryStatus.FAILED,
                        tries=[status(503, excerpt="Service Unavailable"), status(503)], aam_uuids=[AAM_UUID])


def seed_open_circuit(*, now: dt.datetime) -> None:
    """A partner down for 12 minutes: its circuit open (CONTRACT §7), a probe due, devices piling up."""
    initech = DestinationFactory(
        name="Initech Media", circuit_state=CircuitState.OPEN,
        circuit_opened_at=now - dt.timedelta(minutes=12),
        circuit_next_probe_at=now + dt.timedelta(minutes=4), consecutive_failures=10,
    )
    for minute in range(12, 0, -1):
        log_delivery(initech, created_at=now - dt.timedelta(minutes=minute + 1),
                     outcome=DeliveryStatus.FAILED, tries=[status(503), status(503)])
    for index in range(40):
        device = Device.objects.create(aam_uuid=f"initech-{index:03d}", last_seen=now)
        DestinationDevice.objects.create(destination=initech, device=device,
                                         pending_since=now - dt.timedelta(minutes=12, seconds=-index * 15))


def assert_open_circuit_shown(page) -> None:
    """The partner that is down shows its open circuit, its next probe and its backlog."""
    down = page.locator("article.card", has_text="Initech Media")
    assert down.locator("[data-circuit=open]").is_visible()
    assert "circuit open since" in down.inner_text()
    assert "next probe in" in down.inner_text()
    assert "oldest waits 12 min" in down.inner_text()


def log_in(page) -> None:
    user = User.objects.create_user("ops", password=PASSWORD, is_staff=True)
    user.groups.add(Group.objects.get_or_create(name="operator")[0])
    page.goto("/dashboard/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "ops")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/dashboard/")


def test_an_operator_reads_the_dashboard_finds_a_device_and_opens_its_failed_delivery(page, partner):
    # Given a day of traffic and a failed delivery that carried the device
    failed = seed(url=partner.url)

    # When the operator logs in, the dashboard shows both partners with their charts
    log_in(page)
    assert page.locator("h1").first.inner_text().startswith("Dashboard")
    assert page.locator("article.card").count() == 3
    assert page.locator(f"#destination-{failed.destination_id} svg.chart").count() == 4
    assert "paused" in page.locator("article.card", has_text="Globex Ads").inner_text()
    assert_open_circuit_shown(page)
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    # And the destination's page offers the operator its buttons
    page.click("h2 >> text=Acme DSP")
    assert page.locator("button", has_text="Send a test document").is_visible()
    assert page.locator("button", has_text="Pause").is_visible()
    assert page.locator("button", has_text="Resync").is_visible()
    page.screenshot(path=str(ARTIFACTS / "destination.png"), full_page=True)

    # And finding the device by its partner ID opens its profile and deliveries
    page.click("text=Find a device")
    page.fill("input[name=q]", DPUUID)
    page.press("input[name=q]", "Enter")
    page.wait_for_url(f"**/dashboard/devices/{AAM_UUID}/")
    assert "9 Oregon" in page.inner_text("main")
    assert "Runners" in page.inner_text("main")
    page.screenshot(path=str(ARTIFACTS / "device.png"), full_page=True)

    # And its failed delivery shows every attempt and the document
    page.click(f"a[href='/dashboard/deliveries/{failed.pk}/']")
    assert page.inner_text("#delivery-status") == "failed"
    attempts = page.inner_text("table.attempts")
    assert "partner answered 503 Service Unavailable" in attempts
    assert f'"AAM_UUID": "{AAM_UUID}"' in page.inner_text("pre.json")
    page.screenshot(path=str(ARTIFACTS / "delivery.png"), full_page=True)


def test_an_operator_redelivers_a_failed_delivery_and_sees_it_delivered(page, partner, eager_tasks):
    # Given a failed delivery to a partner that now answers 200
    failed = seed(url=partner.url)
    log_in(page)
    page.goto(f"/dashboard/deliveries/{failed.pk}/")

    # When the operator presses Redeliver
    page.click("button:has-text('Redeliver')")

    # Then the new delivery's page says delivered, and the partner got the same bytes
    page.wait_for_url("**/dashboard/deliveries/*/")
    page.wait_for_function("document.querySelector('#delivery-status').textContent.trim() === 'delivered'")
    assert "Redelivery of" in page.inner_text("main")
    # (the device's own pending change may follow the redelivery: its destination is woken up after it)
    [received] = [request for request in partner.requests
                  if request.headers["X-AAMDest-Delivery-Id"] == str(failed.document_id)]
    assert received.body == bytes(failed.body)
