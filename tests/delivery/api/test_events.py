"""POST /api/v1/events/: formats, all-or-nothing errors, limits, roles and the flush after commit."""

from __future__ import annotations

import datetime as dt
import gzip

import orjson
import pytest
import time_machine
from rest_framework.test import APIClient

from delivery import tasks
from delivery.intake.bodies import MAX_BODY_BYTES
from delivery.models import DestinationDevice, Device, Membership, MembershipChange, PartnerId
from destinations.models import Segment
from tests.factories import MappingFactory, SegmentFactory

URL = "/api/v1/events/"
UUID = "19393572368547369350319949416899715727"

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def flushes(monkeypatch) -> list[set[int]]:
    """What the view asked `delivery.tasks.schedule_flushes` to flush."""
    calls: list[set[int]] = []
    monkeypatch.setattr(tasks, "schedule_flushes", lambda destination_ids: calls.append(set(destination_ids)))
    return calls


def post(client: APIClient, body: bytes, *, content_type: str = "application/json", **headers):
    return client.generic("POST", URL, body, content_type=content_type, **headers)


def post_events(client: APIClient, events: list, **headers):
    return post(client, orjson.dumps(events), **headers)


def qualification(segment_id: int = 14356, **changes) -> dict:
    return {"type": "qualification", "aam_uuid": UUID, "segment_id": segment_id, **changes}


# ---- accepted -----------------------------------------------------------------------------


def test_an_operator_ingests_events_and_the_destinations_are_flushed_after_commit(
    operator_client, flushes, django_capture_on_commit_callbacks
):
    mapping = MappingFactory(segment=SegmentFactory(id=14356))
    MappingFactory(segment=SegmentFactory(id=99))  # not concerned
    events = [
        qualification(datetime="2016-07-27T16:17:22Z", regions=[9, 6]),
        qualification(12176, onboarded=True),
        {"type": "id_sync", "aam_uuid": UUID, "dpid": 20914, "dpuuid": "4250948725049857"},
    ]

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = post_events(operator_client, events)
    assert flushes == []  # nothing before the commit

    for callback in callbacks:
        callback()
    assert response.status_code == 202
    assert response.json() == {"accepted": 3}
    assert flushes == [{mapping.destination_id}]
    assert Device.objects.get().regions == [6, 9]
    assert sorted(Membership.objects.values_list("segment_id", "is_active")) == [(12176, True), (14356, True)]
    assert set(Segment.objects.values_list("id", flat=True)) == {99, 12176, 14356}
    assert PartnerId.objects.get().dpuuid == "4250948725049857"
    assert DestinationDevice.objects.get().destination_id == mapping.destination_id


def test_nothing_pending_means_nothing_to_flush(operator_client, flushes, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = post_events(operator_client, [qualification()])

    assert response.status_code == 202
    assert flushes == []


def test_an_empty_array_is_accepted_with_zero_events(operator_client):
    response = post_events(operator_client, [])

    assert (response.status_code, response.json()) == (202, {"accepted": 0})


def test_ndjson_is_accepted(operator_client):
    events = [qualification(), {"type": "opt_out", "aam_uuid": "x"}]
    body = b"\n".join(orjson.dumps(event) for event in events)

    response = post(operator_client, body + b"\n\n", content_type="application/x-ndjson")

    assert (response.status_code, response.json()) == (202, {"accepted": 2})
    assert Membership.objects.count() == 1


@pytest.mark.parametrize("content_type", ["application/json", "application/x-ndjson"])
def test_gzip_bodies_are_accepted(operator_client, content_type):
    events = [qualification(), qualification(7)]
    ndjson = content_type == "application/x-ndjson"
    text = b"\n".join(map(orjson.dumps, events)) if ndjson else orjson.dumps(events)

    response = post(operator_client, gzip.compress(text), content_type=content_type,
                    HTTP_CONTENT_ENCODING="gzip")

    assert (response.status_code, response.json()) == (202, {"accepted": 2})
    assert Membership.objects.count() == 2


def test_a_body_larger_than_djangos_upload_limit_is_read(operator_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    events = [qualification(segment_id) for segment_id in range(1, 101)]

    response = post_events(operator_client, events)

    assert (response.status_code, response.json()) == (202, {"accepted": 100})


@time_machine.travel(dt.datetime(2026, 3, 10, 12, 0, tzinfo=dt.UTC), tick=False)
def test_a_requalification_is_flushed_only_three_days_after_the_last_send(
    operator_client, flushes, django_capture_on_commit_callbacks
):
    mapping = MappingFactory(segment=SegmentFactory(id=14356))
    with django_capture_on_commit_callbacks(execute=True):
        post_events(operator_client, [qualification(datetime="2026-03-10T11:00:00Z")])
    DestinationDevice.objects.update(pending_since=None, last_sent_at=dt.datetime(2026, 3, 8, tzinfo=dt.UTC))

    with django_capture_on_commit_callbacks(execute=True):
        post_events(operator_client, [qualification(datetime="2026-03-10T11:30:00Z")])
    assert flushes == [{mapping.destination_id}]
    assert DestinationDevice.objects.get().pending_since is None

    three_days_later = dt.datetime(2026, 3, 11, 0, 0, 1, tzinfo=dt.UTC)
    with time_machine.travel(three_days_later, tick=False), django_capture_on_commit_callbacks(execute=True):
        post_events(operator_client, [qualification(datetime="2026-03-11T00:00:00Z")])
    assert flushes == [{mapping.destination_id}, {mapping.destination_id}]
    assert DestinationDevice.objects.get().pending_since is not None


# ---- refused --------------------------------------------------------------------------------


def test_one_invalid_event_stores_nothing_and_each_bad_event_is_listed(operator_client):
    events = [
        qualification(regions=[9]),
        {"type": "id_sync", "aam_uuid": UUID, "dpid": 20914, "dpuuid": "x"},
        qualification(segment_id=True),
        {"type": "segment_exit", "aam_uuid": UUID},
        qualification(colour="blue", segment_id="nope"),
        qualification(datetime="2999-01-01T00:00:00Z"),
    ]

    response = post_events(operator_client, events)

    assert response.status_code == 400
    body = response.json()
    assert [(error["index"], error["field"]) for error in body["errors"]] == [
        (2, "segment_id"), (3, "type"), (4, "colour"), (5, "datetime")
    ]
    assert all(error["message"] for error in body["errors"])
    assert not Device.objects.exists()
    assert not Segment.objects.exists()
    assert not PartnerId.objects.exists()
    assert not MembershipChange.objects.exists()


def test_ndjson_errors_count_non_blank_lines(operator_client):
    body = b'\n{"type":"opt_out","aam_uuid":"a"}\n\n{"type":"opt_out"\n{"type":"opt_out","aam_uuid":""}\n'

    response = post(operator_client, body, content_type="application/x-ndjson")

    assert response.status_code == 400
    assert [(error["index"], error["field"]) for error in response.json()["errors"]] == [
        (1, "event"), (2, "aam_uuid")
    ]


@pytest.mark.parametrize(
    ("body", "says"),
    [(b'[{"type": "opt_out",', "not valid JSON"), (b'{"events": []}', "JSON array")],
)
def test_a_body_that_is_not_a_json_array_is_refused_as_a_whole(operator_client, body, says):
    response = post(operator_client, body)

    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert (error["index"], error["field"]) == (None, "body")
    assert says in error["message"]


def test_broken_gzip_is_refused(operator_client):
    response = post(operator_client, b"not gzip", HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 400
    assert response.json()["errors"][0]["field"] == "body"


def test_more_than_ten_thousand_events_answer_413_and_store_nothing(operator_client):
    events = [{"type": "opt_out", "aam_uuid": "x"}] + [qualification()] * 10_000

    response = post_events(operator_client, events)

    assert response.status_code == 413
    assert "10001 events" in response.json()["detail"]
    assert not Device.objects.exists()


def test_a_declared_body_over_the_limit_answers_413_unread(operator_client):
    response = post(operator_client, b"[]", CONTENT_LENGTH=str(MAX_BODY_BYTES + 1))

    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


def test_a_gzip_bomb_answers_413(operator_client):
    bomb = gzip.compress(b"[" + b" " * MAX_BODY_BYTES + b"]", compresslevel=1)

    response = post(operator_client, bomb, HTTP_CONTENT_ENCODING="gzip")

    assert response.status_code == 413


def test_a_chunked_body_without_a_length_answers_411(operator_client):
    response = post_events(operator_client, [qualification()], CONTENT_LENGTH="",
                           HTTP_TRANSFER_ENCODING="chunked")

    assert response.status_code == 411
    assert "Content-Length" in response.json()["detail"]
    assert not Device.objects.exists()


@pytest.mark.parametrize(("content_type", "encoding"), [("text/csv", ""), ("application/json", "br")])
def test_unsupported_formats_answer_415(operator_client, content_type, encoding):
    headers = {"HTTP_CONTENT_ENCODING": encoding} if encoding else {}

    response = post(operator_client, b"[]", content_type=content_type, **headers)

    assert response.status_code == 415
    assert "not supported" in response.json()["detail"]


# ---- who may ingest -------------------------------------------------------------------------


def test_without_a_token_it_answers_401():
    response = post_events(APIClient(), [qualification()])

    assert response.status_code == 401
    assert not Device.objects.exists()


def test_a_wrong_token_answers_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token not-a-token")

    assert post_events(client, [qualification()]).status_code == 401


@pytest.mark.parametrize("client_name", ["plain_client", "viewer_client"])
def test_users_without_the_operator_role_cannot_ingest(request, client_name):
    response = post_events(request.getfixturevalue(client_name), [qualification()])

    assert response.status_code == 403
    assert not Device.objects.exists()


def test_staff_need_the_permission_to_ingest(staff_client_with_perms):
    assert post_events(staff_client_with_perms(), [qualification()]).status_code == 403
    assert post_events(staff_client_with_perms("delivery.add_device"), [qualification()]).status_code == 202


def test_a_superuser_may_ingest(admin_user_client):
    assert post_events(admin_user_client, [qualification()]).status_code == 202


def test_reading_the_endpoint_is_not_ingesting(viewer_client):
    assert viewer_client.get(URL).status_code == 405
