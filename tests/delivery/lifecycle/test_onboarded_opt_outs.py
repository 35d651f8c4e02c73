"""An opt-out sends its "0"s to real-time partners whatever its `onboarded` flag (CONTRACT §4.5)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from delivery.intake.importing import Defaults, import_events
from delivery.lifecycle.erasure import erase_forgotten_devices
from delivery.models import Device
from delivery.sending.documents import format_aam_time
from tests.delivery.lifecycle_events import apply, documents, opt_out, qualify, send_realtime, statuses
from tests.delivery.pending_work import SPORTS

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 2, 2, 9, 0, tzinfo=dt.UTC)
UUID = "19393572368547369350319949416899715727"
OPTED_OUT_AT = T0 + dt.timedelta(minutes=1)


def sent_active_in_sports(partner, destination) -> int:
    """Send UUID active in SPORTS; return how many requests the partner had then."""
    apply(qualify(UUID, SPORTS, at=T0))
    send_realtime(destination)
    return len(partner.requests)


def assert_zero_sent_then_erased(partner, destination, *, before: int) -> None:
    waiting = erase_forgotten_devices(now=OPTED_OUT_AT)
    send_realtime(destination)
    erased = erase_forgotten_devices(now=OPTED_OUT_AT + dt.timedelta(minutes=1))
    # The erasure waited for the "0", which the partner got, and only then erased the device.
    assert (waiting.erased, waiting.waiting) == (0, 1)
    [document] = documents(partner, before)
    assert statuses(document) == [(UUID, "", [(str(SPORTS), "0", format_aam_time(OPTED_OUT_AT))])]
    assert erased.erased == 1
    assert not Device.objects.filter(pk=UUID).exists()


def test_an_opt_out_event_marked_onboarded_sends_its_zeros_in_real_time_before_the_erasure(
    partner, destination, clock
):
    # Given a device sent active in SPORTS
    before = sent_active_in_sports(partner, destination)

    # When it opts out with "onboarded": true
    clock.move_to(OPTED_OUT_AT)
    apply(dataclasses.replace(opt_out(UUID, at=OPTED_OUT_AT), onboarded=True))

    # Then its "0" goes out in real time, and only then is it erased
    assert_zero_sent_then_erased(partner, destination, before=before)


def test_an_opt_out_line_loaded_with_ingest_onboarded_sends_its_zeros_in_real_time(
    partner, destination, clock, tmp_path
):
    # Given a device sent active in SPORTS
    before = sent_active_in_sports(partner, destination)

    # When an NDJSON opt-out line is loaded with `ingest --onboarded`
    clock.move_to(OPTED_OUT_AT)
    path = tmp_path / "opt-outs.ndjson"
    path.write_text(f'{{"type": "opt_out", "aam_uuid": "{UUID}"}}\n')
    defaults = Defaults(datetime=OPTED_OUT_AT, onboarded=True, now=OPTED_OUT_AT)
    result = import_events(path, defaults=defaults, skip_invalid=False, on_error=pytest.fail)

    # Then its "0" goes out in real time, and only then is it erased
    assert (result.stored, result.changes) == (True, 1)
    assert_zero_sent_then_erased(partner, destination, before=before)
