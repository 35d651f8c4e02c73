"""How the console writes durations and moments (delivery.templatetags.console_time)."""

from __future__ import annotations

import datetime as dt

import pytest

from delivery.templatetags.console_time import ago, span


@pytest.mark.parametrize(
    ("seconds", "reads"),
    [(0, "0 s"), (59, "59 s"), (60, "1 min"), (3600, "1 h"), (3660 * 3, "3 h 3 min"), (86_400, "1 day"),
     (86_400 * 3, "3 days"), (86_400 * 120, "4 months")],
)
def test_human_times_keep_the_unit_that_matters(seconds, reads):
    assert span(seconds) == reads


def test_a_time_ahead_reads_as_in_and_a_past_one_as_ago(now):
    assert ago(now + dt.timedelta(days=3, minutes=1)) == "in 3 days"
    assert ago(now - dt.timedelta(seconds=40)).endswith(" s ago")
    assert ago(None) == ""
