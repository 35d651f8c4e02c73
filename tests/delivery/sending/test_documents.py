"""The partner document (CONTRACT §1) byte for byte: key order, string scalars, AAM times."""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator

import pytest

from delivery.sending.documents import SegmentStatus, UserObject, build_document, format_aam_time

SPEC_EXAMPLE = """
{
"ProcessTime": "Wed Jul 27 16:17:42 UTC 2016",
"User_DPID": "20914",
"Client_ID": "74323",
"AAM_Destination_Id": "423",
"User_count": "2",
"Users": [{
   "AAM_UUID": "19393572368547369350319949416899715727",
   "DataPartner_UUID": "4250948725049857",
   "AAM_Regions": ["9"],
   "Segments": [{"Segment_ID": "14356", "Status": "1", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"},
                {"Segment_ID": "12176", "Status": "0", "DateTime": "Wed Jul 27 16:17:22 UTC 2016"}]
   },
   {
   "AAM_UUID": "0578240750487542456854736923319946899715232",
   "DataPartner_UUID": "848457757347734",
   "AAM_Regions": ["6", "9"],
   "Segments": [{"Segment_ID": "10329", "Status": "1", "DateTime": "Wed Jul 27 16:17:21 UTC 2016"}]
   }]
}
"""


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


def spec_users() -> list[UserObject]:
    return [
        UserObject(
            aam_uuid="19393572368547369350319949416899715727",
            partner_uuid="4250948725049857",
            regions=[9],
            segments=[
                SegmentStatus("14356", "1", at("2016-07-27T16:17:22+00:00")),
                SegmentStatus("12176", "0", at("2016-07-27T16:17:22+00:00")),
            ],
        ),
        UserObject(
            aam_uuid="0578240750487542456854736923319946899715232",
            partner_uuid="848457757347734",
            regions=[9, 6, 9],
            segments=[SegmentStatus("10329", "1", at("2016-07-27T16:17:21+00:00"))],
        ),
    ]


def build_spec_document() -> bytes:
    return build_document(
        user_dpid=20914,
        client_id="74323",
        aam_destination_id=423,
        users=spec_users(),
        process_time=at("2016-07-27T16:17:42+00:00"),
    )


def build_small_document(users: list[UserObject]) -> bytes:
    return build_document(
        user_dpid=1, client_id="c", aam_destination_id=2, users=users, process_time=at("2020-01-01")
    )


def key_paths(value: object, prefix: str = "") -> list[str]:
    """Every key of a parsed document, in document order, with its path."""
    if isinstance(value, dict):
        paths = []
        for key, item in value.items():
            paths.append(f"{prefix}/{key}")
            paths.extend(key_paths(item, f"{prefix}/{key}"))
        return paths
    if isinstance(value, list):
        return [path for index, item in enumerate(value) for path in key_paths(item, f"{prefix}[{index}]")]
    return []


def scalars(value: object) -> list[object]:
    if isinstance(value, dict):
        return [scalar for item in value.values() for scalar in scalars(item)]
    if isinstance(value, list):
        return [scalar for item in value for scalar in scalars(item)]
    return [value]


@pytest.fixture
def tokyo_time_zone() -> Iterator[None]:
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Tokyo"
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


def test_it_reproduces_the_spec_example_with_the_same_keys_in_the_same_order():
    expected = json.loads(SPEC_EXAMPLE)

    document = json.loads(build_spec_document())

    assert document == expected
    assert key_paths(document) == key_paths(expected)
    assert list(document) == [
        "ProcessTime", "User_DPID", "Client_ID", "AAM_Destination_Id", "User_count", "Users",
    ]


def test_every_scalar_of_the_document_is_a_string():
    document = json.loads(build_spec_document())

    assert all(isinstance(scalar, str) for scalar in scalars(document))


def test_the_user_count_is_the_number_of_user_objects():
    users = spec_users() * 3

    document = json.loads(build_small_document(users))

    assert document["User_count"] == "6"
    assert len(document["Users"]) == 6


def test_a_device_without_regions_or_partner_id_gets_empty_values():
    user = UserObject(aam_uuid="dev", partner_uuid="", regions=[], segments=[])

    document = json.loads(build_small_document([user]))

    assert document["Users"] == [
        {"AAM_UUID": "dev", "DataPartner_UUID": "", "AAM_Regions": [], "Segments": []}
    ]


def test_times_are_written_in_utc_with_english_names():
    moment = dt.datetime(2016, 7, 28, 1, 17, 42, tzinfo=dt.timezone(dt.timedelta(hours=9)))

    assert format_aam_time(moment) == "Wed Jul 27 16:17:42 UTC 2016"


def test_a_naive_time_is_taken_as_utc():
    assert format_aam_time(dt.datetime(2024, 2, 29, 0, 0, 5)) == "Thu Feb 29 00:00:05 UTC 2024"


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (dt.datetime(2023, 1, 1, tzinfo=dt.UTC), "Sun Jan 01 00:00:00 UTC 2023"),
        (dt.datetime(2023, 12, 31, 23, 59, 59, tzinfo=dt.UTC), "Sun Dec 31 23:59:59 UTC 2023"),
        (dt.datetime(2025, 9, 3, 9, 5, 7, tzinfo=dt.UTC), "Wed Sep 03 09:05:07 UTC 2025"),
    ],
)
def test_every_day_and_month_name_is_abbreviated_in_english(moment, expected):
    assert format_aam_time(moment) == expected


def test_the_process_time_zone_does_not_change_the_document(tokyo_time_zone):
    local_moment = dt.datetime(2016, 7, 28, 1, 17, 42).astimezone()  # 01:17:42 in Tokyo

    in_tokyo = build_document(
        user_dpid=20914,
        client_id="74323",
        aam_destination_id=423,
        users=spec_users(),
        process_time=local_moment,
    )

    assert in_tokyo == build_spec_document()
    assert time.strftime("%Z") == "JST"
