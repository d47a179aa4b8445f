"""Tenant business-hours calendars (IVR-06, TEL-14).

A :class:`BusinessCalendar` holds weekly opening hours (several :class:`TimeRange` per ISO weekday,
1 = Monday), :class:`Holiday` dates or date ranges (closed, or open only for their own ``hours``) and
:class:`SpecialWorkday` dates: the adjusted working days (调休) on which a weekend day is worked with the
hours of ``as_weekday``. A special working day wins over a holiday on the same date.

Everything is evaluated in the calendar's time zone (``zoneinfo``): :func:`is_open(calendar, at)` takes
an aware datetime (any zone) and answers in the calendar's local time. A range whose end is not after its
start runs past midnight (22:00-06:00); an end of 00:00 means midnight, so 00:00-00:00 is the whole day.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Weekday = Annotated[int, Field(ge=1, le=7)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TimeRange(_Model):
    """Open from ``start`` (inclusive) to ``end`` (exclusive), local wall-clock time."""

    start: time
    end: time

    @field_validator("start", "end")
    @classmethod
    def _wall_clock(cls, value: time) -> time:
        if value.tzinfo is not None:
            raise ValueError("give a local time without a time zone; the calendar has the zone")
        return value

    @property
    def overnight(self) -> bool:
        return self.end <= self.start and self.end != time(0)

    def contains_same_day(self, at: time) -> bool:
        """Whether ``at`` falls in the part of the range on the day it starts."""
        if self.end == time(0) or self.overnight:
            return at >= self.start
        return self.start <= at < self.end

    def contains_next_day(self, at: time) -> bool:
        """Whether ``at`` falls in the part that spills into the next day."""
        return self.overnight and at < self.end


class Holiday(_Model):
    """Closed from ``start`` to ``end`` inclusive (one day when ``end`` is omitted), except ``hours``."""

    name: str = Field(default="", max_length=100)
    start: date
    end: date | None = None
    hours: list[TimeRange] = Field(default_factory=list, max_length=8)

    @model_validator(mode="after")
    def _ordered(self) -> Holiday:
        if self.end is not None and self.end < self.start:
            raise ValueError("holiday ends before it starts")
        if self.end is not None and (self.end - self.start).days > 366:
            raise ValueError("holiday longer than a year")
        return self

    def covers(self, day: date) -> bool:
        return self.start <= day <= (self.end or self.start)


class SpecialWorkday(_Model):
    """A normally closed day worked like ``as_weekday`` (调休), or with its own ``hours``."""

    name: str = Field(default="", max_length=100)
    date: date
    as_weekday: Weekday = 1
    hours: list[TimeRange] | None = Field(default=None, max_length=8)


class BusinessCalendar(_Model):
    id: str = Field(min_length=1, max_length=64)
    name: str = Field(default="", max_length=100)
    timezone: str = "Asia/Shanghai"
    weekly: dict[Weekday, list[TimeRange]] = Field(default_factory=dict)
    holidays: list[Holiday] = Field(default_factory=list, max_length=1000)
    special_workdays: list[SpecialWorkday] = Field(default_factory=list, max_length=1000)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @field_validator("weekly")
    @classmethod
    def _few_ranges(cls, value: dict[int, list[TimeRange]]) -> dict[int, list[TimeRange]]:
        if any(len(ranges) > 8 for ranges in value.values()):
            raise ValueError("at most 8 time ranges per weekday")
        return value

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def hours_on(self, day: date) -> list[TimeRange]:
        """The opening ranges that start on ``day``, after holidays and adjusted working days."""
        for special in self.special_workdays:
            if special.date == day:
                if special.hours is not None:
                    return special.hours
                return self.weekly.get(special.as_weekday, [])
        for holiday in self.holidays:
            if holiday.covers(day):
                return holiday.hours
        return self.weekly.get(day.isoweekday(), [])


def is_open(calendar: BusinessCalendar, at: datetime) -> bool:
    """Whether the calendar is open at the instant ``at`` (an aware datetime)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("is_open needs an aware datetime (with a time zone)")
    local = at.astimezone(calendar.zone)
    day, clock = local.date(), local.time().replace(tzinfo=None)
    if any(r.contains_same_day(clock) for r in calendar.hours_on(day)):
        return True
    return any(r.contains_next_day(clock) for r in calendar.hours_on(day - timedelta(days=1)))
