"""The cron parser against hand-checked fire times, and its errors naming the field."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from capstan_api import cron


def at(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "after", "want"),
    [
        ("0 3 * * *", "2026-12-06 05:50", "2026-12-07 03:00"),
        ("*/15 * * * *", "2026-12-06 05:50", "2026-12-06 06:00"),
        ("@hourly", "2026-12-06 05:00", "2026-12-06 06:00"),  # strictly after
        ("30 9 * * mon-fri", "2026-12-05 10:00", "2026-12-07 09:30"),  # Sat -> Mon
        ("0 0 1 jan *", "2026-12-06 05:50", "2027-01-01 00:00"),
        ("0 12 13 * 5", "2026-12-06 00:00", "2026-12-11 12:00"),  # day 13 OR Friday: Fri 11th first
        ("0 0 * * 7", "2026-12-06 05:50", "2026-12-13 00:00"),  # 7 is Sunday
        ("5-10/5 1,2 * * *", "2026-12-06 01:07", "2026-12-06 01:10"),
        ("0 0 29 2 *", "2026-03-01 00:00", "2028-02-29 00:00"),
        # "*/10" starts with "*": no OR rule, so days 1, 11, 21, 31 that are Mondays.
        ("0 0 */10 * mon", "2026-12-06 05:50", "2026-12-21 00:00"),
    ],
)
def test_next_fire_time(expr, after, want):
    assert cron.next_after(expr, at(after)) == at(want)


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("61 * * * *", "minute: 61 is outside 0-59"),
        ("* 24 * * *", "hour: 24 is outside 0-23"),
        ("* * * foo *", "month: 'foo' is not a number"),
        ("* * * * 1-x", "day of week: 'x' is not a number"),
        ("*/0 * * * *", "minute: step '0' must be a positive number"),
        ("5-1 * * * *", "minute: range '5-1' runs backwards"),
        ("* * *", "expected 5 fields"),
    ],
)
def test_bad_schedules_name_the_field(expr, message):
    with pytest.raises(ValueError, match=message):
        cron.parse(expr)


def test_a_schedule_that_never_fires_says_so():
    with pytest.raises(ValueError, match="never fires"):
        cron.next_after("0 0 31 2 *", at("2026-12-06 00:00"))
