"""Business-hours calendars (IVR-06, TEL-14): weekly hours, holidays, adjusted workdays, time zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from hotline.ivr.calendar import BusinessCalendar, is_open

SHANGHAI = ZoneInfo("Asia/Shanghai")


def office_calendar() -> BusinessCalendar:
    """Mon-Fri 09:00-12:00 and 13:00-18:00, Sat 10:00-14:00; National Day week off, with 调休 Saturdays."""
    weekday_hours = [{"start": "09:00", "end": "12:00"}, {"start": "13:00", "end": "18:00"}]
    return BusinessCalendar.model_validate(
        {
            "id": "office",
            "timezone": "Asia/Shanghai",
            "weekly": {str(day): weekday_hours for day in range(1, 6)}
            | {"6": [{"start": "10:00", "end": "14:00"}]},
            "holidays": [
                {"name": "国庆节", "start": "2024-10-01", "end": "2024-10-07"},
                {"name": "除夕", "start": "2024-02-09", "hours": [{"start": "09:00", "end": "12:00"}]},
            ],
            "special_workdays": [
                {"name": "国庆调休", "date": "2024-09-29"},  # a Sunday worked like a Monday
                {
                    "name": "国庆调休",
                    "date": "2024-10-12",
                    "as_weekday": 5,
                },  # a Saturday worked like a Friday
            ],
        }
    )


def local(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=SHANGHAI)


@pytest.mark.parametrize(
    ("moment", "expected"),
    [
        (local(2024, 9, 24, 9, 0), True),  # Tuesday, opening minute
        (local(2024, 9, 24, 8, 59), False),
        (local(2024, 9, 24, 12, 0), False),  # lunch break: end is exclusive
        (local(2024, 9, 24, 12, 59), False),
        (local(2024, 9, 24, 13, 0), True),
        (local(2024, 9, 24, 17, 59), True),
        (local(2024, 9, 24, 18, 0), False),
        (local(2024, 9, 28, 11, 0), True),  # Saturday hours
        (local(2024, 9, 28, 15, 0), False),
        (local(2024, 9, 22, 11, 0), False),  # an ordinary Sunday
        (local(2024, 9, 29, 11, 0), True),  # adjusted workday (Sunday worked as Monday)
        (local(2024, 9, 29, 12, 30), False),  # ...with Monday's lunch break
        (local(2024, 10, 1, 10, 0), False),  # holiday range, first day
        (local(2024, 10, 4, 10, 0), False),  # inside the range
        (local(2024, 10, 7, 10, 0), False),  # last day (inclusive)
        (local(2024, 10, 8, 10, 0), True),  # back to work
        (local(2024, 10, 12, 16, 0), True),  # Saturday worked as Friday: afternoon open
        (local(2024, 10, 5, 11, 0), False),  # a Saturday inside the holiday stays closed
        (local(2024, 2, 9, 10, 0), True),  # New Year's Eve: open in the morning only
        (local(2024, 2, 9, 14, 0), False),
    ],
)
def test_office_hours(moment: datetime, expected: bool) -> None:
    assert is_open(office_calendar(), moment) is expected


def test_evaluated_in_the_calendar_time_zone() -> None:
    calendar = office_calendar()
    # 01:30 UTC is 09:30 in Shanghai (open); 10:30 UTC is 18:30 there (closed).
    assert is_open(calendar, datetime(2024, 9, 24, 1, 30, tzinfo=UTC))
    assert not is_open(calendar, datetime(2024, 9, 24, 10, 30, tzinfo=UTC))
    # The same instant given in New York time gives the same answer.
    new_york = datetime(2024, 9, 24, 1, 30, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert is_open(calendar, new_york)


def test_overnight_ranges_spill_into_the_next_day() -> None:
    calendar = BusinessCalendar.model_validate(
        {
            "id": "night",
            "timezone": "Asia/Shanghai",
            "weekly": {"5": [{"start": "22:00", "end": "02:00"}]},
            "holidays": [
                {"start": "2024-09-28"}
            ],  # the Saturday is a holiday; Friday's night shift still runs
        }
    )
    assert is_open(calendar, local(2024, 9, 27, 23, 0))
    assert is_open(calendar, local(2024, 9, 28, 1, 59))
    assert not is_open(calendar, local(2024, 9, 28, 2, 0))
    assert not is_open(calendar, local(2024, 9, 27, 21, 59))


def test_whole_day_and_midnight_end() -> None:
    calendar = BusinessCalendar.model_validate(
        {
            "id": "24h",
            "weekly": {"1": [{"start": "00:00", "end": "00:00"}], "2": [{"start": "20:00", "end": "00:00"}]},
        }
    )
    assert is_open(calendar, local(2024, 9, 23, 0, 0))
    assert is_open(calendar, local(2024, 9, 23, 23, 59))
    assert is_open(calendar, local(2024, 9, 24, 23, 59))
    assert not is_open(calendar, local(2024, 9, 25, 0, 1))  # Tuesday's range ends at midnight


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="aware"):
        is_open(office_calendar(), datetime(2024, 9, 24, 10, 0))


@pytest.mark.parametrize(
    "document",
    [
        {"id": "x", "timezone": "Mars/Olympus"},
        {"id": "x", "holidays": [{"start": "2024-10-07", "end": "2024-10-01"}]},
        {"id": "x", "weekly": {"8": []}},
        {"id": "x", "weekly": {"1": [{"start": "25:00", "end": "26:00"}]}},
        {"id": "x", "special_workdays": [{"date": "2024-10-12", "as_weekday": 0}]},
    ],
)
def test_bad_calendars_are_rejected(document: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        BusinessCalendar.model_validate(document)


@given(st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 12, 31), timezones=st.just(UTC)))
def test_weekday_only_calendar_matches_a_direct_rule(moment: datetime) -> None:
    """Property: a plain 09:00-18:00 Mon-Fri calendar agrees with the rule computed by hand."""
    calendar = BusinessCalendar.model_validate(
        {"id": "plain", "weekly": {str(d): [{"start": "09:00", "end": "18:00"}] for d in range(1, 6)}}
    )
    there = moment.astimezone(SHANGHAI)
    expected = there.isoweekday() <= 5 and 9 <= there.hour < 18
    assert is_open(calendar, moment) is expected


def test_fixed_offset_instants_work() -> None:
    calendar = office_calendar()
    plus_eight = timezone(timedelta(hours=8))
    assert is_open(calendar, datetime(2024, 9, 24, 10, 0, tzinfo=plus_eight))
    assert calendar.hours_on(date(2024, 10, 12)) == calendar.weekly[5]
