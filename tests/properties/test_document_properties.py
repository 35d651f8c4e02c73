"""Documents (CONTRACT §1) for any valid device state: the shape partners parse, and the state back.

Any state: segments with either status and datetimes from 1970 to 9999 in any
UTC offset, regions with repeats, no, one or several partner IDs, any
`client_id` text, with the process in any time zone. The document has §1's
keys in order, every scalar a string, times as `EEE MMM dd HH:mm:ss UTC yyyy`
with English names, `User_count` = len(Users), regions deduplicated ascending;
and a partner's `json.loads` gives back the state (times to the second).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.utils import timezone
from hypothesis import assume, given
from hypothesis import strategies as st

from delivery.batch.reading import BatchDevice, BatchEntry, users_of
from delivery.sending.documents import build_document
from tests.properties.profiles import scaled

DOCUMENT_KEYS = ["ProcessTime", "User_DPID", "Client_ID", "AAM_Destination_Id", "User_count", "Users"]
USER_KEYS = ["AAM_UUID", "DataPartner_UUID", "AAM_Regions", "Segments"]
SEGMENT_KEYS = ["Segment_ID", "Status", "DateTime"]
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
AAM_TIME = re.compile(
    rf"({'|'.join(DAYS)}) ({'|'.join(MONTHS)}) (\d\d) (\d\d):(\d\d):(\d\d) UTC (\d{{4}})"
)
MAX_ID = 2**63 - 1
ZONES = ["UTC", "Pacific/Kiritimati", "Pacific/Pago_Pago", "Asia/Kathmandu", "America/St_Johns"]

# What ingestion and the API accept (CONTRACT §5.2, §5.3, §4.8).
ids = st.integers(1, MAX_ID)
aam_uuids = st.text(
    st.characters(codec="utf-8", exclude_categories=["Cc", "Zs", "Zl", "Zp"], exclude_characters="/"),
    min_size=1, max_size=100,
).filter(lambda text: not re.search(r"\s", text))
dpuuids = st.text(st.characters(codec="utf-8", exclude_categories=["Cc"]), min_size=1, max_size=255).filter(
    str.strip
)
# Any text the API stores: UTF-8 (it refuses lone surrogates) without NUL (PostgreSQL cannot hold it).
any_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=100)
mapping_values = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=255)


@st.composite
def moments(draw: st.DrawFn) -> dt.datetime:
    """An aware datetime from 1970 to 9999 (UTC), seen in some UTC offset."""
    utc = draw(st.datetimes(dt.datetime(1970, 1, 1), dt.datetime(9999, 12, 31, 23, 59, 59),
                            timezones=st.just(dt.UTC)))
    offset = dt.timezone(dt.timedelta(minutes=draw(st.integers(-14 * 60, 14 * 60))))
    try:
        return utc.astimezone(offset)
    except OverflowError:
        assume(False)
        raise


@st.composite
def devices(draw: st.DrawFn, *, values: dict[int, str]) -> BatchDevice:
    segment_ids = draw(st.lists(st.sampled_from(sorted(values)), unique=True, min_size=1))
    return BatchDevice(
        aam_uuid=draw(aam_uuids),
        entries=[BatchEntry(segment_id, draw(st.booleans()), draw(moments()))
                 for segment_id in sorted(segment_ids)],
        regions=draw(st.lists(ids | st.sampled_from([3, 4, 6, 7, 8, 9, 11, 12]), max_size=6)),
        partner_uuids=draw(st.lists(dpuuids, unique=True, max_size=3)),
    )


@st.composite
def states(draw: st.DrawFn) -> dict:
    values = draw(st.dictionaries(ids, mapping_values, min_size=1, max_size=4))
    return {
        "user_dpid": draw(ids), "client_id": draw(any_text), "aam_destination_id": draw(ids),
        "values": values, "devices": draw(st.lists(devices(values=values), max_size=4)),
        "process_time": draw(moments()), "zone": draw(st.sampled_from(ZONES)),
    }


@contextmanager
def process_time_zone(zone: str) -> Iterator[None]:
    """The process's TZ (what strftime and time.localtime would follow) and Django's current zone."""
    previous = os.environ.get("TZ")
    os.environ["TZ"] = zone
    time.tzset()
    try:
        with timezone.override(zone):
            yield
    finally:
        if previous is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = previous
        time.tzset()


def parse_aam_time(text: str) -> dt.datetime:
    """A partner's parser for `Wed Jul 27 16:17:42 UTC 2016`, checking the day name against the date."""
    match = AAM_TIME.fullmatch(text)
    assert match, f"not an AAM time: {text!r}"
    day, month, dd, hh, mm, ss, yyyy = match.groups()
    moment = dt.datetime(int(yyyy), MONTHS.index(month) + 1, int(dd), int(hh), int(mm), int(ss),
                         tzinfo=dt.UTC)
    assert DAYS[moment.weekday()] == day, text
    return moment


def scalars(value: object) -> Iterator[object]:
    if isinstance(value, dict):
        for item in value.values():
            yield from scalars(item)
    elif isinstance(value, list):
        for item in value:
            yield from scalars(item)
    else:
        yield value


def to_second(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC).replace(microsecond=0)


@scaled(40)
@given(state=states())
def test_any_device_state_makes_a_document_partners_parse_back_into_that_state(state):
    # given a valid device state, in a process running in any time zone
    users = [user for device in state["devices"] for user in users_of(device, values=state["values"])]
    with process_time_zone(state["zone"]):
        # when its document is built
        body = build_document(user_dpid=state["user_dpid"], client_id=state["client_id"],
                              aam_destination_id=state["aam_destination_id"], users=users,
                              process_time=state["process_time"])

    # then it has the contract's shape
    document = json.loads(body.decode("utf-8"), object_pairs_hook=lambda pairs: dict(pairs))
    assert list(document) == DOCUMENT_KEYS
    assert all(list(user) == USER_KEYS for user in document["Users"])
    assert all(list(segment) == SEGMENT_KEYS for user in document["Users"] for segment in user["Segments"])
    assert all(isinstance(scalar, str) for scalar in scalars(document))
    assert document["User_count"] == str(len(document["Users"]))
    # and a partner's parse gives the state back
    assert parse_aam_time(document["ProcessTime"]) == to_second(state["process_time"])
    assert (document["User_DPID"], document["Client_ID"], document["AAM_Destination_Id"]) == (
        str(state["user_dpid"]), state["client_id"], str(state["aam_destination_id"]))
    assert [parsed_device(user) for user in document["Users"]] == [
        expected_user(device, partner, values=state["values"])
        for device in state["devices"] for partner in device.partner_uuids or [""]
    ]


def parsed_device(user: dict) -> tuple:
    return (user["AAM_UUID"], user["DataPartner_UUID"], user["AAM_Regions"],
            [(segment["Segment_ID"], segment["Status"], parse_aam_time(segment["DateTime"]))
             for segment in user["Segments"]])


def expected_user(device: BatchDevice, partner: str, *, values: dict[int, str]) -> tuple:
    """One user object per partner ID, regions deduplicated ascending, "1"s then "0"s."""
    regions = [str(region) for region in sorted(set(device.regions))]
    segments = [(values[entry.segment_id], "1" if entry.is_active else "0", to_second(entry.datetime))
                for is_active in (True, False) for entry in device.entries if entry.is_active is is_active]
    return (device.aam_uuid, partner, regions, segments)
